"""Zip uploads: class folders come out as an ImageFolder; traversal, links and junk are handled."""

import io
import os
import stat
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedder.errors import EmbedderError
from embedder.images.archive import ZipLimits, extract_zip
from embedder.images.data import is_image_file, scan_folder

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
    return _zip_list(list(entries.items()))


def _zip_list(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
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
    data = _zip(
        {
            "cat/1.png": _png(),
            "dog/2.png": _png(),
            "__MACOSX/cat/._1.png": b"junk",
            "dog/.hidden.png": _png(),
            ".DS_Store": b"junk",
        }
    )
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


def _central_records(data: bytearray):
    """Offsets of the central-directory records of a zip written by zipfile (no archive comment)."""
    count, size, start = struct.unpack_from("<HII", data, len(data) - 22 + 10)
    at = start
    for _ in range(count):
        yield at
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        at += 46 + name_len + extra_len + comment_len


def _patch(data: bytes, field: str, value: int) -> bytes:
    """``data`` with one header field of every central-directory record set to ``value``: the lies zip bombs and
    damaged archives tell, without building them for real."""
    offset = {"flags": 8, "crc": 16, "compressed": 20, "size": 24}[field]
    data = bytearray(data)
    for at in list(_central_records(data)):
        struct.pack_into("<I" if offset >= 16 else "<H", data, at + offset, value)
    return bytes(data)


def _left_in(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_extract_zip__4_mb_declaring_3_9_gib_is_refused_before_writing(tmp_path):
    data = _patch(_zip({"cat/1.png": os.urandom(4_000_000)}), "size", int(3.9 * 1024**3))
    with pytest.raises(EmbedderError) as info:
        extract_zip(data, tmp_path / "out" / "x")
    assert str(info.value) == "archive too large: unpacks to 3.9 GiB (limit 2 GiB)"
    with pytest.raises(EmbedderError, match=r"^archive refused: it unpacks to 1,047 times its size \(limit 100:1; "):
        extract_zip(data, tmp_path / "out" / "x", ZipLimits(max_total_bytes=8 * 1024**3))
    assert _left_in(tmp_path) == []


def _zeros_zip(entries: dict[str, int], stored: dict[str, bytes] | None = None) -> bytes:
    """Entries of that many zero bytes, deflated as they stream in (64 MB of zeros pack into 64 KB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, size in entries.items():
            with zf.open(name, "w") as out:
                for _ in range(size // 2**20):
                    out.write(bytes(2**20))
        for name, content in (stored or {}).items():
            zf.writestr(name, content, zipfile.ZIP_STORED)
    return buf.getvalue()


def test_extract_zip__an_honest_zip_bomb_is_refused_by_its_ratio(tmp_path):
    with pytest.raises(EmbedderError, match=r"^archive refused: it unpacks to 1,0\d\d times its size \(limit 100:1"):
        extract_zip(_zeros_zip({"cat/1.png": 64 * 2**20}), tmp_path / "x")
    one_bomb = _zeros_zip({"cat/1.png": 2 * 2**20}, stored={"dog/2.png": os.urandom(2**20)})  # 3:1 overall
    with pytest.raises(EmbedderError, match=r"^archive refused: cat/1.png unpacks to 1,0\d\d times its packed size"):
        extract_zip(one_bomb, tmp_path / "x")
    assert _left_in(tmp_path) == []


def test_extract_zip__small_blank_bitmaps_may_compress_well(tmp_path):
    root = extract_zip(_zeros_zip({"cat/1.bmp": 2**19, "dog/2.bmp": 2**19}), tmp_path / "x")
    assert _left_in(root) == ["cat", "cat/1.bmp", "dog", "dog/2.bmp"]


def test_extract_zip__non_images_count_towards_the_limits(tmp_path):
    data = _zip({"cat/1.png": _png(), "dog/2.png": _png(), "video.mp4": os.urandom(3 * 2**20)})
    with pytest.raises(EmbedderError, match=r"^archive too large: unpacks to 3 MiB \(limit 2 MiB\)$"):
        extract_zip(data, tmp_path / "x", ZipLimits(max_total_bytes=2 * 2**20))
    with pytest.raises(EmbedderError, match=r"^archive too large: more than 2 entries \(the limit\)$"):
        extract_zip(data, tmp_path / "x", ZipLimits(max_entries=2))


def test_extract_zip__an_end_record_understating_the_entries_is_caught(tmp_path):
    data = bytearray(_zip({"cat/1.png": _png(), "dog/2.png": _png(), "notes.txt": b"x"}))
    struct.pack_into("<HH", data, len(data) - 22 + 8, 1, 1)  # "1 entry" (zipfile reads all 3 regardless)
    with pytest.raises(EmbedderError, match=r"^archive too large: 3 entries \(limit 2\)$"):
        extract_zip(bytes(data), tmp_path / "x", ZipLimits(max_entries=2))


def test_extract_zip__a_header_understating_the_size_fails_cleanly(tmp_path):
    data = _patch(_zip({"cat/1.png": _png(), "dog/2.png": bytes(5000)}), "size", 100)
    with pytest.raises(EmbedderError, match=r"^cannot unpack dog/2.png: Bad CRC-32"):
        extract_zip(data, tmp_path / "a" / "b" / "x")
    assert _left_in(tmp_path) == []  # cat/1.png was written, then taken away with the folders made for it


def test_extract_zip__damaged_and_encrypted_entries(tmp_path):
    with pytest.raises(EmbedderError, match=r"^cannot unpack cat/1.png: Bad CRC-32 for file 'cat/1.png'$"):
        extract_zip(_patch(_zip({"cat/1.png": _png()}), "crc", 0), tmp_path / "x")
    with pytest.raises(EmbedderError, match=r"^cannot unpack cat/1.png: it is encrypted \(zip the images again"):
        extract_zip(_patch(_zip({"cat/1.png": _png()}), "flags", 1), tmp_path / "x")
    assert _left_in(tmp_path) == []


def test_extract_zip__names_that_are_not_utf8(tmp_path):
    data = _zip({"cat/é.png": _png()}).replace("é".encode(), b"\xff\xfe")  # flagged UTF-8, but is not
    with pytest.raises(EmbedderError, match=r"^not a readable .zip archive \(an entry name is not valid UTF-8\)$"):
        extract_zip(data, tmp_path / "x")


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"cat/a.jpg": b"1", "cat/a.jpg/b.jpg": b"2"}, "archive holds both a file and a folder named cat/a.jpg"),
        ({"cat/1.png": b"1", "cat//1.png": b"2"}, "archive lists cat//1.png twice"),
        ({"cat/1.png": b"1", "cat\\1.png": b"2"}, "archive lists cat\\1.png twice"),
        ({"cat/a\nb.png": b"1"}, "unsafe name in archive: cat/a\\nb.png (it holds control characters)"),
        ({"cat/" + "a" * 252 + ".png": b"1"}, "name too long in archive: cat/aaaa"),
        ({"cat/" + "é" * 126 + ".png": b"1"}, "name too long in archive: cat/éééé"),  # 130 characters, 256 bytes
        ({"/".join(["d" * 200] * 21) + "/1.png": b"1"}, "path too long in archive: dddd"),
    ],
)
def test_extract_zip__names_a_file_system_would_mangle_are_refused(tmp_path, entries, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        data = _zip(entries)
    with pytest.raises(EmbedderError) as info:
        extract_zip(data, tmp_path / "x")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert _left_in(tmp_path) == []


def test_extract_zip__an_existing_folder_must_be_empty_and_survives_a_failure(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(EmbedderError, match="already exists and is not an empty folder"):
        extract_zip(_zip({"cat/1.png": _png()}), tmp_path / "full")
    assert _left_in(tmp_path) == ["full", "full/keep.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderError, match="Bad CRC-32"):
        extract_zip(_patch(_zip({"cat/1.png": _png()}), "crc", 0), tmp_path / "empty")
    assert _left_in(tmp_path) == ["empty", "full", "full/keep.txt"]
    root = extract_zip(_zip({"cat/1.png": _png(), "dog/2.png": _png()}), tmp_path / "empty")
    assert _left_in(root) == ["cat", "cat/1.png", "dog", "dog/2.png"]


def test_extract_zip__a_fifo_path_is_refused_not_read(tmp_path, run_alone):
    os.mkfifo(tmp_path / "data.zip")
    code = (
        f"from embedder.images.archive import extract_zip\ntry:\n    extract_zip({str(tmp_path / 'data.zip')!r}, "
        f"{str(tmp_path / 'x')!r})\nexcept Exception as exc:\n    print(type(exc).__name__, exc)"
    )
    assert run_alone(code, timeout=30) == [
        f"EmbedderError not a readable .zip archive: {tmp_path / 'data.zip'} is not a regular file"
    ]


# Property-based: whatever the member names, either every written file is an image inside dest, or one line and
# nothing left behind.

PARTS = st.one_of(
    st.sampled_from(["..", ".", "", "cat", "dog", "__MACOSX", ".hidden", "a.jpg", "C:", "é", "x\\..", "~"]),
    st.text(
        st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=10
    ),  # zipfile cuts names at NUL; lone surrogates cannot be stored
    st.text(alphabet="aé", min_size=120, max_size=260),  # around the 255-byte limit for one name
)
NAMES = st.builds(
    lambda lead, parts, ext: lead + "/".join(parts) + ext,
    st.sampled_from(["", "", "/", "\\", "../"]),
    st.lists(PARTS, min_size=1, max_size=4),
    st.sampled_from([".png", ".jpg", ".PNG", ".txt", "", "/"]),
).filter(bool)  # zipfile itself cannot write an entry without a name


PLAIN = st.builds(
    lambda label, name: f"{label}/{name}.png",
    st.sampled_from(["cat", "dog", "ünï cödé", "猫"]),
    st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=20),
)


@settings(max_examples=250, deadline=None)
@given(
    names=st.lists(
        st.one_of(PLAIN, PLAIN, PLAIN, NAMES, st.sampled_from(["cat/1.png", "cat/1.png/2.png", "cat\\1.png"])),
        min_size=1,
        max_size=6,
    )
)
def test_extract_zip__any_names_stay_inside_or_leave_nothing(names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicates it is asked to write
        data = _zip_list([(n, f"content of {i}".encode()) for i, n in enumerate(names)])
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        dest = base / "parent" / "dest"
        try:
            root = extract_zip(data, dest)
        except EmbedderError as exc:
            assert "\n" not in str(exc) and "\r" not in str(exc)
            assert list(base.iterdir()) == []
            return
        assert root == dest or dest in root.parents
        written = [p for p in base.rglob("*") if not p.is_dir() or p.is_symlink()]
        assert written, "an archive with no image is refused"
        for path in written:
            assert dest in path.parents and not path.is_symlink() and is_image_file(path)
            assert path.read_bytes().startswith(b"content of ")
