"""What the networks of a cross-validation compute alike, computed once: the frozen stages' output.

Every fold network (and the last one, trained on all images) starts from the same pretrained backbone with the same
leading stages frozen: eval mode, no gradient, so those stages map an input to the same activations in every
network. Per fold, training ran them again on each augmented image and validation on each still one. Here:

- ``still``: each image's un-augmented activations, once for all validations;
- ``views(epoch)``: each image's augmented view of that epoch (the seeded transform training uses), through the
  frozen stages once, shared by every network that trains on it that epoch; kept for the last network's epochs
  while they fit in the memory budget.

The trainable stages then run on these activations (``TopOnly``): the same computation as on the images, without
the three quarters of the network that never changes. An image a fold's sampler draws twice in one epoch gets the
same view twice (a fresh one per draw before).

The frozen stages are a fixed network, so on the CPU they run through onnxruntime (network/fast.py), as a loaded
run's network does: the views of every epoch were about 40% of a cross-validation epoch's time on 245 photos.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..network.embed import embed_images
from ..network.fast import for_cpu
from ..network.model import EmbeddingNet, Staged

MAX_BYTES = 1 << 30  # activations kept in memory: still ones, and the views of as many epochs as fit


class TopOnly(nn.Module):
    """The trainable part of an ``EmbeddingNet`` on frozen-stage activations (B, C, H, W) -> unit vectors (B, D)."""

    def __init__(self, model: EmbeddingNet, n_frozen: int) -> None:
        super().__init__()
        self.model, self.n_frozen = model, n_frozen

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        pooled = self.model.backbone.run(acts, self.n_frozen).mean(dim=(2, 3))  # (B, F)
        return F.normalize(self.model.head(pooled), dim=1)


class _Leading(nn.Module):
    """The first ``n`` stages of a backbone, on their own: a fixed network (eval mode, its own copy)."""

    def __init__(self, backbone: Staged, n: int) -> None:
        super().__init__()
        self.backbone, self.n = copy.deepcopy(backbone), n
        self.eval()  # all of it, and for good: fixed BatchNorm statistics, no stochastic depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.run(x, 0, self.n)


class _Rows(Dataset):
    """(activations of a row, its label), rows of an epoch's views."""

    def __init__(self, views: torch.Tensor, rows: np.ndarray, labels: np.ndarray) -> None:
        self.views, self.rows, self.labels = views, rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.views[self.rows[i]], int(self.labels[i])


class FrozenStages:
    """The frozen stages' activations of a fixed list of images (``paths``), still and per epoch's view."""

    def __init__(self, model: EmbeddingNet, n_frozen: int, paths: list, transforms: tuple, loader, batch_size: int):
        self.model, self.n_frozen, self.paths, self.loader, self.batch_size = model, n_frozen, paths, loader, batch_size
        self.eval_transform, self.train_transform = transforms
        self.row = {p: i for i, p in enumerate(paths)}
        self._still: np.ndarray | None = None
        self._views: dict[int, torch.Tensor] = {}
        self._run: Callable[[torch.Tensor], torch.Tensor] | None = None

    @torch.no_grad()
    def frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen stages' output of ``x`` (B, C, H, W): through onnxruntime on the CPU where its export agrees
        with torch on the first batch, else torch."""
        if self._run is None:
            leading = _Leading(self.model.backbone, self.n_frozen)
            self._run = for_cpu(leading, x) if x.device.type == "cpu" else leading
        return self._run(x)

    @staticmethod
    def fits(model: EmbeddingNet, n_frozen: int, n_images: int, max_bytes: int = MAX_BYTES) -> bool:
        """Whether the still activations and one epoch's views of ``n_images`` fit in ``max_bytes``."""
        side = model.config.image_size
        with torch.no_grad():
            probe = model.backbone.run(torch.zeros(1, 3, side, side), 0, n_frozen)
        return n_frozen > 0 and 2 * probe.numel() * 4 * n_images <= max_bytes

    def still(self, paths: list, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(len(paths), C, H, W) the un-augmented images' activations, in the order of ``paths``."""
        if self._still is None:
            self._still = embed_images(self.frozen, self.paths, self.eval_transform, batch_size=self.batch_size,
                                       loader=self.loader, progress=progress)  # fmt: skip
        return self._still[[self.row[p] for p in paths]]

    def views(self, epoch: int, seed: int) -> torch.Tensor:
        """(N, C, H, W) every image's augmented view of ``epoch`` through the frozen stages, computed on first
        request and kept while the memory budget allows. Each image draws its view with a seed of its own (from
        ``seed``, the epoch and its row), so the views are the same whenever and in whatever order they are made."""
        if epoch not in self._views:
            views = self._augmented(epoch, seed)
            if (len(self._views) + 2) * views.numel() * 4 > MAX_BYTES:
                self._views.clear()
            self._views[epoch] = views
        return self._views[epoch]

    @torch.no_grad()
    def _augmented(self, epoch: int, seed: int) -> torch.Tensor:
        device, out = next(self.model.parameters()).device, []
        for start in range(0, len(self.paths), self.batch_size):
            rows = range(start, min(start + self.batch_size, len(self.paths)))
            batch = []
            for row in rows:  # in this thread, one seed an image: the random crop, flip and colour are repeatable
                torch.manual_seed((seed * 10_007 + epoch) * 1_000_003 + row)
                batch.append(self.train_transform(self.loader(self.paths[row])))
            out.append(self.frozen(torch.stack(batch).to(device)).cpu())
        return torch.cat(out)

    def batches(self, views: torch.Tensor, paths: list, labels: np.ndarray, sampler, batch: int) -> DataLoader:
        """Batches of (activations, labels) for the images ``paths`` (drawn by ``sampler``, as their images were)."""
        rows = np.array([self.row[p] for p in paths], dtype=np.int64)
        return DataLoader(_Rows(views, rows, labels), batch_size=batch, sampler=sampler, drop_last=True)
