"""ui/cache.py: a run is keyed by its config.json's mtime (a retrained run is loaded afresh, an unchanged one
is not loaded again), thumbnails keep hard pixel edges when enlarged, and uploads are keyed by their bytes."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from embedder.errors import EmbedderError
from tests.helpers import copy_run, rewrite_checksums
from ui import cache


def test_stamp__config_json_mtime_and_zero_without_one(tmp_path):
    assert cache.stamp(tmp_path) == 0.0
    (tmp_path / "config.json").write_text("{}")
    os.utime(tmp_path / "config.json", (1_000_000, 1_000_000))
    assert cache.stamp(tmp_path) == 1_000_000.0
    assert cache.stamp(str(tmp_path)) == 1_000_000.0


def test_fit__a_tiny_image_is_enlarged_with_hard_pixel_edges():
    checker = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]], [[255, 255, 255], [0, 0, 0]]], np.uint8))
    big = np.asarray(cache.fit(checker, 96))
    assert big.shape == (96, 96, 3)
    assert set(np.unique(big)) == {0, 255}  # no blurred greys between the pixels
    assert (big[:48, :48] == 0).all() and (big[:48, 48:] == 255).all()


@pytest.mark.parametrize("size, fitted", [((200, 100), (96, 48)), ((100, 300), (32, 96)), ((1000, 1), (96, 1))])
def test_fit__the_longer_side_fits_and_the_shape_is_kept(size, fitted):
    assert cache.fit(Image.new("RGB", size), 96).size == fitted


def test_thumbnail__of_a_file_and_one_line_for_a_file_that_is_not_an_image(tmp_path):
    Image.new("RGB", (400, 200), (10, 20, 30)).save(tmp_path / "wide.png")
    thumb = cache.thumbnail(str(tmp_path / "wide.png"))
    assert thumb.size == (cache.THUMB, cache.THUMB // 2) and thumb.getpixel((0, 0)) == (10, 20, 30)
    (tmp_path / "notes.png").write_bytes(b"not an image")
    with pytest.raises(EmbedderError):
        cache.thumbnail(str(tmp_path / "notes.png"))


def test_digest__the_sha256_of_the_bytes():
    assert cache.digest(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert cache.digest(b"abc") != cache.digest(b"abd")


def test_get_run__the_same_run_until_it_is_rewritten_then_the_new_one(digits_run, tmp_path):
    run_dir = copy_run(digits_run, tmp_path / "run")
    first = cache.get_run(run_dir)
    assert cache.get_run(run_dir) is first  # not loaded again on every page run
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "created": "just now"}))
    rewrite_checksums(run_dir)  # rewritten as the program rewrites a run
    later = cache.stamp(run_dir) + 5  # a filesystem's mtime may be coarser than this test is quick
    os.utime(run_dir / "config.json", (later, later))
    second = cache.get_run(run_dir)
    assert second is not first and second.info["created"] == "just now"
