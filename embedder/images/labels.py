"""What may name a class: a label becomes a folder name when labels are exported, so it is held to what a folder
name can safely be, wherever a label comes in (a label file, the Review page, relabel, add)."""

from __future__ import annotations

from ..errors import EmbedderError

MAX_LABEL = 200  # characters in a label


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot name a class (it becomes a folder name when labels are exported), or None."""
    if not label or not label.strip():
        return "an empty label"
    if len(label) > MAX_LABEL:
        return f"a label longer than {MAX_LABEL} characters"
    if label in (".", "..") or label.startswith(".") or any(c in label for c in "/\\\0"):
        return f"the label {label!r}: a label may not start with a dot nor hold a slash"
    if not label.isprintable():
        return f"the label {label!r} holds control characters"
    return None


def check_label(label: str) -> str:
    """``label`` stripped, or EmbedderError saying why it cannot name a class."""
    label = label.strip()
    problem = label_problem(label)
    if problem:
        raise EmbedderError(f"cannot use {problem}")
    return label
