import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedder.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_predict_json__shape_and_labels(digits_run, capsys):
    from embedder.run import load_run

    paths, labels = load_run(digits_run).queries("test")
    chosen = [str(paths[i]) for i in range(0, len(paths), 60)][:5]
    assert main(["predict", str(digits_run), *chosen, "--k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["image"] for o in out] == chosen
    for o in out:
        assert set(o) >= {"image", "label", "confidence", "neighbors"}
        assert len(o["neighbors"]) == 3
        assert set(o["neighbors"][0]) == {"path", "label", "distance"}
        assert 0 < o["confidence"] <= 1
    truth = [Path(c).parent.name for c in chosen]
    assert sum(o["label"] == t for o, t in zip(out, truth)) >= 4


def test_predict__bad_file_is_reported_and_others_answered(digits_run, tmp_path, capsys):
    from embedder.run import load_run

    good = str(load_run(digits_run).queries("test")[0][0])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", str(digits_run), str(bad), good, "--json"]) == 2
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 1
    assert captured.err.startswith("error: not a readable image: bad.png (")
    assert len(captured.err.strip().splitlines()) == 1


def test_project__csv_rows(digits_run, tmp_path):
    out = tmp_path / "coords.csv"
    assert main(["project", str(digits_run), "--method", "pca", "--dims", "3", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "x,y,z,path,label"
    from embedder.run import load_run

    assert len(lines) == 1 + len(load_run(digits_run).gallery_paths)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/no/such/folder", "--out", "{tmp}/r"], "error: data folder not found: /no/such/folder"),
        (["evaluate", "{tmp}"], "is not a run folder"),
        (["predict", "{tmp}/missing", "x.png"], "error: run folder not found"),
        (["train", "--data", "demo", "--out", "{tmp}/r", "--margin", "-1"], "error: --margin must be positive"),
    ],
)
def test_cli__user_errors_exit_2_with_one_line(args, message, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "embedder", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
