"""User-facing errors.

A :class:`BraggintError` carries a one-line message that names the file,
parameter or frame at fault.  Command-line programs print it as
``braggint.<program>: error: <message>`` and exit with a non-zero status,
without a traceback.
"""

import os


class BraggintError(Exception):
    """An error caused by the user's input, reported without a traceback."""


class InputFileError(BraggintError):
    """A named input file is missing, unreadable or malformed."""


def require_file(path: str, what: str) -> None:
    """Raise :class:`InputFileError` ``"<path>: <what> not found"`` unless ``path`` is a file."""
    if not os.path.isfile(path):
        raise InputFileError(f"{path}: {what} not found")


class ParameterError(BraggintError):
    """A parameter name or value is unknown, ambiguous, mistyped or out of range."""


class ImageError(BraggintError):
    """An image file or frame cannot be read."""
