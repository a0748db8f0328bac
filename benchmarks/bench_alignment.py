"""Does eye alignment help?  Accuracy of the default model on re-detected FER2013 faces, with and without.

FER2013 PublicTest faces (the split for choices; PrivateTest stays for reporting) are upscaled to 96-200
px, rotated by a random angle within +-``rot`` degrees and composited one per 640x480 frame
(``synth_faces.py``); the default detector (``blazeface``) finds them again, and the default model
classifies the crop made with ``align=True`` (rotated so the eyes are level) and with ``align=False``
(the upright face frame).  Both are scored on the same faces (those the detector found), for rotations up
to 0, 15 and 30 degrees; the accuracy on the original 48x48 images of those faces is the ceiling.

    python benchmarks/bench_alignment.py [--faces 600]

Writes ``benchmarks/results/alignment.json``; ``DEFAULT_ALIGN`` in ferlab/inference/recognizer.py follows it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synth_faces import load_split, make_frames  # noqa: E402

from ferlab.inference.recognizer import Recognizer  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=600)
    ap.add_argument("--model", default="default")
    ap.add_argument("--rotations", default="0,15,30")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "alignment.json"))
    args = ap.parse_args(argv)
    faces, labels, src = load_split("PublicTest", limit=args.faces)
    on = Recognizer(model=args.model, threads=args.threads, align=True)
    off = Recognizer(model=args.model, threads=args.threads, align=False)
    ceiling_pred = on.classify(faces).argmax(1)
    res = {"what": "accuracy with and without eye alignment on FER2013 PublicTest faces, upscaled, rotated, "
                   "composited one per 640x480 frame and re-detected by the default detector",
           "command": "python benchmarks/bench_alignment.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model,
           "detector": on.detector.name, "data": Path(src).name, "split": "PublicTest", "faces": len(faces),
           "by_max_rotation_deg": {}}
    for rot in (float(r) for r in args.rotations.split(",")):
        hit_on, hit_off, ceil, n_found, tilt_err, tilt = [], [], [], 0, [], []
        for frame, gts in make_frames(faces, labels, len(faces), seed=11, max_faces=1, p_empty=0.0, min_side=96,
                                      max_side=200, max_rot=rot):
            if not gts:
                continue
            g = gts[0]
            img = on.load(frame)
            dets = [d for d in on.detect(img)
                    if abs(d.frame[0] - g.cx) < 0.3 * g.side and abs(d.frame[1] - g.cy) < 0.3 * g.side]
            if not dets:
                continue
            d = max(dets, key=lambda d: d.score)
            n_found += 1
            p_on = on.classify(on.crops(img, [d])).argmax(1)[0]
            p_off = off.classify(off.crops(img, [d])).argmax(1)[0]
            hit_on.append(p_on == g.label)
            hit_off.append(p_off == g.label)
            ceil.append(ceiling_pred[g.index] == g.label)
            (rx, ry), (lx, ly) = d.keypoints[:2]
            tilt.append(abs(np.degrees(np.arctan2(ly - ry, lx - rx))))
            tilt_err.append(abs(np.degrees(np.arctan2(ly - ry, lx - rx)) + g.angle))
        r = {"faces": len(faces), "found": n_found, "found_rate": round(n_found / len(faces), 4),
             "accuracy_aligned": round(float(np.mean(hit_on)), 4),
             "accuracy_upright": round(float(np.mean(hit_off)), 4),
             "accuracy_original_48px_crops": round(float(np.mean(ceil)), 4),
             "median_abs_eye_tilt_error_deg": round(float(np.median(tilt_err)), 2)}
        r["aligned_minus_upright_points"] = round(100 * (r["accuracy_aligned"] - r["accuracy_upright"]), 2)
        # a policy between the two: rotate only faces tilted by more than T degrees
        hon, hoff, t = np.array(hit_on), np.array(hit_off), np.array(tilt)
        r["accuracy_align_if_tilt_over"] = {str(th): round(float(np.where(t > th, hon, hoff).mean()), 4)
                                            for th in (5, 10, 15, 20)}
        res["by_max_rotation_deg"][str(int(rot))] = r
        print(rot, r, flush=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=2) + "\n"))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
