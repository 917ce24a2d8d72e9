"""The review queue: least sure first, decisions and their undo, accept-all with the errors the calibration expects."""

from __future__ import annotations

import pytest

from embedder.answers.review import SKIP, ReviewQueue

CSV = """path,label,confidence,vote_share,unknown,novel,closest,nearest_distance,neighbours,error
a.png,cat,0.99,1.0,False,False,cat,0.1,cat:0.1000:g/c1.png | cat:0.2:g/c2.png,
b.png,unknown,0.40,0.6,True,True,dog,0.9,dog:0.9000:g/d1.png,
c.png,dog,0.97,0.9,False,False,dog,0.2,dog:0.2000:g/d1.png,
d.png,,,,False,False,,,,truncated
e.png,cat,0.60,0.6,False,False,cat,0.5,cat:0.5000:g/c1.png,
"""


@pytest.fixture
def queue(tmp_path):
    return ReviewQueue.from_csv(tmp_path, CSV)


def test_queue__least_sure_first_unreadable_apart(queue):
    assert [a.path for a in queue.answers] == ["b.png", "e.png", "c.png", "a.png"]
    assert queue.unreadable == [("d.png", "truncated")]
    b = queue.answers[0]
    assert (b.suggested, b.unknown, b.novel) == ("dog", True, True)  # "unknown" keeps its closest label
    assert [(n.label, n.distance, n.path) for n in queue.answers[3].neighbours] == [
        ("cat", 0.1, "g/c1.png"),
        ("cat", 0.2, "g/c2.png"),
    ]


def test_queue__accept_all_at_a_level_says_how_many_and_how_many_wrong(queue):
    rows, wrong = queue.at_least(0.95)
    assert [queue.answers[i].path for i in rows] == ["c.png", "a.png"] and wrong == pytest.approx(0.01 + 0.03)
    assert queue.at_least(0.3)[0] == [1, 2, 3]  # "unknown" answers are never accepted in bulk
    assert queue.accept_at_least(0.95) == 2
    assert queue.labelled() == [("c.png", "dog"), ("a.png", "cat")] and queue.at_least(0.95)[0] == []


def test_queue__decide_correct_skip_and_undo(queue):
    queue.decide("b.png", "fox")
    queue.decide("e.png", SKIP)
    assert [a.path for a in (queue.answers[i] for i in queue.pending())] == ["c.png", "a.png"]
    assert queue.undo() == "e.png" and queue.undo() == "b.png" and queue.undo() is None
    queue.decide("b.png", "fox")
    queue.decide("a.png", "cat")
    decisions = {r["path"]: (r["label"], r["decision"]) for r in queue.rows()}
    assert decisions == {
        "b.png": ("fox", "corrected"),
        "e.png": ("", "pending"),
        "c.png": ("", "pending"),
        "a.png": ("cat", "accepted"),
    }
