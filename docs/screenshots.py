"""Take the screenshots README shows, from real runs in a real browser, so they show the app as it is.

    python docs/screenshots.py --digits runs/demo --photos runs/cats_dogs [--out docs/screenshots]

--digits: a digits demo run trained with the defaults (`make demo`): query.png and explore.png (t-SNE).
--photos: a cats_dogs run (`python -m embedder train --data cats_dogs/train --queries cats_dogs/val`):
evaluate-photos.png (where it goes wrong), evaluate-confidence.png (the reliability diagram) and
evaluate-unknown.png (the "unknown" trade-off).

It drives the app the way tests/app/test_browser.py does (same server, same waits); Chromium must be on PATH.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.app.test_browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, _open, _rerun, _serve, _tab  # noqa: E402
from tests.helpers import held_out_digit  # noqa: E402


def _server(run: Path, log: Path):
    env = {"EMBEDDER_RUNS_DIR": str(run.parent), "EMBEDDER_RUN": str(run), "EMBEDDER_DATA_ROOTS": str(run.parent)}
    os.environ.pop("EMBEDDER_PASSWORD", None)
    return _serve(env, log)


def _take(page, out: Path, name: str, height: float | None = None) -> None:
    """The window (not the whole page; its top ``height`` pixels if given) as ``name``.png, once the widgets'
    lazily loaded code has arrived and been drawn (until then a select box is a grey bar)."""
    page.wait_for_load_state("networkidle")
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    clip = None if height is None else {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
    page.screenshot(path=str(out / f"{name}.png"), clip=clip)
    print(f"wrote {out / name}.png")


def _at(page, text: str, out: Path, name: str, until: str | None = None) -> None:
    """Scroll ``text`` to the top of the window and take it as ``name``.png, down to ``until`` if given."""
    target = page.get_by_text(text).first
    target.wait_for()
    target.evaluate("e => e.scrollIntoView({block: 'start'})")
    end = page.get_by_text(until).first.bounding_box() if until else None
    _take(page, out, name, None if end is None else min(end["y"], VIEWPORT["height"]))


def digits_shots(browser, run: Path, out: Path) -> None:
    data, label = held_out_digit(run)
    with _server(run, out / ".digits-server.log") as url, _tab(browser, timeout_ms=120_000) as page:
        _open(page, f"{url}/query", "Query")
        upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        digit = {"name": "digit.png", "mimeType": "image/png", "buffer": data}
        _rerun(page, lambda: upload.set_input_files(files=[digit]))
        page.locator('[data-testid="stMetricValue"]', has_text=label).first.wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
        _take(page, out, "query")
        _open(page, f"{url}/explore?method=tsne", "Explore")  # the map a user settles on; PCA is the quick one
        page.locator(".js-plotly-plot").first.wait_for()
        _take(page, out, "explore")


def photos_shots(browser, run: Path, out: Path) -> None:
    with _server(run, out / ".photos-server.log") as url, _tab(browser, timeout_ms=120_000) as page:
        _open(page, f"{url}/evaluate", "Evaluate")
        page.locator(".js-plotly-plot").first.wait_for()
        _at(page, "Where it goes wrong", out, "evaluate-photos")
        _at(page, "Can the confidence be trusted?", out, "evaluate-confidence")
        _at(page, "when to refuse an answer", out, "evaluate-unknown", until="Training history")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=Path, help="a digits demo run")
    parser.add_argument("--photos", type=Path, help="a cats_dogs run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("chromium is not on PATH (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        if args.digits:
            digits_shots(browser, args.digits.resolve(), args.out)
        if args.photos:
            photos_shots(browser, args.photos.resolve(), args.out)
        browser.close()


if __name__ == "__main__":
    main()
