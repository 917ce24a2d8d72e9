"""embedder/runs/limits.py: a run's files read within bounds. JSON by size and depth; an .npz from its directory
and headers before any array is loaded; paths held inside their roots, against a brute-force oracle."""

from __future__ import annotations

import json
import os
import re
import zipfile

import numpy as np
import pytest

from embedder.runs import limits


def test_read_json__too_large_is_refused_from_its_size_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"notes": "x" * 3_000_000}))
    monkeypatch.setitem(limits.JSON_MB, "metrics.json", 2)
    with pytest.raises(limits.Refused, match=r"^metrics.json is 3 MB, over the 2 MB a run's metrics.json may be"):
        limits.read_json(path, "metrics.json")


@pytest.mark.parametrize("depth, refused", [(32, False), (33, True), (100_000, True)])
def test_read_json__nesting_past_the_limit_is_refused_at_any_depth(tmp_path, depth, refused):
    path = tmp_path / "split.json"
    path.write_text("[" * depth + "]" * depth)
    if refused:
        with pytest.raises(limits.Refused, match=r"^split.json is nested more than 32 levels deep$"):
            limits.read_json(path, "split.json")
    else:
        assert limits.read_json(path, "split.json") is not None


def test_read_json__not_json_is_named(tmp_path):
    (tmp_path / "history.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(limits.Refused, match=r"^history.json is not valid JSON"):
        limits.read_json(tmp_path / "history.json", "history.json")


def test_depth_over__counts_lists_and_dicts_alike():
    value = {"a": [{"b": [1]}]}  # dict, list, dict, list: 4 levels
    assert not limits.depth_over(value, 4) and limits.depth_over(value, 3)


def test_npz_members__shapes_and_dtypes_from_the_headers(tmp_path):
    np.savez(tmp_path / "g.npz", embeddings=np.zeros((5, 3), np.float32), paths=np.array(["a/1.png"] * 5))
    members = limits.npz_members(tmp_path / "g.npz", max_dim=8)
    assert members["embeddings"] == limits.Member((5, 3), np.dtype("<f4"))
    assert members["paths"].shape == (5,) and members["paths"].dtype.kind == "U"


def _archive(path, name: str, header: dict, body: bytes, method=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", method) as archive, archive.open(name, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(body)


@pytest.mark.parametrize(
    "header, body, method, words",
    [
        ({"descr": "<f4", "fortran_order": False, "shape": (10**9, 8)}, bytes(16), zipfile.ZIP_STORED, "declares"),
        ({"descr": "|O", "fortran_order": False, "shape": (2,)}, bytes(16), zipfile.ZIP_STORED, "pickled objects"),
        ({"descr": "<f4", "fortran_order": False, "shape": (2, 100)}, bytes(800), zipfile.ZIP_STORED, "shape (2, 100)"),
        ({"descr": "<c8", "fortran_order": False, "shape": (2,)}, bytes(16), zipfile.ZIP_STORED, "dtype <c8"),
        ({"descr": "<f4", "fortran_order": False, "shape": (2**25, 8)}, bytes(2**30), zipfile.ZIP_DEFLATED, "zip bomb"),
    ],
    ids=["declares terabytes", "objects", "wider than allowed", "complex", "inflates a thousandfold"],
)
def test_npz_members__a_header_or_member_a_run_never_writes_is_refused_unloaded(tmp_path, header, body, method, words):
    _archive(tmp_path / "g.npz", "embeddings.npy", header, body, method)
    with pytest.raises(limits.Refused, match=re.escape(words)):
        limits.npz_members(tmp_path / "g.npz", max_dim=64)


def test_npz_members__not_an_archive(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(limits.Refused, match="is not a readable .npz archive"):
        limits.npz_members(tmp_path / "g.npz", max_dim=64)


def _oracle(path: str, roots: list[str]) -> bool:
    full = os.path.realpath(path if path.startswith("/") else os.path.join(roots[0], path))
    return any(full == r or full.startswith(r + "/") for r in roots)


def test_outside__the_first_path_that_leaves_its_roots_against_an_oracle():
    roots = ["/data/photos", "/srv/more"]
    paths = [
        "cat/1.png",
        "cat/../dog/2.png",  # stays inside
        "..hidden/3.png",  # a name that starts with two dots, inside
        "/srv/more/zebra/4.png",  # added from another folder
        "/srv/more/../other/5.png",
        "/data/photosX/6.png",  # a sibling that shares the prefix
        "../../etc/passwd",
    ]
    wanted = next((p for p in paths if not _oracle(p, roots)), None)
    assert wanted == "/srv/more/../other/5.png"
    assert limits.outside(np.array(paths), roots) == wanted
    assert limits.outside(np.array(paths[:4]), roots) is None
    assert limits.outside(np.array(["/data/photosX/6.png"]), roots) == "/data/photosX/6.png"
    assert limits.outside(np.array([], dtype=str), roots) is None
