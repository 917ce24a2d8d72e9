"""In a real browser: upload an .onnx embedder on the Train page, import it on a generated image folder, then query
the resulting run. The server starts with no run at all (nothing trained, no digits fixture), so this stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.app.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    RUN_COUNTER,
    VIEWPORT,
    _choose,
    _enter,
    _navigate,
    _open,
    _rerun,
    _serve,
    _shot,
)
from tests.helpers import make_shapes_folder
from tests.verbs.test_import_model import SmallCNN, export

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)"),
]


def test_upload_an_onnx_model_on_the_train_page_then_query_its_run(tmp_path):
    shared = tmp_path / "shared"
    shapes = make_shapes_folder(shared / "shapes", per_class=8)
    model = export(SmallCNN(), tmp_path / "mine.onnx")
    runs = tmp_path / "runs"
    env = {
        "EMBEDDER_RUNS_DIR": str(runs),
        "EMBEDDER_RUN": str(runs / "none-yet"),  # named, so the demo is not trained in the background
        "EMBEDDER_DATA_ROOTS": os.pathsep.join([str(shared), str(runs)]),
    }
    with _serve(env, tmp_path / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(RUN_COUNTER)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        _open(page, f"{url}/train", "Train")
        _choose(page, "Folder on the server")
        _enter(page, "Image folder", str(shapes))
        _choose(page, "Use my own model (.onnx)")
        upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        _rerun(  # the first upload loads onnx and onnxruntime in the server and checks the file: slow on a busy machine
            page,
            lambda: upload.set_input_files(
                files=[{"name": "mine.onnx", "mimeType": "application/octet-stream", "buffer": model}]
            ),
            timeout_ms=180_000,
        )
        page.get_by_role("textbox", name="Run name").fill("imported")
        page.get_by_text("More settings").click()
        page.get_by_text("Compare with the pretrained backbone").click()  # off: the slow baseline, tested elsewhere
        page.get_by_role("button", name="Import", exact=True).click()
        page.get_by_text("Run imported is ready and active").wait_for(timeout=120_000)
        _shot(page, "train-onnx")
        assert (runs / "imported" / "model.onnx").read_bytes() == model

        from embedder.runs.run import load_run

        run = load_run(runs / "imported")
        image, label = Path(run.gallery_files()[0]), run.classes[run.gallery_labels[0]]
        # Through the sidebar, in the same session: the import made its run this session's active run.
        _navigate(page, "Query", "Images to label")
        drop = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        files = [{"name": image.name, "mimeType": "image/png", "buffer": image.read_bytes()}]
        _rerun(page, lambda: drop.set_input_files(files=files))
        nearest = page.locator('[data-testid="stImageCaption"]', has_text="d = ").first
        expect(nearest).to_have_text(f"{label} · d = 0.000")  # a gallery image finds itself through the ONNX model
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        browser.close()
