"""BlazeFace (MediaPipe, Apache-2.0) face detection on ONNX Runtime: numpy + OpenCV decoding, no torch.

The bundled graphs (``inference/models/blazeface_{short,full}.onnx``, converted by
``scripts/convert_blazeface.py``; cards beside them, sha256 checked on load) take one RGB image letterboxed
to a square (128 px short range, 192 px full range) in [-1, 1] and return, per SSD anchor, a score logit
and 16 regressors: box centre offset, box size, and six keypoints (right eye, left eye, nose tip, mouth
centre, right and left ear tragion; "right" is the person's right, on the image's left for a frontal face).

Pipeline: letterbox (keep aspect ratio, black padding, centred) -> ONNX -> sigmoid of the clipped logits
-> anchors above ``min_score`` decoded -> weighted non-maximum suppression (MediaPipe's: every box
overlapping the best one by IoU > 0.3 is blended into it, weighted by score) -> letterbox removed -> pixel
coordinates of the input image.

Still images (``tiles=True``, the default detector's setting for photos): a 640x480 frame letterboxed to
128 px shrinks a 70 px face to 14 px, below what the model finds.  So besides the whole frame, overlapping
square tiles of 3/4 of the shorter side (at most ``MAX_TILES``) are searched too, detections touching a
tile's inner edge are dropped (a face cut by the tile is found whole elsewhere) and all are merged by the
same weighted NMS.  Live frames (``detect_live``) take the single pass: a few ms.  Measured by
``benchmarks/bench_detect_quality.py``.

Boxes: BlazeFace's own box is tight (brows to chin).  ferlab's classifiers are trained on FER2013 framing
(about a Haar box), so ``Detection.box`` is BlazeFace's box grown and shifted to that framing
(``FRAMING``, measured by ``benchmarks/blazeface_framing.py``); ``Detection.raw_box`` keeps the original.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import FerlabError
from ..io import file_digest
from .detection import Detection, Detector
from .session import cpu_session, resolve_threads

MODELS_DIR = Path(__file__).resolve().parent / "models"
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
RANGES = ("short", "full")
_LOGIT_CLIP = 100.0

#: BlazeFace box -> FER2013 framing: the square face frame has side ``scale`` x the box's longer side and
#: its centre is the box centre shifted by (dx, dy) x the box side.  Measured by
#: benchmarks/blazeface_framing.py (medians over FER2013 PublicTest faces composited into larger frames;
#: benchmarks/results/blazeface_framing.json).
FRAMING = {"short": {"scale": 1.209, "dx": 0.0, "dy": -0.094}, "full": {"scale": 1.201, "dx": 0.006, "dy": -0.042}}


@lru_cache(maxsize=8)
def _verified_sha(path: str, mtime: float, size: int) -> str:
    return file_digest(path)


def ssd_anchors(input_size: int, strides, interpolated_scale_aspect_ratio: float = 1.0,
                anchor_offset: float = 0.5) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1] (MediaPipe ssd_anchors_calculator with fixed anchor size)."""
    strides = list(strides)
    out = []
    i = 0
    while i < len(strides):
        j, repeats = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            repeats += 2 if interpolated_scale_aspect_ratio == 1.0 else 1
            j += 1
        fm = input_size // strides[i]
        c = (np.arange(fm, dtype=np.float32) + anchor_offset) / fm
        xx, yy = np.meshgrid(c, c)
        grid = np.stack([xx.ravel(), yy.ravel()], 1)
        out.append(np.repeat(grid, repeats, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, int, int]]:
    """uint8 grey / BGR / BGRA (H, W[, C]) -> (1, 3, size, size) float32 RGB in [-1, 1] and the mapping
    (scale_x, scale_y, offset_x, offset_y): input pixel = image pixel * scale + offset."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or img.size == 0:
        raise FerlabError(f"face detection needs a grey, BGR or BGRA image, got an array of shape {img.shape}")
    if img.dtype != np.uint8:
        raise FerlabError(f"face detection needs a uint8 image, got {img.dtype}")
    h, w = img.shape[:2]
    s = size / max(h, w)
    nw, nh = min(size, max(1, round(w * s))), min(size, max(1, round(h * s)))
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    if img.ndim == 2:
        rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    x = np.full((3, size, size), -1.0, np.float32)
    x[:, oy:oy + nh, ox:ox + nw] = rgb.transpose(2, 0, 1) * np.float32(1 / 127.5) - np.float32(1.0)
    return x[None], (nw / w, nh / h, ox, oy)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3,
                 max_out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS.  ``boxes`` (N, 4 + 2K): x0, y0, x1, y1, then keypoints; the best box and
    every box overlapping it by IoU > ``iou_threshold`` are blended (score-weighted mean of all
    coordinates) into one detection with the best score.  Returns (boxes, scores), best first."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    area = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    out_b, out_s = [], []
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        idx = np.flatnonzero(alive)
        b = boxes[idx]
        iw = np.minimum(b[:, 2], boxes[i, 2]) - np.maximum(b[:, 0], boxes[i, 0])
        ih = np.minimum(b[:, 3], boxes[i, 3]) - np.maximum(b[:, 1], boxes[i, 1])
        inter = np.maximum(iw, 0) * np.maximum(ih, 0)
        union = area[idx] + area[i] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        grp = idx[iou > iou_threshold]
        if len(grp) == 0:  # degenerate box: keep it alone
            grp = np.array([i])
        wts = scores[grp]
        out_b.append((boxes[grp] * wts[:, None]).sum(0) / wts.sum())
        out_s.append(scores[i])
        alive[grp] = False
        alive[i] = False
        if max_out is not None and len(out_b) >= max_out:
            break
    if not out_b:
        return np.zeros((0, boxes.shape[1]), np.float32), np.zeros(0, np.float32)
    return np.stack(out_b).astype(np.float32), np.asarray(out_s, np.float32)


def load_card(path: Path) -> dict:
    card_path = path.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise FerlabError(f"{card_path}: face-detector card missing (it must sit beside {path.name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FerlabError(f"{card_path}: face-detector card is not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise FerlabError(f"{card_path}: face-detector card is not a JSON object")
    for key in ("input_size", "anchors", "sha256"):
        if key not in card:
            raise FerlabError(f"{card_path}: face-detector card lacks {key!r}")
    return card


class BlazeFaceDetector(Detector):
    """MediaPipe BlazeFace on ONNX Runtime.

    range: ``"short"`` (128 px input; faces near the camera, fastest) or ``"full"`` (192 px; smaller and
        farther faces, photos and groups).
    min_score: detection probability threshold (default: the card's, 0.5 short / 0.6 full).
    min_size: drop faces whose box is smaller than this many pixels (default: keep all).
    threads: ONNX Runtime intra-op threads (default ``$FERLAB_THREADS`` or min(cores, 4)).
    model_path: another converted BlazeFace ``.onnx`` with its card (default: the bundled one).
    max_faces: keep at most this many faces (highest scores).
    tiles: for still images, search overlapping tiles besides the whole frame (finds smaller faces; about
        7 passes instead of 1).  ``detect_live`` never tiles.
    """

    cheap = True  # a full detection costs a few ms: trackers may detect on every frame

    def __init__(self, range: str = "full", min_score: float | None = None, nms_iou: float | None = None,
                 min_size: int | None = None, threads: int | None = None, model_path: str | os.PathLike | None = None,
                 max_faces: int | None = 200, tiles: bool = False, **_ignored):
        rng = str(range).lower()
        if rng not in RANGES:
            raise FerlabError(f"BlazeFace range must be 'short' or 'full' (got {range!r})")
        self.range = rng
        self.name = f"blazeface-{rng}"
        self.tiles = bool(tiles)
        path = Path(model_path) if model_path else MODELS_DIR / f"blazeface_{rng}.onnx"
        if not path.is_file():
            raise FerlabError(f"{path}: BlazeFace model file missing (reinstall ferlab, or re-create it with "
                              "scripts/convert_blazeface.py)")
        st = path.stat()
        if st.st_size == 0:
            raise FerlabError(f"{path}: BlazeFace model file is empty (0 bytes)")
        card = load_card(path)
        digest = _verified_sha(str(path), st.st_mtime, st.st_size)
        if digest != card["sha256"]:
            raise FerlabError(f"{path}: sha256 {digest[:12]}... does not match its card ({str(card['sha256'])[:12]}...): "
                              "the face-detector file is corrupt or was replaced")
        self.path, self.card = path, card
        self.size = int(card["input_size"])
        a = card["anchors"]
        self.anchors = ssd_anchors(self.size, a["strides"], a.get("interpolated_scale_aspect_ratio", 1.0),
                                   a.get("anchor_offset", 0.5))
        if len(self.anchors) != int(a.get("num_anchors", len(self.anchors))):
            raise FerlabError(f"{path}: card's anchor configuration gives {len(self.anchors)} anchors, "
                              f"not {a.get('num_anchors')}")
        self.min_score = float(min_score if min_score is not None else card.get("min_score", 0.5))
        if not 0 < self.min_score < 1:
            raise FerlabError(f"min_score must be in (0, 1) (got {self.min_score})")
        self._logit_min = float(np.log(self.min_score / (1 - self.min_score)))
        self.nms_iou = float(nms_iou if nms_iou is not None else card.get("nms", {}).get("iou", 0.3))
        self.min_size = int(min_size) if min_size else 0
        self.max_faces = int(max_faces) if max_faces else None
        self.framing = FRAMING.get(self.range, {"scale": 1.0, "dx": 0.0, "dy": 0.0})
        self.session = cpu_session(path, resolve_threads(threads), "BlazeFace ONNX model")
        self.input_name = self.session.get_inputs()[0].name
        outs = self.session.get_outputs()
        names = card.get("outputs", {})
        by_name = {o.name: o for o in outs}
        if names.get("boxes") in by_name and names.get("scores") in by_name:
            self._out = [names["boxes"], names["scores"]]
        else:  # the 16-wide output holds the boxes
            outs = sorted(outs, key=lambda o: -(o.shape[-1] if isinstance(o.shape[-1], int) else 0))
            self._out = [outs[0].name, outs[1].name]

    def __repr__(self) -> str:
        return f"BlazeFaceDetector(range={self.range!r}, min_score={self.min_score}, tiles={self.tiles})"

    def set_min_score(self, value: float) -> None:
        self.min_score = float(value)
        self._logit_min = float(np.log(value / (1 - value)))

    def raw(self, image: np.ndarray, tiles: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Decoded detections before framing: (N, 16) x0, y0, x1, y1 + 6 keypoints in image pixels, scores
        (best first).  ``tiles``: also search overlapping tiles (see the module notes)."""
        if not tiles:
            return self._raw_nms(image)
        h, w = image.shape[:2]
        boxes, scores = [], []
        for x0, y0, t in tile_grid(w, h):
            d, sc = self._raw_nms(image[y0:y0 + t, x0:x0 + t], nms=False)
            if x0 or y0 or t < max(w, h):
                inner = sc >= max(self.min_score, TILE_MIN_SCORE)  # tiles see more clutter: a stricter score
                # and no face cut by an inner edge of the tile (it is found whole in another tile)
                m = 0.01 * t
                if x0 > 0:
                    inner &= d[:, 0] > m
                if y0 > 0:
                    inner &= d[:, 1] > m
                if x0 + t < w:
                    inner &= d[:, 2] < t - m
                if y0 + t < h:
                    inner &= d[:, 3] < t - m
                d, sc = d[inner], sc[inner]
                d[:, 0::2] += x0
                d[:, 1::2] += y0
            boxes.append(d)
            scores.append(sc)
        return weighted_nms(np.concatenate(boxes), np.concatenate(scores), self.nms_iou, self.max_faces)

    def _raw_nms(self, image: np.ndarray, nms: bool = True) -> tuple[np.ndarray, np.ndarray]:
        x, (sx, sy, ox, oy) = letterbox(image, self.size)
        boxes, logits = self.session.run(self._out, {self.input_name: x})
        boxes = boxes.reshape(-1, 16)
        logits = logits.reshape(-1)
        keep = np.flatnonzero(logits > self._logit_min)
        if len(keep) == 0:
            return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -_LOGIT_CLIP, _LOGIT_CLIP)))
        r = boxes[keep].reshape(len(keep), 8, 2)  # in input pixels, relative to the anchor centre
        anc = self.anchors[keep] * self.size
        cx, cy = r[:, 0, 0] + anc[:, 0], r[:, 0, 1] + anc[:, 1]
        bw, bh = r[:, 1, 0], r[:, 1, 1]
        dec = np.empty((len(keep), 16), np.float32)
        dec[:, 0], dec[:, 1], dec[:, 2], dec[:, 3] = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        dec[:, 4:] = (r[:, 2:] + anc[:, None]).reshape(len(keep), 12)
        ok = (bw > 0) & (bh > 0)
        dec, scores = dec[ok], scores[ok]
        dec, scores = weighted_nms(dec, scores, self.nms_iou, self.max_faces if nms else None)
        dec[:, 0::2] = (dec[:, 0::2] - ox) / sx  # letterbox removed: input pixels -> image pixels
        dec[:, 1::2] = (dec[:, 1::2] - oy) / sy
        return dec, scores

    def framed(self, dec: np.ndarray) -> np.ndarray:
        """Raw detections (N, 16) -> (N, 20): the FER face frame (x0, y0, x1, y1 of a square, ``FRAMING``),
        the 6 keypoints, then the raw box.  Frames of both ranges can be merged by ``weighted_nms``."""
        f = self.framing
        out = np.empty((len(dec), 20), np.float32)
        side = np.maximum(dec[:, 2] - dec[:, 0], dec[:, 3] - dec[:, 1])
        cx = (dec[:, 0] + dec[:, 2]) / 2 + f["dx"] * side
        cy = (dec[:, 1] + dec[:, 3]) / 2 + f["dy"] * side
        fs = side * f["scale"]
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - fs / 2, cy - fs / 2, cx + fs / 2, cy + fs / 2
        out[:, 4:16] = dec[:, 4:16]
        out[:, 16:20] = dec[:, :4]
        return out

    def to_detections(self, dec: np.ndarray, scores: np.ndarray, shape: tuple[int, ...]) -> list[Detection]:
        return detections_from_framed(self.framed(dec), scores, shape, self.min_size)

    def detect(self, image: np.ndarray, tiles: bool | None = None) -> list[Detection]:
        """Faces of a still image (with ``tiles`` when the detector was made so)."""
        img = np.asarray(image)
        if img.ndim < 2 or img.shape[0] < 1 or img.shape[1] < 1:
            return []
        dec, scores = self.raw(img, self.tiles if tiles is None else tiles)
        return self.to_detections(dec, scores, img.shape)

    def _detect(self, image: np.ndarray, scale: float = 1.0) -> list[Detection]:
        return self.detect(image)

    def detect_live(self, image: np.ndarray) -> list[Detection]:
        """Faces of a video frame: one pass, no tiles."""
        return self.detect(image, tiles=False)


    def detect_near(self, image: np.ndarray, box, expand: float = 0.5) -> list[Detection]:
        # a full pass costs a few ms: cheaper and steadier than a search window
        return self.detect_live(image)


def detections_from_framed(arr: np.ndarray, scores: np.ndarray, shape: tuple[int, ...],
                           min_size: float = 0) -> list[Detection]:
    """``framed`` rows -> ``Detection`` objects, left to right.  The face frame may reach past the image
    border (a face cut by the border): ``box`` is clipped to the image, ``frame`` keeps it whole (the crop
    repeats the border pixels for the part outside)."""
    H, W = shape[:2]
    out = []
    for d, sc in zip(arr, scores):
        fx0, fy0, fx1, fy1 = (float(v) for v in d[:4])
        rx0, ry0, rx1, ry1 = (float(v) for v in d[16:20])
        if max(rx1 - rx0, ry1 - ry0) < min_size:
            continue
        fs = max(fx1 - fx0, fy1 - fy0)
        cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
        bx0, by0 = max(0, int(round(fx0))), max(0, int(round(fy0)))
        bx1, by1 = min(W, int(round(fx1))), min(H, int(round(fy1)))
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            continue
        kps = tuple((round(float(d[4 + 2 * k]), 1), round(float(d[5 + 2 * k]), 1)) for k in range(6))
        out.append(Detection((bx0, by0, bx1 - bx0, by1 - by0), round(float(sc), 4), "blazeface", kps,
                             (round(rx0, 1), round(ry0, 1), round(rx1 - rx0, 1), round(ry1 - ry0, 1)),
                             (round(cx, 1), round(cy, 1), round(fs, 1))))
    return sorted(out, key=lambda d: (d.box[0], d.box[1]))


class BlazeFaceAuto(Detector):
    """The default detector (``"blazeface"``).  Still images: both models on the whole frame and its tiles,
    merged by weighted NMS (the short-range model finds more of the mid-sized faces, the full-range one the
    many small faces of a group photo); about 14 passes, tens of ms.  Live frames (``detect_live``): one
    short-range pass, a few ms."""

    cheap = True
    name = "blazeface"

    def __init__(self, min_score: float | None = None, nms_iou: float | None = None, min_size: int | None = None,
                 threads: int | None = None, max_faces: int | None = 200, **_ignored):
        opts = {"min_score": min_score, "nms_iou": nms_iou, "min_size": min_size, "threads": threads,
                "max_faces": max_faces}
        self.short = BlazeFaceDetector("short", tiles=True, **opts)
        self.full = BlazeFaceDetector("full", tiles=True, **opts)
        self.min_score, self.min_size, self.max_faces = self.short.min_score, self.short.min_size, max_faces
        self.nms_iou, self.tiles, self.range = self.short.nms_iou, True, "auto"
        self.card = self.short.card

    def __repr__(self) -> str:
        return f"BlazeFaceAuto(min_score={self.min_score})"

    def set_min_score(self, value: float) -> None:
        for d in (self.short, self.full):
            d.min_score = float(value)
            d._logit_min = float(np.log(value / (1 - value)))
        self.min_score = float(value)

    def detect(self, image: np.ndarray) -> list[Detection]:
        img = np.asarray(image)
        if img.ndim < 2 or img.shape[0] < 1 or img.shape[1] < 1:
            return []
        a, sa = self.short.raw(img, tiles=True)
        b, sb = self.full.raw(img, tiles=True)
        arr, sc = weighted_nms(np.concatenate([self.short.framed(a), self.full.framed(b)]),
                               np.concatenate([sa, sb]), self.nms_iou, self.max_faces)
        return detections_from_framed(arr, sc, img.shape, self.min_size)

    def _detect(self, image: np.ndarray, scale: float = 1.0) -> list[Detection]:
        return self.detect(image)

    def detect_live(self, image: np.ndarray) -> list[Detection]:
        return self.short.detect_live(image)

    def detect_near(self, image: np.ndarray, box, expand: float = 0.5) -> list[Detection]:
        return self.short.detect_live(image)


#: the score a face found only in a tile needs (the whole-frame pass keeps ``min_score``); on the synthetic
#: set (bench_detect_quality.py) 0.6 instead of 0.5 keeps 97% of the recall for 40% of the false positives
TILE_MIN_SCORE = 0.6
#: most tiles searched besides the whole frame (``tile_grid``)
MAX_TILES = 8
MIN_TILE = 160


def tile_grid(w: int, h: int) -> list[tuple[int, int, int]]:
    """(x0, y0, side) of the whole frame (side = max(w, h), origin 0) and of overlapping square tiles of
    side 3/4 of the shorter side (larger when more than ``MAX_TILES`` would be needed), half overlapping.
    Frames whose shorter side is under ``MIN_TILE`` pixels get no tiles."""
    out = [(0, 0, max(w, h))]
    if min(w, h) < MIN_TILE:
        return out
    t = int(0.75 * min(w, h))
    while True:
        nx = 1 + int(np.ceil(max(0, w - t) / (0.5 * t)))
        ny = 1 + int(np.ceil(max(0, h - t) / (0.5 * t)))
        if nx * ny <= MAX_TILES:
            break
        t = int(t * 1.25)
    xs = np.linspace(0, max(0, w - t), nx).round().astype(int)
    ys = np.linspace(0, max(0, h - t), ny).round().astype(int)
    out += [(int(x), int(y), min(t, w, h)) for y in ys for x in xs]
    return out
