"""embedder/maps/precompute.py: a run's maps computed once and stored in it; progress, cancel, and never a write
into a run that changed meanwhile. Runs are small synthetic bundles (tests.helpers.synthetic_run); UMAP, whose
first import compiles numba code, only in the slow test of the whole standard set."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.errors import Cancelled
from embedder.maps.precompute import STANDARD, MapSpec, missing, precompute, stored
from embedder.maps.project import CACHE_DIR, project
from embedder.progress import Stage
from embedder.runs.run import load_run
from tests.helpers import synthetic_run, writing_elsewhere

NO_UMAP = tuple(s for s in STANDARD if s.method != "umap")


@pytest.fixture(autouse=True)
def one_openmp_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture
def run_dir(tmp_path):
    return synthetic_run(tmp_path / "runs" / "small", n=120, n_classes=4, dim=8)


def test_precompute__stores_each_map_once_and_it_reads_back_as_computed(run_dir):
    reports = []
    done = precompute(run_dir, reports.append, specs=NO_UMAP)
    assert done == list(NO_UMAP)
    run = load_run(run_dir)
    assert missing(run, NO_UMAP) == []
    tsne = stored(run, MapSpec("tsne", 2))
    again = project(run.gallery_embeddings, "tsne", 2, labels=run.gallery_labels)
    np.testing.assert_array_equal(tsne.coords, again.coords)  # the stored map is the map, not an approximation
    assert stored(run, MapSpec("pca", 3, before=True)).coords.shape == (120, 3)
    # Progress: the share done only grows, ends at 1, and names every stored map.
    maps = [p.extra for p in reports if p.stage == Stage.MAP]
    fractions = [m["fraction"] for m in maps]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert maps[-1]["ready"] == [str(s) for s in NO_UMAP] and maps[-1]["eta_s"] == pytest.approx(0.0)
    assert precompute(run_dir, specs=NO_UMAP) == []  # nothing left to do: nothing is fitted again


def test_precompute__cancel_stops_within_a_tick_and_keeps_what_was_stored(run_dir):
    asked = []

    def stop() -> bool:
        return len(asked) > 0

    def report(p):
        if p.stage == Stage.MAP and p.message == str(MapSpec("tsne", 2)) and p.extra["fraction"] > 0.05:
            asked.append(p.extra["fraction"])  # cancel in the middle of the t-SNE fit

    with pytest.raises(Cancelled):
        precompute(run_dir, report, stop, specs=NO_UMAP)
    run = load_run(run_dir)
    assert missing(run, NO_UMAP)[0] == MapSpec("tsne", 2)  # PCA 2-D and 3-D stored, t-SNE not
    assert stored(run, MapSpec("pca", 2)) is not None and stored(run, MapSpec("tsne", 2)) is None


def test_precompute__a_run_swapped_in_meanwhile_gets_no_map_of_the_old_one(run_dir):
    swapped = []

    def report(p):
        if p.stage == Stage.MAP and p.message == str(MapSpec("tsne", 2)) and not swapped:
            swapped.append(synthetic_run(run_dir, n=130, n_classes=4, dim=8, seed=1))  # a writer replaces the run

    done = precompute(run_dir, report, specs=NO_UMAP)
    assert done == [MapSpec("pca", 2), MapSpec("pca", 3)]  # stopped at the swap
    new = load_run(run_dir)
    assert len(new.gallery_paths) == 130
    assert not (run_dir / CACHE_DIR).exists() or list((run_dir / CACHE_DIR).iterdir()) == []
    assert precompute(run_dir, specs=(MapSpec("pca", 2),)) == [MapSpec("pca", 2)]  # its own maps come next


def test_precompute__while_another_writer_holds_the_run_nothing_is_written_into_it(run_dir, monkeypatch):
    from embedder.maps import project as project_module

    monkeypatch.setattr(project_module, "LOCK_WAIT", 0.1)
    with writing_elsewhere(run_dir):  # e.g. add is appending to it: its swap would drop what we wrote
        precompute(run_dir, specs=(MapSpec("pca", 2),))
    assert not (run_dir / CACHE_DIR).exists()
    assert missing(load_run(run_dir), (MapSpec("pca", 2),)) == [MapSpec("pca", 2)]


@pytest.mark.slow  # UMAP's first import compiles numba code (~15 s)
def test_precompute__the_standard_set_is_twelve_maps_and_leaves_none_missing(run_dir):
    assert len(STANDARD) == 12 and len(set(STANDARD)) == 12
    assert len(precompute(run_dir)) == 12
    run = load_run(run_dir)
    assert missing(run) == []
    assert stored(run, MapSpec("umap", 3, before=True)).coords.shape == (120, 3)
