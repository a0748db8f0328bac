"""The Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``), plain or gzip."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..labels import FER2013_CLASSES
from .cache import cache_path_for, load_npz, save_npz
from .dataset import SPLITS, FERDataset

NPIX = 48 * 48


def _open_text(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = f.read()
        if head == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return raw


def _parse_pixels(text: bytes) -> np.ndarray | None:
    """Parse one row's pixel field; None if it is not exactly 2304 integers in 0..255."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vals = np.fromstring(text, dtype=np.int64, sep=" ")  # C-speed parser
        except ValueError:
            return None
    if vals.size != NPIX or vals.min() < 0 or vals.max() > 255:
        return None
    return vals.astype(np.uint8)


def _pixel_problem(text: bytes) -> str:
    toks = text.split()
    for t in toks:
        if t.startswith(b"-") and t[1:].isdigit():
            return f"pixel value {t.decode()} out of range 0-255"
        if not t.isdigit():
            return f"non-integer pixel value {t.decode(errors='replace')[:20]!r}"
        if int(t) > 255:
            return f"pixel value {int(t)} out of range 0-255"
    return f"{len(toks)} pixel values, expected {NPIX}"


def _parse_row(parts: list[bytes], n_fields: int, ci_e: int, ci_p: int, ci_u: int | None,
               usage_ok: set[str]) -> tuple[np.ndarray, int, str]:
    """(pixels, emotion, usage) of one CSV row's fields; a ``DataError`` saying what is wrong with it."""
    if len(parts) != n_fields:
        raise DataError(f"{len(parts)} fields, expected {n_fields}")
    e = parts[ci_e].strip()
    if not e.isdigit() or int(e) >= len(FER2013_CLASSES):
        raise DataError(f"unknown emotion label {e.decode(errors='replace')[:20]!r} (expected 0-6)")
    u = parts[ci_u].strip().decode(errors="replace") if ci_u is not None else "Training"
    if u not in usage_ok:
        raise DataError(f"unknown Usage {u[:20]!r} (expected one of {', '.join(SPLITS)})")
    px = _parse_pixels(parts[ci_p])
    if px is None:
        raise DataError(_pixel_problem(parts[ci_p]))
    return px, int(e), u


def load_fer2013_csv(path: str | os.PathLike, *, skip_bad: bool = False, use_cache: bool = True) -> FERDataset:
    """Load fer2013.csv (or .csv.gz).  Errors name the file and the 1-based line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    cache = None
    if use_cache and not skip_bad:
        cache = cache_path_for(path, "fer2013")
        cached = load_npz(cache) if cache.exists() else None
        if cached is not None:
            n = len(cached["labels"])
            return FERDataset(
                images=cached["images"], labels=cached["labels"], split=cached["split"].astype(str),
                ids=np.arange(n).astype(str), classes=FER2013_CLASSES, source=str(path),
            )
    raw = _open_text(path)
    lines = raw.split(b"\n")
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    header = [h.strip().decode(errors="replace") for h in lines[0].strip().split(b",")]
    missing = [c for c in ("emotion", "pixels") if c not in header]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(missing)} (header is {','.join(header)!r})")
    ci_e, ci_p = header.index("emotion"), header.index("pixels")
    ci_u = header.index("Usage") if "Usage" in header else None
    images, labels, usage, ids, bad = [], [], [], [], []
    usage_ok = set(SPLITS)
    for lineno, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line:
            continue
        try:
            px, e, u = _parse_row(line.split(b","), len(header), ci_e, ci_p, ci_u, usage_ok)
        except DataError as err:
            msg = f"{path}:{lineno}: {err}"
            if not skip_bad:
                raise DataError(msg) from None
            bad.append(msg)
            continue
        images.append(px)
        labels.append(e)
        usage.append(u)
        ids.append(str(lineno - 2))
    if not images:
        raise DataError(f"{path}: no data rows")
    ds = FERDataset(
        images=np.stack(images).reshape(-1, 48, 48), labels=np.asarray(labels, dtype=np.int64),
        split=np.asarray(usage), ids=np.asarray(ids), classes=FER2013_CLASSES, source=str(path), warnings=bad,
    )
    if cache is not None:
        save_npz(cache, {"images": ds.images, "labels": ds.labels, "split": ds.split.astype("U11")})
    return ds
