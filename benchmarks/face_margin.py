"""How much larger is the FER2013 framing than a Haar face box?  -> the face-crop margin.

FER2013 images are face crops.  The Recognizer crops a detected face as the detector box grown by a margin
``m`` (a fraction of the box side) on each side; to show the classifier the framing it was trained on,
``m`` must make the grown box match the FER2013 frame.  This script runs ``ferlab``'s own Haar detector
(the Recognizer's default settings) on FER2013 images upscaled 48 -> ``--size`` px and pasted on a larger
grey canvas (so faces that touch the frame edge can still be detected), and measures per image:

- the symmetric margin that makes the grown box as large as the frame: ``(size / box_side - 1) / 2``;
- the margin on each side (left, right, top, bottom) in box sides, and the offset of the frame centre;
- the detection rate (without and with the canvas) and recall by face size (what ``RELIABLE_PX`` in
  ``ferlab.inference.detect`` is based on).

With ``--model`` it also checks the result end to end: accuracy of the classifier on the images re-cropped
from the Haar box with several margins, next to the accuracy on the original 48x48 images.

    python benchmarks/face_margin.py [--data ../shared/datasets/fer2013/fer2013_sample.csv] [--model M]

Writes ``benchmarks/results/face_margin.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.inference.detect import HaarDetector  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013_sample.csv"


def render(img48: np.ndarray, size: int, pad: float) -> tuple[np.ndarray, int]:
    """The 48x48 image upscaled to ``size`` and pasted at the centre of a grey canvas ``pad`` x size wider."""
    up = cv2.resize(img48, (size, size), interpolation=cv2.INTER_CUBIC)
    p = int(round(pad * size))
    if p == 0:
        return up, 0
    canvas = np.full((size + 2 * p, size + 2 * p), 128, np.uint8)
    canvas[p:p + size, p:p + size] = up
    return canvas, p


def central_face(dets, size: int, p: int):
    """The detection that contains the frame centre (largest if several), or None."""
    c = p + size / 2
    best = None
    for d in dets:
        x, y, w, h = d.box
        if x <= c <= x + w and y <= c <= y + h and (best is None or w * h > best.box[2] * best.box[3]):
            best = d
    return best


def stats(v: np.ndarray) -> dict:
    if len(v) == 0:
        return {"n": 0}
    q = np.percentile(v, [10, 25, 50, 75, 90])
    return {"n": int(len(v)), "mean": round(float(v.mean()), 4), "p10": round(float(q[0]), 4),
            "p25": round(float(q[1]), 4), "median": round(float(q[2]), 4), "p75": round(float(q[3]), 4),
            "p90": round(float(q[4]), 4)}


def crop_with_margin(img: np.ndarray, box, margin: float) -> np.ndarray:
    from ferlab.inference.recognizer import crop_face

    return crop_face(img, box, margin)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="fer2013 CSV (default: the 700-row sample)")
    ap.add_argument("--size", type=int, default=192, help="upscaled face frame size (px)")
    ap.add_argument("--pad", type=float, default=0.5, help="grey canvas border, in frame sizes")
    ap.add_argument("--split", help="use only this split (Training, PublicTest, PrivateTest)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images")
    ap.add_argument("--model", help="also check accuracy vs margin with this model (name or .onnx)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "face_margin.json"))
    args = ap.parse_args(argv)

    ds = load_fer2013_csv(args.data)
    if args.split:
        ds = ds.by_split(args.split)
    images, labels = ds.images, ds.labels
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    det = HaarDetector(min_size=24)  # the Recognizer's cascade and settings, any face size
    size = args.size
    t0 = time.perf_counter()

    rows = []
    plain_hits = 0
    for i, img in enumerate(images):
        canvas, p = render(img, size, args.pad)
        d = central_face(det.detect(canvas), size, p)
        plain = central_face(det.detect(render(img, size, 0.0)[0]), size, 0)
        plain_hits += plain is not None
        if d is None:
            continue
        x, y, w, h = d.box
        s = (w + h) / 2
        rows.append({"i": i, "x": x - p, "y": y - p, "w": w, "h": h,
                     "margin": (size / s - 1) / 2,
                     "left": (x - p) / s, "right": (p + size - x - w) / s,
                     "top": (y - p) / s, "bottom": (p + size - y - h) / s,
                     "dx": (p + size / 2 - (x + w / 2)) / s, "dy": (p + size / 2 - (y + h / 2)) / s})
    n = len(images)
    arr = {k: np.array([r[k] for r in rows], float) for k in ("margin", "left", "right", "top", "bottom", "dx", "dy",
                                                              "w")}
    measured = round(float(np.median(arr["margin"])), 3) if rows else None

    # recall by face size: render the frames so that the (median) face box is F px
    box_frac = 1 / (1 + 2 * measured) if measured is not None else 0.7
    recall = {}
    sub = images[: min(n, 300)]
    small_det = HaarDetector(min_size=8)
    for face_px in (20, 24, 28, 32, 36, 40, 48, 64, 96):
        fsize = max(8, int(round(face_px / box_frac)))
        hits = sum(central_face(small_det.detect(render(im, fsize, args.pad)[0]), fsize,
                                int(round(args.pad * fsize))) is not None for im in sub)
        recall[str(face_px)] = round(hits / len(sub), 3)

    result = {
        "what": "face-crop margin that reproduces the FER2013 framing from a Haar box (ferlab HaarDetector, "
                "haarcascade_frontalface_default.xml, scale_factor 1.1, min_neighbors 5)",
        "data": str(Path(args.data).name), "split": args.split or "all", "images": n, "frame_px": size, "canvas_pad": args.pad,
        "detected_on_canvas": len(rows), "detection_rate_on_canvas": round(len(rows) / max(n, 1), 4),
        "detection_rate_plain_frame": round(plain_hits / max(n, 1), 4),
        "measured_margin_median": measured,
        "margin": stats(arr["margin"]),
        "per_side": {k: stats(arr[k]) for k in ("left", "right", "top", "bottom")},
        "frame_centre_offset_in_box_sides": {"dx": stats(arr["dx"]), "dy": stats(arr["dy"])},
        "box_side_over_frame": stats(arr["w"] / size),
        "recall_by_face_px": recall,
        "seconds": round(time.perf_counter() - t0, 1),
        "python": platform.python_version(), "opencv": cv2.__version__,
    }

    if args.model and rows:
        from ferlab.inference.classifier import OnnxClassifier

        clf = OnnxClassifier(args.model, threads=1)
        idx = np.array([r["i"] for r in rows])
        y = labels[idx]
        acc_direct = float((clf.predict_proba(images[idx]).argmax(1) == y).mean())
        by_margin = {}
        for m in (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3):
            crops = []
            for r in rows:
                canvas, p = render(images[r["i"]], size, args.pad)
                # the canvas border is grey, not image: replicate the frame's edges instead (as at image borders)
                up = cv2.copyMakeBorder(canvas[p:p + size, p:p + size], p, p, p, p, cv2.BORDER_REPLICATE)
                crops.append(crop_with_margin(up, (r["x"] + p, r["y"] + p, r["w"], r["h"]), m))
            by_margin[str(m)] = round(float((clf.predict_proba(np.stack(crops)).argmax(1) == y).mean()), 4)
        result["accuracy_check"] = {"model": str(args.model), "images": int(len(idx)),
                                    "accuracy_on_original_48px": round(acc_direct, 4),
                                    "accuracy_by_margin_from_haar_box": by_margin}

    out = Path(args.out)
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    print(json.dumps({k: result[k] for k in ("detection_rate_on_canvas", "measured_margin_median", "margin",
                                             "recall_by_face_px")}, indent=1))
    for k, v in result["per_side"].items():
        print(f"{k:>6}: median {v.get('median')}")
    print("centre offset", result["frame_centre_offset_in_box_sides"]["dx"].get("median"),
          result["frame_centre_offset_in_box_sides"]["dy"].get("median"))
    if "accuracy_check" in result:
        print(json.dumps(result["accuracy_check"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
