"""Query: upload images, get each one's label from its nearest gallery neighbours, see them on the map."""

import numpy as np
import pandas as pd
import streamlit as st

from embedder.answers.calibrate import calibrated_on
from embedder.answers.predict import UNKNOWN
from ui import cache, maps, state, uploads, widgets

state.require_app(__file__)

st.title("Query")
run = widgets.active_run()
if run is None:
    st.stop()

st.caption(
    f"Upload images; each is labelled by a distance-weighted vote of its nearest images in **{run.name}**'s gallery."
)
left, right = st.columns([3, 1])
files = left.file_uploader(
    "Images to label",
    accept_multiple_files=True,
    key="query_files",
    help=f"PNG, JPEG, WebP, … — any number at once, up to {uploads.limit_mb()} MB each",
)
k = right.slider(
    "Neighbours (k)",
    1,
    20,
    min(20, run.train_config.k),
    key="query_k",
    help="How many gallery images vote (the run's k is the default)",
)
if not files:
    st.info(
        "Drop one or more images above. Try a digit from the demo set — or a photo of one you drew.",
        icon=":material/upload:",
    )
    st.stop()

queries = uploads.embed_uploads(run, files)
if not queries:
    st.stop()

predictor = cache.get_predictor(run.path)
threshold = predictor.calibrated_threshold
basis = calibrated_on(run.record)  # what the threshold and the confidence were fitted on, in words
far = (
    f"when even the nearest gallery image is farther than {threshold:.3f} (calibrated on {basis}; see Evaluate), or "
    if threshold is not None
    else ""
)
use_unknown = (threshold is not None or predictor.novelty_threshold is not None) and right.toggle(
    'Allow "unknown"',
    value=True,
    key="query_unknown",
    help=f'Answer "unknown" {far}when the image is unlike every gallery image',
)
features = None if any(q.features is None for q in queries) else np.stack([q.features for q in queries])
predictions = predictor.predict_embeddings(
    np.stack([q.embedding for q in queries]), [q.name for q in queries], k, use_unknown, features
)
for pred, query in zip(predictions, queries):
    with st.container(border=True):
        info, neighbours = st.columns([1, 4])
        with info:
            st.image(query.thumbnail, caption=pred.image)
            st.metric("Predicted label", pred.label, help="The label with the largest share of the neighbours' vote")
            if pred.label == UNKNOWN and pred.novel:
                st.caption(
                    f"Unlike every image in the gallery: {pred.novelty_distance:.3f} from the nearest in the "
                    f"network's features, farther than gallery images lie from each other "
                    f"({predictor.novelty_threshold:.3f}). Any label would be a guess; closest match: "
                    f"{next(iter(pred.votes))}."
                )
            elif pred.label == UNKNOWN:
                st.caption(
                    f"Nearest gallery image is {pred.nearest_distance:.3f} away, beyond {threshold:.3f}: "
                    f"nothing in the gallery is close. Closest match: {next(iter(pred.votes))}."
                )
            calibrated = f", calibrated on {basis}" if predictor.calibration else ": the vote share"
            if pred.label == UNKNOWN:  # a confidence bar here would say "99%" about a label that was not given
                st.markdown(f"**Closest match {next(iter(pred.votes))}, not trusted**")
                st.caption(
                    f"No confidence: the answer is unknown. The vote share ({pred.vote_share:.0%}) only says which "
                    "label the nearest gallery images have, not that this image is one."
                )
            else:
                st.progress(pred.confidence, text=f"confidence {pred.confidence:.0%}")
                st.caption(f"Probability the label is right{calibrated}. Vote share {pred.vote_share:.0%}.")
            st.caption(" · ".join(f"{label}: {share:.0%}" for label, share in pred.votes.items()))
        with neighbours:
            st.markdown(f"**{len(pred.neighbours)} nearest gallery images**")
            widgets.thumbnails(
                [n.path for n in pred.neighbours],
                [f"{n.label} · d = {n.distance:.3f}" for n in pred.neighbours],
                columns=min(k, 10),
            )

st.subheader("Where your images land on the map")
maps.query_map(
    run,
    np.stack([p.embedding for p in predictions]),
    [p.image for p in predictions],
    np.array([[n.index for n in p.neighbours] for p in predictions]),
)

rows = [p.to_row(run.gallery_paths) for p in predictions]
st.download_button(
    "Download results (CSV)",
    pd.DataFrame(rows).to_csv(index=False),
    file_name="predictions.csv",
    mime="text/csv",
    icon=":material/download:",
    key="query_csv",
)
