"""Image transforms derived from a ModelConfig, so a saved run rebuilds exactly what it was trained with."""

from __future__ import annotations

from torchvision import transforms as T

from ..config import ModelConfig


def _resize(config: ModelConfig) -> list:
    s = config.image_size
    if config.resize == "crop":
        return [T.Resize(int(round(s * 256 / 224))), T.CenterCrop(s)]
    return [T.Resize((s, s))]


def eval_transform(config: ModelConfig) -> T.Compose:
    """PIL RGB image -> normalised tensor (3, S, S)."""
    return T.Compose([*_resize(config), T.ToTensor(), T.Normalize(config.mean, config.std)])


def train_transform(config: ModelConfig) -> T.Compose:
    """Light augmentation: photos get crops, flips and colour; tiny images small shifts and turns, never flips."""
    s = config.image_size
    if config.augment == "photo":
        aug = [
            T.RandomResizedCrop(s, scale=(0.5, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2, 0.02),
        ]
    else:
        aug = [T.Resize((s, s)), T.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1), fill=255)]
    return T.Compose([*aug, T.ToTensor(), T.Normalize(config.mean, config.std)])
