"""From an embedder trained elsewhere (an ONNX file) and an image folder to a run bundle, stage by stage:

    read the graph -> plan (scan, split) -> embed the gallery -> index -> calibrate -> evaluate -> write

The same splits, index, calibration and evaluation as a run trained here (both finish through ``finish.py``), so
``predict``, ``evaluate``, ``project`` and the app treat the result as any other run; only the network comes from
the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..answers import novelty
from ..config import IMPORTED, MAX_DIM, ONNX_IMAGE_SIZE, ModelConfig, TrainConfig
from ..errors import EmbedderError
from ..network.centre import describe as describe_centring
from ..onnx.input import CHANNELS, LAYOUTS, RESIZES, SCALES, AskedInput, OnnxInput, resolve_input
from ..onnx.input import transform as onnx_transform
from ..onnx.model import OnnxEmbedder, graph_input, parse, probe
from ..progress import Progress, Reporter, Stage, silent
from ..runs.lock import training, writing
from ..runs.records import Evaluation
from ..runs.run import gallery_rows
from ..settings import check_settings, setting
from ..training.plan import Plan, check_folders, plan
from ..training.train import Fitted
from .finish import TrainResult, assemble_run, evaluate_into, guarded, write_run


def _as_in_train(name: str):
    """A field described exactly as TrainConfig's ``name`` (same default, help and range): described once."""
    f = next(f for f in fields(TrainConfig) if f.name == name)
    return field(default=f.default, metadata=f.metadata)


@dataclass
class ImportConfig:
    """Importing an ONNX embedder: the data it labels, how images become its input, and the evaluation."""

    data: str = _as_in_train("data")
    out: str = _as_in_train("out")
    image_size: int | None = field(default=None, metadata={"setting": ONNX_IMAGE_SIZE})
    layout: str = setting(
        "auto", "input layout: auto reads it from the graph's input shape", choices=("auto", *LAYOUTS), label="Layout"
    )
    scale: str = setting(
        "auto",
        "pixel range the network expects: 0-1 (PyTorch, Keras with a 1/255 step), -1-1, 0-255 (Keras with a "
        "Rescaling layer inside); auto = what an exported file says, else 0-1",
        choices=("auto", *SCALES),
        label="Pixel scale",
        main=True,
    )
    mean: str = setting("", "per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406 (default 0)")
    std: str = setting("", "per-channel std divided by after the mean, e.g. 0.229,0.224,0.225 (default 1)")
    channels: str = setting(
        "auto",
        "colour order: auto = gray for a 1-channel input, else RGB",
        choices=("auto", *CHANNELS),
        label="Channels",
    )
    resize: str = setting(
        "auto",
        "stretch to the input size, or crop (short side, then the centre); auto = what an exported file says, "
        "else stretch",
        choices=("auto", *RESIZES),
        label="Resize",
    )
    test_fraction: float = _as_in_train("test_fraction")
    val_fraction: float = _as_in_train("val_fraction")
    unseen_classes: float | None = _as_in_train("unseen_classes")
    k: int | None = _as_in_train("k")
    target_precision: float = _as_in_train("target_precision")
    n_trees: int = _as_in_train("n_trees")
    batch_size_embed: int = _as_in_train("batch_size_embed")
    seed: int = _as_in_train("seed")
    pretrained_baseline: bool = setting(
        True,
        "also compare with this project's ImageNet-pretrained backbone (EfficientNet-Lite0 at 224 px: the "
        "slowest part of an import on a CPU)",
        label="Compare with the pretrained backbone",
    )
    overwrite: bool = _as_in_train("overwrite")

    def validate(self) -> None:
        """Raises EmbedderError naming the first setting out of its range or choices."""
        problem = check_settings(self)
        if problem:
            raise EmbedderError(problem)
        self.numbers("mean"), self.numbers("std")

    def numbers(self, name: str) -> tuple[float, ...] | None:
        """``--mean``/``--std`` as numbers; None when not given."""
        text = getattr(self, name).strip()
        if not text:
            return None
        try:
            values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
        except ValueError:
            values = ()
        if len(values) not in (1, 3):
            raise EmbedderError(f"--{name} takes 1 or 3 numbers separated by commas, got {text!r}")
        return values

    def train_config(self) -> TrainConfig:
        """The TrainConfig whose plan (splits, checks on --out and the data) the import shares: no epochs."""
        shared = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name in {g.name for g in fields(TrainConfig)}
        }
        return TrainConfig(**{**shared, "epochs": 0, "device": "cpu"})

    def onnx_input(self, g) -> OnnxInput:
        auto = lambda v: None if v == "auto" else v
        asked = AskedInput(
            image_size=self.image_size,
            layout=self.layout,
            channels=self.channels,
            scale=auto(self.scale),
            mean=self.numbers("mean"),
            std=self.numbers("std"),
            resize=auto(self.resize),
        )
        return resolve_input(g, asked)


def read_network(data: bytes, cfg: ImportConfig, name: str) -> tuple[OnnxEmbedder, list[str]]:
    """The network, ready to run, and what the user should know about its output. Checked before any image is
    scanned: a bad file or a bad setting costs nothing."""
    model = parse(data)
    g = graph_input(model)
    net = OnnxEmbedder(data, cfg.onnx_input(g), model, name=name)
    net.input.dim = probe(net)  # the graph loaded and run in its sandbox: a graph that never ends stops here
    if not 2 <= net.input.dim <= MAX_DIM:
        raise EmbedderError(f"{name} outputs {net.input.dim} value(s) per image: an embedding needs 2 to {MAX_DIM}")
    notes = [f"imported {name}: {net.input.describe()}"]
    if g.last_op in ("Softmax", "LogSoftmax", "Sigmoid"):
        notes.append(
            f"{name} ends in {g.last_op}: its output looks like class scores, not an embedding; neighbours are "
            "searched among those scores (an embedding layer before the classifier usually labels new classes better)"
        )
    if len(g.output_shape) != 2:
        notes.append(f"its output has rank {len(g.output_shape)}; each image's output was flattened to {net.input.dim}")
    net.config = ModelConfig(
        backbone=IMPORTED,
        dim=net.input.dim,
        image_size=max(net.input.height, net.input.width),
        resize=net.input.resize,
        flip_tta=False,
    )
    return net, notes


def embed_gallery(pl: Plan, net: OnnxEmbedder, cfg: ImportConfig, report: Reporter):
    """(gallery rows into the plan's images (N,), their embeddings (N, D), the centre they were moved by or None,
    what decided it) with the imported network: outputs that share a common offset are centred by the gallery
    mean (``network.centre``), which the run keeps for its queries."""
    from ..network.centre import centred, choose_centre
    from ..network.embed import embed_images

    rows = gallery_rows(pl.parts)
    emb = embed_images(
        net,
        [pl.images.paths[i] for i in rows],
        onnx_transform(net.input),
        batch_size=cfg.batch_size_embed,
        progress=lambda d, t: report(Progress(Stage.EMBED, done=d, total=t)),
    )
    if len(emb) > 1 and float(np.ptp(emb, axis=0).max()) < 1e-6:
        raise EmbedderError(f"{net.name} gives the same output for all {len(emb)} images: it cannot tell them apart")
    centre, measured = choose_centre(emb, pl.images.labels[rows], cfg.seed)
    return rows, centred(emb, centre), centre, measured


def baseline_model(pl: Plan, cfg: ImportConfig) -> ModelConfig | None:
    """The project's pretrained backbone as the plan would set it up for photos of this data (ImageNet
    weights, 224 px, its own normalisation), or None when not asked for or its weights are not installed."""
    from ..network.model import pretrained_available
    from ..training.plan import choose_model

    if not cfg.pretrained_baseline or not pretrained_available("efficientnet_lite0"):
        return None
    tc = TrainConfig(data=cfg.data, backbone="efficientnet_lite0", pretrained=True, dim=None)
    return choose_model(tc, pl.images)[0]


def verdict(test: Evaluation) -> str:
    """One plain sentence: does the imported network label held-out images better than each baseline?"""
    from ..answers.metrics import wilson_interval

    acc, n = test.knn_accuracy, test.n_queries or 0
    if acc is None or not test.baselines:
        return "no held-out queries were scored, so it was not compared with the baselines"
    low, high = wilson_interval(round(acc * n), n)
    parts = []
    for name, b in test.baselines.items():
        other, what = b.knn_accuracy, name.replace("_", " ")
        if other is None:
            continue
        if other < low:
            word = "beats"
        elif other > high:
            word = "does NOT beat"
        else:
            word = "cannot be told apart (95% interval) from"
        parts.append(f"{word} {what} ({acc:.3f} vs {other:.3f})")
    return f"label accuracy on {n} held-out images: the imported model " + "; ".join(parts)


def import_model(
    model: bytes,
    cfg: ImportConfig,
    name: str = "model.onnx",
    progress: Reporter | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Embed ``cfg.data`` with the ONNX network ``model`` (its bytes) and write a run bundle to ``cfg.out``.

    Raises:
        EmbedderError: not a usable ONNX file, a setting the graph contradicts, or the data or --out refused.
    """
    report, stop = progress or silent, should_stop or (lambda: False)
    cfg.validate()
    tc = cfg.train_config()
    net, notes = read_network(model, cfg, name)  # a bad file or setting costs nothing: no folder is made for it
    out = Path(tc.out).expanduser().resolve()
    try:
        check_folders(tc)  # a folder of the user's is refused before a lock file is made beside it
        # One writer per run, from the check of --out to the swap into place; and never over a training under way
        with training(out), writing(out, report):
            return _import(net, notes, cfg, tc, guarded(report, stop), report)
    finally:
        net.sandbox.close()  # the run is written: its worker process is not needed any more


def _import(
    net: OnnxEmbedder, notes: list[str], cfg: ImportConfig, tc: TrainConfig, report: Reporter, unguarded: Reporter
) -> TrainResult:
    name = net.name
    pl = plan(tc, unguarded)
    notes = [*pl.notes, *notes]
    for note in notes:
        unguarded(Progress(Stage.NOTE, message=note))
    rows, emb, centre, centring = embed_gallery(pl, net, cfg, report)
    notes.append(describe_centring(centring))
    unguarded(Progress(Stage.NOTE, message=notes[-1]))
    kept = f"imported from {name} ({net.input.dim}-d output)"
    run = assemble_run(pl, tc, Fitted(net, kept, []), rows, emb, report)
    run.onnx, run.info["notes"], run.info["centring"] = net.input, notes, centring
    run.centre = centre  # queries are read as the gallery was: from here on (novelty, evaluation, predict)
    baseline = baseline_model(pl, cfg)
    if baseline is not None:
        run.info["baseline_model"] = baseline.to_dict()
    novelty.build(run, report, tc.seed)
    test = evaluate_into(run, pl, run.train_config, report)
    if test is not None:
        notes.append(verdict(Evaluation.of(test)))
        report(Progress(Stage.NOTE, message=notes[-1]))
    write_run(run, report, tc.overwrite)
    report(Progress(Stage.DONE, message=str(run.path)))
    return TrainResult(run.path, [], run.metrics, kept, notes)
