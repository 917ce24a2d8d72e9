"""How an image becomes an ONNX network's input: the preprocessing a run records (``OnnxInput``), learnt from what
was asked for, the file's own metadata and its input's shape (``resolve_input``), and applied to a PIL image
(``transform``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torchvision import transforms as T

from ..config import MAX_DIM, MAX_SIDE
from ..errors import EmbedderError
from .model import GraphInput

LAYOUTS, SCALES, CHANNELS, RESIZES = (
    ("nchw", "nhwc"),
    ("0-1", "-1-1", "0-255"),
    ("rgb", "bgr", "gray"),
    ("stretch", "crop"),
)
METADATA_KEY = "embedder.preprocessing"  # export writes the preprocessing here; import reads it as defaults
_SCALE = {"0-1": (1.0, 0.0), "-1-1": (2.0, -1.0), "0-255": (255.0, 0.0)}  # pixel in [0, 1] -> a * x + b
_RANGE = {"0-1": "[0, 1]", "-1-1": "[-1, 1]", "0-255": "[0, 255]"}


@dataclass
class OnnxInput:
    """How an image becomes the network's input; saved in the run's config.json (``onnx``) and in exported files.

    An RGB image is resized to ``height`` x ``width``, its channels reordered (or averaged to gray), its pixels
    mapped from [0, 1] to ``scale``, then ``(x - mean) / std`` per channel, and laid out as ``layout``.
    """

    height: int
    width: int
    layout: str = "nchw"  # nchw (PyTorch) or nhwc (Keras / TensorFlow)
    channels: str = "rgb"  # rgb, bgr (OpenCV / Caffe) or gray (one channel)
    scale: str = "0-1"  # the pixel range before mean/std: 0-1, -1-1 or 0-255
    mean: tuple[float, ...] = (0.0,)  # one value per channel, or one for all
    std: tuple[float, ...] = (1.0,)
    resize: str = "stretch"  # stretch to the size, or crop: short side to size * 256/224, then the centre
    input_name: str = "input"
    output_name: str = "output"
    dim: int = 0  # values per image after flattening the output

    def problem(self) -> str | None:
        """Why these settings cannot describe a network's input (read from a file, so anything may be in it)."""
        n = 1 if self.channels == "gray" else 3
        checks = [
            (8 <= self.height <= MAX_SIDE and 8 <= self.width <= MAX_SIDE, f"input side out of [8, {MAX_SIDE}]"),
            (self.layout in LAYOUTS, f"unknown layout '{self.layout}'"),
            (self.channels in CHANNELS, f"unknown channels '{self.channels}'"),
            (self.scale in SCALES, f"unknown scale '{self.scale}'"),
            (self.resize in RESIZES, f"unknown resize '{self.resize}'"),
            (len(self.mean) in (1, n) and len(self.std) in (1, n), f"mean and std need 1 or {n} values"),
            (all(s > 0 for s in self.std), "std must be positive"),
            (0 <= self.dim <= MAX_DIM, f"embedding size out of [0, {MAX_DIM}]"),
        ]
        return next((message for ok, message in checks if not ok), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def describe(self) -> str:
        """One line a person can reproduce the preprocessing from."""
        crop = "resize the short side to size*256/224 and centre-crop" if self.resize == "crop" else "resize"
        return (
            f"{crop} to {self.height}x{self.width} (HxW), {self.channels.upper()}, pixels scaled to "
            f"{_RANGE[self.scale]}, then (x - {list(self.mean)}) / "
            f"{list(self.std)} per channel, layout {self.layout.upper()} float32; output flattened, L2-normalised"
        )


def transform(inp: OnnxInput) -> T.Compose:
    """PIL RGB image -> (C, H, W) float tensor, preprocessed as ``inp`` says (the layout is applied later, by
    ``OnnxEmbedder``, so the mirror-averaging of ``embed_images`` still flips the width axis)."""
    a, b = _SCALE[inp.scale]
    n = 1 if inp.channels == "gray" else 3
    mean = torch.tensor(inp.mean * (n // len(inp.mean)), dtype=torch.float32).view(n, 1, 1)
    std = torch.tensor(inp.std * (n // len(inp.std)), dtype=torch.float32).view(n, 1, 1)
    size = (inp.height, inp.width)
    resize = [T.Resize(int(round(min(size) * 256 / 224))), T.CenterCrop(size)] if inp.resize == "crop" else []

    def finish(x: torch.Tensor) -> torch.Tensor:  # (3, H, W) in [0, 1]
        if inp.channels == "bgr":
            x = x.flip(0)
        elif inp.channels == "gray":
            x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)  # (1, H, W), ITU-R 601 luma as PIL's "L"
        return (a * x + b - mean) / std

    return T.Compose([*(resize or [T.Resize(size)]), T.ToTensor(), T.Lambda(finish)])


def guess_layout(shape: list) -> str | None:
    """nchw when the second dimension is 1 or 3 channels, nhwc when the last is; None when it cannot tell."""
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first != last:
        return "nchw" if first else "nhwc"
    return None


def resolve_input(
    g: GraphInput,
    image_size: int | None = None,
    layout: str = "auto",
    channels: str = "auto",
    scale: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    resize: str | None = None,
) -> OnnxInput:
    """The preprocessing: what was asked for, else what the file's metadata (written by ``export-model``) says,
    else what the input's shape says, else the common default (0-1 pixels, mean 0, std 1, stretched).

    Raises:
        EmbedderError: a choice the graph contradicts, or a size it does not say and nobody gave.
    """
    meta = _metadata(g)
    layout = layout if layout != "auto" else meta.get("layout") or guess_layout(g.shape)
    if layout is None:
        raise EmbedderError(f"cannot tell the layout of input shape {_shape(g.shape)}: pass --layout nchw or nhwc")
    c, h, w = (g.shape[1], g.shape[2], g.shape[3]) if layout == "nchw" else (g.shape[3], g.shape[1], g.shape[2])
    if c not in (None, 1, 3):
        raise EmbedderError(f"input shape {_shape(g.shape)} as {layout.upper()} has {c} channels; expected 1 or 3")
    channels = channels if channels != "auto" else meta.get("channels") or ("gray" if c == 1 else "rgb")
    if (c == 1) != (channels == "gray") and c is not None:
        raise EmbedderError(f"--channels {channels} does not fit input shape {_shape(g.shape)} ({c} channel(s))")
    if image_size is not None and h is not None and (h, w) != (image_size, image_size):
        raise EmbedderError(f"--image-size {image_size} does not fit the graph's fixed input {h}x{w}")
    h, w = (
        (h, w)
        if h is not None and w is not None
        else (image_size or meta.get("height"), image_size or meta.get("width"))
    )
    if not h or not w:
        raise EmbedderError(f"the graph's input size is dynamic {_shape(g.shape)}: pass --image-size")
    inp = OnnxInput(
        height=int(h),
        width=int(w),
        layout=layout,
        channels=channels,
        scale=scale or meta.get("scale", "0-1"),
        mean=tuple(mean or meta.get("mean", (0.0,))),
        std=tuple(std or meta.get("std", (1.0,))),
        resize=resize or meta.get("resize", "stretch"),
        input_name=g.name,
        output_name=g.output_name,
    )
    problem = inp.problem()
    if problem:
        raise EmbedderError(problem)
    return inp


def _metadata(g: GraphInput) -> dict:
    try:
        meta = json.loads(g.metadata.get(METADATA_KEY, "{}"))
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _shape(shape: list) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
