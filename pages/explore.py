"""Explore: the gallery as a map. Select points (box, lasso, click) to see their images and neighbours."""

import numpy as np
import streamlit as st

from embedder.data import stratified_sample
from embedder.plots import embedding_map
from ui import maps, state, widgets

state.require_app(__file__)

MAX_GRID = 48  # thumbnails shown for a selection

st.title("Explore")
run = widgets.active_run()
if run is None:
    st.stop()

method, dims = maps.controls()
names = np.array(run.label_names(run.gallery_labels))
keep = st.multiselect("Show labels", run.classes, placeholder="all labels", key="map_labels")
rows = np.flatnonzero(np.isin(names, keep)) if keep else np.arange(len(names))
proj = maps.projection(run, method, dims)
if proj is None:
    st.stop()
rows = maps.sample_rows(run, rows)

fig = embedding_map(proj.coords[rows], names[rows], row_ids=rows, hover=[run.gallery_paths[i] for i in rows])
event = st.plotly_chart(
    fig,
    on_select="rerun",
    selection_mode=("points", "box", "lasso"),
    key=f"map-{run.name}-{method}-{dims}-{','.join(keep)}",
)
st.caption(
    f"{len(rows):,} gallery images · {method.upper() if method != 'tsne' else 't-SNE'} {dims}D · "
    + (
        "drag a lasso or a box, or click a point, to see the images"
        if dims == 2
        else "rotate with the mouse; switch to 2D to select points"
    )
)

# customdata[0] is the gallery row: Plotly's own point indices restart in every trace.
points = event.selection.points if event and event.selection else []
selected = list(dict.fromkeys(int(p["customdata"][0]) for p in points if p.get("customdata") is not None))
if not selected:
    st.stop()

st.subheader(f"{len(selected)} selected")
counts = {}
for i in selected:
    counts[names[i]] = counts.get(names[i], 0) + 1
st.caption(" · ".join(f"**{lab}** × {n}" for lab, n in sorted(counts.items(), key=lambda kv: -kv[1])))
# A big lasso would otherwise show only the lowest row ids (one label); a stratified pick shows them all.
shown = [selected[i] for i in stratified_sample(names[selected], MAX_GRID)]
if len(selected) > MAX_GRID:
    st.caption(f"Showing {len(shown)} of {len(selected)}, every selected label in its share.")
files = run.gallery_files()
widgets.thumbnails([files[i] for i in shown], [f"{names[i]} · #{i}" for i in shown], columns=12, side=72)

left, right = st.columns([3, 1])
pick = left.selectbox(
    "Show the nearest neighbours of",
    shown,
    format_func=lambda i: f"#{i} · {names[i]} · {run.gallery_paths[i]}",
    key="map_pick",
)
k = right.slider("Neighbours", 1, 20, 8, key="map_k")
pairs = list(zip(*run.index().neighbors_of(pick, k)))
widgets.thumbnails(
    [files[pick]] + [files[j] for j, _ in pairs],
    [f"{names[pick]} (chosen)"] + [f"{names[j]} · d = {d:.3f}" for j, d in pairs],
    columns=min(k + 1, 12),
    side=72,
)
