"""embedder/images/transforms.py: what the network sees. The eval transform's exact numbers; "small" augmentation
(digits: a mirrored 3 is not a 3) never flips, while "photo" does."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from embedder.config import ModelConfig
from embedder.images.transforms import eval_transform, train_transform


@pytest.mark.parametrize("resize", ["stretch", "crop"])
@pytest.mark.parametrize("size", [(40, 20), (20, 40), (32, 32)])
def test_eval_transform__any_image_becomes_a_square_of_the_configured_side(resize, size):
    x = eval_transform(ModelConfig(image_size=16, resize=resize))(Image.new("RGB", size))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32


def test_eval_transform__normalised_with_the_configs_mean_and_std_per_channel():
    cfg = ModelConfig(image_size=8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    x = eval_transform(cfg)(Image.new("RGB", (8, 8), (255, 0, 255)))
    assert x[0].unique().tolist() == [1.0]  # (1 - 0.5) / 0.5
    assert x[1].unique().tolist() == [-1.0]  # (0 - 0.25) / 0.25
    assert x[2].unique().tolist() == [0.5]  # (1 - 0) / 2


def test_eval_transform__stretch_keeps_all_of_a_wide_image_crop_keeps_its_middle():
    img = Image.new("RGB", (64, 16), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 8, 16))  # a white stripe at the far left
    stretched = eval_transform(ModelConfig(image_size=16, resize="stretch"))(img)
    cropped = eval_transform(ModelConfig(image_size=16, resize="crop"))(img)
    assert stretched[0, :, 0].min() == 1.0  # still there, squeezed
    assert cropped[0].max() == -1.0  # cut away


def _half_dark() -> Image.Image:
    img = Image.new("RGB", (32, 32), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 16, 32))  # left half black
    return img


def _flipped(x: torch.Tensor) -> bool:
    """Whether the dark half has moved to the right."""
    return bool(x[:, :, :10].mean() > x[:, :, -10:].mean())


def test_train_transform__small_augmentation_never_flips():
    aug = train_transform(ModelConfig(image_size=32, augment="small"))
    flips = 0
    for seed in range(60):
        torch.manual_seed(seed)
        x = aug(_half_dark())
        assert x.shape == (3, 32, 32)
        flips += _flipped(x)
    assert flips == 0


def test_train_transform__photo_augmentation_flips_sometimes():  # the probe above can see a flip
    aug = train_transform(ModelConfig(image_size=32, augment="photo"))
    flips = 0
    for seed in range(60):
        torch.manual_seed(seed)
        flips += _flipped(aug(_half_dark()))
    assert 10 < flips < 50
