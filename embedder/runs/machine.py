"""What a run was made with: library versions, the CPU, its threads and math library.

The same seed gives other numbers on another machine (another CPU, BLAS or thread count); a run records
these so a difference can be explained.
"""

from __future__ import annotations

import contextlib
import os

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        import platform

        return platform.processor() or "unknown"


def machine_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "torchvision", "pytorch-metric-learning", "annoy", "numpy", "scikit-learn"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    # What makes the same seed give other numbers on another machine: the CPU, its threads, the BLAS.
    info = [line.strip() for line in torch.__config__.parallel_info().splitlines()]
    out.update(
        python=platform.python_version(),
        machine=platform.machine(),
        cpu=_cpu_model(),
        cpu_count=str(os.cpu_count()),
        torch_threads=str(torch.get_num_threads()),
        torch_math=next((line for line in info if "Math Kernel" in line or "BLAS" in line), "unknown"),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS", "unset"),
    )
    return out
