"""ui/access.py: which server folders a browser may name, and how paths are shown to it."""

from __future__ import annotations

import os

import pytest

from embedder.errors import EmbedderError
from ui import access


@pytest.fixture
def roots(monkeypatch, tmp_path):
    shared, runs = tmp_path / "shared", tmp_path / "runs"
    (shared / "photos" / "cat").mkdir(parents=True)
    runs.mkdir()
    (shared / "out").symlink_to(tmp_path / "private")
    (shared / "loop").symlink_to(shared / "loop")
    (tmp_path / "private").mkdir()
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", os.pathsep.join([str(shared), str(runs)]))
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    return shared


def test_shared_path__inside_a_root_by_absolute_path_or_by_the_root_name(roots):
    assert access.shared_path(str(roots / "photos")) == roots / "photos"
    assert access.shared_path("shared/photos/cat") == roots / "photos" / "cat"
    assert access.shared_path(str(roots / "photos" / ".." / "photos")) == roots / "photos"
    assert access.shared_path(str(roots / "missing")) == roots / "missing"  # existence is checked later


@pytest.mark.parametrize(
    "typed",
    [
        "/etc",
        "/",
        "~",
        "/nonexistent/x",
        "{root}/..",
        "{root}/photos/../../private",
        "{root}/out",
        "{root}/out/x",
        "{root}/loop",
        "relative/elsewhere",
    ],
)
def test_shared_path__outside_is_refused_with_the_same_message(roots, typed):
    with pytest.raises(EmbedderError) as exc:
        access.shared_path(typed.format(root=roots))
    assert str(exc.value) == access.OUTSIDE


def test_shared_folder__inside_but_missing_names_it_relative_to_its_root(roots):
    with pytest.raises(EmbedderError, match="^data folder not found: shared/photos/dog$"):
        access.shared_folder(str(roots / "photos" / "dog"))


def test_default_roots_are_data_the_runs_folder_and_the_demo_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("EMBEDDER_DATA_ROOTS", raising=False)
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EMBEDDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path / "..")
    expected = {(tmp_path / "..").resolve() / "data", tmp_path / "runs", tmp_path / "cache"}
    assert set(access.data_roots()) == expected


def test_display_and_public_never_show_an_absolute_path(roots, tmp_path):
    assert access.display(roots / "photos" / "cat") == "shared/photos/cat"
    assert access.display(roots) == "shared"
    assert access.display(tmp_path / "runs" / "demo") == "runs/demo"
    assert access.display("/opt/secret/place/run7") == "run7"
    message = f"damaged run {tmp_path}/runs/x: missing model.pt; no images in /srv/a b/c (see cat/1.jpg, https://x/y)"
    assert (
        access.public(message)
        == "damaged run runs/x: missing model.pt; no images in a b/c (see cat/1.jpg, https://x/y)"
    )
