"""Face detectors: BlazeFace (the default; MediaPipe's CNN, bundled as ONNX, see ``blazeface.py``), OpenCV
Haar cascades (bundled in opencv-python-headless), YuNet from a user-given ONNX file, and "none" (the whole
image is the face).

Every detector has ``detect(image) -> list[Detection]`` with ``image`` a uint8 grayscale (H, W) or BGR
(H, W, 3) array, and ``detect_near(image, box)`` that searches only a window around a previous box (what
the video tracker calls between full detections).  Boxes are ``(x, y, w, h)`` ints in the input image.

Speed (measured by ``benchmarks/bench_inference.py``; the figures are in benchmarks/README.md): a Haar pass
scans an image pyramid whose first level already shrinks the image so that the 24 px cascade window matches
``min_size``, so the cost is set mostly by ``min_size`` and ``scale_factor``.  Shrinking the frame first
(``max_side``) saves a little more and never shrinks a ``min_size`` face below ``RELIABLE_PX``, so small
faces stay findable.  The profile passes cost about 4x.  In videos the big saving is detecting every N
frames and searching only near the last box in between (``detect_near``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FerlabError
from .blazeface import BlazeFaceAuto, BlazeFaceDetector
from .detection import Box, Detection, Detector, _clip_box

#: smallest face (pixels) the frontal cascade finds reliably: FER2013 faces rendered at several sizes are
#: found 73% as often at 40 px as at 96 px, 66% at 36 px, 40% at 24 px (face_margin.json, recall_by_face_px)
RELIABLE_PX = 40
#: default smallest face searched for, in pixels of the input image (FER models see 48 px faces;
#: smaller faces carry little expression detail)
DEFAULT_MIN_FACE = 40

DETECTOR_NAMES = ("blazeface", "blazeface-short", "blazeface-full", "haar", "haar+profile", "none",
                  "PATH.onnx (YuNet)")
#: the detector used when none is named (CLI, Recognizer, server)
DEFAULT_DETECTOR = "blazeface"

def _gray(image: np.ndarray) -> np.ndarray:
    """A BGR (or grey) image as grey: the one conversion of the detectors and the face crop."""
    import cv2

    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def iou(a: Box, b: Box) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = min(ax2, bx2) - max(a[0], b[0])
    ih = min(ay2, by2) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def _overlap_small(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area (catches a box nested inside another)."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / float(min(a[2] * a[3], b[2] * b[3]))


_SOURCE_RANK = {"frontal": 0, "yunet": 0, "blazeface": 0, "profile": 1, "profile_mirrored": 1, "whole": 2}


def nms(dets: list[Detection], iou_threshold: float = 0.3, contain_threshold: float = 0.7) -> list[Detection]:
    """Greedy non-maximum suppression: frontal boxes before profile ones, then by score, then larger."""
    order = sorted(dets, key=lambda d: (_SOURCE_RANK.get(d.source, 1), -d.score, -d.box[2] * d.box[3]))
    kept: list[Detection] = []
    for d in order:
        if all(iou(d.box, k.box) <= iou_threshold and _overlap_small(d.box, k.box) <= contain_threshold
               for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: (d.box[0], d.box[1]))


class WholeImageDetector(Detector):
    """The "none" detector: the whole image is one face (for images that are already face crops)."""

    name = "none"
    cheap = True
    whole_image = True

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        return [Detection((0, 0, int(w), int(h)), 1.0, "whole")]

    def detect_near(self, image: np.ndarray, box: Box, expand: float = 0.5) -> list[Detection]:
        return self.detect(image)


class HaarDetector(Detector):
    """OpenCV Haar cascades: frontal faces, plus (``profile=True``) profile faces looking either way.

    ``min_size``: smallest face searched for, in pixels of the input image (default ``DEFAULT_MIN_FACE``).
    ``max_side``: detect on a copy whose longest side is at most this (never shrinking a ``min_size`` face
    below ``RELIABLE_PX``); None = full resolution.  ``cascade``: a cascade file name in
    ``cv2.data.haarcascades`` or a path (default ``haarcascade_frontalface_default.xml``).
    """

    name = "haar"

    def __init__(self, min_size: int | None = None, scale_factor: float = 1.1, min_neighbors: int = 5,
                 profile: bool = False, max_side: int | None = None, cascade: str = "haarcascade_frontalface_default.xml",
                 equalize: bool = False):
        import cv2

        if not hasattr(cv2, "CascadeClassifier"):
            raise FerlabError("this OpenCV build has no CascadeClassifier (OpenCV 5 headless); "
                              "install opencv-python-headless>=4.8,<5")
        if scale_factor <= 1.0:
            raise FerlabError(f"scale_factor must be > 1 (got {scale_factor})")
        self.min_size = int(min_size) if min_size else DEFAULT_MIN_FACE
        if self.min_size < 8:
            raise FerlabError(f"min face size must be at least 8 pixels (got {self.min_size})")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.profile = bool(profile)
        self.max_side = int(max_side) if max_side else None
        self.equalize = bool(equalize)
        self.frontal = self._load(cascade)
        self.profile_cascade = self._load("haarcascade_profileface.xml") if profile else None
        self.name = "haar+profile" if profile else "haar"

    @staticmethod
    def _load(cascade: str):
        import cv2

        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise FerlabError(f"Haar cascade {cascade!r} not found (looked in {cv2.data.haarcascades})")
        clf = cv2.CascadeClassifier(str(path))
        if clf.empty():
            raise FerlabError(f"{path}: cannot load Haar cascade")
        return clf

    def __repr__(self) -> str:
        return (f"HaarDetector(min_size={self.min_size}, scale_factor={self.scale_factor}, "
                f"min_neighbors={self.min_neighbors}, profile={self.profile}, max_side={self.max_side})")

    def detection_scale(self, shape: tuple[int, ...]) -> float:
        """The factor (<= 1) the image is shrunk by before detection: ``max_side``, but never so far that a
        ``min_size`` face falls below ``RELIABLE_PX``."""
        s = super().detection_scale(shape)
        return 1.0 if s >= 1.0 else min(1.0, max(s, RELIABLE_PX / self.min_size))

    def _run(self, clf, gray: np.ndarray, min_px: int, max_px: int | None, source: str,
             mirrored: bool = False) -> list[Detection]:
        img = gray[:, ::-1] if mirrored else gray
        kw = {"scaleFactor": self.scale_factor, "minNeighbors": self.min_neighbors, "minSize": (min_px, min_px)}
        if max_px:
            kw["maxSize"] = (max_px, max_px)
        boxes, counts = clf.detectMultiScale2(np.ascontiguousarray(img), **kw)
        out = []
        w = gray.shape[1]
        for (x, y, bw, bh), n in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(counts).reshape(-1)):
            if mirrored:
                x = w - x - bw
            out.append(Detection((int(x), int(y), int(bw), int(bh)), float(n), source))
        return out

    def _all(self, gray: np.ndarray, min_px: int, max_px: int | None) -> list[Detection]:
        dets = self._run(self.frontal, gray, min_px, max_px, "frontal")
        if self.profile_cascade is not None:
            dets += self._run(self.profile_cascade, gray, min_px, max_px, "profile")
            dets += self._run(self.profile_cascade, gray, min_px, max_px, "profile_mirrored", mirrored=True)
        return nms(dets)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        import cv2

        gray = _gray(image)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        return gray

    def _detect(self, image: np.ndarray, scale: float = 1.0) -> list[Detection]:
        return self._all(self._prepare(image), max(8, round(self.min_size * scale)), None)

    def _detect_roi(self, roi: np.ndarray, prev: Box) -> list[Detection]:
        # a face that moved between frames keeps roughly its size: search only 0.6x - 1.6x of it
        # (a handful of pyramid levels on a small window: a few ms where a full pass costs tens)
        gray = self._prepare(roi)
        side = max(prev[2], prev[3])
        lo = max(min(self.min_size, side), int(0.6 * side))
        hi = max(lo + 1, int(1.6 * side))
        if min(gray.shape[:2]) < lo:
            return []
        return self._all(gray, lo, hi)


class YuNetDetector(Detector):
    """OpenCV's YuNet CNN face detector (``cv2.FaceDetectorYN``) from an ONNX file you give.

    ferlab never downloads weights: get ``face_detection_yunet_2023mar.onnx`` from the OpenCV model zoo
    yourself and pass its path (``--detector path/to/yunet.onnx``).
    """

    needs_color = True

    name = "yunet"

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 min_size: int | None = None, top_k: int = 500, max_side: int | None = None, **_ignored):
        import cv2

        p = Path(model_path)
        if not p.is_file():
            raise FerlabError(f"{p}: YuNet face-detector model not found (ferlab never downloads weights: "
                              "get face_detection_yunet_2023mar.onnx from the OpenCV model zoo and give its path)")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FerlabError("this OpenCV build has no FaceDetectorYN (needs OpenCV >= 4.5.4)")
        try:
            self.net = cv2.FaceDetectorYN.create(str(p), "", (320, 320), float(score_threshold),
                                                 float(nms_threshold), int(top_k))
        except cv2.error as e:
            msg = str(e).strip().splitlines()[-1][:120] if str(e).strip() else "unknown error"
            raise FerlabError(f"{p}: cannot load as a YuNet face detector ({msg})") from None
        self.path = p
        self.min_size = int(min_size) if min_size else 0
        self.max_side = int(max_side) if max_side else None
        self._size: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"YuNetDetector({str(self.path)!r})"

    def _detect(self, image: np.ndarray, scale: float = 1.0) -> list[Detection]:
        import cv2

        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        h, w = bgr.shape[:2]
        if self._size != (w, h):
            self.net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self.net.detect(np.ascontiguousarray(bgr))
        out = []
        for f in ([] if faces is None else faces):
            b = _clip_box(f[:4], w, h)
            if b and max(b[2], b[3]) >= self.min_size * scale:
                out.append(Detection(b, float(f[-1]), "yunet"))
        return nms(out)


#: name -> (range, photo search on still images).  "blazeface" (the default, also "auto": ``BlazeFaceAuto``):
#: on still images the photo search (``blazeface.SEARCHES``: an image pyramid at the photo's resolution), on
#: live frames the live path (``inference.live``); "blazeface-short": one short-range pass always (fastest);
#: "blazeface-full": the full-range model alone (with its own pyramid on still images)
_BLAZE_NAMES = {"blazeface": ("auto", True), "auto": ("auto", True), "blazeface-full": ("full", True),
                "full": ("full", True), "blazeface-short": ("short", False), "short": ("short", False)}


def make_detector(name_or_path: str | os.PathLike | Detector = DEFAULT_DETECTOR, **opts) -> Detector:
    """``"blazeface"`` (full range; also ``"auto"``), ``"blazeface-short"``, ``"haar"``, ``"haar+profile"``,
    ``"none"`` or a path to a YuNet ``.onnx``; options go to the detector (``min_size``, ``max_side``,
    ``scale_factor``, ``min_neighbors``, ``min_score``, ``threads``...).  A ``Detector`` passes through."""
    if isinstance(name_or_path, Detector):
        return name_or_path
    text = str(name_or_path if name_or_path is not None else DEFAULT_DETECTOR).strip()
    low = text.lower()
    opts = {k: v for k, v in opts.items() if v is not None}
    if low in _BLAZE_NAMES:
        blaze_opts = {k: v for k, v in opts.items()
                      if k in ("min_score", "nms_iou", "min_size", "threads", "max_faces")}
        rng, search = _BLAZE_NAMES[low]
        if rng == "auto":
            return BlazeFaceAuto(search=opts.get("search"), max_side=opts.get("max_side"), **blaze_opts)
        return BlazeFaceDetector(rng, search=search, **blaze_opts)
    opts.pop("threads", None)
    opts.pop("min_score", None)
    opts.pop("search", None)  # the photo search of the default detector: the others have none
    if low in ("haar", "haar-frontal", "frontal"):
        return HaarDetector(**opts)
    if low in ("haar+profile", "haar-profile", "profile"):
        return HaarDetector(**{**opts, "profile": True})
    if low in ("none", "whole", "whole-image"):
        return WholeImageDetector()
    if low.endswith(".onnx"):
        card = Path(text).with_suffix(".json")
        if card.is_file() and '"anchors"' in card.read_text(errors="replace"):  # a converted BlazeFace

            blaze_opts = {k: v for k, v in opts.items() if k in ("min_score", "nms_iou", "min_size", "max_faces")}
            rng = "short" if "short" in card.read_text(errors="replace") else "full"
            return BlazeFaceDetector(rng, model_path=text, **blaze_opts)
        yunet_opts = {k: v for k, v in opts.items()
                      if k in ("score_threshold", "nms_threshold", "min_size", "top_k", "max_side")}
        return YuNetDetector(text, **yunet_opts)
    raise FerlabError(f"unknown face detector {text!r} (choose {', '.join(DETECTOR_NAMES)})")
