"""Zip uploads: class folders come out as an ImageFolder; traversal, links and junk are handled."""

import io
import stat
import zipfile

import pytest

from embedder.archive import extract_zip
from embedder.data import scan_folder
from embedder.errors import EmbedderError

PNG = None


def _png() -> bytes:
    global PNG
    if PNG is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (4, 4), "white").save(buf, format="PNG")
        PNG = buf.getvalue()
    return PNG


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_extract_zip__class_folders_at_the_top(tmp_path):
    root = extract_zip(_zip({"cat/1.png": _png(), "dog/2.png": _png(), "dog/notes.txt": b"x"}), tmp_path / "x")
    assert root == tmp_path / "x"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == ["cat/1.png", "dog/2.png"]
    assert scan_folder(root).classes == ["cat", "dog"]


def test_extract_zip__a_wrapper_folder_is_stepped_into(tmp_path):
    root = extract_zip(_zip({"pets/cat/1.png": _png(), "pets/dog/2.png": _png()}), tmp_path / "x")
    assert root == tmp_path / "x" / "pets"


def test_extract_zip__macosx_and_hidden_entries_are_ignored(tmp_path):
    data = _zip({"cat/1.png": _png(), "dog/2.png": _png(), "__MACOSX/cat/._1.png": b"junk",
                 "dog/.hidden.png": _png(), ".DS_Store": b"junk"})
    root = extract_zip(data, tmp_path / "x")
    assert sorted(p.name for p in root.rglob("*")) == ["1.png", "2.png", "cat", "dog"]


@pytest.mark.parametrize("name", ["../evil.png", "cat/../../evil.png", "/etc/evil.png", "C:/evil.png", "..\\evil.png"])
def test_extract_zip__path_traversal_is_refused_and_nothing_written(tmp_path, name):
    with pytest.raises(EmbedderError, match="unsafe path in archive"):
        extract_zip(_zip({"cat/1.png": _png(), name: _png()}), tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "evil.png").exists()


def test_extract_zip__symlinks_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("cat/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(EmbedderError, match="symbolic link"):
        extract_zip(buf.getvalue(), tmp_path / "x")


def test_extract_zip__not_a_zip(tmp_path):
    with pytest.raises(EmbedderError, match="not a readable .zip"):
        extract_zip(b"hello", tmp_path / "x")


def test_extract_zip__no_images(tmp_path):
    with pytest.raises(EmbedderError, match="no images in the archive"):
        extract_zip(_zip({"readme.txt": b"x"}), tmp_path / "x")
