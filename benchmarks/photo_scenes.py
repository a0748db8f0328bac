"""Scenes shaped like users' photos and camera frames, with known faces (issue 21).

A scene is a background of the photo's own size (a landscape drawing cut and scaled, gradients with blobs and
stripes, or noise textures, made at a quarter of the size and enlarged, then fine grain added: busy, and
holding no face) with real faces pasted at known places:

- ``fer``: a FER2013 PrivateTest face (48 px, grey) enlarged to the face's side, rotated by up to
  ``max_rot`` degrees, in a third of the cases partly occluded (a bar over the mouth or the forehead);
- ``person``: the astronaut photo of ``examples/`` (colour, head and shoulders, 512 px with a 96 px face frame)
  scaled so that its face frame has the face's side: the torso around the face is where a detector that
  misjudges scale draws a box.

The ground truth of a face is the square it occupies in ferlab's face framing (the FER2013 crop), as
(x, y, side, side).  Used by ``bench_photos.py`` (photos of 1-24 MP, live frames, crowds) and by the tests
(``tests/test_photo_search.py`` builds its scenes here too).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth_faces import iou_xywh as iou  # noqa: E402,F401  (the one matching rule of the benchmarks)
from synth_faces import match  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
#: the astronaut's face frame in examples/astronaut.jpg (x, y, side) in ferlab's FER2013 framing: BlazeFace's box
#: on the photo at its own size with the framing calibrated on FER2013 faces (blazeface_framing.py).  (The
#: Haar box grown by 0.02 a side that bench_detect_quality.py uses, (176, 65, 96), has the same centre within
#: 4 px and is 19% smaller: the two framings overlap by IoU 0.66.)
ASTRONAUT_FRAME = (166, 58, 118)
#: the head and shoulders cut from it (x0, y0, x1, y1): 2.6 face frames wide, the face in the upper third
PERSON_CROP = (70, 0, 380, 340)


@dataclass
class Face:
    x: float
    y: float
    side: float
    kind: str
    angle: float = 0.0
    occluded: bool = False

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.side, self.side)


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A busy face-free background of w x h (BGR)."""
    sw, sh = max(16, w // 4), max(16, h // 4)
    kind = rng.integers(3)
    if kind == 0:
        land = cv2.imread(str(ROOT / "examples" / "no_face.png"))
        y0, x0 = rng.integers(0, land.shape[0] // 3), rng.integers(0, land.shape[1] // 3)
        small = cv2.resize(land[y0:, x0:], (sw, sh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    else:
        yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
        small = np.zeros((sh, sw, 3), np.float32)
        for c in range(3):
            a, b, d = rng.uniform(-0.4, 0.4, 3) * 640 / max(sw, sh)
            small[:, :, c] = 128 + a * xx + b * yy + d * 100
        if kind == 1:
            for _ in range(int(rng.integers(8, 30))):
                col = tuple(float(v) for v in rng.integers(0, 256, 3))
                p = (int(rng.integers(0, sw)), int(rng.integers(0, sh)))
                if rng.random() < 0.5:
                    cv2.circle(small, p, int(rng.integers(3, max(4, sw // 6))), col, -1)
                else:
                    q = (int(rng.integers(0, sw)), int(rng.integers(0, sh)))
                    cv2.rectangle(small, p, q, col, int(rng.integers(-1, 6)))
        else:
            noise = rng.normal(0, 1, (sh // 8 + 1, sw // 8 + 1, 3)).astype(np.float32)
            small += cv2.resize(noise, (sw, sh), interpolation=cv2.INTER_CUBIC) * rng.uniform(15, 50)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img += rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _blend(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend ``patch`` (h, w, 3) with ``mask`` (h, w) into ``frame`` at (x0, y0), clipped to the frame."""
    H, W = frame.shape[:2]
    h, w = patch.shape[:2]
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if ax1 <= ax0 or ay1 <= ay0:
        return
    p = patch[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0].astype(np.float32)
    m = mask[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0, None]
    roi = frame[ay0:ay1, ax0:ax1].astype(np.float32)
    frame[ay0:ay1, ax0:ax1] = (roi * (1 - m) + p * m).astype(np.uint8)


def _rotated(img: np.ndarray, angle: float, feather: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` rotated about its centre on a canvas that holds it whole, and its feathered mask."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
    m[0, 2] += (nw - w) / 2
    m[1, 2] += (nh - h) / 2
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((h, w), np.float32), m, (nw, nh), flags=cv2.INTER_LINEAR)
    k = max(1.0, feather)
    mask = cv2.GaussianBlur(mask, (0, 0), k) * mask
    return out, mask


def paste_fer(frame: np.ndarray, face48: np.ndarray, cx: float, cy: float, side: float, angle: float,
              occlude: str | None = None) -> None:
    up = cv2.resize(face48, (max(2, int(round(side))),) * 2, interpolation=cv2.INTER_CUBIC)
    up = cv2.cvtColor(up, cv2.COLOR_GRAY2BGR)
    s = up.shape[0]
    if occlude == "mouth":
        cv2.rectangle(up, (0, int(0.72 * s)), (s, s), (40, 60, 90), -1)
    elif occlude == "forehead":
        cv2.rectangle(up, (0, 0), (s, int(0.2 * s)), (30, 30, 30), -1)
    patch, mask = _rotated(up, angle, side / 60)
    _blend(frame, patch, mask, int(round(cx - patch.shape[1] / 2)), int(round(cy - patch.shape[0] / 2)))


def paste_person(frame: np.ndarray, cx: float, cy: float, side: float, angle: float = 0.0) -> None:
    """The astronaut photo scaled so its face frame has ``side`` and is centred on (cx, cy)."""
    astro = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))[PERSON_CROP[1]:PERSON_CROP[3], PERSON_CROP[0]:PERSON_CROP[2]]
    fx, fy, fs = ASTRONAUT_FRAME
    fx, fy = fx - PERSON_CROP[0], fy - PERSON_CROP[1]
    k = side / fs
    big = cv2.resize(astro, (max(2, round(astro.shape[1] * k)), max(2, round(astro.shape[0] * k))), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    # the face frame's centre in the rotated patch: rotate about the patch centre
    patch, mask = _rotated(big, angle, max(1.0, side / 40))
    pc = np.array([patch.shape[1] / 2, patch.shape[0] / 2])
    off = np.array([(fx + fs / 2) * k - big.shape[1] / 2, (fy + fs / 2) * k - big.shape[0] / 2])
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) @ off
    x0, y0 = cx - (pc[0] + rot[0]), cy - (pc[1] + rot[1])
    _blend(frame, patch, mask, int(round(x0)), int(round(y0)))


def _free(placed: list[Face], cx: float, cy: float, side: float, reach: float) -> bool:
    return all(abs(cx - (f.x + f.side / 2)) > (side + f.side) * reach or
               abs(cy - (f.y + f.side / 2)) > (side + f.side) * reach for f in placed)


def make_scene(rng: np.random.Generator, faces48: np.ndarray, w: int, h: int, n_faces: int,
               min_side: float, max_side: float, max_rot: float = 30.0, p_person: float = 0.3,
               p_occlude: float = 0.3, start: int = 0) -> tuple[np.ndarray, list[Face]]:
    """One scene: a w x h background with up to ``n_faces`` faces of sides log-uniform in
    [min_side, max_side] that do not overlap (people keep room for their shoulders)."""
    frame = background(rng, w, h)
    placed: list[Face] = []
    max_side = min(max_side, 0.45 * min(w, h))
    for i in range(n_faces):
        person = rng.random() < p_person
        for _ in range(40):
            side = float(np.exp(rng.uniform(np.log(min_side), np.log(max(min_side, max_side)))))
            reach = 1.6 if person else 0.6
            hi = h - side * (2.6 if person else 0.6)
            if hi <= side * 0.6:
                continue
            cx, cy = rng.uniform(side * 0.6, w - side * 0.6), rng.uniform(side * 0.6, hi)
            if _free(placed, cx, cy, side, reach):
                break
        else:
            continue
        angle = float(rng.uniform(-max_rot, max_rot))
        if person:
            paste_person(frame, cx, cy, side, angle)
            placed.append(Face(cx - side / 2, cy - side / 2, side, "person", angle))
        else:
            occ = None
            if rng.random() < p_occlude:
                occ = "mouth" if rng.random() < 0.5 else "forehead"
            paste_fer(frame, faces48[(start + i) % len(faces48)], cx, cy, side, angle, occ)
            placed.append(Face(cx - side / 2, cy - side / 2, side, "fer", angle, occ is not None))
    return frame, placed


def fer_faces(limit: int = 400) -> np.ndarray:
    """FER2013 PrivateTest faces (the full file where present, else the 700-row sample's) that OpenCV's Haar
    cascade finds when each is alone, enlarged to 192 px on grey: FER2013 holds some images that are not
    faces (drawings, text, blanks), which no detector should be asked to find.  (Haar, not BlazeFace, so the
    filter does not favour the detector under test.)"""
    from synth_faces import load_split

    imgs, _, _ = load_split("PrivateTest", None if limit is None else 3 * limit)
    clf = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    keep = []
    for i, f in enumerate(imgs):
        canvas = np.full((320, 320), 128, np.uint8)
        canvas[64:256, 64:256] = cv2.resize(f, (192, 192), interpolation=cv2.INTER_CUBIC)
        if len(clf.detectMultiScale(canvas, 1.1, 3, minSize=(96, 96))):
            keep.append(i)
        if limit and len(keep) >= limit:
            break
    return imgs[keep]
