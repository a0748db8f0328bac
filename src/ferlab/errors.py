"""Errors that describe a user mistake or an input ferlab refuses.  The CLI prints them as one line and
exits 2; the HTTP API answers them as JSON ``{"detail", "kind"}`` with a 4xx status chosen from ``kind``.

``kind`` is a short machine-readable reason.  Kinds used across ferlab:

- images (``ImageError``): ``empty``, ``unsupported``, ``too_large``, ``bad_shape``, ``corrupt``, ``missing``;
- ``recognition``: decoding was fine but detection / cropping / classification of this image failed;
- ``bad_option``: a command-line option or recipe key out of type or range;
- ``output``: an output path that cannot be written; ``input``: an input file that cannot be read;
- ``card``: a model card that is missing, malformed or does not match its model;
- ``error``: anything else.
"""

from __future__ import annotations


class FerlabError(Exception):
    """A user-facing error: bad input, missing file, unknown name.  Never shown with a traceback."""

    kind: str = "error"

    def __init__(self, message: str = "", kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class DataError(FerlabError, ValueError):
    """A dataset file or folder that cannot be read as asked (names the file and row or path)."""

    kind = "data"


class OptionError(FerlabError, ValueError):
    """A command-line option or recipe value outside its type or range (checked before any work starts)."""

    kind = "bad_option"


class OutputError(FerlabError):
    """An output path that cannot be written (checked before the work that would fill it)."""

    kind = "output"
