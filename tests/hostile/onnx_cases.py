"""Hostile ONNX files, built by hand with onnx.helper: a tensor stored "outside" the file in every place a tensor
can live, a graph that never ends, one that allocates without end, outputs of NaN or of one value for every image.
Each takes a (N, 3, 8, 8) image batch, as an embedder does, so only what makes it hostile stops it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

SIDE = 8
OPSET = [helper.make_opsetid("", 17)]


def _io(out_shape=("N", "D")):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))
    return x, y


def _model(nodes, initializers=(), out_shape=("N", "D"), **kw) -> onnx.ModelProto:
    x, y = _io(out_shape)
    graph = helper.make_graph(nodes, "hostile", [x], [y], list(initializers), **kw)
    return helper.make_model(graph, opset_imports=OPSET)


def external(tensor: TensorProto, location: str = "passwd") -> TensorProto:
    """``tensor`` made to say its bytes are in the file ``location``, beside wherever the model is run."""
    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0, length=4)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def _one(name: str = "c") -> TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, [1], np.float32([1.0]).tobytes(), raw=True)


def _plus(name: str) -> list:
    """x + ``name`` -> flattened: the node list around a constant that comes from somewhere."""
    return [helper.make_node("Add", ["x", name], ["s"]), helper.make_node("Flatten", ["s"], ["y"])]


def external_initializer() -> bytes:
    return _model(_plus("c"), [external(_one())]).SerializeToString()


def external_constant_node() -> bytes:
    """The first round's hole: a Constant node whose value 'lives' in a file next to the server."""
    constant = helper.make_node("Constant", [], ["c"], value=external(_one()))
    return _model([constant, *_plus("c")]).SerializeToString()


def external_sparse_initializer() -> bytes:
    values = external(_one("c"))
    indices = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(values, indices, [1])
    return _model(_plus("c"), sparse_initializer=[sparse]).SerializeToString()


def external_in_a_subgraph_attribute() -> bytes:
    """A Constant inside the then-branch of an If: the tensor attribute of a node of a subgraph."""
    branch_out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["b"], value=external(_one("b")))], "then", [], [branch_out]
    )
    other = helper.make_graph([helper.make_node("Constant", [], ["b"], value=_one("b"))], "else", [], [branch_out])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    nodes = [helper.make_node("If", ["cond"], ["c"], then_branch=then, else_branch=other), *_plus("c")]
    return _model(nodes, [cond]).SerializeToString()


def external_in_training_info() -> bytes:
    """A tensor in the training section onnxruntime does not run: still never allowed to point outside."""
    model = onnx.load_model_from_string(_model(_plus("c"), [_one()]).SerializeToString())
    init = helper.make_graph([], "init", [], [], [external(_one("t"))])
    model.training_info.append(onnx.TrainingInfoProto(initialization=init))
    return model.SerializeToString()


EXTERNAL = {
    "initializer": external_initializer,
    "constant node": external_constant_node,
    "sparse initializer": external_sparse_initializer,
    "subgraph attribute": external_in_a_subgraph_attribute,
    "training info": external_in_training_info,
}


def endless_loop(trips: int = 10**15) -> bytes:
    """A Loop of ``trips`` iterations around x (it depends on the input, so nothing folds it away)."""
    body_in = [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 3, SIDE, SIDE]),
    ]
    body_out = [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 3, SIDE, SIDE]),
    ]
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Sin", ["acc_in"], ["acc_out"]),
        ],
        "body",
        body_in,
        body_out,
    )
    trip = helper.make_tensor("trips", TensorProto.INT64, [], [trips])
    keep_going = helper.make_tensor("true", TensorProto.BOOL, [], [True])
    nodes = [
        helper.make_node("Loop", ["trips", "true", "x"], ["z"], body=body),
        helper.make_node("Flatten", ["z"], ["y"]),
    ]
    return _model(nodes, [trip, keep_going]).SerializeToString()


def allocates(gigabytes: float = 2.0) -> bytes:
    """x + a float tensor of ``gigabytes`` (ConstantOfShape at run time), reduced back to one number per image."""
    n = int(gigabytes * 2**30 / 4)
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [n])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("Shape", ["x"], ["xs"]),  # depends on the input: not folded when the graph loads
        helper.make_node("Cast", ["xs"], ["xsf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["xsf"], ["xsum"], keepdims=1),
        helper.make_node("Add", ["big", "xsum"], ["big2"]),
        helper.make_node("ReduceSum", ["big2"], ["total"], keepdims=1),
        helper.make_node("Add", ["x", "total"], ["s"]),
        helper.make_node("Flatten", ["s"], ["y"]),
    ]
    return _model(nodes, [shape]).SerializeToString()


def nan_output() -> bytes:
    """sqrt(-(|x| + 1)): NaN for every image."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Add", ["a", "one"], ["b"]),
        helper.make_node("Neg", ["b"], ["c"]),
        helper.make_node("Sqrt", ["c"], ["s"]),
        helper.make_node("Flatten", ["s"], ["y"]),
    ]
    return _model(nodes, [one]).SerializeToString()


def constant_output(value: float = 0.0) -> bytes:
    """x * 0 + ``value``: the same output for every image (all zeros by default)."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    v = helper.make_tensor("v", TensorProto.FLOAT, [], [value])
    nodes = [
        helper.make_node("Mul", ["x", "zero"], ["z"]),
        helper.make_node("Add", ["z", "v"], ["s"]),
        helper.make_node("Flatten", ["s"], ["y"]),
    ]
    return _model(nodes, [zero, v]).SerializeToString()


def flatten() -> bytes:
    """A well-behaved graph of the same shape: each image's pixels, flattened."""
    return _model([helper.make_node("Flatten", ["x"], ["y"])]).SerializeToString()


def as_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)
