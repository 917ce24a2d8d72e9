"""User journeys in a real browser: `streamlit run app.py` on a free port against a small run, driven by
Playwright through Debian's Chromium. Screenshots land in artifacts/screenshots/ (the README's, of real
runs, are taken by docs/screenshots.py with these same helpers).

Waits are on what the page shows or on Streamlit's own signal that a script run finished (RUN_COUNTER), never on
a clock. Each test opens its own browser context, so they pass in any order.

Skipped only when `chromium` is not on PATH (CI installs the Debian package).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from embedder.runs.run import load_run
from tests.helpers import held_out_digit, make_shapes_folder, rewrite_checksums

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
K = 5  # the Query page's default number of neighbours
VIEWPORT = {"width": 1400, "height": 1000}
# Streamlit marks its root element data-test-script-state="running" while the script runs and "notRunning" once
# it is done (its own e2e tests wait on this). Counting the switches to "notRunning" tells a rerun that has
# finished from one that has not started yet.
RUN_COUNTER = """
window.__runsFinished = 0;
new MutationObserver((changes) => {
  for (const c of changes) {
    if (c.oldValue !== "notRunning" && c.target.getAttribute("data-test-script-state") === "notRunning") {
      window.__runsFinished += 1;
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-test-script-state"]});
"""
IDLE = """() => window.__runsFinished > 0 &&
  document.querySelector('[data-testid="stApp"]')?.getAttribute("data-test-script-state") === "notRunning" """

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # each module starts streamlit servers and a browser, on a trained run
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium) - browser tests skipped"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(env: dict, log: Path):
    """A streamlit server on a free port with ``env`` added; always stopped at the end, even when a test fails."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory) -> Path:
    """The server's only data root besides its runs folder: image folders a test trains on go here."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def app_url(digits_run, shared_dir, tmp_path_factory):
    """An open server on the digits run."""
    env = {
        "EMBEDDER_RUNS_DIR": str(digits_run.parent),
        "EMBEDDER_RUN": str(digits_run),
        "EMBEDDER_DATA_ROOTS": os.pathsep.join([str(shared_dir), str(digits_run.parent)]),
    }
    env.pop("EMBEDDER_PASSWORD", None)
    with _serve(env, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def locked_url(digits_run, tmp_path_factory):
    """A server behind a password, on a copy of the digits run whose metrics the Home page cannot format."""
    odd = tmp_path_factory.mktemp("locked") / "odd"
    shutil.copytree(digits_run, odd)
    metrics = json.loads((odd / "metrics.json").read_text())
    metrics["not_reevaluated"] = {"images": None}  # a valid run (a count may be missing) the page cannot format
    (odd / "metrics.json").write_text(json.dumps(metrics))
    rewrite_checksums(odd)
    env = {"EMBEDDER_RUNS_DIR": str(odd.parent), "EMBEDDER_RUN": str(odd), "EMBEDDER_PASSWORD": PASSWORD}
    with _serve(env, tmp_path_factory.mktemp("streamlit") / "locked.log") as url:
        yield url, odd


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextmanager
def _tab(browser, timeout_ms: int = 60_000):
    """A page in a browser context of its own (no cookies or session shared with another test)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(RUN_COUNTER)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, app_url):
    with _tab(browser) as page:
        # Every journey starts where a user starts: the entry page.
        page.goto(app_url)
        page.get_by_text("Active run").first.wait_for()
        yield page


@pytest.fixture
def fresh_url(digits_run, shared_dir, tmp_path):
    """A server of its own that no browser has opened yet."""
    env = {
        "EMBEDDER_RUNS_DIR": str(digits_run.parent),
        "EMBEDDER_RUN": str(digits_run),
        "EMBEDDER_DATA_ROOTS": os.pathsep.join([str(shared_dir), str(digits_run.parent)]),
    }
    with _serve(env, tmp_path / "fresh.log") as url:
        yield url


def test_a_deep_link_to_a_fresh_server_gets_the_app_navigation(browser, fresh_url):
    # A fresh server has not run app.py for anyone yet, which is when Streamlit would run pages/query.py alone,
    # with a sidebar of file names ("app", "query", ...).
    import re

    with _tab(browser) as page:
        page.goto(f"{fresh_url}/query")
        page.locator('[data-testid="stSidebarNavLink"]', has_text=re.compile("Evaluate")).first.wait_for()
        links = [t.split()[-1] for t in page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()]
        assert links == ["Home", "Query", "Review", "Explore", "Train", "Evaluate", "Insights"]
        page.get_by_text("Images to label").first.wait_for()  # and it is the Query page that was asked for
        assert page.url.endswith("/query")


def _open(page, url: str, name: str) -> None:
    page.goto(url)
    page.locator('[data-testid="stSidebarNavLink"]', has_text=name).first.wait_for()
    _settle(page)


def _settle(page) -> None:
    """Wait until a script run has finished since the page loaded and none is running. Call it on a fresh page, or
    once the page shows something the current run draws; after an action that reruns the script, use _rerun."""
    page.wait_for_function(IDLE)


def _rerun(page, action, timeout_ms: float | None = None) -> None:
    """Do ``action`` (a click, an upload, ...) and wait until the script run it starts has finished (within
    ``timeout_ms``, default the page's)."""
    before = page.evaluate("window.__runsFinished")
    action()
    page.wait_for_function("n => window.__runsFinished > n", arg=before, timeout=timeout_ms)
    page.wait_for_function(IDLE, timeout=timeout_ms)


def _until(page, action, done, tries: int = 3, timeout_ms: float = 30_000) -> None:
    """Do ``action`` and wait for the script run it starts, again while ``done()`` (what the page shows) says it
    did not take: an input that lands while the page redraws after the last run can be lost, and a user would
    simply do it again. Seen in CI about 1 run in 5 for a radio click and for Enter in a text box."""
    for attempt in range(tries):
        try:
            return _rerun(page, action, timeout_ms=timeout_ms)
        except PlaywrightTimeout:
            if done():  # it took, but its run ended before the counter was read: nothing to redo
                return page.wait_for_function(IDLE, timeout=timeout_ms)
            if attempt == tries - 1:
                raise


def _choose(page, option: str) -> None:
    """Pick the radio button ``option``."""
    radio = page.get_by_role("radio", name=option)
    _until(page, page.get_by_text(option).click, radio.is_checked)


def _enter(page, box: str, text: str) -> None:
    """Type ``text`` into the text box labelled ``box`` and press Enter, which applies it. Until it applies,
    Streamlit shows "Press Enter to apply" under the box."""
    field = page.get_by_role("textbox", name=box)
    pending = page.locator('[data-testid="InputInstructions"]', has_text="Press Enter to apply")

    def enter():
        field.fill(text)
        field.press("Enter")

    _until(page, enter, lambda: field.input_value() == text and pending.count() == 0)


def _navigate(page, name: str, shows: str, tries: int = 3) -> None:
    """Click the sidebar link ``name`` until the page shows ``shows``, and let its script run finish. A click that
    lands while the page redraws can be lost, as a radio's can: seen once in a full suite beside two benchmarks,
    where the Query page never came."""
    link = page.locator('[data-testid="stSidebarNavLink"]', has_text=name).first
    for attempt in range(tries):
        link.click()
        try:
            page.get_by_text(shows).first.wait_for(timeout=30_000)
            return _settle(page)
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def _painted(page) -> None:
    """Wait until the browser has drawn two more frames (a scroll has been painted)."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_home_shows_the_active_run(page, app_url, digits_run):
    page.get_by_text("1,438").wait_for()
    assert page.get_by_text("Triplets shape the space").is_visible()
    _settle(page)
    _shot(page, "home")


def test_query_upload_shows_label_and_neighbours(page, app_url, digits_run):
    data, label = held_out_digit(digits_run)
    _open(page, f"{app_url}/query", "Query")
    upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    _rerun(page, lambda: upload.set_input_files(files=[{"name": "digit.png", "mimeType": "image/png", "buffer": data}]))
    expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text(label, timeout=60_000)
    neighbours = page.locator('[data-testid="stImageCaption"]', has_text="d = ")
    expect(neighbours.nth(K - 1)).to_be_visible(timeout=60_000)  # the K-th neighbour's thumbnail is drawn
    page.locator(".js-plotly-plot").first.wait_for()
    _shot(page, "query")
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    _painted(page)
    page.screenshot(path=str(SHOTS / "query-map.png"))


def test_explore_draws_every_point_and_a_lasso_shows_thumbnails(page, app_url, digits_run):
    from embedder.runs.run import load_run

    n = len(load_run(digits_run).gallery_paths)
    _open(page, f"{app_url}/explore", "Explore")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    counts = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.map(t => t._length)")
    assert sum(counts) == n
    _shot(page, "explore")

    # Lasso a square in the middle of the plot area: some points must land in the selection grid.
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    cx, cy, r = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2, area["height"] / 4

    def lasso():
        page.mouse.move(cx - r, cy - r)
        page.mouse.down()
        for x, y in [(cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r), (cx - r, cy - r)]:
            page.mouse.move(x, y, steps=8)
        page.mouse.up()

    _rerun(page, lasso)
    thumbs = page.locator('[data-testid="stImageCaption"]', has_text="#")
    expect(thumbs.first).to_be_visible()
    page.get_by_text("Show the nearest neighbours of").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "explore-selection.png"))


def test_train_and_evaluate_pages_render(page, app_url):
    _open(page, f"{app_url}/train", "Train")
    page.get_by_text("What the model learns from").wait_for()
    page.locator('[data-testid="stImageCaption"]', has_text="anchor").first.wait_for()
    _shot(page, "train")
    _open(page, f"{app_url}/evaluate", "Evaluate")
    page.get_by_text("held-out images queried").wait_for()  # the table itself is a canvas
    page.locator(".js-plotly-plot").first.wait_for()
    _settle(page)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    _shot(page, "evaluate")


def test_training_in_one_tab_while_another_queries_then_cancel(browser, app_url, digits_run, shared_dir):
    folder = make_shapes_folder(shared_dir / "shapes", per_class=20)
    runs_before = sorted(p.name for p in digits_run.parent.iterdir())
    with _tab(browser) as trainer, _tab(browser, timeout_ms=120_000) as querier:
        trainer.goto(app_url)
        _open(trainer, f"{app_url}/train", "Train")
        _choose(trainer, "Folder on the server")
        _enter(trainer, "Image folder", str(folder))
        trainer.get_by_role("spinbutton", name="Epochs (max)").fill("500")
        trainer.get_by_text("More settings").click()
        trainer.get_by_role("spinbutton", name="Patience (epochs)").fill("100")
        trainer.get_by_role("spinbutton", name="Validation share").fill("0")  # nothing ends it early
        trainer.get_by_role("button", name="Train", exact=True).click()
        cancel = trainer.get_by_role("button", name="Cancel training")
        cancel.wait_for()

        # Meanwhile, another user queries the existing run and gets an answer.
        querier.goto(app_url)
        _open(querier, f"{app_url}/query", "Query")
        data, label = held_out_digit(digits_run)
        querier.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            files=[{"name": "digit.png", "mimeType": "image/png", "buffer": data}]
        )
        expect(querier.locator('[data-testid="stMetricValue"]').first).to_have_text(label, timeout=120_000)

        assert cancel.is_visible()  # the training job was running all along
        cancel.click()
        trainer.get_by_text("training cancelled").wait_for()
    # What was there is as it was; the one new run, if the cancel came after its first answer was written, is that
    # first answer, answering, and saying its training was cancelled.
    after = sorted(p.name for p in digits_run.parent.iterdir() if not p.name.startswith("."))
    new = [n for n in after if n not in runs_before]
    assert {n for n in runs_before if not n.startswith(".")} <= set(after) and len(new) <= 1, (runs_before, after)
    for name in new:
        assert load_run(digits_run.parent / name).metrics["upgrade"]["result"] == "cancelled"


def _log_in(page, url: str, path: str = "") -> None:
    page.goto(f"{url}/{path}")
    field = page.get_by_label("Password", exact=True)
    field.wait_for()
    field.fill(PASSWORD)
    page.get_by_role("button", name="Enter").click()


def test_password_gate_in_a_real_browser(browser, locked_url):
    url, run = locked_url
    with _tab(browser) as page:
        page.goto(f"{url}/query")  # a deep link asks first
        field = page.get_by_label("Password", exact=True)
        field.wait_for()
        _settle(page)
        assert page.locator('[data-testid="stSidebarNavLink"]').count() == 0
        assert page.get_by_text("Images to label").count() == 0 and run.name not in page.content()
        field.fill("horse correct")
        page.get_by_role("button", name="Enter").click()
        page.get_by_text("Wrong password.").wait_for()
        _settle(page)
        assert page.get_by_text("Images to label").count() == 0
        _shot(page, "password")

        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Enter").click()
        page.get_by_text("Images to label").first.wait_for()  # then opens the page it asked for
        assert page.url.endswith("/query")


def test_an_error_on_a_page_shows_no_traceback_or_server_path(browser, locked_url):
    url, run = locked_url
    with _tab(browser) as page:
        _log_in(page, url)
        page.get_by_text("Something went wrong on this page").wait_for()
        _settle(page)
        html = page.content()
        assert "Traceback" not in html and "TypeError" not in html and str(run.parent) not in html
