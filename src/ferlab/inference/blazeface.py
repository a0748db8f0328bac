"""BlazeFace (MediaPipe, Apache-2.0) face detection on ONNX Runtime: numpy + OpenCV decoding, no torch.

The bundled graphs (``inference/models/blazeface_{short,full}.onnx``, converted by
``scripts/convert_blazeface.py``; cards beside them, sha256 checked on load) take RGB images in [-1, 1],
natively letterboxed to a square (128 px short range, 192 px full range; any batch, and any height and width
that are multiples of the card's ``stride_multiple``), and return, per SSD anchor, a score logit
and 16 regressors: box centre offset, box size, and six keypoints (right eye, left eye, nose tip, mouth
centre, right and left ear tragion; "right" is the person's right, on the image's left for a frontal face).

Pipeline: letterbox (keep aspect ratio, black padding, centred) -> ONNX -> sigmoid of the clipped logits
-> anchors above ``min_score`` decoded -> weighted non-maximum suppression (MediaPipe's: every box
overlapping the best one by IoU > 0.3 is blended into it, weighted by score) -> letterbox removed -> pixel
coordinates of the input image.

Still images (the photo search, ``search_plan``): BlazeFace finds faces in a band of sizes relative to its
input (the full-range model: sides of about 16-128 input px, measured by ``benchmarks/bench_photos.py``), so a
photo is searched as an image pyramid: the finest level scales the photo so that the smallest face sought
(``SearchSpec.min_face``) is ``FACE_IN_MIN`` px, each coarser level is ``LEVEL_STEP`` times smaller, and the
coarsest passes are the whole photo letterboxed into each model's native square (faces that fill the photo).
The bundled graphs take any input size that is a multiple of their deepest stride and any batch
(``scripts/convert_blazeface.py``, ``dynamic_shapes``), so a level is one pass over the whole scaled photo: it
finds what overlapping tiles would, without their overlap or their cut faces.  The work is bounded by pixels,
not by the photo's resolution: the finest level holds at most ``SearchSpec.max_pixels`` (a larger photo gets a
coarser finest level: its smallest findable face grows), and the levels below it a further 1/8 of that.
Detections of every pass whose keypoints do not make a face (``plausible``) are dropped before all are merged
by the same weighted NMS; a box that holds a smaller face of a higher score is then dropped (``contained``: a
head-and-shoulders or torso box around a face found at a finer level).  Live frames (``detect_live``) take
the single pass: a few ms; ``inference.live`` tracks faces between full searches.

Boxes: BlazeFace's own box is tight (brows to chin).  ferlab's classifiers are trained on FER2013 framing
(about a Haar box), so ``Detection.box`` is BlazeFace's box grown and shifted to that framing
(``FRAMING``, measured by ``benchmarks/blazeface_framing.py``); ``Detection.raw_box`` keeps the original.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import FerlabError
from ..io import file_digest
from .detection import Detection, Detector
from .options import check_option
from .session import cpu_session, resolve_threads

MODELS_DIR = Path(__file__).resolve().parent / "models"
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
RANGES = ("short", "full")
#: each bundled model's native square input (its card's ``input_size``; the pyramid plans with it)
NATIVE_SIZE = {"short": 128, "full": 192}
_LOGIT_CLIP = 100.0
#: the pyramid's model, the smallest face side (input px, FER framing) it finds reliably, and the ratio between
#: levels (each face is then seen at >= 1 level inside the model's band of ~16-128 px).  Measured on the scenes
#: of bench_photos.py (balanced search, 15 photos of 0.3-24 MP): the full-range pyramid found every head of
#: 40-192 px but one with 0.4 false positives a photo; the short-range one, cheaper per pixel, 6.5 false
#: positives a photo.  20 rather than 16: heads cut tight (tests/helpers_models.frame_of_faces) need ~20.
FACE_IN_MIN = 20
LEVEL_STEP = 3.0
PYRAMID_RANGE = "full"
#: ``plausible``: eye distance / box side, mouth drop / eye distance, |cos| eye line vs eyes-mouth, nose off
#: the eyes-mouth axis / eye distance; ``contained``: share of a smaller face inside a larger box
EYES_APART = (0.2, 0.65)
MOUTH_DROP = (0.6, 2.0)
MAX_SKEW = 0.5
MAX_NOSE_OFF = 0.4
CONTAIN = 0.8
#: the score a merged face of a search (photo or live) needs: the passes keep boxes from ``min_score`` (0.5) so
#: that weak boxes of one face still blend into its strong one, but a face alone below this is dropped.  On
#: bench_photos.py-style scenes (24 photos of 0.3-6 MP and 12 face-free webcam backgrounds): 0.11 false
#: positives a photo at 0.5 and 0.55, none from 0.6, and every head of 48 px or more still found
SEARCH_MIN_SCORE = 0.6
#: the thorough search's rotations stop at a face this sure (upright faces score 0.85-0.97 in bench_photos.py's
#: scenes; a face turned 90 degrees draws boxes of 0.5-0.7)
UPRIGHT_SCORE = 0.8


@dataclass(frozen=True)
class SearchSpec:
    """One photo search: the smallest face sought (px of the photo), the bound on the finest level's input
    pixels, and the rotations tried (in turn, while none found a face: a photo turned 90 degrees with no EXIF
    tag)."""

    min_face: int
    max_pixels: int
    rotations: tuple[int, ...] = (0,)
    #: the finest level's longest side at most this (``--max-side``: less work, larger smallest face)
    max_side: int | None = None


#: the photo searches (``--search``): measured by benchmarks/bench_photos.py (benchmarks/results/photos.json)
SEARCHES = {
    "fast": SearchSpec(min_face=64, max_pixels=600_000),
    "balanced": SearchSpec(min_face=40, max_pixels=2_000_000),
    "thorough": SearchSpec(min_face=24, max_pixels=4_000_000, rotations=(0, 90, 270, 180)),
}
SEARCH_MODES = tuple(SEARCHES)
DEFAULT_SEARCH = "balanced"
#: the live path's full-frame search (``inference.live``): faces from 48 px in a 640x480 frame, a few ms
LIVE_SEARCH = SearchSpec(min_face=48, max_pixels=200_000)
#: the live path's window around a known face (its face frame's side times this), seen at the short-range
#: model's 128 px: the face is then ~51 px there, and may move 0.7 of its side between two frames
WINDOW = 2.5


@dataclass(frozen=True)
class Pass:
    """One pass of a photo search: which model, and the scale of the photo (None: the whole photo letterboxed
    into the model's native square)."""

    range: str
    scale: float | None


def search_plan(w: int, h: int, search: str | SearchSpec = DEFAULT_SEARCH,
                ranges: tuple[str, ...] = RANGES) -> list[Pass]:
    """The passes of the photo search ``search`` for a ``w`` x ``h`` photo, finest first (see the module
    notes).  ``ranges``: the models at hand (a one-model detector searches with its own only)."""
    spec = _spec(search)
    pyramid = PYRAMID_RANGE if PYRAMID_RANGE in ranges else ranges[0]
    s = min(FACE_IN_MIN / spec.min_face, (spec.max_pixels / max(1, w * h)) ** 0.5)
    if spec.max_side:
        s = min(s, spec.max_side / max(w, h))
    coarsest = NATIVE_SIZE[pyramid] / max(w, h)
    passes = []
    while s > 1.2 * coarsest:
        passes.append(Pass(pyramid, s))
        s /= LEVEL_STEP
    return passes + [Pass(r, None) for r in ("full", "short") if r in ranges]


#: BlazeFace box -> FER2013 framing: the square face frame has side ``scale`` x the box's longer side and
#: its centre is the box centre shifted by (dx, dy) x the box side.  Measured by
#: benchmarks/blazeface_framing.py (medians over FER2013 PublicTest faces composited into larger frames;
#: benchmarks/results/blazeface_framing.json).
FRAMING = {"short": {"scale": 1.209, "dx": 0.0, "dy": -0.094}, "full": {"scale": 1.201, "dx": 0.006, "dy": -0.042}}


@lru_cache(maxsize=8)
def _verified_sha(path: str, mtime: float, size: int) -> str:
    return file_digest(path)


def grid_anchors(height: int, width: int, strides, interpolated_scale_aspect_ratio: float = 1.0,
                 anchor_offset: float = 0.5) -> np.ndarray:
    """Anchor centres (N, 2) in input pixels of a ``height`` x ``width`` input, in the order of the graph's
    outputs (MediaPipe ssd_anchors_calculator with fixed anchor size: per stride, rows of cells, each cell
    repeated once per anchor)."""
    strides = list(strides)
    out = []
    i = 0
    while i < len(strides):
        j, repeats = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            repeats += 2 if interpolated_scale_aspect_ratio == 1.0 else 1
            j += 1
        st = strides[i]
        xx, yy = np.meshgrid((np.arange(width // st, dtype=np.float32) + anchor_offset) * st,
                             (np.arange(height // st, dtype=np.float32) + anchor_offset) * st)
        out.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), repeats, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def ssd_anchors(input_size: int, strides, interpolated_scale_aspect_ratio: float = 1.0,
                anchor_offset: float = 0.5) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1] of the native square input (MediaPipe's normalised anchors)."""
    return grid_anchors(input_size, input_size, strides, interpolated_scale_aspect_ratio,
                        anchor_offset) / np.float32(input_size)


def _check_image(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or img.size == 0:
        raise FerlabError(f"face detection needs a grey, BGR or BGRA image, got an array of shape {img.shape}")
    if img.dtype != np.uint8:
        raise FerlabError(f"face detection needs a uint8 image, got {img.dtype}")
    return img


def _shrunk(img: np.ndarray, nw: int, nh: int) -> tuple[np.ndarray, float, float]:
    """``img`` resized to ``nw`` x ``nh`` and the scales (x, y) from ``img``'s pixels to the result's.  Shrinking
    is by the largest whole factor first (INTER_AREA at a whole factor is OpenCV's fast path; the at most
    factor - 1 pixels of the right and bottom edges that do not fill a block are dropped), then bilinear by
    less than 2: a 640x480 frame is ready in a tenth of the time INTER_AREA at 0.44 takes, without aliasing."""
    import cv2

    h, w = img.shape[:2]
    if (nw, nh) == (w, h):
        return img, 1.0, 1.0
    k = min(w // nw, h // nh)
    if k >= 2:
        w, h = w // k * k, h // k * k
        img = cv2.resize(img[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)
    if img.shape[1] != nw or img.shape[0] != nh:
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return img, nw / w, nh / h


def _to_input(img: np.ndarray, height: int, width: int, ox: int, oy: int) -> np.ndarray:
    """The uint8 image ``img`` (grey, BGR or BGRA) placed at (ox, oy) on a black ``height`` x ``width`` canvas:
    (1, 3, height, width) float32 RGB in [-1, 1].  (numpy, not ``cv2.dnn.blobFromImage``: OpenCV's worker
    threads then compete with ONNX Runtime's and the live path took twice as long on 2 cores.)"""
    import cv2

    nh, nw = img.shape[:2]
    if img.ndim == 2:
        rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    x = np.full((1, 3, height, width), -1.0, np.float32)
    x[0, :, oy:oy + nh, ox:ox + nw] = rgb.transpose(2, 0, 1) * np.float32(1 / 127.5) - np.float32(1.0)
    return x


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, int, int]]:
    """uint8 grey / BGR / BGRA (H, W[, C]) -> (1, 3, size, size) float32 RGB in [-1, 1] and the mapping
    (scale_x, scale_y, offset_x, offset_y): input pixel = image pixel * scale + offset."""
    img = _check_image(np.asarray(image))
    h, w = img.shape[:2]
    s = size / max(h, w)
    nw, nh = min(size, max(1, round(w * s))), min(size, max(1, round(h * s)))
    ox, oy = (size - nw) // 2, (size - nh) // 2
    small, sx, sy = _shrunk(img, nw, nh)
    return _to_input(small, size, size, ox, oy), (sx, sy, ox, oy)


def enlarged(image: np.ndarray, scale: float, multiple: int) -> tuple[np.ndarray, tuple[float, float, int, int]]:
    """The whole image resized by ``scale`` onto a canvas whose sides are the next multiples of ``multiple``
    (black right and bottom margins), for the any-size graphs: (1, 3, H, W) float32 and the mapping as
    ``letterbox`` gives it."""
    img = _check_image(np.asarray(image))
    h, w = img.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    cw, ch = -(-nw // multiple) * multiple, -(-nh // multiple) * multiple
    small, sx, sy = _shrunk(img, nw, nh)
    return _to_input(small, ch, cw, 0, 0), (sx, sy, 0, 0)


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


def plausible(dec: np.ndarray) -> np.ndarray:
    """Which raw detections (N, 16) have keypoints that make a face: eyes, nose and mouth inside the box (grown
    by a tenth), eyes apart by ``EYES_APART`` of the box side, the mouth below the eyes' midpoint by
    ``MOUTH_DROP`` of the eye distance, roughly square to the eye line, and the nose near the eyes-mouth
    axis.  Rotation-free (tilted and sideways faces pass); measured on bench_photos.py's scenes, where it
    drops the head-and-shoulders and torso boxes a coarse pass draws."""
    if len(dec) == 0:
        return np.zeros(0, bool)
    x0, y0, x1, y1 = dec[:, 0], dec[:, 1], dec[:, 2], dec[:, 3]
    side = np.maximum(np.maximum(x1 - x0, y1 - y0), 1e-6)
    kp = dec[:, 4:12].reshape(-1, 4, 2)  # right eye, left eye, nose tip, mouth centre
    pad = side[:, None] * 0.1
    inside = ((kp[:, :, 0] >= (x0[:, None] - pad)) & (kp[:, :, 0] <= (x1[:, None] + pad)) &
              (kp[:, :, 1] >= (y0[:, None] - pad)) & (kp[:, :, 1] <= (y1[:, None] + pad))).all(1)
    eye = kp[:, 1] - kp[:, 0]
    d_eye = np.maximum(np.hypot(eye[:, 0], eye[:, 1]), 1e-6)
    mid = (kp[:, 0] + kp[:, 1]) / 2
    down = kp[:, 3] - mid
    d_mouth = np.maximum(np.hypot(down[:, 0], down[:, 1]), 1e-6)
    square = np.abs((eye * down).sum(1)) / (d_eye * d_mouth)  # |cos| of the angle eye line / eyes-mouth
    nose = kp[:, 2] - mid
    off_axis = np.abs(nose[:, 0] * down[:, 1] - nose[:, 1] * down[:, 0]) / d_mouth
    apart = d_eye / side
    drop = d_mouth / d_eye
    return (inside & (apart >= EYES_APART[0]) & (apart <= EYES_APART[1]) & (drop >= MOUTH_DROP[0])
            & (drop <= MOUTH_DROP[1]) & (square <= MAX_SKEW) & (off_axis <= MAX_NOSE_OFF * d_eye))


def contained(framed: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Which merged detections to keep: a box that holds most of a smaller face (``CONTAIN`` of its area)
    whose score is at least its own is dropped (a torso or head-and-shoulders box around a face)."""
    x0, y0, x1, y1 = (framed[:, k] for k in range(4))
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])  # [i, j]: box i with face j
    ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, -1.0)
    holds = (area[None] < area[:, None] * 0.5) & (scores[None] >= scores[:, None]) & (inter >= CONTAIN * area[None])
    return ~holds.any(1)


def merge(found: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...], det) -> list[Detection]:
    """Framed detections of a search's passes [(framed (N, 20), scores)] -> faces: weighted NMS, then the boxes
    that hold a smaller face of a higher score dropped (``contained``) and those under ``SEARCH_MIN_SCORE``.
    ``det`` gives the NMS overlap, the face cap, ``min_score`` and ``min_size``."""
    found = [f for f in found if len(f[1])]
    if not found:
        return []
    arr, sc = weighted_nms(np.concatenate([a for a, _ in found]), np.concatenate([s for _, s in found]),
                           det.nms_iou, det.max_faces)
    keep = contained(arr, sc) & (sc >= max(det.min_score, SEARCH_MIN_SCORE))
    return detections_from_framed(arr[keep], sc[keep], shape, det.min_size)


def _rotate_back(dec: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """Raw detections found in ``np.rot90(img, k)`` -> ``img``'s pixels (``img`` is w x h)."""
    out = dec.copy()
    x, y = dec[:, 0::2], dec[:, 1::2]
    if k == 1:    # rotated[r, c] = img[c, w - 1 - r]
        out[:, 0::2], out[:, 1::2] = w - y, x
    elif k == 2:
        out[:, 0::2], out[:, 1::2] = w - x, h - y
    elif k == 3:  # rotated[r, c] = img[h - 1 - c, r]
        out[:, 0::2], out[:, 1::2] = y, h - x
    out[:, [0, 2]] = np.sort(out[:, [0, 2]], axis=1)
    out[:, [1, 3]] = np.sort(out[:, [1, 3]], axis=1)
    return out


def _spec(search: str | SearchSpec, max_side: int | None = None) -> SearchSpec:
    spec = search if isinstance(search, SearchSpec) else SEARCHES[check_search(search)]
    return replace(spec, max_side=max_side) if max_side else spec


def run_search(models: dict, img: np.ndarray, search: str | SearchSpec) -> list[tuple]:
    """The passes of ``search_plan`` over ``img`` with ``models`` ({range: BlazeFaceDetector}): a list of
    (model, raw detections, scores) in ``img``'s pixels.  Each level is cut from the one before it (cheaper
    than from the photo).  Rotations (``SearchSpec.rotations``) are tried in turn until one finds a face of
    score ``UPRIGHT_SCORE``; the rotation with the best face wins (a face turned sideways still draws weak,
    misplaced boxes upright, so "any face found" is not the test)."""
    spec = _spec(search)
    h, w = img.shape[:2]
    best: list[tuple] | None = None
    for deg in spec.rotations:
        k = {0: 0, 90: 3, 180: 2, 270: 1}[deg]  # a photo turned 90 degrees clockwise is turned back by k=3
        src = np.ascontiguousarray(np.rot90(img, k)) if k else img
        rh, rw = src.shape[:2]
        out, level, level_s = [], src, 1.0
        for p in search_plan(rw, rh, spec, tuple(models)):
            m = models[p.range]
            scale = m.size / max(rw, rh) if p.scale is None else p.scale
            if scale < level_s / 2:  # cut each level from the one before, kept at >= twice its size
                level, _, _ = _shrunk(src, max(1, round(rw * scale * 2)), max(1, round(rh * scale * 2)))
                level_s = scale * 2
            dec, sc = m.run_pass(level, None if p.scale is None else p.scale / level_s)
            dec[:, 0::2] *= rw / level.shape[1]
            dec[:, 1::2] *= rh / level.shape[0]
            if k:
                dec = _rotate_back(dec, k, w, h)
            out.append((m, dec, sc))
        if best is None or _best_score(out) > _best_score(best):
            best = out
        if _best_score(best) >= UPRIGHT_SCORE:  # a sure face: the photo is this way up
            break
    return best


def _best_score(found: list[tuple]) -> float:
    return max((float(sc.max()) for _, _, sc in found if len(sc)), default=0.0)


class BlazeFaceDetector(Detector):
    """MediaPipe BlazeFace on ONNX Runtime.

    range: ``"short"`` (128 px input; faces near the camera, fastest) or ``"full"`` (192 px; smaller and
        farther faces, photos and groups).
    min_score: detection probability threshold (default: the card's, 0.5 short / 0.6 full).
    min_size: drop faces whose box is smaller than this many pixels (default: keep all).
    threads: ONNX Runtime intra-op threads (default ``$FERLAB_THREADS`` or min(cores, 4)).
    model_path: another converted BlazeFace ``.onnx`` with its card (default: the bundled one).
    max_faces: keep at most this many faces (highest scores).
    search: for still images, the photo search: the whole frame, then the whole frame enlarged (finds
        smaller faces; about 3.5 passes' worth instead of 1).  ``detect_live`` never searches.
    """

    cheap = True  # a full detection costs a few ms: trackers may detect on every frame
    needs_color = True

    def __init__(self, range: str = "full", min_score: float | None = None, nms_iou: float | None = None,
                 min_size: int | None = None, threads: int | None = None, model_path: str | os.PathLike | None = None,
                 max_faces: int | None = 200, search: bool = False, **_ignored):
        rng = str(range).lower()
        if rng not in RANGES:
            raise FerlabError(f"BlazeFace range must be 'short' or 'full' (got {range!r})")
        self.range = rng
        self.name = f"blazeface-{rng}"
        self.search = bool(search)
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
        self.native_sizes = (self.size,)
        self.searches = SEARCH_MODES if self.search else ()
        a = card["anchors"]
        self.anchors = grid_anchors(self.size, self.size, a["strides"], a.get("interpolated_scale_aspect_ratio", 1.0),
                                    a.get("anchor_offset", 0.5))  # input pixels
        self._grid: dict = {}  # anchors of other input sizes (the any-size graphs)
        #: input sides must be multiples of this for other sizes than the native square (0: a fixed graph)
        self.multiple = int(card.get("stride_multiple") or 0)
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
        # it always takes turns with a classifier: no busy-waiting threads (session.cpu_session)
        self.session = cpu_session(path, resolve_threads(threads), "BlazeFace ONNX model", spin=False)
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
        return f"BlazeFaceDetector(range={self.range!r}, min_score={self.min_score}, search={self.search})"

    def set_min_score(self, value: float) -> None:
        self.min_score = float(value)
        self._logit_min = float(np.log(value / (1 - value)))

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decoded detections of one letterboxed pass, before framing: (N, 16) x0, y0, x1, y1 + 6 keypoints in
        image pixels, scores (best first)."""
        return self._run(*letterbox(_check_image(np.asarray(image)), self.size))

    def run_pass(self, img: np.ndarray, scale: float | None) -> tuple[np.ndarray, np.ndarray]:
        """One pass of a photo search (``Pass``): raw detections (no NMS) in ``img``'s pixels, those whose
        keypoints make no face dropped."""
        x, mapping = letterbox(img, self.size) if scale is None else enlarged(img, scale, self.multiple)
        dec, sc = self._run(x, mapping, nms=False)
        ok = plausible(dec)
        return dec[ok], sc[ok]

    def _anchors(self, height: int, width: int) -> np.ndarray:
        if (height, width) == (self.size, self.size):
            return self.anchors
        key = (height, width)
        if key not in self._grid:
            a = self.card["anchors"]
            if len(self._grid) > 16:
                self._grid.clear()
            self._grid[key] = grid_anchors(height, width, a["strides"], a.get("interpolated_scale_aspect_ratio", 1.0),
                                           a.get("anchor_offset", 0.5))
        return self._grid[key]

    def _run(self, x: np.ndarray, mapping: tuple[float, float, float, float],
             nms: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the graph on a prepared input (``letterbox`` / ``enlarged``), decoded and mapped back to
        image pixels."""
        return self._run_batch(x, [mapping], nms)[0]

    def _run_batch(self, x: np.ndarray, mappings: list, nms: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """The graph on a batch of prepared inputs (N, 3, H, W), each decoded and mapped back to its image's
        pixels by its mapping (scale_x, scale_y, offset_x, offset_y: input pixel = image pixel * scale + offset)."""
        boxes, logits = self.session.run(self._out, {self.input_name: x})
        boxes = boxes.reshape(len(x), -1, 16)
        logits = logits.reshape(len(x), -1)
        anchors = self._anchors(x.shape[2], x.shape[3])
        return [self._decode(b, lg, anchors, m, nms) for b, lg, m in zip(boxes, logits, mappings)]

    def _decode(self, boxes, logits, anchors, mapping, nms: bool) -> tuple[np.ndarray, np.ndarray]:
        sx, sy, ox, oy = mapping
        keep = np.flatnonzero(logits > self._logit_min)
        if len(keep) == 0:
            return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -_LOGIT_CLIP, _LOGIT_CLIP)))
        r = boxes[keep].reshape(len(keep), 8, 2)  # in input pixels, relative to the anchor centre
        anc = anchors[keep]
        cx, cy = r[:, 0, 0] + anc[:, 0], r[:, 0, 1] + anc[:, 1]
        bw, bh = r[:, 1, 0], r[:, 1, 1]
        dec = np.empty((len(keep), 16), np.float32)
        dec[:, 0], dec[:, 1], dec[:, 2], dec[:, 3] = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        dec[:, 4:] = (r[:, 2:] + anc[:, None]).reshape(len(keep), 12)
        ok = (bw > 0) & (bh > 0)
        dec, scores = dec[ok], scores[ok]
        if nms:
            dec, scores = weighted_nms(dec, scores, self.nms_iou, self.max_faces)
        dec[:, 0::2] = (dec[:, 0::2] - ox) / sx  # input pixels -> image pixels
        dec[:, 1::2] = (dec[:, 1::2] - oy) / sy
        return dec, scores

    def run_windows(self, img: np.ndarray, frames) -> tuple[np.ndarray, np.ndarray]:
        """Raw detections (plausible ones, no NMS) in square windows of ``WINDOW`` x side around face frames
        ``frames`` [(cx, cy, side)], each seen at the model's native size, all in one batch: the live path's
        tracking step (``inference.live``)."""
        import cv2

        img = _check_image(np.asarray(img))
        n = self.size
        x = np.empty((len(frames), 3, n, n), np.float32)
        maps = []
        for i, (cx, cy, side) in enumerate(frames):
            k = n / max(WINDOW * side, 1.0)
            ox, oy = -k * (cx - WINDOW * side / 2), -k * (cy - WINDOW * side / 2)
            m = np.array([[k, 0, ox], [0, k, oy]], np.float32)
            win = cv2.warpAffine(img, m, (n, n), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            x[i] = _to_input(win, n, n, 0, 0)[0]
            maps.append((k, k, ox, oy))
        if not len(frames):
            return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
        found = self._run_batch(x, maps)
        dec, sc = np.concatenate([d for d, _ in found]), np.concatenate([s for _, s in found])
        ok = plausible(dec)
        return dec[ok], sc[ok]

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

    def detect(self, image: np.ndarray, search: bool | str | None = None) -> list[Detection]:
        """Faces of a still image: the photo search with this model alone when the detector was made so (or
        ``search`` names one), else one letterboxed pass."""
        img = np.asarray(image)
        if img.ndim < 2 or img.shape[0] < 1 or img.shape[1] < 1:
            return []
        search = self.search if search is None else search
        if not search:
            dec, scores = self.raw(img)
            return self.to_detections(dec, scores, img.shape)
        found = run_search({self.range: self}, _check_image(img), DEFAULT_SEARCH if search is True else search)
        return merge([(self.framed(a), sc) for _, a, sc in found], img.shape, self)

    def _detect(self, image: np.ndarray, scale: float = 1.0) -> list[Detection]:
        return self.detect(image)

    def detect_live(self, image: np.ndarray) -> list[Detection]:
        """Faces of a video frame: one pass."""
        return self.detect(image, search=False)


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


def check_search(value) -> str:
    """A photo search's name, checked by the options table's row (``options.FIELD["search"]``)."""
    return check_option("search", "" if value is None else value)


class BlazeFaceAuto(Detector):
    """The default detector (``"blazeface"``).  Still images: the photo search (``search``, ``SEARCHES``: an
    image pyramid of the full-range model and the whole image in each model's square, merged by weighted NMS).
    Live frames: ``inference.live.LiveFaces`` over ``live_search`` (every few frames) and ``live_windows``
    (every frame, around each known face); ``detect_live`` alone is one short-range pass."""

    cheap = True
    needs_color = True
    searches = SEARCH_MODES
    native_sizes = tuple(NATIVE_SIZE.values())
    tracks_in_windows = True
    name = "blazeface"

    def __init__(self, min_score: float | None = None, nms_iou: float | None = None, min_size: int | None = None,
                 threads: int | None = None, max_faces: int | None = 200, search: str | None = None,
                 max_side: int | None = None, **_ignored):
        opts = {"min_score": min_score, "nms_iou": nms_iou, "min_size": min_size, "threads": threads,
                "max_faces": max_faces}
        self.max_side = int(max_side) if max_side else None  # bounds the finest pyramid level (SearchSpec)
        self.search = check_search(DEFAULT_SEARCH if search is None else search)
        self.short = BlazeFaceDetector("short", search=True, **opts)
        self.full = BlazeFaceDetector("full", search=True, **opts)
        self.min_score, self.min_size, self.max_faces = self.short.min_score, self.short.min_size, max_faces
        self.nms_iou, self.range = self.short.nms_iou, "auto"
        self.card = self.short.card

    def __repr__(self) -> str:
        return f"BlazeFaceAuto(min_score={self.min_score}, search={self.search!r})"

    def set_min_score(self, value: float) -> None:
        for d in (self.short, self.full):
            d.set_min_score(value)
        self.min_score = float(value)

    def detect(self, image: np.ndarray, search: str | None = None) -> list[Detection]:
        """Faces of a still image; ``search``: this call's photo search (default: the detector's)."""
        mode = self.search if search is None else check_search(search)
        img = np.asarray(image)
        if img.ndim < 2 or img.shape[0] < 1 or img.shape[1] < 1:
            return []
        found = run_search({"short": self.short, "full": self.full}, _check_image(img), _spec(mode, self.max_side))
        return merge([(d.framed(a), s) for d, a, s in found], img.shape, self)

    def merge(self, found: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]) -> list[Detection]:
        """Framed detections of several passes -> faces, as a photo search merges them (``merge``)."""
        return merge(found, shape, self)

    def live_search(self, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The live path's full-frame search (``LIVE_SEARCH``): framed detections of each pass, for ``merge``."""
        found = run_search({"short": self.short, "full": self.full}, _check_image(np.asarray(image)),
                           _spec(LIVE_SEARCH, self.max_side))
        return [(d.framed(a), s) for d, a, s in found]

    def live_windows(self, image: np.ndarray, frames) -> tuple[np.ndarray, np.ndarray]:
        """The live path's tracking step: framed detections in a window around each face frame (cx, cy, side)."""
        dec, sc = self.short.run_windows(image, frames)
        return self.short.framed(dec), sc

    def _detect(self, image: np.ndarray, scale: float = 1.0) -> list[Detection]:
        return self.detect(image)

    def detect_live(self, image: np.ndarray) -> list[Detection]:
        return self.short.detect_live(image)

    def detect_near(self, image: np.ndarray, box, expand: float = 0.5) -> list[Detection]:
        return self.short.detect_live(image)
