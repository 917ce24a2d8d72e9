"""What the ONNX sandbox costs a query: an imported network run in its worker process (embedder/onnx/sandbox.py)
against the same file run by onnxruntime in this process, with the same threads, on the same input.

python -m bench.bench_sandbox [--quick]

A graph that does next to nothing at 224 px (what the sandbox itself adds), and two networks exported as an imported
one would arrive: the project's digits ConvNet (32 px) and EfficientNet-Lite0 (224 px, ImageNet weights; skipped
when they are not installed). For each: ms per query of one image and per batch
of 64 (medians of calls in alternating blocks, so both see the same load), the difference, the ratio sandbox /
in-process, and the one-off cost of starting the worker and loading the graph. The difference is the pipe round
trip (the image's bytes there, the embedding back) and waking the worker: cheap on an idle machine, several
milliseconds where every core is busy.
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
import torch

from bench.common import table


def _export(backbone: str, side: int) -> bytes:
    from embedder.config import ModelConfig
    from embedder.network.model import EmbeddingNet

    pretrained = backbone != "convnet"
    net = EmbeddingNet(ModelConfig(backbone=backbone, dim=128, image_size=side, pretrained=pretrained), pretrained)
    buffer = io.BytesIO()
    torch.onnx.export(
        net.eval(),
        (torch.zeros(1, 3, side, side),),
        buffer,
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}},
    )
    return buffer.getvalue()


def _mean_only(side: int) -> bytes:
    """A graph that does next to nothing (each channel's mean): what the sandbox adds to a call, alone."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])
    node = helper.make_node("ReduceMean", ["input"], ["output"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph([node], "mean", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _in_process(data: bytes, threads: int, spinning: bool):
    """The file run here, as the program ran imported networks before the sandbox (``spinning``: onnxruntime's
    default, idle threads spin for the next call; off, as the worker runs it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["output"], {"input": batch})[0]


def _in_blocks(a, b, calls: int, blocks: int = 10) -> tuple[float, float, float]:
    """Median ms of ``a`` and of ``b``, called in alternating blocks (a block of ``a``, a block of ``b``, ...): on a
    shared machine both see the same load, and each block runs as a stream of queries would (onnxruntime's idle
    threads spinning in this process would starve the worker if the calls alternated one by one). Also the
    difference of the medians."""
    per = max(1, calls // blocks)
    times: tuple[list, list] = ([], [])
    for _ in range(blocks):
        for fn, out in ((a, times[0]), (b, times[1])):
            for _ in range(per):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    base, boxed = (1000 * float(np.median(t)) for t in times)
    return base, boxed, boxed - base


def measure(name: str, data: bytes, side: int, calls: int, threads: int) -> list:
    from embedder.onnx.sandbox import Sandbox

    rng = np.random.default_rng(0)
    one, many = (rng.random((n, 3, side, side), dtype=np.float32) for n in (1, 64))
    direct = _in_process(data, threads, spinning=True)  # as imported networks ran before the sandbox
    box = Sandbox(data, name, threads=threads)
    t0 = time.perf_counter()
    box.start()
    start_ms = 1000 * (time.perf_counter() - t0)
    np.testing.assert_allclose(box.run(one, "input", "output"), direct(one).reshape(1, -1), rtol=1e-4, atol=1e-5)
    rows = []
    for what, batch, n in (("1 image", one, calls), ("64 images", many, max(10, calls // 20))):
        base, boxed, extra = _in_blocks(lambda b=batch: direct(b), lambda b=batch: box.run(b, "input", "output"), n)
        rows.append([name, what, f"{base:.2f}", f"{boxed:.2f}", f"{extra:+.2f}", f"{boxed / base:.2f}"])
    rows[0].append(f"{start_ms:.0f}")
    rows[1].append("")
    box.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the ConvNet only, fewer calls")
    args = parser.parse_args()
    from embedder.network.model import pretrained_available

    threads = max(1, torch.get_num_threads())
    calls = 50 if args.quick else 200
    rows = measure("channel means only, 224 px", _mean_only(224), 224, calls, threads)
    rows += measure("ConvNet 32 px", _export("convnet", 32), 32, calls, threads)
    if not args.quick and pretrained_available("efficientnet_lite0"):
        rows += measure("EfficientNet-Lite0 224 px", _export("efficientnet_lite0", 224), 224, calls // 4, threads)
    header = ["network", "query", "in-process ms", "sandbox ms", "difference ms", "ratio", "worker start + load ms"]
    print(f"onnxruntime threads: {threads}; load average {os.getloadavg()[0]:.2f}")
    print(table(header, rows))


if __name__ == "__main__":
    main()
