"""CPU inference through onnxruntime: the same torch network, exported once in memory and run by onnxruntime,
which ran EfficientNet-Lite0 4.3x faster than torch's eager CPU path at equal embeddings (largest difference
1e-6, the same P@1 on cats_dogs and the digits: bench/bench_inference.py).

Only where it pays and cannot go stale: a fixed network (a loaded run's, eval mode, on the CPU) embedding enough
work (``pays``: the export costs a second or two; one upload is answered by torch at once). Lite0 at 224 px pays
from about 30-50 images (export 1.3 s, 16 against 56 images/s, measured under load 8), so from 64: the first
answer of a 245-photo folder and its evaluation go through it. The export is checked
against torch on a batch before it is used; a network that does not export, or whose export disagrees, keeps torch.
"""

from __future__ import annotations

import io
import warnings
import weakref
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

FAST_PIXELS = 64 * 224 * 224  # input pixels (images x height x width) from which the export pays for itself
TOLERANCE = 1e-4  # the largest difference from torch's outputs accepted


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


def for_cpu(module, example: torch.Tensor) -> Callable:
    """``module`` run by onnxruntime when its export agrees with torch on ``example`` (B, C, H, W), else itself;
    exported once per module (a run's network does not change once loaded)."""
    if not isinstance(module, nn.Module) or module.training:
        return module
    if module not in _EXPORTED:
        try:
            fast = OnnxRuntimeModule(module, example[:1])
            with torch.no_grad():
                agree = torch.allclose(fast(example), module(example).float(), atol=TOLERANCE)
        except Exception:  # an operator the exporter or onnxruntime does not have: torch it is
            fast, agree = None, False
        _EXPORTED[module] = fast if agree else None  # never the module itself: the cache would keep it alive
    return _EXPORTED[module] or module
