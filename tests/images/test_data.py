import io
import os

import numpy as np
import pytest
from PIL import Image

from embedder.errors import EmbedderError
from embedder.images.data import demo_dataset, scan_folder, stratified_sample, stratified_split


def _save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def test_scan_folder__classes_sorted_and_labels_match(shapes_folder):
    images = scan_folder(shapes_folder)
    assert images.classes == ["circle", "square", "triangle"]
    assert len(images) == 36
    assert np.bincount(images.labels).tolist() == [12, 12, 12]
    assert all(images.classes[lab] == p.parent.name for p, lab in zip(images.paths, images.labels))


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
    assert (
        images.skipped_message()
        == "skipped 2 file(s): 2 truncated — b/broken.jpg: truncated; b/truncated.jpg: truncated"
    )


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
    with pytest.raises(
        EmbedderError, match=r"no readable images in .*: skipped 2 file\(s\): 2 not an image — a/x.png: not an image"
    ):
        scan_folder(tmp_path)


def _mixed_folder(root):
    """Two usable classes, one holding a truncated JPEG and an image over a 0.01 MP budget, plus three class
    folders with nothing usable: empty, only a broken file, only notes."""
    for label in ("a", "b"):
        _save(root / label / "ok.png", Image.new("RGB", (10, 10)))
    _save(root / "b" / "big.png", Image.new("RGB", (200, 100)))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="JPEG")
    (root / "b" / "t.jpg").write_bytes(buf.getvalue()[:300])
    (root / "c").mkdir()
    (root / "d").mkdir()
    (root / "d" / "x.png").write_bytes(b"garbage")
    (root / "e").mkdir()
    (root / "e" / "notes.txt").write_text("no images here")
    return root


def test_scan_folder__reasons_and_empty_classes_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDER_MAX_PIXELS", "10000")
    images = scan_folder(_mixed_folder(tmp_path / "data"))
    assert images.classes == ["a", "b"] and len(images) == 2
    assert images.skipped_message() == (
        "skipped 3 file(s): 1 too large, 1 truncated, 1 not an image — b/big.png: too large (200×100 pixels, "
        "limit 0.01 MP); b/t.jpg: truncated; d/x.png: not an image"
    )
    assert images.empty_classes == ["c", "d", "e"]
    assert images.empty_classes_message() == "left out 3 class folder(s) with no usable image: c, d, e"
    assert images.skip_report(limit=2) == {
        "count": 3,
        "by_reason": {"too large": 1, "truncated": 1, "not an image": 1},
        "files": [
            {"path": "b/big.png", "reason": "too large (200×100 pixels, limit 0.01 MP)"},
            {"path": "b/t.jpg", "reason": "truncated"},
        ],
        "empty_classes": ["c", "d", "e"],
    }


def test_scan_folder__nothing_skipped_means_no_messages(shapes_folder):
    images = scan_folder(shapes_folder)
    assert images.skipped_message() is None and images.empty_classes_message() is None
    assert images.skip_report() == {"count": 0, "by_reason": {}, "files": [], "empty_classes": []}


def test_skipped_message__long_lists_are_cut(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        _save(root / label / "ok.png", Image.new("RGB", (4, 4)))
    for i in range(5):
        (root / "a" / f"{i}.png").write_bytes(b"x")
    assert scan_folder(root).skipped_message() == (
        "skipped 5 file(s): 5 not an image — a/0.png: not an image; a/1.png: not an image; a/2.png: not an image; "
        "and 2 more"
    )


def test_scan_folder__one_class_left_names_the_empty_ones(tmp_path):
    _save(tmp_path / "a" / "ok.png", Image.new("RGB", (4, 4)))
    (tmp_path / "b").mkdir()
    with pytest.raises(EmbedderError) as info:
        scan_folder(tmp_path)
    assert str(info.value) == (
        f"need at least 2 classes (sub-folders with images) in {tmp_path}, found 1; "
        "left out 1 class folder(s) with no usable image: b"
    )


def test_scan_folder__a_fifo_is_skipped_not_read(tmp_path, run_alone):
    for label in ("a", "b"):
        _save(tmp_path / label / "ok.png", Image.new("RGB", (4, 4)))
    os.mkfifo(tmp_path / "a" / "x.jpg")  # reading it would wait for a writer forever
    code = f"from embedder.images.data import scan_folder\nprint(scan_folder({str(tmp_path)!r}).skipped_message())"
    assert run_alone(code, timeout=30) == [
        "skipped 1 file(s): 1 not a regular file — a/x.jpg: not a regular file (named pipe)"
    ]


def test_scan_folder__symlinks_to_images_count_and_to_devices_do_not(tmp_path):
    root = tmp_path / "data"
    target = _save(tmp_path / "outside.png", Image.new("RGB", (4, 4)))
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / "link.png").symlink_to(target)
    (root / "a" / "null.png").symlink_to("/dev/null")
    images = scan_folder(root)
    assert len(images) == 2
    assert images.skipped == [(root / "a" / "null.png", "not a regular file (device)")]


def test_scan_folder__sizes_are_upright(tmp_path):
    img = Image.new("RGB", (40, 20), "blue")  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "rot.jpg", img, exif=exif)
    images = scan_folder_with_one(tmp_path, path)
    assert images.sizes == [(20, 40), (20, 40)]


def scan_folder_with_one(tmp_path, path):
    root = tmp_path / "root"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / path.name).write_bytes(path.read_bytes())
    return scan_folder(root)


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


def test_stratified_sample__keeps_every_label_and_the_cap():
    labels = np.array([0] * 90 + [1] * 9 + [2])
    rows = stratified_sample(labels, cap=20, seed=0)
    assert len(rows) == 20
    assert set(labels[rows]) == {0, 1, 2}
    assert np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, stratified_sample(labels, cap=20, seed=0))


def test_stratified_sample__under_the_cap_is_everything():
    assert stratified_sample([1, 2, 3], cap=5).tolist() == [0, 1, 2]
