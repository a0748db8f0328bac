"""Stratified splits, re-splitting a dataset, and class subsets.

All functions are deterministic for a given ``seed`` and return new arrays / datasets (nothing is changed
in place).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import FerlabError
from ..labels import canonical_fer2013
from .dataset import SPLITS, FERDataset
from .leakage import exact_groups


def _normalise_ratios(ratios: Mapping[str, float] | Sequence[float]) -> tuple[list[str], np.ndarray]:
    if isinstance(ratios, Mapping):
        names = [str(k) for k in ratios]
        vals = [ratios[k] for k in ratios]
    else:
        vals = list(ratios)
        if len(vals) != 3:
            raise FerlabError(f"give split ratios as a dict {{name: ratio}} or 3 numbers, not {len(vals)} numbers")
        names = list(SPLITS)
    if not names:
        raise FerlabError("no split ratios given")
    if len(set(names)) != len(names):
        raise FerlabError(f"split names repeat: {names}")
    try:
        r = np.asarray(vals, dtype=np.float64)
    except (TypeError, ValueError):
        raise FerlabError(f"split ratios must be numbers, got {vals}") from None
    if not np.all(np.isfinite(r)) or np.any(r < 0) or r.sum() <= 0:
        raise FerlabError(f"split ratios must be non-negative numbers with a positive sum, got {vals}")
    return names, r / r.sum()  # 80/10/10 and 0.8/0.1/0.1 mean the same


def _allocate(n: int, frac: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of ``n * frac`` to integers summing to ``n``."""
    raw = n * frac
    k = np.floor(raw).astype(np.int64)
    rest = n - int(k.sum())
    if rest:
        order = np.argsort(-(raw - k), kind="stable")  # ties go to the earlier part
        k[order[:rest]] += 1
    return k


def stratified_split(labels: np.ndarray, ratios: Mapping[str, float] | Sequence[float], seed: int = 0) -> np.ndarray:
    """Assign every sample to a part so that each class is split in ``ratios`` (dict ``{name: ratio}``,
    e.g. ``{"train": 0.9, "val": 0.1}`` or ``{"Training": 70, "PublicTest": 10, "PrivateTest": 20}``).

    Returns an array of part names, one per sample.  Per class the part sizes are the ratios rounded by
    largest remainder, so every class (and hence the whole) keeps the ratios to within one sample per class.
    Samples without a hard label (-1) are a stratum of their own.  The same labels, ratios and seed always
    give the same assignment.
    """
    names, frac = _normalise_ratios(ratios)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise FerlabError("stratified_split needs one label per sample (a 1-D array)")
    rng = np.random.default_rng(seed)
    part = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):  # sorted: the rng is consumed in a fixed order
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        counts = _allocate(len(idx), frac)
        part[idx] = np.repeat(np.arange(len(names)), counts)
    width = max(len(n) for n in names)
    return np.asarray(names, dtype=f"U{width}")[part]


def resplit(ds: FERDataset, ratios: Mapping[str, float] | Sequence[float], seed: int = 0,
            group_duplicates: bool = True) -> FERDataset:
    """Pool all samples of ``ds`` and split them again, stratified by class.

    Three parts with generic names (e.g. ``{"train": 80, "val": 10, "test": 10}`` or ``(70, 10, 20)``) become
    "Training", "PublicTest", "PrivateTest" in that order; otherwise (or if the names already are those) the
    given names are used.  With ``group_duplicates`` pixel-identical images always land in the same part, so a
    re-split cannot create train/test leakage from exact duplicates (the ratios then hold over the groups).
    Note that re-splitting FER2013 leaves the standard protocol (PublicTest / PrivateTest): report it.
    """
    names, frac = _normalise_ratios(ratios)
    if len(names) == 3 and not set(names) <= set(SPLITS) and isinstance(ratios, Mapping):
        ratios = dict(zip(SPLITS, frac))
    if len(ds) == 0:
        raise FerlabError("cannot re-split an empty dataset")
    if group_duplicates:
        group = exact_groups(ds.images)
        first = np.full(group.max() + 1, -1, dtype=np.int64)
        first[group[::-1]] = np.arange(len(group))[::-1]  # index of each group's first member
        rep_parts = stratified_split(ds.labels[first], ratios, seed=seed)
        parts = rep_parts[group]
    else:
        parts = stratified_split(ds.labels, ratios, seed=seed)
    return FERDataset(images=ds.images, labels=ds.labels, split=parts, ids=ds.ids, classes=ds.classes,
                      soft=ds.soft, source=ds.source, warnings=list(ds.warnings))


def _class_key(name: str) -> str:
    return canonical_fer2013(name) or name.strip().lower()


def resolve_classes(available: Sequence[str], wanted: Sequence[str | int]) -> list[int]:
    """Indices into ``available`` for the wanted class names (case-insensitive, common spellings such as
    "happiness"/"happy" accepted) or indices."""
    by_name = {c.lower(): i for i, c in enumerate(available)}
    by_key = {_class_key(c): i for i, c in enumerate(available)}
    out: list[int] = []
    for w in wanted:
        if isinstance(w, (int, np.integer)) and not isinstance(w, bool):
            if not 0 <= int(w) < len(available):
                raise FerlabError(f"class index {w} out of range 0-{len(available) - 1}")
            i = int(w)
        else:
            s = str(w).strip()
            i = by_name.get(s.lower(), by_key.get(_class_key(s)))
            if i is None:
                raise FerlabError(f"unknown class {s!r}; this dataset has {', '.join(available)}")
        if i in out:
            raise FerlabError(f"class {available[i]!r} is named twice")
        out.append(i)
    return out


def select_classes(ds: FERDataset, classes: Sequence[str | int]) -> FERDataset:
    """Keep only ``classes`` (in the given order), e.g. the six FER2013 classes without disgust.

    Samples whose hard label is another class are dropped; labels are renumbered into the new ``classes``.
    Soft targets keep the columns of the chosen classes and are renormalised to sum to 1 (a sample whose
    remaining soft mass is zero is dropped).
    """
    if not classes:
        raise FerlabError("select_classes: no classes given")
    keep_idx = resolve_classes(ds.classes, list(classes))
    remap = np.full(len(ds.classes), -1, dtype=np.int64)
    remap[keep_idx] = np.arange(len(keep_idx))
    has_label = ds.labels >= 0
    new_labels = np.where(has_label, remap[np.where(has_label, ds.labels, 0)], -1)
    keep = new_labels >= 0
    soft = None
    if ds.soft is not None:
        soft = ds.soft[:, keep_idx].astype(np.float32)
        mass = soft.sum(1)
        keep &= mass > 0
        keep |= ~has_label & (mass > 0)  # soft-only samples stay if they have mass on kept classes
        soft = soft / np.maximum(mass, 1e-12)[:, None]
    idx = np.flatnonzero(keep)
    return FERDataset(images=ds.images[idx], labels=new_labels[idx], split=ds.split[idx], ids=ds.ids[idx],
                      classes=tuple(ds.classes[i] for i in keep_idx),
                      soft=None if soft is None else soft[idx], source=ds.source, warnings=list(ds.warnings))
