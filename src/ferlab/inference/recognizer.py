"""The Recognizer: image -> faces (detector) -> 48x48 grey crops (margin from the model card) -> expressions.

    >>> from ferlab import Recognizer
    >>> rec = Recognizer()                      # bundled "default" model, BlazeFace detector
    >>> faces = rec.predict("examples/astronaut.jpg")
    >>> faces[0].label, len(faces[0].keypoints)
    ('happy', 6)

Input: a path, bytes, a PIL image or a numpy array (grey, or 3/4 channels in ``channel_order``); files and
bytes are decoded by ``ferlab.imageio`` (format allow-list, pixel cap).

No face, no label: when the detector finds no face, ``predict`` returns ``[]`` (``on_no_face="skip"``,
the default); ``on_no_face="whole"`` classifies the whole image instead (``whole_image=True``).  Images
already at face-crop size (``FACE_CROP_PX`` or smaller on both sides, like FER2013's 48 px) have no room
around the face for a detector and always take the whole-image path, as does ``detector="none"``.

Alignment (``align=True``): with a detector that gives eye keypoints (BlazeFace), the crop is rotated so
that the eyes are level.  All faces of an image (or of a batch) go to the classifier in one batch.  No
torch: ONNX Runtime + OpenCV only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import FerlabError
from ..imageio import to_array
from .blazeface import check_search
from .classifier import OnnxClassifier
from .crop import DEFAULT_ALIGN, DEFAULT_MARGIN, FACE_CROP_PX, _gray, crop_detection, whole_image_crop
from .detect import DEFAULT_DETECTOR, Detection, Detector, make_detector
from .options import ON_NO_FACE, TTA_MODES, InferenceOptions, check_option
from .records import json_face, keypoint_columns, table_rows

#: work bounds (issue 13): whatever the input's shape, a crop is made from at most a ``crop.CROP_MAX_SIDE``
#: square, and a detector that does not resize images itself (Haar, YuNet: no ``native_sizes``) runs on at
#: most DETECT_MAX_PIXELS (a larger image is searched on a shrunk copy, so its smallest findable face grows);
#: BlazeFace's photo search bounds its own work by model-input pixels (``blazeface.SEARCHES``).
DETECT_MAX_PIXELS = 2_100_000

Box = tuple[int, int, int, int]

#: test-time views of a photo's face crops (issue 24, benchmarks/bench_flip.py, results/flip.json): the flip view
#: adds 0.67 points on PublicTest for ``default`` (70.30% -> 70.97%) and 0.22 for ``fast``, for 0.2-0.7 ms a face
#: against 25 ms (a 512 px photo) to over a second (12 MP) of photo search; live streams stay at one view (a
#: frame costs ~4 ms there: the flip would add 5-18%)
PHOTO_TTA = "flip"
#: ``TTA_MODES`` and ``ON_NO_FACE`` (what ``predict`` does when the detector finds no face: "skip" or "whole")
#: are rows of the options table, ``inference/options.py`` (re-exported here)
__all__ = ["ON_NO_FACE", "PHOTO_TTA", "TTA_MODES", "Face", "Recognizer"]


@dataclass
class Face:
    """One recognised face.  ``box`` is (x, y, w, h) in pixels of the (EXIF-rotated) image; with
    ``whole_image=True`` no face was detected and the box is the whole image."""

    box: Box
    label: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    whole_image: bool = False
    track_id: int | None = None
    detection_score: float | None = None
    #: six (x, y) points from BlazeFace: right eye, left eye, nose tip, mouth centre, right / left ear tragion
    keypoints: tuple | None = None
    #: the detector found no face and the whole image was classified (``on_no_face="whole"``)
    no_face: bool = False

    def to_dict(self) -> dict:
        """The face as JSON (``records.json_face``: the one face record's JSON)."""
        return json_face(self)


class Recognizer:
    """Faces and their expressions in images.

    model: a bundled model name (``ferlab models``) or an ``.onnx`` path with its card beside it.
    detector: ``"blazeface"`` (default: full range; ``"blazeface-short"`` for faces near the camera, faster),
        ``"haar"``, ``"haar+profile"``, ``"none"`` (the image is a face crop), a YuNet ``.onnx`` path, or a
        ``Detector`` instance.
    min_face: smallest face kept, in pixels (Haar: searched for, default 40; BlazeFace: default all).
    margin: face-crop margin as a fraction of the box side (default: the model card's ``face_margin``).
    threads: ONNX Runtime threads (default: ``$FERLAB_THREADS`` or up to 4).
    channel_order: order of 3-channel numpy input, ``"bgr"`` (OpenCV) or ``"rgb"``.
    max_side: detect on a copy of large frames shrunk to this longest side (Haar; keeps small faces findable).
    on_no_face: ``"skip"`` (default: no face found -> no result) or ``"whole"`` (classify the whole image).
    whole_image_fallback: the older spelling of ``on_no_face`` (True = "whole", False = "skip").
    align: rotate crops so the eyes are level (detectors with keypoints; default ``DEFAULT_ALIGN``).
    search: the default detector's photo search, one of ``blazeface.SEARCH_MODES`` (default ``"balanced"``:
        an image pyramid at the photo's own resolution, ``blazeface.SEARCHES``); other detectors have none.
    tta: test-time views of each face crop, ``"flip"`` (default: the crop and its mirror image, probabilities
        averaged; ``PHOTO_TTA``) or ``"none"``; a model whose graph already averages the flip views (card
        ``tta``) gets ``"none"``.  Live streams classify one view whatever this says (``StreamRecognizer``).

    Allowed values, ranges and help of these options: the table of ``inference/options.py`` (``FIELDS``), which
    checks them here (one-line ``FerlabError``, kind ``bad_option``); ``Recognizer.from_options`` builds from an
    ``InferenceOptions``.
    """

    def __init__(self, model: str | os.PathLike = "default",
                 detector: str | os.PathLike | Detector = DEFAULT_DETECTOR,
                 min_face: int | None = None, margin: float | None = None, threads: int | None = None,
                 channel_order: str = "bgr", max_side: int | None = None, whole_image_fallback: bool | None = None,
                 calibrated: bool = True, on_no_face: str | None = None, align: bool | None = None,
                 search: str | None = None, tta: str | None = None, **detector_options):
        if channel_order not in ("bgr", "rgb"):
            raise FerlabError(f"channel_order must be 'bgr' or 'rgb' (got {channel_order!r})", "bad_option")
        margin, min_face, max_side, threads = (check_option(n, v) for n, v in (
            ("margin", margin), ("min_face", min_face), ("max_side", max_side), ("threads", threads)))
        self.classifier = OnnxClassifier(model, threads=threads, calibrated=calibrated, spin=False)
        self.card = self.classifier.card
        self.classes = self.classifier.classes
        self.input_size = self.classifier.input_size
        card_margin = self.card.get("face_margin")
        self.margin = float(margin if margin is not None else card_margin if card_margin is not None
                            else DEFAULT_MARGIN)
        if on_no_face is None:
            on_no_face = "skip" if whole_image_fallback is None else ("whole" if whole_image_fallback else "skip")
        self.on_no_face = _check_on_no_face(on_no_face)
        search = check_option("search", search)
        self.detector = make_detector(detector, min_size=min_face, max_side=max_side, threads=threads,
                                      search=search, **detector_options)
        self.channel_order = channel_order
        self.align = DEFAULT_ALIGN if align is None else bool(align)
        tta = PHOTO_TTA if tta is None else check_option("tta", tta)
        self.tta = "none" if self.card.get("tta") == "flip" else tta

    @classmethod
    def from_options(cls, options: InferenceOptions, **extra) -> Recognizer:
        """A Recognizer from checked ``InferenceOptions`` (``extra``: ``channel_order``, ``calibrated``, detector
        options).  The options are passed as they are; ``Recognizer.__init__`` checks them again only by the same
        table, so a value refused here is refused there with the same line."""
        return cls(**options.recognizer_kwargs(), **extra)

    @property
    def whole_image_fallback(self) -> bool:
        return self.on_no_face == "whole"

    def __repr__(self) -> str:
        return (f"Recognizer(model={self.classifier.name!r}, detector={self.detector!r}, margin={self.margin}, "
                f"classes={len(self.classes)})")

    # -- steps ---------------------------------------------------------------------------------------------
    @property
    def needs_color(self) -> bool:
        """Whether the detector uses colour (else grey input is all the pipeline needs)."""
        return self.detector.needs_color

    def load(self, image, channel_order: str | None = None) -> np.ndarray:
        """Any accepted input -> uint8 array (grey, or BGR where the detector wants colour)."""
        import cv2


        order = channel_order or self.channel_order
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4):
            if self.needs_color:
                img = image[:, :, :3]
                return np.ascontiguousarray(img[:, :, ::-1] if order == "rgb" else img)
            code = {("bgr", 3): cv2.COLOR_BGR2GRAY, ("rgb", 3): cv2.COLOR_RGB2GRAY,
                    ("bgr", 4): cv2.COLOR_BGRA2GRAY, ("rgb", 4): cv2.COLOR_RGBA2GRAY}[(order, image.shape[2])]
            return cv2.cvtColor(image, code)
        return to_array(image, mode="bgr" if self.needs_color else "gray", channel_order=order)

    def detect(self, image: np.ndarray, search: str | None = None) -> list[Detection]:
        """Faces of ``image``.  A detector that resizes images itself (``native_sizes``: BlazeFace's photo
        search, bounded by model-input pixels) gets the image as it is; for the others, one over
        ``DETECT_MAX_PIXELS`` is searched on a shrunk copy (boxes mapped back).  ``search``: the photo search of
        this call (detectors that offer one; default: the detector's)."""
        import cv2

        det = self.detector
        if search is not None:
            search = check_search(search)
            if search in det.searches:
                return det.detect(image, search=search)
        h, w = image.shape[:2]
        if h * w <= DETECT_MAX_PIXELS or det.whole_image or det.native_sizes:
            return det.detect(image)
        f = (DETECT_MAX_PIXELS / (h * w)) ** 0.5
        small = cv2.resize(image, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
        fx, fy = w / small.shape[1], h / small.shape[0]
        return [Detection((int(d.box[0] * fx), int(d.box[1] * fy), max(1, int(d.box[2] * fx)),
                           max(1, int(d.box[3] * fy))), d.score, d.source) for d in self.detector.detect(small)]

    def crop_one(self, gray: np.ndarray, det) -> np.ndarray:
        """The classifier's crop of one face: a ``Detection`` (its face frame and, with ``align``, its eye
        keypoints are used) or a plain box."""
        return crop_detection(gray, det, self.margin, self.input_size, self.align)

    def crops(self, image: np.ndarray, boxes: Iterable) -> np.ndarray:
        """Crops of faces given as ``Detection`` objects or (x, y, w, h) boxes."""
        gray = _gray(image)
        out = [self.crop_one(gray, b) for b in boxes]
        if not out:
            return np.zeros((0, self.input_size, self.input_size), np.uint8)
        return np.stack(out)

    def classify(self, crops: np.ndarray, tta: str | None = None) -> np.ndarray:
        """(N, S, S) uint8 grey crops -> (N, C) probabilities; ``tta`` (default: the Recognizer's): with
        ``"flip"`` each crop and its mirror image go through the model in one batch and their probabilities
        are averaged (the rule of ``ferlab evaluate --tta flip``)."""
        if (self.tta if tta is None else tta) != "flip" or len(crops) == 0:
            return self.classifier.predict_proba(crops)
        p = self.classifier.predict_proba(np.concatenate([crops, crops[:, :, ::-1]]))
        return (p[:len(crops)] + p[len(crops):]) / 2

    def _faces(self, probs: np.ndarray, boxes, whole: bool, scores=None, keypoints=None) -> list[Face]:
        faces = []
        for i, (p, b) in enumerate(zip(probs, boxes)):
            k = int(np.argmax(p))
            faces.append(Face(box=tuple(int(v) for v in b), label=self.classes[k], confidence=float(p[k]),
                              probabilities={c: float(v) for c, v in zip(self.classes, p)}, whole_image=bool(whole),
                              detection_score=None if scores is None else scores[i],
                              keypoints=None if keypoints is None else keypoints[i], no_face=whole == "no_face"))
        return faces

    def is_face_crop(self, img: np.ndarray) -> bool:
        """Whether ``img`` is taken as a face crop already (no detection): ``detector="none"`` or an image
        of at most ``FACE_CROP_PX`` on both sides."""
        return self.detector.whole_image or max(img.shape[:2]) <= FACE_CROP_PX

    def _plan(self, img: np.ndarray, on_no_face: str | None = None, search: str | None = None) -> tuple:
        h, w = img.shape[:2]
        empty = np.zeros((0, self.input_size, self.input_size), np.uint8)
        if h < 1 or w < 1:
            return [], empty, False, None, None
        if not self.is_face_crop(img):
            dets = [d for d in self.detect(img, search) if d.source != "whole"]
            if dets:
                return ([d.box for d in dets], self.crops(img, dets), False, [d.score for d in dets],
                        [d.keypoints for d in dets] if any(d.keypoints for d in dets) else None)
            if (on_no_face or self.on_no_face) != "whole":
                return [], empty, False, None, None
            return [(0, 0, w, h)], whole_image_crop(img, self.input_size)[None], "no_face", None, None
        return [(0, 0, w, h)], whole_image_crop(img, self.input_size)[None], True, None, None

    # -- public API ----------------------------------------------------------------------------------------
    def predict(self, image, channel_order: str | None = None, on_no_face: str | None = None,
                search: str | None = None) -> list[Face]:
        """Faces in one image (left to right).  No face found: ``[]``, or with ``on_no_face="whole"`` (per
        call, else the Recognizer's setting) the whole image as one face.  ``search``: the photo search of
        this call ("fast" or "thorough"; else the Recognizer's)."""
        return self.predict_batch([image], channel_order=channel_order, on_no_face=on_no_face, search=search)[0]

    def predict_batch(self, images: Iterable, channel_order: str | None = None,
                      on_no_face: str | None = None, search: str | None = None) -> list[list[Face]]:
        """``predict`` for several images, with all their faces classified in one batch."""
        if on_no_face is not None:
            _check_on_no_face(on_no_face)
        if search is not None:
            search = check_search(search)
        plans = [self._guard(lambda im=im: self._plan(self.load(im, channel_order), on_no_face, search))
                 for im in images]
        crops = [p[1] for p in plans if len(p[1])]
        probs = (self._guard(lambda: self.classify(np.concatenate(crops))) if crops
                 else np.zeros((0, len(self.classes)), np.float32))
        out, i = [], 0
        for boxes, c, whole, scores, kps in plans:
            out.append(self._faces(probs[i:i + len(c)], boxes, whole, scores, kps))
            i += len(c)
        return out

    def predict_detections(self, image: np.ndarray, dets: Sequence[Detection]) -> list[Face]:
        """Classify the faces of ``dets`` (from ``detect``) in an image already ``load``-ed."""
        dets = list(dets)
        if not dets:
            return []
        probs = self._guard(lambda: self.classify(self.crops(image, dets)))
        kps = [d.keypoints for d in dets] if any(d.keypoints for d in dets) else None
        return self._faces(probs, [d.box for d in dets], False, [d.score for d in dets], kps)

    def predict_boxes(self, image, boxes: Sequence[Sequence[float]], channel_order: str | None = None) -> list[Face]:
        """Classify given face boxes (e.g. from a tracker) without running the detector."""
        img = self._guard(lambda: self.load(image, channel_order))
        boxes = list(boxes)
        if not boxes:
            return []
        return self._faces(self._guard(lambda: self.classify(self.crops(img, boxes))), boxes, False)

    @staticmethod
    def _guard(step):
        """Run one step of the pipeline; any failure inside decoding, detection, cropping or the classifier
        (OpenCV's ``cv2.error``, a failed allocation, ONNX Runtime) becomes a one-line ``FerlabError``."""
        try:
            return step()
        except FerlabError:
            raise
        except MemoryError:
            raise FerlabError("not enough memory to process this image", "too_large") from None
        except Exception as e:  # noqa: BLE001 - the boundary: no raw library exception reaches the caller
            first = (str(e).strip().splitlines() or [""])[-1][:160]
            raise FerlabError(f"cannot process this image ({type(e).__name__}: {first})", "recognition") from None

    @staticmethod
    def keypoint_columns(face: Face) -> dict:
        """The keypoint columns of a face for CSV rows (empty strings without keypoints; ``records``)."""
        return keypoint_columns(face)

    @staticmethod
    def to_table(results, names: Sequence[str] | None = None) -> list[dict]:
        """Flat rows, one per face (``pandas.DataFrame(rows)`` works): image, face, x, y, w, h, label,
        confidence, whole_image, track_id, then one probability column per class (``records.table_rows``).

        ``results``: the list of faces of one image, a list of such lists (``predict_batch``), or a
        dict {image name: faces}.  ``names`` labels the images (default: their index)."""
        return table_rows(results, names)


def _check_on_no_face(value: str) -> str:
    return check_option("on_no_face", value)
