"""The one exception type that means "the user asked for something we can't do"."""


class EmbedderError(Exception):
    """A user error: its message is one line a person can act on.

    The CLI prints it on stderr and exits with code 2; the app shows it with ``st.error``.
    Anything else that escapes is a bug.
    """


class Cancelled(EmbedderError):
    """Raised when a training job is asked to stop; the previous run bundle is left untouched."""
