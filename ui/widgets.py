"""Widgets shared by several pages: the active-run guard, live job progress, thumbnails, the run summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from embedder.errors import EmbedderError
from embedder.maps.charts import training_curves
from embedder.runs.records import Evaluation, Scores, Standing, Upgrade
from embedder.runs.run import Run, is_run, list_runs

from . import access, auth, cache, jobs, mapjobs, state

POLL_SECONDS = 1.0
IMPROVING_POLL_SECONDS = 3.0  # a line at the top of every page: refreshed less often


def active_run() -> Run | None:
    """The active run, or None after telling the user why there is none (never a traceback). While a training
    improves a run that answers already, the run is returned under a line saying so."""
    path = state.active_run_path()
    job = jobs.registry().get(path)
    if job is not None and job.active and not is_run(path):
        doing = "Training" if job.running else "Waiting to train"
        st.info(
            f"{doing} **{path.name}** in the background — this page fills in as soon as it can answer "
            "(seconds: before any training).",
            icon=":material/hourglass_top:",
        )
        job_panel(path, show_curves=False, until_queryable=True)
        return None
    if job is not None and job.active:
        improving_panel(path)
    if not is_run(path):
        st.warning(
            f"No run **{path.name}** yet. Train one on the **Train** page or pick one on **Home**.",
            icon=":material/folder_open:",
        )
        return None
    try:
        run = cache.get_run(path)
    except EmbedderError as exc:
        st.error(access.public(str(exc)))
        return None
    _announce_upgrade(run)
    if mapjobs.enabled():
        mapjobs.ensure(run)  # a run just trained, added to or picked: its maps are computed once, in the background
    return run


def improving_panel(out: Path) -> None:
    """One line while a training improves the run at ``out``, which answers meanwhile: where it is and about how
    long is left (polled every few seconds)."""
    st.fragment(run_every=IMPROVING_POLL_SECONDS)(_improving_view)(str(out))


def _improving_view(out: str) -> None:
    job = jobs.registry().get(out)
    if job is None or not job.active:
        if job is not None and job.status == "done":
            st.rerun()  # the trained network was swapped in, or kept out: show the run as it is now
        return
    doing = job.describe() if job.running else "waiting for another training to finish"
    answers = "its first answer" if job.queryable else "the run it had"
    st.caption(
        f":material/trending_up: Improving **{Path(out).name}** in the background ({answers} answers "
        f"meanwhile): {doing}"
    )


def _announce_upgrade(run: Run) -> None:
    """Once per session and run version: what the last training did to the run's first answer."""
    upgrade = run.record.upgrade
    seen = st.session_state.setdefault("seen_upgrades", set())
    key = (str(run.path), str(upgrade.at if upgrade is not None else None))
    if upgrade is None or key in seen:
        return
    seen.add(key)
    if upgrade.result == "replaced":
        st.toast(upgrade_words(upgrade), icon=":material/trending_up:")


def upgrade_words(upgrade: Upgrade) -> str:
    """What training did, in words: "Training improved the run: label accuracy 0.975 -> 0.981 on held-out images"."""
    if upgrade.result == "kept":
        return "Training did not beat the first answer, which the run keeps."
    if upgrade.result == "cancelled":
        return "Training was cancelled; the run answers with its first answer."
    before, after = upgrade.before or Standing(), upgrade.after or Standing()
    for was, now, where in (
        (before.test, after.test, "held-out images"),
        (before.validation, after.validation, "validation images"),
    ):
        if was is not None and now is not None:
            return f"Training improved the run: label accuracy {was:.3f} → {now:.3f} on {where}."
    return "Training improved the run."


def job_panel(out: Path, show_curves: bool = True, cancel: bool = True, until_queryable: bool = False) -> None:
    """Live progress of the job training into ``out``, polled every second while it waits or runs;
    ``until_queryable``: the whole page is drawn again as soon as the run answers (its first answer)."""
    job = jobs.registry().get(out)
    if job is None:
        return
    view = st.fragment(run_every=POLL_SECONDS if job.active else None)(_job_view)
    view(str(out), show_curves, cancel, until_queryable)


def _job_view(out: str, show_curves: bool, cancel: bool, until_queryable: bool = False) -> None:
    job = jobs.registry().get(out)
    if job is None:
        return
    if until_queryable and job.queryable and is_run(out):
        st.rerun()  # the page that waited for a run can show it now
    name = Path(out).name  # widget keys reach the browser: the run's name, never its server path
    if job.status == "queued":
        position = jobs.registry().position(job)
        st.info(f"queued: position {position or 1} — another training is running", icon=":material/schedule:")
    elif job.running:
        elapsed = time.time() - job.started
        st.progress(job.fraction(), text=f"{job.describe()} · {elapsed:.0f} s")
        if job.queryable:
            st.caption(
                f":material/check_circle: **{name}** answers already, from features that need no training; this "
                "training replaces them only if it labels clearly better."
            )
    else:
        _announce_finish(job)
    if (
        cancel
        and job.active
        and auth.may_cancel(job)
        and st.button("Cancel training", key=f"cancel-{name}", icon=":material/stop:")
    ):
        job.cancel()
        st.toast("Stopping after the current batch…" if job.running else "Taken out of the queue.")
    if show_curves and job.history:
        st.plotly_chart(
            training_curves(job.history, height=260, max_epochs=job.cfg.epochs),
            key=f"curves-{name}-{len(job.history)}",
            config={"displayModeBar": False},
        )
    elif show_curves and job.running and job.cfg.epochs:  # an import has no epochs
        st.caption("Curves appear after the first epoch.")
    for note in job.notes:
        st.caption(f":material/info: {access.public(note)}")


def other_jobs(own: str | None) -> None:
    """The other trainings of this server, kept current while any is active: a list drawn once would go on
    saying "Also training" about a job that has since been cancelled or finished."""
    active = any(j.active and str(j.out) != own for j in jobs.registry().all())
    st.fragment(run_every=POLL_SECONDS if active else None)(_other_jobs_view)(own)


def _other_jobs_view(own: str | None) -> None:
    for job in jobs.registry().all():
        if job.active and str(job.out) != own:
            doing = "training" if job.running else "waiting to train"
            st.caption(f"Also {doing}: **{job.out.name}** — " + (job.describe() if job.running else "queued"))


def _announce_finish(job: jobs.TrainJob) -> None:
    if job.status == "done":
        st.success(f"Run **{job.out.name}** is ready and active.", icon=":material/check_circle:")
    elif job.status == "cancelled":
        st.warning(access.public(job.error or "cancelled"), icon=":material/stop_circle:")
    else:
        st.error(access.public(job.error or "training failed"))
    # The first time this session sees the job finished: make the new run active and refresh the whole page.
    seen = st.session_state.setdefault("finished_jobs", set())
    key = (str(job.out), job.started)
    if key not in seen:
        seen.add(key)
        if job.status == "done":
            state.set_active_run(job.out)
        st.rerun()


def skip_report(skipped, data_root: Path) -> tuple[int, list[dict], list[str]]:
    """(count, [{"path", "reason"}], empty class folders) from a run's ``info["skipped"]``: a dict
    ``{"count", "by_reason", "files", "empty_classes"}``, or, in older runs, a list of paths, or nothing."""

    def where(p) -> str:
        p = Path(str(p))
        if not p.is_absolute():
            return p.as_posix()
        return p.relative_to(data_root).as_posix() if p.is_relative_to(data_root) else access.display(p)

    if isinstance(skipped, dict):
        files = [f for f in skipped.get("files") or [] if isinstance(f, dict)]
        rows = [{"path": where(f.get("path", "?")), "reason": str(f.get("reason", "unknown"))} for f in files]
        count = skipped.get("count")
        empty = [str(c) for c in skipped.get("empty_classes") or []]
        return (count if isinstance(count, int) else len(rows)), rows, empty
    if isinstance(skipped, list):
        rows = [{"path": where(p), "reason": "unreadable"} for p in skipped if isinstance(p, str)]
        return len(rows), rows, []
    return 0, [], []


def skipped_files(path: Path) -> None:
    """An expander naming the files the run at ``path`` skipped, with the reason, and the class folders without
    images. Nothing while the run is missing, unreadable (other widgets say so) or being trained."""
    job = jobs.registry().get(path)
    if not is_run(path) or (job is not None and job.active):
        return
    try:
        run = cache.get_run(path)
    except EmbedderError:
        return
    count, rows, empty = skip_report(run.info.get("skipped"), run.data_root)
    if not count and not empty:
        return
    label = f"{count} file{'s' if count != 1 else ''} skipped" + (
        f", {len(empty)} empty class folder(s)" if empty else ""
    )
    with st.expander(label, icon=":material/warning:"):
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch", key="skipped-files")
            if len(rows) < count:
                st.caption(f"The first {len(rows)} of {count}.")
        if empty:
            st.markdown("Class folders with no usable image: " + ", ".join(f"`{c}`" for c in empty))


def thumbnails(paths: Sequence[str | Path], captions: Sequence[str], columns: int = 8, side: int = cache.THUMB) -> None:
    """A grid of images with captions; an unreadable file shows its name instead of breaking the grid."""
    for start in range(0, len(paths), columns):
        cells = st.columns(columns)
        for cell, path, caption in zip(cells, paths[start : start + columns], captions[start : start + columns]):
            with cell:
                try:
                    st.image(cache.thumbnail_png(str(path), side), caption=caption)
                except EmbedderError:
                    st.caption(f":material/broken_image: {Path(path).name}\n\n{caption}")


def run_summary(run: Run) -> None:
    """What the run is: data, backbone, gallery, and its headline test metrics."""
    mc, tc = run.model_config, run.train_config
    record = run.record
    test = record.test or Evaluation()
    raw = test.baselines.get("raw_pixels", Scores())
    c = st.columns(4)
    c[0].metric("Gallery images", f"{len(run.gallery_paths):,}")
    c[1].metric("Labels", len(run.classes))
    c[2].metric(
        "P@1 (held-out)",
        f"{test.precision_at_1:.3f}" if test.precision_at_1 is not None else "–",
        delta=_delta(test.precision_at_1, raw.precision_at_1),
        help="Share of held-out images whose nearest gallery image "
        "has the same label. The delta is against raw pixels.",
    )
    c[3].metric(
        "kNN accuracy",
        f"{test.knn_accuracy:.3f}" if test.knn_accuracy is not None else "–",
        delta=_delta(test.knn_accuracy, raw.knn_accuracy),
        help="Share of held-out images the app labels right.",
    )
    data = "the digits demo set" if tc.data == "demo" else f"`{access.display(run.data_root)}`"
    weights = " (ImageNet-pretrained)" if mc.pretrained else ""
    st.caption(
        f"Run **{run.name}** · data {data} · backbone **{mc.backbone}**{weights}"
        f" · {mc.image_size}px · {run.gallery_embeddings.shape[1]}-d embeddings · kept {run.info.get('kept', '?')}"
        f" · created {run.info.get('created', '?')}"
    )
    if record.upgrade is not None:
        st.caption(f":material/trending_up: {upgrade_words(record.upgrade)}")
    elif record.improving is not None:
        st.caption(
            ":material/trending_up: This is the run's first answer, from features that need no training; a "
            "training was improving it when it was written."
        )


def _delta(trained: float | None, raw: float | None) -> str | None:
    return f"{trained - raw:+.3f} vs raw pixels" if trained is not None and raw is not None else None


def run_picker(key: str = "run-picker") -> None:
    """Pick any run under the runs folder, or a run folder inside the shared folders, and make it active."""
    runs = list_runs(state.runs_dir())
    current = state.active_run_path()
    options = [str(p) for p in runs]  # only format_func's names reach the browser, not these paths
    if str(current) not in options and is_run(current):
        options.insert(0, str(current))
    if options:
        chosen = st.selectbox(
            "Runs",
            options,
            index=options.index(str(current)) if str(current) in options else 0,
            format_func=lambda p: Path(p).name,
            key=key,
            help="Saved runs, newest first",
        )
        if chosen != str(current) and st.button("Load this run", key=f"{key}-load", type="primary"):
            state.set_active_run(chosen)
            st.rerun()
    with st.expander("Load a run from another folder"):
        path = st.text_input(
            "Run folder",
            placeholder="runs/my-run",
            key=f"{key}-path",
            help="A run folder inside the folders this server shares",
        )
        if st.button("Load", key=f"{key}-path-load") and path:
            try:
                state.set_active_run(access.shared_run(path))
            except EmbedderError as exc:
                st.error(str(exc))
            else:
                st.rerun()
