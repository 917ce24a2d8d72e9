"""Evaluate: the run's metrics next to its baselines, where it goes wrong, and the "unknown" trade-off."""

import pandas as pd
import streamlit as st

from embedder.answers.calibrate import calibrated_on
from embedder.maps.charts import (
    at_threshold,
    confusion_heatmap,
    metrics_bars,
    metrics_rows,
    per_class_bars,
    reliability_diagram,
    threshold_curve,
    training_curves,
)
from embedder.runs.records import Disjoint, Evaluation, Reliability
from embedder.search.index import describe as describe_index
from ui import state, widgets

state.require_app(__file__)

st.title("Evaluate")
run = widgets.active_run()
if run is None:
    st.stop()


def _interval(diagram: Reliability) -> str:
    """ " [low, high]" from a reliability diagram's bootstrap interval; nothing for a run evaluated before it."""
    ci = diagram.ece_ci
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None and len(ci) == 2 else ""


def metric_table(scores: Evaluation | Disjoint) -> None:
    table = pd.DataFrame(metrics_rows(scores, scores.baselines)).set_index("model")
    st.dataframe(table.style.format("{:.3f}", na_rep="–").highlight_max(axis=0, color="#D8F3DC"), width="stretch")


record = run.record
test = record.test
if not test:
    st.info(
        "This run has no test metrics (trained without held-out images). Evaluate it from the command line "
        "with `python -m embedder evaluate RUN --queries FOLDER`."
    )
else:
    st.caption(
        f"{test.n_queries or 0:,} held-out images queried against {len(run.gallery_paths):,} gallery "
        "images. Baselines use the same queries, gallery and metrics, measured in the same call."
    )
    if test.n_unmatched_queries:
        st.warning(f"{test.n_unmatched_queries} queries have a label with no gallery image; they are not scored.")
    metric_table(test)
    st.plotly_chart(metrics_bars(test, test.baselines), config={"displayModeBar": False}, key="metrics-bars")
    disjoint = test.class_disjoint
    if disjoint:
        st.subheader("Classes the model never saw")
        st.caption(
            f"{disjoint.n_queries or 0} images of classes held out of training retrieve each other "
            "(leave-one-out): what you get by adding a new class without retraining."
        )
        metric_table(disjoint)
    with st.expander("What the metrics mean"):
        st.markdown(
            "- **P@1** — share of queries whose nearest gallery image has the same label.\n"
            "- **R-Precision** — for a label with R gallery images: the share of same-label images among the "
            "query's R nearest.\n"
            "- **MAP@R** — like R-Precision, but rewarding the right images for coming first.\n"
            f"- **kNN accuracy** — share labelled right by the app's vote of the {test.knn_k or 5} nearest "
            f"(at k=1: {test.knn_accuracy_at_1 or 0:.3f}; best k={test.best_k or '?'}: "
            f"{test.knn_accuracy_at_best_k or 0:.3f}; mean over classes: {test.macro_accuracy or 0:.3f})."
        )

    if test.confusion:
        st.subheader("Where it goes wrong")
        left, right = st.columns([3, 2])
        with left:
            st.markdown("**Confusion matrix** (kNN vote; rows are the true label)")
            st.plotly_chart(confusion_heatmap(test.confusion), config={"displayModeBar": False}, key="confusion")
        with right:
            st.markdown("**Accuracy per class**, worst first")
            st.plotly_chart(per_class_bars(test.per_class), config={"displayModeBar": False}, key="per-class")
        pairs = test.confused_pairs
        if pairs:
            st.markdown("**Most confused pairs** — each query next to the gallery image that pulled it the wrong way")
            for pair in pairs[:4]:
                with st.container(border=True):
                    st.markdown(f"true **{pair.true}** → predicted **{pair.predicted}** · {pair.count}×")
                    paths, captions = [], []
                    for ex in pair.examples:
                        paths += [ex.query, ex.neighbour]
                        captions += [f"query ({pair.true})", f"neighbour ({pair.predicted})"]
                    widgets.thumbnails(paths, captions, columns=6)
        else:
            st.success("No held-out query was labelled wrong.")

    calibration = test.calibration
    if calibration and calibration.after:
        st.subheader("Can the confidence be trusted?")
        before, after = calibration.before, calibration.after
        st.caption(
            f"Of the held-out answers given with 90% confidence, about 90% should be right. Expected calibration "
            f"error on {after.n} held-out images: **{after.ece:.3f}**{_interval(after)} for the calibrated "
            f"confidence (fitted on {calibrated_on(record)}) against {before.ece:.3f}{_interval(before)} for "
            "the raw vote share (95% bootstrap intervals)."
        )
        st.plotly_chart(reliability_diagram(before, after), config={"displayModeBar": False}, key="reliability")

    open_set = test.open_set
    if open_set and open_set.curve:
        st.subheader('"Unknown": when to refuse an answer')
        unknown = record.unknown
        calibrated = unknown.threshold if unknown and unknown.threshold is not None else open_set.threshold
        st.caption(
            "Each held-out image is also asked with its own class removed from the gallery, as an image of a class "
            f"the run has never seen. Known vs unknown by nearest distance: AUROC **{open_set.auroc:.3f}**. "
            f"The run's threshold, {calibrated:.3f}, was set for {open_set.target_precision:.0%} precision on "
            f'{calibrated_on(record, confidence=False)}; Query answers "unknown" beyond it.'
        )
        curve = open_set.curve
        chosen = st.slider(
            "Distance threshold",
            0.0,
            float(curve[-1].threshold),
            float(calibrated),
            step=float(curve[-1].threshold) / 200,
            format="%.3f",
            key="eval-threshold",
        )
        point = at_threshold(curve, chosen)
        c = st.columns(3)
        c[0].metric("Queries answered", f"{point.coverage:.1%}")
        c[1].metric("Accuracy of answers", f"{point.accuracy:.1%}")
        c[2].metric("Unknown images accepted", f"{point.unknown_accepted:.1%}")
        st.plotly_chart(threshold_curve(curve, calibrated, chosen), config={"displayModeBar": False}, key="threshold")

    novel = test.novelty
    if record.novelty and record.novelty.off:
        st.caption(f"No test of images unlike the gallery (a photo on a digits run): {record.novelty.off}.")
    elif novel:
        st.caption(
            f"Images unlike anything in the gallery (a photo on a digits run, noise, a blank frame) are answered "
            f'"unknown" too: farther than {novel.threshold:.3f} from every gallery image in the network\'s '
            f"features. Of the held-out images, all of the gallery's kind, {novel.novel} of {novel.n:,} "
            f"were taken for such ({novel.share:.1%})."
        )

    if record.index:
        st.caption(describe_index(record.index))

st.subheader("Training history")
st.caption(f"Kept: {run.info.get('kept', '?')}")
if record.k is not None:
    st.caption(f"Votes with {record.k.why}")
if run.history:
    st.plotly_chart(training_curves(run.history), config={"displayModeBar": False}, key="history")
else:
    st.caption("No epochs were trained in this run.")
