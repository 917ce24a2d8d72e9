"""ui/maps.py: the map's method and view are remembered between pages, big galleries are drawn as a stratified
sample, and the Explore page draws every point of a run."""

from __future__ import annotations

import json

import numpy as np
from streamlit.testing.v1 import AppTest

from embedder.runs.run import load_run
from tests.helpers import open_app
from ui import maps


def _controls_script():
    import streamlit as st

    from embedder.config import ModelConfig, TrainConfig
    from embedder.runs.run import Run
    from ui import maps

    run = Run(".", ModelConfig(), TrainConfig(), ["a", "b"], ".", [], None, None, {}, {})
    view = maps.controls(run)
    st.session_state["chosen"] = (view.method, view.dims)


def test_controls__pca_2d_first_then_the_choice_is_remembered_for_other_pages():
    at = AppTest.from_function(_controls_script).run()
    assert at.session_state["chosen"] == ("pca", 2)
    at.segmented_control(key="map_method").set_value("t-SNE")
    at.segmented_control(key="map_dims").set_value("3D").run()
    assert at.session_state["chosen"] == ("tsne", 3)
    assert at.session_state[maps.SETTINGS] == ("tsne", 3)  # what the Query page's map reads


def _sample_script():
    import numpy as np
    import streamlit as st

    from embedder.config import ModelConfig, TrainConfig
    from embedder.runs.run import Run
    from ui import maps

    n = st.session_state["n"]
    labels = np.array([0] * (n // 2) + [1] * (n // 4) + [2] * (n - n // 2 - n // 4))
    run = Run(
        path=".",
        model_config=ModelConfig(),
        train_config=TrainConfig(),
        classes=["a", "b", "c"],
        data_root=".",
        gallery_paths=[""] * n,
        gallery_labels=labels,
        gallery_embeddings=np.zeros((n, 2), np.float32),
        split={},
        info={},
    )
    rows = maps.sample_rows(run, np.arange(n), select=st.session_state.get("select", False))
    st.session_state["shares"] = np.bincount(labels[rows], minlength=3).tolist()
    st.session_state["unique"] = len(set(rows.tolist())) == len(rows)


def test_sample_rows__up_to_the_cap_every_point_is_drawn():
    at = AppTest.from_function(_sample_script)
    at.session_state["n"] = maps.POINT_CAP
    at.run()
    assert at.session_state["shares"] == [maps.POINT_CAP // 2, maps.POINT_CAP // 4, maps.POINT_CAP // 4]
    assert not at.caption


def test_sample_rows__above_the_cap_a_sample_keeps_each_labels_share_and_says_so():
    at = AppTest.from_function(_sample_script)
    at.session_state["n"] = 2 * maps.POINT_CAP
    at.run()
    assert at.session_state["shares"] == [maps.POINT_CAP // 2, maps.POINT_CAP // 4, maps.POINT_CAP // 4]
    assert at.session_state["unique"]
    n = 2 * maps.POINT_CAP
    drawn = f"Drawing {maps.POINT_CAP:,} of {n:,} points, a sample that keeps every label's share; "
    assert [c.value for c in at.caption] == [drawn + f"the shading beneath shows where all {n:,} lie."]
    at.session_state["select"] = True  # a map that takes a box or a lasso says that they count every point
    at.run()
    assert at.caption[0].value.endswith(
        f"A box or lasso selects among all {n:,}, drawn or not; a click picks the point clicked."
    )


def test_point_cap__the_environment_lowers_it_and_nonsense_keeps_the_default(monkeypatch):
    monkeypatch.setenv(maps.POINT_CAP_ENV, "5000")
    assert maps.point_cap() == 5000
    for nonsense in ("", "0", "-3", "lots", "1e6"):
        monkeypatch.setenv(maps.POINT_CAP_ENV, nonsense)
        assert maps.point_cap() == maps.POINT_CAP


def _selection_script():
    import numpy as np
    import streamlit as st

    from embedder.images.data import stratified_sample
    from embedder.maps.plots import Colouring, embedding_map
    from ui import maps

    rng = np.random.default_rng(0)
    coords = rng.normal(size=(4_000, 2)).astype(np.float32)
    labels = rng.integers(0, 4, len(coords))
    drawn = stratified_sample(labels, 400)
    m = embedding_map(coords[drawn], Colouring(labels[drawn].astype(str)), drawn, everything=coords)
    maps.draw(m, "map", coords=coords)
    # What Streamlit's frontend reports for a box, and for a click on the first drawn point of trace 0.
    box = {"points": [], "box": [{"xref": "x", "yref": "y", "x": [0, 32_000], "y": [0, 65_535]}], "lasso": []}
    click = {"points": [{"curve_number": 0, "point_index": 0}], "box": [], "lasso": []}
    st.session_state["box"] = maps.selected_rows("map", box)
    st.session_state["click"] = maps.selected_rows("map", click)
    st.session_state["left"] = np.flatnonzero(m.to_grid(coords)[:, 0] <= 32_000)  # the oracle: left of x
    st.session_state["first"] = m.trace_rows[0][:1]


def test_selected_rows__a_box_on_a_sampled_map_holds_every_point_in_it_a_click_the_point_clicked():
    at = AppTest.from_function(_selection_script).run()
    assert not at.exception
    box, left = at.session_state["box"], at.session_state["left"]
    assert box.tolist() == left.tolist() and len(box) > 1_000  # about half of 4,000, where 400 are drawn
    assert at.session_state["click"].tolist() == at.session_state["first"].tolist()


def _count(typed: dict | list) -> int:
    """Points in a Plotly typed array ({dtype, bdata}) as the browser decodes it (or in a plain list)."""
    import base64

    if isinstance(typed, list):
        return len(typed)
    return len(base64.b64decode(typed["bdata"])) // {"u2": 2, "i4": 4, "f4": 4, "f8": 8}[typed["dtype"]]


def test_explore_draws_every_gallery_point_in_2d_then_3d(app_env):
    at = open_app("pages/explore.py")
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sum(_count(t["x"]) for t in figure["data"]) == len(load_run(app_env).gallery_paths)
    assert {t["type"] for t in figure["data"]} == {"scattergl"}
    assert {t["x"]["dtype"] for t in figure["data"]} == {"u2"}  # typed arrays, not lists of numbers

    at.segmented_control(key="map_dims").set_value("3D").run()
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["type"] for t in figure["data"]} == {"scatter3d"}


def test_explore_compare_draws_before_and_after_and_a_selection_on_one_highlights_both(app_env):
    at = open_app("pages/explore.py")
    at.toggle(key="map_compare").set_value(True).run()
    assert not at.exception
    before, after = (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    n = len(load_run(app_env).gallery_paths)
    assert sum(_count(t["x"]) for t in before["data"]) == sum(_count(t["x"]) for t in after["data"]) == n
    table = at.dataframe[0].value
    assert list(table.columns)[:3] == ["label", "images", "P@1 before"] and len(table) == 10
    assert (table["MAP@R after"] > table["MAP@R before"]).mean() > 0.5  # 3 epochs of training help most digits
    # What a selection on either map leaves behind (maps._selected, turned into rows by MapFigure.rows_of).
    at.session_state[maps.SELECTED] = np.array([0, 1, 2])
    at.run()
    assert at.subheader[0].value == "3 selected"
    for spec in (json.loads(c.proto.spec) for c in at.get("plotly_chart")):
        assert (
            sum(_count(t["selectedpoints"]) for t in spec["data"] if "selectedpoints" in t) == 3
        )  # the same rows, on both maps


def test_explore_draws_the_selected_images_on_the_map_unless_turned_off(app_env):
    at = open_app("pages/explore.py")
    at.session_state[maps.SELECTED] = np.array([0, 1, 2])
    at.run()
    images = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["images"]
    assert len(images) == 3 and all(im["source"].startswith("data:image/jpeg;base64,") for im in images)
    at.toggle(key="map_images").set_value(False).run()
    assert "images" not in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]


def test_explore_opens_the_view_a_link_names_and_writes_the_view_back(app_env):
    from streamlit.testing.v1 import AppTest

    from tests.helpers import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update(run=app_env.name, method="pca", dims="3", colour="predicted", labels="7", item="5")
    at.run()
    at.switch_page("pages/explore.py").run()
    assert not at.exception
    assert at.segmented_control(key="map_dims").value == "3D"
    assert at.selectbox(key="map_colour").value == "predicted" and at.multiselect(key="map_labels").value == ["7"]
    assert at.selectbox(key="map_pick").value == 5
    assert dict(at.query_params) | {} == {
        "run": app_env.name,
        "method": "pca",
        "dims": "3",
        "colour": "predicted",
        "labels": "7",
        "item": "5",
    }


def test_explore_above_the_cap_draws_a_sample_over_all_points_and_answers_neighbours_from_all(app_env, monkeypatch):
    """A small run with the cap lowered (EMBEDDER_MAP_POINTS) stands in for a million-image one: the same code
    paths, seconds instead of minutes."""
    from embedder.images.data import stratified_sample

    monkeypatch.setenv(maps.POINT_CAP_ENV, "300")
    run = load_run(app_env)
    n = len(run.gallery_paths)
    drawn = stratified_sample(run.gallery_labels, 300)
    at = open_app("pages/explore.py")
    assert not at.exception
    assert any(c.value.startswith(f"Drawing {len(drawn):,} of {n:,} points") for c in at.caption)
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sum(_count(t["x"]) for t in figure["data"]) == len(drawn) < n
    assert [im["layer"] for im in figure["layout"]["images"]] == ["below"]  # the density of all n beneath
    # An undrawn image, selected (as a lasso would): its neighbours come from the index over the whole gallery.
    pick = int(np.setdiff1d(np.arange(n), drawn)[0])
    at.session_state[maps.SELECTED] = np.array([pick])
    at.run()
    assert not at.exception and at.selectbox(key="map_pick").value == pick
    ids, dists = run.index().neighbours_of(pick, 8)
    assert len(np.setdiff1d(ids, drawn)) > 0  # most of them are not on the map
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert [f"{run.classes[run.gallery_labels[j]]} · d = {d:.3f}" for j, d in zip(ids, dists)] == captions[-8:]
