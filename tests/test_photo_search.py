"""The photo search and the live path on scenes shaped like users' (issue 21): 6-12 MP photos, a person sitting
back from a webcam, a crowd, a torso around a face, a tilted or turned photo, and inputs that try the bounds.

Scenes come from ``benchmarks/photo_scenes.py`` (the astronaut's head and shoulders pasted into busy,
face-free backgrounds at known places); a found face must overlap its true face frame by IoU >= 0.5 (the
benchmark's rule), and the torso cases ask for 0.6.
"""

from __future__ import annotations

import resource
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from photo_scenes import ASTRONAUT_FRAME, background, iou, match, paste_person  # noqa: E402

from ferlab.inference.blazeface import (  # noqa: E402
    SEARCHES,
    BlazeFaceAuto,
    contained,
    plausible,
    search_plan,
)
from ferlab.inference.crop import _gray, crop_detection, crop_face  # noqa: E402
from ferlab.inference.live import LiveFaces  # noqa: E402


@pytest.fixture(scope="module")
def det():
    return BlazeFaceAuto(threads=2)


def _scene(w, h, faces, seed=0):
    """A w x h background with the astronaut's head at each (cx, cy, side); the true frames (x, y, s, s)."""
    img = background(np.random.default_rng(seed), w, h)
    for cx, cy, side in faces:
        paste_person(img, cx, cy, side)
    return img, [(cx - s / 2, cy - s / 2, s, s) for cx, cy, s in faces]


def _found(dets, truth, thr=0.5):
    return len(match(truth, [d.box for d in dets], thr))


# -- torso boxes (the two cases of the issue) -------------------------------------------------------------------

@pytest.mark.parametrize("size", [(4000, 3000), (3000, 2250)])
def test_a_face_in_a_large_photo_is_one_face_box_not_the_torso(det, size):
    """The astronaut photo (118 px face) pasted as it is into a 12 MP and a 6.75 MP photo: every search finds
    exactly the face; before issue 21 the default search drew one 432 / 556 px box around the torso."""
    w, h = size
    img = background(np.random.default_rng(0), w, h)
    astro = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))
    x0, y0 = w // 2 - 256, h // 2 - 256
    img[y0:y0 + 512, x0:x0 + 512] = astro
    fx, fy, fs = ASTRONAUT_FRAME
    truth = (x0 + fx, y0 + fy, fs, fs)
    for mode in SEARCHES:
        dets = det.detect(img, search=mode)
        assert len(dets) == 1, (mode, [d.box for d in dets])
        assert iou(dets[0].box, truth) >= 0.6, (mode, dets[0].box, truth)


def test_keypoints_that_make_no_face_are_dropped():
    """The raw torso detection the old search kept on the 12 MP photo above (box and keypoints as it gave
    them), beside the astronaut's real face: only the face is plausible."""
    torso = [1493.6, 1054.4, 3272.2, 2818.9, 2093, 1363, 2470, 1491, 1855, 1342, 1904, 1824, 2300, 1782, 3270, 2178]
    face = [1917.3, 1313.8, 2021.5, 1417.9, 1948, 1345, 1992, 1347, 1968, 1369, 1966, 1389, 1923, 1352, 2018, 1358]
    assert plausible(np.array([torso, face], np.float32)).tolist() == [False, True]
    turned = np.array(face, np.float32)  # the same face turned 90 degrees is still a face
    turned[0::2], turned[1::2] = 4000 - np.array(face[1::2]), np.array(face[0::2])
    turned[[0, 2]] = np.sort(turned[[0, 2]])
    assert plausible(turned[None]).tolist() == [True]
    assert plausible(np.zeros((0, 16), np.float32)).shape == (0,)


def test_a_box_around_a_better_face_is_dropped():
    framed = np.zeros((3, 20), np.float32)
    framed[0, :4] = [100, 100, 500, 500]   # a head-and-shoulders box
    framed[1, :4] = [250, 150, 350, 250]   # the face inside it, better scored
    framed[2, :4] = [600, 100, 700, 200]   # another face
    assert contained(framed, np.array([0.7, 0.9, 0.8])).tolist() == [False, True, True]
    # a large face that holds a smaller, weaker detection stays
    assert contained(framed, np.array([0.95, 0.6, 0.8])).tolist() == [True, True, True]


# -- photos of 6-12 MP ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(4000, 3000), (3000, 2000)])
def test_faces_of_48_to_384_px_in_a_phone_photo(det, size):
    """Faces of 48, 96, 192 and 384 px, three of each, in a 12 MP and a 6 MP photo: the default search finds
    every one (before issue 21: 0% / 0% / 0% / 100% in 12 MP)."""
    w, h = size
    faces = [(w * (j + 0.5) / 3, h * (0.12 + 0.22 * i), s) for i, s in enumerate((48, 96, 192, 384)) for j in range(3)]
    img, truth = _scene(w, h, faces, seed=1)
    dets = det.detect(img)
    assert _found(dets, truth) == len(truth)
    assert len(dets) == len(truth)  # no false positive


def test_tilted_faces_are_found_and_a_turned_photo_by_the_thorough_search(det):
    faces = [(300 + 400 * i, 400, 110) for i in range(5)]
    img = background(np.random.default_rng(2), 2200, 900)
    for (cx, cy, s), angle in zip(faces, (-30, -15, 0, 15, 30)):
        paste_person(img, cx, cy, s, angle)
    truth = [(cx - s / 2, cy - s / 2, s, s) for cx, cy, s in faces]
    assert _found(det.detect(img), truth, 0.4) == 5
    part, part_truth = img[:, :1000], [t for t in truth if t[0] + t[2] < 1000]
    for k in (1, 2, 3):  # the photo turned 90, 180, 270 degrees, no EXIF tag
        turned = np.ascontiguousarray(np.rot90(part, k))
        back = det.detect(turned, search="thorough")  # tries the rotations; boxes in the turned photo's pixels
        assert _found(back, _turned(part_truth, k, part.shape), 0.5) == len(part_truth) == len(back), k
        # the classifier's crop of a face lying on its side is turned upright (crop.SIDEWAYS), not cut as it lies
        # (compared with the upright photo's crops made level by --align: the faces are tilted -30 and -15 degrees)
        level = [crop_detection(part, d, align=True).astype(int) for d in det.detect(part)]
        for d in back:
            as_it_lies = crop_face(_gray(turned), d.box, 0.02)
            near, lying = (min(np.abs(c - x).mean() for x in level) for c in (crop_detection(turned, d), as_it_lies))
            assert near < 32 and near < lying - 10, (k, near, lying)
    upside_down = np.ascontiguousarray(np.rot90(part, 2))  # the default search does not turn the photo
    assert _found(det.detect(upside_down), _turned(part_truth, 2, part.shape), 0.5) < len(part_truth)


def _turned(boxes, k, shape):
    """Boxes (x, y, w, h) of an image of ``shape`` in ``np.rot90(image, k)``."""
    out = []
    for x, y, bw, bh in boxes:
        h, w = shape[:2]
        for _ in range(k):  # one turn: (x, y) -> (y, W - x), and the image becomes H x W
            x, y, bw, bh, w, h = y, w - x - bw, bh, bw, h, w
        out.append((x, y, bw, bh))
    return out


# -- the live path ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [48, 64, 80, 128, 400])
def test_live_path_finds_a_person_sitting_back(det, side):
    """640x480 webcam frames, one person whose face frame is ``side`` px, moving 4 px a frame: the face is
    found in >= 90% of 15 frames (before issue 21, 48-80 px: 0 frames)."""
    live, hits = LiveFaces(), 0
    bg = background(np.random.default_rng(3), 640, 480)
    for f in range(15):
        img = bg.copy()
        cx, cy = 300 + 4 * f, 140 if side < 300 else 240
        paste_person(img, cx, cy, side)
        hits += _found(live(det, img), [(cx - side / 2, cy - side / 2, side, side)]) == 1
    assert hits >= 14


def test_live_path_sees_a_crowd_of_ten(det):
    """1280x720, ten people with faces of 60-200 px: >= 9 found once the stream runs (frame 2 on)."""
    sides = [60, 75, 90, 110, 130, 150, 170, 200, 64, 100]
    faces = [(130 + 250 * (i % 5), 130 + 320 * (i // 5), s) for i, s in enumerate(sides)]
    img, truth = _scene(1280, 720, faces, seed=4)
    live = LiveFaces()
    counts = [_found(live(det, img), truth) for _ in range(6)]
    assert min(counts[1:]) >= 9, counts


# -- inputs that try the bounds -------------------------------------------------------------------------------

def test_bounds_hold_on_hostile_photos(det):
    """A 40 MP photo with no face, a 50:1 panorama, a uniform image, a 1x1 image and a stadium of 500 tiny
    faces: no face where there is none, and the work stays bounded (the model input of a search never exceeds
    its ``max_pixels`` plus the coarse levels)."""
    from ferlab.inference.detect import make_detector

    full = make_detector("blazeface-full")  # the full-range model alone, with its own photo search
    big = np.full((5000, 8000, 3), 90, np.uint8)
    big[::7] = 160  # stripes, no face
    t0 = time.perf_counter()
    assert det.detect(big) == []
    assert time.perf_counter() - t0 < 60  # generous: a loaded 2-core machine; typically well under 1 s
    for img in (background(np.random.default_rng(5), 5000, 100), np.zeros((480, 640, 3), np.uint8),
                np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8)):
        assert det.detect(img) == [] and det.detect(img, search="thorough") == []
        assert LiveFaces()(det, img) == []
        assert full.detect(img) == []  # the one-model search (it raised on a face-free image before)
    stadium, _ = _scene(3000, 2000, [(30 + 60 * (i % 50), 40 + 100 * (i // 50) + 20 * (i % 2), 28)
                                     for i in range(500)], seed=6)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dets = det.detect(stadium, search="thorough")
    assert len(dets) <= 200  # max_faces
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 1_500_000  # KiB: under 1.5 GB more
    for w, h in [(8000, 5000), (16000, 400), (5000, 100)]:
        for mode, spec in SEARCHES.items():
            levels = [p.scale for p in search_plan(w, h, mode) if p.scale is not None]
            assert sum(w * h * s * s for s in levels) <= 1.2 * spec.max_pixels + 1


# -- EXIF orientation everywhere ----------------------------------------------------------------------------------

def test_exif_orientation_is_honoured_by_predict_the_api_and_batch(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 ("turn 90 degrees clockwise to show"): predict
    (library and CLI), the HTTP API and batch all find the face where it is in the photo as shown."""
    import io
    import json

    from helpers_models import make_exported_tiny_model
    from PIL import Image

    with warnings.catch_warnings():  # starlette's TestClient may warn about httpx vs httpx2 at import
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from ferlab.cli import main
    from ferlab.inference.recognizer import Recognizer
    from ferlab.serving import create_app

    shown, truth = _scene(900, 700, [(300, 260, 150)], seed=7)
    stored = np.ascontiguousarray(np.rot90(shown, 1))  # what the camera wrote: turned 90 degrees anticlockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored[:, :, ::-1]).save(buf, "JPEG", quality=92, exif=exif.tobytes())
    photos = tmp_path / "photos"
    photos.mkdir()
    path = photos / "phone.jpg"
    path.write_bytes(buf.getvalue())
    models = tmp_path / "models"
    models.mkdir()
    tiny = str(make_exported_tiny_model(models))

    def ok(box):
        return iou(tuple(box), truth[0]) >= 0.5

    faces = Recognizer(model=tiny, threads=1).predict(str(path))
    assert len(faces) == 1 and ok(faces[0].box)
    out = tmp_path / "p.json"
    assert main(["predict", str(path), "--model", tiny, "--json", str(out), "--no-progress"]) == 0
    images = json.loads(out.read_text())["images"]
    assert (images[0]["width"], images[0]["height"]) == (900, 700)
    assert len(images[0]["faces"]) == 1 and ok(images[0]["faces"][0]["box"])
    app = create_app(models, Path(tiny).stem, workers=1, threads=1)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/v1/predict", files={"file": ("phone.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (900, 700) and len(body["faces"]) == 1 and ok(body["faces"][0]["box"])
    res = tmp_path / "batch"
    assert main(["batch", str(photos), "--out", str(res), "--model", tiny, "--workers", "1", "--no-progress"]) == 0
    import pandas as pd

    df = pd.concat([pd.read_parquet(f) for f in sorted((res / "faces").rglob("*.parquet"))])
    assert len(df) == 1 and ok((df.x.iloc[0], df.y.iloc[0], df.w.iloc[0], df.h.iloc[0]))


def test_live_path_shows_no_face_on_busy_backgrounds(det):
    """Face-free webcam backgrounds where a single pass scores a false face at 0.56-0.59 (seeds 4, 5 and 8 of
    photo_scenes.background): with ``SEARCH_MIN_SCORE`` neither the photo search nor 8 live frames show one."""
    for seed in (4, 5, 8):
        bg = background(np.random.default_rng(seed), 640, 480)
        live = LiveFaces()
        assert det.detect(bg) == [] and all(live(det, bg) == [] for _ in range(8)), seed
