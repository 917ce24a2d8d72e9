"""The Train page's "Use my own model (.onnx)" under AppTest: the import's own settings, a missing or bad file
refused on the page in one line, a good one imported in the background into a run that becomes active."""

from __future__ import annotations

import pytest

from embedder.runs.run import load_run
from tests.helpers import make_shapes_folder, open_app
from tests.verbs.test_import_model import SmallCNN, export
from ui import jobs, training

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _import_page(folder, name: str, model: bytes | None):
    at = open_app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.radio(key="train_network").set_value(training.NETWORKS[1]).run()
    if model is not None:
        at.file_uploader(key="train_onnx").set_value(("mine.onnx", model, "application/octet-stream"))
    at.text_input(key="train_folder").set_value(str(folder))
    at.text_input(key="train_name").set_value(name)
    at.checkbox(key="import_pretrained_baseline").uncheck()
    return at.button(key="train_submit").click().run()


def test_train_page__no_file_or_a_bad_one_is_one_line_and_no_job(app_without_run, tmp_path):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=4)
    at = _import_page(shapes, "mine", None)
    assert not at.exception and [e.value for e in at.error] == ["upload your model as an .onnx file first"]
    at = _import_page(shapes, "mine", b"not a model at all")
    assert not at.exception
    assert [e.value for e in at.error] == ["not a usable ONNX model: the file is not an ONNX model (it does not parse)"]
    assert jobs.registry().get(app_without_run.parent / "mine") is None


def test_train_page__an_uploaded_model_is_imported_into_the_active_run(
    app_without_run, tmp_path, no_job_outlives_its_test
):
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=6)
    model = export(SmallCNN(), tmp_path / "m.onnx")
    at = _import_page(shapes, "mine", model)
    assert not at.exception and not at.error
    assert at.number_input(key="import_image_size") is not None  # the import's settings, not training's
    job = jobs.registry().get(app_without_run.parent / "mine")
    assert job.wait(120) and job.status == "done", job.error
    run = load_run(app_without_run.parent / "mine")
    assert run.onnx is not None and (run.path / "model.onnx").read_bytes() == model
