"""Evaluate: held-out retrieval metrics of the active run next to its baselines, and its training history."""

import pandas as pd
import streamlit as st

from embedder.plots import metrics_bars, metrics_rows, training_curves
from ui import widgets

st.title("Evaluate")
run = widgets.active_run()
if run is None:
    st.stop()

test = run.metrics.get("test")
if not test:
    st.info("This run has no test metrics (trained without held-out images). Evaluate it from the command line "
            "with `python -m embedder evaluate RUN --queries FOLDER`.")
else:
    st.caption(f"{test.get('n_queries', 0):,} held-out images queried against {len(run.gallery_paths):,} gallery "
               "images. Baselines use the same queries and gallery.")
    table = pd.DataFrame(metrics_rows(test)).set_index("model")
    st.dataframe(table.style.format("{:.3f}", na_rep="–").highlight_max(axis=0, color="#D8F3DC"),
                 width="stretch")
    st.plotly_chart(metrics_bars(test), config={"displayModeBar": False}, key="metrics-bars")
    with st.expander("What the metrics mean"):
        st.markdown(
            "- **P@1** — share of queries whose nearest gallery image has the same label.\n"
            "- **R-Precision** — for a label with R gallery images: the share of same-label images among the "
            "query's R nearest.\n"
            "- **MAP@R** — like R-Precision, but rewarding the right images for coming first.\n"
            f"- **kNN accuracy** — share labelled right by the app's vote of the {test.get('knn_k', 5)} nearest."
        )
    index = run.metrics.get("index", {})
    if index:
        st.caption(f"Annoy index: {index.get('n_trees')} trees, recall@10 {index.get('recall_at_10', 0):.3f} "
                   "against exact search.")

st.subheader("Training history")
st.caption(f"Kept: {run.info.get('kept', '?')}")
if run.history:
    st.plotly_chart(training_curves(run.history), config={"displayModeBar": False}, key="history")
else:
    st.caption("No epochs were trained in this run.")
