"""embedder/runs/writes.py: the system's refusals to write, named in a few words with what was being written."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch

from embedder.runs import writes


@pytest.mark.parametrize(
    "exc, words",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError(errno.EFBIG, "File too large"), "file too large for this system's file-size limit"),
        (OSError("Unable to write: No space left on device (28)"), "no space left on device"),  # Annoy's
        (OSError(errno.ENOENT, "No such file or directory"), "no such file or directory"),
    ],
)
def test_reason__a_few_lower_case_words(exc, words):
    assert writes.reason(exc) == words


def test_refusals_named__cleans_up_then_names_the_cause_and_what(tmp_path):
    half = tmp_path / "half.tmp"
    half.write_text("partial")
    refused = pytest.raises(writes.WriteRefused, match=r"^no space left on device writing runs/x$")
    with refused, writes.refusals_named("runs/x", cleanup=lambda: half.unlink()):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not half.exists()


def test_save_torch__loads_back_as_torch_save_wrote_it(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3), "epoch": 3}
    writes.save_torch(state, tmp_path / "c.pt")
    back = torch.load(tmp_path / "c.pt", weights_only=True)
    assert back["epoch"] == 3 and torch.equal(back["w"], state["w"])


QUIET = """
import os, sys
from embedder.runs.writes import c_stderr_quiet
with c_stderr_quiet():
    os.write(2, b"kept: printed by C code that succeeded\\n")
try:
    with c_stderr_quiet():
        os.write(2, b"dropped: C code's own account of its failure\\n")
        raise OSError(28, "No space left on device")
except OSError:
    print("error: ours", file=sys.stderr)
"""


def test_c_stderr_quiet__holds_back_what_c_code_printed_when_the_block_failed():
    done = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True, cwd=os.getcwd())
    assert done.stderr.splitlines() == ["kept: printed by C code that succeeded", "error: ours"]
