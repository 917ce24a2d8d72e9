"""embedder/maps/project.py: 2-D / 3-D maps of embeddings. Shapes, same seed same map, placing new points, and the
user errors. Points are three hand-placed clusters on the unit sphere."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.errors import EmbedderError
from embedder.maps.project import project


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """t-SNE's OpenMP threads spin while they wait for each other: on a machine whose cores are busy with other
    work, a 30-point map took 30 s instead of 0.1 s. One thread gives the same maps at full speed."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


def _clusters(per: int = 10, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(3*per, dim) unit rows around three orthogonal axes, and their cluster ids."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim, dtype=np.float32)[:3]
    x = np.repeat(centres, per, axis=0) + 0.05 * rng.normal(size=(3 * per, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(3), per)


@pytest.mark.parametrize("method", ["pca", "tsne"])
@pytest.mark.parametrize("dims", [2, 3])
def test_project__one_float32_row_per_embedding_and_the_same_seed_gives_the_same_map(method, dims):
    x, _ = _clusters()
    a, b = project(x, method, dims, seed=3), project(x, method, dims, seed=3)
    assert a.method == method and a.coords.shape == (30, dims) and a.coords.dtype == np.float32
    np.testing.assert_array_equal(a.coords, b.coords)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project__clusters_stay_apart_on_the_map(method):
    x, ids = _clusters()
    coords = project(x, method, 2).coords
    centres = np.stack([coords[ids == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(coords[ids == c] - centres[c], axis=1).max() for c in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_place__pca_puts_a_gallery_row_where_the_map_has_it():
    x, _ = _clusters()
    proj = project(x, "pca", 2)
    np.testing.assert_allclose(proj.place(x[[4, 17]]), proj.coords[[4, 17]], atol=1e-5)
    assert proj.place(x[:1]).dtype == np.float32


def test_place__pca_projects_by_hand_onto_its_two_axes():
    x = np.array([[0, 0, 0], [2, 0, 0], [-2, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float32)  # spread: x, then y
    proj = project(x, "pca", 2)
    placed = proj.place(np.array([[1.0, 0.5, 7.0]], dtype=np.float32))
    np.testing.assert_allclose(np.abs(placed), [[1.0, 0.5]], atol=1e-5)  # z is dropped; each axis up to its sign


def test_place__tsne_puts_a_query_at_its_neighbours_mean():
    x, _ = _clusters()
    proj = project(x, "tsne", 2)
    placed = proj.place(x[:2], neighbor_idx=np.array([[0, 1, 2], [10, 11, 12]]))
    np.testing.assert_allclose(placed, [proj.coords[[0, 1, 2]].mean(0), proj.coords[[10, 11, 12]].mean(0)])
    with pytest.raises(ValueError, match="pass neighbor_idx"):
        proj.place(x[:2])


@pytest.mark.slow  # importing umap-learn compiles numba code: ~15 s
def test_project__umap_shape_same_seed_same_map_and_places_new_points():
    x, _ = _clusters()
    a, b = project(x, "umap", 2, seed=1), project(x, "umap", 2, seed=1)
    assert a.coords.shape == (30, 2) and a.coords.dtype == np.float32
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.place(x[:3]).shape == (3, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "mds"}, "unknown projection 'mds': choose one of pca, tsne, umap"),
        ({"dims": 4}, "--dims must be 2 or 3"),
        ({"dims": 1}, "--dims must be 2 or 3"),
    ],
)
def test_project__a_method_or_dimension_it_does_not_know_is_one_line(kwargs, message):
    with pytest.raises(EmbedderError) as info:
        project(_clusters()[0], **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("dims, n", [(2, 3), (3, 4), (2, 0)])
def test_project__too_few_points_for_a_map_says_how_many_are_needed(dims, n):
    with pytest.raises(EmbedderError) as info:
        project(_clusters()[0][:n], "pca", dims)
    assert str(info.value) == f"need at least {dims + 2} embeddings to draw a map, got {n}"
    project(_clusters()[0][: dims + 2], "tsne", dims)  # and that many is enough, even for t-SNE


def test_project__above_the_fit_cap_tsne_fits_a_sample_and_places_the_rest_at_their_nearest_sample_points():
    from embedder.maps.project import PLACE_K

    x, ids = _clusters(per=20)
    proj = project(x, "tsne", 2, labels=ids, fit_cap=15)
    assert proj.fitted_on == 15 and proj.sampled and proj.coords.shape == (60, 2)
    # Brute force: the placed rows sit at the mean of their PLACE_K nearest rows of the fitted sample.
    from embedder.images.data import stratified_sample

    fit_rows = stratified_sample(ids, 15)
    rest = np.setdiff1d(np.arange(60), fit_rows)
    d = np.linalg.norm(x[rest][:, None] - x[fit_rows][None], axis=2)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :PLACE_K]
    np.testing.assert_allclose(proj.coords[rest], proj.coords[fit_rows][nearest].mean(1), atol=1e-5)
    assert np.bincount(ids[fit_rows]).tolist() == [5, 5, 5]  # every cluster keeps its share


def test_cached_project__a_run_keeps_its_map_and_a_changed_gallery_gets_a_new_one(tmp_path):
    from embedder.maps.project import CACHE_DIR, MapKey, cached_project
    from embedder.runs.folders import MARKER

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / MARKER).write_text("")
    x, ids = _clusters()
    first = cached_project(run, x, MapKey("tsne", 2), ids)
    files = list((run / CACHE_DIR).glob("*.npz"))
    assert len(files) == 1
    again = cached_project(run, x, MapKey("tsne", 2), ids)
    np.testing.assert_array_equal(first.coords, again.coords)
    assert again.model is None and again.fitted_on == 30  # read back, not fitted again
    grown = np.concatenate([x, x[:3]])
    assert cached_project(run, grown, MapKey("tsne", 2)).coords.shape == (33, 2)
    assert len(list((run / CACHE_DIR).glob("*.npz"))) == 2


def test_cached_project__pca_read_back_still_places_queries(tmp_path):
    from embedder.maps.project import MapKey, cached_project
    from embedder.runs.folders import MARKER

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / MARKER).write_text("")
    x, _ = _clusters()
    cached_project(tmp_path, x, MapKey("pca", 2))
    back = cached_project(tmp_path, x, MapKey("pca", 2))
    assert back.model is None
    np.testing.assert_allclose(back.place(x[[4, 17]]), back.coords[[4, 17]], atol=1e-5)


def test_cached_project__writes_nothing_into_a_folder_that_is_not_a_run(tmp_path):
    from embedder.maps.project import MapKey, cached_project

    cached_project(tmp_path, _clusters()[0], MapKey("pca", 2))
    assert list(tmp_path.iterdir()) == []


def test_cached_project__a_damaged_or_pickled_cache_file_is_recomputed_never_unpickled(tmp_path):
    from embedder.maps.project import CACHE_DIR, MapKey, cached_project
    from embedder.runs.folders import MARKER
    from tests.helpers import Payload

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / MARKER).write_text("")
    x, _ = _clusters()
    cached_project(tmp_path, x, MapKey("pca", 2))
    (file,) = (tmp_path / CACHE_DIR).glob("*.npz")
    np.savez(file, coords=np.array([Payload(tmp_path / "pwned")], dtype=object), fitted_on=np.array(30))
    proj = cached_project(tmp_path, x, MapKey("pca", 2))
    assert proj.coords.shape == (30, 2) and not (tmp_path / "pwned").exists()
