"""Insights-page glue: the run's findings computed once per run version (cached), and one section per finding.

Paths shown are relative to the run's data (or queries) folder; server paths never reach the browser.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import streamlit as st

from embedder.insights import export
from embedder.insights.explain import BatchDraw, Explanation, explain_batch
from embedder.insights.findings import (
    CLEAR_SCORE,
    GalleryFindings,
    Judgement,
    LeakFindings,
    gallery_findings,
    leak_findings,
)

from . import cache, corrections, widgets

SHOW_SUSPECTS = 8  # suspects shown with their neighbours; the CSV holds them all
NEIGHBOURS_SHOWN = 5
PAIRS_SHOWN = 8
OUTLIERS_SHOWN = 12


@st.cache_resource(max_entries=4, show_spinner="Searching every gallery image's neighbours…")
def _gallery(path: str, version: float) -> GalleryFindings:
    return gallery_findings(cache.get_run(path))


@st.cache_resource(max_entries=4, show_spinner="Embedding the held-out queries…")
def _leaks(path: str, version: float, threshold: float) -> LeakFindings | None:
    return leak_findings(cache.get_run(path), threshold)


@st.cache_resource(max_entries=16, show_spinner="Embedding a batch with the network before training…")
def _explain(path: str, version: float, seed: int) -> Explanation:
    return explain_batch(cache.get_run(path), BatchDraw(seed=seed))


def findings(run) -> GalleryFindings:
    return _gallery(str(run.path), cache.stamp(run.path))


def _query_name(path) -> str:
    """A held-out image as label folder / file name: enough to find it, without the server's folders."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def mislabels(run, found: GalleryFindings) -> None:
    suspects, judged = found.mislabels, found.judgement
    files, names = run.gallery_files(), run.label_names(run.gallery_labels)
    st.caption(
        f"**{len(suspects)}** of {len(files):,} gallery images have neighbours that mostly carry another label, "
        f"judged in **{judged.space}**" + _how_judged(judged)
    )
    corrections.announce()
    corrections.panel(run, "insights-corrections")
    if not suspects:
        st.success("No image's neighbours outvote its label.")
        return
    clear = len(judged.clear)
    st.caption(f"**{clear}** of them are clear: {_why_clear(judged)}. Their suggestions are the ones worth accepting.")
    corrections.accept_top(run, suspects, "insights-suspects", clear)
    for rank, s in enumerate(suspects[:SHOW_SUSPECTS], start=1):
        with st.container(border=True, key=f"suspect-{rank}"):
            st.markdown(
                f"**#{rank}** `{run.gallery_paths[s.row]}` is labelled **{run.classes[s.label]}** — its neighbours "
                f"say **{run.classes[s.suggested]}** (score {s.score:.2f}, {s.disagreement:.0%} disagree)"
            )
            nn = list(zip(s.neighbours[:NEIGHBOURS_SHOWN], s.distances[:NEIGHBOURS_SHOWN]))
            widgets.thumbnails(
                [files[s.row]] + [files[j] for j, _ in nn],
                [f"{names[s.row]} → {run.classes[s.suggested]}"] + [f"{names[j]} · d = {d:.3f}" for j, d in nn],
                columns=NEIGHBOURS_SHOWN + 1,
                side=72,
            )
            corrections.suspect_actions(run, s.row, run.classes[s.suggested], f"suspect-{rank}")
    records = [
        {
            "path": run.gallery_paths[s.row],
            "label": run.classes[s.label],
            "suggested": run.classes[s.suggested],
            "score": round(s.score, 4),
            "disagreement": round(s.disagreement, 3),
            "clear": s.clear,
        }
        for s in suspects
    ]
    st.download_button(
        "Download all suspects (CSV)",
        export.to_csv(records),
        file_name=f"{run.name}-mislabels.csv",
        mime="text/csv",
        key="insights-mislabels-csv",
        icon=":material/download:",
    )


def _how_judged(judged: Judgement) -> str:
    if judged.method == "cleanlab":
        return " (a network fine-tuned on wrong labels learns them, so its own space would hide them)."
    return (
        f". Ranked by how many of their {judged.neighbours.idx.shape[1]} nearest disagree, times how much nearer the "
        "other label is than their own: a flipped label sits inside another class, an odd but right one between two."
    )


def _why_clear(judged: Judgement) -> str:
    if judged.method == "cleanlab":
        return (
            f"cleanlab's find_label_issues lists them from each image's {judged.neighbours.idx.shape[1]} nearest "
            "(its own label unlikely for its class)"
        )
    return (
        f"score ≥ {CLEAR_SCORE}: every neighbour disagrees and the image's own label is at least twice as far as "
        "another"
    )


def _pairs(left: list, right: list, captions: list) -> None:
    paths = [p for pair in zip(left, right) for p in pair]
    widgets.thumbnails(paths, [c for pair in captions for c in pair], columns=8, side=72)


def duplicates(run, found: GalleryFindings) -> None:
    files, names = run.gallery_files(), run.label_names(run.gallery_labels)
    pairs = found.duplicates
    st.caption(
        f"Pairs closer than **{found.threshold:.4f}** (a tenth of the median distance from a gallery image to its "
        f"nearest neighbour). **{len(pairs)}** pairs inside the gallery."
    )
    shown = pairs[:PAIRS_SHOWN]
    _pairs(
        [files[p.a] for p in shown],
        [files[p.b] for p in shown],
        [(f"{names[p.a]} · #{p.a}", f"{names[p.b]} · d = {p.distance:.4f}") for p in shown],
    )
    leak = _leaks(str(run.path), cache.stamp(run.path), found.threshold)
    st.markdown("**Held-out queries that are in the gallery** (a leak: retrieval finds the copy, not the class)")
    if leak is None:
        st.caption("This run has no held-out queries to check.")
        return
    e = leak.effect
    c = st.columns(3)
    c[0].metric("Leaked queries", len(leak.pairs))
    c[1].metric("P@1 as measured", f"{e.with_leak:.3f}")
    c[2].metric("P@1 without the leaked images", f"{e.without_leak:.3f}", delta=f"{-e.inflation:+.3f}")
    shown = leak.pairs[:PAIRS_SHOWN]
    _pairs(
        [leak.paths[p.a] for p in shown],
        [files[p.b] for p in shown],
        [(f"query {_query_name(leak.paths[p.a])}", f"gallery {names[p.b]} · d = {p.distance:.4f}") for p in shown],
    )


def outliers(run, found: GalleryFindings) -> None:
    files, names = run.gallery_files(), run.label_names(run.gallery_labels)
    st.caption(
        f"Gallery images farthest from everything: mean distance to their {found.neighbours.idx.shape[1]} nearest."
    )
    top = found.outliers[:OUTLIERS_SHOWN]
    widgets.thumbnails(
        [files[o.row] for o in top], [f"{names[o.row]} · {o.score:.3f}" for o in top], columns=OUTLIERS_SHOWN, side=72
    )


def triplets(run) -> None:
    seed = st.session_state.get("insights-batch", 0)
    e = _explain(str(run.path), cache.stamp(run.path), seed)
    files, names = run.gallery_files(), run.label_names(run.gallery_labels)
    before = {
        "pretrained": "the plain pretrained features",
        "raw pixels": "raw pixels (the imported network was trained elsewhere)",
    }.get(e.before_name, "the untrained network")
    st.caption(
        f"One batch of {len(e.rows)} gallery images, measured by {before} (before) and by the trained model "
        f"(after). Margin {e.margin}: a triplet is *easy* when the negative is farther than the positive by the "
        "margin, *semi-hard* when farther but inside it, *hard* when nearer."
    )
    table = {when: [e.counts[when][k] for k in ("easy", "semihard", "hard")] for when in ("before", "after")}
    st.dataframe({"triplets in the batch": ["easy", "semi-hard", "hard"], **table}, hide_index=True)
    for i, t in enumerate(e.triplets):
        with st.container(border=True, key=f"triplet-{i}"):
            widgets.thumbnails(
                [files[t.anchor], files[t.positive], files[t.negative]],
                [f"anchor · {names[t.anchor]}", f"positive · {names[t.positive]}", f"negative · {names[t.negative]}"],
                columns=3,
                side=64,
            )
            b, a = t.before, t.after
            st.markdown(
                f"before: d(a,p) {b.ap_distance:.3f}, d(a,n) {b.an_distance:.3f} — **{b.kind}** · "
                f"after: d(a,p) {a.ap_distance:.3f}, d(a,n) {a.an_distance:.3f} — **{a.kind}**"
            )
    if st.button("Another batch", key="insights-another-batch", icon=":material/shuffle:"):
        st.session_state["insights-batch"] = seed + 1
        st.rerun()


def _projector_zip(run) -> bytes:
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        out = export.projector(run, Path(tmp) / "projector")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(export.PROJECTOR_FILES - {export.MARKER}):
                zf.write(out.out / name, f"{run.name}-projector/{name}")
    return buf.getvalue()


def _bundle_zip(run) -> bytes:
    buf = io.BytesIO()
    export.bundle_zip(run.path, buf)
    return buf.getvalue()


def exports(run) -> None:
    """Downloads made when clicked (a callable each), so an unused export costs nothing."""
    c = st.columns(3)
    c[0].download_button(
        "Embedding Projector files (.zip)",
        lambda: _projector_zip(run),
        file_name=f"{run.name}-projector.zip",
        mime="application/zip",
        key="insights-projector",
        help="tensors.tsv, metadata.tsv, sprite.png and projector_config.pbtxt for projector.tensorflow.org",
    )
    c[1].download_button(
        "Gallery as CSV",
        lambda: export.to_csv(
            export.selection_rows(run, range(len(run.gallery_paths)), cache.get_projection(run.path, "pca", 2).coords)
        ),
        file_name=f"{run.name}-gallery.csv",
        mime="text/csv",
        key="insights-gallery-csv",
        help="id, path, label, PCA x and y, and the ids of the 5 nearest gallery images",
    )
    c[2].download_button(
        "Run bundle (.zip)",
        lambda: _bundle_zip(run),
        file_name=f"{run.name}.zip",
        mime="application/zip",
        key="insights-bundle",
        help="the run folder's own files: model, gallery, index, splits, metrics",
    )


def mislabel_score(run) -> np.ndarray:
    """(N,) each gallery image's suspected-mislabel score (0 for images whose neighbours agree with their label),
    for the maps' "Colour by"; from the same cached findings as this page."""
    scores = np.zeros(len(run.gallery_labels), dtype=np.float32)
    for s in findings(run).mislabels:
        scores[s.row] = s.score
    return scores
