"""Classification metrics of a probabilistic classifier, in plain numpy.

``evaluate_predictions(y_true, probs, classes)`` returns an ``EvalResult`` with accuracy (and a bootstrap
95% interval), top-k accuracy, balanced accuracy, per-class precision / recall / F1 / support with their
macro and weighted averages, the confusion matrix, one-vs-rest ROC curves with per-class, micro and macro
AUC, one-vs-rest precision-recall curves with per-class, micro and macro average precision, per-class 95%
bootstrap intervals of recall and F1, the accuracy-against-coverage curve of selective prediction (keep the
most confident predictions) with the confidence thresholds that reach 90% and 95% accuracy, expected
calibration error with its reliability bins, and the negative log-likelihood.

Conventions (those of scikit-learn, which the tests compare against):

- precision of a class that is never predicted is 0; recall and F1 of a class absent from ``y_true`` are
  undefined (NaN, ``null`` in JSON) and a note says so;
- balanced accuracy and the macro averages are means over the classes present in ``y_true``; the weighted
  averages weight by support (so absent classes weigh nothing);
- the AUC of a class absent from ``y_true`` (or the only class present) is NaN with a note; the macro AUC
  is the mean over the classes where it is defined, the micro AUC pools every (sample, class) pair;
- average precision is scikit-learn's ``average_precision_score``: the step-wise sum
  ``sum_n (R_n - R_{n-1}) P_n`` over the distinct scores (no interpolation), undefined (NaN) for a class absent
  from ``y_true``; macro AP is the mean over the classes where it is defined, micro AP pools the pairs;
- bootstrap intervals are 2.5 / 97.5 percentiles over resamples of the rows (fixed seed); a per-class interval
  uses the resamples that contain the class;
- selective prediction keeps the predictions whose top probability is at least a threshold ``t``: coverage is
  the kept share, selective accuracy the accuracy on the kept rows.  Every distinct confidence is a
  threshold; ties are kept or dropped together.  The threshold reported for a target accuracy is the lowest
  one (largest coverage) whose selective accuracy reaches it on at least ``MIN_KEPT`` kept rows (a handful of
  confident rows that happen to be right prove nothing), or ``None`` (not reached).

No scikit-learn is needed: the ``[inference]`` install can evaluate ONNX models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..calibration import expected_calibration_error, reliability

ECE_BINS = 15
SELECTIVE_TARGETS = (0.90, 0.95)                # accuracies whose confidence threshold is reported
COVERAGE_POINTS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.1)   # coverages of the selective-accuracy table
MIN_KEPT = 30  # a target accuracy counts as reached only on at least this many kept rows (or all of them)


def _clean(x: Any) -> Any:
    """JSON-safe: numpy -> python, NaN/inf -> None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    return x


@dataclass
class EvalResult:
    """All metrics of one evaluation.  Arrays are indexed by class in the order of ``classes``."""

    classes: list[str]
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float] | None
    top_k: dict[int, float]
    balanced_accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: np.ndarray                 # (C, C) counts, rows = true class, columns = predicted
    roc: dict[str, tuple[np.ndarray, np.ndarray]]  # class (and "micro") -> (fpr, tpr)
    auc: np.ndarray                       # (C,) one-vs-rest AUC, NaN where undefined
    auc_micro: float
    auc_macro: float
    ece: float
    reliability: dict[str, np.ndarray]    # edges, confidence, accuracy, count per bin
    nll: float
    bootstrap: int = 0
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% intervals of other metrics
    class_ci: dict[str, np.ndarray] = field(default_factory=dict)  # "recall"/"f1" -> (C, 2) 95% intervals
    pr: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # class/"micro" -> (recall, precision)
    ap: np.ndarray | None = None          # (C,) average precision, NaN where undefined
    ap_micro: float = float("nan")
    ap_macro: float = float("nan")
    selective: dict[str, Any] = field(default_factory=dict)  # see selective_prediction()
    clean_accuracy: float | None = None   # accuracy on test rows with no pixel-identical copy in Training
    clean_n: int | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def confusion_normalized(self) -> np.ndarray:
        """Row-normalised confusion matrix (each true class sums to 1; rows of absent classes are 0)."""
        rows = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, rows, out=np.zeros(self.confusion.shape, np.float64), where=rows > 0)

    @property
    def macro_f1(self) -> float:
        return self.macro["f1"]

    def top_confusions(self, k: int = 5) -> list[tuple[str, str, int, float]]:
        """The k largest off-diagonal cells: (true, predicted, count, share of the true class)."""
        cm = self.confusion.copy()
        np.fill_diagonal(cm, 0)
        norm = self.confusion_normalized
        order = np.argsort(cm, axis=None)[::-1][:k]
        out = []
        for flat in order:
            i, j = np.unravel_index(flat, cm.shape)
            if cm[i, j] > 0:
                out.append((self.classes[i], self.classes[j], int(cm[i, j]), float(norm[i, j])))
        return out

    def to_dict(self, curves: bool = True) -> dict[str, Any]:
        per_class = {
            c: {"precision": self.precision[i], "recall": self.recall[i], "f1": self.f1[i],
                "support": int(self.support[i]), "auc": self.auc[i],
                "average_precision": self.ap[i] if self.ap is not None else None,
                **{f"{m}_ci95": (list(self.class_ci[m][i]) if not np.isnan(self.class_ci[m][i]).any() else None)
                   for m in ("recall", "f1") if m in self.class_ci}}
            for i, c in enumerate(self.classes)
        }
        d: dict[str, Any] = {
            "n": self.n, "classes": list(self.classes),
            "accuracy": self.accuracy, "accuracy_ci95": self.accuracy_ci, "bootstrap": self.bootstrap,
            "top2_accuracy": self.top_k.get(2), "top3_accuracy": self.top_k.get(3),
            "balanced_accuracy": self.balanced_accuracy, "macro_f1": self.macro["f1"],
            "clean_accuracy": self.clean_accuracy, "clean_n": self.clean_n,
            "ci95": {k: list(v) for k, v in self.ci.items()},
            "macro": self.macro, "weighted": self.weighted, "per_class": per_class,
            "confusion_matrix": self.confusion.astype(int),
            "confusion_matrix_normalized": np.round(self.confusion_normalized, 4),
            "auc": {"micro": self.auc_micro, "macro": self.auc_macro,
                    **{c: self.auc[i] for i, c in enumerate(self.classes)}},
            "average_precision": None if self.ap is None else {
                "micro": self.ap_micro, "macro": self.ap_macro, **{c: self.ap[i] for i, c in enumerate(self.classes)}},
            "selective": _selective_summary(self.selective),
            "ece": self.ece, "ece_bins": len(self.reliability["count"]), "nll": self.nll,
            "reliability": {"edges": np.round(self.reliability["edges"], 4),
                            "confidence": np.round(self.reliability["confidence"], 4),
                            "accuracy": np.round(self.reliability["accuracy"], 4),
                            "count": self.reliability["count"].astype(int)},
            "top_confusions": [{"true": t, "predicted": p, "count": n, "share": round(s, 4)}
                               for t, p, n, s in self.top_confusions()],
            "notes": list(self.notes),
        }
        if curves:  # resampled on a fixed false-positive-rate grid: enough to redraw, small on disk
            grid = np.linspace(0, 1, 101)
            d["roc"] = {"fpr": grid, **{k: (np.round(np.interp(grid, f, t), 4) if not np.isnan(f).any() else None)
                                        for k, (f, t) in self.roc.items()}}
            if self.pr:  # precision of the highest threshold that reaches each recall of a fixed grid
                d["pr"] = {"recall": grid, **{k: (np.round(_precision_at_recall(r, p, grid), 4)
                                                 if not np.isnan(r).any() else None)
                                              for k, (r, p) in self.pr.items()}}
            if self.selective:  # selective accuracy and threshold on a fixed coverage grid
                cov, acc, thr = (self.selective[k] for k in ("coverage", "accuracy", "threshold"))
                j = _first_reaching(cov, grid[1:])
                d["selective_curve"] = {"coverage": grid[1:], "accuracy": np.round(acc[j], 4),
                                        "threshold": np.round(thr[j], 4), "coverage_kept": np.round(cov[j], 4)}
        if self.meta:
            d["meta"] = self.meta
        return _clean(d)


# ----------------------------------------------------------------------------------------------- pieces

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k highest scores (ties count against the sample)."""
    if k >= probs.shape[1]:
        return 1.0
    true_score = probs[np.arange(len(y_true)), y_true]
    rank = (probs > true_score[:, None]).sum(axis=1)
    return float((rank < k).mean())


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC of binary labels ``y`` (bool) against ``score``: (fpr, tpr) at every distinct threshold,
    starting at (0, 0); collinear points are dropped.  NaN arrays when one of the two classes is absent."""
    y = np.asarray(y, bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return np.array([np.nan]), np.array([np.nan])
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(yy)[last]
    fps = (last + 1) - tps
    if len(tps) > 2:  # drop points on a straight line between their neighbours (as scikit-learn does)
        keep = np.r_[True, np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0), True]
        fps, tps = fps[keep], tps[keep]
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def auc_from_curve(fpr: np.ndarray, tpr: np.ndarray) -> float:
    if np.isnan(fpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def precision_recall_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve of binary labels ``y`` (bool) against ``score``: (recall, precision, threshold)
    at every distinct score, highest threshold first (recall non-decreasing).  NaN arrays when ``y`` holds no
    positive."""
    y = np.asarray(y, bool)
    score = np.asarray(score, np.float64)
    if not y.any():
        nan = np.array([np.nan])
        return nan, nan, nan
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(yy)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return recall, precision, s[last]


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (scikit-learn's definition): sum over thresholds of (R_n - R_{n-1}) P_n; NaN with no
    positive."""
    recall, precision, _ = precision_recall_curve(y, score)
    if np.isnan(recall).any():
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _precision_at_recall(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Precision of the first (highest-threshold) point of the curve whose recall reaches each grid value."""
    return precision[_first_reaching(recall, grid)]


def _first_reaching(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the first element of non-decreasing ``x`` that is >= each grid value (the last if none)."""
    return np.minimum(np.searchsorted(x, grid - 1e-12, side="left"), len(x) - 1)


def selective_prediction(y_true: np.ndarray, probs: np.ndarray, targets: tuple[float, ...] = SELECTIVE_TARGETS,
                         min_kept: int = MIN_KEPT) -> dict[str, Any]:
    """Accuracy against coverage when only predictions with top probability >= a threshold are kept.

    Returns ``coverage``, ``accuracy``, ``threshold`` and ``kept`` (arrays, one point per distinct confidence,
    most confident first, so coverage rises to 1), ``area`` (the mean selective accuracy over coverage, the
    area under the curve), ``targets``: {accuracy: {threshold, coverage, accuracy, kept, accuracy_lower95}, or
    None when no threshold keeping at least ``min_kept`` rows (all rows if fewer) reaches it}
    (``accuracy_lower95``: the Wilson lower bound of the accuracy on the kept
    rows, small when few rows are kept) and ``at_coverage``: {coverage: {accuracy, threshold, coverage, kept}}
    for the smallest kept set covering at least each of ``COVERAGE_POINTS``."""
    y = np.asarray(y_true)
    p = np.asarray(probs, np.float64)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    order = np.argsort(-conf, kind="mergesort")
    c, ok = conf[order], correct[order]
    n = len(c)
    last = np.r_[np.flatnonzero(np.diff(c)), n - 1]
    kept = last + 1
    accuracy = np.cumsum(ok)[last] / kept
    coverage = kept / n
    # area under the step curve: every row adds the selective accuracy of the set it joins
    area = float(np.sum(np.diff(np.r_[0, kept]) * accuracy) / n)
    out: dict[str, Any] = {"coverage": coverage, "accuracy": accuracy, "threshold": c[last], "kept": kept,
                           "area": area, "n": n, "min_kept": min(int(min_kept), n), "targets": {}, "at_coverage": {}}
    for t in targets:
        hit = np.flatnonzero((accuracy >= t - 1e-12) & (kept >= min(int(min_kept), n)))
        if len(hit):
            j = int(hit[-1])
            out["targets"][float(t)] = {"threshold": float(c[last][j]), "coverage": float(coverage[j]),
                                        "accuracy": float(accuracy[j]), "kept": int(kept[j]),
                                        "accuracy_lower95": wilson_lower(accuracy[j], int(kept[j]))}
        else:
            out["targets"][float(t)] = None
    for cv in COVERAGE_POINTS:
        j = int(_first_reaching(coverage, np.array([cv]))[0])
        out["at_coverage"][float(cv)] = {"accuracy": float(accuracy[j]), "threshold": float(c[last][j]),
                                         "coverage": float(coverage[j]), "kept": int(kept[j])}
    return out


def wilson_lower(p: float, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval (95% by default) of a proportion ``p`` observed on ``n`` rows:
    how sure an accuracy measured on few kept rows is."""
    if n <= 0:
        return float("nan")
    d = 1 + z * z / n
    centre = p + z * z / (2 * n)
    return float((centre - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d)


def _selective_summary(sel: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON part of ``selective_prediction`` (the full curve goes to ``selective_curve``)."""
    if not sel:
        return None
    return {
        "area_under_accuracy_coverage": sel["area"],
        "thresholds": {f"accuracy_{round(100 * t)}": (dict(hit) if hit else "not reached")
                       for t, hit in sel["targets"].items()},
        "at_coverage": {f"{round(100 * cv)}%": dict(row) for cv, row in sel["at_coverage"].items()},
        "rule": "keep a prediction when its top probability >= threshold; coverage = share kept; a target "
                f"accuracy counts as reached on at least {sel['min_kept']} kept rows",
    }


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1, support from a confusion matrix (..., C, C) (leading batch dims ok)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    support = cm.sum(axis=-1).astype(np.float64)
    predicted = cm.sum(axis=-2).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    f1 = np.where(support > 0, f1, np.nan)
    return precision, recall, f1, support


def _bootstrap(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, n_boot: int, seed: int,
               chunk: int = 250) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro F1 (``n_boot``,) and per-class recall and F1 (``n_boot``, C; NaN
    where a resample holds no row of the class) of ``n_boot`` resamples (with replacement) of the rows.

    Vectorised: each resample is reduced to its confusion matrix with one ``bincount``."""
    rng = np.random.default_rng(seed)
    n, c2 = len(y_true), num_classes * num_classes
    cell = (y_true * num_classes + y_pred).astype(np.int64)
    mats = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        flat = cell[idx] + (np.arange(b) * c2)[:, None]
        mats.append(np.bincount(flat.ravel(), minlength=b * c2).reshape(b, num_classes, num_classes))
    cm = np.concatenate(mats)
    _, recall, f1, support = _prf(cm)
    present = support > 0
    with np.errstate(invalid="ignore"):
        acc = np.trace(cm, axis1=1, axis2=2) / n
        bal = np.nansum(np.where(present, recall, 0), axis=1) / present.sum(axis=1)
        mf1 = np.nansum(np.where(present, f1, 0), axis=1) / present.sum(axis=1)
    return {"accuracy": acc, "balanced_accuracy": bal, "macro_f1": mf1, "class_recall": recall, "class_f1": f1}


def _interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def _class_intervals(samples: np.ndarray) -> np.ndarray:
    """(B, C) resampled values -> (C, 2) percentile intervals; NaN for a class with no finite resample."""
    out = np.full((samples.shape[1], 2), np.nan)
    ok = np.isfinite(samples).any(axis=0)
    if ok.any():
        out[ok] = np.nanpercentile(samples[:, ok], [2.5, 97.5], axis=0).T
    return out


# ----------------------------------------------------------------------------------------------- main

def _checked(y_true, probs, classes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels as int64, probabilities as float64, class names), or ValueError saying what is wrong."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    classes = [str(c) for c in classes]
    k = len(classes)
    if p.ndim != 2 or p.shape[1] != k:
        raise ValueError(f"probs must be (N, {k}) for {k} classes, got {p.shape}")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true must be (N,) with N = {len(p)}, got {y.shape}")
    if len(y) == 0:
        raise ValueError("nothing to evaluate: no samples")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true must hold class indices 0..{k - 1}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative")
    return y.astype(np.int64), p, classes


def _roc_curves(onehot: np.ndarray, p: np.ndarray, classes: list[str], absent: list[str], notes: list[str]):
    """(one-vs-rest ROC curves by class and "micro", AUC per class, micro AUC, macro AUC); notes the classes
    whose AUC is undefined."""
    roc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    auc = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        fpr, tpr = roc_curve(onehot[:, i], p[:, i])
        roc[c] = (fpr, tpr)
        auc[i] = auc_from_curve(fpr, tpr)
    undefined = [c for c, a in zip(classes, auc) if np.isnan(a) and c not in absent]
    if undefined:
        notes.append(f"AUC undefined for {', '.join(undefined)} (no negative samples)")
    fpr_m, tpr_m = roc_curve(onehot.ravel(), p.ravel())
    roc["micro"] = (fpr_m, tpr_m)
    auc_macro = float(np.nanmean(auc)) if (~np.isnan(auc)).any() else float("nan")
    return roc, auc, auc_from_curve(fpr_m, tpr_m), auc_macro


def _pr_curves(onehot: np.ndarray, p: np.ndarray, classes: list[str]):
    """(precision-recall curves by class and "micro", average precision per class, micro AP, macro AP)."""
    pr: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ap = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        rec, prec, _ = precision_recall_curve(onehot[:, i], p[:, i])
        pr[c] = (rec, prec)
        ap[i] = average_precision(onehot[:, i], p[:, i])
    rec_m, prec_m, _ = precision_recall_curve(onehot.ravel(), p.ravel())
    pr["micro"] = (rec_m, prec_m)
    ap_micro = average_precision(onehot.ravel(), p.ravel())
    ap_macro = float(np.nanmean(ap)) if (~np.isnan(ap)).any() else float("nan")
    return pr, ap, ap_micro, ap_macro


def _intervals(y: np.ndarray, pred: np.ndarray, k: int, bootstrap: int, seed: int):
    """(95% intervals by metric name, per-class recall / F1 intervals, the accuracy's interval or None)."""
    if not (bootstrap and bootstrap > 0):
        return {}, {}, None
    boot = _bootstrap(y, pred, k, int(bootstrap), seed)
    class_ci = {"recall": _class_intervals(boot.pop("class_recall")), "f1": _class_intervals(boot.pop("class_f1"))}
    ci = {name: _interval(v) for name, v in boot.items()}
    return ci, class_ci, ci["accuracy"]


def evaluate_predictions(y_true, probs, classes, bootstrap: int = 1000, seed: int = 0,
                         ece_bins: int = ECE_BINS) -> EvalResult:
    """Metrics of class probabilities ``probs`` (N, C) against integer labels ``y_true`` (N,).

    ``bootstrap``: number of resamples for the 95% percentile intervals (0 = none)."""
    y, p, classes = _checked(y_true, probs, classes)
    k, n = len(classes), len(y)
    notes: list[str] = []
    pred = p.argmax(axis=1)

    cm = confusion_matrix(y, pred, k)
    precision, recall, f1, support = _prf(cm)
    present = support > 0
    absent = [c for c, s in zip(classes, present) if not s]
    if absent:
        notes.append(f"class(es) absent from the labels: {', '.join(absent)}: their recall, F1, AUC and average "
                     f"precision are undefined (null) and left out of balanced accuracy and the macro averages")
    accuracy = float(np.trace(cm) / n)
    balanced = float(recall[present].mean())
    macro = {"precision": float(precision[present].mean()), "recall": balanced, "f1": float(f1[present].mean())}
    w = support / n
    weighted = {"precision": float(np.sum(w * precision)), "recall": float(np.nansum(w * recall)),
                "f1": float(np.nansum(w * f1))}
    top_k = {kk: top_k_accuracy(y, p, kk) for kk in (1, 2, 3) if kk <= k}

    onehot = np.eye(k, dtype=bool)[y]
    roc, auc, auc_micro, auc_macro = _roc_curves(onehot, p, classes, absent, notes)
    pr, ap, ap_micro, ap_macro = _pr_curves(onehot, p, classes)
    selective = selective_prediction(y, p)

    edges, conf, acc_bin, count = reliability(p, y, ece_bins)
    ece = expected_calibration_error(p, y, ece_bins)
    nll = float(-np.log(np.clip(p[np.arange(n), y], 1e-15, None)).mean())

    ci, class_ci, acc_ci = _intervals(y, pred, k, bootstrap, seed)
    return EvalResult(
        classes=classes, n=n, accuracy=accuracy, accuracy_ci=acc_ci, top_k=top_k, balanced_accuracy=balanced,
        precision=precision, recall=recall, f1=f1, support=support.astype(np.int64), macro=macro,
        weighted=weighted, confusion=cm, roc=roc, auc=auc, auc_micro=auc_micro, auc_macro=auc_macro, ece=ece,
        reliability={"edges": edges, "confidence": conf, "accuracy": acc_bin, "count": count}, nll=nll,
        bootstrap=int(bootstrap or 0), ci=ci, class_ci=class_ci, pr=pr, ap=ap, ap_micro=ap_micro, ap_macro=ap_macro,
        selective=selective, notes=notes,
    )
