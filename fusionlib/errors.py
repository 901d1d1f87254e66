"""Exceptions that carry one clear, user-facing line.

Every error raised for bad user input derives from :class:`FusionlibError`; the
command line prints ``str(err)`` on one line and exits non-zero, so messages
must name the file (and column, row or key) and say what was expected.
"""

from __future__ import annotations

from pathlib import Path


class FusionlibError(Exception):
    """Base class for errors caused by user input (data, parameters, paths)."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        # One line only: the CLI prints this as-is.
        message = " ".join(str(message).split())
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class DataError(FusionlibError):
    """A data file (clinical table, bounding boxes, image) is missing or malformed."""


class ParamsError(FusionlibError):
    """An experiment parameter file is invalid."""
