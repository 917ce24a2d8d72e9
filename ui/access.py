"""Which server folders a browser may name, and how server paths are shown to it.

Environment:
    EMBEDDER_DATA_ROOTS  folders (separated by os.pathsep, ':' on Linux) that the Train page's "Folder on the
                         server" and Home's "Load a run from another folder" accept, with everything below them.
                         Default: ./data, the runs folder ($EMBEDDER_RUNS_DIR) and the demo cache
                         (embedder.images.data.default_cache_dir()).

A browser never sees an absolute server path: a path under a root is shown as ``<root name>/<rest>``
(``data/photos/cat``), any other path by its last part only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from embedder.errors import EmbedderError
from embedder.images.data import default_cache_dir
from embedder.runs.run import is_run

from . import state

ROOTS_ENV = "EMBEDDER_DATA_ROOTS"
# The same words whether the folder exists or not: a visitor must not be able to probe the server's disk.
OUTSIDE = "that folder is not one this server shares: use a folder inside its data folders (EMBEDDER_DATA_ROOTS)"
# An absolute POSIX path inside a message: a '/' that does not follow a word, a dot, a colon or another '/'
# (so "cat/1.jpg", "1/2" and "https://…" are left alone), up to whitespace or quoting punctuation.
_ABSOLUTE = re.compile(r"(?<![\w./:~-])/[^\s'\"`,;:()\[\]<>]*")


def data_roots() -> list[Path]:
    """The shared folders, resolved (symlinks and '..' gone), longest first so the nearest root names a path."""
    raw = os.environ.get(ROOTS_ENV, "")
    if raw.strip():
        paths = [Path(p.strip()) for p in raw.split(os.pathsep) if p.strip()]
    else:
        paths = [Path("data"), state.runs_dir(), default_cache_dir()]
    roots = {p.expanduser().resolve() for p in paths}
    return sorted(roots, key=lambda p: len(p.parts), reverse=True)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def shared_path(text: str) -> Path:
    """The resolved server path a visitor typed, if it lies inside a data root.

    A relative path that starts with a root's name (``data/photos``, as ``display`` shows it) is taken under that
    root; any other relative path under the working folder. Existence is not checked here.

    Raises:
        EmbedderError: ``OUTSIDE``, for any path outside the roots, existing or not.
    """
    typed = Path(text.strip()).expanduser()
    roots = data_roots()
    if not typed.is_absolute() and typed.parts:
        named = [r for r in roots if r.name and r.name == typed.parts[0]]
        typed = named[0].joinpath(*typed.parts[1:]) if named else Path.cwd() / typed
    try:
        path = typed.resolve()  # symlinks and '..' first: containment is judged on where the path really leads
    except (OSError, RuntimeError):  # a symlink loop
        raise EmbedderError(OUTSIDE) from None
    if not any(_inside(path, r) for r in roots):
        raise EmbedderError(OUTSIDE)
    return path


def shared_folder(text: str) -> Path:
    """An image folder a visitor named. Raises EmbedderError: outside the roots (``OUTSIDE``), or missing."""
    path = shared_path(text)
    if not path.is_dir():
        raise EmbedderError(f"data folder not found: {display(path)}")
    return path


def shared_run(text: str) -> Path:
    """A run folder a visitor named. Raises EmbedderError: outside the roots (``OUTSIDE``), missing, or not a run."""
    path = shared_path(text)
    if not path.is_dir():
        raise EmbedderError(f"run folder not found: {display(path)}")
    if not is_run(path):
        raise EmbedderError(f"{display(path)} is not a run folder (no config.json)")
    return path


def display(path: str | os.PathLike) -> str:
    """How the browser is told about a server path: relative to its root, or only its last part."""
    p = Path(os.path.normpath(path))
    for root in [*data_roots(), state.runs_dir()]:
        if _inside(p, root):
            rel = p.relative_to(root).as_posix()
            return root.name if rel == "." else f"{root.name}/{rel}" if root.name else f"/{rel}"
    return p.name or "/"


def public(message: str) -> str:
    """``message`` with every absolute server path in it replaced by its ``display`` form."""
    return _ABSOLUTE.sub(lambda m: display(m.group(0)), message)
