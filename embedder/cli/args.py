"""The command line of python -m embedder: one sub-command each, and every train / import-model flag made from its
config field's description (help, default, range), so the CLI and the Train page never disagree."""

from __future__ import annotations

import argparse

from ..config import TrainConfig
from ..settings import Setting, field_type, groups_of
from . import insights as cli_insights
from . import labelling as cli_labelling

EXIT_USER_ERROR = 2
DESCRIPTION = (
    "Train an image embedder with triplet loss on a folder of labelled images (<root>/<label>/<image>), label new "
    "images by their nearest labelled neighbours, and inspect the run. A bad command line or input gets one line "
    "on stderr and exit code 2."
)


def add_settings(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per described field of the config dataclass ``cls``, its help and default from the field; the
    flags of each stage (``TrainConfig``'s model, training, ...) under the stage's heading in --help."""
    for group in groups_of(cls):
        where = parser.add_argument_group(group.title, group.about) if group.title else parser
        for f, s in group.settings:
            _add_flag(where, cls, f, s)


def _add_flag(parser, cls, f, s: Setting) -> None:
    """The flag of field ``f`` (described by ``s``) of ``cls``: --name, or --no-name for what is on by default."""
    flag, kind = "--" + f.name.replace("_", "-"), field_type(cls, f.name)
    default = f" (default: {f.default})" if f.default not in (None, False, True) else ""
    if kind is bool and f.default is None:  # three states: unset, --x, --no-x
        parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=s.help)
        parser.add_argument("--no-" + flag[2:], dest=f.name, action="store_false", help=f"the opposite of {flag}")
    elif kind is bool:
        parser.add_argument(
            flag if not f.default else "--no-" + flag[2:],
            dest=f.name,
            default=f.default,
            action="store_false" if f.default else "store_true",
            help=f"turn off (on by default): {s.help}" if f.default else s.help,  # the flag says --no-
        )
    else:
        bounds = f" [{s.bounds_text()}]" if s.bounds_text() else ""
        parser.add_argument(
            flag,
            dest=f.name,
            type=kind,
            default=f.default,
            choices=s.choices,
            help=f"{s.help}{default}{bounds}".replace("%", "%%"),
        )


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (exit 2), like every other user error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def _ray_option(parser: argparse.ArgumentParser, what: str, more: str = "") -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help=f"{what}: on the Ray cluster at ADDRESS, or with no address on RAY_ADDRESS or a local Ray instance "
        f"(needs pip install 'ray[data]'). {more}".strip(),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m embedder", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train an embedder on an image folder and write a run bundle")
    add_settings(p, TrainConfig)
    _ray_option(p, "embed the gallery in a pool of Ray actors", "Several GPUs train with: torchrun -m embedder train")

    p = sub.add_parser("predict", help="label images by their nearest gallery neighbours")
    p.add_argument("run", help="run folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--k", type=int, default=None, help="neighbours that vote (default: the run's k)")
    p.add_argument(
        "--unknown-threshold",
        type=float,
        default=None,
        help='answer "unknown" when the nearest neighbour is farther than this '
        "(default: the run's calibrated threshold)",
    )
    p.add_argument("--no-unknown", action="store_true", help='never answer "unknown"')
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("evaluate", help="held-out queries against the gallery, next to baselines")
    p.add_argument("run", help="run folder")
    p.add_argument("--queries", default=None, help="an ImageFolder of query images (default: the run's held-out split)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip the baselines")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("add", help="add labelled images to a run's gallery without retraining")
    p.add_argument("run", help="run folder")
    p.add_argument("folder", help="an ImageFolder of the images to add (FOLDER/<label>/<image>); new labels are fine")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the run's network embeds them")
    _ray_option(p, "embed the new images in a pool of Ray actors")

    p = sub.add_parser("project", help="2-D/3-D coordinates of the gallery embeddings")
    p.add_argument("run", help="run folder")
    p.add_argument(
        "--all",
        action="store_true",
        help="compute and store in the run every map the app offers (PCA, t-SNE, UMAP; 2-D and 3-D; also before "
        "training), so that they open at once; writes no CSV",
    )
    p.add_argument("--method", default="pca", choices=("pca", "tsne", "umap"), help="projection method")
    p.add_argument("--dims", type=int, default=2, choices=(2, 3), help="output dimensions")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default=None, help="CSV file to write (default: stdout)")
    cli_insights.add_commands(sub)
    cli_labelling.add_commands(sub)

    from ..verbs.import_model import ImportConfig

    p = sub.add_parser("import-model", help="make a run from an embedder trained elsewhere (an ONNX file)")
    p.add_argument("model", help="the .onnx file (run by onnxruntime only; custom operators are refused)")
    add_settings(p, ImportConfig)

    p = sub.add_parser("export-model", help="write a run's embedder as an ONNX file, checked against the run")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    return parser
