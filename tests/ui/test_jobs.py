"""ui/jobs.py: the training queue, driven with real (tiny) trainings on generated shapes. Waits are on the
job's own signals (``wait``, ``wait_until``), never on a clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from embedder.config import TrainConfig
from embedder.errors import EmbedderError
from embedder.progress import Progress, Stage
from ui.jobs import STAGE_WORDS, UNEXPECTED, JobRegistry, TrainJob

TRAINING = ("train", "epoch")


def _cfg(data: Path, out: Path, long: bool = False, **kw) -> TrainConfig:
    # A long one has no validation share, so nothing stops it before its 500 epochs: it runs until cancelled.
    epochs, val = (500, 0.0) if long else (1, 0.1)
    return TrainConfig(data=str(data), out=str(out), epochs=epochs, val_fraction=val, **kw)


def _wait(job: TrainJob, seconds: float = 90) -> None:
    assert job.wait(seconds), f"{job.out.name} is still {job.status} after {seconds} s"
    assert not job.active


@pytest.fixture
def registry():
    reg = JobRegistry(max_running=1)
    yield reg
    for job in reg.all():
        job.cancel()
    for job in reg.all():
        _wait(job)


@pytest.mark.slow
def test_queue__one_trains_the_others_wait_in_order_and_start_when_the_slot_frees(registry, shapes_folder, tmp_path):
    long = registry.start(_cfg(shapes_folder, tmp_path / "long", long=True))
    second = registry.start(_cfg(shapes_folder, tmp_path / "second"))
    third = registry.start(_cfg(shapes_folder, tmp_path / "third"))
    assert (long.status, second.status, third.status) == ("running", "queued", "queued")
    assert (registry.position(long), registry.position(second), registry.position(third)) == (None, 1, 2)

    long.cancel()
    _wait(second)
    assert second.status == "done", second.error
    _wait(third)
    assert third.status == "done", third.error
    assert long.status == "cancelled"
    # One at a time: each started after the one before it had finished.
    assert long.finished <= second.started and second.finished <= third.started


@pytest.mark.slow
def test_queue__cancel_takes_a_waiting_job_out_at_once(registry, shapes_folder, tmp_path):
    long = registry.start(_cfg(shapes_folder, tmp_path / "long", long=True))
    waiting = registry.start(_cfg(shapes_folder, tmp_path / "waiting"))
    after = registry.start(_cfg(shapes_folder, tmp_path / "after"))
    waiting.cancel()
    assert waiting.status == "cancelled" and waiting.error == "training cancelled before it started"
    assert registry.position(after) == 1
    long.cancel()
    _wait(after)
    assert after.status == "done"
    assert waiting.result is None and not (tmp_path / "waiting").exists()


@pytest.mark.slow
def test_queue__the_same_folder_is_one_job(registry, shapes_folder, tmp_path):
    job = registry.start(_cfg(shapes_folder, tmp_path / "run", long=True))
    assert registry.start(_cfg(shapes_folder, tmp_path / "run")) is job  # the app's own demo start
    with pytest.raises(EmbedderError, match="being trained already"):
        registry.start(_cfg(shapes_folder, tmp_path / "run"), exclusive=True)  # a browser's start


@pytest.mark.slow
def test_queue__the_cap_comes_from_the_environment(monkeypatch, shapes_folder, tmp_path):
    monkeypatch.setenv("EMBEDDER_MAX_TRAININGS", "2")
    reg = JobRegistry()
    jobs = [reg.start(_cfg(shapes_folder, tmp_path / f"run{i}", long=True)) for i in range(3)]
    try:
        assert [j.status for j in jobs] == ["running", "running", "queued"]
    finally:
        for job in reversed(jobs):
            job.cancel()
        for job in jobs:
            _wait(job)


@pytest.mark.slow
def test_an_unexpected_failure_is_one_line_for_the_user_and_a_trace_in_the_log(
    registry, shapes_folder, tmp_path, caplog
):
    (tmp_path / ".run.partial").write_text("")  # where the first checkpoint goes: a file, not a folder
    job = registry.start(_cfg(shapes_folder, tmp_path / "run", selection="holdout"))  # a holdout run checkpoints
    with caplog.at_level(logging.ERROR, logger="ui.jobs"):
        _wait(job)
    assert job.status == "failed" and job.error == UNEXPECTED
    assert "Traceback" in caplog.text and str(tmp_path) in caplog.text


@pytest.mark.slow
def test_a_cancelled_running_job_frees_its_slot(registry, shapes_folder, tmp_path):
    long = registry.start(_cfg(shapes_folder, tmp_path / "long", long=True))
    assert long.wait_until(lambda j: j.stage in TRAINING, timeout=60), long.error
    long.cancel()
    _wait(long)
    assert long.status == "cancelled"
    nxt = registry.start(_cfg(shapes_folder, tmp_path / "next"))
    assert nxt.status == "running"
    _wait(nxt)


@pytest.mark.slow
def test_cancel_during_validation_stops_within_a_batch_and_the_next_job_waits_until_it_has(registry, tmp_path):
    import time

    from tests.helpers import make_shapes_folder

    # 90 validation images embedded one at a time: a cancel lands in the middle of the pass.
    data = make_shapes_folder(tmp_path / "shapes", per_class=60)
    cfg = _cfg(data, tmp_path / "long", long=True, image_size=96, batch_size_embed=1, selection="holdout")
    cfg.val_fraction = 0.5
    long = registry.start(cfg)
    assert long.wait_until(lambda j: j.stage == "validate" and 2 <= j.done < j.total // 2, timeout=180), long.stage
    total, cancelled_at = long.total, time.perf_counter()
    long.cancel()
    nxt = registry.start(_cfg(data, tmp_path / "next"))  # EMBEDDER_MAX_TRAININGS=1: it waits for the first to stop
    _wait(long)
    seconds = time.perf_counter() - cancelled_at
    assert long.status == "cancelled" and long.stage == "validate"
    assert long.done < total  # it stopped inside the validation pass (before: it embedded all of it, then stopped)
    _wait(nxt)
    assert nxt.status == "done" and nxt.started >= long.finished  # never two trainings at once
    print(f"cancel during validation: stopped {seconds:.2f} s after it, at {long.done} of {total} images")


@pytest.mark.slow
def test_wait__times_out_on_a_running_job_and_returns_once_it_is_over(registry, shapes_folder, tmp_path):
    long = registry.start(_cfg(shapes_folder, tmp_path / "long", long=True))
    assert long.wait(0.05) is False and long.running
    assert long.wait_until(lambda j: j.epoch >= 1, timeout=60)  # an epoch in: the predicate saw a progress report
    long.cancel()
    assert long.wait(60) is True and long.status == "cancelled"
    assert long.wait(0) is True  # and stays over
    assert long.wait_until(lambda j: j.stage == "never", timeout=60) is False  # an ended job wakes every waiter


@pytest.mark.slow
def test_wait__a_job_cancelled_in_the_queue_is_over_at_once(registry, shapes_folder, tmp_path):
    registry.start(_cfg(shapes_folder, tmp_path / "long", long=True))
    waiting = registry.start(_cfg(shapes_folder, tmp_path / "waiting"))
    assert waiting.wait(0) is False
    waiting.cancel()
    assert waiting.wait(0) is True and waiting.status == "cancelled"


def test_progress__every_stage_has_words_and_the_bar_never_goes_back(tmp_path):
    job = TrainJob(TrainConfig(data="demo", out=str(tmp_path / "run"), epochs=2))
    # as a training reports them: the first answer, its evaluation, the epochs, the trained network's run
    first = [Stage.SCAN, Stage.PLAN, Stage.EMBED, Stage.INDEX, Stage.CALIBRATE, Stage.WRITE, Stage.QUERYABLE]
    first += [Stage.EVALUATE, Stage.BASELINES, Stage.WRITE]
    training = [Progress(stage, done=1, total=2, epoch=e) for e in (1, 2) for stage in (Stage.TRAIN, Stage.VALIDATE)]
    training = [Progress(Stage.VALIDATE, done=1, total=2), *training, Progress(Stage.EPOCH, epoch=2)]
    last = [Stage.EMBED, Stage.INDEX, Stage.CALIBRATE, Stage.EVALUATE, Stage.WRITE, Stage.MAP, Stage.DONE]
    reports = [*(Progress(s) for s in first), *training, *(Progress(s) for s in last)]
    assert {p.stage for p in reports} == set(Stage) - {Stage.NOTE}  # a new stage must be added here too
    shown = []
    for p in reports:
        job.on_progress(p)
        assert job.describe().split(":")[0] == STAGE_WORDS[p.stage.value]
        shown.append(job.fraction())
    assert shown == sorted(shown) and shown[-1] == 1.0, shown
    assert shown[len(first) - 1] <= 0.1 < shown[len(first) + 2]  # the first answer is the first tenth
    assert job.queryable


def test_progress__cross_validation_says_which_fold_and_about_how_long_is_left(tmp_path):
    from embedder.progress import EpochStats

    job = TrainJob(TrainConfig(data="demo", out=str(tmp_path / "run"), epochs=40))
    job.on_progress(Progress(Stage.TRAIN, done=3, total=6, epoch=7, loss=0.2, extra={"fold": 2, "folds": 4}))
    assert job.describe() == "Training: fold 2 of 4, epoch 7 of at most 40 · loss 0.2000"
    stats = EpochStats(7, 0.2, 0.5, 0.3, 0.9, 0.9, 0.8, 30.0)
    job.on_progress(Progress(Stage.EPOCH, epoch=7, stats=stats, extra={"seconds_left": 300.0}))
    job.on_progress(Progress(Stage.TRAIN, done=1, total=6, epoch=8, extra={"fold": 1, "folds": 4}))
    assert job.describe().endswith("epoch 8 of at most 40 · loss 0.2000 · about 5 min left")


def test_progress__a_note_is_kept_and_leaves_the_stage_alone(tmp_path):
    job = TrainJob(TrainConfig(data="demo", out=str(tmp_path / "run"), epochs=3))
    job.on_progress(Progress(Stage.TRAIN, done=5, total=10, epoch=2, loss=0.25))
    job.on_progress(Progress(Stage.NOTE, message="left out 1 class folder(s) with no usable image: empty"))
    assert job.notes == ["left out 1 class folder(s) with no usable image: empty"]
    assert job.describe() == "Training: epoch 2 of at most 3 · loss 0.2500"
    assert job.fraction() == pytest.approx(0.1 + 0.8 * 1.5 / 3)  # after the first answer's tenth
