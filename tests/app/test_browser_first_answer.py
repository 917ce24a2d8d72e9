"""A fresh server in a real browser answers a digit upload while the demo still trains: the demo's first answer
(the digits' pixels) is written within seconds, the Query page shows it, and a line says training improves it
in the background. What `make run` on a fresh clone does, with an empty runs folder and cache."""

from __future__ import annotations

import os
import time

import pytest
from playwright.sync_api import expect

from tests.app.test_browser import CHROMIUM, _open, _rerun, _serve, _tab, browser  # noqa: F401  (browser: a fixture)
from tests.helpers import held_out_digit

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)"),
]


def test_a_fresh_server_answers_a_digit_while_the_demo_still_trains(browser, tmp_path):  # noqa: F811
    runs = tmp_path / "runs"
    env = {
        "EMBEDDER_RUNS_DIR": str(runs),
        "EMBEDDER_CACHE": str(tmp_path / "cache"),  # no demo set written yet either
        "EMBEDDER_DATA_ROOTS": str(tmp_path),
    }
    saved = os.environ.pop("EMBEDDER_RUN", None)  # nothing asked for: the server trains the demo itself
    try:
        launched = time.time()  # what `make run` starts: the server, with nothing trained
        with _serve(env, tmp_path / "server.log") as url, _tab(browser, timeout_ms=240_000) as page:
            started = time.time()
            _open(page, f"{url}/query", "Query")
            page.get_by_text("Images to label").first.wait_for()  # the page redraws itself once the run answers
            answering = time.time() - started
            data, label = held_out_digit(runs / "demo")
            upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
            _rerun(
                page, lambda: upload.set_input_files(files=[{"name": "d.png", "mimeType": "image/png", "buffer": data}])
            )
            expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text(label)
            answered = time.time() - started
            # and training goes on meanwhile, saying so
            expect(page.get_by_text("Improving demo in the background", exact=False).first).to_be_visible()
            print(
                f"\nfresh server: up after {started - launched:.0f} s; then the Query page answered after "
                f"{answering:.0f} s, the digit after {answered:.0f} s ({answered + started - launched:.0f} s in all)"
            )
    finally:
        if saved is not None:
            os.environ["EMBEDDER_RUN"] = saved
