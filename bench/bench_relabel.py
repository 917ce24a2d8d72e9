"""The labelling loop, measured: planted wrong labels found, fixed and learned from; new images labelled.

For each set a clean copy and a copy with planted wrong labels (files copied into another class's folder) are
trained with the defaults, beside held-out queries that are clean and never used for any choice. Then:

- the mislabel ranking (``mislabels --json``: judged in the run's pretrained features where it keeps them, with
  cleanlab, else in its network's space with ours), next to ours and cleanlab's ``find_label_issues`` on the same
  leave-one-out k-NN vote probabilities in that space: how many planted errors each puts in its top 30;
- ``relabel`` with the top 30 suggestions: planted errors fixed, right labels changed, every image file
  byte-identical before and after;
- held-out P@1 of the clean run, the planted run, the planted run with its gallery corrected (no retraining) and
  a retraining with ``--labels`` (the corrections as a CSV), each with a 95% Wilson interval;
- ``label`` on the held-out queries as an unlabelled folder (the clean run): how many answers reach confidence
  0.95, and how many of those are right.

Sets: "digits" (the demo: 300 queries, 30 a class; 1,497 images with 20 labels flipped to another digit) and
"photos" (../shared/data/cats_dogs: the 400 train photos with 5% = 20 flipped, the 200 val photos as queries).

    python -m bench.bench_relabel [--sets digits photos] [--work DIR] [--json results.json] [--epochs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from bench.progress import log
from embedder.config import TrainConfig
from embedder.verbs.pipeline import train

SHARED = Path(__file__).resolve().parents[2] / "shared/data/cats_dogs"
PLANTED = 20  # wrong labels planted in each set
TOP = 30  # suggestions accepted
QUERIES_PER_CLASS = 30  # digits: the 300 new digits


def _copy_tree(pairs: list[tuple[Path, str]], root: Path) -> list[Path]:
    """Copy (file, class) pairs into ``root/<class>/``; returns the copies."""
    out = []
    for src, label in pairs:
        (root / label).mkdir(parents=True, exist_ok=True)
        out.append(Path(shutil.copy(src, root / label / src.name)))
    return out


def digits_files(seed: int = 0) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """The demo digits as (file, label): the gallery's and 30 queries a class, drawn with ``seed``."""
    from embedder.images.data import demo_dataset

    demo, rng = demo_dataset(), np.random.default_rng(seed)
    data, queries = [], []
    for d in range(10):
        files = sorted((demo / str(d)).glob("*.png"))
        picked = set(rng.choice(len(files), QUERIES_PER_CLASS, replace=False).tolist())
        for i, f in enumerate(files):
            (queries if i in picked else data).append((f, str(d)))
    return data, queries


def photos_files() -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """cats_dogs as (file, label): train photos for the gallery, val photos as queries."""
    part = lambda name: [(f, c.name) for c in sorted((SHARED / name).iterdir()) for f in sorted(c.iterdir())]
    return part("train"), part("val")


def plant(data: list[tuple[Path, str]], n: int, seed: int) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """``n`` files given another class (drawn with ``seed``): the planted list, and {file name: true label}."""
    rng = np.random.default_rng(seed + 100)
    classes = sorted({label for _, label in data})
    rows = rng.choice(len(data), n, replace=False)
    planted, truth = list(data), {}
    for r in rows:
        f, label = data[r]
        planted[r] = (f, str(rng.choice([c for c in classes if c != label])))
        truth[f.name] = label
    return planted, truth


def prepare(name: str, work: Path, seed: int = 0) -> dict:
    """The set's folders under ``work/name``: clean data, planted data, queries (made once)."""
    root = work / name
    truth_file = root / "planted.json"
    if not truth_file.exists():
        data, queries = digits_files(seed) if name == "digits" else photos_files()
        planted, truth = plant(data, PLANTED, seed)
        shutil.rmtree(root, ignore_errors=True)
        _copy_tree(data, root / "clean")
        _copy_tree(planted, root / "planted")
        _copy_tree(queries, root / "queries")
        truth_file.write_text(json.dumps(truth, indent=1))
    return {
        "clean": root / "clean",
        "planted": root / "planted",
        "queries": root / "queries",
        "truth": json.loads(truth_file.read_text()),
        "runs": root / "runs",
    }


def trained(data: Path, out: Path, queries: Path, settings: dict, labels: Path | None = None) -> Path:
    """A run trained with the defaults but ``settings`` on ``data`` (reused when ``out`` is a finished run already:
    not a first answer whose training was stopped, which a killed bench leaves behind)."""
    from embedder.runs.run import is_run, load_run

    if not is_run(out) or load_run(out).metrics.get("improving") is not None:
        extra = {"labels": str(labels)} if labels is not None else {}
        cfg = TrainConfig(data=str(data), out=str(out), queries=str(queries), overwrite=True, **settings, **extra)
        train(cfg, progress=log)
    return out


def file_digests(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots``: proof that nothing touched the user's images."""
    files = [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def p_at_1(metrics: dict) -> dict:
    """Held-out P@1 with its 95% Wilson interval."""
    from embedder.answers.metrics import wilson_interval

    test = metrics["test"]
    n, p = test["n_queries"], test["precision_at_1"]
    low, high = wilson_interval(round(p * n), n)
    return {"p_at_1": p, "ci": [low, high], "n": n}


def _outcome(rows_suggested: list[tuple[int, int]], planted, right) -> dict:
    """What accepting these (row, suggested label) suggestions would do."""
    return {
        "listed": len(rows_suggested),
        "planted_in_list": sum(planted(r) for r, _ in rows_suggested),
        "fixed_if_accepted": sum(right(r, s) for r, s in rows_suggested),
        "right_labels_changed_if_accepted": sum(not planted(r) for r, _ in rows_suggested),
    }


def rankings(run_dir: Path, truth: dict[str, str]) -> tuple[list[dict], dict]:
    """The top ``TOP`` of ``mislabels --json`` (its default: the clear suspects, judged where the run judges them)
    and how each ranking does on the planted errors, in that space: the default's list, ours (clear, and every
    flagged image) and cleanlab's find_label_issues on the same leave-one-out vote probabilities."""
    from embedder.insights.findings import judge_labels
    from embedder.runs.run import load_run

    run = load_run(run_dir)
    files = run.gallery_files()
    planted = lambda row: files[row].name in truth
    right = lambda row, label: truth.get(files[row].name) == run.classes[label]
    default = judge_labels(run)
    listed = default.clear[:TOP]
    top = [
        {"path": str(files[s.row]), "label": run.classes[s.label], "suggested": run.classes[s.suggested]}
        for s in listed
    ]
    ours, theirs = (judge_labels(run, method=m) for m in ("ours", "cleanlab"))
    pairs = lambda suspects: [(s.row, s.suggested) for s in suspects[:TOP]]  # noqa: E731
    compare = {
        f"default ({default.method})": _outcome(pairs(listed), planted, right),
        "ours": _outcome(pairs(ours.clear), planted, right),
        "ours_every_flagged": _outcome(pairs(ours.suspects), planted, right),
        "cleanlab": _outcome(pairs(theirs.clear), planted, right),
    }
    compare["ours"]["flagged"], compare["cleanlab"]["flagged"] = len(ours.suspects), len(theirs.clear)
    compare["judged_in"] = default.space
    return top, compare


def relabel_top(run_dir: Path, top: list[dict], truth: dict[str, str], work: Path, roots: list[Path]) -> dict:
    """``relabel`` with the top suggestions, as the CLI would take ``mislabels --json``: what it fixed, what it broke,
    whether any file changed, and the held-out P@1 after."""
    from embedder.images.label_file import read
    from embedder.runs.run import load_run
    from embedder.verbs.relabel import relabel

    suggestions = work / "top.json"
    suggestions.write_text(json.dumps(top, indent=1))
    before = file_digests(*roots)
    done = relabel(run_dir, read(suggestions), by="bench")
    identical = file_digests(*roots) == before
    run = load_run(run_dir)
    now = dict(zip((Path(p).name for p in run.gallery_paths), run.label_names(run.gallery_labels)))
    folder = {Path(p).name: Path(p).parent.name for p in run.gallery_paths}
    fixed = sum(now.get(name) == label for name, label in truth.items())
    broken = sum(now[n] != folder[n] for n in now if n not in truth)
    corrections = work / "corrections.csv"
    with open(corrections, "w", newline="") as f:
        import csv

        from embedder.runs.corrections import CSV_FIELDS

        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(run.corrections.rows())
    return {
        "summary": done.summary(),
        "planted_fixed": fixed,
        "right_labels_changed": broken,
        "files_identical": identical,
        "n_files_checked": len(before),
        "fixed": p_at_1(run.metrics),
        "corrections": str(corrections),
    }


def label_new(run_dir: Path, queries: Path, work: Path) -> dict:
    """``label`` on the held-out queries as an unlabelled folder: coverage and accuracy at confidence >= 0.95."""
    import csv

    from embedder.runs.run import load_run
    from embedder.verbs.label import LabelOptions, label_folder

    out = work / f"labels-{run_dir.name}.csv"
    out.unlink(missing_ok=True)
    done = label_folder(load_run(run_dir), queries, out, LabelOptions())
    rows = list(csv.DictReader(out.read_text().splitlines()))
    sure = [r for r in rows if r["label"] not in ("", "unknown") and float(r["confidence"]) >= 0.95]
    right = sum(r["label"] == Path(r["path"]).parent.name for r in sure)
    answered = [r for r in rows if r["label"] not in ("", "unknown")]
    from embedder.answers.metrics import wilson_interval

    return {
        "images": len(rows),
        "notes": done.notes,
        "unknown": done.unknown,
        "at_95": len(sure),
        "coverage_at_95": len(sure) / len(rows),
        "right_at_95": right,
        "accuracy_at_95": right / max(1, len(sure)),
        "accuracy_at_95_ci": list(wilson_interval(right, len(sure))),
        "expected_wrong_at_95": done.expected_wrong_sure,
        "accuracy_all": sum(r["closest"] == Path(r["path"]).parent.name for r in rows) / len(rows),
        "answered": len(answered),
    }


def measure(name: str, work: Path, settings: dict, retrain: bool) -> dict:
    import os
    import time

    from embedder.runs.run import load_run

    s = prepare(name, work, settings.get("seed", 0))
    t0 = time.perf_counter()
    clean = trained(s["clean"], s["runs"] / "clean", s["queries"], settings)
    planted = trained(s["planted"], s["runs"] / "planted", s["queries"], settings)
    row = {"set": name, "settings": settings, "planted": len(s["truth"]), "load": os.getloadavg()}
    row["clean"], row["planted_run"] = p_at_1(load_run(clean).metrics), p_at_1(load_run(planted).metrics)
    row["label_new"] = label_new(clean, s["queries"], work / name)
    fixed = work / name / "runs" / "planted-fixed"
    shutil.rmtree(fixed, ignore_errors=True)
    shutil.copytree(planted, fixed)
    top, row["rankings"] = rankings(fixed, s["truth"])
    row["relabel"] = relabel_top(fixed, top, s["truth"], work / name, [s["planted"], s["queries"]])
    row["label_new_fixed"] = label_new(fixed, s["queries"], work / name)
    if retrain:
        retrained = trained(
            s["planted"], s["runs"] / "retrained", s["queries"], settings, Path(row["relabel"]["corrections"])
        )
        row["retrained"] = p_at_1(load_run(retrained).metrics)
    row["seconds"] = time.perf_counter() - t0
    return row


def report(row: dict) -> None:
    f = lambda m: f"{m['p_at_1']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}] (n={m['n']})"
    r, lab = row["relabel"], row["label_new"]
    print(f"\n{row['set']}: {row['planted']} planted wrong labels; load {row['load']}")
    print(f"  labels judged in {row['rankings']['judged_in']}")
    for who, c in row["rankings"].items():
        if who == "judged_in":
            continue
        print(
            f"  {who:<18} lists {c['listed']} (of its top {TOP}): {c['planted_in_list']} planted; accepting them fixes "
            f"{c['fixed_if_accepted']} and changes {c['right_labels_changed_if_accepted']} right labels"
        )
    print(
        f"  relabel top {TOP}: {r['planted_fixed']} planted fixed, {r['right_labels_changed']} right labels changed;"
        f" {r['n_files_checked']} files byte-identical: {r['files_identical']}"
    )
    print(
        f"  held-out P@1 clean {f(row['clean'])}  planted {f(row['planted_run'])}  fixed {f(r['fixed'])}"
        + (f"  retrained {f(row['retrained'])}" if "retrained" in row else "")
    )
    print(
        f"  label (clean run) on {lab['images']} new images: {lab['at_95']} at >= 0.95 "
        f"({lab['coverage_at_95']:.1%}), {lab['right_at_95']} right ({lab['accuracy_at_95']:.1%}, "
        f"CI {lab['accuracy_at_95_ci'][0]:.3f}-{lab['accuracy_at_95_ci'][1]:.3f}); expected wrong "
        f"{lab['expected_wrong_at_95']:.1f}; all answers {lab['accuracy_all']:.1%} right"
    )
    print(f"  seconds {row['seconds']:.0f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", nargs="+", default=["digits", "photos"], choices=("digits", "photos"))
    ap.add_argument("--work", default="artifacts/bench-relabel", help="folder for the copies and runs (reused)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--selection", default="auto", choices=("auto", "holdout", "cv"))
    ap.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default: the default's)")
    ap.add_argument("--no-retrain", dest="retrain", action="store_false", help="skip the retraining with --labels")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    settings = {"seed": args.seed, "selection": args.selection}
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    rows = []
    for name in args.sets:
        if name == "photos" and not SHARED.is_dir():
            print(f"skipped photos: {SHARED} is not here (it comes with the team's shared folder)")
            continue
        rows.append(measure(name, work, settings, args.retrain))
        report(rows[-1])
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
