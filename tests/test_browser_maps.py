"""The map in a real browser at scale: Explore on a generated 100,000-image run draws every point, answers a
lasso, and a shared URL reopens the same view in a fresh browser context."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import synthetic_run
from playwright.sync_api import expect
from test_browser import CHROMIUM, SHOTS, _open, _rerun, _serve, _shot, _tab, browser  # noqa: F401  (browser: a fixture)

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
