"""Images -> embeddings, batched, with optional mirror averaging (test-time augmentation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .data import load_image


class DecodedImages:
    """Decoded images kept in memory, downsized to a short side of ``side`` pixels, for the life of a
    training job: decoding full-size photos every epoch costs more than the network on 2 cores."""

    def __init__(self, side: int, max_items: int = 5000) -> None:
        self.side, self.max_items, self.items = side, max_items, {}

    def __call__(self, path) -> Image.Image:
        img = self.items.get(path)
        if img is None:
            img = load_image(path, min_side=self.side)  # shrunk as it is decoded: the full-size copy never stays
            if len(self.items) < self.max_items:
                self.items[path] = img
        return img


class ImageDataset(Dataset):
    """(paths, labels) -> (transformed image, label). Paths were checked by ``scan_folder``."""

    def __init__(
        self, paths: Sequence, labels: Sequence[int] | np.ndarray, transform: Callable, loader: Callable = load_image
    ) -> None:
        self.paths, self.labels, self.transform, self.loader = list(paths), np.asarray(labels), transform, loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.loader(self.paths[i])), int(self.labels[i])


class _ImageList(Dataset):
    def __init__(self, images: Sequence[Image.Image | str], transform: Callable, loader: Callable) -> None:
        self.images, self.transform, self.loader = images, transform, loader

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.images[i]
        return self.transform(item if isinstance(item, Image.Image) else self.loader(item))


@torch.no_grad()
def embed_images(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[Image.Image | str],
    transform: Callable,
    *,
    batch_size: int = 64,
    flip_tta: bool = False,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    loader: Callable = load_image,
) -> np.ndarray:
    """Embed PIL images or image paths with ``fn`` (a model in eval mode, or one of its methods).

    Returns:
        (N, D) float32 array of L2-normalised rows.
    """
    batches = DataLoader(_ImageList(images, transform, loader), batch_size=batch_size, shuffle=False)
    out: list[np.ndarray] = []
    done = 0
    for batch in batches:  # (B, 3, S, S)
        batch = batch.to(device)
        z = fn(batch)
        if flip_tta:
            z = F.normalize(z + fn(torch.flip(batch, dims=[3])), dim=1)
        out.append(z.float().cpu().numpy())
        done += len(batch)
        if progress is not None:
            progress(done, len(images))
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
