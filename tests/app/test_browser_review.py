"""The labelling loop in a real browser: a zip of 30 new digits labelled on the Review page, some accepted with the
keyboard, one corrected to a new class typed in, the rest accepted above 95%; they join the gallery and the map;
Undo takes them back out. The zip's images are only read."""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile

import pytest
from playwright.sync_api import expect

from embedder.runs.run import load_run
from tests.app.test_browser import (  # noqa: F401  (browser: a fixture)
    CHROMIUM,
    _navigate,
    _open,
    _rerun,
    _serve,
    _shot,
    _tab,
    browser,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH - browser tests skipped"),
]
POINTS = "() => document.querySelector('.js-plotly-plot')._fullData.reduce((n, t) => n + (t._length || 0), 0)"
NEW = "seven-ish"  # the class the corrected image is given, typed in


@pytest.fixture(scope="module")
def served(digits_run, tmp_path_factory):
    """runs/base, the server's run (protected), and runs/mine, a copy the browser may change."""
    root = tmp_path_factory.mktemp("review")
    for name in ("base", "mine"):
        shutil.copytree(digits_run, root / "runs" / name, ignore=shutil.ignore_patterns("projections"))
    env = {
        "EMBEDDER_RUNS_DIR": str(root / "runs"),
        "EMBEDDER_RUN": str(root / "runs" / "base"),
        "EMBEDDER_DATA_ROOTS": str(root),
    }
    env.pop("EMBEDDER_PASSWORD", None)
    with _serve(env, tmp_path_factory.mktemp("streamlit") / "review.log") as url:
        yield url, root / "runs" / "mine"


def thirty_new_digits(run_dir) -> bytes:
    """30 held-out digits of the run (3 a class, never in its gallery), flat in a zip: no class folders."""
    paths, labels = load_run(run_dir).queries("test")
    picked = [p for d in range(10) for p in [p for p, lab in zip(paths, labels) if lab == d][:3]]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in picked:
            zf.write(p, f"new/{p.parent.name}-{p.name}")
    return buf.getvalue()


def _card(page) -> str:
    return page.get_by_text(re.compile(r"[\d,]+ of 30 to review")).first.inner_text()


def test_review_label_a_zip_accept_correct_add_to_the_gallery_and_undo(browser, served):  # noqa: F811
    url, mine = served
    n = len(load_run(mine).gallery_paths)
    with _tab(browser, timeout_ms=120_000) as page:
        page.goto(url)
        page.get_by_text("Active run").first.wait_for()
        _open(page, url, "Home")
        page.get_by_text("Load a run from another folder").click()
        box = page.get_by_role("textbox", name="Run folder")
        box.fill(str(mine))
        box.press("Enter")
        _rerun(page, lambda: page.get_by_role("button", name="Load", exact=True).click())
        page.get_by_text("Active run: mine").wait_for()

        _navigate(page, "Review", "Images to label")
        upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        _rerun(
            page,
            lambda: upload.set_input_files(
                files=[{"name": "new.zip", "mimeType": "application/zip", "buffer": thirty_new_digits(mine)}]
            ),
        )
        _rerun(page, lambda: page.get_by_role("button", name="Label these images").click())
        expect(page.get_by_text("30 of 30 to review")).to_be_visible()
        page.get_by_text(re.compile(r"answers at confidence \S+ 0\.95: expected \S+ 95% right")).first.wait_for()
        _shot(page, "review")

        # Two accepted with the keyboard shortcut A.
        for left in (29, 28):
            _rerun(page, lambda: page.keyboard.press("a"))
            expect(page.get_by_text(f"{left} of 30 to review")).to_be_visible()
        # One corrected: a class this run has never had, typed into the label box, then Set label.
        box = page.get_by_role("combobox", name="Set another label")
        box.click()
        box.fill(NEW)
        _rerun(page, lambda: box.press("Enter"))
        _rerun(page, lambda: page.get_by_role("button", name="Set label").click())
        expect(page.get_by_text("27 of 30 to review")).to_be_visible()
        # The rest above 95%, having been told how many and how many wrong to expect.
        said = page.get_by_text(re.compile(r"pending answers are at ≥ 95%")).inner_text()
        bulk = int(re.search(r"([\d,]+)\s+pending", said).group(1))
        assert "expects about" in said and bulk > 0
        _rerun(page, lambda: page.get_by_role("button", name=f"Accept these {bulk}").click())
        added = 3 + bulk
        _rerun(page, lambda: page.get_by_role("button", name=f"Add {added} to the gallery").click())
        page.get_by_text(re.compile(rf"added {added} images .*see them on Explore")).wait_for()

        grown = load_run(mine)
        assert len(grown.gallery_paths) == n + added and NEW in grown.classes
        assert grown.label_names(grown.gallery_labels[n:]).count(NEW) == 1
        _navigate(page, "Explore", "Highlight labels")
        page.locator(".js-plotly-plot").first.wait_for()
        page.get_by_text(f"Showing {n + added:,} of {n + added:,} gallery images").wait_for()
        assert page.evaluate(POINTS) == n + added
        _shot(page, "review-on-the-map")

        _navigate(page, "Review", "Undo the latest gallery change")
        _rerun(page, lambda: page.get_by_role("button", name="Undo the latest gallery change").click())
        page.get_by_text(re.compile(rf"undone: took {added} out of the gallery")).wait_for()
        assert len(load_run(mine).gallery_paths) == n
        _navigate(page, "Explore", "Highlight labels")
        page.get_by_text(f"Showing {n:,} of {n:,} gallery images").wait_for()
        assert page.evaluate(POINTS) == n
    assert os.path.isdir(mine)
