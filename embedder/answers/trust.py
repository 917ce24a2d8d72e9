"""What a run's answers can be trusted for, in words said once before a batch of answers: what the calibrated
confidence promises, and whether the "unknown" threshold can keep its promise at all.

The threshold is set on validation answers to keep the answers it accepts right ``target_precision`` of the time.
Where no distance does that (overlapping classes: at P@1 0.71 on 100,000 images, the threshold fell to the
smallest distance seen and ``predict`` called nearly everything "unknown"), "unknown" would swallow the answers
instead of sorting them: then every answer keeps its label, and its calibrated confidence ranks it for review.
"""

from __future__ import annotations

import numpy as np

from ..runs.records import Metrics, Unknown
from .calibrate import calibrated_on

LEVEL = 0.95  # the confidence the promise is stated at
MIN_COVERAGE = 0.5  # "unknown" that turns away more than half of the validation answers it should keep swallows them


def promise(metrics: Metrics, level: float = LEVEL) -> str:
    """One line: what an answer at confidence >= ``level`` promises, and what that was fitted on."""
    if not metrics.confidence:
        return (
            "this run has no calibrated confidence: the confidence column is the share of the neighbours' vote, "
            "not a probability of being right"
        )
    return (
        f"answers at confidence >= {level:.2f}: expected >= {level:.0%} right "
        f"(confidence calibrated on {calibrated_on(metrics)})"
    )


def unknown_swallows(metrics: Metrics) -> str | None:
    """Why the run's "unknown" threshold would swallow its answers rather than sort them, or None when it keeps
    its promise (or the run has none)."""
    unknown = metrics.unknown or Unknown()
    target, precision, coverage = unknown.target_precision, unknown.precision, unknown.coverage
    if target is None or precision is None or coverage is None:
        return None
    if precision + 1e-9 < target:
        why = f"no distance keeps this run's answers {target:.0%} right (the best on validation: {precision:.0%})"
    elif coverage < MIN_COVERAGE:
        why = f'"unknown" at the distance that keeps them {target:.0%} right turns away {1 - coverage:.0%} of them'
    else:
        return None
    return (
        f'{why}: so no answer is called "unknown" for being far; each keeps its closest label, and its '
        "confidence ranks it (review the least sure first)"
    )


def expected_wrong(confidence: np.ndarray) -> float:
    """How many of these answers the calibration expects to be wrong: the sum of (1 - confidence)."""
    return float(np.sum(1.0 - np.asarray(confidence, dtype=np.float64)))
