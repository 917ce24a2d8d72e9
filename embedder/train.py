"""PxK sampling, online triplet mining, the epoch loop with validation, early stopping and checkpoints."""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .config import EpochStats, IndexConfig, ModelConfig, Progress, TrainConfig
from .embed import DecodedImages, ImageDataset, embed_images
from .errors import Cancelled, EmbedderError
from .evaluate import evaluate_run, open_set, retrieval_metrics
from .folders import MARKER, foreign_entries
from .index import build_index
from .model import EmbeddingNet, freeze_batchnorm, freeze_leading, resolve_device, set_frozen_eval
from .plan import Plan, plan
from .run import Run, write_run
from .transforms import eval_transform, train_transform


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    metrics: dict
    kept: str  # which model the run keeps (an epoch, the network before training, pretrained features) and why
    notes: list[str]


def _miner(name: str, margin: float):
    from pytorch_metric_learning import miners

    if name == "batch-hard":
        return miners.BatchHardMiner()
    return miners.TripletMarginMiner(margin=margin, type_of_triplets=name)


@torch.no_grad()
def batch_stats(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[float, float, float]:
    """Over every valid triplet of a batch: the share violating the margin, mean d(a,p) and mean d(a,n)."""
    d = torch.cdist(embeddings, embeddings)  # (B, B)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    neg = ~same
    valid = pos[:, :, None] & neg[:, None, :]  # (B, B, B): anchor, positive, negative
    active = (d[:, :, None] - d[:, None, :] + margin > 0) & valid
    n_valid = int(valid.sum())
    frac = float(active.sum()) / n_valid if n_valid else 0.0
    ap = float(d[pos].mean()) if pos.any() else 0.0
    an = float(d[neg].mean()) if neg.any() else 0.0
    return frac, ap, an


def _validation_order(pl: Plan) -> np.ndarray:
    """Image rows embedded for validation: validation queries, training gallery, unseen-class images."""
    return np.concatenate([pl.val_idx, pl.train_idx, pl.unseen_val_idx])


def _score_embeddings(emb: np.ndarray, pl: Plan) -> dict:
    """The score that picks the epoch: validation images as queries against the training images, and,
    when classes were held out of training, leave-one-out retrieval among those unseen classes.
    ``emb`` holds the rows of ``_validation_order(pl)``."""
    nv, nt = len(pl.val_idx), len(pl.train_idx)
    labels = pl.images.labels[_validation_order(pl)]
    m = retrieval_metrics(emb[:nv], labels[:nv], emb[nv:nv + nt], labels[nv:nv + nt]) if nv else {}
    scores = [m["map_at_r"]] if "map_at_r" in m else []
    if len(pl.unseen_val_idx):
        u = retrieval_metrics(emb[nv + nt:], labels[nv + nt:], emb[nv + nt:], labels[nv + nt:], leave_one_out=True)
        if "map_at_r" in u:
            m["unseen_map_at_r"], m["unseen_precision_at_1"] = u["map_at_r"], u["precision_at_1"]
            scores.append(u["map_at_r"])
    if scores:
        m["score"] = float(np.mean(scores))
    return m


class _Validator:
    """Embeds the validation images each epoch. The output of the frozen leading stages never changes,
    so it is computed once and kept (when it fits in ``max_bytes``); each epoch then runs only the
    trainable stages and the head."""

    def __init__(self, model: EmbeddingNet, n_frozen: int, pl: Plan, transform, cfg: TrainConfig, device, loader,
                 max_bytes: int = 1 << 30) -> None:
        self.model, self.n_frozen, self.pl, self.cfg, self.device = model, n_frozen, pl, cfg, device
        self.paths = [pl.images.paths[i] for i in _validation_order(pl)]
        self.transform, self.loader = transform, loader
        self.acts = None
        if n_frozen and self.paths:
            side = model.config.image_size
            with torch.no_grad():
                probe = model.backbone.run(torch.zeros(1, 3, side, side, device=device), 0, n_frozen)
            if probe.numel() * 4 * len(self.paths) <= max_bytes:
                self.acts = embed_images(lambda x: model.backbone.run(x, 0, n_frozen), self.paths, transform,
                                         batch_size=cfg.batch_size_embed, device=device, loader=loader)

    @torch.no_grad()
    def features(self) -> np.ndarray:
        """Pooled backbone features (N, F) of the validation order, not normalised."""
        if self.acts is None:
            return embed_images(self.model.backbone, self.paths, self.transform, batch_size=self.cfg.batch_size_embed,
                                device=self.device, loader=self.loader)
        b = self.cfg.batch_size_embed
        out = [self.model.backbone.run(torch.from_numpy(self.acts[i:i + b]).to(self.device), self.n_frozen)
               .mean(dim=(2, 3)).cpu().numpy() for i in range(0, len(self.acts), b)]
        return np.concatenate(out)

    @torch.no_grad()
    def embeddings(self) -> np.ndarray:
        f = torch.from_numpy(self.features()).to(self.device)
        return F.normalize(self.model.head(f), dim=1).cpu().numpy()

    def score(self) -> dict:
        if len(self.pl.val_idx) == 0 and len(self.pl.unseen_val_idx) == 0:
            return {}
        return _score_embeddings(self.embeddings(), self.pl)


@torch.no_grad()
def init_head_pca(head: torch.nn.Linear, features: np.ndarray) -> None:
    """Start the head as the centred PCA projection of the pretrained features (N, F) -> (N, D).

    Pretrained features share a large common component; centring removes it and PCA keeps the
    directions where images differ, so training starts from (usually better than) the pretrained
    geometry instead of a random scramble of it. Components beyond the data's rank start at zero.
    """
    from sklearn.decomposition import PCA

    n_out = head.weight.shape[0]
    k = min(n_out, features.shape[0] - 1, features.shape[1])
    pca = PCA(n_components=k, random_state=0).fit(features)
    weight = torch.zeros_like(head.weight)
    weight[:k] = torch.from_numpy(pca.components_).to(weight)
    head.weight.copy_(weight)
    head.bias.copy_(-(weight @ torch.from_numpy(pca.mean_).to(weight)))


def _score(metrics: dict) -> float:
    """Validation MAP@R; the mean of seen-class and unseen-class MAP@R when classes were held out."""
    return metrics.get("score", float("-inf"))


def work_dir(out: Path) -> Path:
    """Where checkpoints of an unfinished training of ``out`` live (beside it, never inside it)."""
    return out.parent / f".{out.name}.partial"


WORK_FILES = frozenset({MARKER, "checkpoint.pt", "checkpoint.tmp"})


def _resume_key(cfg: TrainConfig) -> dict:
    """The settings a checkpoint must share with the training that resumes it."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("resume", "overwrite")}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint of tensors and plain values only, so it loads with ``weights_only=True``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / MARKER).touch()
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def load_checkpoint(path: Path, cfg: TrainConfig, device) -> dict:
    """Read a checkpoint without running code from it; one line when it is damaged, foreign or for other settings."""
    import pickle

    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise EmbedderError(f"cannot resume: {path} holds objects other than weights, which are never loaded "
                            "(they could run code); drop --resume to start over") from None
    except Exception:
        raise EmbedderError(f"cannot resume: {path} is not a checkpoint; drop --resume to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("config") != _resume_key(cfg):
        raise EmbedderError(f"cannot resume: {path} was written with other settings; drop --resume to start over")
    return ckpt


def remove_work_dir(wd: Path) -> None:
    """Delete the checkpoint folder once the run is written, only if it holds nothing but our files."""
    if wd.is_dir() and (wd / MARKER).is_file() and not foreign_entries(wd, WORK_FILES):
        shutil.rmtree(wd, ignore_errors=True)


def train(
    cfg: TrainConfig,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train an embedder, embed the gallery, build the index, evaluate, and write the run bundle.

    Progress goes out through ``progress``; ``should_stop()`` is polled every step and a True answer
    raises ``Cancelled`` (the previous bundle at ``cfg.out`` is untouched; ``--resume`` continues).
    """
    report = progress or (lambda p: None)
    stop = should_stop or (lambda: False)
    pl = plan(cfg, report)
    for note in pl.notes:
        report(Progress(stage="note", message=note))
    out = Path(cfg.out).expanduser().resolve()
    device = resolve_device(cfg.device)
    mc = pl.model_config

    torch.manual_seed(cfg.seed)
    model = EmbeddingNet(mc).to(device)
    n_frozen = freeze_leading(model.backbone, cfg.freeze_fraction) if mc.pretrained else 0
    head_params = list(model.head.parameters())
    backbone_lr = cfg.backbone_lr if mc.pretrained else cfg.lr
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": backbone_lr}]
    if head_params:
        groups.append({"params": head_params, "lr": cfg.lr})
    optimizer = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    frozen_bn = mc.pretrained and cfg.freeze_bn

    from pytorch_metric_learning import losses, samplers

    loss_fn = losses.TripletMarginLoss(margin=cfg.margin)
    miner = _miner(cfg.miner, cfg.margin)
    eval_tf = eval_transform(mc)
    images = pl.images
    cache = DecodedImages(mc.image_size if mc.resize == "stretch" else round(mc.image_size * 256 / 224))
    train_mask = np.isin(images.labels[pl.train_idx], pl.trainable_classes)
    fit_idx = pl.train_idx[train_mask]
    batch = pl.classes_per_batch * pl.per_class
    dataset = ImageDataset([images.paths[i] for i in fit_idx], images.labels[fit_idx], train_transform(mc), loader=cache)
    length = max(batch, len(fit_idx) - len(fit_idx) % batch)

    # Candidates for the model to keep, scored on validation: the network before training first.
    history: list[dict] = []
    model.eval()
    validator = _Validator(model, n_frozen, pl, eval_tf, cfg, device, cache)
    has_val = len(pl.val_idx) or len(pl.unseen_val_idx)
    if mc.pretrained:
        # One pass of the pretrained backbone initialises the head and scores both candidates.
        feats = validator.features()  # (N, F) in _validation_order
        nv, nt = len(pl.val_idx), len(pl.train_idx)
        if isinstance(model.head, torch.nn.Linear):
            init_head_pca(model.head, feats[nv:nv + nt])
        with torch.no_grad():
            start = F.normalize(model.head(torch.from_numpy(feats).to(device)), dim=1).cpu().numpy()
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        start_val = _score_embeddings(start, pl) if has_val else {}
        pretrained_val = _score_embeddings(feats, pl) if has_val else {}
    else:
        start_val, pretrained_val = validator.score(), {}
    best = {"score": _score(start_val), "state": copy.deepcopy(model.state_dict()), "epoch": 0, "metrics": start_val}
    start_epoch, bad_epochs = 1, 0

    wd = work_dir(out)
    ckpt_path = wd / "checkpoint.pt"
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, cfg, device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        best, history, bad_epochs = ckpt["best"], ckpt["history"], ckpt["bad_epochs"]
        start_epoch = ckpt["epoch"] + 1
        report(Progress(stage="note", message=f"resumed from epoch {ckpt['epoch']}"))
    elif cfg.resume:
        report(Progress(stage="note", message="nothing to resume: starting from the beginning"))

    steps = length // batch
    for epoch in range(start_epoch, cfg.epochs + 1):
        if bad_epochs >= cfg.patience:
            break
        if best["score"] >= 1.0:  # only a strictly better epoch is kept, and none can beat perfect
            report(Progress(stage="note", message=f"validation is perfect at epoch {best['epoch']}: stopping"))
            break
        t0 = time.perf_counter()
        np.random.seed(cfg.seed * 10_007 + epoch)  # MPerClassSampler draws from numpy's global RNG
        torch.manual_seed(cfg.seed * 10_007 + epoch)  # augmentation; per epoch, so --resume repeats exactly
        sampler = samplers.MPerClassSampler(
            dataset.labels, m=pl.per_class, batch_size=batch, length_before_new_iter=length
        )
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True)
        model.train()
        if frozen_bn:
            freeze_batchnorm(model.backbone)
        set_frozen_eval(model.backbone, n_frozen)
        sums = np.zeros(4)
        for step, (x, y) in enumerate(loader, 1):
            if stop():
                raise Cancelled("training cancelled; the previous run is unchanged (use --resume to continue)")
            x, y = x.to(device), y.to(device)
            emb = model(x)  # (B, D)
            loss = loss_fn(emb, y, miner(emb, y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sums += (loss.item(), *batch_stats(emb.detach(), y, cfg.margin))
            report(Progress(stage="train", done=step, total=steps, epoch=epoch, loss=loss.item()))
        model.eval()
        val = validator.score()
        mean = sums / max(1, steps)
        improved = _score(val) > best["score"] or not val
        stats = EpochStats(
            epoch=epoch, loss=float(mean[0]), active_fraction=float(mean[1]), ap_distance=float(mean[2]),
            an_distance=float(mean[3]), val_precision_at_1=float(val.get("precision_at_1", float("nan"))),
            val_map_at_r=float(val.get("map_at_r", float("nan"))), seconds=time.perf_counter() - t0, best=improved,
            val_unseen_map_at_r=val.get("unseen_map_at_r"),
        )
        history.append(stats.to_dict())
        if improved:
            best = {"score": _score(val), "state": copy.deepcopy(model.state_dict()), "epoch": epoch, "metrics": val}
            bad_epochs = 0
        else:
            bad_epochs += 1
        save_checkpoint(ckpt_path, {"config": _resume_key(cfg), "model": model.state_dict(),
                                    "optimizer": optimizer.state_dict(), "best": best, "history": history,
                                    "bad_epochs": bad_epochs, "epoch": epoch})
        report(Progress(stage="epoch", epoch=epoch, done=epoch, total=cfg.epochs, loss=stats.loss, stats=stats))

    # Keep whichever scored best on validation; pretrained features win ties (simpler, no head).
    if pretrained_val and _score(pretrained_val) >= best["score"]:
        kept = (
            f"pretrained features: validation score {_score(pretrained_val):.3f} >= "
            f"{best['score']:.3f} of the best trained epoch ({best['epoch']})"
        )
        mc = ModelConfig(**{**mc.__dict__, "dim": None})
        model = EmbeddingNet(mc).to(device)
    else:
        model.load_state_dict(best["state"])
        kept = f"epoch {best['epoch']}" + (
            f": best validation score {best['score']:.3f}" if best["metrics"] else " (no validation images)"
        )
        if best["epoch"] == 0:
            start = "the pretrained backbone with its PCA head" if mc.pretrained else "the untrained network"
            kept = f"{start}, before triplet training: no epoch beat it on validation (score {best['score']:.3f})"
        if pretrained_val:
            kept += f"; pretrained features scored {_score(pretrained_val):.3f}"
    report(Progress(stage="note", message=f"kept {kept}"))

    def finishing(p: Progress) -> None:
        """Progress of the stages after training; a cancel here still leaves the previous run untouched."""
        if stop():
            raise Cancelled("training cancelled; the previous run is unchanged")
        report(p)

    model.eval()

    gallery_idx = np.sort(np.concatenate([pl.train_idx, pl.val_idx, pl.unseen_val_idx, pl.unseen_test_idx]))
    gallery_paths = [images.paths[i] for i in gallery_idx]
    g_emb = embed_images(
        model, gallery_paths, eval_tf, batch_size=cfg.batch_size_embed, flip_tta=mc.flip_tta, device=device,
        progress=lambda d, t: finishing(Progress(stage="embed", done=d, total=t)),
    )
    finishing(Progress(stage="index", message="building the Annoy index"))
    index = build_index(g_emb, IndexConfig(n_trees=cfg.n_trees, seed=cfg.seed))

    rel = lambda p: str(p.relative_to(images.root))  # noqa: E731
    split = {
        "test": [[rel(images.paths[i]), images.classes[images.labels[i]]] for i in pl.test_idx],
        "val": [[rel(images.paths[i]), images.classes[images.labels[i]]] for i in pl.val_idx],
        "unseen_val": [[rel(images.paths[i]), images.classes[images.labels[i]]] for i in pl.unseen_val_idx],
        "unseen_test": [[rel(images.paths[i]), images.classes[images.labels[i]]] for i in pl.unseen_test_idx],
        "queries_root": str(Path(cfg.queries).expanduser().resolve()) if cfg.queries else None,
    }
    info = {"kept": kept, "notes": pl.notes, "skipped": [str(p) for p, _ in images.skipped],
            "batch": {"classes_per_batch": pl.classes_per_batch, "per_class": pl.per_class}}
    run = Run(
        path=out, model_config=mc, train_config=cfg, classes=images.classes, data_root=images.root,
        gallery_paths=[rel(p) for p in gallery_paths], gallery_labels=images.labels[gallery_idx],
        gallery_embeddings=g_emb, split=split, info={**info, "index": index.stats()}, history=history,
        _model=model, _index=index,
    )
    # Calibrate "unknown" with the final embedding: validation images against the training images.
    row = {int(i): r for r, i in enumerate(gallery_idx)}
    v_rows, t_rows = [row[int(i)] for i in pl.val_idx], [row[int(i)] for i in pl.train_idx]
    calib = open_set(g_emb[v_rows], images.labels[pl.val_idx], g_emb[t_rows], images.labels[pl.train_idx],
                     cfg.target_precision) if v_rows else {}
    unknown = {k: calib[k] for k in ("threshold", "target_precision", "precision", "coverage", "auroc") if k in calib}
    metrics = {"index": index.stats(), "validation": best["metrics"], "validation_pretrained": pretrained_val,
               "validation_untrained": start_val, "kept": kept, "unknown": {**unknown, "calibrated_on": "validation"}}
    if len(pl.test_idx) or cfg.queries:
        metrics["test"] = evaluate_run(run, queries=cfg.queries, device=str(device), progress=finishing,
                                       target_precision=cfg.target_precision)
    finishing(Progress(stage="write", message=f"writing {out}"))
    write_run(
        out, model_state={k: v.cpu() for k, v in model.state_dict().items()}, model_config=mc, train_config=cfg,
        overwrite=cfg.overwrite,
        classes=images.classes, data_root=images.root, gallery_paths=run.gallery_paths,
        gallery_labels=run.gallery_labels, gallery_embeddings=g_emb, split=split, index=index,
        history=history, metrics=metrics, info=info,
    )
    remove_work_dir(wd)
    report(Progress(stage="done", message=str(out)))
    return TrainResult(out, history, metrics, kept, pl.notes)
