"""One core for a small job: one upload through the network and its search of the gallery.

Torch (OpenMP) and numpy (OpenBLAS) split every call across all cores. For one 32x32 image through the small CNN,
or one query against a gallery that fits in cache, each thread's share is microseconds, and the threads meet at a
barrier after every layer: when other processes hold the cores (the browser drawing the answer, another job), a
thread waits for the other's time slice at each barrier. Measured on the shared 2-core machine (load average 8,
bench/bench_browser.py's run, medians of 7 uploads): the small CNN's forward pass of one upload 95-4,580 ms on
both cores against 31-235 ms on one; the exact search of one query in a 100k gallery 14-81 ms against 3 ms.

OpenMP's thread count belongs to the calling thread, so limiting it leaves every other thread (another session's
batch, a training) on all cores. OpenBLAS has one count for the process: it stays at one while any small job is
in its search (counted under a lock; the last one out restores it), which a large product in another thread
computed at the same moment shares.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

FEW = 4  # images or queries at once that are a small job

_lock = threading.Lock()
_blas_holders = 0
_blas_limit = None  # threadpoolctl's limiter while a small job holds OpenBLAS at one thread
_pools: dict = {}


def _pools_of(api: str):
    """threadpoolctl's controller of the loaded thread pools of one kind ("openmp" or "blas"), found once (torch
    and numpy are loaded by then). One per kind: a limiter restores every pool its controller holds, so leaving
    the OpenMP limit must not touch OpenBLAS, which another small job may still hold at one."""
    if api not in _pools:
        import torch  # noqa: F401  (its OpenMP runtime must be loaded to be found)
        from threadpoolctl import ThreadpoolController

        _pools[api] = ThreadpoolController().select(user_api=api)
    return _pools[api]


@contextmanager
def _blas_at_one() -> Iterator[None]:
    global _blas_holders, _blas_limit
    with _lock:
        _blas_holders += 1
        if _blas_holders == 1:
            _blas_limit = _pools_of("blas").limit(limits=1)
    try:
        yield
    finally:
        with _lock:
            _blas_holders -= 1
            if _blas_holders == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


@contextmanager
def one_core(blas: bool = False) -> Iterator[None]:
    """Run the block on the calling thread's core: OpenMP (torch) for this thread, and with ``blas`` OpenBLAS
    (numpy's matrix products) for the process while the block runs."""
    with ExitStack() as stack:
        stack.enter_context(_pools_of("openmp").limit(limits=1))
        if blas:
            stack.enter_context(_blas_at_one())
        yield


def small(n: int) -> bool:
    """Whether ``n`` images or queries at once are a small job (``one_core`` answers them faster)."""
    return 0 < n <= FEW
