"""CPU inference through onnxruntime: the same torch network, exported once in memory and run by onnxruntime,
which ran EfficientNet-Lite0 4.3x faster than torch's eager CPU path at equal embeddings (largest difference
1e-6, the same P@1 on cats_dogs and the digits: bench/bench_inference.py).

Only where it pays and cannot go stale: a fixed network (a loaded run's, eval mode, on the CPU) embedding enough
work (``pays``: the export costs a second or two; one upload is answered by torch at once), heavy enough an image
(``first_batch``: the small CNN is not) and faster than torch on the first batch (``for_cpu``). Lite0 at 224 px pays
from about 30-50 images (export 1.3 s, 16 against 56 images/s, measured under load 8), so from 64: the first
answer of a 245-photo folder and its evaluation go through it. The export is checked
against torch on a batch before it is used; a network that does not export, or whose export disagrees, keeps torch.
"""

from __future__ import annotations

import io
import time
import warnings
import weakref
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

FAST_PIXELS = 64 * 224 * 224  # input pixels (images x height x width) from which the export pays for itself
TOLERANCE = 1e-4  # the largest difference from torch's outputs accepted
MEASURE = True  # keep onnxruntime only where it ran the first batch faster than torch (tests of the export: False)
HEAVY_S = 0.005  # torch's seconds an image below which a pass never exports (Lite0 at 224 px: about 0.02)


class OnnxRuntimeModule:
    """``module`` exported and run by onnxruntime: (B, C, H, W) float32 -> its output, as torch on the CPU."""

    def __init__(self, module: nn.Module, example: torch.Tensor) -> None:
        import onnxruntime as ort

        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), buf, dynamo=False, input_names=["x"], output_names=["z"],
                              dynamic_axes={"x": {0: "b"}, "z": {0: "b"}})  # fmt: skip
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        # threads that wait by sleeping, not spinning: the decoding threads need the same cores between batches
        # (Lite0 on 2 cores, 300 photos: 113-116 against 107 images/s)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.session.run(["z"], {"x": np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(z)


def pays(n_images: int, batch: torch.Tensor) -> bool:
    """Whether embedding ``n_images`` shaped like ``batch`` (B, C, H, W) is worth an export."""
    return n_images * batch.shape[-2] * batch.shape[-1] >= FAST_PIXELS


_EXPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> what runs it (for the module's life)


def _timed(fn: Callable, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn(x)
    return out, time.perf_counter() - t0


def first_batch(fn: Callable, batch: torch.Tensor) -> tuple[Callable, torch.Tensor]:
    """A pass's first ``batch`` through torch, timed: (what runs the rest, the batch's output). A network that takes
    ``HEAVY_S`` a image or more goes on through ``for_cpu``; a lighter one stays with torch without an export (the
    small CNN: 0.75 ms an image at 32 px; its export cost half a second and onnxruntime was no faster)."""
    ours, torch_s = _timed(fn, batch)
    if torch_s < HEAVY_S * len(batch) and MEASURE:
        return fn, ours
    return for_cpu(fn, batch, (ours, torch_s)), ours


def for_cpu(module, example: torch.Tensor, reference: tuple[torch.Tensor, float] | None = None) -> Callable:
    """``module`` run by onnxruntime when its export agrees with torch on ``example`` (B, C, H, W) and runs it
    faster, else itself; exported once per module (a run's network does not change once loaded). ``reference``:
    torch's output of ``example`` and its seconds, where they are known."""
    if not isinstance(module, nn.Module) or module.training:
        return module
    if module not in _EXPORTED:
        try:
            fast = OnnxRuntimeModule(module, example[:1])
            with torch.no_grad():
                theirs, fast_s = _timed(fast, example)
                ours, torch_s = reference or _timed(module, example)
                if MEASURE and fast_s >= torch_s:  # its first run pays for warming up: once more, warm
                    theirs, fast_s = _timed(fast, example)
            agree, faster = torch.allclose(theirs, ours.float(), atol=TOLERANCE), fast_s < torch_s or not MEASURE
        except Exception:  # an operator the exporter or onnxruntime does not have: torch it is
            fast, agree, faster = None, False, False
        _EXPORTED[module] = fast if agree and faster else None  # never the module itself: the cache would keep it
    return _EXPORTED[module] or module
