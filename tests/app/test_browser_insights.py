"""The Insights journey in a real browser: open the app on a run with planted flipped labels, go to Insights, and
see the flipped images first. Servers and waits as in test_browser.py."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import sync_playwright

from tests.app.test_browser import CHROMIUM, CHROMIUM_ARGS, IDLE, RUN_COUNTER, SHOTS, VIEWPORT, _serve

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium) - browser tests skipped"
    ),
]


def test_insights_shows_the_planted_mislabels_first(planted_run, tmp_path):
    run_dir, truth = planted_run
    env = {"EMBEDDER_RUNS_DIR": str(run_dir.parent), "EMBEDDER_RUN": str(run_dir), "EMBEDDER_DATA_ROOTS": str(tmp_path)}
    with _serve(env, tmp_path / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(RUN_COUNTER)
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_text("Active run").first.wait_for()
        page.wait_for_function(IDLE)
        page.locator('[data-testid="stSidebarNavLink"]', has_text="Insights").first.click()
        first = page.get_by_text(re.compile(r"^#1 .* is labelled")).first
        first.wait_for()
        page.wait_for_function(IDLE)
        names = [
            page.get_by_text(re.compile(rf"^#{i} .* is labelled"))
            .first.inner_text()
            .split(" is labelled")[0]
            .split()[-1]
            for i in range(1, len(truth["flipped"]) + 1)
        ]
        assert names[0] in truth["flipped"]
        assert len(set(names) & set(truth["flipped"])) >= 6  # 7 of 8 when measured
        # The image of the first suspect and its neighbours are drawn, not just named.
        assert page.locator('[data-testid="stImage"] img').count() >= 6
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "insights.png"), full_page=False)
        context.close()
        browser.close()
