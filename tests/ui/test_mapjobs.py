"""ui/mapjobs.py: one background job per version of a run computes its missing maps; a rewritten run's old job is
cancelled. Real maps of a small synthetic run (tests.helpers.synthetic_run)."""

from __future__ import annotations

import pytest

from embedder.maps.precompute import STANDARD, missing
from embedder.runs.run import load_run
from tests.helpers import synthetic_run
from ui import mapjobs


@pytest.fixture(autouse=True)
def one_openmp_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.mark.slow  # the whole standard set, UMAP's numba compile included
def test_ensure__one_job_stores_every_map_and_a_rewritten_run_gets_a_new_one(tmp_path):
    path = synthetic_run(tmp_path / "runs" / "small", n=100, n_classes=4, dim=8)
    run = load_run(path)
    job = mapjobs.ensure(run)
    assert job is not None and job.active and mapjobs.ensure(run) is job  # asked again: the same job
    assert job.wait(600), f"still {job.status} at {job.current}"
    assert job.status == "done" and job.fraction == pytest.approx(1.0)
    assert job.ready == [str(s) for s in STANDARD] and missing(run) == []
    assert mapjobs.ensure(run) is job  # nothing to do for this version any more

    synthetic_run(path, n=110, n_classes=4, dim=8, seed=1)  # a writer swaps in a new gallery
    first = mapjobs.ensure(load_run(path))
    assert first is not None and first is not job and first.version != job.version
    first_run_maps = missing(load_run(path))
    assert len(first_run_maps) > 0
    synthetic_run(path, n=120, n_classes=4, dim=8, seed=2)  # and again, while its maps are computed
    second = mapjobs.ensure(load_run(path))
    assert first.wait(600) and first.status in ("cancelled", "done")  # never stores into the newer run
    assert second.wait(600) and second.status == "done" and missing(load_run(path)) == []
