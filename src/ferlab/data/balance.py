"""Class balancing of a TRAINING split: re-sampling (imbalanced-learn) and targeted augmentation.

``balance_dataset(train, method)`` returns a new ``FERDataset``; the input is never changed.

Methods
  none          the dataset unchanged
  ros           random over-sampling: repeat random samples of each class up to the largest class
  rus           random under-sampling: drop random samples of each class down to the smallest class
  smote         SMOTE (k=5): new samples on the line between a sample and one of its 5 nearest
                same-class neighbours, up to the largest class
  smote_tomek   SMOTE, then remove both samples of every Tomek link (imblearn's SMOTETomek)
  smote_enn     SMOTE, then Wilson's edited nearest neighbours, 3-NN (imblearn's SMOTEENN)
  tomek         remove both samples of every Tomek link (cleaning only: counts go down)
  targeted      augmented copies (rotation, zoom, shift, flip, brightness/contrast) of a class's own
                images until each class named in ``counts`` has that many samples
  max           augmented copies until every class has as many samples as the largest class

``counts`` ({class name or index: n}) sets per-class targets for ros, rus, smote*, targeted: an integer is
the class's total after balancing, a string "+n" adds n samples.  Classes not named keep their count.
For ros / smote* a class already above its target is left alone; for rus a class below its target too.

Neighbour searches (SMOTE, Tomek, ENN) run on the flattened 2304 pixels or, with ``features`` (N, F),
on those (e.g. a trained CNN's penultimate layer).  Either way the new images are the same
interpolation of the two parent images, rounded and clipped back to uint8 48x48.  Soft targets (FER+)
are copied with their sample, or interpolated like the pixels.

The leak guard: balancing is for the training split only, after the train/test split.  Over-sampling a
pool that still holds test rows copies them (ROS) or interpolates them (SMOTE) into training, and the
test accuracy then measures memory.  ``balance_dataset`` refuses a dataset with any sample whose split
is not a training split unless ``allow_eval=True``, which exists only for the leakage experiment
(benchmarks/imbalance.py).

New samples get the split "Training" and ids that say where they came from: ``ros:<n>:<source id>``
(an exact copy), ``aug:<n>:<source id>`` (an augmented copy), ``smote:<n>`` (an interpolation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import FerlabError
from .dataset import FERDataset
from .splits import resolve_classes

METHODS = ("none", "ros", "rus", "smote", "smote_tomek", "smote_enn", "tomek", "targeted", "max")
#: split names that count as training data for the leak guard
TRAIN_SPLITS = frozenset({"Training", "training", "Train", "train"})
#: the augmentation of targeted / max copies (an ``AugmentConfig`` dict; no crop: copies stay 48x48)
COPY_AUGMENT = {"crop": 0, "flip": 0.5, "rotate": 15.0, "scale": 0.1, "translate": 0.06, "affine_p": 1.0,
                "brightness": 0.1, "contrast": 0.15}
SMOTE_K = 5


@dataclass
class BalanceCounts:
    """Per-class counts before and after balancing (samples with a hard label)."""

    method: str
    before: dict[str, int]
    after: dict[str, int]

    def __str__(self) -> str:
        parts = [f"{c} {self.before[c]}->{self.after[c]}" for c in self.before]
        return (f"balance {self.method}: {sum(self.before.values())} -> {sum(self.after.values())} samples "
                f"({', '.join(parts)})")

    def to_dict(self) -> dict:
        return {"method": self.method, "before": dict(self.before), "after": dict(self.after)}


def class_counts(ds: FERDataset) -> dict[str, int]:
    counts = np.bincount(ds.labels[ds.labels >= 0], minlength=ds.num_classes)
    return {c: int(counts[i]) for i, c in enumerate(ds.classes)}


def check_training_only(ds: FERDataset, what: str = "balancing") -> None:
    """The leak guard: raise if ``ds`` holds any sample outside a training split."""
    names, n = np.unique(ds.split.astype(str), return_counts=True)
    bad = {s: int(k) for s, k in zip(names, n) if s not in TRAIN_SPLITS}
    if bad:
        listed = ", ".join(f"{k} {s}" for s, k in bad.items())
        raise FerlabError(
            f"{what} refused: the dataset still holds evaluation samples ({listed}). Resampling before the "
            f"train/test split copies (ROS) or interpolates (SMOTE) test images into training, so the test "
            f"accuracy measures memory, not generalisation. Split first and balance only the training split "
            f"(allow_eval=True is only for the leakage experiment).")


def balance_dataset(ds: FERDataset, method: str, counts: Mapping | None = None, seed: int = 0,
                    features: np.ndarray | None = None, allow_eval: bool = False, log: bool = True,
                    return_counts: bool = False, augment: Mapping | None = None):
    """Balance the classes of a training split (see the module docstring).

    Returns the new dataset, or ``(dataset, BalanceCounts)`` with ``return_counts``.  Deterministic for
    a given ``seed``.  ``log`` prints one line with the counts before and after.
    """
    method = (method or "none").lower()
    if method not in METHODS:
        raise FerlabError(f"unknown balance method {method!r}; choose one of {', '.join(METHODS)}")
    before = class_counts(ds)
    if method == "none":
        out = ds
    else:
        if not allow_eval:
            check_training_only(ds, f"balance {method}")
        if features is not None:
            features = np.asarray(features, dtype=np.float32).reshape(len(ds), -1)
        if counts and method in ("max", "tomek"):
            raise FerlabError(f"balance {method}: per-class counts do not apply (they do for ros, rus, smote, "
                              f"smote_tomek, smote_enn and targeted)")
        if method == "targeted" and not counts:
            raise FerlabError("balance targeted needs per-class counts (balance_counts), e.g. "
                              "{disgust: 1600, surprise: 4000}")
        has = ds.labels >= 0
        lab = ds.labels[has]
        if len(np.unique(lab)) < 2:
            raise FerlabError(f"balance {method}: needs at least two classes with samples")
        cur = np.bincount(lab, minlength=ds.num_classes)
        targets = _targets(ds, counts, cur, method)
        keep_aside = np.flatnonzero(~has)  # soft-only samples (no hard label) are kept as they are
        sub = ds.subset(np.flatnonzero(has)) if len(keep_aside) else ds
        feats = features[has] if (features is not None and len(keep_aside)) else features
        if method in ("ros", "rus"):
            out = _random_resample(sub, method, targets, seed)
        elif method in ("smote", "smote_tomek", "smote_enn"):
            out = _smote(sub, method, targets, seed, feats)
        elif method == "tomek":
            out = _clean(sub, "tomek", feats if feats is not None else _pixels(sub))
        else:
            out = _augmented_copies(sub, targets, seed, augment)
        if len(keep_aside):
            out = concat([out, ds.subset(keep_aside)])
        if out is ds:  # nothing to add or remove: still a new object, so the input's warnings stay as they were
            out = dataclasses.replace(ds, warnings=list(ds.warnings))
    after = class_counts(out)
    bc = BalanceCounts(method, before, after)
    if method != "none":
        out.warnings.append(str(bc))
        gone = [c for c in before if before[c] and not after[c]]
        if gone:
            out.warnings.append(f"balance {method} removed every sample of {', '.join(gone)}")
        if log:
            print(bc, flush=True)
            if gone:
                print(f"warning: {out.warnings[-1]}", flush=True)
    return (out, bc) if return_counts else out


# ------------------------------------------------------------------------------------------ helpers


def concat(parts: list[FERDataset]) -> FERDataset:
    """Samples of several datasets with the same classes, in order."""
    first = parts[0]
    for p in parts[1:]:
        if tuple(p.classes) != tuple(first.classes):
            raise FerlabError("cannot join datasets with different classes")
    soft = None
    if any(p.soft is not None for p in parts):
        soft = np.concatenate([p.soft if p.soft is not None else _one_hot(p.labels, p.num_classes)
                               for p in parts]).astype(np.float32)
    return FERDataset(images=np.concatenate([p.images for p in parts]),
                      labels=np.concatenate([p.labels for p in parts]).astype(np.int64),
                      split=np.concatenate([p.split.astype(object) for p in parts]).astype(str),
                      ids=np.concatenate([p.ids.astype(object) for p in parts]).astype(str),
                      classes=first.classes, soft=soft, source=first.source, warnings=list(first.warnings))


def _one_hot(labels: np.ndarray, c: int) -> np.ndarray:
    out = np.zeros((len(labels), c), np.float32)
    ok = labels >= 0
    out[np.flatnonzero(ok), labels[ok]] = 1
    return out


def _pixels(ds: FERDataset) -> np.ndarray:
    return ds.images.reshape(len(ds), -1).astype(np.float32)


def _targets(ds: FERDataset, counts: Mapping | None, cur: np.ndarray, method: str) -> np.ndarray:
    """Per-class target counts (the current count where nothing changes)."""
    if method in ("ros", "smote", "smote_tomek", "smote_enn", "max"):
        default = np.maximum(cur, cur.max())
        default[cur == 0] = 0  # an empty class cannot be over-sampled
    elif method == "rus":
        m = cur[cur > 0].min()
        default = np.minimum(cur, m)
    else:
        default = cur.copy()
    if not counts:
        return default

    t = cur.copy()
    for key, val in counts.items():
        k = int(key) if isinstance(key, (int, np.integer)) or str(key).isdigit() else key
        i = resolve_classes(ds.classes, [k])[0]
        s = str(val).strip()
        try:
            n = cur[i] + int(s[1:]) if s.startswith("+") else int(s)
        except ValueError:
            raise FerlabError(f"balance count for {ds.classes[i]!r} must be an integer or '+n', not {val!r}") from None
        if n < 0:
            raise FerlabError(f"balance count for {ds.classes[i]!r} is negative ({val})")
        if method == "rus":
            t[i] = min(cur[i], n)
        else:
            if cur[i] == 0 and n > 0:
                raise FerlabError(f"balance {method}: class {ds.classes[i]!r} has no training sample to copy")
            t[i] = max(cur[i], n)
    return t


def _random_resample(ds: FERDataset, method: str, targets: np.ndarray, seed: int) -> FERDataset:
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler

    strategy = {int(c): int(t) for c, t in enumerate(targets) if t > 0}
    sampler = (RandomOverSampler if method == "ros" else RandomUnderSampler)(sampling_strategy=strategy,
                                                                              random_state=seed)
    idx_x = np.arange(len(ds))[:, None]  # the sampler only needs to pick rows: give it row numbers
    sampler.fit_resample(idx_x, ds.labels)
    idx = np.asarray(sampler.sample_indices_)
    if method == "rus":
        return ds.subset(np.sort(idx))
    orig, extra = idx[:len(ds)], idx[len(ds):]
    assert np.array_equal(orig, np.arange(len(ds)))  # imblearn keeps the originals first
    copies = ds.subset(extra)
    copies.split = np.full(len(extra), "Training")
    copies.ids = np.asarray([f"ros:{n}:{i}" for n, i in enumerate(ds.ids[extra])])
    return concat([ds, copies])


def _smote(ds: FERDataset, method: str, targets: np.ndarray, seed: int, features: np.ndarray | None) -> FERDataset:
    """SMOTE in pixel or feature space; images (and soft targets) are interpolated with the same weights.

    The pixels (and soft targets) ride along as extra columns scaled down so far that they do not move the
    neighbour search, so imbalanced-learn's own SMOTE does the interpolation for all columns at once."""
    from imblearn.over_sampling import SMOTE

    n = len(ds)
    cur = np.bincount(ds.labels, minlength=ds.num_classes)
    if cur[targets > cur].size and (cur[targets > cur] < 2).any():
        raise FerlabError(f"balance {method}: SMOTE needs at least 2 samples in every class it over-samples")
    k = int(min(SMOTE_K, cur[targets > cur].min() - 1)) if (targets > cur).any() else SMOTE_K
    search = features if features is not None else _pixels(ds)
    passengers = []
    if features is not None:
        passengers.append(_pixels(ds))
    if ds.soft is not None:
        passengers.append(ds.soft.astype(np.float32))
    if passengers:
        scale = float(np.abs(search).max() or 1.0)
        pas = np.concatenate(passengers, 1)
        eps = 1e-5 * scale / (float(np.abs(pas).max()) or 1.0) / np.sqrt(pas.shape[1])
        X = np.concatenate([search, pas * eps], 1).astype(np.float32)
    else:
        X = search.astype(np.float32)
    strategy = {int(c): int(t) for c, t in enumerate(targets) if t > 0}
    Xr, yr = SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=seed).fit_resample(X, ds.labels)
    assert np.array_equal(yr[:n], ds.labels)  # imblearn keeps the originals first, then the new samples
    new = Xr[n:]
    f = search.shape[1]
    if features is not None:
        pix = new[:, f:f + 2304] / eps
        soft_new = new[:, f + 2304:] / eps if ds.soft is not None else None
        new_feats = new[:, :f]
    else:
        pix = new[:, :2304]
        soft_new = new[:, 2304:] / eps if ds.soft is not None else None
        new_feats = None
    h, w = ds.images.shape[1:]
    images = np.clip(np.rint(pix), 0, 255).astype(np.uint8).reshape(-1, h, w)
    if soft_new is not None:
        soft_new = np.clip(soft_new, 0, None).astype(np.float32)
        soft_new /= np.maximum(soft_new.sum(1, keepdims=True), 1e-12)
    synth = FERDataset(images=images, labels=yr[n:].astype(np.int64), split=np.full(len(new), "Training"),
                       ids=np.asarray([f"smote:{i}" for i in range(len(new))]), classes=ds.classes,
                       soft=soft_new, source=ds.source)
    out = concat([ds, synth])
    if method == "smote":
        return out
    # the cleaning step sees what the sampler produced: the features where given, else the new pixels
    space = np.concatenate([search, new_feats]) if features is not None else _pixels(out)
    return _clean(out, "tomek" if method == "smote_tomek" else "enn", space)


def _clean(ds: FERDataset, how: str, space: np.ndarray) -> FERDataset:
    """Tomek-link removal or edited nearest neighbours (all classes, as imblearn's combined samplers)."""
    from imblearn.under_sampling import EditedNearestNeighbours, TomekLinks

    sampler = TomekLinks(sampling_strategy="all") if how == "tomek" else \
        EditedNearestNeighbours(sampling_strategy="all")
    sampler.fit_resample(np.asarray(space, dtype=np.float32), ds.labels)
    return ds.subset(np.sort(np.asarray(sampler.sample_indices_)))


def _augmented_copies(ds: FERDataset, targets: np.ndarray, seed: int, augment: Mapping | None,
                      batch: int = 1024) -> FERDataset:
    """Augmented copies of each class's own images up to ``targets`` (each image used as evenly as possible)."""
    import torch

    from .augment import Augmenter

    aug = Augmenter({**COPY_AUGMENT, **dict(augment or {}), "crop": 0}, seed=seed)
    rng = np.random.default_rng(seed)
    src: list[np.ndarray] = []
    for c, t in enumerate(targets):
        members = np.flatnonzero(ds.labels == c)
        need = int(t) - len(members)
        if need <= 0:
            continue
        reps = -(-need // len(members))
        order = np.concatenate([rng.permutation(members) for _ in range(reps)])[:need]
        src.append(order)
    if not src:
        return ds
    idx = np.concatenate(src)
    out = np.empty((len(idx), *ds.images.shape[1:]), np.uint8)
    for i in range(0, len(idx), batch):
        x = aug(torch.as_tensor(ds.images[idx[i:i + batch]]))
        out[i:i + batch] = x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    copies = FERDataset(images=out, labels=ds.labels[idx], split=np.full(len(idx), "Training"),
                        ids=np.asarray([f"aug:{n}:{s}" for n, s in enumerate(ds.ids[idx])]), classes=ds.classes,
                        soft=None if ds.soft is None else ds.soft[idx], source=ds.source)
    return concat([ds, copies])


# ------------------------------------------------------------------------------------ sampling weights


def sample_weights(labels: np.ndarray, num_classes: int, power: float = 1.0) -> np.ndarray:
    """Per-sample weights 1 / count(class)^power (power 1: every class drawn equally often, 0.5: softer), for a
    weighted sampler (``TrainConfig.sampler = "weighted"`` draws with power 1).  Samples without a hard
    label get weight 0."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
    w = np.zeros(len(labels))
    ok = labels >= 0
    w[ok] = 1.0 / np.maximum(counts[labels[ok]], 1) ** power
    return w / w.sum() if w.sum() > 0 else w


def weighted_indices(labels: np.ndarray, num_classes: int, n: int | None = None, seed: int = 0,
                     power: float = 1.0) -> np.ndarray:
    """``n`` sample indices drawn with replacement by ``sample_weights`` (an over-sampled epoch order)."""
    w = sample_weights(labels, num_classes, power)
    return np.random.default_rng(seed).choice(len(w), size=n or len(w), replace=True, p=w)
