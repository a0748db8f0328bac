"""What a face detector is: ``Detection`` (one face found) and the ``Detector`` base class.

Every detector (``detect.py``: Haar, YuNet, the whole image; ``blazeface.py``: BlazeFace) subclasses
``Detector``; ``detect.make_detector`` builds one by name.  Kept apart from both so that neither imports
the other's module to know what a detection is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (x, y, w, h) in pixels, clipped to the image, ``score`` (Haar: number of merged
    raw detections, a monotone confidence but no probability; BlazeFace, YuNet: a probability; whole
    image: 1.0), ``source``.  BlazeFace adds ``keypoints`` (right eye, left eye, nose tip, mouth centre,
    right and left ear tragion: (x, y) pixels), ``raw_box`` (its own tight box, x, y, w, h) and ``frame``
    ((cx, cy, side): the square face frame, which may reach past the image border)."""

    box: Box
    score: float = 1.0
    source: str = "frontal"
    keypoints: tuple[Point, ...] | None = None
    raw_box: tuple[float, float, float, float] | None = None
    frame: tuple[float, float, float] | None = None


def _clip_box(box, w: int, h: int) -> Box | None:
    x, y, bw, bh = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


class Detector:
    """Base class; subclasses implement ``_detect(image, scale) -> list[Detection]`` (``scale``: how much the
    image given was shrunk from the original, so size limits can follow)."""

    name = "detector"
    max_side: int | None = None
    # -- what a detector is, declared (callers ask these, never its name or class) ---------------------------
    #: whether a full detection is cheap enough to run on every video frame (no search windows needed)
    cheap = False
    #: whether it reads colour (the pipeline then decodes BGR; else grey is all it needs)
    needs_color = False
    #: the photo searches it offers (``detect(image, search=...)``; empty: none)
    searches: tuple[str, ...] = ()
    #: the input sizes of its models when it resizes images itself (then nobody shrinks an image for it first)
    native_sizes: tuple[int, ...] = ()
    #: whether it takes the whole image as the face (the image is a face crop)
    whole_image = False
    #: whether live frames are followed in windows around known faces (``inference.live``)
    tracks_in_windows = False

    def detection_scale(self, shape: tuple[int, ...]) -> float:
        """The factor (<= 1) the image is shrunk by before detection (``max_side``)."""
        if not self.max_side or max(shape[:2]) <= self.max_side:
            return 1.0
        return self.max_side / max(shape[:2])

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        s = self.detection_scale(image.shape)
        if s >= 1.0:
            return self._detect(image, 1.0)
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        out = []
        for d in self._detect(small, s):
            b = _clip_box((d.box[0] / s, d.box[1] / s, d.box[2] / s, d.box[3] / s), w, h)
            if b:
                out.append(Detection(b, d.score, d.source))
        return out

    def _detect(self, image: np.ndarray, scale: float = 1.0) -> list[Detection]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect_live(self, image: np.ndarray) -> list[Detection]:
        """Faces of a video frame (detectors with a slower still-image mode skip it here)."""
        return self.detect(image)

    def detect_near(self, image: np.ndarray, box: Box, expand: float = 0.5) -> list[Detection]:
        """Faces inside ``box`` grown by ``expand`` x its size on each side (coordinates of ``image``)."""
        h, w = image.shape[:2]
        x, y, bw, bh = box
        x0, y0 = max(0, int(x - expand * bw)), max(0, int(y - expand * bh))
        x1, y1 = min(w, int(x + bw + expand * bw)), min(h, int(y + bh + expand * bh))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        found = self._detect_roi(image[y0:y1, x0:x1], box)
        return [Detection((d.box[0] + x0, d.box[1] + y0, d.box[2], d.box[3]), d.score, d.source) for d in found]

    def _detect_roi(self, roi: np.ndarray, prev: Box) -> list[Detection]:
        return self.detect(roi)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
