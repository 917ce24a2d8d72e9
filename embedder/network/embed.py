"""Images -> embeddings, batched, with optional mirror averaging (test-time augmentation).

Decoding and transforming run in a pool of threads, a few batches ahead of the network: PIL decodes and resizes
without holding the GIL, and torch releases it in its kernels, so the cores are busy with the next batch's images
while the network runs on this one. The threads hand over uint8 pixels; each batch is made float and normalised at
once (no per-image tensor work). In memory: the batches in flight and the (N, D) output, written in place.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from ..cores import one_core, small
from ..errors import EmbedderError
from ..images.data import load_image
from .fast import first_batch, pays

CACHE_ENV = "EMBEDDER_DECODE_CACHE_MB"
DEFAULT_CACHE_MB = 256
AHEAD = 2  # batches decoded ahead of the one the network is on
CHUNK = 16  # images a decoding thread takes at a time (one task per image cost more than a 64 px image's decoding)
_OBJECT_BYTES = 2048  # a cached image's Python objects and allocator slack (measured: 32x32 RGB costs ~6 KB in all)


def cache_budget() -> int:
    """The decoded-image cache's budget in bytes: $EMBEDDER_DECODE_CACHE_MB, else 256 MB (0 turns it off)."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if not raw:
        return DEFAULT_CACHE_MB * 1024**2
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if mb < 0:
        raise EmbedderError(f"{CACHE_ENV}={raw!r}: give a number of megabytes (0 turns the cache off)")
    return int(mb * 1024**2)


def image_bytes(img: Image.Image) -> int:
    """The memory a decoded image holds: Pillow keeps 1, 2 or 4 bytes a pixel (RGB is padded to 4), plus its
    metadata (an ICC profile or EXIF block can be kilobytes) and the objects around them."""
    bands = len(img.getbands())
    per_pixel = 4 if bands > 1 or img.mode in ("I", "F") else 2 if img.mode.startswith("I;16") else 1
    info = sum(len(v) for v in img.info.values() if isinstance(v, (bytes, str)))
    return img.width * img.height * per_pixel + info + _OBJECT_BYTES


class DecodedImages:
    """Decoded images kept in memory, downsized to a short side of ``side`` pixels, for the life of a
    training job: decoding full-size photos every epoch costs more than the network on 2 cores.

    The cache holds at most ``max_bytes`` (default ``cache_budget()``), whatever the size of the data set: once
    full it keeps what it has and decodes the rest from disk each time (the first images stay, so an epoch
    always finds the same share cached)."""

    def __init__(self, side: int, max_bytes: int | None = None) -> None:
        self.side, self.items, self.bytes = side, {}, 0
        self.max_bytes = cache_budget() if max_bytes is None else max_bytes
        self._lock = threading.Lock()  # embed_images decodes in several threads

    def __call__(self, path) -> Image.Image:
        img = self.items.get(path)
        if img is None:
            img = load_image(path, min_side=self.side)  # shrunk as it is decoded: the full-size copy never stays
            size = image_bytes(img)
            with self._lock:
                if path not in self.items and self.bytes + size <= self.max_bytes:
                    self.items[path] = img
                    self.bytes += size
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


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


class _ImageList(Dataset):
    """Images (PIL images or paths) through ``transform``. A transform that ends in ToTensor and Normalize (every
    ``eval_transform``) is split: the threads decode, resize and crop each image to uint8 (``chunk``), and each
    batch becomes float and is normalised at once (``batch``). Per-image tensor work held the GIL the network and
    the other threads wait for: on 64 px images the small CNN's pass ran at 62% of the network's speed, and at 90%
    with the tensor work per batch, with the same tensors to the bit."""

    def __init__(self, images: Sequence[Image.Image | str], transform: Callable, loader: Callable) -> None:
        self.images, self.transform, self.loader = images, transform, loader
        steps = list(getattr(transform, "transforms", []))
        self.normalise = None  # (the PIL steps, mean (1, C, 1, 1), std (1, C, 1, 1)) where the transform splits
        if len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize):
            as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32).view(1, -1, 1, 1)  # noqa: E731
            self.normalise = (T.Compose(steps[:-2]), as_tensor(steps[-1].mean), as_tensor(steps[-1].std))

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> Image.Image:
        item = self.images[i]
        return item if isinstance(item, Image.Image) else self.loader(item)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.image(i))

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        """Images ``start``..``stop``: (n, H, W, 3) uint8 where the transform splits, else (n, C, H, W)."""
        if self.normalise is None:
            return torch.stack([self[i] for i in range(start, stop)])
        steps = self.normalise[0]
        return torch.from_numpy(np.stack([np.asarray(steps(_rgb(self.image(i)))) for i in range(start, stop)]))

    def batch(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        """(B, C, H, W) float32 from ``chunk``s: what ``transform`` gives each image (ToTensor, then Normalize)."""
        x = torch.cat(chunks)
        if self.normalise is None:
            return x
        _, mean, std = self.normalise
        return x.permute(0, 3, 1, 2).contiguous().float().div(255).sub_(mean).div_(std)


def decode_threads() -> int:
    """Threads that decode and transform: one per core, at most 8 (more only queue on the same cores). One fewer
    was no better on 2 cores: the small CNN on 64 px images 71% of its ceiling against 70%, Lite0 through
    onnxruntime 94 images/s against 100."""
    return max(1, min(8, os.cpu_count() or 1))


def _batches(items: _ImageList, batch_size: int, pool: ThreadPoolExecutor, pin: bool) -> Iterator[torch.Tensor]:
    """(B, C, H, W) batches in order, their images decoded and transformed in ``pool`` a ``CHUNK`` at a time,
    ``AHEAD`` batches ahead."""
    pending: deque = deque()
    starts = iter(range(0, len(items), batch_size))

    def submit() -> None:
        start = next(starts, None)
        if start is not None:
            stop = min(start + batch_size, len(items))
            pending.append([pool.submit(items.chunk, a, min(a + CHUNK, stop)) for a in range(start, stop, CHUNK)])

    for _ in range(AHEAD + 1):
        submit()
    while pending:
        futures = pending.popleft()
        submit()
        batch = items.batch([f.result() for f in futures])  # (B, C, H, W)
        yield batch.pin_memory() if pin else batch


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
    fast: bool = False,
) -> np.ndarray:
    """Embed PIL images or image paths with ``fn`` (a model in eval mode, or one of its methods).

    With ``fast`` (a fixed network on the CPU) ``fn`` is run by onnxruntime where the work pays for the export
    (``network.fast.pays``) and the export agrees with torch.

    Images given as paths are decoded by ``loader`` in a pool of threads (``decode_threads``), a few batches ahead
    of the network, so memory holds those batches and the (N, D) output, which is written in place as batches
    arrive. On a GPU the batches are pinned and copied without blocking.

    Returns:
        (N, D) float32 array of L2-normalised rows (of ``fn``'s output shape when it is not a vector).
    """
    out: np.ndarray | None = None
    done, pin = 0, torch.device(device).type == "cuda"
    with ExitStack() as stack:
        pool = ThreadPoolExecutor(decode_threads(), thread_name_prefix="embed-decode")
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)  # an error or a cancel stops the decoding at once
        if small(len(images)):
            stack.enter_context(one_core())  # an upload: the network on this thread's core alone (cores.py)
        for batch in _batches(_ImageList(images, transform, loader), batch_size, pool, pin):
            batch = batch.to(device, non_blocking=pin)
            if fast and done == 0 and pays(len(images), batch) and torch.device(device).type == "cpu":
                fn, z = first_batch(fn, batch)  # the rest through onnxruntime where it pays (network/fast.py)
            else:
                z = fn(batch)  # (B, D)
            if flip_tta:
                z = F.normalize(z + fn(torch.flip(batch, dims=[3])), dim=1)
            z = z.float().cpu().numpy()
            if out is None:  # (N, D), or (N, C, H, W) for a backbone's activations: no list of batches to join
                out = np.empty((len(images), *z.shape[1:]), dtype=np.float32)
            out[done : done + len(z)] = z
            done += len(z)
            if progress is not None:
                progress(done, len(images))
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    return out
