"""ferlab: facial expression recognition from data to a live camera.

The top-level import is light: it needs neither torch nor OpenCV.  ``Recognizer`` is
imported lazily so that ``import ferlab`` stays fast.
"""

from __future__ import annotations

from .errors import DataError, FerlabError
from .labels import FER2013_CLASSES, FERPLUS_CLASSES

__version__ = "0.1.0"

__all__ = ["DataError", "FerlabError", "FER2013_CLASSES", "FERPLUS_CLASSES", "Recognizer", "__version__"]


def __getattr__(name: str):
    if name == "Recognizer":
        from .inference.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'ferlab' has no attribute {name!r}")
