"""What the ONNX sandbox costs a query: an imported network run in its worker process (embedder/onnx/sandbox.py)
against the same file run by onnxruntime in this process, with the same threads, on the same input.

python -m bench.bench_sandbox [--quick]

Two networks exported as an imported one would arrive: the project's digits ConvNet (32 px) and EfficientNet-Lite0
(224 px, ImageNet weights; skipped when they are not installed). For each: ms per query of one image and per batch
of 64 (medians of calls made in turn, so both see the same load), the median difference, the ratio sandbox /
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


def _in_process(data: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["output"], {"input": batch})[0]


def _interleaved(a, b, calls: int) -> tuple[float, float, float]:
    """Median ms of ``a`` and of ``b`` called in turn, and the median of their differences call by call: on a
    shared machine both see the same load, where two passes one after the other would not."""
    pairs = []
    for _ in range(calls):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        pairs.append((t1 - t0, time.perf_counter() - t1))
    ms = 1000 * np.array(pairs)  # (calls, 2)
    return float(np.median(ms[:, 0])), float(np.median(ms[:, 1])), float(np.median(ms[:, 1] - ms[:, 0]))


def measure(name: str, data: bytes, side: int, calls: int, threads: int) -> list:
    from embedder.onnx.sandbox import Sandbox

    rng = np.random.default_rng(0)
    one, many = (rng.random((n, 3, side, side), dtype=np.float32) for n in (1, 64))
    direct = _in_process(data, threads)
    box = Sandbox(data, name, threads=threads)
    t0 = time.perf_counter()
    box.start()
    start_ms = 1000 * (time.perf_counter() - t0)
    np.testing.assert_allclose(box.run(one, "input", "output"), direct(one).reshape(1, -1), rtol=1e-4, atol=1e-5)
    rows = []
    for what, batch, n in (("1 image", one, calls), ("64 images", many, max(3, calls // 20))):
        base, boxed, extra = _interleaved(lambda b=batch: direct(b), lambda b=batch: box.run(b, "input", "output"), n)
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
    rows = measure("ConvNet 32 px", _export("convnet", 32), 32, calls, threads)
    if not args.quick and pretrained_available("efficientnet_lite0"):
        rows += measure("EfficientNet-Lite0 224 px", _export("efficientnet_lite0", 224), 224, calls // 4, threads)
    header = ["network", "query", "in-process ms", "sandbox ms", "difference ms", "ratio", "worker start + load ms"]
    print(f"onnxruntime threads: {threads}; load average {os.getloadavg()[0]:.2f}")
    print(table(header, rows))


if __name__ == "__main__":
    main()
