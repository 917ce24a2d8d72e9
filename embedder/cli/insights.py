"""python -m embedder mislabels | duplicates | outliers | export: what the trained space says about the data.

Each prints a ranked table, or with ``--json`` a list, best first. cli.py registers these and turns an
EmbedderError into one line and exit code 2.
"""

from __future__ import annotations

import json
import sys

from ..errors import EmbedderError
from ..insights.findings import CLEAR_SCORE, MISLABEL_K


def _run_and_top(p, top_help: str) -> None:
    p.add_argument("run", help="run folder")
    p.add_argument("--top", type=int, default=None, help=f"{top_help} (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_commands(sub) -> None:
    p = sub.add_parser("mislabels", help="gallery images whose nearest neighbours mostly carry another label")
    _run_and_top(p, "list only the N most suspect")
    p.add_argument("--k", type=int, default=MISLABEL_K, help=f"neighbours that judge a label (default: {MISLABEL_K})")
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="list every suspect scoring at least this (0: every image the vote disagrees with); default: the clear "
        f"ones (ours: score >= {CLEAR_SCORE}, with every neighbour disagreeing the image's own label at least twice "
        "as far as another; cleanlab: the images its find_label_issues lists)",
    )
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "ours", "cleanlab"),
        help="auto: cleanlab where the run keeps its pretrained features (the labels are judged in them: a network "
        "fine-tuned on wrong labels has learnt them), else ours (BENCHMARKS.md, 'The labelling loop'); ours: the "
        "neighbours' disagreement times how much nearer the other label is; cleanlab: find_label_issues on the "
        "leave-one-out vote probabilities (score: 1 - the probability of the image's own label)",
    )

    p = sub.add_parser("duplicates", help="near-duplicate gallery images, and held-out queries leaked into the gallery")
    _run_and_top(p, "list only the N closest pairs")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="L2 distance under which two images are near-duplicates "
        "(default: 0.1 x the median distance from a gallery image to its nearest neighbour)",
    )

    p = sub.add_parser("outliers", help="gallery images far from everything (mean distance to their k nearest)")
    _run_and_top(p, "list only the N farthest")
    p.add_argument("--k", type=int, default=MISLABEL_K, help=f"neighbours averaged (default: {MISLABEL_K})")

    p = sub.add_parser("export", help="embeddings for the TensorBoard Embedding Projector, or the gallery as CSV")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", required=True, choices=("projector", "csv"), help="what to write")
    p.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier export)")


def _check(args) -> None:
    if getattr(args, "k", 1) < 1:
        raise EmbedderError("--k must be at least 1")
    if args.top is not None and args.top < 1:
        raise EmbedderError("--top must be at least 1")
    if getattr(args, "threshold", None) is not None and args.threshold < 0:
        raise EmbedderError("--threshold must be at least 0")


def _findings(args, threshold=None):
    from ..insights.findings import gallery_findings
    from ..runs.run import load_run
    from .lines import Bars

    run = load_run(args.run)
    bars = Bars()
    try:
        return run, gallery_findings(run, k=getattr(args, "k", MISLABEL_K), threshold=threshold, progress=bars)
    finally:
        bars.close()


def _emit(rows: list[dict], as_json: bool, columns: list[str]) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print("  ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns))


def cmd_mislabels(args) -> int:
    from ..insights.findings import judge_labels

    _check(args)
    run, found = _findings(args)
    files = run.gallery_files()
    judged = found.judgement
    if args.method not in ("auto", judged.method):
        judged = judge_labels(run, args.k, args.method, nb=found.neighbours)
    if args.min_score is None:
        listed = judged.clear
    else:
        listed = [s for s in judged.suspects if s.score >= args.min_score]
    rows = [
        {
            "path": str(files[s.row]),
            "label": run.classes[s.label],
            "suggested": run.classes[s.suggested],
            "score": round(s.score, 4),
        }
        for s in listed[: args.top]
    ]
    if not args.json:
        weaker = len(judged.suspects) - len(listed)
        print(
            f"{len(listed)} suspected mislabels among {len(files):,} gallery images, judged in {judged.space} "
            f"({judged.method})"
            + (f"; {weaker} weaker (--min-score 0 lists them)" if weaker else "")
            + "; score label suggested"
        )
    _emit(rows, args.json, ["score", "label", "suggested", "path"])
    return 0


def cmd_duplicates(args) -> int:
    from ..insights.findings import leak_findings
    from .lines import Bars

    _check(args)
    run, found = _findings(args, args.threshold)
    files = run.gallery_files()
    rows = [
        {
            "kind": "duplicate",
            "path": str(files[p.a]),
            "other": str(files[p.b]),
            "label": run.classes[run.gallery_labels[p.a]],
            "other_label": run.classes[run.gallery_labels[p.b]],
            "distance": round(p.distance, 5),
        }
        for p in found.duplicates
    ]
    bars = Bars()
    try:
        leak = leak_findings(run, found.threshold, progress=bars)
    finally:
        bars.close()
    if leak is not None:
        rows += [
            {
                "kind": "leak",
                "path": str(leak.paths[p.a]),
                "other": str(files[p.b]),
                "label": run.classes[leak.labels[p.a]] if leak.labels[p.a] >= 0 else "?",
                "other_label": run.classes[run.gallery_labels[p.b]],
                "distance": round(p.distance, 5),
            }
            for p in leak.pairs
        ]
    rows = sorted(rows, key=lambda r: r["distance"])[: args.top]
    _emit(rows, args.json, ["kind", "distance", "path", "other"])
    print(f"threshold {found.threshold:.4f}; " + _leak_line(leak), file=sys.stderr)
    return 0


def _leak_line(leak) -> str:
    if leak is None:
        return "no held-out queries: leaks not checked"
    e = leak.effect
    return (
        f"{len(leak.pairs)} held-out queries have a near-duplicate in the gallery: P@1 {e.with_leak:.3f} with "
        f"them, {e.without_leak:.3f} without the {e.n_removed} leaked gallery images ({e.inflation:+.3f})"
    )


def cmd_outliers(args) -> int:
    _check(args)
    run, found = _findings(args)
    files = run.gallery_files()
    rows = [
        {"path": str(files[o.row]), "label": run.classes[run.gallery_labels[o.row]], "score": round(o.score, 4)}
        for o in found.outliers[: args.top]
    ]
    _emit(rows, args.json, ["score", "label", "path"])
    return 0


def cmd_export(args) -> int:
    from ..insights.export import gallery_csv, projector
    from ..progress import Progress, Stage
    from ..runs.run import load_run
    from .lines import Bars

    run = load_run(args.run)
    if args.format == "csv":
        done = gallery_csv(run, args.out)
    else:
        bars = Bars()
        try:
            step = lambda d, t: bars(Progress(Stage.EVALUATE, done=d, total=t, message="sprite"))
            done = projector(run, args.out, progress=step)
        finally:
            bars.close()
    if done.note:
        print(f"note: {done.note}", file=sys.stderr)
    print(f"wrote {done.n_exported:,} gallery images to {done.out}")
    return 0


COMMANDS = {"mislabels": cmd_mislabels, "duplicates": cmd_duplicates, "outliers": cmd_outliers, "export": cmd_export}
