"""Exceptions shared across commands (kept apart from :mod:`stream.cli` so that
``python -m stream.cli`` and ``import stream.cli`` raise the very same class)."""


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 2."""
