"""python -m embedder train | predict | evaluate | project | add | import-model | export-model, the insight
commands (insights.py) and the labelling ones (labelling.py: label, relabel, corrections).
User errors: one line on stderr, exit code 2."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from dataclasses import fields

from ..config import TrainConfig
from ..errors import EmbedderError
from ..runs.records import Evaluation
from . import insights as cli_insights
from . import labelling as cli_labelling
from .args import EXIT_USER_ERROR, build_parser
from .lines import Bars


def _fmt(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "  -  "


def cmd_train(args) -> int:
    from ..progress import silent
    from ..training.distributed import process_group
    from ..verbs.pipeline import train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
    with process_group(cfg.device) as world:  # under torchrun: rank 0 reports and writes, the others train quietly
        bars = Bars() if world.main else None
        try:
            result = train(cfg, progress=bars or silent, ray=args.ray)
        finally:
            if bars is not None:
                bars.close()
    if not world.main:
        return 0
    test = result.record.test
    print(f"run written to {result.run_dir}")
    print(f"kept: {result.kept}")
    if test:
        _print_metrics(test)
    return 0


def _print_metrics(m: Evaluation) -> None:
    rows = [("trained", m), *m.baselines.items()]
    print(f"{'model':<12} {'P@1':>6} {'R-Prec':>6} {'MAP@R':>6} {'kNN acc':>7}   ({m.n_queries or 0} queries)")
    for name, r in rows:
        cells = [_fmt(value) for value in (r.precision_at_1, r.r_precision, r.map_at_r, r.knn_accuracy)]
        print(f"{name:<12} {cells[0]:>6} {cells[1]:>6} {cells[2]:>6} {cells[3]:>7}")
    if m.n_unmatched_queries:
        print(f"{m.n_unmatched_queries} queries have a label with no gallery image and were not scored")
    if m.novelty:
        print(f'unlike every gallery image (answered "unknown"): {m.novelty.novel} of {m.novelty.n} queries')


def cmd_predict(args) -> int:
    from ..answers.predict import Predictor
    from ..answers.trust import unknown_swallows
    from ..images.data import load_image
    from ..runs.run import load_run

    if args.k is not None and args.k < 1:
        raise EmbedderError("--k must be at least 1")
    predictor = Predictor(load_run(args.run))
    unknown = not args.no_unknown
    swallows = unknown_swallows(predictor.run.record) if unknown and args.unknown_threshold is None else None
    if swallows:  # said once: the answers keep their labels, ranked by their confidence
        print(f"note: {swallows}", file=sys.stderr)
        unknown = False
    images, names, errors = [], [], []
    for path in args.images:
        try:
            images.append(load_image(path))
            names.append(path)
        except EmbedderError as exc:
            errors.append(str(exc))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not images:
        return EXIT_USER_ERROR
    preds = predictor.predict(images, names, k=args.k, unknown=unknown, unknown_threshold=args.unknown_threshold)
    if args.json:
        print(json.dumps([p.to_json() for p in preds], indent=2))
    else:
        for p in preds:
            nn = ", ".join(f"{n.label} {n.distance:.3f}" for n in p.neighbours)
            label = f"{p.label} - unlike every gallery image" if p.novel else p.label
            print(f"{p.image}: {label} (confidence {p.confidence:.0%}, vote {p.vote_share:.0%})  neighbours: {nn}")
    return EXIT_USER_ERROR if errors else 0


def cmd_evaluate(args) -> int:
    from ..answers.evaluate import evaluate_run
    from ..runs.run import load_run

    bars = Bars()
    try:
        result = evaluate_run(load_run(args.run), queries=args.queries, baselines=args.baselines, progress=bars)
    finally:
        bars.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_metrics(Evaluation.of(result))
    return 0


def cmd_add(args) -> int:
    from ..verbs.add import add_images

    bars = Bars()
    try:
        added = add_images(args.run, args.folder, device=args.device, progress=bars, ray=args.ray)
    finally:
        bars.close()
    print(f"{added.summary()}; run written to {added.run_dir}")
    print("note: metrics, the unknown threshold and confidence were measured before; run evaluate to measure again")
    return 0


def cmd_project(args) -> int:
    from ..maps.project import project
    from ..runs.run import load_run

    if args.all:
        from ..maps.precompute import precompute

        bars = Bars()
        done = precompute(args.run, bars)
        bars.close()
        print(f"{len(done)} maps stored in {args.run}" + (f": {', '.join(map(str, done))}" if done else " (all there)"))
        return 0
    run = load_run(args.run)
    coords = project(run.gallery_embeddings, args.method, args.dims, args.seed).coords
    axes = ["x", "y", "z"][: args.dims]
    with open(args.out, "w", newline="") if args.out else contextlib.nullcontext(sys.stdout) as handle:
        writer = csv.writer(handle)
        writer.writerow([*axes, "path", "label"])
        for row, path, label in zip(coords, run.gallery_files(), run.gallery_labels):
            writer.writerow([*(f"{v:.5f}" for v in row), str(path), run.classes[label]])
    return 0


def cmd_import_model(args) -> int:
    from pathlib import Path

    from ..onnx.model import read_bytes
    from ..verbs.import_model import ImportConfig, import_model

    cfg = ImportConfig(**{f.name: getattr(args, f.name) for f in fields(ImportConfig) if hasattr(args, f.name)})
    cfg.validate()
    bars = Bars()
    try:
        result = import_model(read_bytes(args.model), cfg, name=Path(args.model).name, progress=bars)
    finally:
        bars.close()
    print(f"run written to {result.run_dir}")
    if result.record.test:
        _print_metrics(result.record.test)
        print(result.notes[-1])
    return 0


def cmd_export_model(args) -> int:
    from ..onnx.export import export_model
    from ..runs.run import load_run

    bars = Bars()
    try:
        done = export_model(load_run(args.run), args.out, overwrite=args.overwrite, progress=bars)
    finally:
        bars.close()
    print(f"wrote {done.path} ({done.size / 2**20:.1f} MB): {done.preprocessing}")
    diff = f"max abs difference to the run's embeddings {done.max_abs_diff:.2e}"
    print(f"checked on {done.n_images} validation images: {diff}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "predict": cmd_predict,
    "evaluate": cmd_evaluate,
    "project": cmd_project,
    "add": cmd_add,
    "import-model": cmd_import_model,
    "export-model": cmd_export_model,
    **cli_insights.COMMANDS,
    **cli_labelling.COMMANDS,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        return command(args)
    except EmbedderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; nothing was overwritten (train again with --resume to continue)", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine said no: permissions, a full disk, a vanished file
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if os.environ.get("EMBEDDER_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(a bug: please report it; EMBEDDER_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
