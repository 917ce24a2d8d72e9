"""embedder/onnx/model.py: reading an ONNX file within bounds, its input read from the graph, and onnxruntime
running it as the program runs any embedder. Graphs are built by hand with
onnx.helper: a few nodes whose output is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from embedder.errors import EmbedderError
from embedder.onnx.input import resolve_input
from embedder.onnx.model import OnnxEmbedder, graph_input, parse, read_bytes
from tests.hostile import onnx_cases


def _graph(shape=("N", 3, 8, 8), op="Flatten", domain="", elem=TensorProto.FLOAT, opset=17) -> bytes:
    """x (shape) -> one node -> y: a valid ONNX model of a single operator."""
    x = helper.make_tensor_value_info("x", elem, list(shape))
    y = helper.make_tensor_value_info("y", elem, ["N", "D"] if op == "Flatten" else list(shape))
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=imports)
    return model.SerializeToString()


def test_parse__bytes_that_are_not_onnx_are_refused_in_one_line():
    for junk in (b"", b"\x00\xff" * 100, b"PK\x03\x04 a zip, not a model"):
        with pytest.raises(EmbedderError, match=r"^not a usable ONNX model: ") as info:
            parse(junk)
        assert "\n" not in str(info.value)


def test_parse__a_custom_operator_domain_is_never_run():
    with pytest.raises(EmbedderError, match=r"custom operators \(com\.evil\) are not run"):
        parse(_graph(op="Steal", domain="com.evil"))


@pytest.mark.parametrize("place", sorted(onnx_cases.EXTERNAL))
def test_parse__a_tensor_stored_in_an_external_file_is_refused_wherever_it_is(place):
    # Each of these passes onnx.checker, and onnxruntime reads the sparse one and the subgraph's from the
    # working folder: the bytes of a server file would become embeddings.
    with pytest.raises(EmbedderError, match=r"^not a usable ONNX model: tensor '\w+' is stored in a separate file"):
        parse(onnx_cases.EXTERNAL[place]())


def test_parse__an_invalid_graph_names_the_checker():
    with pytest.raises(EmbedderError, match=r"^not a usable ONNX model: onnx.checker: "):
        parse(_graph(op="NoSuchOperator"))


def test_read_bytes__a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.onnx"
    path.write_bytes(_graph() + b"\x00" * 2_000_000)
    monkeypatch.setenv("EMBEDDER_MAX_ONNX_MB", "1")
    with pytest.raises(EmbedderError, match=r"big.onnx is 2 MB, over the 1 MB limit \(raise EMBEDDER_MAX_ONNX_MB"):
        read_bytes(path)
    monkeypatch.setenv("EMBEDDER_MAX_ONNX_MB", "lots")
    with pytest.raises(EmbedderError, match="EMBEDDER_MAX_ONNX_MB must be a positive number"):
        read_bytes(path)


def test_graph_input__more_than_one_input_or_not_rank_4_is_refused():
    with pytest.raises(EmbedderError, match=r"input has rank 2; expected a batch of images"):
        graph_input(parse(_graph(("N", 64))))
    x1, x2 = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b"))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    two = helper.make_model(helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [x1, x2], [y]))
    with pytest.raises(EmbedderError, match="it takes 2 inputs"):
        graph_input(parse(two.SerializeToString()))


def test_embedder__a_fixed_batch_of_one_takes_any_number_of_images_and_flattens_any_rank():
    # Identity on (1, 3, 8, 8): each image's output is its own pixels, flattened and L2-normalised.
    data = _graph((1, 3, 8, 8), op="Identity")
    net = OnnxEmbedder(data, resolve_input(graph_input(parse(data))))
    x = torch.rand(5, 3, 8, 8)
    np.testing.assert_allclose(net(x).numpy(), torch.nn.functional.normalize(x.flatten(1)).numpy(), atol=1e-6)


def test_embedder__nhwc_graphs_get_the_channels_last():
    # Flatten of (N, 8, 8, 3): channels-last order, which differs from flattening the NCHW tensor it was given.
    data = _graph(("N", 8, 8, 3))
    net = OnnxEmbedder(data, resolve_input(graph_input(parse(data))))
    x = torch.rand(2, 3, 8, 8)
    want = torch.nn.functional.normalize(x.permute(0, 2, 3, 1).flatten(1))
    np.testing.assert_allclose(net(x).numpy(), want.numpy(), atol=1e-6)
