"""A small job (one upload) runs its network and search on one core, and leaves every other thread's cores alone."""

import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from threadpoolctl import threadpool_info

from embedder.cores import FEW, one_core
from embedder.network.embed import embed_images

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to limit")


def _threads_seen(n_images: int) -> set[int]:
    """The torch threads the network had for each batch of ``n_images`` embedded."""
    seen = set()

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.add(torch.get_num_threads())
        return x.flatten(1)[:, :4]

    images = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(n_images)]
    embed_images(network, images, lambda img: torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1))
    return seen


def test_embed_images__an_upload_runs_on_one_core_and_a_batch_on_all():
    every = torch.get_num_threads()
    assert every > 1
    assert _threads_seen(1) == {1}
    assert _threads_seen(FEW + 60) == {every}
    assert torch.get_num_threads() == every  # and the caller's threads are as they were


def test_one_core__other_threads_keep_every_core():
    every, inside, seen = torch.get_num_threads(), threading.Event(), []

    def upload() -> None:
        with one_core():
            inside.set()
            done.wait(10)

    done = threading.Event()
    worker = threading.Thread(target=upload)
    worker.start()
    assert inside.wait(10)
    seen.append(torch.get_num_threads())  # this thread, while the upload holds its own at one
    done.set()
    worker.join()
    assert seen == [every]


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_core__overlapping_searches_give_blas_its_threads_back():
    before = _blas_threads()
    assert before and max(before) > 1
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    during = []

    def first() -> None:
        with one_core(blas=True):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second() -> None:
        a_in.wait(10)
        with one_core(blas=True):
            b_in.set()
            a_out.wait(10)  # the first search ends while this one still runs
            during.append(_blas_threads())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert during == [[1] * len(before)]  # still one thread for the search that was running
    assert _blas_threads() == before  # and every thread back once both are done
