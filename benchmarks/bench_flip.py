"""Should ``predict``, the API and ``batch`` classify each face with its mirror image too (flip TTA)? (issue 24, item 4)

Measures on this machine, in one run:

1. accuracy of ``default`` and ``fast`` (int8, as bundled) on FER2013 PublicTest, the selection split, with
   and without the flip view, with the paired difference (faces only one of the two gets right, a bootstrap
   95% interval of the gain); PrivateTest is reported, not used to decide.  The flip view is the Recognizer's
   own (``classify(crops, "flip")``): the 48x48 crop and its mirror in one batch, softmax with the card's
   temperature, averaged (the graph's centre crop is symmetric, so this is ``ferlab evaluate --tta flip``'s view);
2. the extra milliseconds per face of the flip view in the Recognizer's classifier (its own session: default
   threads, no spinning) at 1 and 8 faces a call, interleaved with the plain call;
3. against what a photo costs: ``Recognizer().predict(photo)`` end to end, on ``examples/astronaut.jpg``
   (512x512) and on a 12 MP photo (the astronaut pasted into a 4000x3000 canvas), from the file (decoding
   included, as ``ferlab predict`` and ``batch`` do), plain and with the flip view (``Recognizer(tta="none")``
   and ``Recognizer(tta="flip")``, the photo default since this measurement), interleaved with its parts: decoding, the photo search (``detect``), the classifier
   on the photo's faces plain and flipped.  The flip's share of a photo is the classifier's extra time over
   the median ``predict``: the end-to-end difference is the same work, lost in the photo's noise.

    python benchmarks/bench_flip.py                     # writes benchmarks/results/flip.json
    python benchmarks/bench_flip.py --repeats 5 --out /tmp/flip.json      # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired_selection import paired  # noqa: E402

from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.hardware import machine_info  # noqa: E402
from ferlab.inference.blazeface import DEFAULT_SEARCH  # noqa: E402
from ferlab.inference.recognizer import Recognizer  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"
PHOTO = ROOT / "examples" / "astronaut.jpg"


def accuracy(rec: Recognizer, ds, boot: int, rng: np.random.Generator) -> dict:
    out = {}
    for split in ("PublicTest", "PrivateTest"):
        d = ds.by_split(split)
        plain = rec.classify(d.images, "none").argmax(1) == d.labels
        flip = rec.classify(d.images, "flip").argmax(1) == d.labels
        p = paired(flip, plain, boot, rng)
        out[split] = {"n": p["faces"], "accuracy_none": p["accuracy_b"], "accuracy_flip": p["accuracy_a"],
                      "gain_points": p["difference_points"], "gain_ci95_points": p["ci95_points"],
                      "only_flip_right": p["only_a_right"], "only_none_right": p["only_b_right"],
                      "role": "selection (decides)" if split == "PublicTest" else "reported only"}
    return out


def interleaved(fns: dict, repeats: int, inner: int) -> dict[str, list[float]]:
    """{name: [ms per call, one value per repeat]}, the functions taking turns so load hits them alike."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[k].append((time.perf_counter() - t0) / inner * 1e3)
    return times


def summary(times: dict[str, list[float]], base: str, faces: int) -> dict:
    out = {k: round(statistics.median(v), 3) for k, v in times.items()}
    for k in times:
        if k != base:
            diffs = [a - b for a, b in zip(times[k], times[base])]
            out[f"{k}_extra_ms_per_face"] = round(statistics.median(diffs) / faces, 3)
            out[f"{k}_ratio"] = round(statistics.median([a / b for a, b in zip(times[k], times[base])]), 3)
    return out


def classify_cost(rec: Recognizer, faces: np.ndarray, repeats: int) -> dict:
    out = {}
    for n in (1, 8):
        crops = faces[:n]
        t = interleaved({"none": lambda c=crops: rec.classify(c, "none"), "flip": lambda c=crops: rec.classify(c, "flip")},
                        repeats, inner=20)
        out[f"faces_{n}"] = summary(t, "none", n)
    return out


def big_photo(tmp: str) -> tuple[Path, np.ndarray]:
    """A 12 MP photo: the astronaut (512x512) pasted near the middle of a 4000x3000 textured canvas."""
    face = cv2.imread(str(PHOTO))
    rng = np.random.default_rng(0)
    canvas = cv2.GaussianBlur(rng.integers(60, 200, (3000, 4000, 3), dtype=np.uint8), (0, 0), 6)
    canvas[1200:1712, 1700:2212] = face
    path = Path(tmp) / "astronaut_12mp.jpg"
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path, canvas


def photo_cost(rec: Recognizer, frec: Recognizer, photos: dict, repeats: int) -> dict:
    """Per photo, interleaved: decoding, detection, the classifier plain and with the flip view (on the faces
    the photo has), and ``predict`` end to end plain and with the flip view (from the file)."""
    out = {}
    for name, (path, arr) in photos.items():
        img = rec.load(path)
        dets = [d for d in rec.detect(img) if d.source != "whole"]
        crops = rec.crops(img, dets)
        inner = 3 if arr.size < 5e6 else 1
        t = interleaved({"decode": lambda p=path: rec.load(p), "detect": lambda i=img: rec.detect(i),
                         "classify_none": lambda c=crops: rec.classify(c, "none"),
                         "classify_flip": lambda c=crops: rec.classify(c, "flip"),
                         "predict_none": lambda p=path: rec.predict(p), "predict_flip": lambda p=path: frec.predict(p)},
                        repeats, inner)
        row = {"shape": list(arr.shape), "faces_found": len(dets), "repeats": repeats, "calls_per_repeat": inner,
               "median_ms": {k: round(statistics.median(v), 3) for k, v in t.items()}}
        extra = statistics.median([a - b for a, b in zip(t["classify_flip"], t["classify_none"])])
        e2e = statistics.median([a - b for a, b in zip(t["predict_flip"], t["predict_none"])])
        row["flip_extra_ms"] = round(extra, 3)
        row["flip_extra_pct_of_predict"] = round(100 * extra / statistics.median(t["predict_none"]), 2)
        row["predict_flip_minus_none_ms_end_to_end"] = round(e2e, 2)  # the same extra, inside the photo's noise
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["default", "fast"])
    ap.add_argument("--repeats", type=int, default=61, help="interleaved timing repeats (medians are quoted)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "flip.json"))
    args = ap.parse_args()
    ds = load_fer2013_csv(DATA)
    faces = ds.by_split("PublicTest").images
    result = {"command": "python benchmarks/bench_flip.py " + " ".join(sys.argv[1:]),
              "machine": machine_info(), "recognizer": "Recognizer() defaults (BlazeFace, photo search at its default, "
              "threads automatic) - flip = its classify() with the mirrored crops in the same batch",
              "photo_search": DEFAULT_SEARCH, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        big_path, big = big_photo(tmp)
        photos = {"astronaut_512": (PHOTO, cv2.imread(str(PHOTO))), "astronaut_12mp": (big_path, big)}
        for name in args.models:
            # the Recognizer's own views (classify's tta): rec without the flip, frec with it (the photo default)
            rec, frec = Recognizer(name, tta="none"), Recognizer(name, tta="flip")
            row = {"threads": rec.classifier.threads,
                   "accuracy": accuracy(rec, ds, args.bootstrap, np.random.default_rng(0)),
                   "classify_ms": classify_cost(rec, faces, args.repeats)}
            print(name, json.dumps(row), flush=True)
            if name == args.models[0]:
                result["photo_ms"] = photo_cost(rec, frec, photos, max(5, args.repeats // 4))
                result["photo_ms"]["model"] = name
                print("photos", json.dumps(result["photo_ms"]), flush=True)
            result["models"][name] = row
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    atomic_write(args.out, lambda t: Path(t).write_text(json.dumps(result, indent=2) + "\n"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
