"""BlazeFace box -> FER2013 framing: how much larger, and where, is the frame the classifiers were trained on?

On FER2013 PublicTest faces composited into 640x480 frames (``synth_faces.py``, no rotation, sides
64-200 px), each range of the bundled BlazeFace runs with its framing switched off, and every detection
whose raw box overlaps a pasted face (IoU >= 0.3) gives: the frame side over the box's longer side, and the
offset of the frame centre from the box centre in box sides.  Medians go to ``FRAMING`` in
``ferlab/inference/blazeface.py``.

    python benchmarks/blazeface_framing.py [--frames 300]

Writes ``benchmarks/results/blazeface_framing.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synth_faces import iou_xywh, load_split, make_frames  # noqa: E402

from ferlab.inference.blazeface import BlazeFaceDetector  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "blazeface_framing.json"))
    args = ap.parse_args(argv)
    faces, labels, src = load_split("PublicTest")
    result = {"data": Path(src).name, "split": "PublicTest", "frames": args.frames, "ranges": {}}
    for rng in ("short", "full"):
        det = BlazeFaceDetector(rng, threads=2)
        scale, dx, dy = [], [], []
        n_gt = 0
        for frame, gts in make_frames(faces, labels, args.frames, seed=1, max_rot=0.0):
            dec, _ = det.raw(frame)
            n_gt += len(gts)
            for g in gts:
                best, bi = 0.0, -1
                for i, d in enumerate(dec):
                    v = iou_xywh(g.box, (d[0], d[1], d[2] - d[0], d[3] - d[1]))
                    if v > best:
                        best, bi = v, i
                if best < 0.3:
                    continue
                d = dec[bi]
                side = max(d[2] - d[0], d[3] - d[1])
                scale.append(g.side / side)
                dx.append((g.cx - (d[0] + d[2]) / 2) / side)
                dy.append((g.cy - (d[1] + d[3]) / 2) / side)
        q = lambda v: [round(float(x), 4) for x in np.percentile(v, [25, 50, 75])]  # noqa: E731
        result["ranges"][rng] = {"faces": n_gt, "matched": len(scale),
                                 "scale_q25_50_75": q(scale), "dx_q25_50_75": q(dx), "dy_q25_50_75": q(dy),
                                 "framing": {"scale": round(float(np.median(scale)), 3),
                                             "dx": round(float(np.median(dx)), 3),
                                             "dy": round(float(np.median(dy)), 3)}}
        print(rng, result["ranges"][rng])
    result["python"] = platform.python_version()
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
