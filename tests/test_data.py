import io

import numpy as np
import pytest
from PIL import Image

from embedder.data import demo_dataset, load_image, scan_folder, stratified_split, to_rgb
from embedder.errors import EmbedderError


def _save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def test_scan_folder__classes_sorted_and_labels_match(shapes_folder):
    images = scan_folder(shapes_folder)
    assert images.classes == ["circle", "square", "triangle"]
    assert len(images) == 36
    assert np.bincount(images.labels).tolist() == [12, 12, 12]
    assert all(images.classes[l] == p.parent.name for p, l in zip(images.paths, images.labels))


def test_scan_folder__ignores_hidden_and_non_images_and_counts_broken(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        _save(root / label / "ok.PNG", Image.new("RGB", (10, 10)))  # upper-case extension still counts
    (root / "a" / "notes.txt").write_text("not an image")
    _save(root / "a" / ".hidden.png", Image.new("RGB", (10, 10)))
    _save(root / ".cache" / "x.png", Image.new("RGB", (10, 10)))
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="JPEG")
    (root / "b" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    images = scan_folder(root)
    assert [p.name for p in images.paths] == ["ok.PNG", "ok.PNG"]
    assert sorted(p.name for p, _ in images.skipped) == ["broken.jpg", "truncated.jpg"]
    assert images.skipped_message().startswith("skipped 2 unreadable image(s): b/broken.jpg, b/truncated.jpg")


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "data folder not found"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: _save(root / "only" / "x.png", Image.new("RGB", (4, 4))), "need at least 2 classes"),
        (lambda root: _save(root / "x.png", Image.new("RGB", (4, 4))), "one sub-folder per label"),
    ],
)
def test_scan_folder__user_errors_are_one_line(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(EmbedderError, match=message) as info:
        scan_folder(root)
    assert "\n" not in str(info.value)


def test_scan_folder__only_broken_images_is_an_error(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "x.png").write_bytes(b"garbage")
    with pytest.raises(EmbedderError, match=r"no readable images .*\(2 file"):
        scan_folder(tmp_path)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_to_rgb__every_mode_becomes_rgb(mode):
    img = Image.new(mode, (5, 3))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 3)


def test_to_rgb__transparency_is_flattened_on_white():
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (10, 20, 30, 255))
    assert [to_rgb(img).getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (10, 20, 30)]


def test_to_rgb__16_bit_uses_full_range():
    img = Image.new("I;16", (2, 1))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 65535)
    assert [to_rgb(img).getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_load_image__applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (40, 20), "blue")  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "rot.jpg", img, exif=exif)
    assert load_image(path).size == (20, 40)
    images = scan_folder_with_one(tmp_path, path)
    assert images.sizes == [(20, 40), (20, 40)]


def scan_folder_with_one(tmp_path, path):
    root = tmp_path / "root"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / path.name).write_bytes(path.read_bytes())
    return scan_folder(root)


def test_load_image__bad_bytes_raise_one_line_error():
    with pytest.raises(EmbedderError, match="not a readable image"):
        load_image(b"%PDF-1.4 not an image")


def test_stratified_split__per_class_counts_and_determinism():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]  # the lone class stays in the gallery
    assert sorted(kept.tolist() + held.tolist()) == list(range(16))
    again = stratified_split(labels, 0.2, seed=3)
    assert kept.tolist() == again[0].tolist() and held.tolist() == again[1].tolist()
    other = stratified_split(labels, 0.2, seed=4)
    assert held.tolist() != other[1].tolist()


def test_demo_dataset__digits_written_once(tmp_path):
    root = demo_dataset(tmp_path)
    images = scan_folder(root)
    assert len(images) == 1797
    assert images.classes == [str(d) for d in range(10)]
    assert images.sizes[0] == (32, 32)
    mtime = (root / "0" / "0000.png").stat().st_mtime_ns
    assert demo_dataset(tmp_path) == root
    assert (root / "0" / "0000.png").stat().st_mtime_ns == mtime
