"""Decoding: every mode to upright RGB, the pixel budget checked before decoding, only regular files read."""

import contextlib
import faulthandler
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from embedder.errors import EmbedderError
from embedder.images.decode import MAX_PIXELS, load_image, max_pixels, skip_reason, to_rgb


def _save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _blank_png(path: Path, width: int, height: int, channels: int = 1) -> Path:
    """A blank 8-bit PNG written row by row, so a 15000×15000 one costs neither memory nor time here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row = zlib.compressobj(9), bytes(1 + width * channels)  # filter byte 0, then black pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# Linux carries the peak RSS of the process that exec'd a program into it (here pytest, with torch loaded), so the
# load runs in a child forked from the small interpreter and reports its own peak.
PEAK_RSS = """
import os, resource, sys
from embedder.images.decode import load_image
from embedder.errors import EmbedderError
if os.fork() == 0:
    try:
        print(load_image({path!r}).size)
    except EmbedderError as exc:
        print(exc)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024), flush=True)
    os._exit(0)
sys.exit(os.waitstatus_to_exitcode(os.wait()[1]))
"""


def test_load_image__huge_png_is_refused_before_decoding(tmp_path, run_alone):
    path = _blank_png(tmp_path / "big.png", 15000, 15000)  # 900 MB as RGB
    assert path.stat().st_size < 300_000
    message, peak = run_alone(PEAK_RSS.format(path=str(path)))
    assert message == "too large: big.png (15000×15000 pixels, limit 50 MP)"
    assert int(peak) <= 300e6


def test_load_image__largest_png_under_the_budget_decodes_without_extra_copies(tmp_path, run_alone):
    side = int(MAX_PIXELS**0.5)  # 7071×7071 RGB: 200 MB decoded (PIL keeps RGB in 4 bytes a pixel)
    size, peak = run_alone(PEAK_RSS.format(path=str(_blank_png(tmp_path / "max.png", side, side, channels=3))))
    assert size == f"({side}, {side})"
    assert int(peak) <= 300e6  # a second full-size copy would take it past 400 MB


def test_load_image__png_over_the_budget_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "10000")
    path = _save(tmp_path / "x.png", Image.new("RGB", (200, 100)))
    with pytest.raises(EmbedderError) as info:
        load_image(path)
    assert str(info.value) == "too large: x.png (200×100 pixels, limit 0.01 MP)"
    with pytest.raises(EmbedderError, match=r"^too large \(200×100 pixels"):  # bytes have no name to give
        load_image(path.read_bytes())


def test_load_image__jpeg_over_the_budget_decodes_at_reduced_scale(tmp_path, monkeypatch):
    path = _save(tmp_path / "x.jpg", Image.new("RGB", (200, 160), "red"))
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "10000")
    assert load_image(path).size == (100, 80)  # 1/2 scale: 8,000 pixels
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "500")
    assert load_image(path).size == (25, 20)  # 1/8 scale
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "100")
    with pytest.raises(EmbedderError, match=r"^too large: x.jpg \(200×160 pixels, limit 0.0001 MP\)$"):
        load_image(path)


def test_max_pixels__env_overrides_up_to_the_backstop(monkeypatch):
    assert max_pixels() == MAX_PIXELS == 50_000_000
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "8e7")
    assert max_pixels() == 80_000_000
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "1e12")
    assert max_pixels() == Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "lots")
    with pytest.raises(EmbedderError, match="EMBEDDER_MAX_PIXELS must be a positive number of pixels, got 'lots'"):
        max_pixels()


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg")])
def test_load_image__max_side_and_min_side_shrink_as_decoded(tmp_path, fmt, suffix):
    path = _save(tmp_path / f"x.{suffix}", Image.new("RGB", (400, 200), "blue"), format=fmt)
    assert load_image(path, max_side=40).size == (40, 20)
    assert load_image(path, min_side=50).size == (100, 50)
    assert load_image(path, max_side=1000).size == (400, 200)  # never enlarged


def test_load_image__max_side_keeps_exif_orientation_and_colour(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "rot.jpg", Image.new("RGB", (400, 200), (0, 0, 255)), exif=exif)
    small = load_image(path, max_side=40)
    assert small.size == (20, 40)
    r, g, b = small.getpixel((10, 20))
    assert b > 200 and r < 50 and g < 50


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "LA"])
def test_load_image__max_side_works_for_modes_resize_cannot_average(tmp_path, mode):
    path = _save(tmp_path / "x.png", Image.new(mode, (64, 32)))
    out = load_image(path, max_side=16)
    assert out.mode == "RGB" and out.size == (16, 8)


def test_load_image__a_fifo_is_refused_not_read(tmp_path, run_alone):
    os.mkfifo(tmp_path / "x.jpg")  # opening it for reading would wait for a writer forever
    code = (
        f"from embedder.images.decode import load_image\ntry:\n    load_image({str(tmp_path / 'x.jpg')!r})\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)"
    )
    assert run_alone(code, timeout=30) == ["UnreadableImage not a regular file: x.jpg (named pipe)"]


@pytest.mark.parametrize("path, kind", [("/dev/null", "device"), (".", "folder")])
def test_load_image__devices_and_folders_are_refused(tmp_path, path, kind):
    link = tmp_path / "x.png"
    link.symlink_to(Path(path).resolve())
    with pytest.raises(EmbedderError, match=rf"^not a regular file: x.png \({kind}\)$"):
        load_image(link)


def test_load_image__a_symlink_to_an_image_is_read(tmp_path):
    target = _save(tmp_path / "real.png", Image.new("RGB", (3, 2)))
    (tmp_path / "link.png").symlink_to(target)
    assert load_image(tmp_path / "link.png").size == (3, 2)


def test_skip_reason__os_and_pil_errors_become_short_phrases():
    from PIL import UnidentifiedImageError

    assert skip_reason(PermissionError(13, "Permission denied")) == "unreadable (permission denied)"
    assert skip_reason(FileNotFoundError(2, "No such file or directory")) == "unreadable (no such file or directory)"
    assert skip_reason(UnidentifiedImageError("cannot identify image file 'x'")) == "not an image"
    assert skip_reason(OSError("image file is truncated (3 bytes not processed)")) == "truncated"
    assert skip_reason(SyntaxError("broken PNG file\nmore")) == "damaged (broken PNG file)"
    assert skip_reason(ValueError()) == "damaged (ValueError)"


def test_load_image__missing_file_is_one_line(tmp_path):
    with pytest.raises(
        EmbedderError, match=r"^not a readable image: nope.png \(unreadable \(no such file or directory\)\)$"
    ):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_to_rgb__every_mode_becomes_rgb(mode):
    img = Image.new(mode, (5, 3))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 3)


def test_to_rgb__rgb_is_not_copied():
    img = Image.new("RGB", (5, 3))
    assert to_rgb(img) is img


def test_to_rgb__transparency_is_flattened_on_white():
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (10, 20, 30, 255))
    assert [to_rgb(img).getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (10, 20, 30)]


def test_to_rgb__16_bit_uses_full_range():
    img = Image.new("I;16", (2, 1))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 65535)
    assert [to_rgb(img).getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_to_rgb__float_is_stretched_to_full_range():
    img = Image.new("F", (3, 1))
    for x, v in enumerate([-1.0, 0.0, 1.0]):
        img.putpixel((x, 0), v)
    assert [to_rgb(img).getpixel((x, 0))[0] for x in range(3)] == [0, 127, 255]


def test_load_image__applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (40, 20), "blue")  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "rot.jpg", img, exif=exif)
    assert load_image(path).size == (20, 40)


def test_load_image__bad_bytes_raise_one_line_error():
    with pytest.raises(EmbedderError, match=r"^not a readable image \(not an image\)$"):
        load_image(b"%PDF-1.4 not an image")


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "EPS"])
def test_load_image__only_the_documented_formats_are_decoded(tmp_path, fmt):
    data = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n" if fmt == "EPS" else _encoded(fmt, Image.new("L", (4, 4)))
    )
    (tmp_path / "x.jpg").write_bytes(data)  # Ghostscript would run on an EPS, whatever its name
    with pytest.raises(EmbedderError, match=r"^not a readable image: x.jpg \(not an image\)$"):
        load_image(tmp_path / "x.jpg")


def test_load_image__file_object_is_named_by_its_name(tmp_path):
    buf = io.BytesIO(b"GIF89a broken")
    buf.name = "/uploads/a\nb.gif"
    with pytest.raises(EmbedderError) as info:
        load_image(buf)
    assert str(info.value).startswith("not a readable image: a\\nb.gif (")


# Property-based: whatever the bytes, load_image gives an RGB image or one line, never another exception.


def _encoded(fmt: str, img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = Image.new("RGB", (24, 16), (200, 30, 60))
    return {
        "PNG": _encoded("PNG", rgb.convert("P")),
        "JPEG": _encoded("JPEG", rgb, exif=exif),
        "GIF": _encoded("GIF", rgb),
        "BMP": _encoded("BMP", rgb),
        "WEBP": _encoded("WEBP", rgb),
        "TIFF": _encoded("TIFF", rgb.convert("I;16")),
    }


SEEDS = _seeds()


@contextlib.contextmanager
def _no_hang(seconds: float = 30):
    """A decoder stuck in C ignores Python signals: past ``seconds`` the process dumps its stacks and exits, so a
    hang fails the run instead of stalling it."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _rgb_or_one_line(data: bytes, **kw) -> Image.Image | None:
    with _no_hang():
        try:
            img = load_image(data, **kw)
        except EmbedderError as exc:
            assert str(exc) and "\n" not in str(exc)
            return None
    assert img.mode == "RGB" and min(img.size) >= 1
    return img


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2048))
def test_load_image__arbitrary_bytes_give_rgb_or_one_line(data):
    _rgb_or_one_line(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 2**16),
    max_side=st.none() | st.integers(1, 40),
)
def test_load_image__damaged_images_give_rgb_or_one_line(monkeypatch, fmt, edits, cut, max_side):
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "1000000")  # an edited header may promise 7000×7000: keep it quick
    data = bytearray(SEEDS[fmt])
    for at, value in edits:
        data[at % len(data)] = value
    img = _rgb_or_one_line(bytes(data[: cut % len(data)] if cut is not None else data), max_side=max_side)
    if img is not None and max_side is not None:
        assert max(img.size) <= max_side


FORMAT_MODES = (
    [("PNG", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")]
    + [("JPEG", m) for m in ("L", "RGB", "CMYK")]
    + [("TIFF", m) for m in ("F", "I", "RGB")]
    + [("WEBP", "RGBA"), ("GIF", "P"), ("BMP", "RGB")]
)


@settings(max_examples=120, deadline=None)
@given(
    fmt_mode=st.sampled_from(FORMAT_MODES),
    w=st.integers(1, 64),
    h=st.integers(1, 64),
    orientation=st.integers(1, 8),
    max_side=st.none() | st.integers(1, 80),
)
def test_load_image__any_size_and_mode_comes_back_upright_rgb(fmt_mode, w, h, orientation, max_side):
    fmt, mode = fmt_mode
    exif = Image.Exif()
    if fmt in ("PNG", "JPEG", "WEBP"):
        exif[0x0112] = orientation
    else:
        orientation = 1
    img = _rgb_or_one_line(_encoded(fmt, Image.new(mode, (w, h)), exif=exif), max_side=max_side)
    assert img is not None
    upright = (h, w) if orientation >= 5 else (w, h)
    if max_side is None or max_side >= max(w, h):
        assert img.size == upright
    else:  # the long side is max_side exactly; the short one may round either way
        long_axis = 0 if upright[0] >= upright[1] else 1
        assert img.size[long_axis] == max_side
        assert abs(img.size[1 - long_axis] - upright[1 - long_axis] * max_side / max(w, h)) <= 1
