"""The map in a real browser at scale: Explore on a generated 100,000-image run draws every point, answers a
lasso, and a shared URL reopens the same view in a fresh browser context; on a run above the point cap it draws a
sample, and a lasso counts and exports every point inside it, drawn or not."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.app.test_browser import CHROMIUM, SHOTS, _open, _rerun, _serve, _shot, _tab, browser  # noqa: F401  (browser: a fixture)
from tests.helpers import synthetic_run

N = 100_000
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH - browser tests skipped"),
]


@pytest.fixture(scope="module")
def big_url(tmp_path_factory):
    runs = tmp_path_factory.mktemp("big") / "runs"
    run = synthetic_run(runs / "big", n=N)
    env = {"EMBEDDER_RUNS_DIR": str(runs), "EMBEDDER_RUN": str(run), "EMBEDDER_DATA_ROOTS": str(runs.parent)}
    with _serve(env, tmp_path_factory.mktemp("streamlit") / "big.log") as url:
        yield url


POINTS = "() => document.querySelector('.js-plotly-plot')._fullData.reduce((n, t) => n + (t._length || 0), 0)"


def _lasso(page) -> None:
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    cx, cy, r = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2, area["height"] / 10
    page.mouse.move(cx - r, cy - r)
    page.mouse.down()
    for x, y in [(cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r), (cx - r, cy - r)]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def test_explore_draws_100k_points_and_answers_a_lasso(browser, big_url):  # noqa: F811
    with _tab(browser, timeout_ms=90_000) as page:
        page.goto(big_url)
        _open(page, f"{big_url}/explore", "Explore")
        page.locator(".js-plotly-plot").first.wait_for()
        page.get_by_text(f"Showing {N:,} of {N:,} gallery images").wait_for()
        assert page.evaluate(POINTS) == N  # every point is in the browser's plot, none sampled away
        _shot(page, "explore-100k")
        _rerun(page, lambda: _lasso(page))
        heading = page.get_by_role("heading", name=re.compile(r"[\d,]+ selected"))
        expect(heading).to_be_visible()
        selected = int(heading.inner_text().split()[0].replace(",", ""))
        assert 10 < selected < N
        expect(page.locator('[data-testid="stImageCaption"]', has_text="#").first).to_be_visible()
        # The address bar now links to this view and the picked image.
        assert re.search(r"[?&]item=\d+", page.url) and "method=pca" in page.url
        page.screenshot(path=str(SHOTS / "explore-100k-lasso.png"))
        # The selection downloads as CSV: one row per selected image, with its map position and neighbours.
        with page.expect_download() as got:
            page.get_by_role("button", name=re.compile("Download the selection")).click()
        lines = Path(got.value.path()).read_text().splitlines()
        assert lines[0] == "id,path,label,x,y,neighbours" and len(lines) == selected + 1
        assert len(lines[1].split(",")[-1].split()) == 5  # the ids of its 5 nearest gallery images


def test_a_shared_url_reopens_the_same_view_in_a_fresh_browser(browser, big_url):  # noqa: F811
    url = f"{big_url}/explore?run=big&method=pca&dims=2&colour=correct&labels=class03&item=42"
    with _tab(browser, timeout_ms=90_000) as page:
        _open(page, url, "Explore")
        page.locator(".js-plotly-plot").first.wait_for()
        # Colour-by restored: the map's groups are right / wrong.
        page.wait_for_function(
            "() => document.querySelector('.js-plotly-plot')?._fullData?.some(t => t.meta === 'wrong')"
        )
        expect(page.locator('[data-testid="stImageCaption"]', has_text="· #42").first).to_be_visible(
            timeout=60_000
        )  # the shared item and its neighbours
        legend = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.map(t => t.meta)")
        assert set(legend) == {"right", "wrong"}
        # The highlighted label restored: its points stay bright, the others are greyed out (all still drawn).
        bright = page.evaluate(
            "() => document.querySelector('.js-plotly-plot')._fullData"
            ".reduce((n, t) => n + (t.selectedpoints || []).length, 0)"
        )
        assert 0 < bright < N


# A run above the cap: 40,000 images drawn as an 8,000-point sample. The cap is lowered (EMBEDDER_MAP_POINTS) rather
# than the run made a million images big: the same code paths, and a run that builds in seconds on 2 cores.
N_SAMPLED, CAP = 40_000, 8_000


@pytest.fixture(scope="module")
def sampled_url(tmp_path_factory):
    runs = tmp_path_factory.mktemp("sampled") / "runs"
    run = synthetic_run(runs / "sampled", n=N_SAMPLED)
    env = {
        "EMBEDDER_RUNS_DIR": str(runs),
        "EMBEDDER_RUN": str(run),
        "EMBEDDER_DATA_ROOTS": str(runs.parent),
        "EMBEDDER_MAP_POINTS": str(CAP),
    }
    with _serve(env, tmp_path_factory.mktemp("streamlit") / "sampled.log") as url:
        yield url, run


def _inside(xy: np.ndarray, path: str) -> np.ndarray:
    """The oracle: points of ``xy`` inside Plotly's selection outline ("M x,yL x,y...Z"), by counting crossings of
    a ray to +x with each edge (even-odd), edge by edge over all points at once."""
    vertices = np.array([[float(v) for v in p.split(",")] for p in path.strip("MZ").split("L")])
    inside = np.zeros(len(xy), bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        spans = (y1 > xy[:, 1]) != (y2 > xy[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = xy[:, 0] < x1 + (xy[:, 1] - y1) * (x2 - x1) / (y2 - y1)
        inside ^= spans & cross
    return inside


def test_a_lasso_on_a_sampled_map_counts_and_exports_every_point_inside_it(browser, sampled_url):  # noqa: F811
    from embedder.maps.plots import on_grid
    from embedder.maps.project import MapKey, cached_project
    from embedder.runs.run import load_run

    url, run_dir = sampled_url
    with _tab(browser, timeout_ms=90_000) as page:
        _open(page, f"{url}/explore", "Explore")
        page.locator(".js-plotly-plot").first.wait_for()
        page.get_by_text(re.compile(rf"Drawing [\d,]+ of {N_SAMPLED:,} points")).wait_for()
        page.get_by_text(f"A box or lasso selects among all {N_SAMPLED:,}").wait_for()
        drawn = page.evaluate(POINTS)
        assert 0 < drawn <= CAP
        assert page.evaluate("() => document.querySelector('.js-plotly-plot')._fullLayout.images.length") == 1
        outline = []

        def lasso():
            _lasso(page)
            outline.append(page.evaluate("() => document.querySelector('.js-plotly-plot').layout.selections[0].path"))

        _rerun(page, lasso)
        heading = page.get_by_role("heading", name=re.compile(r"[\d,]+ selected"))
        expect(heading).to_be_visible()
        selected = int(heading.inner_text().split()[0].replace(",", ""))
        _shot(page, "explore-sampled-lasso")
        # The drawn points in the lasso are highlighted; the selection holds about N / CAP times as many.
        drawn_in = page.evaluate(
            "() => document.querySelector('.js-plotly-plot')._fullData"
            ".reduce((n, t) => n + (t.selectedpoints || []).length, 0)"
        )
        assert drawn_in > 0 and selected > 2 * drawn_in
        # Exactly the points inside the outline the browser drew, among all of the run's (the server's map).
        run = load_run(run_dir)
        coords = cached_project(run.path, run.gallery_embeddings, MapKey("pca", 2), run.gallery_labels).coords
        grid, _ = on_grid(coords)
        assert selected == int(_inside(grid.astype(np.float64), outline[0]).sum())
        with page.expect_download() as got:
            page.get_by_role("button", name=re.compile("Download the selection")).click()
        lines = Path(got.value.path()).read_text().splitlines()
        assert lines[0] == "id,path,label,x,y,neighbours" and len(lines) == selected + 1
