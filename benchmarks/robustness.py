"""Accuracy on faces framed the way the detector frames real photos, not FER2013's own crops.

FER2013 faces (``--split``, PublicTest by default: this is a selection measure) are composited into 640x480
frames (``synth_faces.py``: textured backgrounds, sides 64-200 px so every face is an upscaled small one,
in-plane rotation up to ``--max-rot`` degrees), each frame then gets a random gamma (0.6-1.6), contrast
(0.6-1.2) and JPEG compression (quality 30-90), the shifts between lab or web photos and FER2013 crops.
The default pipeline (BlazeFace full range, eye alignment, the card's margin) detects once per frame; every
model classifies the same detections; a face counts when a detection overlaps it at IoU >= 0.5.  Reported:
accuracy on matched faces per model (and on the clean 48 px crops, for the gap), recall of the detector.

    python benchmarks/robustness.py --model default --model runs/release/old_default.onnx ...
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


def degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = frame.astype(np.float32) / 255.0
    x = x ** rng.uniform(0.6, 1.6)
    x = (x - x.mean()) * rng.uniform(0.6, 1.2) + x.mean()
    x = (np.clip(x, 0, 1) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="model name or .onnx path (repeatable)")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--max-rot", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robustness.json"))
    args = ap.parse_args()
    faces, labels, src = load_split(args.split)
    recs = {m: Recognizer(m, threads=args.threads) for m in args.model}
    first = next(iter(recs.values()))
    rng = np.random.default_rng(1)
    hits = {m: [] for m in recs}
    truth, n_faces, rows = [], 0, []
    for frame, placed in make_frames(faces, labels, args.frames, seed=0, max_rot=args.max_rot):
        frame = degrade(frame, rng)
        img = first.load(frame)
        dets = first.detect(img)
        n_faces += len(placed)
        pairs = match([f.box for f in placed], [d.box for d in dets])
        if not pairs:
            continue
        for m, rec in recs.items():
            out = rec.predict_detections(img, [dets[j] for _, j, _ in pairs])
            hits[m].extend(rec.classes.index(f.label) for f in out)
        truth.extend(placed[i].label for i, _, _ in pairs)
        rows.extend(placed[i].index for i, _, _ in pairs)
    truth = np.array(truth)
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
