"""Classical classifiers on a trained CNN's features (its penultimate layer).

``training.forward.extract_features`` runs ``model.forward_features`` on the centre crop the network was trained for (as
``predict_logits`` does), in float32.  On those features (standardised):

- ``svm``: a linear SVM (``sklearn.svm.LinearSVC``, one-vs-rest, squared hinge).  LinearSVC gives decision
  scores, not probabilities: ferlab turns them into probabilities with ``softmax(scores / T)``, the temperature
  T fitted by negative log-likelihood on the selection split.  The prediction (argmax) is the SVM's own; T only
  shapes the probabilities used for ECE, NLL, ROC curves and the report.  (``CalibratedClassifierCV`` would
  need three more fits per C value and changes the argmax.)
- ``rf``: a random forest of 100 trees (``predict_proba`` is the trees' mean vote).
- ``logreg``: multinomial logistic regression (lbfgs).

Protocol: fit on Training, choose the hyper-parameter (C for svm/logreg, min_samples_leaf for rf) by accuracy
on the selection split (PublicTest, never PrivateTest), report on the test split (PrivateTest) with the same
metrics and report as ``ferlab evaluate``, next to the CNN alone on the same rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import fit_temperature, softmax
from .data import load_dataset
from .data.splits import select_classes
from .errors import FerlabError
from .evaluation.metrics import _clean, evaluate_predictions
from .evaluation.report import write_report
from .inference.crop import FaceCropper
from .io import atomic_write, command_line
from .labels import scoring_labels

CLASSIFIERS = ("svm", "rf", "logreg")
GRIDS: dict[str, list[float]] = {
    "svm": [0.001, 0.01, 0.1, 1.0],      # C
    "logreg": [0.01, 0.1, 1.0, 10.0],    # C
    "rf": [1, 4],                        # min_samples_leaf
}
RF_TREES = 100


def make_classifier(kind: str, param: float, seed: int = 0, n_jobs: int = 1):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if kind == "svm":
        return make_pipeline(StandardScaler(), LinearSVC(C=param, dual="auto", max_iter=5000, random_state=seed))
    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=param, max_iter=2000))
    if kind == "rf":
        return RandomForestClassifier(n_estimators=RF_TREES, min_samples_leaf=int(param), n_jobs=n_jobs,
                                      random_state=seed)
    raise FerlabError(f"unknown classifier {kind!r}; choose {', '.join(CLASSIFIERS)} or all")


def _scores(kind: str, clf, X: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) probabilities (rf, logreg) or decision scores (svm), columns in class-id order."""
    s = clf.decision_function(X) if kind == "svm" else clf.predict_proba(X)
    classes = clf.classes_
    out = np.full((len(X), n_classes), -1e9 if kind == "svm" else 0.0)
    if s.ndim == 1:  # binary svm: one score for classes_[1]
        s = np.stack([-s, s], 1)
    out[:, classes] = s
    return out


class FeatureClassifier:
    """A fitted classifier with its selection record: ``predict_proba(features)``."""

    def __init__(self, kind: str, clf, param: float, temperature: float, n_classes: int, selection: list[dict]):
        self.kind, self.clf, self.param, self.temperature = kind, clf, param, temperature
        self.n_classes, self.selection = n_classes, selection

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        s = _scores(self.kind, self.clf, X, self.n_classes)
        if self.kind == "svm":
            return softmax(s, self.temperature)
        return s / np.maximum(s.sum(1, keepdims=True), 1e-12)


def fit_select(kind: str, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
               n_classes: int, seed: int = 0, grid: list[float] | None = None, n_jobs: int = 1,
               log: bool = True) -> FeatureClassifier:
    """Fit one classifier per grid value on the training features; keep the best by selection accuracy."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning


    best = None
    selection = []
    for param in grid or GRIDS[kind]:
        t0 = time.time()
        clf = make_classifier(kind, param, seed, n_jobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_train, y_train)
        acc = float((_scores(kind, clf, X_val, n_classes).argmax(1) == y_val).mean())
        selection.append({"param": param, "val_accuracy": acc, "fit_s": round(time.time() - t0, 2)})
        if log:
            name = "min_samples_leaf" if kind == "rf" else "C"
            print(f"  {kind} {name}={param:g}: selection accuracy {acc:.4f} ({time.time() - t0:.1f} s)", flush=True)
        if best is None or acc > best[0]:
            best = (acc, param, clf)
    _, param, clf = best
    temperature = 1.0
    if kind == "svm":
        temperature = fit_temperature(_scores(kind, clf, X_val, n_classes), y_val)
    return FeatureClassifier(kind, clf, param, temperature, n_classes, selection)


def _load(run_dir, data, val_split: str, test_split: str):
    """(model, summary, cfg, {split: (images, labels)}) with the run's classes and label scheme."""
    from .training.build import load_run

    model, summary, cfg = load_run(run_dir)
    labels = scoring_labels(cfg.labels)
    data = data or cfg.data
    ds = load_dataset(data, labels=labels, votes=cfg.model_options.get("_votes"), cropper=FaceCropper())
    if cfg.classes:
        ds = select_classes(ds, cfg.classes)
    if [c.lower() for c in ds.classes] != [c.lower() for c in summary["classes"]]:
        raise FerlabError(f"{run_dir} predicts {', '.join(summary['classes'])} but {data} gives "
                          f"{', '.join(ds.classes)}")
    parts = {}
    for s in (cfg.train_split, val_split, test_split):
        p = ds.by_split(s)
        p = p.subset(p.labels >= 0)
        parts[s] = (p.images, p.labels)
    return model, summary, cfg, parts, data, ds


def run_features(run_dir: str | os.PathLike, data: str | os.PathLike | None = None,
                 classifiers: str | list[str] = "all", out: str | os.PathLike | None = None,
                 val_split: str = "PublicTest", test_split: str = "PrivateTest", seed: int = 0,
                 bootstrap: int = 1000, report: bool = True, log: bool = True,
                 command: str | None = None) -> dict[str, Any]:
    """CNN features + classical classifiers vs the CNN alone; writes ``out/summary.json`` and, with
    ``report``, one report folder per classifier (and ``cnn/``).  Returns the summary."""
    from .training.forward import extract_features, predict_logits

    kinds = _kinds(classifiers, val_split, test_split)
    t0 = time.time()
    model, summary, cfg, parts, data, ds = _load(run_dir, data, val_split, test_split)
    classes = list(summary["classes"])
    feats = {}
    for s, (im, _) in parts.items():
        t = time.time()
        feats[s] = extract_features(model, im, cfg.input_size)
        if log:
            print(f"features of {s}: {feats[s].shape[0]} x {feats[s].shape[1]} ({time.time() - t:.1f} s)", flush=True)
    y_tr, y_val, y_te = parts[cfg.train_split][1], parts[val_split][1], parts[test_split][1]
    test_images = parts[test_split][0]
    cmd = command or command_line(["features", run_dir, "--data", data, "--classifier", ",".join(kinds)]
                                  + (["--out", out] if out else []))
    rows: dict[str, dict] = {}
    results = {}

    def record(name: str, probs: np.ndarray, val_probs: np.ndarray, extra: dict) -> None:
        r = evaluate_predictions(y_te, probs, classes, bootstrap=bootstrap, seed=seed)
        results[name] = (r, probs)
        rows[name] = {"val_accuracy": float((val_probs.argmax(1) == y_val).mean()), "accuracy": r.accuracy,
                      "accuracy_ci95": r.accuracy_ci, "balanced_accuracy": r.balanced_accuracy,
                      "macro_f1": r.macro["f1"], "ece": r.ece, "nll": r.nll,
                      "recall": {c: float(v) for c, v in zip(classes, r.recall)}, **extra}

    cnn_test = softmax(predict_logits(model, test_images, cfg.input_size, amp="none"))
    cnn_val = softmax(predict_logits(model, parts[val_split][0], cfg.input_size, amp="none"))
    record("cnn", cnn_test, cnn_val, {"what": f"the CNN ({cfg.model}) alone, centre crop"})
    for k in kinds:
        if log:
            print(f"{k}: fitting on {len(y_tr)} {cfg.train_split} features, selecting on {val_split}", flush=True)
        t = time.time()
        fc = fit_select(k, feats[cfg.train_split], y_tr, feats[val_split], y_val, len(classes), seed=seed,
                        n_jobs=max(1, min(os.cpu_count() or 1, 4)), log=log)
        record(k, fc.predict_proba(feats[test_split]), fc.predict_proba(feats[val_split]),
               {"param": {"C" if k != "rf" else "min_samples_leaf": fc.param}, "selection": fc.selection,
                "temperature": round(fc.temperature, 4) if k == "svm" else None, "seconds": round(time.time() - t, 1)})
    out_summary = {
        "run": str(run_dir), "architecture": cfg.model, "features": int(feats[test_split].shape[1]),
        "data": str(data), "train_split": cfg.train_split, "selection_split": val_split, "test_split": test_split,
        "n": {"train": int(len(y_tr)), "selection": int(len(y_val)), "test": int(len(y_te))},
        "classes": classes, "results": rows,
        "svm_probabilities": "softmax(LinearSVC decision scores / T), T fitted by NLL on the selection split",
        "command": cmd, "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if out:
        _write_outputs(Path(out), out_summary, results if report else {}, cfg.model, test_images, y_te)
    return out_summary


def _kinds(classifiers: str | list[str], val_split: str, test_split: str) -> list[str]:
    """The classifiers asked for, checked, and the splits checked."""
    kinds = list(CLASSIFIERS) if classifiers in ("all", ["all"]) else (
        [classifiers] if isinstance(classifiers, str) else list(classifiers))
    for k in kinds:
        if k not in CLASSIFIERS:
            raise FerlabError(f"unknown classifier {k!r}; choose {', '.join(CLASSIFIERS)} or all")
    if val_split == "PrivateTest":
        raise FerlabError("PrivateTest is for the final report only: select hyper-parameters on PublicTest")
    if val_split == test_split:
        raise FerlabError(f"the selection split and the test split must differ (both {val_split})")
    return kinds


def _write_outputs(out: Path, summary: dict[str, Any], results: dict, model: str, test_images: np.ndarray,
                   y_te: np.ndarray) -> None:
    """One report folder per classifier in ``results`` (and ``cnn/``), then ``summary.json``."""
    data, test_split = summary["data"], summary["test_split"]
    for name, (r, probs) in results.items():
        r.meta = {"model": f"{model} features + {name}" if name != "cnn" else f"{model} (CNN alone)",
                  "model_kind": "features" if name != "cnn" else "torch run", "data": data,
                  "split": test_split, "selection_split": summary["selection_split"], "n": r.n,
                  "command": summary["command"], "date": summary["date"]}
        write_report(out / name, r, test_images, y_te, probs, summary["classes"],
                     f"{r.meta['model']} on {Path(data).name} / {test_split}", r.meta)
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(_clean(summary), indent=2)))
