"""Widgets shared by several pages: the active-run guard, live job progress, thumbnails, the run summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import streamlit as st

from embedder.errors import EmbedderError
from embedder.plots import training_curves
from embedder.run import Run, is_run, list_runs

from . import cache, jobs, state

POLL_SECONDS = 1.0


def active_run() -> Run | None:
    """The active run, or None after telling the user why there is none (never a traceback)."""
    path = state.active_run_path()
    job = jobs.registry().get(path)
    if job is not None and job.running:
        st.info(f"Training **{path.name}** in the background — this page fills in when it is done.", icon=":material/hourglass_top:")
        job_panel(path, show_curves=False)
        return None
    if not is_run(path):
        st.warning(f"No run at `{path}` yet. Train one on the **Train** page or pick one on **Home**.", icon=":material/folder_open:")
        return None
    try:
        return cache.get_run(path)
    except EmbedderError as exc:
        st.error(str(exc))
        return None


def job_panel(out: Path, show_curves: bool = True, cancel: bool = True) -> None:
    """Live progress of the job training into ``out``, polled every second while it runs."""
    job = jobs.registry().get(out)
    if job is None:
        return
    st.fragment(run_every=POLL_SECONDS if job.running else None)(_job_view)(str(out), show_curves, cancel)


def _job_view(out: str, show_curves: bool, cancel: bool) -> None:
    job = jobs.registry().get(out)
    if job is None:
        return
    if job.running:
        elapsed = time.time() - job.started
        st.progress(job.fraction(), text=f"{job.describe()} · {elapsed:.0f} s")
        if cancel and st.button("Cancel training", key=f"cancel-{out}", icon=":material/stop:"):
            job.cancel()
            st.toast("Stopping after the current batch…")
    else:
        _announce_finish(job)
    if show_curves and job.history:
        st.plotly_chart(training_curves(job.history, height=260, max_epochs=job.cfg.epochs), key=f"curves-{out}-{len(job.history)}",
                        config={"displayModeBar": False})
    elif show_curves and job.running:
        st.caption("Curves appear after the first epoch.")
    for note in job.notes:
        st.caption(f":material/info: {note}")


def _announce_finish(job: jobs.TrainJob) -> None:
    if job.status == "done":
        st.success(f"Run **{job.out.name}** is ready and active.", icon=":material/check_circle:")
    elif job.status == "cancelled":
        st.warning(job.error or "cancelled", icon=":material/stop_circle:")
    else:
        st.error(job.error or "training failed")
    # The first time this session sees the job finished: make the new run active and refresh the whole page.
    seen = st.session_state.setdefault("finished_jobs", set())
    key = (str(job.out), job.started)
    if key not in seen:
        seen.add(key)
        if job.status == "done":
            state.set_active_run(job.out)
        st.rerun()


def thumbnails(paths: Sequence[str | Path], captions: Sequence[str], columns: int = 8, side: int = cache.THUMB) -> None:
    """A grid of images with captions; an unreadable file shows its name instead of breaking the grid."""
    for start in range(0, len(paths), columns):
        cells = st.columns(columns)
        for cell, path, caption in zip(cells, paths[start:start + columns], captions[start:start + columns]):
            with cell:
                try:
                    st.image(cache.thumbnail(str(path), side), caption=caption)
                except EmbedderError:
                    st.caption(f":material/broken_image: {Path(path).name}\n\n{caption}")


def run_summary(run: Run) -> None:
    """What the run is: data, backbone, gallery, and its headline test metrics."""
    mc, tc = run.model_config, run.train_config
    test = run.metrics.get("test", {})
    c = st.columns(4)
    c[0].metric("Gallery images", f"{len(run.gallery_paths):,}")
    c[1].metric("Labels", len(run.classes))
    c[2].metric("P@1 (held-out)", f"{test['precision_at_1']:.3f}" if "precision_at_1" in test else "–",
                delta=_delta(test, "precision_at_1"), help="Share of held-out images whose nearest gallery image "
                "has the same label. The delta is against raw pixels.")
    c[3].metric("kNN accuracy", f"{test['knn_accuracy']:.3f}" if "knn_accuracy" in test else "–",
                delta=_delta(test, "knn_accuracy"), help="Share of held-out images the app labels right.")
    data = "the digits demo set" if tc.data == "demo" else f"`{run.data_root}`"
    st.caption(
        f"Run **{run.name}** · data {data} · backbone **{mc.backbone}**{' (ImageNet-pretrained)' if mc.pretrained else ''}"
        f" · {mc.image_size}px · {run.gallery_embeddings.shape[1]}-d embeddings · kept {run.info.get('kept', '?')}"
        f" · created {run.info.get('created', '?')}"
    )


def _delta(test: dict, key: str) -> str | None:
    raw = test.get("baselines", {}).get("raw_pixels", {}).get(key)
    return f"{test[key] - raw:+.3f} vs raw pixels" if raw is not None and key in test else None


def run_picker(key: str = "run-picker") -> None:
    """Pick any run under the runs folder, or a run folder by path, and make it active."""
    runs = list_runs(state.runs_dir())
    current = state.active_run_path()
    options = [str(p) for p in runs]
    if str(current) not in options and is_run(current):
        options.insert(0, str(current))
    if options:
        chosen = st.selectbox("Runs", options, index=options.index(str(current)) if str(current) in options else 0,
                              format_func=lambda p: Path(p).name, key=key,
                              help=f"Run folders in {state.runs_dir()}, newest first")
        if chosen != str(current) and st.button("Load this run", key=f"{key}-load", type="primary"):
            state.set_active_run(chosen)
            st.rerun()
    with st.expander("Load a run from another folder"):
        path = st.text_input("Run folder", placeholder="/path/to/runs/my-run", key=f"{key}-path")
        if st.button("Load", key=f"{key}-path-load") and path:
            if is_run(Path(path).expanduser()):
                state.set_active_run(Path(path).expanduser())
                st.rerun()
            else:
                st.error(f"{path} is not a run folder (no config.json)")
