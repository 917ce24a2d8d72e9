"""embedder/embed.py: images -> embeddings in batches, in input order, with mirror averaging; decoded images
kept in memory for a training job. The "network" is a hand-built function, so every number is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from embedder.embed import DecodedImages, ImageDataset, embed_images


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


def test_decoded_images__beyond_max_items_images_are_decoded_each_time(photos):
    wide, tall = photos
    decoded = DecodedImages(side=16, max_items=1)
    assert decoded(wide) is decoded(wide)
    assert decoded(tall) is not decoded(tall)
    assert decoded(tall).size == (16, 48)
    assert list(decoded.items) == [wide]


def test_image_dataset__transformed_image_and_int_label_through_the_loader(photos):
    wide, tall = photos
    ds = ImageDataset([wide, tall], np.array([1, 0]), T.Compose([T.Resize((4, 4)), T.ToTensor()]))
    assert len(ds) == 2
    x, y = ds[1]
    assert x.shape == (3, 4, 4) and y == 0 and type(y) is int
    assert x[2].mean() > 0.7 and x[0].mean() < 0.1  # the blue image
