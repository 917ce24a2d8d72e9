import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedder.cli.main import main
from embedder.runs.run import load_run
from tests.helpers import copy_run

ROOT = Path(__file__).resolve().parents[2]


def test_predict_json__shape_and_labels(digits_run, capsys):
    from embedder.runs.run import load_run

    run = load_run(digits_run)
    paths, labels = run.queries("test")
    chosen = [str(p) for p in paths[::9]]  # 40 held-out digits
    # --no-unknown: this test is about the vote; how far "unknown" reaches depends on the CPU's numerics.
    assert main(["predict", str(digits_run), *chosen, "--k", "3", "--json", "--no-unknown"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["image"] for o in out] == chosen
    for o in out:
        assert set(o) >= {"image", "label", "confidence", "neighbors"}
        assert len(o["neighbors"]) == 3
        assert set(o["neighbors"][0]) == {"path", "label", "distance"}
        assert 0 < o["confidence"] <= 1
    truth = [run.classes[label] for label in labels[::9]]
    # The fixture run's held-out P@1 is about 0.98; raw pixels score about 0.95 on the digits.
    assert sum(o["label"] == t for o, t in zip(out, truth)) >= 36


def test_predict__bad_file_is_reported_and_others_answered(digits_run, tmp_path, capsys):
    from embedder.runs.run import load_run

    good = str(load_run(digits_run).queries("test")[0][0])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", str(digits_run), str(bad), good, "--json"]) == 2
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 1
    assert captured.err.startswith("error: not a readable image: bad.png (")
    assert len(captured.err.strip().splitlines()) == 1


def test_predict__a_photo_like_image_on_the_digits_run_is_unknown_and_says_why(digits_run, tmp_path, capsys):
    from PIL import Image

    sky = tmp_path / "sky.png"  # a smooth colour field, as in a photo: nothing like a digit
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((64, 64)).save(sky)
    assert main(["predict", str(digits_run), str(sky)]) == 0
    assert f"{sky}: unknown - unlike every gallery image (confidence" in capsys.readouterr().out
    assert main(["predict", str(digits_run), str(sky), "--json", "--no-unknown"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["novel"] is True and answer["label"] != "unknown"
    assert answer["novelty_distance"] > load_run(digits_run).metrics["novelty"]["threshold"]


def test_project__csv_rows(digits_run, tmp_path):
    out = tmp_path / "coords.csv"
    assert main(["project", str(digits_run), "--method", "pca", "--dims", "3", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "x,y,z,path,label"
    from embedder.runs.run import load_run

    assert len(lines) == 1 + len(load_run(digits_run).gallery_paths)


@pytest.mark.slow  # every map of the standard set, UMAP's numba compile included
def test_project_all__stores_every_map_of_the_run_and_a_second_call_has_nothing_to_do(tmp_path, capsys):
    from embedder.maps.precompute import STANDARD, missing
    from tests.helpers import synthetic_run

    run = synthetic_run(tmp_path / "runs" / "small", n=100, n_classes=4, dim=8)
    assert main(["project", str(run), "--all"]) == 0
    assert capsys.readouterr().out.startswith(f"{len(STANDARD)} maps stored in ")
    assert missing(load_run(run)) == []
    assert main(["project", str(run), "--all"]) == 0
    again = capsys.readouterr().out
    assert again.startswith("0 maps stored") and "(all there)" in again


USER_ERRORS = [
    (["train", "--data", "/no/such/folder", "--out", "{tmp}/r"], "error: data folder not found: /no/such/folder"),
    (["evaluate", "{tmp}"], "is not a run folder"),
    (["predict", "{tmp}/missing", "x.png"], "error: run folder not found"),
    (
        ["train", "--data", "demo", "--out", "{tmp}/r", "--margin", "-1"],
        "error: --margin must be in [0.001, 2], got -1",
    ),
    (["train", "--data", "{tmp}", "--out", "{tmp}"], "overlaps the data folder"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/cats"], "overlaps the data folder"),
    (["train", "--data", "demo", "--out", "{tmp}"], "is not a run folder (it holds cats)"),
    (["train", "--epochs", "many"], "error: argument --epochs: invalid int value: 'many' (see python -m embedder"),
]


def _precious(tmp_path) -> None:
    """A file the user cares about, in the folder the command line names."""
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "1.png").write_bytes(b"precious")


@pytest.mark.parametrize("args, message", USER_ERRORS)
def test_cli__user_errors_exit_2_with_one_line(args, message, tmp_path, capsys, demo_cache):
    _precious(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's way out
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "cats" / "1.png").read_bytes() == b"precious"


def test_cli__python_m_embedder_exits_2_with_one_line_on_stderr(tmp_path):
    """The same, as a shell sees it: the real entry point in its own process (one case: it costs 3 s of imports)."""
    args, message = USER_ERRORS[0]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "embedder", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["predict", "evaluate", "project"])
@pytest.mark.parametrize("damage", ["index.ann", "gallery.npz", "config.json", "model.pt"])
def test_cli__a_damaged_run_is_one_line_naming_the_file(digits_run, tmp_path, capsys, command, damage):
    run_dir = copy_run(digits_run, tmp_path / "run")
    (run_dir / damage).write_bytes(b"garbage")
    query = str(load_run_queries(digits_run)[0])
    args = {"predict": [query], "evaluate": ["--no-baselines"], "project": []}[command]
    assert main([command, str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: damaged run") and damage in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def load_run_queries(run_dir):
    from embedder.runs.run import load_run

    return load_run(run_dir).queries("test")[0]


def test_bars__every_stage_shows_a_line_or_a_bar(capsys):
    from embedder.cli.lines import Bars
    from embedder.progress import Progress, Stage

    bars = Bars(plain=False)  # the bars a terminal gets (capsys's stderr is not one)
    bars(Progress(Stage.PLAN, message="100 images in 2 classes"))
    bars(Progress(Stage.VALIDATE, done=5, total=10, message="before training"))
    assert bars.bar.desc == "validate: before training"  # a stage with a count is a bar named by it
    bars(Progress(Stage.TRAIN, done=1, total=4, epoch=1, loss=0.5))
    assert bars.bar.desc == "epoch 1"
    bars(Progress(Stage.CALIBRATE, message='calibrating "unknown"'))
    assert bars.bar is None  # a stage without a count closes the bar and says what it does in a line
    bars(Progress(Stage.DONE, message="/runs/x"))
    err = capsys.readouterr().err
    assert "plan: 100 images in 2 classes\n" in err and 'calibrate: calibrating "unknown"\n' in err
    assert "/runs/x" not in err


@pytest.mark.slow  # a two-epoch training of 36 generated images in its own process: about 20 s with imports
def test_train__progress_in_a_log_file_is_plain_lines(tmp_path):
    """``train ... > log 2>&1``: stderr is a file, so every stage is a line of its own, with no carriage return
    (a tqdm bar redraws itself with them, and a log keeps every redraw)."""
    from tests.helpers import make_shapes_folder

    shapes = make_shapes_folder(tmp_path / "shapes")
    args = ["--epochs", "2", "--dim", "16", "--classes-per-batch", "3", "--per-class", "4", "--selection", "holdout"]
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "embedder", "train", "--data", str(shapes), "--out", str(tmp_path / "run"), *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    raw = (tmp_path / "log").read_bytes()  # as bytes: reading text would turn every carriage return into a newline
    text = raw.decode()
    assert proc.returncode == 0, text[-3000:]
    assert b"\r" not in raw and b"\x1b" not in raw
    lines = text.splitlines()
    for stage in ("scan", "epoch 1", "epoch 2", "validate", "embed", "write"):
        assert any(line.startswith(stage) for line in lines), f"no line for {stage}:\n{text}"
    counted = [line for line in lines if " in 00:" in line]  # a counted stage's end: n/total (100%) in mm:ss
    assert counted and all("/" in line and "(100%)" in line for line in counted), text
    assert "run written to" in text


@pytest.mark.slow
def test_train__says_when_the_run_answers_before_it_says_it_is_written(shapes_folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(shapes_folder), "--out", str(out), "--epochs", "1", "--dim", "16"]
    assert main([*args, "--classes-per-batch", "3", "--selection", "holdout"]) == 0
    lines = capsys.readouterr().out.splitlines()
    queryable = next(i for i, line in enumerate(lines) if line.startswith("queryable now: "))
    assert queryable < next(i for i, line in enumerate(lines) if line.startswith("run written to"))
    line = lines[queryable]
    assert line.startswith(f"queryable now: {out.resolve()} (the ")  # the run, and what it answers with
    assert " gallery images in 3 classes; estimated label accuracy " in line and line.endswith(" s")
