"""Dataset formats -> one in-memory ``FERDataset``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .dataset import SPLITS, FERDataset

__all__ = ["FERDataset", "SPLITS", "load_dataset"]


def load_dataset(path: str | os.PathLike, labels: str = "fer2013", votes: str | os.PathLike | None = None,
                 skip_bad: bool = False) -> FERDataset:
    """Load any supported dataset: a fer2013 CSV (plain/.gz), optionally relabelled with FER+ votes
    (``labels="ferplus-majority"`` etc., ``votes`` = fer2013new.csv), or a folder release."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        from .folders import load_folder

        return load_folder(p, skip_bad=skip_bad)
    from .fer2013 import load_fer2013_csv

    ds = load_fer2013_csv(p, skip_bad=skip_bad)
    if labels == "fer2013":
        return ds
    if labels.startswith("ferplus"):
        from .ferplus import apply_ferplus_labels

        return apply_ferplus_labels(ds, votes, mode=labels.split("-", 1)[1] if "-" in labels else "majority")
    raise DataError(f"unknown label mode {labels!r}")
