"""Accuracy on faces framed the way the detector frames real photos, not FER2013's own crops.

FER2013 faces (``--split``, PublicTest by default: this is a selection measure) are composited into 640x480
frames (``synth_faces.py``: textured backgrounds, sides 64-200 px so every face is an upscaled small one,
in-plane rotation up to ``--max-rot`` degrees), each frame then gets a random gamma (0.6-1.6), contrast
(0.6-1.2) and JPEG compression (quality 30-90), the shifts between lab or web photos and FER2013 crops.
The default pipeline (BlazeFace full range, eye alignment, the card's margin) detects once per frame; every
model classifies the same detections; a face counts when a detection overlaps it at IoU >= 0.5.  Reported:
accuracy on matched faces per model (and on the clean 48 px crops, for the gap), recall of the detector.

    python benchmarks/robustness.py --model default --model runs/release/old_default.onnx ...

``--conditions`` measures one shift at a time instead, on the same frames (so each model's weak spot shows):
``clean`` (upright faces, nothing else), ``rotation`` (up to ``--max-rot``), ``gamma``, ``contrast``, ``jpeg``,
``blur`` (Gaussian, sigma 1-2.5 px) and ``lowres`` (the frame downscaled 3-5x and back, as from a small
source), plus ``all`` (the default mix above); it writes ``robustness_conditions.json``:

    python benchmarks/robustness.py --conditions --frames 300 --model default --model fast ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synth_faces import load_split, make_frames, match  # noqa: E402

from ferlab.hardware import machine_info  # noqa: E402
from ferlab.inference.classifier import OnnxClassifier  # noqa: E402
from ferlab.inference.recognizer import Recognizer  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402


def _tone(frame: np.ndarray, gamma: float = 1.0, contrast: float = 1.0) -> np.ndarray:
    x = (frame.astype(np.float32) / 255.0) ** gamma
    x = (x - x.mean()) * contrast + x.mean()
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The default mix: gamma, contrast and JPEG together."""
    return _jpeg(_tone(frame, rng.uniform(0.6, 1.6), rng.uniform(0.6, 1.2)), int(rng.integers(30, 91)))


def _lowres(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = frame.shape[:2]
    k = rng.uniform(3, 5)
    small = cv2.resize(frame, (int(w / k), int(h / k)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# name -> (in-plane rotation of the pasted faces: use --max-rot?, degradation of the frame)
CONDITIONS = {
    "clean": (False, lambda f, rng: f),
    "rotation": (True, lambda f, rng: f),
    "gamma": (False, lambda f, rng: _tone(f, gamma=rng.uniform(0.6, 1.6))),
    "contrast": (False, lambda f, rng: _tone(f, contrast=rng.uniform(0.6, 1.2))),
    "jpeg": (False, lambda f, rng: _jpeg(f, int(rng.integers(30, 91)))),
    "blur": (False, lambda f, rng: cv2.GaussianBlur(f, (0, 0), rng.uniform(1.0, 2.5))),
    "lowres": (False, _lowres),
    "all": (True, degrade),
}


def run_condition(recs: dict, faces, labels, n_frames: int, max_rot: float, shift) -> tuple[dict, list, int]:
    """Detect once per degraded frame with the first model's pipeline, classify the matched detections with
    every model: ({model: predicted class indices}, [(true label, face row)], faces placed)."""
    first = next(iter(recs.values()))
    rng = np.random.default_rng(1)
    hits = {m: [] for m in recs}
    truth, n_faces = [], 0
    for frame, placed in make_frames(faces, labels, n_frames, seed=0, max_rot=max_rot):
        img = first.load(shift(frame, rng))
        dets = first.detect(img)
        n_faces += len(placed)
        pairs = match([f.box for f in placed], [d.box for d in dets])
        if not pairs:
            continue
        for m, rec in recs.items():
            out = rec.predict_detections(img, [dets[j] for _, j, _ in pairs])
            hits[m].extend(rec.classes.index(f.label) for f in out)
        truth.extend((placed[i].label, placed[i].index) for i, _, _ in pairs)
    return hits, truth, n_faces


def conditions_main(args, recs, faces, labels, src) -> None:
    result = {"command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]), "data": Path(src).name,
              "split": args.split, "frames_per_condition": args.frames, "max_rot": args.max_rot,
              "machine": machine_info(args.threads), "conditions": {}}
    for name, (rotate, shift) in CONDITIONS.items():
        hits, truth, n_faces = run_condition(recs, faces, labels, args.frames, args.max_rot if rotate else 0.0, shift)
        y = np.array([t for t, _ in truth])
        result["conditions"][name] = {
            "faces": n_faces, "detector_recall_iou50": round(len(y) / max(n_faces, 1), 4),
            "accuracy": {m: round(float((np.array(hits[m]) == y).mean()), 4) for m in recs}}
        print(name, result["conditions"][name], flush=True)
    out = args.out if args.out != DEFAULT_OUT else str(Path(DEFAULT_OUT).with_name("robustness_conditions.json"))
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    print("wrote", out)


DEFAULT_OUT = str(ROOT / "benchmarks" / "results" / "robustness.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="model name or .onnx path (repeatable)")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--max-rot", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conditions", action="store_true", help="one shift at a time (robustness_conditions.json)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    faces, labels, src = load_split(args.split)
    recs = {m: Recognizer(m, threads=args.threads) for m in args.model}
    if args.conditions:
        return conditions_main(args, recs, faces, labels, src)
    hits, pairs, n_faces = run_condition(recs, faces, labels, args.frames, args.max_rot, degrade)
    truth = np.array([t for t, _ in pairs])
    rows = [r for _, r in pairs]
    result = {"command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]), "data": Path(src).name,
              "split": args.split, "frames": args.frames, "faces": n_faces, "matched": int(len(truth)),
              "detector_recall_iou50": round(len(truth) / max(n_faces, 1), 4), "machine": machine_info(args.threads),
              "models": {}}
    for m, rec in recs.items():
        crops = OnnxClassifier(m, threads=args.threads).predict_proba(faces[np.array(rows)]).argmax(1)
        result["models"][m] = {
            "name": rec.classifier.name,
            "accuracy_detector_framed": round(float((np.array(hits[m]) == truth).mean()), 4),
            "accuracy_same_faces_as_48px_crops": round(float((crops == truth).mean()), 4)}
        print(m, result["models"][m], flush=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
