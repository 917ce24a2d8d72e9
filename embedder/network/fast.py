"""CPU inference through onnxruntime: the same torch network, exported once in memory and run by onnxruntime,
which ran EfficientNet-Lite0 4.3x faster than torch's eager CPU path at equal embeddings (largest difference
1e-6, the same P@1 on cats_dogs and the digits: bench/bench_inference.py).

Only where it pays and cannot go stale: a fixed network (a loaded run's, eval mode, on the CPU) embedding at least
``FAST_FROM`` images (the export costs seconds; one upload is answered by torch at once). The export is checked
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

FAST_FROM = 256  # images from which a network is exported for onnxruntime
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
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.session.run(["z"], {"x": np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(z)


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
