"""A disk that says no, against `train` and `add`: one line naming the cause and the run, exit 2, every partial file
the command made removed (checkpoints, the .NAME.partial folder, the .NAME.tmp-* folder), the old run intact.

Two real refusals: a full tmpfs (mounted in a private namespace with ``unshare -rm``; skipped, saying so, where this
machine allows no user namespace), and a file-size limit (RLIMIT_FSIZE, which every machine has).

Before (issue 22): "unexpected RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos …", exit 1,
and a truncated .NAME.partial/checkpoint.tmp left behind.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_shapes_folder
from tests.hostile.harness import CODE, snapshot

DRIVER = Path(__file__).with_name("full_disk.py")


def _namespaces_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


needs_namespace = pytest.mark.skipif(not _namespaces_allowed(), reason="no user namespaces here to mount a tmpfs in")


def _on_full_disk(tmp_path: Path, megabytes: int, args: list[str], copy: Path | None = None) -> dict:
    mount = tmp_path / "disk"
    extra = ["--copy", str(copy)] if copy else []
    command = ["unshare", "-rm", sys.executable, str(DRIVER), str(mount), str(megabytes), *extra, "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **CODE})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def _refused(code: int, err: list[str], *words: str) -> str:
    """Exit 2 and the last line the one error (lines before it are progress), with ``words`` in it."""
    assert code == 2, err[-5:]
    errors = [line for line in err if line.startswith("error:") or "Traceback" in line or "unexpected" in line]
    assert errors == [err[-1]], err[-5:]
    for word in words:
        assert word in err[-1], err[-1]
    return err[-1]


@needs_namespace
def test_train_on_a_full_disk_names_it_and_leaves_no_checkpoint(tmp_path):
    data = make_shapes_folder(tmp_path / "shapes")
    out = tmp_path / "disk" / "runs" / "shapes"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--selection", "holdout"]
    got = _on_full_disk(tmp_path, 4, args)
    _refused(got["code"], got["err"], "no space left on device writing", "shapes")
    made = set(got["after"]) - set(got["before"])
    locks = {"runs/.shapes.lock", "runs/.shapes.training.lock"}
    assert made - locks <= {"runs"}, made  # the locks stay beside the run; nothing half-written does


@needs_namespace
def test_add_on_a_full_disk_names_it_and_keeps_the_old_run(tmp_path, digits_run):
    new = make_shapes_folder(tmp_path / "new", classes=("star",), per_class=4)
    run = f"{tmp_path}/disk/runs/{digits_run.name}"
    got = _on_full_disk(tmp_path, 16, ["add", run, str(new)], copy=digits_run)
    _refused(got["code"], got["err"], f"no space left on device writing {run}")
    made = set(got["after"]) - set(got["before"])
    assert made <= {f"runs/.{digits_run.name}.lock"}, made
    assert {k: v for k, v in got["after"].items() if k in got["before"]} == got["before"]  # the old run, intact


def _with_file_limit(kilobytes: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (kilobytes * 1024, resource.RLIM_INFINITY))

    return limit


def test_add_past_a_file_size_limit_names_it_and_keeps_the_old_run(tmp_path, digits_run):
    run = tmp_path / "runs" / "digits"
    shutil.copytree(digits_run, run)
    new = make_shapes_folder(tmp_path / "new", classes=("star",), per_class=4)
    before = snapshot(run)
    done = subprocess.run(
        [sys.executable, "-m", "embedder", "add", str(run), str(new)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **CODE},
        preexec_fn=_with_file_limit(256),  # model.pt is larger: the write fails part way
    )
    err = [line for line in done.stderr.splitlines() if line.strip()]
    _refused(done.returncode, err, "file too large for this system's file-size limit writing", str(run))
    assert snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir()) == [".digits.lock", "digits"]  # no .digits.tmp-* left


@pytest.mark.parametrize(
    "kilobytes, words, left",
    [
        (256, ["writing", "runs/shapes"], [".shapes.lock", ".shapes.training.lock"]),  # the first answer's model.pt
        (600, ["writing a checkpoint into", ".shapes.partial"], [".shapes.lock", ".shapes.training.lock", "shapes"]),
    ],
    ids=["first-answer", "checkpoint"],
)
def test_train_past_a_file_size_limit_leaves_no_checkpoint(tmp_path, kilobytes, words, left):
    """At 256 kB the first answer cannot be written; at 600 kB it is (and keeps answering), a checkpoint is not."""
    data = make_shapes_folder(tmp_path / "shapes")
    out = tmp_path / "runs" / "shapes"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--selection", "holdout"]
    done = subprocess.run(
        [sys.executable, "-m", "embedder", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **CODE},
        preexec_fn=_with_file_limit(kilobytes),
    )
    err = [line for line in done.stderr.splitlines() if line.strip()]
    _refused(done.returncode, err, "file too large", *words)
    assert sorted(p.name for p in out.parent.iterdir()) == left  # no .shapes.partial, no .shapes.tmp-* left
    if "shapes" in left:
        query = next(data.rglob("*.png"))
        predicted = subprocess.run(
            [sys.executable, "-m", "embedder", "predict", str(out), str(query)], capture_output=True, text=True
        )
        assert predicted.returncode == 0, predicted.stderr[-500:]
