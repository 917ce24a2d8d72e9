"""embedder/network/embed.py: images -> embeddings in batches, in input order, with mirror averaging; decoded images
kept in memory for a training job. The "network" is a hand-built function, so every number is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from embedder.errors import EmbedderError
from embedder.images.data import load_image
from embedder.network.embed import CACHE_ENV, DecodedImages, ImageDataset, cache_budget, embed_images, image_bytes


def _strip(left: int, right: int) -> Image.Image:
    """A 2x1 grey image: two pixels, left and right."""
    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (left,) * 3)
    img.putpixel((1, 0), (right,) * 3)
    return img


def _pixels_and_one(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, 1, 2) -> (B, 3): [left, right, 1] of the first channel, not normalised (so TTA's own is seen)."""
    return torch.cat([x[:, 0, 0, :], torch.ones(len(x), 1)], dim=1)


def test_embed_images__batches_in_order_with_progress():
    images = [_strip(v, 0) for v in (0, 51, 102, 153, 204)]
    batches, reports = [], []

    def fn(x):
        batches.append(len(x))
        return F.normalize(_pixels_and_one(x), dim=1)

    out = embed_images(fn, images, T.ToTensor(), batch_size=2, progress=lambda d, t: reports.append((d, t)))
    assert batches == [2, 2, 1]
    assert reports == [(2, 5), (4, 5), (5, 5)]
    assert out.dtype == np.float32 and out.shape == (5, 3)
    expected = F.normalize(torch.tensor([[v / 255, 0.0, 1.0] for v in (0, 51, 102, 153, 204)]), dim=1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_embed_images__flip_tta_averages_the_image_and_its_mirror_then_normalises():
    out = embed_images(_pixels_and_one, [_strip(255, 0)], T.ToTensor(), flip_tta=True)
    # [1, 0, 1] + its mirror's [0, 1, 1] = [1, 1, 2], at unit length
    np.testing.assert_allclose(out, [[1 / 6**0.5, 1 / 6**0.5, 2 / 6**0.5]], atol=1e-6)
    plain = embed_images(_pixels_and_one, [_strip(255, 0)], T.ToTensor())
    np.testing.assert_allclose(plain, [[1, 0, 1]])  # without TTA, the function's rows as they are


def test_embed_images__a_symmetric_image_is_unchanged_by_flip_tta():
    fn = lambda x: F.normalize(_pixels_and_one(x), dim=1)
    same = [_strip(128, 128)]
    np.testing.assert_allclose(
        embed_images(fn, same, T.ToTensor(), flip_tta=True), embed_images(fn, same, T.ToTensor()), atol=1e-6
    )


def test_embed_images__paths_go_through_the_loader_images_do_not():
    loaded = []

    def loader(path):
        loaded.append(path)
        return _strip(255, 255)

    out = embed_images(_pixels_and_one, ["a.png", _strip(0, 0), "b.png"], T.ToTensor(), loader=loader)
    assert loaded == ["a.png", "b.png"]
    np.testing.assert_allclose(out[:, :2], [[1, 1], [0, 0], [1, 1]])


def test_embed_images__nothing_to_embed_is_an_empty_array():
    out = embed_images(_pixels_and_one, [], T.ToTensor())
    assert out.shape == (0, 0) and out.dtype == np.float32


@pytest.fixture
def photos(tmp_path):
    Image.new("RGB", (64, 32), (200, 0, 0)).save(tmp_path / "wide.png")
    Image.new("RGB", (30, 90), (0, 0, 200)).save(tmp_path / "tall.jpg")
    return tmp_path / "wide.png", tmp_path / "tall.jpg"


def test_decoded_images__decoded_once_at_the_short_side_asked_for(photos):
    wide, tall = photos
    decoded = DecodedImages(side=16)
    first = decoded(wide)
    assert first.size == (32, 16) and decoded(tall).size == (16, 48)
    assert decoded(wide) is first  # from memory, not decoded again


def test_decoded_images__beyond_its_byte_budget_images_are_decoded_each_time(photos):
    wide, tall = photos
    one = image_bytes(load_image(wide, min_side=16))  # 32x16 RGB: 2 KB of pixels and the objects around them
    decoded = DecodedImages(side=16, max_bytes=one)
    assert decoded(wide) is decoded(wide)
    assert decoded(tall) is not decoded(tall)
    assert decoded(tall).size == (16, 48)
    assert list(decoded.items) == [wide] and decoded.bytes == one


def test_decoded_images__a_folder_larger_than_the_budget_stays_within_it(tmp_path):
    for i in range(40):
        Image.new("RGB", (64, 64), (i, 0, 0)).save(tmp_path / f"{i}.png")
    budget = 100_000
    decoded = DecodedImages(side=32, max_bytes=budget)
    for _ in range(2):
        for i in range(40):
            assert decoded(tmp_path / f"{i}.png").size == (32, 32)
    held = sum(image_bytes(img) for img in decoded.items.values())
    assert decoded.bytes == held <= budget
    assert len(decoded.items) == budget // image_bytes(decoded(tmp_path / "0.png"))  # filled, then no more


def test_image_bytes__counts_pillow_storage_and_metadata():
    rgb, grey = Image.new("RGB", (10, 10)), Image.new("L", (10, 10))
    assert image_bytes(rgb) - image_bytes(grey) == 300  # RGB is held as 4 bytes a pixel, L as 1
    tagged = Image.new("RGB", (10, 10))
    tagged.info["icc_profile"] = b"x" * 5000
    assert image_bytes(tagged) == image_bytes(rgb) + 5000


def test_cache_budget__from_the_environment(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_budget() == 256 * 1024**2
    monkeypatch.setenv(CACHE_ENV, "1.5")
    assert cache_budget() == int(1.5 * 1024**2)
    monkeypatch.setenv(CACHE_ENV, "lots")
    with pytest.raises(EmbedderError, match=CACHE_ENV):
        cache_budget()


def test_embed_images__keeps_the_output_shape_of_a_backbone_stage():
    out = embed_images(lambda x: x * 2, [_strip(0, 0), _strip(255, 255)], T.ToTensor(), batch_size=1)
    assert out.shape == (2, 3, 1, 2) and out.dtype == np.float32  # (N, C, H, W): as the frozen stages give it
    np.testing.assert_allclose(out[0], 0.0)
    np.testing.assert_allclose(out[1], 2.0)


def test_image_dataset__transformed_image_and_int_label_through_the_loader(photos):
    wide, tall = photos
    ds = ImageDataset([wide, tall], np.array([1, 0]), T.Compose([T.Resize((4, 4)), T.ToTensor()]))
    assert len(ds) == 2
    x, y = ds[1]
    assert x.shape == (3, 4, 4) and y == 0 and type(y) is int
    assert x[2].mean() > 0.7 and x[0].mean() < 0.1  # the blue image


def test_embed_images__each_image_gets_exactly_what_its_transform_gives_when_batches_are_normalised_at_once(tmp_path):
    from embedder.config import ModelConfig
    from embedder.images.transforms import eval_transform

    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(40, 30), (64, 64), (90, 41), (33, 70)] * 10):  # 40 images: batches of 16 and 8
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1], quality=90)
    grey = Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8))  # a PIL image given as is, not RGB
    for config in (ModelConfig(backbone="convnet", image_size=32), ModelConfig(image_size=24, resize="crop")):
        transform = eval_transform(config)
        got = embed_images(lambda x: x.flatten(1), [*paths, grey], transform, batch_size=24)
        one_by_one = [transform(load_image(p)) for p in paths] + [transform(grey.convert("RGB"))]
        assert np.array_equal(got, torch.stack(one_by_one).flatten(1).numpy())
