"""Dataset formats -> one in-memory ``FERDataset``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .dataset import SPLITS, FERDataset
from .fer2013 import load_fer2013_csv
from .ferplus import apply_ferplus_labels
from .folders import Cropper, load_folder

__all__ = ["FERDataset", "LABEL_MODES", "SPLITS", "load_dataset"]


LABEL_MODES = ("fer2013", "ferplus-majority", "ferplus-probability", "ferplus-crossentropy", "ferplus-multitarget")


def load_dataset(path: str | os.PathLike, labels: str = "fer2013", votes: str | os.PathLike | None = None,
                 skip_bad: bool = False, cropper: Cropper | None = None) -> FERDataset:
    """Load any supported dataset: a fer2013 CSV (plain/.gz), optionally relabelled with FER+ votes
    (``labels="ferplus-majority"`` etc.; ``ferplus7-<mode>`` for the 7 FER2013 classes; ``votes`` =
    fer2013new.csv, found beside the CSV or in ../ferplus/ when not given), or an image folder
    (``folders.load_folder``; ``cropper`` crops the photos of a labelled folder: the floors above pass
    ``inference.crop.FaceCropper()``, the crop of ``ferlab predict``; ``None``: centre square)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    labels = (labels or "fer2013").lower()
    if labels != "fer2013" and not labels.startswith("ferplus"):
        raise DataError(f"unknown label mode {labels!r}; choose one of {', '.join(LABEL_MODES)}")
    if p.is_dir():
        if labels != "fer2013":
            raise DataError(f"{p}: FER+ labels ({labels}) apply to the FER2013 CSV, not to an image folder")
        return load_folder(p, skip_bad=skip_bad, cropper=cropper)

    ds = load_fer2013_csv(p, skip_bad=skip_bad)
    if labels == "fer2013":
        return ds

    scheme, _, mode = labels.partition("-")
    if scheme not in ("ferplus", "ferplus8", "ferplus7"):
        raise DataError(f"unknown label mode {labels!r}; choose one of {', '.join(LABEL_MODES)}")
    return apply_ferplus_labels(ds, votes, mode=mode or "majority", classes=7 if scheme == "ferplus7" else 8)
