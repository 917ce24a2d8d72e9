"""Every code block in README.md and docs/*.md, run for real, so what the documentation shows works.

A fenced code block is one of three kinds, and any other block fails ``test_every_block_is_run_or_says_why_not``:

- ```` ```text ````: output, a folder layout or a tree: shown, never run. A command in one fails the same test (a
  command belongs in a block that is run; its output in a text block after it).
- ``<!-- doc-test: run OPTIONS -->`` on the line before the block: run, in a fresh copy of the docs folder (below).
  A ```` ```bash ```` block runs line by line and each line must exit 0; a ```` ```python ```` block runs as a file
  in a fresh interpreter and must exit 0.
- ``<!-- doc-test: skip: REASON -->``: not run, for the reason given (it starts a server, needs a cluster, takes
  hours); the reason names the test that covers it, where one does.

OPTIONS, each visible in the Markdown source where it applies:

- ``train-flags="--epochs 0"``: appended to each ``python -m embedder train`` line (the run's first answer, from
  features that need no training, is written in seconds and training stops there).
- ``setup="COMMAND"``: a command run first, in the same way (e.g. the export that writes the file a block reads).
- ``args="A B C"``: a Python block's command-line arguments.
- ``check=label:FILE``: the first word the block prints is FILE's true label (beyond exiting 0).
- ``without=embedder``: the Python block must run without importing this package (checked with ``-X importtime``).

The docs folder, made once per session and copied for each block, holds what the commands name:

- ``runs/demo``: the digits demo's first answer (``train --data demo --epochs 0``: the pixels through a PCA head,
  what ``make run`` answers with within seconds; a trained run would cost this file minutes);
- ``runs/photos``: a run at 0 epochs on ``photos/`` (15 digits of each class);
- ``my_photos/``, ``cats_dogs/train``, ``cats_dogs/val``: generated shapes in class folders;
- ``digit.png`` and ``some.png``: one held-out digit the digits run labels right; ``other.jpg``: another;
  ``new.jpg``: a shape;
- ``more_digits/``, ``more_photos/``: a few digits in class folders under new names; ``new_photos/``: loose digits;
- ``my_embedder.onnx``, ``keras.onnx``: small generated networks, NCHW and NHWC (tests/verbs/test_import_model.py);
- ``$HOME`` is the folder itself, with ``~/.cache/embedder/digits`` the session's demo set (``--data demo`` reads
  the same set through ``EMBEDDER_CACHE``).

Bash lines of the form ``python -m embedder ARGS [> FILE]`` run as ``embedder.cli.main.main(ARGS)`` in this process
(what ``python -m embedder`` calls; a new process per line would import torch each time), any other line in bash.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, digits_subset, held_out_digit, make_shapes_folder

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(```+)\s*([\w+-]*)\s*$")
OPTIONS = {"train-flags", "setup", "args", "check", "without"}
COMMAND = re.compile(r"^\s*(\$ |python -m |\.venv/bin/python |make |torchrun |ray )")


@dataclass
class Block:
    """One fenced code block: where it is, its language, its code and the marker on the line before it."""

    page: Path
    line: int  # 1-based, the opening fence
    lang: str
    code: str
    marker: str | None
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of a Markdown page, with the ``doc-test`` marker just above it, if any."""
    lines = (page.read_text() if text is None else text).splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == opening.group(1))
        above = MARKER.match(lines[i - 1]) if i else None
        block = Block(page, i + 1, opening.group(2), "\n".join(lines[i + 1 : end]) + "\n", above and above.group(1))
        if block.marker and block.marker.startswith("run"):
            block.options = dict(part.split("=", 1) for part in shlex.split(block.marker[len("run") :]))
        found.append(block)
        i = end + 1
    return found


def problem(block: Block) -> str | None:
    """Why a block is neither run nor shown as output nor skipped with a reason; None when it is one of them."""
    if block.lang == "text":
        commands = [line for line in block.code.splitlines() if COMMAND.match(line)]
        return f"a text block shows commands {commands}: run them in a bash block" if commands else None
    if block.marker is None:
        return "no <!-- doc-test: run --> or <!-- doc-test: skip: REASON --> above it, and not ```text"
    if block.marker.startswith("skip:"):
        reason = block.marker[len("skip:") :].split()
        return None if len(reason) >= 3 else "a skip needs a reason of a few words"
    if not block.marker.startswith("run"):
        return f"unknown marker {block.marker!r}"
    if block.lang not in ("bash", "python"):
        return f"a run block must be bash or python, not {block.lang!r}"
    unknown = set(block.options) - OPTIONS
    return f"unknown options {sorted(unknown)}" if unknown else None


ALL = [b for page in PAGES for b in blocks(page)]
RUN = [b for b in ALL if b.marker and b.marker.startswith("run")]


def test_every_block_is_run_or_says_why_not():
    problems = [f"{b.name}: {problem(b)}" for b in ALL if problem(b)]
    assert not problems, "\n".join(problems)
    assert len(RUN) >= 10


def test_a_new_block_without_a_marker_fails():
    page = ROOT / "docs" / "new.md"
    text = "# New\n\n```bash\npython -m embedder predict runs/demo x.png\n```\n\n```text\n$ make run\n```\n"
    assert [problem(b) is not None for b in blocks(page, text)] == [True, True]
    skipped = "<!-- doc-test: skip: needs two machines -->\n```bash\ntorchrun x\n```\n"
    assert [problem(b) for b in blocks(page, skipped)] == [None]


def test_readme_is_short_and_says_make_run_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    assert any("make run" in line for line in lines[:40])


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http(s): not ours to check here
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", file.read_text(), flags=re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


# --- Running the blocks ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory, demo_cache) -> tuple[Path, dict[str, str]]:
    """The folder the blocks run in (see the module's docstring), and the true label of each image file in it."""
    from PIL import Image

    from embedder.config import TrainConfig
    from embedder.verbs.pipeline import train
    from tests.helpers import cfg
    from tests.verbs.test_import_model import SmallCNN, export

    root = tmp_path_factory.mktemp("docs")
    demo_run = root / "runs" / "demo"
    train(TrainConfig(data=str(demo_cache), out=str(demo_run), epochs=0))
    digits_subset(demo_cache, root / "photos")
    train(cfg(root / "photos", root / "runs" / "photos", epochs=0, selection="auto"))
    make_shapes_folder(root / "my_photos")
    make_shapes_folder(root / "cats_dogs" / "train", per_class=8)
    make_shapes_folder(root / "cats_dogs" / "val", per_class=4, seed=1)
    data, label = held_out_digit(demo_run)
    (root / "digit.png").write_bytes(data)
    (root / "some.png").write_bytes(data)
    Image.open(demo_cache / "7" / sorted(os.listdir(demo_cache / "7"))[-1]).convert("RGB").save(root / "other.jpg")
    Image.open(root / "my_photos" / "circle" / "000.png").save(root / "new.jpg")
    for folder in ("more_digits", "more_photos"):
        for d in range(10):
            (root / folder / str(d)).mkdir(parents=True)
            for f in sorted((demo_cache / str(d)).glob("*.png"))[-3:]:
                shutil.copy(f, root / folder / str(d) / f"new-{f.name}")
    (root / "new_photos").mkdir()
    for d in range(10):
        shutil.copy(sorted((demo_cache / str(d)).glob("*.png"))[-4], root / "new_photos" / f"{d}-unlabelled.png")
    export(SmallCNN(), root / "my_embedder.onnx")
    export(SmallCNN(nhwc=True), root / "keras.onnx", nhwc=True)
    (root / ".cache" / "embedder").mkdir(parents=True)
    (root / ".cache" / "embedder" / "digits").symlink_to(demo_cache)
    return root, {"digit.png": label, "some.png": label}


def _run_line(line: str, block: Block, cwd: Path) -> str:
    """One shell line: ``python -m embedder ...`` in this process, anything else in bash. Returns its stdout."""
    argv = [os.path.expanduser(a) if a.startswith("~") else a for a in shlex.split(line, comments=True)]
    if argv[:3] != ["python", "-m", "embedder"]:
        done = subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block.name}: {line}\n{done.stderr[-3000:]}"
        return done.stdout
    argv, into = (argv[3:-2], argv[-1]) if len(argv) > 4 and argv[-2] == ">" else (argv[3:], None)
    if argv[:1] == ["train"]:
        argv += shlex.split(block.options.get("train-flags", ""))
    from embedder.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's way out
            code = exc.code
    assert code == 0, f"{block.name}: {line}\nexit {code}\n{err.getvalue()[-3000:]}"
    if into:
        (cwd / into).write_text(out.getvalue())
    return out.getvalue()


def _lines(code: str) -> list[str]:
    """The block's commands: continuation lines joined, blank and comment-only lines left out."""
    joined = code.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _run_python(block: Block, cwd: Path) -> str:
    (cwd / "block.py").write_text(block.code)
    flags = ["-X", "importtime"] if block.options.get("without") else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(cwd)}  # this checkout's package, not an installed one
    done = subprocess.run(
        [sys.executable, *flags, "block.py", *shlex.split(block.options.get("args", ""))],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{block.name}\n{done.stderr[-3000:]}"
    if block.options.get("without"):
        imported = [line for line in done.stderr.splitlines() if re.search(r"\|\s+embedder(\.|$)", line)]
        assert not imported, f"{block.name} imports {block.options['without']}: {imported[:3]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
def test_block_runs(block, docs_folder, tmp_path, monkeypatch):
    template, labels = docs_folder
    cwd = tmp_path / "docs"
    shutil.copytree(template, cwd, symlinks=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(cwd))
    if "setup" in block.options:
        _run_line(block.options["setup"], block, cwd)
    if block.lang == "python":
        printed = _run_python(block, cwd)
    else:
        printed = "".join(_run_line(line, block, cwd) for line in _lines(block.code))
    check = block.options.get("check")
    if check:
        kind, _, image = check.partition(":")
        assert kind == "label" and image in labels, f"{block.name}: unknown check {check}"
        assert printed.split()[:1] == [labels[image]], f"{block.name} printed {printed[:500]!r}"
