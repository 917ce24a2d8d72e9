"""Labels exported as an ImageFolder of links or copies, or a .zip: the labelled files are only read."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from embedder.errors import EmbedderError
from embedder.images.label_export import imagefolder_zip, write_imagefolder
from tests.helpers import make_shapes_folder


@pytest.fixture
def pairs(tmp_path):
    src = make_shapes_folder(tmp_path / "src", classes=("a", "b"), per_class=2)
    files = sorted(src.rglob("*.png"))
    return [(files[0], "cat"), (files[1], "cat"), (files[2], "dog"), (files[3], "cat")]  # two files named 001.png


def digest(paths) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.parametrize("copy", [False, True])
def test_write_imagefolder__links_or_copies_under_each_label(pairs, tmp_path, copy):
    before = digest(p for p, _ in pairs)
    assert write_imagefolder(pairs, tmp_path / "out", copy=copy) == 4
    made = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert made == ["cat/000.png", "cat/001.png", "cat/b-001.png", "dog/000.png"]
    assert all((tmp_path / "out" / m).is_symlink() != copy for m in made)
    assert digest((tmp_path / "out" / "cat" / "b-001.png",)) == digest((pairs[3][0],))
    assert digest(p for p, _ in pairs) == before and all(p.is_file() and not p.is_symlink() for p, _ in pairs)


def test_write_imagefolder__refuses_a_folder_with_files(pairs, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(EmbedderError, match="not an empty folder"):
        write_imagefolder(pairs, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_imagefolder_zip__copies_under_a_prefix(pairs):
    with zipfile.ZipFile(io.BytesIO(imagefolder_zip(pairs, "run-labelled"))) as zf:
        assert sorted(zf.namelist()) == [
            "run-labelled/cat/000.png",
            "run-labelled/cat/001.png",
            "run-labelled/cat/b-001.png",
            "run-labelled/dog/000.png",
        ]
        assert zf.read("run-labelled/dog/000.png") == pairs[2][0].read_bytes()
