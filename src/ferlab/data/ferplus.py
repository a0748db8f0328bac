"""FER+ labels (``fer2013new.csv``: 10 crowd votes per FER2013 image) applied to a loaded FER2013 CSV.

The label modes follow the FER+ paper and its reference code (``FERPlusReader._process_data``):
first every vote count of 1 is set to 0 (one annotator alone is an outlier); with ``s`` the sum of the
remaining votes over all ten columns (emotions, unknown, NF):

- ``majority``: the top column must hold more than half of ``s``, else the image is unknown;
- ``probability`` / ``crossentropy``: take the top columns (ties together, at most three) until they cover at
  least 75% of ``s``; unknown if they cover half of ``s`` or less or more than three are needed; the target is
  their normalised vote distribution;
- ``multitarget``: every column with at least 30% of ``s``; unknown if they cover half of ``s`` or less.

Images whose processed label is unknown or NF (the argmax of the processed distribution is the unknown or
NF column) are left out, and so are rows without an image name.  Training rows are kept or dropped by the
chosen mode; PublicTest / PrivateTest rows always by the majority rule, and their target is the one-hot
majority label whatever the mode (FER+ accuracy is accuracy against the majority labels).

The result's ``labels`` is the hard label: the majority label, or for a Training row that only the soft
mode keeps (no majority), the argmax of its target (first column on ties, as the reference code).
``soft`` is the training target: one-hot (majority), the normalised distribution (probability,
crossentropy), the normalised accepted emotions (multitarget).
With ``classes=7`` the labels are the FER2013 classes in the FER2013 order; rows whose hard label is
contempt are dropped and the contempt share of soft targets is removed (renormalised).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..labels import FER2013_CLASSES, FERPLUS_CLASSES, FERPLUS_TO_FER2013, FERPLUS_VOTE_COLUMNS
from .dataset import SPLITS, FERDataset

MODES = ("majority", "probability", "crossentropy", "multitarget")
VOTES_NAME = "fer2013new.csv"
_MODE_ALIASES = {"multi_target": "multitarget", "multi-target": "multitarget", "cross-entropy": "crossentropy",
                 "cross_entropy": "crossentropy", "ce": "crossentropy", "prob": "probability"}
N_EMO = 8  # emotion columns; 8 = unknown, 9 = NF


def find_votes_file(csv_path: str | os.PathLike) -> Path | None:
    """``fer2013new.csv`` beside the FER2013 CSV, or in ``../ferplus/`` relative to it."""
    p = Path(csv_path)
    for cand in (p.parent / VOTES_NAME, p.parent.parent / "ferplus" / VOTES_NAME):
        if cand.is_file():
            return cand
    return None


def read_votes(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read fer2013new.csv -> (usage (N,) str, image name (N,) str, votes (N, 10) int64).

    Errors name the file and the 1-based line: missing columns, wrong field counts, non-integer or
    negative votes, unknown usage.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (the FER+ votes, fer2013new.csv)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows)]
    need = ("Usage", "Image name", *FERPLUS_VOTE_COLUMNS)
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(missing)} (expected header "
                        f"{','.join(need)})")
    iu, iname = header.index("Usage"), header.index("Image name")
    ivotes = [header.index(c) for c in FERPLUS_VOTE_COLUMNS]
    usage, names, votes = [], [], []
    for lineno, row in enumerate(rows, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: {len(row)} fields, expected {len(header)}")
        u = row[iu].strip()
        if u not in SPLITS:
            raise DataError(f"{path}:{lineno}: unknown Usage {u[:20]!r} (expected one of {', '.join(SPLITS)})")
        v = []
        for i in ivotes:
            t = row[i].strip()
            if not t.isdigit():
                raise DataError(f"{path}:{lineno}: vote count {t[:20]!r} in column {header[i]!r} is not a "
                                f"non-negative integer")
            v.append(int(t))
        usage.append(u)
        names.append(row[iname].strip())
        votes.append(v)
    if not votes:
        raise DataError(f"{path}: no data rows")
    return np.asarray(usage), np.asarray(names), np.asarray(votes, dtype=np.int64)


def _process(raw: np.ndarray, mode: str) -> np.ndarray:
    """One row of 10 vote counts -> the FER+ processed distribution over the 10 columns (zeros = unknown
    before normalising; returns the unknown one-hot when the row is discarded).  Mirrors the reference."""
    size = len(raw)
    e_raw = np.where(raw <= 1, 0, raw).astype(np.float64)
    unknown = np.zeros(size)
    unknown[-2] = 1.0
    s = e_raw.sum()
    emo = np.zeros(size)
    if mode == "majority":
        m = e_raw.max()
        if m > 0.5 * s:
            emo[int(np.argmax(e_raw))] = m
        else:
            return unknown
    elif mode in ("probability", "crossentropy"):
        part, count, valid = 0.0, 0, True
        while part < 0.75 * s and count < 3 and valid:
            m = e_raw.max()
            for i in range(size):
                if e_raw[i] == m:
                    emo[i] = m
                    e_raw[i] = 0
                    part += emo[i]
                    count += 1
                    if i >= N_EMO:  # unknown or NF among the top votes
                        valid = False
                        if emo.sum() > m:  # other emotions were taken before it
                            emo[i] = 0
                            count -= 1
                        break
        if emo.sum() <= 0.5 * s or count > 3:
            return unknown
    elif mode == "multitarget":
        keep = e_raw >= 0.3 * s
        emo[keep] = e_raw[keep]
        if emo.sum() <= 0.5 * s:
            return unknown
    else:  # pragma: no cover - checked by the caller
        raise ValueError(mode)
    return emo / emo.sum()


def process_votes(votes: np.ndarray, mode: str) -> np.ndarray:
    """(N, 10) vote counts -> (N, 10) processed distributions (see ``_process``)."""
    out = np.zeros(votes.shape, dtype=np.float64)
    if mode == "majority":  # vectorised; identical to _process(.., "majority")
        v = np.where(votes <= 1, 0, votes)
        s = v.sum(1)
        top = v.argmax(1)
        m = v.max(1)
        ok = m > 0.5 * s
        out[np.flatnonzero(ok), top[ok]] = 1.0
        out[np.flatnonzero(~ok), 8] = 1.0
        return out
    for i, row in enumerate(votes):
        out[i] = _process(row, mode)
    return out


def _mode_name(mode: str) -> str:
    m = _MODE_ALIASES.get(mode.lower(), mode.lower())
    if m not in MODES:
        raise DataError(f"unknown FER+ label mode {mode!r}; choose one of {', '.join(MODES)}")
    return m


def _in_fer2013_order(hard8: np.ndarray, soft8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER+ labels (8 emotions) as FER2013's 7 classes, in FER2013 order: hard labels (-1 for contempt) and
    the soft targets renormalised over the 7."""
    cols = [FERPLUS_CLASSES.index(next(k for k, v in FERPLUS_TO_FER2013.items() if v == c))
            for c in FER2013_CLASSES]  # FER2013 order -> FER+ column
    to7 = np.full(N_EMO, -1, dtype=np.int64)
    to7[cols] = np.arange(len(cols))
    soft = soft8[:, cols]
    return to7[hard8], soft / np.maximum(soft.sum(1, keepdims=True), 1e-12)


def apply_ferplus_labels(ds: FERDataset, votes_path: str | os.PathLike | None = None, mode: str = "majority",
                         classes: int = 8) -> FERDataset:
    """Relabel a FER2013 CSV dataset (``ds.ids`` = row indices) with the FER+ votes; see the module doc.

    ``votes_path`` None: ``fer2013new.csv`` beside ``ds.source`` or in ``../ferplus/``.
    Splits come from the votes file's Usage column.
    """
    mode = _mode_name(mode)
    if classes not in (7, 8):
        raise DataError(f"FER+ labels come in 8 classes (FER+ order) or 7 (FER2013 order), not {classes}")
    if votes_path is None:
        votes_path = find_votes_file(ds.source) if ds.source else None
        if votes_path is None:
            raise DataError(f"{ds.source or 'dataset'}: FER+ labels need the votes file {VOTES_NAME}; none "
                            f"beside the CSV or in ../ferplus/ (pass it with --votes)")
    votes_path = Path(votes_path)
    usage, names, votes = read_votes(votes_path)
    n_votes = len(votes)
    try:
        rows = ds.ids.astype(np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{votes_path}: FER+ votes apply to the FER2013 CSV (ids are row numbers), not to "
                        f"{ds.source or 'this dataset'}") from None
    skipped = len(ds.warnings)  # the CSV loader's skipped bad rows (--skip-bad), one warning each
    if (len(rows) and (rows.min() < 0 or rows.max() >= n_votes)) or len(ds) + skipped != n_votes:
        raise DataError(f"{votes_path}: {n_votes} vote rows, but {ds.source or 'the dataset'} has "
                        f"{len(ds) + skipped} image rows; the files must be aligned row by row")
    usage, names, votes = usage[rows], names[rows], votes[rows]
    warnings = list(ds.warnings)
    mismatch = usage != ds.split
    if mismatch.any():
        i = int(np.flatnonzero(mismatch)[0])
        warnings.append(f"{votes_path}: Usage differs from {ds.source} on {int(mismatch.sum())} rows "
                        f"(first: data row {rows[i]}); using the votes file's Usage")

    maj = process_votes(votes, "majority")
    train = usage == "Training"
    target = maj.copy()
    if mode != "majority":
        target[train] = process_votes(votes[train], mode)
    named = names != ""
    keep = named & (target.argmax(1) < N_EMO)
    soft8 = target[:, :N_EMO]
    soft8 = soft8 / np.maximum(soft8.sum(1, keepdims=True), 1e-12)
    has_major = maj.argmax(1) < N_EMO
    hard8 = np.where(has_major, maj.argmax(1), soft8.argmax(1))

    if classes == 7:
        hard, soft = _in_fer2013_order(hard8, soft8)
        keep &= hard >= 0
        class_names = FER2013_CLASSES
    else:
        hard, soft, class_names = hard8, soft8, FERPLUS_CLASSES

    idx = np.flatnonzero(keep)
    return FERDataset(
        images=ds.images[idx], labels=hard[idx].astype(np.int64), split=usage[idx], ids=ds.ids[idx],
        classes=class_names, soft=soft[idx].astype(np.float32), source=f"{ds.source} + {votes_path}",
        warnings=warnings,
    )
