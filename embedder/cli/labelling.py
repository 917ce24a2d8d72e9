"""python -m embedder label | relabel | corrections: label a folder of new images, correct a run's gallery, and
export its corrections. main.py registers these and turns an EmbedderError into one line and exit code 2."""

from __future__ import annotations

import csv
import sys

from ..errors import EmbedderError


def add_commands(sub) -> None:
    p = sub.add_parser(
        "label",
        help="label every image under a folder (no class folders needed) into a CSV, a batch at a time",
        description="Every image under FOLDER, recursively, is answered by the run a batch at a time and appended to "
        "--out at once: Ctrl-C keeps what is done, --resume carries on. Columns: "
        "path,label,confidence,vote_share,unknown,novel,closest,nearest_distance,neighbours,error.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument("folder", help="the folder of images to label (searched recursively)")
    p.add_argument("--out", required=True, help="the CSV to write (JSON Lines with --json)")
    p.add_argument("--resume", action="store_true", help="carry on an --out written before: its images are skipped")
    p.add_argument("--json", action="store_true", help="write JSON Lines (one object per image) instead of CSV")
    p.add_argument("--k", type=int, default=None, help="neighbours that vote (default: the run's k)")
    p.add_argument("--no-unknown", action="store_true", help='never answer "unknown" (closest still says the label)')
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the run's network embeds them")

    p = sub.add_parser(
        "relabel",
        help="correct a run's gallery labels from a CSV (path,label), or take images out; reversible",
        description="Each row of CORRECTIONS.csv (columns path,label, optional action=remove) sets a gallery image's "
        "label, or takes it out of the gallery. Paths as mislabels --json and export print them: absolute, or "
        "relative to the run's data folder. Stored as an overlay in the run; image files are never touched.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument("corrections", nargs="?", default=None, help="CSV of path,label[,action] rows")
    p.add_argument(
        "--undo",
        action="store_true",
        help="give the listed images back their original labels (and their place in the gallery); without a CSV, "
        "take back the latest batch of corrections",
    )

    p = sub.add_parser("corrections", help="a run's corrections as CSV: path,label,action,was,by,at")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", default=None, help="CSV file to write (default: stdout)")


def cmd_label(args) -> int:
    from ..runs.run import load_run
    from ..verbs.label import LabelOptions, label_folder
    from .lines import Bars

    options = LabelOptions(args.resume, args.json, args.k, not args.no_unknown, args.device)
    run = load_run(args.run)
    bars = Bars()
    try:
        done = label_folder(run, args.folder, args.out, options, progress=bars)
    except KeyboardInterrupt:
        bars.close()
        print(f"error: interrupted; what was labelled is in {args.out}: run again with --resume", file=sys.stderr)
        return 130
    finally:
        bars.close()
    print(f"{done.summary()}; written to {done.out}")
    return 0


def cmd_relabel(args) -> int:
    from ..images.label_file import read
    from ..verbs.relabel import relabel, undo_last
    from .lines import Bars

    if args.corrections is None and not args.undo:
        raise EmbedderError("give a CSV of corrections (path,label), or --undo to take back the latest batch")
    bars = Bars()
    try:
        if args.corrections is None:
            done = undo_last(args.run, progress=bars)
        else:
            done = relabel(args.run, read(args.corrections), undo=args.undo, progress=bars)
    finally:
        bars.close()
    print(f"{done.summary()}; run {done.run_dir}")
    return 0


def cmd_corrections(args) -> int:
    import contextlib

    from ..runs.corrections import CSV_FIELDS
    from ..runs.run import load_run

    rows = load_run(args.run).corrections.rows()
    with open(args.out, "w", newline="") if args.out else contextlib.nullcontext(sys.stdout) as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if args.out:
        print(f"wrote {len(rows)} corrections to {args.out}", file=sys.stderr)
    return 0


COMMANDS = {"label": cmd_label, "relabel": cmd_relabel, "corrections": cmd_corrections}
