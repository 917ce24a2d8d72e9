"""Damaged and hand-edited run folders against `python -m embedder predict`: every file of a run is an input. Each
case is refused with exit 2 and one line naming the file and the field, within the time and memory bars, without
loading a pickle and without touching a file. The checksums are made to match each change (whoever can edit a
run can edit its manifest too), so each case meets the check meant for it.

Before (issue 22): deep nesting gave RecursionError, a header declaring 36 TiB a MemoryError, wrong types in
split.json a TypeError (all "unexpected ... (a bug)", exit 1); a zip bomb was refused only after 2.9 GB; an image
size of 4096, paths up and out of the data root and a negative schema version were accepted.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tests.helpers import Payload, copy_run, rewrite_checksums
from tests.hostile.harness import assert_refused, run_cli, snapshot


def _edit_json(name: str, change):
    def edit(run):
        value = json.loads((run / name).read_text())
        change(value)
        (run / name).write_text(json.dumps(value))

    return edit


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_config(run):
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[:-1].rstrip() + f', "deep": {_nest(100_000)}}}')


def _deep_metrics(run):
    (run / "metrics.json").write_text(f'{{"test": {{}}, "notes": {_nest(50)}}}')


def _gallery(run, **arrays):
    with np.load(run / "gallery.npz") as npz:
        kept = dict(npz)
    kept.update(arrays)
    np.savez(run / "gallery.npz", **kept)


def _huge_header(run):
    """embeddings.npy's header says (75,000,000,000 x 128) float32: 35 TiB; the bytes are the old ones."""
    with np.load(run / "gallery.npz") as npz:
        kept = dict(npz)
    with zipfile.ZipFile(run / "gallery.npz", "w") as archive:
        for name, array in kept.items():
            with archive.open(f"{name}.npy", "w") as f:
                if name == "embeddings":
                    header = {"descr": "<f4", "fortran_order": False, "shape": (75_000_000_000, 128)}
                    np.lib.format.write_array_header_1_0(f, header)
                    f.write(array.tobytes())
                else:
                    np.lib.format.write_array(f, array, allow_pickle=False)


def _zip_bomb(run):
    """embeddings.npy deflated: 1 GiB of zeros in about a megabyte, its header consistent with its size."""
    with np.load(run / "gallery.npz") as npz:
        kept = dict(npz)
    rows = 2**30 // (128 * 4)
    with zipfile.ZipFile(run / "gallery.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in kept.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                if name != "embeddings":
                    np.lib.format.write_array(f, array, allow_pickle=False)
                    continue
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, 128)})
                zeros = bytes(2**24)
                for _ in range(2**30 // len(zeros)):
                    f.write(zeros)


def _set(dotted: str, value):
    def change(config):
        *parents, key = dotted.split(".")
        for p in parents:
            config = config[p]
        config[key] = value

    return change


CASES = {
    "config.json nested 100,000 deep": (_deep_config, ["config.json is nested more than 32 levels deep"]),
    "metrics.json nested 50 deep": (_deep_metrics, ["metrics.json is nested more than 32 levels deep"]),
    "gallery.npz header of 35 TiB": (_huge_header, ["gallery.npz", "declares shape (75000000000, 128)"]),
    "gallery.npz zip bomb": (_zip_bomb, ["gallery.npz", "inflates", "zip bomb"]),
    "split.json wrong types": (
        _edit_json("split.json", lambda s: s.update(test=[[1, 2]])),
        ["split.json field test.0.0: input should be a valid string"],
    ),
    "history.json wrong types": (
        _edit_json("history.json", lambda h: h[0].update(epoch="one")),
        ["history.json field 0.epoch: input should be a valid integer"],
    ),
    "metrics.json wrong types": (
        _edit_json("metrics.json", lambda m: m.update(confidence={"coef": "x"})),
        ["metrics.json field confidence", "coef"],
    ),
    "image size 4096": (
        _edit_json("config.json", _set("model.image_size", 4096)),
        ["config.json: model.image_size must be in [8, 1024], got 4096"],
    ),
    "epochs out of range": (
        _edit_json("config.json", _set("train.epochs", -5)),
        ["config.json: train.epochs must be in [0, 10000], got -5"],
    ),
    "negative schema version": (
        _edit_json("config.json", _set("schema_version", -1)),
        ["config.json: schema_version -1 is not a version"],
    ),
    "relative data root": (
        _edit_json("config.json", _set("data_root", "../..")),
        ["config.json: data_root '../..' is not absolute"],
    ),
    "gallery path out of the data root": (
        lambda run: _gallery(
            run, paths=np.array(["../../../../etc/passwd"] * len(np.load(run / "gallery.npz")["paths"]))
        ),
        ["gallery.npz: the path '../../../../etc/passwd' is outside the run's data root"],
    ),
    "absolute gallery path elsewhere": (
        lambda run: _gallery(run, paths=np.array(["/etc/passwd"] * len(np.load(run / "gallery.npz")["paths"]))),
        ["gallery.npz: the path '/etc/passwd' is outside the run's data root"],
    ),
    "split.json path out of the data root": (
        _edit_json("split.json", lambda s: s["val"].append(["../../etc/shadow", "0"])),
        ["split.json: the val path '../../etc/shadow' is outside"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_run_file_is_named_with_its_field(tmp_path, digits_run, demo_cache, case):
    damage, words = CASES[case]
    run = copy_run(digits_run, tmp_path / "run")
    damage(run)
    rewrite_checksums(run)
    before = snapshot(tmp_path)
    outcome = run_cli("predict", str(run), str(next(demo_cache.rglob("*.png"))))
    assert_refused(outcome, "damaged run", *words)
    assert snapshot(tmp_path) == before


def test_an_edited_config_json_no_longer_matches_its_checksum(tmp_path, digits_run, demo_cache):
    run = copy_run(digits_run, tmp_path / "run")
    _edit_json("config.json", _set("train.k", 7))(run)  # in range, so only the manifest can tell
    outcome = run_cli("predict", str(run), str(next(demo_cache.rglob("*.png"))))
    assert_refused(outcome, "config.json does not match the checksum recorded when the run was written")


def test_a_planted_pickle_never_runs(tmp_path, digits_run, demo_cache):
    """The first round's case, through the CLI: a pickle in model.pt that would touch a file."""
    import torch

    run = copy_run(digits_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    torch.save({"weight": Payload(marker)}, run / "model.pt")
    rewrite_checksums(run)
    outcome = run_cli("predict", str(run), str(next(demo_cache.rglob("*.png"))))
    assert_refused(outcome, "model.pt holds objects other than weights, which are never loaded")
    assert not marker.exists()
