"""AppTest smoke tests, one or two per page: every page renders against a real run and without one, Query labels
an uploaded held-out digit, Evaluate draws its charts, and app.py's own duties: the demo run trained on first
start, and an unexpected error on any page shown as one generic line. What a page does through a ui/ module is
tested next to that module (test_auth, test_training, test_widgets, test_maps, ...)."""

from __future__ import annotations

import io
import json

import pytest

from tests.helpers import copy_run, held_out_digit, open_app, page_text

PAGES = ["pages/home.py", "pages/query.py", "pages/explore.py", "pages/train.py", "pages/evaluate.py"]
PAGES += ["pages/insights.py", "pages/review.py"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_exception(app_env, page):
    at = open_app(page)
    assert not at.exception
    assert not at.error


@pytest.mark.parametrize("page", [p for p in PAGES if p != "pages/train.py"])
def test_page_without_a_run_says_where_to_get_one(app_without_run, page):
    at = open_app(page)
    assert not at.exception and not at.error
    assert [w.value for w in at.warning] == [
        "No run **secret-project** yet. Train one on the **Train** page or pick one on **Home**."
    ]


def test_train_page_without_a_run_still_offers_training(app_without_run):
    at = open_app("pages/train.py")
    assert not at.exception and not at.error
    assert at.button(key="train_submit").label == "Train"
    assert "Triplets appear once a run exists." in [c.value for c in at.caption]


def test_query_labels_an_uploaded_held_out_digit(app_env):
    data, label = held_out_digit(app_env)
    at = open_app("pages/query.py")
    at.file_uploader(key="query_files").set_value(("digit.png", data, "image/png")).run()
    assert not at.exception
    assert [m.value for m in at.metric] == [label]
    fit = json.loads((app_env / "metrics.json").read_text())["confidence"]
    said = f"calibrated on {fit['n']:,} validation images, {fit['right']:,} of them labelled right"
    assert any(said in c.value for c in at.caption)  # what the confidence rests on
    assert len(at.get("download_button")) == 1
    query_trace = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][-1]
    assert query_trace["name"] == "your images" and query_trace["marker"]["symbol"] == "star"


def test_query_answers_the_good_file_when_another_is_not_an_image(app_env):
    data, label = held_out_digit(app_env)
    at = open_app("pages/query.py")
    at.file_uploader(key="query_files").set_value(
        [("notes.txt", b"not an image", "text/plain"), ("digit.png", data, "image/png")]
    ).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["**notes.txt** is not a readable image (not an image); it was skipped."]
    assert [m.value for m in at.metric] == [label]


def _query_a_red_square():
    """The Query page with a red square uploaded: no digit looks like it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
    at = open_app("pages/query.py")
    return at.file_uploader(key="query_files").set_value(("red.png", buf.getvalue(), "image/png")).run()


def test_query_says_unknown_for_an_image_unlike_the_gallery(app_env):
    at = _query_a_red_square()
    assert not at.exception
    assert [m.value for m in at.metric] == ["unknown"]
    assert any(c.value.startswith("Unlike every image in the gallery: ") for c in at.caption)
    # No confidence bar for a label that was not given: what it resembles, and that it is not trusted.
    assert not at.get("progress")
    assert any(m.value.startswith("**Closest match ") and m.value.endswith(", not trusted**") for m in at.markdown)
    at.toggle(key="query_unknown").set_value(False).run()
    assert [m.value for m in at.metric] != ["unknown"]
    assert len(at.get("progress")) == 1  # an answer has its confidence bar


def test_query_offers_unknown_from_the_novelty_test_alone(app_env, monkeypatch, tmp_path):
    """A run with a novelty test and no distance threshold (metrics.json has none): "Allow unknown" is offered
    and a red square is still answered "unknown"."""
    metrics = json.loads((app_env / "metrics.json").read_text())
    metrics["unknown"].pop("threshold")
    run = copy_run(app_env, tmp_path / "runs" / "no-threshold", metrics_json=metrics)
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(run.parent))
    monkeypatch.setenv("EMBEDDER_RUN", str(run))
    at = _query_a_red_square()
    assert not at.exception
    assert at.toggle(key="query_unknown").value is True
    assert [m.value for m in at.metric] == ["unknown"]
    at.toggle(key="query_unknown").set_value(False).run()
    assert [m.value for m in at.metric] != ["unknown"]


def test_evaluate_shows_confusion_and_a_threshold_slider(app_env):
    at = open_app("pages/evaluate.py")
    assert not at.exception
    charts = {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.key}
    assert charts["confusion"]["data"][0]["type"] == "heatmap"
    assert charts["confusion"]["data"][0]["y"] == [str(d) for d in range(10)]
    answered = at.metric[0].value
    at.slider(key="eval-threshold").set_value(0.0).run()
    assert not at.exception
    assert at.metric[0].value == "0.0%" and answered != "0.0%"
    assert any(c.value.startswith("Votes with k = ") for c in at.caption)  # which k the run votes with, and why
    fit = json.loads((app_env / "metrics.json").read_text())["confidence"]
    said = f"precision on {fit['n']:,} validation images, {fit['right']:,} of them labelled right; Query answers"
    assert any(said in c.value for c in at.caption)  # what the "unknown" threshold was set on
    novel = json.loads((app_env / "metrics.json").read_text())["test"]["novelty"]
    said = f"{novel['novel']} of {novel['n']:,} were taken for such"  # the novelty test's false alarms
    assert any(said in c.value for c in at.caption)
    after = json.loads((app_env / "metrics.json").read_text())["test"]["calibration"]["after"]
    said = f"**{after['ece']:.3f}** [{after['ece_ci'][0]:.3f}, {after['ece_ci'][1]:.3f}] for the calibrated"
    assert any(said in c.value for c in at.caption)  # the ECE with its interval: a few hundred queries


@pytest.mark.slow  # starts the demo's training
def test_missing_demo_run_starts_training_in_the_background(
    monkeypatch, tmp_path, demo_cache, no_job_outlives_its_test
):
    from ui import jobs

    monkeypatch.delenv("EMBEDDER_RUN", raising=False)
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    at = open_app()
    assert not at.exception
    job = jobs.registry().get(tmp_path / "runs" / "demo")
    assert job is not None and job.cfg.data == "demo"
    assert any("Training **demo** in the background" in i.value for i in at.info)
    job.cancel()  # the full demo takes minutes; the cancel path must leave no run behind
    assert job.wait(90)
    assert job.status in ("cancelled", "done")
    assert job.status == "done" or not (tmp_path / "runs" / "demo").exists()


def test_an_unexpected_error_on_a_page_is_one_generic_line(app_env, monkeypatch, tmp_path):
    metrics = json.loads((app_env / "metrics.json").read_text())
    metrics["not_reevaluated"] = {"images": None}  # a valid run (a count may be missing) the page cannot format
    odd = copy_run(app_env, tmp_path / "odd", metrics_json=metrics)
    monkeypatch.setenv("EMBEDDER_RUN", str(odd))
    at = open_app()  # the first run goes through app.py, which guards every page
    assert not at.exception
    assert [e.value for e in at.error] == ["Something went wrong on this page; the details are in the server log."]
    text = page_text(at)
    assert str(tmp_path) not in text and "Traceback" not in text and "TypeError" not in text
