"""The embedding map as Explore and Query share it: the view (projection, dimensions, colour, highlighted labels),
kept in the URL so a link reopens it; cached projections; selections that survive reruns and link two maps.

URL (st.query_params): run, method, dims, colour, labels (comma-separated), item (a gallery row), compare.

Environment:
    EMBEDDER_MAP_POINTS  the most points a map sends to the browser (default 200,000); above it a sample that
                         keeps every label's share is drawn over a density image of all of them, and a box or
                         lasso still selects among all of them (on the server).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import streamlit as st

from embedder.errors import EmbedderError
from embedder.images.data import stratified_sample
from embedder.maps import mapdata
from embedder.maps.plots import Colouring, MapFigure, Queries, embedding_map
from embedder.maps.precompute import STANDARD, MapSpec
from embedder.maps.project import FIT_CAP, Projection
from embedder.maps.regions import rows_inside
from embedder.runs.run import Run

from . import cache, mapjobs, state
from .insights import mislabel_score

POINT_CAP = 200_000  # drawn in full up to here (≈6 bytes a point); above it a stratified sample is drawn
POINT_CAP_ENV = "EMBEDDER_MAP_POINTS"
METHODS = {"PCA": "pca", "t-SNE": "tsne", "UMAP": "umap"}
NAMES = {v: k for k, v in METHODS.items()}  # pca -> PCA
COLOURS = {"label": "Label", "predicted": "Predicted label", "correct": "Right / wrong"}
# Per-row scores in [0, 1] to colour by: name -> fn(run) -> (N,) array; each becomes a "Colour by" choice.
SCORES: dict[str, Callable[[Run], np.ndarray]] = {"suspected mislabel": mislabel_score}
SETTINGS = "map_settings"  # session_state: (method, dims); a plain key, so it outlives Explore's widgets
SELECTED = "map_selected"  # session_state: gallery rows selected on any map of this run (np.ndarray)
TRACES = "map_traces"  # session_state: chart key -> (its MapFigure less the figure, all its map's coordinates)
WAIT = {
    "pca": "Projecting…",
    "tsne": "Running t-SNE (can take a minute)…",
    "umap": "Running UMAP (the first time loads numba: ~15 s)…",
}
URL = "map_url"  # session_state: the query parameters the session was opened with
WIDGETS = {"method": "map_method", "dims": "map_dims", "colour": "map_colour", "labels": "map_labels"}


@dataclass
class View:
    method: str  # pca | tsne | umap
    dims: int  # 2 | 3
    colour: str  # a COLOURS key or a SCORES name
    labels: list[str]  # highlighted labels (the rest greyed out); empty: all


def settings() -> tuple[str, int]:
    return st.session_state.get(SETTINGS, ("pca", 2))


def keep_url() -> None:
    """Before anything can switch pages: keep the link's parameters (a deep link to a fresh server is sent
    through app.py first, and that switch drops them)."""
    if URL not in st.session_state:
        st.session_state[URL] = dict(st.query_params)


def restore_from_url() -> None:
    """Once per session, before any widget: open the run and the view a shared link names (kept by ``keep_url``).
    A run is named by its folder name under the runs folder, never by a path."""
    params = st.session_state.get(URL)
    if params is None or st.session_state.get("map_url_read"):
        return
    st.session_state["map_url_read"] = True
    state.open_linked_run(params)  # app.py did already, before the sidebar; a page run alone does it here
    method = {v: k for k, v in METHODS.items()}.get(params.get("method", ""))
    defaults = {
        WIDGETS["method"]: method,
        WIDGETS["dims"]: {"2": "2D", "3": "3D"}.get(params.get("dims", "")),
        WIDGETS["colour"]: params.get("colour") if params.get("colour") in (*COLOURS, *SCORES) else None,
        WIDGETS["labels"]: [x for x in params.get("labels", "").split(",") if x] or None,
        "map_compare": params.get("compare") == "1" or None,
    }
    for key, value in defaults.items():
        if value is not None:
            st.session_state[key] = value
    if params.get("item", "").isdigit():
        st.session_state["map_item"] = int(params["item"])


def controls(run: Run) -> View:
    """Method, dimension, colour and highlight pickers; the method and view are remembered for the Query page."""
    method, dims = settings()
    names = list(METHODS)
    c1, c2, c3 = st.columns([3, 1, 2])
    label = c1.segmented_control(
        "Projection",
        names,
        default=names[list(METHODS.values()).index(method)],
        key=WIDGETS["method"],
        help="PCA is instant; t-SNE and UMAP show local clusters better",
    )
    shape = c2.segmented_control("View", ["2D", "3D"], default=f"{dims}D", key=WIDGETS["dims"])
    choices = {**COLOURS, **{name: name.capitalize() for name in SCORES}}
    colour = c3.selectbox("Colour by", list(choices), format_func=choices.get, key=WIDGETS["colour"])
    if st.session_state.get(WIDGETS["labels"]):  # a label the URL named but this run lacks is dropped
        st.session_state[WIDGETS["labels"]] = [x for x in st.session_state[WIDGETS["labels"]] if x in run.classes]
    labels = st.multiselect(
        "Highlight labels",
        run.classes,
        placeholder=f"type to find one of {len(run.classes)} labels; the rest is greyed out",
        key=WIDGETS["labels"],
    )
    view = View(METHODS[label or "PCA"], int((shape or "2D")[0]), colour or "label", labels)
    st.session_state[SETTINGS] = (view.method, view.dims)
    return view


def share(run: Run, view: View, compare: bool, item: int | None) -> None:
    """Write the view into the URL, so that the address bar is a link to it."""
    params = {"run": run.name, "method": view.method, "dims": str(view.dims), "colour": view.colour}
    if view.labels:
        params["labels"] = ",".join(view.labels)
    if compare:
        params["compare"] = "1"
    if item is not None:
        params["item"] = str(item)
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def projection(run: Run, method: str, dims: int, before: bool = False) -> Projection | None:
    """The run's map (``before``: the map of its gallery before training): the one stored in the run, at once.
    While the background job (ui/mapjobs.py) still computes it: None, after drawing the job's progress (the page
    reruns itself when the map is stored). PCA, and a map no job could store, are computed here and cached."""
    proj = cache.get_stored_projection(run.path, method, dims, before)
    if proj is not None:
        return proj
    job = mapjobs.ensure(run) if mapjobs.enabled() else None
    if job is not None and job.active and (method != "pca" or before):
        waiting(run, str(MapSpec(method, dims, before)))
        return None
    try:
        if before:
            before_embeddings(run)
        with st.spinner(WAIT[method]):
            return cache.get_projection(run.path, method, dims, before=before)
    except EmbedderError as exc:
        st.error(str(exc))
        return None


def waiting(run: Run, wanted: str) -> None:
    """The background job's progress towards the map ``wanted`` (a ``MapSpec`` in words), polled every second;
    the whole page reruns once that map is stored or the job is over."""
    st.fragment(run_every=mapjobs.POLL_SECONDS)(_waiting_view)(str(run.path), wanted)


def _waiting_view(path: str, wanted: str) -> None:
    job = mapjobs.get(path)
    if job is None or not job.active or wanted in job.ready:
        st.rerun()
    if job.status == "queued":
        text = f"{wanted}: waiting for another run's maps to finish"
    else:
        left = f" · about {job.eta_s:.0f} s left" if job.eta_s is not None else ""
        text = (
            f"{wanted} is being computed in the background, once for this run: now {job.current} · "
            f"{len(job.ready)} of {len(STANDARD)} maps ready{left}"
        )
    st.progress(job.fraction, text=text)


def fit_note(proj: Projection) -> str:
    if not proj.sampled:
        return ""
    return (
        f" Fitted on a {proj.fitted_on:,}-image sample that keeps every label's share (at most {FIT_CAP:,}); "
        f"the other {len(proj.coords) - proj.fitted_on:,} are placed at their nearest sample images' mean."
    )


def point_cap() -> int:
    """The most points a map draws: ``EMBEDDER_MAP_POINTS`` when it is a positive whole number, else POINT_CAP
    (a slow client may want fewer; the browser tests use fewer to sample a small run)."""
    raw = os.environ.get(POINT_CAP_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else POINT_CAP


def sample_rows(run: Run, rows: np.ndarray, select: bool = False) -> np.ndarray:
    """``rows``, or above ``point_cap()`` a stratified sample of them, said in a caption (``select``: the map
    takes a box or lasso, which counts every point, drawn or not)."""
    cap = point_cap()
    if len(rows) <= cap:
        return rows
    keep = rows[stratified_sample(run.gallery_labels[rows], cap)]
    n = len(rows)
    st.caption(
        f"Drawing {len(keep):,} of {n:,} points, a sample that keeps every label's share; the shading beneath "
        f"shows where all {n:,} lie."
        + (f" A box or lasso selects among all {n:,}, drawn or not; a click picks the point clicked." if select else "")
    )
    return keep


def colouring(run: Run, view: View, rows: np.ndarray) -> Colouring:
    """What colours ``rows`` on the map: groups (label, predicted label, right/wrong) or a score."""
    names = np.array(run.classes)
    if view.colour in SCORES:
        return Colouring(names[run.gallery_labels[rows]], score=SCORES[view.colour](run)[rows])
    if view.colour == "label":
        return Colouring(names[run.gallery_labels[rows]])
    predicted = predicted_labels(run)
    if view.colour == "predicted":
        return Colouring(names[predicted[rows]], legend_title="predicted")
    right = predicted[rows] == run.gallery_labels[rows]
    return Colouring(np.where(right, "right", "wrong"), legend_title=f"k-NN vote (k = {run.train_config.k})")


def predicted_labels(run: Run) -> np.ndarray:
    bar = st.progress(0.0, text="Voting each gallery image's label from its neighbours (once per run)…")
    try:
        return cache.get_predicted(run.path, lambda d, t: bar.progress(d / max(t, 1), text=f"vote: {d:,} / {t:,}"))
    finally:
        bar.empty()


def before_embeddings(run: Run) -> np.ndarray:
    kind = mapdata.before_kind(run)
    bar = st.progress(0.0, text=f"Embedding the gallery with the {kind} network (once per run)…")
    try:
        return cache.get_before(run.path, lambda d, t: bar.progress(d / max(t, 1), text=f"{kind}: {d:,} / {t:,}"))
    finally:
        bar.empty()


def draw(
    m: MapFigure, key: str, focus: np.ndarray | None = None, select: bool = True, coords: np.ndarray | None = None
) -> None:
    """Draw a map; a selection made on it becomes the rows in ``SELECTED`` (and survives the redraw). The
    selection, else the ``focus`` rows (highlighted labels), stay bright; the rest is greyed out, not removed.
    ``coords``: every point of a map that draws a sample of them (N, 2); a box or lasso then selects among all."""
    if SELECTED in st.session_state and len(st.session_state[SELECTED]):
        m.highlight(st.session_state[SELECTED])
    elif focus is not None:
        m.highlight(focus)
    # The coordinates are the cached projection's own array (st.cache_resource): kept by reference, not copied.
    st.session_state.setdefault(TRACES, {})[key] = (MapFigure(None, m.trace_rows, m.grid), coords)
    if not select:
        st.plotly_chart(m.figure, key=key)
        return
    st.plotly_chart(m.figure, key=key, on_select=lambda: _selected(key), selection_mode=("points", "box", "lasso"))


def selected_rows(key: str, selection: Mapping) -> np.ndarray:
    """Gallery rows of a selection on the map drawn under ``key``: on a sampled map a box or lasso holds every
    point inside it (answered here over all the map's coordinates, not only the drawn sample); a click, or any
    selection on a map that draws every point, holds the points Plotly reports."""
    m, coords = st.session_state[TRACES][key]
    inside = None if coords is None else rows_inside(m.to_grid(coords), selection)
    return inside if inside is not None else m.rows_of(selection.get("points") or [])


def _selected(key: str) -> None:
    """on_select: the chart's selection -> gallery rows, kept apart from the chart (a new figure is a new widget)."""
    event = st.session_state.get(key) or {}
    st.session_state[SELECTED] = selected_rows(key, event.get("selection") or {})
    st.session_state.pop("map_item", None)


def query_map(run: Run, embeddings: np.ndarray, names: list[str], neighbor_idx: np.ndarray) -> None:
    """The current map with the queries as stars (t-SNE cannot place new points: at their neighbours' mean)."""
    method, dims = settings()
    proj = projection(run, method, dims)
    if proj is None:  # still being computed: the instant map meanwhile
        method, proj = "pca", projection(run, "pca", dims)
    if proj is None:
        return
    rows = sample_rows(run, np.arange(len(run.gallery_paths)))
    m = embedding_map(
        proj.coords[rows],
        Colouring(np.array(run.classes)[run.gallery_labels[rows]]),
        rows,
        queries=Queries(proj.place(embeddings, neighbor_idx), names),
        height=520,
        everything=proj.coords if len(rows) < len(proj.coords) else None,
    )
    st.plotly_chart(m.figure, key="query-map")
    placed = method == "tsne" or proj.linear is None and proj.model is None
    st.caption(
        f"{method.upper() if method != 'tsne' else 't-SNE'} {dims}D map — change it on the Explore page."
        + (" This map cannot place new points, so each star sits at its neighbours' mean." if placed else "")
    )
