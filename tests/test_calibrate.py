"""The "unknown" threshold: calibrated on validation queries against hand-placed clusters."""

import numpy as np
from helpers import unit as _unit

from embedder.calibrate import open_set

GALLERY = _unit([[1, 0.00], [1, 0.05], [1, -0.05], [0.00, 1], [0.05, 1], [-0.05, 1]])
G_LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_open_set__threshold_separates_known_from_unknown():
    q = _unit([[1, 0.01], [1, -0.02], [0.01, 1], [-0.02, 1]])
    result = open_set(q, np.array([0, 0, 1, 1]), GALLERY, G_LABELS, target_precision=0.95)
    assert result["auroc"] == 1.0
    known = 0.06  # every query is within this of its own cluster ...
    assert known < result["threshold"] < 1.3  # ... and about 1.4 from the other one
    assert result["coverage"] == 1.0 and result["precision"] == 1.0
    assert [p["coverage"] for p in result["curve"]][0] == 0.0 and result["curve"][-1]["coverage"] == 1.0
