"""Faster CPU inference for the pretrained backbone (EfficientNet-Lite0 at 224 px), at equal embeddings.

Each option runs the same network on the same preprocessed batches, in this process, alternating with the eager
float32 baseline (best of a few passes each): images per second, the largest difference of its embeddings from
the baseline's, and P@1 on real photos (``../shared/data/cats_dogs``: the 400 ``train`` photos are the gallery, the
200 ``val`` photos the queries) and on the digits (the demo set: every fifth image a query, the rest the gallery).
An option is worth adopting at >= 1.5x the baseline's images/s with the same P@1.

Options: ``channels_last`` memory format; onnxruntime on the exported graph; int8 dynamic quantisation (torch's
``quantize_dynamic``: the Linear layers only, which in Lite0 is the head); ``torch.compile``; bfloat16 where the
CPU has it (avx512_bf16 / AMX), else reported as not available.

    python -m bench.bench_inference [--photos ../shared/data/cats_dogs] [--compile]
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import table
from embedder.config import ModelConfig
from embedder.images.data import demo_dataset
from embedder.images.decode import load_image
from embedder.images.transforms import eval_transform
from embedder.network.embed import embed_images
from embedder.network.model import EmbeddingNet
from embedder.search.knn import topk

LITE0 = ModelConfig(
    backbone="efficientnet_lite0", image_size=224, resize="crop", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
BATCH = 32
CANDIDATE = 1.3  # options at least this much faster get their labels checked (adopting one takes 1.5x)
DIGITS = 600  # digits embedded for P@1 (every fifth a query): Lite0 at 224 px is slow on 2 cores


def onnx_runner(model: torch.nn.Module):
    """The network exported (TorchScript exporter) and run by onnxruntime with every core."""
    import onnxruntime as ort

    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), buf, dynamo=False, input_names=["x"],
                      output_names=["z"], dynamic_axes={"x": {0: "b"}})  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda x: F.normalize(torch.from_numpy(session.run(["z"], {"x": x.numpy()})[0]), dim=1)


def bf16_available() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def options(model: torch.nn.Module, compile_too: bool) -> dict:
    """name -> a function (B, 3, 224, 224) -> (B, D), each the same network run another way."""
    found = {"eager float32": model}
    cl = EmbeddingNet(LITE0, load_pretrained=False).eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    found["channels_last"] = lambda x: cl(x.contiguous(memory_format=torch.channels_last))
    found["onnxruntime"] = onnx_runner(model)
    found["int8 dynamic (Linear)"] = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)
    if bf16_available():
        found["bfloat16 autocast"] = lambda x: _bf16(model, x)
    if compile_too:
        found["torch.compile"] = torch.compile(model)
    return found


def _bf16(model, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x).float()


def speed(fns: dict, batch: torch.Tensor, passes: int = 3) -> dict[str, float]:
    """Images per second of each option, best of ``passes`` rounds that alternate between the options."""
    best = dict.fromkeys(fns, 0.0)
    with torch.no_grad():
        for fn in fns.values():
            fn(batch[:2])  # warm-up (compile, allocate)
        for _ in range(passes):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(batch)
                best[name] = max(best[name], len(batch) / (time.perf_counter() - t0))
    return best


def p_at_1(fn, transform, gallery, g_labels, queries, q_labels) -> tuple[float, np.ndarray]:
    """(P@1, the query embeddings) of ``fn``."""
    g = embed_images(fn, gallery, transform, batch_size=BATCH)
    q = embed_images(fn, queries, transform, batch_size=BATCH)
    idx, _ = topk(q, g, 1)
    return float(np.mean(g_labels[idx[:, 0]] == q_labels)), np.concatenate([g, q])


def labelled(folder: Path) -> tuple[list[Path], np.ndarray]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    classes = sorted({p.parent.name for p in paths})
    return paths, np.array([classes.index(p.parent.name) for p in paths])


def data_sets(photos: Path) -> dict:
    sets = {}
    if photos.is_dir():
        g, gl = labelled(photos / "train")
        q, ql = labelled(photos / "val")
        sets["cats_dogs"] = (g, gl, q, ql)
    paths, labels = labelled(demo_dataset())
    paths, labels = paths[::3][:DIGITS], labels[::3][:DIGITS]  # every class, a third of each
    query = np.arange(len(paths)) % 5 == 0
    gallery, queries = [p for p, m in zip(paths, query) if not m], [p for p, m in zip(paths, query) if m]
    sets["digits"] = (gallery, labels[~query], queries, labels[query])
    return sets


def run(photos: Path, compile_too: bool) -> str:
    torch.manual_seed(0)
    model = EmbeddingNet(LITE0, load_pretrained=True).eval()
    fns = options(model, compile_too)
    transform = eval_transform(LITE0)
    sets = data_sets(photos)
    g0 = sets["digits"][0][:BATCH]
    batch = torch.stack([transform(load_image(p)) for p in g0])  # (32, 3, 224, 224)
    load = os.getloadavg()[0]
    ips = speed(fns, batch)
    rows, base = [], ips["eager float32"]
    reference = {}
    for name, fn in fns.items():
        cells = [name, f"{ips[name]:.1f}", f"{ips[name] / base:.2f}x"]
        for set_name, (g, gl, q, ql) in sets.items():
            if name != "eager float32" and ips[name] < CANDIDATE * base:  # too slow to adopt: labels not checked
                cells += ["-", "-"]
                continue
            with torch.no_grad():
                p1, emb = p_at_1(fn, transform, g, gl, q, ql)
            reference.setdefault(set_name, emb)
            cells += [f"{p1:.3f}", f"{np.abs(emb - reference[set_name]).max():.2e}"]
        rows.append(cells)
    header = ["option", "images/s", "vs eager"] + [h for s in sets for h in (f"P@1 {s}", f"max |Δ| {s}")]
    bf16 = "" if bf16_available() else " bfloat16: not measured, this CPU has neither avx512_bf16 nor AMX."
    return (
        f"### Lite0 inference options (batch {BATCH}, {torch.get_num_threads()} torch threads, load average "
        f"{load:.1f})\n\nImages/s on ready tensors, best of 3 alternating passes; P@1 and the largest embedding "
        f"difference from eager float32 on every image of each set, for the options >= {CANDIDATE}x faster."
        f"{bf16}\n\n" + table(header, rows)
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default=str(Path(__file__).resolve().parents[1] / "../shared/data/cats_dogs"))
    ap.add_argument("--compile", action="store_true", help="also torch.compile (minutes to compile on 2 cores)")
    args = ap.parse_args(argv)
    print(run(Path(args.photos), args.compile))


if __name__ == "__main__":
    main()
