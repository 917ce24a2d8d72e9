"""embedder/verbs/add.py and ``python -m embedder add``: new labelled images join a trained run's gallery without
retraining, are found as neighbours and label new queries; what the gallery has already is left out; the run is
rewritten as a whole and still loads. One small run is trained per module (a few seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedder.answers.predict import Predictor
from embedder.cli.main import main
from embedder.errors import EmbedderError
from embedder.runs.run import load_run
from embedder.verbs.add import add_images
from tests.helpers import cfg, make_shapes_folder, writing_elsewhere

pytestmark = pytest.mark.slow  # every test here starts from a trained run


def stripes(folder: Path, n: int, seed: int, size: int = 48) -> Path:
    """``n`` images of bold diagonal stripes, nothing like the shapes the run was trained on."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        period, shift = int(rng.integers(6, 10)), int(rng.integers(0, 10))
        on = ((xx + yy + shift) // (period // 2)) % 2 == 0
        pixels = np.where(on[..., None], [20, 20, 230], [250, 250, 40]).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"s{seed}-{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from embedder.verbs.pipeline import train

    base = tmp_path_factory.mktemp("add")
    shapes = make_shapes_folder(base / "shapes", per_class=90)  # a gallery past novelty.REFERENCE_MIN
    train(cfg(shapes, base / "runs" / "shapes", epochs=1))
    return base / "runs" / "shapes"


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A fresh copy of the trained run for each test (add rewrites it)."""
    return Path(shutil.copytree(trained, tmp_path / "runs" / "shapes"))


def test_add__new_class_is_found_as_neighbours_and_labels_new_queries(run_dir, tmp_path):
    before = load_run(run_dir)
    (run_dir / "projections").mkdir()  # the app's cached maps of the smaller gallery
    (run_dir / "projections" / "pca-2.npz").write_bytes(b"stale")
    added = add_images(run_dir, stripes(tmp_path / "new" / "stripes", 10, seed=1).parent)
    assert not (run_dir / "projections").exists()  # the run was rewritten whole: no map of the old gallery
    assert (added.added, added.new_classes, added.by_class) == (10, ["stripes"], {"stripes": 10})

    run = load_run(run_dir)  # written whole: checksums, index size and gallery all agree
    assert run.classes == [*before.classes, "stripes"]
    assert len(run.gallery_paths) == len(before.gallery_paths) + 10 == run.index().size
    np.testing.assert_array_equal(run.gallery_embeddings[: len(before.gallery_paths)], before.gallery_embeddings)
    queries = [Image.open(p).convert("RGB") for p in sorted(stripes(tmp_path / "later", 3, seed=2).glob("*.png"))]
    far = [p.novelty_distance for p in Predictor(before).predict(queries)]
    for p, was in zip(Predictor(run).predict(queries, k=3), far):
        assert p.label == "stripes"
        # the nearest and most of the neighbours are added stripes (the network never trained on stripes: which
        # other class comes third is up to it)
        stripes_near = [n.label == "stripes" and Path(n.path).parent.name == "stripes" for n in p.neighbours]
        assert stripes_near[0] and sum(stripes_near) >= 2
        # the novelty reference was drawn again from the grown gallery: stripes are in it now
        assert not p.novel and p.novelty_distance < was / 2
    assert run.metrics["not_reevaluated"]["new_classes"] == ["stripes"]
    assert run.metrics["not_reevaluated"]["images"] == 10
    assert run.info["additions"][0]["folder"] == str((tmp_path / "new").resolve())


def test_add__reads_only_the_new_images_even_for_the_novelty_reference(run_dir, tmp_path):
    before = load_run(run_dir)
    moved = before.data_root.with_name("shapes-moved")
    before.data_root.rename(moved)  # the training images are gone: add needs only the new ones
    try:
        add_images(run_dir, stripes(tmp_path / "new" / "stripes", 10, seed=1).parent)
    finally:
        moved.rename(before.data_root)
    run = load_run(run_dir)
    n = len(before.gallery_paths)
    np.testing.assert_array_equal(run.novelty_rows, [*before.novelty_rows, *range(n, n + 10)])
    np.testing.assert_array_equal(run.novelty_reference[: len(before.novelty_rows)], before.novelty_reference)
    assert run.metrics["novelty"]["reference"] == len(before.novelty_rows) + 10


def test_add__a_gallery_grown_past_the_minimum_gets_its_novelty_test(tmp_path):
    from embedder.verbs.pipeline import train

    train(cfg(make_shapes_folder(tmp_path / "shapes", per_class=16), tmp_path / "small", epochs=1))
    assert "off" in load_run(tmp_path / "small").metrics["novelty"]  # 38 gallery images: too few to tell
    add_images(tmp_path / "small", stripes(tmp_path / "new" / "stripes", 180, seed=1, size=32).parent)
    run = load_run(tmp_path / "small")
    assert run.metrics["novelty"]["reference"] == len(run.gallery_paths) >= 200
    assert run.novelty_reference.shape[0] == len(run.novelty_rows)


def test_add__known_labels_join_their_class_and_repeats_are_left_out(run_dir, tmp_path):
    extra = make_shapes_folder(tmp_path / "more", classes=("circle",), per_class=4, seed=9)
    first = add_images(run_dir, extra)
    assert (first.added, first.new_classes) == (4, [])
    run = load_run(run_dir)
    circle = run.classes.index("circle")
    assert list(run.gallery_labels[-4:]) == [circle] * 4
    stripes(extra / "stripes", 2, seed=3)
    second = add_images(run_dir, extra)  # the four circles are in the gallery now
    assert (second.added, second.already_in_gallery, second.new_classes) == (2, 4, ["stripes"])
    assert load_run(run_dir).metrics["not_reevaluated"]["images"] == 6


def test_add__the_training_folder_again_adds_nothing_and_leaves_the_run_alone(run_dir):
    run = load_run(run_dir)
    stamp = (run_dir / "config.json").read_bytes()
    with pytest.raises(EmbedderError, match=r"nothing to add .* are in the gallery already and \d+ are held-out"):
        add_images(run_dir, run.data_root)  # held-out test queries must not answer themselves later
    assert (run_dir / "config.json").read_bytes() == stamp


def test_add__a_folder_inside_the_run_is_refused(run_dir):
    stripes(run_dir / "imgs" / "stripes", 2, seed=4)
    with pytest.raises(EmbedderError, match="overlaps the run folder"):
        add_images(run_dir, run_dir / "imgs")


def test_cli_add__images_of_another_size_are_added(run_dir, tmp_path, capsys):
    before = len(load_run(run_dir).gallery_paths)
    folder = tmp_path / "big"
    stripes(folder / "stripes", 3, seed=5, size=120)  # the run takes 32 px inputs: the transform resizes
    assert main(["add", str(run_dir), str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("added 3 images (stripes 3 new); run written to ")
    assert len(load_run(run_dir).gallery_paths) == before + 3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp, run: (tmp, tmp / "imgs"), "is not a run folder"),
        (lambda tmp, run: (run, (tmp / "empty").mkdir() or tmp / "empty"), "no images found in"),
        (lambda tmp, run: (run, tmp / "missing"), "data folder not found"),
    ],
    ids=["not-a-run", "empty-folder", "missing-folder"],
)
def test_cli_add__user_errors_are_one_line_and_exit_2(run_dir, tmp_path, capsys, make, message):
    stripes(tmp_path / "imgs" / "stripes", 1, seed=6)
    target, folder = make(tmp_path, run_dir)
    assert main(["add", str(target), str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_add__two_adds_at_once_both_land(run_dir, tmp_path):
    """Two ``add`` processes on one run at once: the second waits for the first, and both sets of images are in
    the gallery afterwards (without the lock the later swap won and the other's images were silently gone)."""
    import subprocess
    import sys

    from embedder.runs.lock import writing

    first = stripes(tmp_path / "one" / "stripes", 6, seed=1).parent
    second = stripes(tmp_path / "two" / "zigzag", 6, seed=3).parent
    command = lambda folder: [sys.executable, "-m", "embedder", "add", str(run_dir), str(folder)]  # noqa: E731
    with writing(run_dir):  # both start while a writer holds the run, so they overlap for sure
        procs = [subprocess.Popen(command(f), stderr=subprocess.PIPE, text=True) for f in (first, second)]
        waiting = [p.stderr.readline() for p in procs]  # each says it waits before it reads anything
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert all("being written by another process: waiting" in line for line in waiting), waiting
    run = load_run(run_dir)
    added = {Path(p).parent.name for p in run.gallery_paths} & {"stripes", "zigzag"}
    assert added == {"stripes", "zigzag"} and len(run.gallery_paths) == len(load_run(run_dir).gallery_paths)
    assert sum(Path(p).parent.name in added for p in run.gallery_paths) == 12


def test_add__a_writer_that_holds_the_run_too_long_is_named(run_dir, tmp_path, monkeypatch):
    from embedder.runs import lock

    monkeypatch.setattr(lock, "WAIT_SECONDS", 0.2)
    before = load_run(run_dir).gallery_paths
    folder = stripes(tmp_path / "new" / "stripes", 3, seed=1).parent
    with writing_elsewhere(run_dir), pytest.raises(EmbedderError, match=r"being written by another process \(still"):
        add_images(run_dir, folder)
    assert load_run(run_dir).gallery_paths == before


def test_add__the_added_images_join_the_pretrained_features_labels_are_judged_in(photo_run, tmp_path):
    from embedder.training.first import pretrained_features
    from tests.helpers import copy_run

    run_dir = copy_run(photo_run, tmp_path / "runs" / "photos")
    before = load_run(run_dir)
    more = make_shapes_folder(tmp_path / "more", per_class=2, size=96, seed=7)
    assert add_images(run_dir, more).added == 6
    run = load_run(run_dir)
    assert run.label_free.shape == (len(before.gallery_paths) + 6, 1280)
    np.testing.assert_array_equal(run.label_free[: len(before.gallery_paths)], before.label_free)
    new = run.embed(run.gallery_files()[-6:], fn=pretrained_features(run.model_config))
    np.testing.assert_allclose(run.label_free[-6:].astype(np.float32), new, atol=2e-3)
