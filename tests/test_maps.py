"""ui/maps.py: the map's method and view are remembered between pages, big galleries are drawn as a stratified
sample, and the Explore page draws every point of a run."""

from __future__ import annotations

import json

from helpers import open_app
from streamlit.testing.v1 import AppTest

from embedder.run import load_run
from ui import maps


def _controls_script():
    import streamlit as st

    from ui import maps

    st.session_state["chosen"] = maps.controls()


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
    from embedder.run import Run
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
    rows = maps.sample_rows(run, np.arange(n))
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
    assert [c.value for c in at.caption] == [
        "Showing 50,000 of 100,000 points (a sample that keeps every label's share)."
    ]


def test_explore_draws_every_gallery_point_in_2d_then_3d(app_env):
    at = open_app("pages/explore.py")
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sum(len(t["customdata"]) for t in figure["data"]) == len(load_run(app_env).gallery_paths)
    assert {t["type"] for t in figure["data"]} == {"scattergl"}

    at.segmented_control(key="map_dims").set_value("3D").run()
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["type"] for t in figure["data"]} == {"scatter3d"}
