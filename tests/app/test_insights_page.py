"""The Insights page under AppTest, on the run with planted flipped labels, copies and a leak: the planted
problems are what a visitor sees first."""

from __future__ import annotations

import pytest

from tests.helpers import open_app, page_text


@pytest.fixture
def planted_app(monkeypatch, tmp_path, planted_run):
    run_dir, truth = planted_run
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(run_dir.parent))
    monkeypatch.setenv("EMBEDDER_RUN", str(run_dir))
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    return run_dir, truth


def _first_suspects(at, n: int) -> list[str]:
    """The gallery paths named by the first ``n`` suspect boxes, in page order."""
    texts = [m.value for m in at.markdown if m.value.startswith("**#")]
    return [t.split("`")[1] for t in texts[:n]]


def test_insights__planted_mislabels_first_and_the_leak_measured(planted_app):
    run_dir, truth = planted_app
    at = open_app("pages/insights.py")
    assert not at.exception and not at.error
    n = len(truth["flipped"])
    first = _first_suspects(at, n)
    assert len(first) == n
    assert len(set(first) & set(truth["flipped"])) >= 6  # 7 of 8 when measured
    assert first[0] in truth["flipped"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Leaked queries"] == str(len(truth["leaked"]))
    assert float(metrics["P@1 as measured"]) > float(metrics["P@1 without the leaked images"])
    assert len(at.get("download_button")) == 4  # suspects CSV, projector, gallery CSV, run bundle
    assert str(run_dir.parent.parent) not in page_text(at)  # no server path reaches the browser


def test_insights__another_batch_shows_other_triplets(planted_app):
    at = open_app("pages/insights.py")
    before = [m.value for m in at.markdown if m.value.startswith("before:")]
    assert before and all("after:" in t for t in before)
    at.button(key="insights-another-batch").click().run()
    assert not at.exception
    assert [m.value for m in at.markdown if m.value.startswith("before:")] != before


def test_explore__colour_by_suspected_mislabel_lights_up_the_planted_flips(planted_app):
    import base64
    import json

    import numpy as np

    from embedder.runs.run import load_run

    run_dir, truth = planted_app
    at = open_app("pages/explore.py")
    assert "Suspected mislabel" in at.selectbox(key="map_colour").options
    at.selectbox(key="map_colour").set_value("suspected mislabel").run()
    assert not at.exception and not at.error
    (trace,) = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    colour = trace["marker"]["color"]
    shade = np.frombuffer(base64.b64decode(colour["bdata"]), dtype=colour["dtype"])  # whole percents, by row
    paths = load_run(run_dir).gallery_paths
    flipped = [paths.index(p) for p in truth["flipped"]]
    assert np.median(shade[flipped]) > 50 and np.median(shade) == 0


def test_insights__a_pretrained_run_says_its_labels_are_judged_in_the_pretrained_features(
    monkeypatch, tmp_path, photo_run
):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(photo_run.parent))
    monkeypatch.setenv("EMBEDDER_RUN", str(photo_run))
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    at = open_app("pages/insights.py")
    assert not at.exception and not at.error
    text = page_text(at)
    assert "judged in **the pretrained features, which never saw a label**" in text
    assert "find_label_issues lists them" in text or "neighbours outvote its label" in text
