"""A run's embedder as an ONNX file that serves anywhere onnxruntime does: the network (with the mirror averaging
the run uses, if any) and the L2 normalisation in the graph, the preprocessing in its metadata, and the proof that
it computes what the run computes, on the run's own validation images."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EmbedderError
from ..progress import Progress, Reporter, Stage, silent
from .input import METADATA_KEY, OnnxInput, transform
from .model import OnnxEmbedder, parse

OPSET = 18
MAX_CHECKED = 256  # validation images embedded both ways
TOLERANCE = 1e-4  # the largest difference between the two embeddings that still counts as "the same network"


@dataclass
class Exported:
    path: Path
    size: int  # bytes
    n_images: int  # validation images both embeddings were compared on
    max_abs_diff: float  # the largest difference between an ONNX and a torch embedding value
    preprocessing: str  # in words, as in the file's doc string


class _Embedder(nn.Module):
    """The run's network as the run applies it: with ``flip``, the normalised sum of the image's embedding and
    its mirror's, exactly as ``embed_images(flip_tta=True)`` computes it."""

    def __init__(self, net: nn.Module, flip: bool) -> None:
        super().__init__()
        self.net, self.flip = net, flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, D)
        z = self.net(x)
        return F.normalize(z + self.net(torch.flip(x, dims=[3])), dim=1) if self.flip else z


def torch_input(run) -> OnnxInput:
    """The preprocessing of a run trained here, in the terms an ONNX file is described by."""
    mc = run.model_config
    return OnnxInput(
        height=mc.image_size,
        width=mc.image_size,
        mean=tuple(mc.mean),
        std=tuple(mc.std),
        resize=mc.resize,
        input_name="images",
        output_name="embedding",
        dim=run.gallery_embeddings.shape[1],
    )


def to_onnx(run) -> tuple[bytes, OnnxInput]:
    """The run's network as ONNX bytes (weights inside), batch size dynamic, and its preprocessing."""
    if run.onnx is not None:  # imported: the stored graph is the network
        return run.model().data, run.onnx
    inp = torch_input(run)
    module = _Embedder(run.model("cpu"), run.model_config.flip_tta).eval()
    example = torch.zeros(2, 3, inp.height, inp.width)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its steps on stdout
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            external_data=False,
            opset_version=OPSET,
            input_names=[inp.input_name],
            output_names=[inp.output_name],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto.SerializeToString(), inp


def with_metadata(data: bytes, inp: OnnxInput, run) -> bytes:
    """``data`` with the preprocessing written into the model's metadata (machine-readable, and in words)."""
    model = parse(data)
    meta = {p.key: p.value for p in model.metadata_props}
    meta[METADATA_KEY] = json.dumps({k: v for k, v in inp.to_dict().items() if k not in ("dim",)})
    meta["embedder.classes"] = json.dumps(run.classes)
    meta["embedder.run"] = run.name
    del model.metadata_props[:]
    for key, value in sorted(meta.items()):
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"Image embedder from run {run.name}. Preprocessing: {inp.describe()}."
    return model.SerializeToString()


def check(run, data: bytes, inp: OnnxInput, report: Reporter) -> tuple[int, float]:
    """(images compared, max abs difference): the file run by onnxruntime against the run's own network on up to
    MAX_CHECKED validation images (held-out test images when the run has no validation images)."""
    paths = (run.queries("val")[0] or run.queries("test")[0] or run.gallery_files())[:MAX_CHECKED]
    progress = lambda what: lambda d, t: report(Progress(Stage.EVALUATE, done=d, total=t, message=what))
    # the network's own outputs: a run's centre (network/centre.py) is the run's, not the file's
    want = run.embed(paths, progress=progress("embedding with the run's network"), fn=run.model())
    from ..network.embed import embed_images

    onnx = OnnxEmbedder(data, inp)
    got = embed_images(
        onnx, paths, transform(inp), batch_size=run.train_config.batch_size_embed, progress=progress("with onnx")
    )
    return len(paths), float(np.abs(got - want).max())


def export_model(run, out: str | os.PathLike, overwrite: bool = False, progress: Reporter | None = None) -> Exported:
    """Write ``run``'s embedder to ``out`` (an .onnx file), then check it against the run.

    Raises:
        EmbedderError: ``out`` exists (without ``overwrite``) or is a folder, or the file does not compute the
            run's embeddings (differences above TOLERANCE).
    """
    report = progress or silent
    out = Path(out).expanduser().resolve()
    if out.is_dir() or (out.exists() and not overwrite):
        raise EmbedderError(f"--out {out} exists: choose another file, or pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    report(Progress(Stage.WRITE, message="exporting the network to ONNX"))
    data, inp = to_onnx(run)
    data = with_metadata(data, inp, run)
    n, diff = check(run, data, inp, report)
    if not diff <= TOLERANCE:
        raise EmbedderError(f"the exported model differs from the run by up to {diff:.2e} (over {TOLERANCE:g})")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        os.fchmod(fd, 0o644)  # readable as any file the user writes, not mkstemp's owner-only
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Exported(out, len(data), n, diff, inp.describe())
