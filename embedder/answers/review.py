"""A labelled folder as a review queue: the answers ``label`` wrote, least sure first, and what a person decided
for each (accept the suggestion, set another label, skip). "Accept all at >= X" says beforehand how many answers
it takes and how many of them the calibration expects to be wrong. The decisions come out as rows for a CSV, as
(file, label) pairs for an ImageFolder export, or as the images to add to the gallery.

No Streamlit here: the Review page (ui/review.py) keeps one queue per session and draws it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .trust import expected_wrong

SKIP = ""  # a decision: looked at, left without a label


@dataclass(frozen=True)
class Neighbour:
    label: str
    distance: float
    path: str  # as the gallery stores it


@dataclass(frozen=True)
class Answer:
    """One image's row of a labels CSV (``verbs.label.COLUMNS``)."""

    path: str  # relative to the queue's root
    suggested: str  # the closest label (also for an "unknown" answer)
    confidence: float  # the calibrated probability that ``suggested`` is right
    unknown: bool
    novel: bool
    neighbours: tuple[Neighbour, ...]

    @classmethod
    def of(cls, row: dict) -> Answer:
        neighbours = []
        for part in filter(None, (p.strip() for p in row["neighbours"].split(" | "))):
            label, distance, path = part.split(":", 2)
            neighbours.append(Neighbour(label, float(distance), path))
        flag = lambda key: str(row[key]).lower() == "true"
        return cls(
            row["path"], row["closest"], float(row["confidence"]), flag("unknown"), flag("novel"), tuple(neighbours)
        )


@dataclass
class ReviewQueue:
    """The answers least sure first (ties: by path), and the decisions made so far (path -> label, or SKIP)."""

    root: Path
    answers: list[Answer]
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    decisions: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # paths in the order they were decided (for undo)

    @classmethod
    def from_csv(cls, root: Path, text: str) -> ReviewQueue:
        """The queue of a labels CSV (``label_folder``'s output) for images under ``root``."""
        rows = list(csv.DictReader(text.splitlines()))
        answers = [Answer.of(r) for r in rows if not r["error"]]
        answers.sort(key=lambda a: (a.confidence, a.path))
        return cls(Path(root), answers, [(r["path"], r["error"]) for r in rows if r["error"]])

    def __len__(self) -> int:
        return len(self.answers)

    def pending(self) -> list[int]:
        """Positions of the answers nobody decided yet, least sure first."""
        return [i for i, a in enumerate(self.answers) if a.path not in self.decisions]

    def decide(self, path: str, label: str) -> None:
        """Give ``path`` the label ``label`` (its suggestion to accept it, another to correct it), or SKIP."""
        self.decisions[path] = label
        self.history = [p for p in self.history if p != path] + [path]

    def undo(self) -> str | None:
        """Take back the latest decision; returns its path (None when there was none)."""
        if not self.history:
            return None
        path = self.history.pop()
        self.decisions.pop(path, None)
        return path

    def at_least(self, level: float) -> tuple[list[int], float]:
        """The pending answers whose confidence is at least ``level`` (not "unknown"), and how many of them the
        calibration expects to be wrong."""
        rows = [i for i in self.pending() if self.answers[i].confidence >= level and not self.answers[i].unknown]
        return rows, expected_wrong(np.array([self.answers[i].confidence for i in rows]))

    def accept_at_least(self, level: float) -> int:
        """Accept every pending answer at confidence >= ``level``; returns how many."""
        rows, _ = self.at_least(level)
        for i in rows:
            self.decide(self.answers[i].path, self.answers[i].suggested)
        return len(rows)

    def labelled(self) -> list[tuple[str, str]]:
        """(path, label) of every image given a label, in queue order."""
        return [(a.path, self.decisions[a.path]) for a in self.answers if self.decisions.get(a.path, SKIP) != SKIP]

    def rows(self) -> list[dict]:
        """Every answer as a CSV row: path, label (decided; empty when not), decision, suggested, confidence."""
        out = []
        for a in self.answers:
            label = self.decisions.get(a.path)
            decision = (
                "pending"
                if label is None
                else "skipped"
                if label == SKIP
                else "accepted"
                if label == a.suggested
                else "corrected"
            )
            out.append(
                {
                    "path": a.path,
                    "label": label or "",
                    "decision": decision,
                    "suggested": a.suggested,
                    "confidence": a.confidence,
                }
            )
        return out
