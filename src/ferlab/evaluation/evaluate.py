"""Evaluate a model on one split of a dataset and write the report.

``model`` is either a training run directory (torch; needs the ``[train]`` extra) or a bundled model name /
``.onnx`` path (ONNX Runtime, no torch).  Test-time augmentation:

- ``none``: the centre view the model was trained for;
- ``flip``: the mean softmax of the image and its mirror image;
- ``tencrop``: the mean softmax over the four corner crops, the centre crop and their mirrors.

The views are cut by ``ferlab.tta`` (the same function the torch forward pass uses).  An ONNX model's graph
takes the full 48x48 image and crops its centre internally (``crop_inside_graph`` on the card), so each view is
placed at the centre of a 48x48 canvas: the graph's own centre crop then returns exactly that view.  A model
without an internal crop (crop = 48) cannot be ten-cropped.

ONNX models are scored with the temperature of their model card (softmax(logits / T)); torch runs have no
fitted temperature (T = 1).  Besides the usual metrics the result gives the accuracy on the "clean" test
rows, those without a pixel-identical copy in Training (FER2013 has 288 such PrivateTest rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..calibration import softmax
from ..data import load_dataset
from ..errors import FerlabError
from ..hardware import machine_info
from ..inference.classifier import OnnxClassifier
from ..inference.crop import FaceCropper
from ..io import atomic_write, command_line, portable_path
from ..labels import scoring_labels
from ..training.rundir import RunDir
from ..tta import boxes, check_tta, view
from .metrics import EvalResult, evaluate_predictions
from .report import write_report

CHUNK = 512  # images per progress step


# ----------------------------------------------------------------------------------------------- models

@dataclass
class _Model:
    kind: str                      # "run" | "onnx"
    name: str
    path: Path
    classes: list[str]
    temperature: float
    trained_labels: str | None
    info: dict[str, Any]
    handle: Any = None             # torch module or OnnxClassifier
    input_size: int = 44           # torch: the network's input side; ONNX: the graph's internal crop
    card_path: Path | None = None
    card: dict | None = None


def is_run_dir(path: str | os.PathLike) -> bool:
    return RunDir.is_run(path)


def load_model(model: str | os.PathLike) -> _Model:
    """A run directory (torch) or a bundled name / .onnx path / folder holding one (ONNX Runtime)."""
    if is_run_dir(model):
        from ..training.build import load_run

        net, summary, cfg = load_run(model)
        path = Path(model)
        return _Model(kind="run", name=path.resolve().name, path=path, classes=list(summary["classes"]),
                      temperature=1.0, trained_labels=cfg.labels, handle=net,
                      input_size=int(summary.get("input_size", cfg.input_size)),
                      info={"architecture": cfg.model, "params": summary.get("params"),
                            "epoch": summary.get("selected_epoch", summary.get(
                                "best_epoch_loss" if summary.get("selected") == "best_loss" else "best_epoch_acc")),
                            "weights": summary.get("selected")})

    clf = OnnxClassifier(model)
    card = clf.card
    return _Model(kind="onnx", name=clf.name, path=Path(clf.path), classes=list(clf.classes),
                  temperature=clf.temperature, trained_labels=(card.get("training") or {}).get("labels"),
                  handle=clf, input_size=int(card.get("crop_inside_graph", card["input_size"])),
                  card_path=Path(clf.path).with_suffix(".json"), card=card,
                  info={"architecture": card.get("architecture"), "params": card.get("params"),
                        "graph_tta": card.get("tta", "none"), "quantization": card.get("quantization"),
                        "sha256": card.get("sha256")})


def _bar(total: int, desc: str, on: bool):
    if not on or total <= 1:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True, mininterval=0.5)


def _onnx_views(x: np.ndarray, tta: str, crop: int, graph_flips: bool) -> list[np.ndarray]:
    """The views (``ferlab.tta``) of uint8 images (n, S, S), each on an S x S canvas where the ONNX graph's own
    centre crop of ``crop`` finds it; without the mirrored ones where the graph averages each with its mirror."""
    s = x.shape[-1]
    if tta == "tencrop" and crop >= s:
        raise FerlabError(f"ten-crop needs a model that crops inside its graph; this one takes the full {s}x{s} "
                          "image (crop_inside_graph missing or equal to input_size): use --tta none or flip")
    off = (s - crop) // 2
    pad = ((0, 0), (off, s - crop - off), (off, s - crop - off))
    return [np.pad(view(x, b, crop), pad, mode="edge") for b in boxes(s, s, crop, tta)
            if not (graph_flips and b.mirror)]


def predict_probs(m: _Model, images: np.ndarray, tta: str = "none", progress: bool = True) -> np.ndarray:
    """Class probabilities (N, C) of uint8 images (N, S, S), averaged over the TTA views."""
    check_tta(tta)
    n = len(images)
    out = []
    bar = _bar(n, f"evaluate {m.name} ({tta})", progress)
    try:
        for i in range(0, n, CHUNK):
            x = images[i:i + CHUNK]
            if m.kind == "run":
                from ..training.forward import predict_logits

                logits = predict_logits(m.handle, x, m.input_size, tta=tta, amp="none")
                out.append(softmax(logits, m.temperature))
            else:
                views = _onnx_views(x, tta, m.input_size, graph_flips=m.info.get("graph_tta") == "flip")
                p = sum(softmax(m.handle.logits(np.ascontiguousarray(v)), m.temperature) for v in views)
                out.append(p / len(views))
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
    if not out:
        return np.zeros((0, len(m.classes)))
    probs = np.concatenate(out)
    if probs.shape[1] != len(m.classes):
        raise FerlabError(f"{m.path}: the model outputs {probs.shape[1]} scores but names {len(m.classes)} classes")
    return probs


# ----------------------------------------------------------------------------------------------- data

def _digests(images: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).digest() for im in images]


def duplicate_mask(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """True for each image in ``images`` that has a pixel-identical copy in ``reference`` (hash of the bytes)."""
    ref = set(_digests(reference))
    return np.fromiter((d in ref for d in _digests(images)), dtype=bool, count=len(images))


def _default_labels(m: _Model) -> str:
    return scoring_labels(m.trained_labels)


def _align_classes(model_classes: list[str], data_classes: tuple[str, ...], labels: np.ndarray,
                   model_name: str, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Dataset label ids -> model class ids by name; (new labels, mask of rows whose class the model knows)."""
    idx = {c.lower(): i for i, c in enumerate(model_classes)}
    remap = np.array([idx.get(c.lower(), -1) for c in data_classes] + [-1], dtype=np.int64)
    data_set = {c.lower() for c in data_classes}
    model_only = [c for c in model_classes if c.lower() not in data_set]
    if (remap[:-1] < 0).all() or (model_only and (remap[:-1] < 0).any()):
        # neither class list contains the other: different label schemes (FER+ vs FER2013)
        raise FerlabError(f"model {model_name} predicts {', '.join(model_classes)} but the dataset's labels are "
                          f"{', '.join(data_classes)}: choose the matching --labels (e.g. ferplus-majority)")
    new = remap[np.where(labels >= 0, labels, len(data_classes))]
    unknown = [c for c, r in zip(data_classes, remap) if r < 0]
    if unknown:
        notes.append(f"rows labelled {', '.join(unknown)} are left out: model {model_name} has no such class")
    return new, new >= 0


# ----------------------------------------------------------------------------------------------- main

def _command(model, data, split, tta, out, labels, clean_only) -> str:
    parts = ["evaluate", model, data, "--split", split, "--tta", tta]
    if out:
        parts += ["--out", str(out)]
    if labels:
        parts += ["--labels", labels]
    if clean_only:
        parts.append("--clean-only")
    return command_line(parts)


def default_out(m: _Model, split: str, tta: str, clean_only: bool = False) -> Path:
    tag = f"eval-{split}-{tta}" + ("-clean" if clean_only else "")
    if m.kind == "run":
        return m.path / tag
    return Path("eval") / f"{m.name}-{tag[5:]}"


def _rows(m: _Model, data, split: str, labels: str, votes, clean_only: bool):
    """(images, labels as ids into the model's classes, clean mask or None, notes) of the rows to evaluate."""
    if votes is None and labels.startswith("ferplus"):
        guess = Path(data).parent.parent / "ferplus" / "fer2013new.csv"
        votes = guess if guess.is_file() else None
    ds = load_dataset(data, labels=labels, votes=votes, cropper=FaceCropper())
    test = ds.by_split(split)
    notes: list[str] = []
    clean_mask = None
    if split == "Training":
        notes.append("evaluated on Training: the clean (no copy in Training) accuracy does not apply")
    elif "Training" in set(ds.split_names()):
        clean_mask = ~duplicate_mask(test.images, ds.by_split("Training").images)
    else:
        notes.append("the dataset has no Training split: clean accuracy not computed")
    y, known = _align_classes(m.classes, ds.classes, test.labels, m.name, notes)
    keep = known.copy()
    if clean_only:
        if clean_mask is None:
            raise FerlabError(f"--clean-only needs a Training split to compare {split} with")
        keep &= clean_mask
        notes.append(f"clean rows only: {int((known & ~clean_mask).sum())} {split} rows with a pixel-identical "
                     "copy in Training are left out")
    if not keep.any():
        raise FerlabError(f"{data}: no labelled {split} rows to evaluate")
    return test.images[keep], y[keep], (clean_mask[keep] if clean_mask is not None else None), notes


def evaluate(model: str | os.PathLike, data: str | os.PathLike, split: str = "PrivateTest", tta: str = "none",
             out: str | os.PathLike | None = None, labels: str | None = None, clean_only: bool = False, *,
             votes: str | os.PathLike | None = None, bootstrap: int = 1000, seed: int = 0,
             record_card: bool = False, command: str | None = None, progress: bool = True,
             report: bool = True) -> EvalResult:
    """Evaluate ``model`` on ``split`` of ``data``; writes metrics.json, plots and report.html to ``out``
    (default ``RUN/eval-<split>-<tta>/`` for a run, ``eval/<name>-<split>-<tta>/`` for an ONNX model).

    ``labels``: the dataset's label scheme (default: the model's, FER+ models against the majority labels).
    ``clean_only``: evaluate only the rows without a pixel-identical copy in Training.
    ``record_card``: store the headline metrics in the ONNX model's card under metrics[<split>_<tta>].
    The returned result's ``meta`` holds the model, data, split, TTA, command and report path."""
    t0 = time.time()
    check_tta(tta)
    if record_card and is_run_dir(model):
        raise FerlabError(f"{model}: --record-card writes an ONNX model card; export the run first "
                          "(ferlab export) and evaluate the .onnx file")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise FerlabError(f"{out}: exists and is not a folder (--out names the report folder)")
    m = load_model(model)
    labels = labels or _default_labels(m)
    images, y, clean_kept, notes = _rows(m, data, split, labels, votes, clean_only)

    probs = predict_probs(m, images, tta, progress=progress)
    result = evaluate_predictions(y, probs, m.classes, bootstrap=bootstrap, seed=seed)
    result.notes = notes + result.notes
    if clean_kept is not None and clean_kept.any():
        result.clean_n = int(clean_kept.sum())
        result.clean_accuracy = float((probs.argmax(1)[clean_kept] == y[clean_kept]).mean())

    if m.kind == "onnx" and tta == "flip" and m.info.get("graph_tta") == "flip":
        result.notes.append("the model's graph already averages the image and its mirror: --tta flip adds nothing")
    if m.kind == "run":
        result.notes.append("torch run: probabilities are not temperature-scaled (export the run to fit T)")

    out_dir = Path(out) if out else default_out(m, split, tta, clean_only)
    cmd = command or _command(model, data, split, tta, out, labels if labels != _default_labels(m) else None,
                              clean_only)

    result.meta = {
        "model": m.name, "model_kind": "torch run" if m.kind == "run" else "ONNX",
        "model_path": portable_path(m.path), **{k: v for k, v in m.info.items() if v is not None},
        "data": portable_path(data), "labels": labels, "split": split, "tta": tta, "clean_only": clean_only,
        "temperature": round(m.temperature, 4), "n": result.n, "command": cmd,
        "date": time.strftime("%Y-%m-%d %H:%M"), "ferlab": __version__,
        "machine": machine_info(getattr(m.handle, "threads", None)),
    }
    if report:
        title = f"{m.name} on {Path(str(data)).name} / {split}" + (f" ({tta} TTA)" if tta != "none" else "")
        result.meta["report"] = str(out_dir / "report.html")
        result.meta["seconds"] = round(time.time() - t0, 1)

        write_report(out_dir, result, images, y, probs, m.classes, title, dict(result.meta))
    if record_card:
        record_metrics_on_card(m, result, split, tta, clean_only)
    return result


def card_entry(result: EvalResult) -> dict[str, Any]:
    """The headline metrics stored on a model card."""
    meta = result.meta

    def r(x):
        return None if x is None or not np.isfinite(x) else round(float(x), 4)

    return {
        "accuracy": r(result.accuracy),
        "accuracy_ci95": [r(v) for v in result.accuracy_ci] if result.accuracy_ci else None,
        "balanced_accuracy": r(result.balanced_accuracy), "macro_f1": r(result.macro["f1"]),
        "recall": {c: r(v) for c, v in zip(result.classes, result.recall)},
        "ece": r(result.ece), "nll": r(result.nll), "top2_accuracy": r(result.top_k.get(2)),
        "clean_accuracy": r(result.clean_accuracy), "clean_n": result.clean_n, "n": result.n,
        "split": meta.get("split"), "tta": meta.get("tta"), "data": Path(str(meta.get("data", ""))).name,
        "labels": meta.get("labels"), "temperature": meta.get("temperature"), "command": meta.get("command"),
        "date": meta.get("date", time.strftime("%Y-%m-%d %H:%M"))[:10],
        "machine": meta.get("machine"),
    }


def record_metrics_on_card(m: _Model, result: EvalResult, split: str, tta: str, clean_only: bool = False) -> Path:
    """Write the headline metrics into the ONNX model's card (``metrics[<split>_<tta>]``).

    Only the card JSON changes: its sha256 covers the .onnx file, which is untouched."""

    if m.card_path is None:
        raise FerlabError("--record-card needs an ONNX model with a card")
    path = m.card_path
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FerlabError(f"{path}: cannot read the model card ({e})") from None
    if not isinstance(card.get("metrics"), dict):
        card["metrics"] = {}
    key = f"{split}_{tta}" + ("_clean" if clean_only else "")
    card["metrics"][key] = card_entry(result)
    mode = path.stat().st_mode & 0o777

    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(card, indent=2))
        os.chmod(tmp, mode)

    try:
        atomic_write(path, write)
    except OSError as e:
        raise FerlabError(f"{path}: cannot write the model card ({e.strerror})") from None
    return path
