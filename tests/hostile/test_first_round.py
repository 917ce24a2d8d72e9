"""The first round's hostile cases (issue 11), once more through the CLI with the same bars as this round's: exit 2,
one line, bounded time and memory, no file touched, no code run. Each has its unit test beside the code it guards
(tests/images/test_decode.py, tests/runs/test_bundle.py, tests/runs/test_bundle_read.py,
tests/training/test_checkpoint.py); here the whole command is held to the bars."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from tests.helpers import Payload, copy_run, make_shapes_folder, rewrite_checksums
from tests.hostile.harness import assert_refused, run_cli, snapshot


def test_a_query_of_225_megapixels_is_refused_before_it_is_decoded(tmp_path, digits_run):
    big = tmp_path / "big.png"
    Image.new("1", (15000, 15000)).save(big)  # 900 MB as RGB, a few hundred KB on disk
    outcome = run_cli("predict", str(digits_run), str(big))
    assert_refused(outcome, "too large: big.png (15000×15000 pixels, limit 50 MP)")


def test_a_named_pipe_posing_as_an_image_is_never_waited_on(tmp_path, digits_run):
    os.mkfifo(tmp_path / "x.jpg")  # opening it for reading would wait for a writer forever
    outcome = run_cli("predict", str(digits_run), str(tmp_path / "x.jpg"), timeout=60)
    assert_refused(outcome, "not a regular file: x.jpg (named pipe)")


def test_out_never_replaces_a_folder_of_the_users(tmp_path):
    data = make_shapes_folder(tmp_path / "shapes", per_class=4)
    mine = tmp_path / "my documents"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    outcome = run_cli("train", "--data", str(data), "--out", str(mine), "--epochs", "1")
    assert_refused(outcome, "is never replaced")
    assert snapshot(tmp_path) == before


def test_a_planted_pickle_in_a_checkpoint_never_runs(tmp_path):
    data = make_shapes_folder(tmp_path / "shapes", per_class=4)
    out = tmp_path / "runs" / "shapes"
    work = out.parent / f".{out.name}.partial"
    work.mkdir(parents=True)
    (work / ".embedder-run").touch()
    marker = tmp_path / "pwned"
    torch.save({"config": Payload(marker)}, work / "checkpoint.pt")
    outcome = run_cli(
        "train", "--data", str(data), "--out", str(out), "--epochs", "1", "--selection", "holdout", "--resume"
    )
    assert_refused(outcome, "never loaded (they could run code)", progress=True)
    assert not marker.exists()


def test_a_planted_pickle_in_the_gallery_never_runs(tmp_path, digits_run, demo_cache):
    run = copy_run(digits_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    with np.load(run / "gallery.npz") as npz:
        arrays = dict(npz)
    arrays["paths"] = np.array([Payload(marker)] * len(arrays["paths"]), dtype=object)
    np.savez(run / "gallery.npz", **arrays)
    rewrite_checksums(run)
    outcome = run_cli("predict", str(run), str(next(demo_cache.rglob("*.png"))))
    assert_refused(outcome, "gallery.npz holds pickled objects")
    assert not marker.exists()
