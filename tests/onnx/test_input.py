"""embedder/onnx/input.py: the preprocessing of an ONNX network's input, learnt from its graph's input shape (and
asked for where the graph cannot say), and applied to pixels exactly as each setting says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedder.errors import EmbedderError
from embedder.onnx.input import AskedInput, OnnxInput, resolve_input, transform
from embedder.onnx.model import graph_input, parse
from tests.onnx.test_model import _graph


@pytest.mark.parametrize(
    "shape, layout, channels, size",
    [
        (("N", 3, 24, 16), "nchw", "rgb", (24, 16)),
        (("N", 24, 16, 3), "nhwc", "rgb", (24, 16)),
        ((1, 1, 28, 28), "nchw", "gray", (28, 28)),
        (("N", 28, 28, 1), "nhwc", "gray", (28, 28)),
    ],
)
def test_resolve_input__layout_channels_and_size_come_from_the_graph(shape, layout, channels, size):
    inp = resolve_input(graph_input(parse(_graph(shape))))
    assert (inp.layout, inp.channels, (inp.height, inp.width)) == (layout, channels, size)
    assert (inp.scale, inp.mean, inp.std, inp.input_name, inp.output_name) == ("0-1", (0.0,), (1.0,), "x", "y")


def test_resolve_input__what_the_graph_cannot_say_must_be_asked_for():
    dynamic = graph_input(parse(_graph(("N", 3, "H", "W"))))
    with pytest.raises(EmbedderError, match=r"input size is dynamic \(\?, 3, \?, \?\): pass --image-size"):
        resolve_input(dynamic)
    assert (
        resolve_input(dynamic, AskedInput(image_size=40)).height,
        resolve_input(dynamic, AskedInput(image_size=40)).width,
    ) == (40, 40)
    unknown = graph_input(parse(_graph(("N", "H", "W", "C"))))
    with pytest.raises(EmbedderError, match=r"cannot tell the layout of input shape \(\?, \?, \?, \?\): pass --layout"):
        resolve_input(unknown)
    inp = resolve_input(unknown, AskedInput(layout="nhwc", image_size=16))
    assert (inp.layout, inp.channels, inp.height, inp.width) == ("nhwc", "rgb", 16, 16)


def test_resolve_input__a_setting_the_graph_contradicts_is_refused():
    fixed = graph_input(parse(_graph(("N", 3, 8, 8))))
    with pytest.raises(EmbedderError, match=r"--image-size 16 does not fit the graph's fixed input 8x8"):
        resolve_input(fixed, AskedInput(image_size=16))
    with pytest.raises(EmbedderError, match=r"--channels gray does not fit input shape"):
        resolve_input(fixed, AskedInput(channels="gray"))
    with pytest.raises(EmbedderError, match=r"has 5 channels; expected 1 or 3"):
        resolve_input(graph_input(parse(_graph(("N", 5, 8, 8)))), AskedInput(layout="nchw"))


def _pixels() -> Image.Image:
    """A 2x1 RGB image: (255, 0, 51) and (0, 102, 255)."""
    return Image.fromarray(np.array([[[255, 0, 51], [0, 102, 255]]], dtype=np.uint8))


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({}, [[1.0, 0.0], [0.0, 0.4], [0.2, 1.0]]),
        ({"scale": "0-255"}, [[255.0, 0.0], [0.0, 102.0], [51.0, 255.0]]),
        ({"scale": "-1-1"}, [[1.0, -1.0], [-1.0, -0.2], [-0.6, 1.0]]),
        ({"channels": "bgr"}, [[0.2, 1.0], [0.0, 0.4], [1.0, 0.0]]),
        ({"mean": (0.5,), "std": (0.25,)}, [[2.0, -2.0], [-2.0, -0.4], [-1.2, 2.0]]),
        ({"channels": "gray"}, [[0.299 + 0.114 * 0.2, 0.587 * 0.4 + 0.114]]),
    ],
)
def test_transform__each_setting_maps_pixels_exactly(settings, expected):
    x = transform(OnnxInput(height=1, width=2, **settings))(_pixels())  # (C, 1, 2)
    np.testing.assert_allclose(x[:, 0, :].numpy(), np.array(expected), atol=1e-6)
