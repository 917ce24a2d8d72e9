"""Images -> embeddings on a Ray cluster: a pool of actors each holding the network, written as shards on disk.

``embed_with_ray`` reads the image list as a Ray Dataset, runs ``map_batches`` with a callable class (``_Embedder``:
the network rebuilt from its ModelConfig and weights, one per actor, on a GPU when the cluster has them), and
writes each block it gets back as one shard (``part-<n>.npz``: the rows it holds, their embeddings and which actor
embedded them).
``read_shards`` puts them back together in the input order. Each actor embeds exactly as ``embed.embed_images``
does, with the same transform, mirror averaging and decoding bounds, so the result is the single-process one.

Ray is optional (``pip install 'ray[data]'``): it is imported only here, and only when asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import EmbedderError

SHARD_MARKER = ".embedder-shards"  # marks a folder of shards: read_shards reads no other
ROWS_PER_BLOCK = 1024  # images per Ray block: one shard each, and the unit of work an actor takes


def import_ray():
    """``ray``, or one line saying how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401 (the extra that --ray needs)
    except ImportError:
        raise EmbedderError("Ray is not installed: pip install 'ray[data]' (only --ray needs it)") from None
    return ray


class _Embedder:
    """One actor of the pool: the network built once, then batches of {"row", "path"} -> {"row", "embedding",
    "error"}. An image that cannot be read fails its batch with the reason in "error" (one line naming the file):
    an exception would reach the caller only as Ray's wrapper of a traceback."""

    def __init__(self, config: ModelConfig, weights: list, batch_size: int, threads: int, gpu: bool) -> None:
        import ray
        import torch

        from ..images.transforms import eval_transform
        from .model import EmbeddingNet

        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
        state = ray.get(weights[0])  # numpy arrays from the object store, shared by the actors of a node
        net = EmbeddingNet(config, load_pretrained=False)
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        self.net, self.transform = net.to(self.device).eval(), eval_transform(config)
        self.batch_size, self.flip_tta = batch_size, config.flip_tta
        self.dim = config.dim or net.backbone.out_features
        self.actor = ray.get_runtime_context().get_actor_id()  # recorded in its shards: which actor embedded what

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .embed import embed_images

        n = len(batch["row"])
        try:
            emb = embed_images(  # (B, D)
                self.net,
                [str(p) for p in batch["path"]],
                self.transform,
                batch_size=self.batch_size,
                flip_tta=self.flip_tta,
                device=self.device,
            )
        except EmbedderError as exc:
            emb, error = np.zeros((n, self.dim), np.float32), str(exc)
        else:
            error = ""
        return {"row": batch["row"], "embedding": emb, "error": [error] * n, "actor": [self.actor] * n}


@dataclass
class Pool:
    """How many actors embed, and what each holds."""

    workers: int
    cpus: float  # per actor
    gpus: float  # per actor: 1 on a cluster with GPUs, else 0


def plan_pool(resources: dict, workers: int | None = None, cpus_per_worker: int = 1) -> Pool:
    """One actor per GPU when the cluster has GPUs, else one per ``cpus_per_worker`` CPUs; ``workers`` caps it."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    most = gpus if gpus else max(1, cpus // cpus_per_worker)
    n = most if workers is None else max(1, min(workers, most))
    return Pool(n, 1 if gpus else cpus_per_worker, 1 if gpus else 0)


def _new_shard_folder(out: Path) -> Path:
    """``out`` as an empty folder of ours; an existing folder that is not empty is never written into."""
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EmbedderError(f"{out} already exists and is not an empty folder: choose a new folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARD_MARKER).write_text("embedder embedding shards: part-<n>.npz holds rows, embeddings, actors\n")
    return out


def _write_shard(out: Path, n: int, block: dict[str, np.ndarray]) -> None:
    tmp = out / f".part-{n:06d}.tmp.npz"
    actors = np.asarray(block["actor"], dtype=str)
    np.savez(tmp, rows=block["row"].astype(np.int64), embeddings=block["embedding"].astype(np.float32), actors=actors)
    tmp.replace(out / f"part-{n:06d}.npz")


def _connect(ray, address: str | None, num_cpus: int | None) -> bool:
    """Join the cluster at ``address`` (or the one already joined), or start a local one; True if we started it."""
    import logging

    ray.data.DataContext.get_current().enable_progress_bars = False  # progress leaves through the caller's callback
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-run notes would bury the CLI's own lines
    if ray.is_initialized():
        return False
    kw = dict(logging_level=logging.ERROR, log_to_driver=False)
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **kw)
    return True


def embed_with_ray(
    config: ModelConfig,
    state_dict: dict,
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Embed image files on a Ray cluster into shards under ``out`` (a new or empty folder); see ``read_shards``.

    Args:
        config, state_dict: the network (``EmbeddingNet(config)`` with these weights); its transform and mirror
            averaging come from ``config``, as in ``embed.embed_images``.
        paths: N image files every node can read (a shared file system on a real cluster).
        address: a running cluster ("auto", "ray://head:10001", ...); None (or "") joins the one this process
            already joined or RAY_ADDRESS names, else starts a local instance with ``workers * cpus_per_worker``
            CPUs (all of them by default) for the length of the call.
        workers: actors to run (default: one per GPU, else one per ``cpus_per_worker`` CPUs).
        batch_size: images per forward pass inside an actor.
        progress: called with (images done, N) as shards arrive.

    Returns:
        ``out``, holding ``part-<n>.npz`` shards that cover the N rows once each.

    Raises:
        EmbedderError: Ray missing, ``out`` not new, or an image that cannot be read (named).
    """
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS")  # where ``ray start`` and Ray's own tools look too
    out = _new_shard_folder(Path(out))
    started = _connect(ray, address, workers * cpus_per_worker if workers else None)
    try:
        pool = plan_pool(ray.cluster_resources(), workers, cpus_per_worker)
        _write_shards(_embedded(ray, pool, config, state_dict, paths, batch_size), out, len(paths), progress)
    finally:
        if started:
            ray.shutdown()
    return out


def _embedded(ray, pool: Pool, config: ModelConfig, state_dict: dict, paths: Sequence, batch_size: int):
    """A lazy Ray dataset of the rows' embeddings (or errors), computed by ``pool``'s actors as it is read."""
    weights = ray.put({k: v.detach().cpu().numpy() for k, v in state_dict.items()})
    items = [{"row": i, "path": str(p)} for i, p in enumerate(paths)]
    # enough blocks to keep every actor busy, none bigger than ROWS_PER_BLOCK
    n_blocks = max(1, min(len(items), max(4 * pool.workers, math.ceil(len(items) / ROWS_PER_BLOCK))))
    return ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
        _Embedder,
        fn_constructor_kwargs=dict(
            config=config, weights=[weights], batch_size=batch_size, threads=int(pool.cpus), gpu=pool.gpus > 0
        ),
        batch_size=math.ceil(len(items) / n_blocks),
        compute=ray.data.ActorPoolStrategy(size=pool.workers),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus,
        batch_format="numpy",
    )


def _write_shards(ds, out: Path, total: int, progress: Callable[[int, int], None] | None) -> None:
    """Each block of ``ds`` into a shard as it arrives; the first image that failed stops it, named."""
    done = 0
    for n, block in enumerate(ds.iter_batches(batch_size=None, batch_format="numpy")):
        failed = [e for e in block["error"] if e]
        if failed:
            raise EmbedderError(str(failed[0]))
        _write_shard(out, n, block)
        done += len(block["row"])
        if progress is not None:
            progress(done, total)


def read_shards(folder: str | os.PathLike) -> np.ndarray:
    """The embeddings of a shard folder in the input order: (N, D) float32, every row present once.

    Raises:
        EmbedderError: not a shard folder, or rows missing or repeated (an interrupted or mixed-up folder).
    """
    folder = Path(folder)
    if not (folder / SHARD_MARKER).is_file():
        raise EmbedderError(f"{folder} is not a folder of embedding shards")
    rows, embs = [], []
    for shard in sorted(folder.glob("part-*.npz")):
        with np.load(shard, allow_pickle=False) as f:
            rows.append(f["rows"])
            embs.append(f["embeddings"])
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    row, emb = np.concatenate(rows), np.concatenate(embs)
    order = np.argsort(row, kind="stable")
    if not np.array_equal(row[order], np.arange(len(row))):
        raise EmbedderError(f"{folder}: the shards do not cover rows 0..N-1 once each; embed again into a new folder")
    return emb[order]


def embeddings_with_ray(
    model, paths: Sequence[str | os.PathLike], *, scratch: str | os.PathLike | None = None, **kw
) -> np.ndarray:
    """What ``embed.embed_images(model, paths, eval_transform(model.config), flip_tta=model.config.flip_tta)``
    returns, (N, D) float32 in the order of ``paths``, computed by ``embed_with_ray`` (``kw``: its options).

    The shards go to a temporary folder (in ``scratch``, else the system's) that is removed afterwards.
    """
    import tempfile

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="embedder-shards-", dir=scratch) as tmp:
        return read_shards(embed_with_ray(model.config, state, paths, Path(tmp) / "shards", **kw))
