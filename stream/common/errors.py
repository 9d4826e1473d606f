"""Exceptions shared across commands (kept apart from :mod:`stream.cli` so that
``python -m stream.cli`` and ``import stream.cli`` raise the very same class)."""


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 2."""


def one_line(exc: BaseException) -> str:
    """*exc*'s message with its line breaks folded, for a one-line error (libpq's span lines)."""
    return " ".join(str(exc).split())
