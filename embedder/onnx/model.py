"""An embedder trained elsewhere, as an ONNX file: read it within bounds, read its input and output from the graph,
and run it with onnxruntime on the images the rest of the program hands to any network (preprocessed as
``onnx_input.py`` says).

Only onnxruntime executes the file, in a worker process with time and memory limits (sandbox.py): no pickle, no
Python from the file, no custom operators (a node outside the standard ONNX domains is refused), no tensor stored
in an external file anywhere in the graph (a path could name any file on the server).

Environment:
    EMBEDDER_MAX_ONNX_MB  the largest ONNX file accepted, in MB (default 1024)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import EmbedderError, one_line
from .sandbox import Sandbox

if TYPE_CHECKING:
    from .input import OnnxInput

MAX_MB_ENV = "EMBEDDER_MAX_ONNX_MB"
MAX_MB = 1024
MAX_NODES = 200_000  # ResNet-152 has about 500; a graph this big is not an image embedder
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64, 2: np.uint8}  # ONNX TensorProto element types we feed


def max_bytes() -> int:
    """The size limit of an ONNX file: ``EMBEDDER_MAX_ONNX_MB`` when set, else ``MAX_MB``."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    try:
        mb = float(raw) if raw else MAX_MB
    except ValueError:
        mb = 0
    if mb <= 0:
        raise EmbedderError(f"{MAX_MB_ENV} must be a positive number of MB, got {one_line(raw, 40)!r}")
    return int(mb * 1024 * 1024)


def _refuse(why: str) -> EmbedderError:
    return EmbedderError(f"not a usable ONNX model: {why}")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, refused before reading when it is over the size limit."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EmbedderError(f"ONNX model not found: {path}")
    limit = max_bytes()
    if path.stat().st_size > limit:
        raise _refuse(
            f"{path.name} is {path.stat().st_size / 2**20:.0f} MB, over the {limit // 2**20} MB limit "
            f"(raise {MAX_MB_ENV} to allow it)"
        )
    return path.read_bytes()


def parse(data: bytes):
    """Bytes -> a checked ``onnx.ModelProto``: within the size and node limits, valid for ``onnx.checker``, only
    standard operator domains, and every weight inside the file.

    Raises:
        EmbedderError: one line saying what is wrong.
    """
    import onnx
    from google.protobuf.message import DecodeError

    if len(data) > max_bytes():
        raise _refuse(f"{len(data) / 2**20:.0f} MB is over the {max_bytes() // 2**20} MB limit")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError):
        raise _refuse("the file is not an ONNX model (it does not parse)") from None
    if not model.HasField("graph") or not model.graph.node:
        raise _refuse("the file holds no graph")
    custom = sorted({o.domain for o in model.opset_import if o.domain not in STANDARD_DOMAINS})
    custom += sorted({n.domain for n in _nodes(model.graph) if n.domain not in STANDARD_DOMAINS} - set(custom))
    if custom or model.functions:
        raise _refuse(f"custom operators ({', '.join(custom) or 'local functions'}) are not run")
    if sum(1 for _ in _nodes(model.graph)) > MAX_NODES:
        raise _refuse(f"the graph has more than {MAX_NODES:,} nodes")
    outside = (t for t in _tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data)
    external = next(outside, None)
    if external is not None:
        raise _refuse(
            f"tensor {one_line(external.name or '(unnamed)', 60)!r} is stored in a separate file, which is never "
            "read (a path in a model could name any file on the server); export it with the weights inside "
            "(external_data=False)"
        )
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise _refuse(f"onnx.checker: {one_line(str(exc).strip().splitlines()[0], 120)}") from None
    return model


def _tensors(message):
    """Every TensorProto anywhere in ``message``: initializers, sparse initializers (values and indices), the
    tensors of every node attribute (``Constant``'s value, ``ConstantOfShape``'s, any other), inside every subgraph,
    local function and training graph. Found by walking the message fields, so no place is forgotten."""
    import onnx

    if isinstance(message, onnx.TensorProto):
        yield message
        return
    for f in message.DESCRIPTOR.fields:
        if f.type != f.TYPE_MESSAGE:
            continue
        if f.is_repeated:
            for item in getattr(message, f.name):
                yield from _tensors(item)
        elif message.HasField(f.name):
            yield from _tensors(getattr(message, f.name))


def _nodes(graph):
    """Every node of ``graph`` and of the subgraphs inside it (If, Loop, Scan)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _nodes(g)


@dataclass
class GraphInput:
    """What the graph says about its input and output."""

    name: str
    shape: list  # int for a fixed dimension, None for a dynamic one
    elem_type: int
    output_name: str
    output_shape: list
    last_op: str  # the operator that produces the output (Softmax suggests class scores)
    metadata: dict  # the file's metadata_props


def graph_input(model) -> GraphInput:
    """The single image input and the first output of ``model``.

    Raises:
        EmbedderError: not one input of rank 4, or an element type that is not a number we can feed.
    """
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise _refuse(f"it takes {len(inputs)} inputs; an image embedder takes one batch of images")
    tensor = inputs[0].type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
    if len(shape) != 4:
        raise _refuse(f"its input has rank {len(shape)}; expected a batch of images (rank 4, NCHW or NHWC)")
    if tensor.elem_type not in _DTYPES:
        raise _refuse("its input is not a float or uint8 tensor")
    out = model.graph.output[0]
    producer = next((n.op_type for n in model.graph.node if out.name in n.output), "")
    out_shape = [d.dim_value if d.HasField("dim_value") else None for d in out.type.tensor_type.shape.dim]
    meta = {p.key: p.value for p in model.metadata_props}
    return GraphInput(inputs[0].name, shape, tensor.elem_type, out.name, out_shape, producer, meta)


class OnnxEmbedder:
    """An ONNX network as the rest of the program calls a torch embedder: (B, C, H, W) -> (B, D) unit vectors.

    The graph runs in a sandboxed worker process (sandbox.py), started on first use and reused. The output,
    whatever its rank, is flattened per image and L2-normalised; an output of NaN or infinity is refused. A graph
    with a fixed batch size is fed that many images at a time.
    """

    config = None  # the ModelConfig a run records for it (backbone "onnx"), set by the import

    def __init__(self, data: bytes, inp: OnnxInput, model=None, name: str = "the ONNX model") -> None:
        model = model if model is not None else parse(data)
        g = graph_input(model)
        self.data, self.input, self.fixed_batch, self.name = data, inp, g.shape[0], name
        self.dtype = _DTYPES[g.elem_type]
        self.sandbox = Sandbox(data, name, threads=max(1, torch.get_num_threads()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) preprocessed images -> (B, D) float32 unit vectors, on ``x``'s device.

        Raises:
            EmbedderError: the graph failed or broke a limit (sandbox.py), or gave NaN or infinity.
        """
        a = x.detach().cpu().numpy()
        if self.input.layout == "nhwc":
            a = a.transpose(0, 2, 3, 1)  # (B, H, W, C)
        a = np.ascontiguousarray(a.round() if self.dtype == np.uint8 else a).astype(self.dtype)
        step = self.fixed_batch or len(a)
        z = np.concatenate([self._run(a[i : i + step]) for i in range(0, len(a), step)])  # (B, D)
        bad = int((~np.isfinite(z).all(axis=1)).sum())
        if bad:
            raise EmbedderError(f"{self.name} outputs NaN or infinity for {bad} of {len(z)} images: no embedding")
        return F.normalize(torch.from_numpy(z), dim=1).to(x.device)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One batch -> (B, D): the first output, flattened per image."""
        n = len(batch)
        if self.fixed_batch and n < self.fixed_batch:  # pad the last batch up to the graph's fixed size
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.fixed_batch - n, axis=0)])
        return self.sandbox.run(batch, self.input.input_name, self.input.output_name)[:n]

    def to(self, device) -> OnnxEmbedder:
        """onnxruntime runs on the CPU here; inputs come back from any device and outputs go back to it."""
        return self


def probe(net: OnnxEmbedder) -> int:
    """Run ``net`` on three different images (flat grey, seeded noise, a gradient) and return its output size.

    Raises:
        EmbedderError: it fails, breaks a limit, gives NaN, or gives the same output for all three (zeros, say):
        such a network cannot tell images apart.
    """
    c = 1 if net.input.channels == "gray" else 3
    h, w = net.input.height, net.input.width
    noise = torch.rand((1, c, h, w), generator=torch.Generator().manual_seed(0))
    ramp = torch.linspace(0, 1, w).expand(1, c, h, w)
    z = net(torch.cat([torch.full((1, c, h, w), 0.5), noise, ramp]))  # (3, D)
    if float((z - z[0]).abs().max()) < 1e-6:
        raise EmbedderError(
            f"{net.name} gives the same output for different images"
            + (" (all zeros)" if not float(z.abs().max()) else "")
            + ": it cannot tell images apart"
        )
    return z.shape[1]
