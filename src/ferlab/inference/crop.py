"""The face crop: the contract shared by inference, training, evaluation, ensembles and features.

A face box (or a ``Detection``: its face frame and eye keypoints) -> the square grown by the margin
(``face_square``) -> a grey ``size`` x ``size`` crop (``crop_face``; ``crop_aligned`` when the eyes are
levelled), or the whole image as a padded square (``whole_image_crop``).  ``FaceCropper`` crops a labelled photo
the way the ``Recognizer`` crops a face, so a model trained or evaluated on a photo folder sees what
``ferlab predict`` shows it.  No torch: OpenCV + numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from ..card import FACE_MARGIN
from ..errors import FerlabError
from .detect import DEFAULT_DETECTOR, Detection, Detector, _gray, make_detector

#: margin used when a model card has no ``face_margin``.  Measured by benchmarks/face_margin.py on FER2013
#: PrivateTest upscaled to 192 px (Haar box found on 75% of them): the FER2013 frame is the Haar box grown
#: by a median 0.02 of its side on each side (IQR -0.01 to 0.06, centred, no vertical offset).  Re-cropping
#: those images from the Haar box, the trained fernet model scores 71.8% at margin 0, 71.2% at 0.025,
#: 69.2% at 0.1 and 61.4% at 0.2 (73.1% on the original crops): larger margins than the FER framing hurt.
DEFAULT_MARGIN = FACE_MARGIN  # the model card's contract constant (ferlab.card)
#: work bound (issue 13): whatever the input's shape, a crop is made from at most a CROP_MAX_SIDE square
#: (``recognizer.DETECT_MAX_PIXELS`` bounds detection).  Crops within it are made exactly as before.
CROP_MAX_SIDE = 2048

#: images this small on both sides are taken as face crops already: classified whole, without detection
FACE_CROP_PX = 64
#: eye alignment by default: off.  Measured by benchmarks/bench_alignment.py (alignment.json, default model,
#: FER2013 PublicTest faces re-detected in composited frames): rotating crops to level the eyes costs 3.6
#: points on upright faces (67.9% -> 64.3%) and 1.4 with tilts up to 15 degrees, and gains 2.1 with tilts up
#: to 30: the classifiers were trained on FER2013's unaligned crops.  ``align=True`` (``--align``) is there
#: for strongly tilted faces.
DEFAULT_ALIGN = False
#: below this tilt (degrees) the crop is not rotated
_MIN_TILT = 1.0
#: eye-line angle (degrees) from which a face is cropped upright whatever ``align`` says
SIDEWAYS = 45.0


def face_square(box: Sequence[float], margin: float) -> tuple[int, int, int]:
    """The square crop (x0, y0, side) of a face box grown by ``margin`` x its longer side on each side,
    centred on the box.  It may reach outside the image (see ``crop_face``)."""
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise FerlabError(f"face box {tuple(box)} has no area")
    if margin <= -0.5:
        raise FerlabError(f"face margin must be > -0.5 (got {margin})")
    side = max(w, h) * (1.0 + 2.0 * margin)
    s = max(1, int(round(side)))
    x0 = int(round(x + w / 2 - s / 2))
    y0 = int(round(y + h / 2 - s / 2))
    return x0, y0, s


def _resize(patch: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if patch.shape[0] == size and patch.shape[1] == size:
        return np.ascontiguousarray(patch)
    interp = cv2.INTER_AREA if min(patch.shape[:2]) >= size else cv2.INTER_LINEAR  # AREA blocks when enlarging
    return cv2.resize(patch, (size, size), interpolation=interp)


def crop_face(image: np.ndarray, box: Sequence[float], margin: float, size: int = 48) -> np.ndarray:
    """Grey ``size`` x ``size`` crop of the face: the box grown by ``margin`` (``face_square``), the part
    outside the image filled by repeating the border pixels, then resized (INTER_AREA when shrinking)."""
    import cv2

    gray = _gray(image)
    H, W = gray.shape
    x0, y0, s = face_square(box, margin)
    if s > 4 * max(H, W):
        raise FerlabError(f"face box {tuple(box)} is far larger than the {W}x{H} image", "recognition")
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(W, x0 + s), min(H, y0 + s)
    if ix1 <= ix0 or iy1 <= iy0:
        raise FerlabError(f"face box {tuple(box)} lies outside the {W}x{H} image", "recognition")
    patch = gray[iy0:iy1, ix0:ix1]
    pads = (iy0 - y0, y0 + s - iy1, ix0 - x0, x0 + s - ix1)
    if s > CROP_MAX_SIDE:  # shrink before padding: the work is bounded by the output, not the box
        f = CROP_MAX_SIDE / s
        ph, pw = max(1, round(patch.shape[0] * f)), max(1, round(patch.shape[1] * f))
        patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
        top, left = round(pads[0] * f), round(pads[2] * f)
        pads = (top, max(0, CROP_MAX_SIDE - ph - top), left, max(0, CROP_MAX_SIDE - pw - left))
    if any(pads):
        patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_REPLICATE)
    return _resize(patch, size)


def eye_angle(keypoints) -> float:
    """Tilt of the eye line in degrees (positive: the face's left eye, on the image right, is lower)."""
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))


def crop_aligned(image: np.ndarray, center: Sequence[float], side: float, angle: float, size: int = 48) -> np.ndarray:
    """Grey ``size`` x ``size`` crop of the square of ``side`` pixels centred on ``center``, rotated by
    ``angle`` degrees (the eye tilt: the crop comes out with the eyes level).  Big faces are first shrunk
    with INTER_AREA (no aliasing), then one affine warp rotates and resamples; outside the image the
    border pixels repeat."""
    import cv2

    gray = _gray(image)
    H, W = gray.shape
    cx, cy, side = float(center[0]), float(center[1]), float(side)
    if not side > 0:
        raise FerlabError(f"face side {side} has no area", "recognition")
    if side > 4 * max(H, W):
        raise FerlabError(f"face of side {side:.0f} is far larger than the {W}x{H} image", "recognition")
    # the rotated square fits in a square of side * sqrt(2) around the centre
    half = side * 0.7072 + 2
    x0, y0 = int(np.floor(cx - half)), int(np.floor(cy - half))
    n = int(np.ceil(2 * half))
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(W, x0 + n), min(H, y0 + n)
    if ix1 <= ix0 or iy1 <= iy0:
        raise FerlabError(f"face centred at ({cx:.0f}, {cy:.0f}) lies outside the {W}x{H} image", "recognition")
    patch = gray[iy0:iy1, ix0:ix1]  # the warp repeats its border for what lies outside the image
    k = 1.0
    if side > size:  # shrink first so that the face is ``size`` pixels: no aliasing, work bounded by the output
        k = size / side
        ph, pw = max(1, round(patch.shape[0] * k)), max(1, round(patch.shape[1] * k))
        patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
        k = (pw / (ix1 - ix0), ph / (iy1 - iy0))
        c = ((cx - ix0) * k[0], (cy - iy0) * k[1])
        k = (k[0] + k[1]) / 2
    else:
        c = (cx - ix0, cy - iy0)
    m = cv2.getRotationMatrix2D(c, angle, size / (side * k))
    m[0, 2] += size / 2 - c[0]
    m[1, 2] += size / 2 - c[1]
    return cv2.warpAffine(patch, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop_detection(image: np.ndarray, det, margin: float = DEFAULT_MARGIN, size: int = 48,
                   align: bool = DEFAULT_ALIGN) -> np.ndarray:
    """Grey ``size`` x ``size`` crop of one face the way the Recognizer crops it: a ``Detection`` (its face
    frame, and with ``align`` its eye keypoints: rotated so the eyes are level) or a plain (x, y, w, h) box,
    grown by ``margin``.  A face whose eyes are turned ``SIDEWAYS`` degrees or more (a photo turned 90 or 180
    degrees, found by the thorough search) is turned upright even without ``align``: the classifiers only
    know upright faces.  Also used to crop labelled training photos (``FaceCropper``)."""
    gray = _gray(image)
    if not isinstance(det, Detection):
        return crop_face(gray, det, margin, size)
    if det.frame is not None:
        cx, cy, side = det.frame
    else:
        x, y, w, h = det.box
        cx, cy, side = x + w / 2, y + h / 2, max(w, h)
    angle = eye_angle(det.keypoints) if det.keypoints is not None else 0.0
    if not align and abs(angle) < SIDEWAYS:
        angle = 0.0  # unaligned crops stay upright, unless the face lies on its side or upside down
    if abs(angle) < _MIN_TILT:
        if det.frame is None:
            return crop_face(gray, det.box, margin, size)
        return crop_face(gray, (cx - side / 2, cy - side / 2, side, side), margin, size)
    return crop_aligned(gray, (cx, cy), side * (1 + 2 * margin), angle, size)


def whole_image_crop(image: np.ndarray, size: int = 48) -> np.ndarray:
    """The whole image as a grey square (the shorter side padded by repeating its border, no distortion)."""
    import cv2

    gray = _gray(image)
    h, w = gray.shape
    if max(h, w) > CROP_MAX_SIDE:  # shrink before padding (a 1 x 65535 strip must not become a 65535^2 square)
        f = CROP_MAX_SIDE / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        h, w = gray.shape
    if h != w:
        d = abs(h - w)
        a, b = d // 2, d - d // 2
        pads = (a, b, 0, 0) if h < w else (0, 0, a, b)
        gray = cv2.copyMakeBorder(gray, *pads, cv2.BORDER_REPLICATE)
    return _resize(gray, size)


class FaceCropper:
    """Labelled photo (BGR) -> 48x48 grey face crop the way the Recognizer crops it (detector, the largest face,
    framing, default margin and alignment), so that a model trained or evaluated on a photo folder sees what
    ``ferlab predict`` shows it.  The cropper ``data.load_dataset`` / ``data.folders.load_folder`` take: returns
    ``None`` for a face crop already (at most ``FACE_CROP_PX`` a side: the caller only resizes it) and an empty
    array when no face is found.  The detector is made on first use (a CSV dataset never needs it)."""

    def __init__(self, detector: str | os.PathLike | Detector = DEFAULT_DETECTOR, size: int = 48):
        self.detector_name = detector
        self.size = size

    @cached_property
    def detector(self) -> Detector:
        return make_detector(self.detector_name)

    def __call__(self, bgr: np.ndarray) -> np.ndarray | None:
        if max(bgr.shape[:2]) <= FACE_CROP_PX:
            return None
        dets = self.detector.detect(bgr)
        if not dets:
            return np.zeros((0,), np.uint8)
        best = max(dets, key=lambda d: d.box[2] * d.box[3])
        return crop_detection(bgr, best, size=self.size)
