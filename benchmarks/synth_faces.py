"""A labelled face-detection set built from what this project has: FER2013 faces composited into frames.

Each frame (default 640x480, BGR) has a background (``examples/no_face.png`` cut and scaled, smooth
colour gradients with blobs and stripes, or noise textures: none holds a face) and 0-4 FER2013 faces
upscaled from 48 px to a random side (``min_side``-``max_side``), rotated by a random angle within
``max_rot`` degrees and pasted with a feathered edge at random, non-overlapping positions (some cut by the
frame border when ``border`` is set).  The ground truth of a face is its FER2013 frame: the square
(cx, cy, side) it was pasted into, the framing ferlab's classifiers are trained on.

Used by ``blazeface_framing.py`` (PublicTest faces: calibrates the detector box to the FER framing),
``bench_detect_quality.py`` (PrivateTest faces: recall at IoU 0.5, false positives per frame) and
``bench_alignment.py``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
FER_CSV = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"
SAMPLE_CSV = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013_sample.csv"


@dataclass
class SynthFace:
    cx: float
    cy: float
    side: float
    angle: float
    label: int
    index: int  # row in the FER2013 split used

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.cx - self.side / 2, self.cy - self.side / 2, self.side, self.side)


def load_split(split: str, limit: int | None = None, path: Path | None = None):
    """(images (N, 48, 48) uint8, labels) of one FER2013 split (the full file, else the 700-row sample)."""
    from ferlab.data.fer2013 import load_fer2013_csv

    p = path or (FER_CSV if FER_CSV.exists() else SAMPLE_CSV)
    ds = load_fer2013_csv(p)
    m = ds.split == split
    imgs, labels = ds.images[m], ds.labels[m]
    if limit:
        imgs, labels = imgs[:limit], labels[:limit]
    return imgs, labels, str(p)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        land = cv2.imread(str(ROOT / "examples" / "no_face.png"))
        s = rng.uniform(1.4, 3.0)
        big = cv2.resize(land, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        if big.shape[0] < h or big.shape[1] < w:
            big = cv2.resize(big, (max(w, big.shape[1]), max(h, big.shape[0])))
        y, x = rng.integers(0, big.shape[0] - h + 1), rng.integers(0, big.shape[1] - w + 1)
        return np.ascontiguousarray(big[y:y + h, x:x + w])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-0.4, 0.4, 3)
        img[:, :, c] = 128 + a * xx + b * yy + d * 100
    if kind == 1:  # blobs and stripes
        for _ in range(rng.integers(4, 12)):
            col = tuple(float(v) for v in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(10, 120)), col, -1)
            else:
                cv2.rectangle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                              (int(rng.integers(0, w)), int(rng.integers(0, h))), col, int(rng.integers(-1, 12)))
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 3))
    else:  # texture
        noise = rng.normal(0, 1, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        img += noise * rng.uniform(15, 50)
    return np.clip(img, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, face48: np.ndarray, cx: float, cy: float, side: float, angle: float) -> None:
    """Paste the face (grey) as the square of ``side`` centred on (cx, cy), rotated by ``angle`` degrees
    (positive: counter-clockwise on screen), with a 2-pixel feathered edge."""
    h, w = frame.shape[:2]
    up = cv2.resize(face48, (max(2, int(round(side))),) * 2, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    s = up.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, 1.0)
    m[0, 2] += cx - s / 2
    m[1, 2] += cy - s / 2
    warped = cv2.warpAffine(up, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(np.ones((s, s), np.float32), m, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.GaussianBlur(mask, (5, 5), 1.0) * mask
    frame[:] = (frame * (1 - mask[:, :, None]) + warped[:, :, None] * mask[:, :, None]).astype(np.uint8)


def make_frames(faces48: np.ndarray, labels: np.ndarray, n_frames: int, seed: int = 0, w: int = 640, h: int = 480,
                max_faces: int = 4, min_side: int = 64, max_side: int = 200, max_rot: float = 15.0,
                border: float = 0.0, p_empty: float = 0.1):
    """Yield (frame BGR uint8, [SynthFace]) for ``n_frames`` frames; faces are drawn from ``faces48`` in
    order (each used once, cycling)."""
    rng = np.random.default_rng(seed)
    k = 0
    for _ in range(n_frames):
        frame = _background(rng, w, h)
        n = 0 if rng.random() < p_empty else int(rng.integers(1, max_faces + 1))
        placed: list[SynthFace] = []
        for _ in range(n):
            for _try in range(30):
                side = float(rng.uniform(min_side, min(max_side, 0.9 * min(w, h))))
                lo = side / 2 - (border * side if rng.random() < 0.3 else 0)
                cx, cy = rng.uniform(lo, w - lo), rng.uniform(lo, h - lo)
                if all(abs(cx - f.cx) > (side + f.side) * 0.6 or abs(cy - f.cy) > (side + f.side) * 0.6
                       for f in placed):
                    break
            else:
                continue
            angle = float(rng.uniform(-max_rot, max_rot))
            i = k % len(faces48)
            k += 1
            _paste(frame, faces48[i], cx, cy, side, angle)
            placed.append(SynthFace(cx, cy, side, angle, int(labels[i]), i))
        yield frame, placed


def iou_xywh(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = min(ax2, bx2) - max(a[0], b[0]), min(ay2, by2) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def match(gt_boxes, det_boxes, thr: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU >= ``thr``: (gt index, det index, iou), best pairs first."""
    pairs = sorted(((iou_xywh(g, d), gi, di) for gi, g in enumerate(gt_boxes) for di, d in enumerate(det_boxes)),
                   reverse=True)
    used_g, used_d, out = set(), set(), []
    for v, gi, di in pairs:
        if v < thr or gi in used_g or di in used_d:
            continue
        used_g.add(gi)
        used_d.add(di)
        out.append((gi, di, v))
    return out
