"""What the issue-24 browser journeys tripped on, each in a real browser against a real server: maps computed once
in the background open at once afterwards; Cancel stops within a batch, also while validating, and the next
training waits for it; an "unknown" answer shows no confidence bar; a shared link names the active run in the
sidebar; the mislabel colours stand out on white."""

from __future__ import annotations

import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.app.test_browser import (  # noqa: F401  (browser, app_url, shared_dir: fixtures)
    CHROMIUM,
    _choose,
    _enter,
    _open,
    _serve,
    _shot,
    _tab,
    app_url,
    browser,
    shared_dir,
)
from tests.helpers import make_shapes_folder
from tests.maps.test_plots import contrast_on_white

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH - browser tests skipped"),
]
# Records whether the page ever showed a map being computed (a spinner or the background job's progress).
SEEN = """
window.__computing = false;
new MutationObserver(() => {
  const text = document.body ? document.body.innerText : "";
  if (/Running t-SNE|Running UMAP|being computed in the background|Embedding the gallery with/.test(text)) {
    window.__computing = true;
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""
PLOT = ".js-plotly-plot"


@pytest.fixture(scope="module")
def maps_server(digits_run, tmp_path_factory):
    """A server with background maps on, on a copy of the digits run that has no maps yet."""
    runs = tmp_path_factory.mktemp("maps") / "runs"
    run = runs / "digits"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("projections"))
    env = {
        "EMBEDDER_RUNS_DIR": str(runs),
        "EMBEDDER_RUN": str(run),
        "EMBEDDER_DATA_ROOTS": str(runs),
        "EMBEDDER_BACKGROUND_MAPS": "1",
    }
    with _serve(env, tmp_path_factory.mktemp("streamlit") / "maps.log") as url:
        yield url, run


def test_explore_tsne_opens_from_the_stored_map_once_the_background_job_is_done(browser, maps_server):  # noqa: F811
    from embedder.maps.precompute import STANDARD, MapSpec, missing
    from embedder.runs.run import load_run

    url, run_dir = maps_server
    link = f"{url}/explore?run=digits&method=tsne&dims=2&colour=label"
    with _tab(browser, timeout_ms=120_000) as page:
        _open(page, link, "Explore")
        # While the job runs: its progress, and the instant map meanwhile.
        page.get_by_text("t-SNE 2-D is being computed in the background").first.wait_for()
        page.get_by_text("Showing PCA until t-SNE is ready").wait_for()
        page.locator(PLOT).first.wait_for()
        _shot(page, "explore-maps-computing")
        # It opens by itself when stored; the rest of the set goes on in the background.
        page.get_by_text("t-SNE 2D").first.wait_for(timeout=600_000)
    deadline = time.time() + 900
    while missing(load_run(run_dir)) and time.time() < deadline:
        time.sleep(2)
    assert missing(load_run(run_dir)) == [], "the background job did not store every map"
    stored = {p.name: p.stat().st_mtime_ns for p in (run_dir / "projections").iterdir()}
    assert len(stored) >= len(STANDARD)
    # A new session opens t-SNE, then compares with before training: nothing is computed, every map is read.
    with _tab(browser) as page:
        page.add_init_script(SEEN)
        t0 = time.perf_counter()
        _open(page, link, "Explore")
        page.locator(PLOT).first.wait_for()
        page.get_by_text("t-SNE 2D").first.wait_for()
        seconds = time.perf_counter() - t0
        _open(page, link + "&compare=1", "Explore")
        page.get_by_text("Before training").first.wait_for()
        expect(page.locator(PLOT)).to_have_count(2)
        assert page.evaluate("window.__computing") is False
        _shot(page, "explore-tsne-stored")
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "projections").iterdir()} == stored
    assert MapSpec("tsne", 2) not in missing(load_run(run_dir))
    print(f"Explore t-SNE of the digits run from its stored map: plot drawn {seconds:.2f} s after opening the link")


def test_cancel_during_validation_stops_at_once_and_the_next_training_waits(
    browser,  # noqa: F811
    app_url,  # noqa: F811
    shared_dir,  # noqa: F811
):
    folder = make_shapes_folder(shared_dir / "many-shapes", per_class=150)
    with _tab(browser, timeout_ms=120_000) as page:
        _open(page, f"{app_url}/train", "Train")
        _choose(page, "Folder on the server")
        _enter(page, "Image folder", str(folder))
        page.get_by_role("textbox", name="Run name").fill("cancelled-in-validation")
        page.get_by_text("More settings").click()
        page.get_by_role("spinbutton", name="Validation share").fill("0.5")
        page.get_by_role("spinbutton", name="Image size").fill("128")
        # A long validation pass (60 images a class: auto chooses the holdout, which validates before training).
        page.get_by_role("spinbutton", name="Embedding batch size").fill("1")
        page.get_by_role("button", name="Train", exact=True).click()
        page.get_by_text(re.compile(r"Validating: \d+ / \d+")).first.wait_for()
        t0 = time.perf_counter()
        page.get_by_role("button", name="Cancel training").click()
        page.get_by_text("training cancelled").first.wait_for(timeout=30_000)  # a batch, not a validation pass
        seconds = time.perf_counter() - t0
        _shot(page, "train-cancelled-in-validation")
        # The next training starts only now that the first has stopped (EMBEDDER_MAX_TRAININGS is 1).
        page.get_by_role("textbox", name="Run name").fill("after-the-cancel")
        page.get_by_role("spinbutton", name="Validation share").fill("0.1")
        page.get_by_role("button", name="Train", exact=True).click()
        # .first: while the job panel's fragment reruns, Streamlit may keep its last render a moment (stale)
        page.get_by_role("button", name="Cancel training").first.wait_for()
        # (the cancelled one may still be writing its first answer's record a moment: it holds its slot till then)
        expect(page.get_by_text("another training is running")).to_have_count(0, timeout=60_000)
        expect(page.get_by_text("Also training: cancelled-in-validation")).to_have_count(0, timeout=60_000)
        page.get_by_role("button", name="Cancel training").first.click()
        page.get_by_text("training cancelled").first.wait_for()
    print(f"Cancel during validation: 'training cancelled' shown {seconds:.2f} s after the click")


def _far_image() -> bytes:
    """A smooth colour field, as in a photo: nothing like a digit, so the digits run answers "unknown"."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((64, 64)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def test_an_unknown_answer_shows_no_confidence_bar_and_says_what_it_resembles(browser, app_url):  # noqa: F811
    with _tab(browser) as page:
        _open(page, f"{app_url}/query", "Query")
        upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        upload.set_input_files(files=[{"name": "sky.png", "mimeType": "image/png", "buffer": _far_image()}])
        expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text("unknown", timeout=60_000)
        page.get_by_text(re.compile(r"Closest match \w+, not trusted")).first.wait_for()
        assert page.get_by_text(re.compile(r"^confidence \d+%")).count() == 0
        answer = page.locator('[data-testid="stVerticalBlockBorderWrapper"]').first
        assert answer.locator('[data-testid="stProgress"]').count() == 0
        _shot(page, "query-unknown")


@pytest.fixture(scope="module")
def linked_server(digits_run, tmp_path_factory):
    """A server whose default run does not exist (as the demo before its training) and a run named "linked"."""
    runs = tmp_path_factory.mktemp("linked") / "runs"
    shutil.copytree(digits_run, runs / "linked", ignore=shutil.ignore_patterns("projections"))
    env = {"EMBEDDER_RUNS_DIR": str(runs), "EMBEDDER_RUN": str(runs / "none"), "EMBEDDER_DATA_ROOTS": str(runs)}
    with _serve(env, tmp_path_factory.mktemp("streamlit") / "linked.log") as url:
        yield url


def test_a_shared_link_names_its_run_in_the_sidebar(browser, linked_server):  # noqa: F811
    for page_name in ("explore", "query"):
        with _tab(browser) as page:
            _open(page, f"{linked_server}/{page_name}?run=linked&method=pca&dims=2", page_name.capitalize())
            sidebar = page.locator('[data-testid="stSidebar"]')
            expect(sidebar.get_by_text("Active run:")).to_contain_text("linked")
            expect(sidebar.get_by_text("not trained yet")).to_have_count(0)


def test_the_mislabel_colours_stand_out_on_the_white_map(browser, app_url):  # noqa: F811
    with _tab(browser) as page:
        _open(page, f"{app_url}/explore?method=pca&dims=2&colour=suspected%20mislabel", "Explore")
        page.wait_for_function(
            "() => document.querySelector('.js-plotly-plot')?._fullData?.some(t => t.marker?.colorscale)"
        )
        scale = page.evaluate(
            "() => document.querySelector('.js-plotly-plot')._fullData"
            ".find(t => t.marker?.colorscale).marker.colorscale"
        )
        background = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullLayout.plot_bgcolor")
        _shot(page, "explore-mislabel-colours")
    from plotly.colors import sample_colorscale

    assert background in ("white", "#fff", "#ffffff", "rgb(255, 255, 255)")
    shades = sample_colorscale([list(stop) for stop in scale], list(np.linspace(0, 1, 21)))
    assert min(contrast_on_white(c) for c in shades) >= 3.0
