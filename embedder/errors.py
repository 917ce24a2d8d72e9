"""The one exception type that means "the user asked for something we can't do"."""


class EmbedderError(Exception):
    """A user error: its message is one line a person can act on.

    The CLI prints it on stderr and exits with code 2; the app shows it with ``st.error``.
    Anything else that escapes is a bug.
    """


class UnreadableImage(EmbedderError):
    """An image file that cannot be used, and why: ``reason`` is the short phrase ("truncated", "not an image",
    "too large (15000×15000 pixels, limit 50 MP)", "not a regular file (named pipe)", ...)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Cancelled(EmbedderError):
    """Raised when a training job is asked to stop; the previous run bundle is left untouched."""


def one_line(text: str, width: int = 200) -> str:
    """``text`` fit for a one-line message: control characters escaped (a file may be named ``"a\\nb.png"``)
    and cut to ``width`` characters (an archive entry's name may be 64 KB long)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= width else text[: width - 1] + "…"
