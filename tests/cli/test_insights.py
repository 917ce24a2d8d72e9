"""python -m embedder mislabels | duplicates | outliers | export on the run with planted problems, and their user
errors: one line, exit code 2, nothing overwritten."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from embedder.cli.main import main


def _json(capsys, args) -> list:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def _rel(path: str, run_dir: Path) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def test_mislabels_json__flipped_first_best_first(planted_run, capsys):
    run_dir, truth = planted_run
    out = _json(capsys, ["mislabels", str(run_dir), "--json"])
    assert all(set(o) == {"path", "label", "suggested", "score"} for o in out)
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)
    top = [_rel(o["path"], run_dir) for o in out[: len(truth["flipped"])]]
    assert len(set(top) & set(truth["flipped"])) >= 6  # 7 of 8 when measured
    assert len(_json(capsys, ["mislabels", str(run_dir), "--json", "--top", "3"])) == 3


def test_duplicates_json__the_planted_copies_and_the_leak(planted_run, capsys):
    run_dir, truth = planted_run
    assert main(["duplicates", str(run_dir), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    dups = {(_rel(o["path"], run_dir), _rel(o["other"], run_dir)) for o in out if o["kind"] == "duplicate"}
    leaks = {(_rel(o["path"], run_dir), _rel(o["other"], run_dir)) for o in out if o["kind"] == "leak"}
    assert dups == {tuple(p) for p in truth["duplicates"]}
    assert leaks == {tuple(p) for p in truth["leaked"]}
    assert [o["distance"] for o in out] == sorted(o["distance"] for o in out)
    assert "6 held-out queries have a near-duplicate in the gallery: P@1" in captured.err


def test_outliers_json__farthest_first(planted_run, capsys):
    run_dir, _ = planted_run
    out = _json(capsys, ["outliers", str(run_dir), "--json", "--top", "5"])
    assert len(out) == 5 and all(set(o) == {"path", "label", "score"} for o in out)
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)


def test_export_projector__files_the_projector_reads(planted_run, tmp_path, capsys):
    from embedder.runs.run import load_run

    run_dir, _ = planted_run
    run = load_run(run_dir)
    out = tmp_path / "proj"
    assert main(["export", str(run_dir), "--format", "projector", "--out", str(out)]) == 0
    n = len(run.gallery_paths)
    tensors = (out / "tensors.tsv").read_text().splitlines()
    assert len(tensors) == n and len(tensors[0].split("\t")) == run.gallery_embeddings.shape[1]
    meta = (out / "metadata.tsv").read_text().splitlines()
    assert meta[0] == "path\tlabel" and meta[1] == f"{run.gallery_paths[0]}\t{run.classes[run.gallery_labels[0]]}"
    assert len(meta) == n + 1
    from PIL import Image

    cols = math.ceil(math.sqrt(n))  # a square grid of 32-pixel cells
    assert Image.open(out / "sprite.png").size == (cols * 32, cols * 32)
    assert 'image_path: "sprite.png"' in (out / "projector_config.pbtxt").read_text()
    # Exporting again replaces our own export.
    assert main(["export", str(run_dir), "--format", "projector", "--out", str(out)]) == 0


def test_export_csv__one_row_per_gallery_image_with_neighbours(planted_run, tmp_path):
    import csv

    from embedder.runs.run import load_run

    run_dir, _ = planted_run
    run = load_run(run_dir)
    assert main(["export", str(run_dir), "--format", "csv", "--out", str(tmp_path / "csv")]) == 0
    with open(tmp_path / "csv" / "gallery.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "path", "label", "x", "y", "neighbours"]
    assert len(rows) == len(run.gallery_paths)
    dup = {r["path"]: r for r in rows}
    copy, original = dup["0/dup-0072.png"], dup["0/0072.png"]
    assert original["id"] in copy["neighbours"].split()[:2]  # its byte-identical twin is among the nearest
    assert str(run.gallery_paths.index("0/dup-0072.png")) not in copy["neighbours"].split()  # never itself


@pytest.mark.parametrize(
    "args, message",
    [
        (["mislabels", "{run}", "--top", "0"], "error: --top must be at least 1"),
        (["outliers", "{run}", "--k", "0"], "error: --k must be at least 1"),
        (["duplicates", "{tmp}"], "is not a run folder"),
        (
            ["export", "{run}", "--format", "csv", "--out", "{tmp}"],
            "exists and is not an export folder (it holds cats)",
        ),
        (["export", "{run}", "--format", "projector", "--out", "{run}/x"], "overlaps the run folder"),
        (["export", "{run}", "--format", "zip", "--out", "{tmp}/x"], "invalid choice: 'zip'"),
    ],
)
def test_insight_commands__user_errors_exit_2_with_one_line(planted_run, tmp_path, capsys, args, message):
    run_dir, _ = planted_run
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "1.png").write_bytes(b"precious")
    args = [a.replace("{run}", str(run_dir)).replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's way out
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (tmp_path / "cats" / "1.png").read_bytes() == b"precious"
    assert not (run_dir / "x").exists()


def test_bundle_zip__only_the_runs_own_files(planted_run, tmp_path):
    import io
    import zipfile

    from embedder.insights.export import bundle_zip
    from embedder.runs.bundle import BUNDLE_FILES
    from tests.helpers import copy_run

    run_dir = copy_run(planted_run[0], tmp_path / "run")
    (run_dir / "notes.txt").write_text("mine, not the run's")
    buf = io.BytesIO()
    bundle_zip(run_dir, buf)
    names = zipfile.ZipFile(buf).namelist()
    assert sorted(names) == sorted(f"run/{n}" for n in BUNDLE_FILES if (run_dir / n).exists())
    assert "run/notes.txt" not in names and "run/model.pt" in names


def test_cli_mislabels__a_pretrained_run_says_its_labels_are_judged_in_the_pretrained_features(photo_run, capsys):
    assert main(["mislabels", str(photo_run), "--min-score", "0"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "judged in the pretrained features, which never saw a label (cleanlab)" in head
    assert main(["mislabels", str(photo_run), "--method", "ours"]) == 0
    assert "judged in the pretrained features, which never saw a label (ours)" in capsys.readouterr().out
