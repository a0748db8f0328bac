"""The Recognizer pipeline (detector -> margin crop -> ONNX classifier) and the face detectors."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from helpers_models import ASTRONAUT, ZOO_DEFAULT, default_model_missing_reason, make_tiny_model
from PIL import Image

from ferlab.errors import FerlabError
from ferlab.inference.crop import DEFAULT_MARGIN, crop_face, face_square, whole_image_crop
from ferlab.inference.detect import (
    RELIABLE_PX,
    Detection,
    HaarDetector,
    WholeImageDetector,
    YuNetDetector,
    iou,
    make_detector,
    nms,
)
from ferlab.inference.recognizer import Face, Recognizer

ASTRO_FACE = (178, 67, 92, 92)  # Haar box of the astronaut's face (frontal cascade, full resolution)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("models"), face_margin=0.1)


@pytest.fixture(scope="module")
def rec(tiny):
    return Recognizer(model=tiny, threads=1)


@pytest.fixture(scope="module")
def astro_bgr():
    return cv2.imread(str(ASTRONAUT))


def _no_face_image() -> np.ndarray:
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.dstack([(xx * 0.7) % 256, (yy * 0.9) % 256, np.full_like(xx, 90)]).astype(np.uint8)
    cv2.rectangle(img, (40, 40), (120, 100), (20, 200, 20), -1)
    return img


# -- the pipeline --------------------------------------------------------------------------------------------

def test_no_face_gives_no_label(rec, tiny):
    assert rec.on_no_face == "skip" and rec.predict(_no_face_image()) == []
    assert Recognizer(model=tiny, on_no_face="whole", threads=1).predict(_no_face_image())[0].whole_image
    with pytest.raises(FerlabError, match="on_no_face"):
        Recognizer(model=tiny, on_no_face="guess", threads=1)
    with pytest.raises(FerlabError, match="on_no_face"):
        rec.predict(_no_face_image(), on_no_face="maybe")


def test_on_no_face_whole_gives_one_whole_image_face(rec):
    faces = rec.predict(_no_face_image(), on_no_face="whole")
    assert len(faces) == 1
    f = faces[0]
    assert f.whole_image and f.box == (0, 0, 320, 240) and f.track_id is None
    assert f.label in rec.classes and abs(sum(f.probabilities.values()) - 1) < 1e-4
    assert f.confidence == pytest.approx(max(f.probabilities.values()))
    assert f.label == max(f.probabilities, key=f.probabilities.get)


def test_no_fallback_gives_no_face(tiny):
    r = Recognizer(model=tiny, whole_image_fallback=False, threads=1)
    assert r.predict(_no_face_image()) == []


def test_astronaut_face_box(rec, astro_bgr):
    faces = rec.predict(ASTRONAUT)
    assert len(faces) == 1
    f = faces[0]
    assert not f.whole_image
    assert iou(f.box, ASTRO_FACE) > 0.55  # BlazeFace's box in FER framing is a little larger than Haar's
    x, y, w, h = f.box  # the face is in the upper middle of the 512x512 picture
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180 and 60 < w < 140
    assert f.detection_score is not None and 0.5 <= f.detection_score <= 1
    assert f.keypoints is not None and len(f.keypoints) == 6
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = f.keypoints[:4]
    assert x < rx < nx < lx < x + w and max(ry, ly) < ny < my < y + h  # eyes, nose, mouth where they belong


def test_all_input_kinds_agree(rec, astro_bgr):
    ref = rec.predict(astro_bgr)[0]
    data = ASTRONAUT.read_bytes()
    rgb = astro_bgr[:, :, ::-1].copy()
    variants = {
        "path": rec.predict(str(ASTRONAUT)), "pathlib": rec.predict(ASTRONAUT), "bytes": rec.predict(data),
        "pil": rec.predict(Image.open(io.BytesIO(data))), "rgb": rec.predict(rgb, channel_order="rgb"),
        "gray": rec.predict(cv2.cvtColor(astro_bgr, cv2.COLOR_BGR2GRAY)),
        "rgba": rec.predict(np.dstack([astro_bgr, np.full(astro_bgr.shape[:2], 255, np.uint8)])),
        "float": rec.predict(astro_bgr.astype(np.float32) / 255.0),
    }
    for name, faces in variants.items():
        assert len(faces) == 1, name
        assert iou(faces[0].box, ref.box) > 0.9, name
        # grey is another picture for the colour detector: its box moves by a few pixels (3 px here), and the
        # tiny test model's probabilities with it
        tol = 0.05 if name == "gray" else 0.02
        for c in rec.classes:
            assert faces[0].probabilities[c] == pytest.approx(ref.probabilities[c], abs=tol), (name, c)


def test_rgb_recognizer_default(tiny, astro_bgr):
    r = Recognizer(model=tiny, channel_order="rgb", threads=1)
    a = r.predict(astro_bgr[:, :, ::-1].copy())[0]
    b = Recognizer(model=tiny, threads=1).predict(astro_bgr)[0]
    assert a.box == b.box and a.label == b.label
    with pytest.raises(FerlabError):
        Recognizer(model=tiny, channel_order="bgra")


def test_predict_batch_matches_predict(rec, astro_bgr):
    imgs = [astro_bgr, _no_face_image(), ASTRONAUT]
    batch = rec.predict_batch(imgs)
    assert [len(b) for b in batch] == [1, 0, 1]
    for img, faces in zip(imgs, batch):
        single = rec.predict(img)
        assert [f.box for f in faces] == [f.box for f in single]
        for a, b in zip(faces, single):
            assert a.label == b.label and a.confidence == pytest.approx(b.confidence, abs=1e-5)
    assert rec.predict_batch([]) == []


def test_two_faces_in_one_image_one_batch(rec, astro_bgr):
    pair = np.hstack([astro_bgr, astro_bgr[:, ::-1]])
    calls = []
    orig = rec.classifier.predict_proba
    rec.classifier.predict_proba = lambda x, *a, **k: calls.append(len(x)) or orig(x, *a, **k)
    try:
        faces = rec.predict(pair)
    finally:
        rec.classifier.predict_proba = orig
    assert len(faces) == 2 and calls == [4]  # both faces and their mirror images (the flip view), one batch
    assert faces[0].box[0] < 512 <= faces[1].box[0]  # left to right


def test_photos_are_classified_with_the_flip_view(rec, astro_bgr):
    """Photos average each crop and its mirror image (``PHOTO_TTA``); ``tta="none"`` is the single view; a live
    stream classifies one view."""
    from ferlab.inference.recognizer import Recognizer

    assert rec.tta == "flip"
    dets = rec.detect(astro_bgr)
    crops = rec.crops(astro_bgr, dets)
    one = rec.classifier.predict_proba(crops)
    mirror = rec.classifier.predict_proba(crops[:, :, ::-1].copy())
    face = rec.predict_detections(astro_bgr, dets)[0]
    got = np.array([face.probabilities[c] for c in rec.classes])
    assert np.allclose(got, (one[0] + mirror[0]) / 2, atol=1e-6) and not np.allclose(got, one[0], atol=1e-4)
    single = Recognizer(model=rec.classifier.path, tta="none", threads=1).predict_detections(astro_bgr, dets)[0]
    assert np.allclose([single.probabilities[c] for c in rec.classes], one[0], atol=1e-6)
    with pytest.raises(FerlabError, match="tta must be one of none, flip"):
        Recognizer(model=rec.classifier.path, tta="tencrop")


def test_predict_boxes(rec, astro_bgr):
    faces = rec.predict_boxes(astro_bgr, [ASTRO_FACE, (0, 0, 100, 100)])
    assert [f.box for f in faces] == [ASTRO_FACE, (0, 0, 100, 100)]
    assert not any(f.whole_image for f in faces)
    assert rec.predict_boxes(astro_bgr, []) == []


def test_to_dict_and_to_table(rec, astro_bgr):
    faces = rec.predict(astro_bgr)
    d = faces[0].to_dict()
    assert set(d) >= {"box", "label", "confidence", "probabilities", "whole_image", "track_id"}
    assert isinstance(d["box"], list) and len(d["box"]) == 4
    json.dumps(d)  # JSON-ready
    rows = Recognizer.to_table(faces)
    assert len(rows) == 1 and rows[0]["image"] == 0 and rows[0]["face"] == 0
    assert (rows[0]["x"], rows[0]["y"], rows[0]["w"], rows[0]["h"]) == faces[0].box
    assert all(c in rows[0] for c in rec.classes)
    batch = rec.predict_batch([astro_bgr, _no_face_image()], on_no_face="whole")
    rows = Recognizer.to_table(batch, names=["astro.jpg", "sky.png"])
    assert [r["image"] for r in rows] == ["astro.jpg", "sky.png"]
    assert [r["whole_image"] for r in rows] == [False, True]
    assert len({tuple(r) for r in rows}) == 1  # same columns in every row: a DataFrame-ready table
    assert all(not isinstance(v, (list, dict)) for r in rows for v in r.values())  # flat
    rows2 = Recognizer.to_table({"a": batch[0], "b": batch[1]})
    assert [r["image"] for r in rows2] == ["a", "b"]
    assert Recognizer.to_table([]) == []
    with pytest.raises(FerlabError):
        Recognizer.to_table(batch, names=["one"])


def test_lazy_top_level_import(tiny):
    import ferlab

    assert ferlab.Recognizer is Recognizer
    r = ferlab.Recognizer(model=tiny, detector="none", threads=1)
    assert "tiny" in repr(r)


# -- margin and crops ----------------------------------------------------------------------------------------

def test_margin_comes_from_the_card_unless_given(tmp_path):
    with_card = make_tiny_model(tmp_path / "a", face_margin=0.25)
    without = make_tiny_model(tmp_path / "b", face_margin=None)
    assert Recognizer(model=with_card, threads=1).margin == 0.25
    assert Recognizer(model=without, threads=1).margin == DEFAULT_MARGIN
    assert Recognizer(model=with_card, margin=0.0, threads=1).margin == 0.0


def test_face_square():
    assert face_square((10, 20, 100, 100), 0.0) == (10, 20, 100)
    assert face_square((10, 20, 100, 100), 0.1) == (0, 10, 120)
    assert face_square((0, 0, 40, 80), 0.0) == (-20, 0, 80)  # square on the longer side, same centre
    with pytest.raises(FerlabError):
        face_square((0, 0, 0, 10), 0.1)
    with pytest.raises(FerlabError):
        face_square((0, 0, 10, 10), -0.6)


def test_crop_inside_the_image_is_a_resized_slice():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 400), dtype=np.uint8)
    crop = crop_face(img, (100, 50, 96, 96), 0.25)
    x0, y0, s = face_square((100, 50, 96, 96), 0.25)
    assert (x0, y0, s) == (76, 26, 144)
    expect = cv2.resize(img[26:170, 76:220], (48, 48), interpolation=cv2.INTER_AREA)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8 and np.array_equal(crop, expect)
    exact = crop_face(img, (10, 10, 48, 48), 0.0)
    assert np.array_equal(exact, img[10:58, 10:58])


def test_crop_at_the_border_repeats_edge_pixels():
    img = np.zeros((100, 100), np.uint8)
    img[:, :50] = 200  # left half bright
    crop = crop_face(img, (0, 30, 40, 40), 0.5)  # square from x=-20: 20 px left of the image
    assert crop.shape == (48, 48)
    assert crop[:, :10].min() == 200  # padding repeats the bright left edge, not black
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    assert np.array_equal(crop_face(bgr, (0, 30, 40, 40), 0.5), crop)
    with pytest.raises(FerlabError):
        crop_face(img, (500, 500, 10, 10), 0.0)


def test_small_faces_are_enlarged_smoothly():
    img = np.tile(np.arange(20, dtype=np.uint8) * 12, (20, 1))
    crop = crop_face(img, (0, 0, 20, 20), 0.0)
    assert crop.shape == (48, 48)
    assert len(np.unique(crop[0])) > 20  # interpolated, not blocky nearest-neighbour


def test_whole_image_crop_pads_to_square():
    img = np.full((50, 100), 80, np.uint8)
    img[:, 50:] = 160
    sq = whole_image_crop(img)
    assert sq.shape == (48, 48)
    assert sq[0, 0] == 80 and sq[-1, -1] == 160  # no distortion, padding repeats the borders
    assert np.array_equal(whole_image_crop(np.full((48, 48), 7, np.uint8)), np.full((48, 48), 7, np.uint8))


# -- detectors -----------------------------------------------------------------------------------------------

def test_make_detector_names(tmp_path):
    assert isinstance(make_detector("haar"), HaarDetector) and not make_detector("haar").profile
    assert make_detector("haar+profile").profile
    assert isinstance(make_detector("none"), WholeImageDetector)
    d = HaarDetector(min_size=50)
    assert make_detector(d) is d
    with pytest.raises(FerlabError, match="unknown face detector"):
        make_detector("mtcnn")
    with pytest.raises(FerlabError, match="never downloads"):
        make_detector(tmp_path / "yunet.onnx")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(FerlabError, match="cannot load as a YuNet"):
        YuNetDetector(bad)
    with pytest.raises(FerlabError):
        HaarDetector(min_size=2)
    with pytest.raises(FerlabError):
        HaarDetector(scale_factor=1.0)


def test_haar_finds_the_astronaut(astro_bgr):
    dets = HaarDetector().detect(astro_bgr)
    assert len(dets) == 1 and dets[0].source == "frontal" and iou(dets[0].box, ASTRO_FACE) > 0.8
    gray = cv2.cvtColor(astro_bgr, cv2.COLOR_BGR2GRAY)
    assert [d.box for d in HaarDetector().detect(gray)] == [d.box for d in dets]
    both = HaarDetector(profile=True).detect(astro_bgr)
    assert len(both) == 1 and iou(both[0].box, ASTRO_FACE) > 0.8  # profile hits merged into the frontal box
    assert HaarDetector(min_size=200).detect(astro_bgr) == []
    assert HaarDetector().detect(_no_face_image()) == []


def test_downscaled_detection_keeps_the_face(astro_bgr):
    big = cv2.resize(astro_bgr, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    det = HaarDetector(min_size=80, max_side=512)
    assert det.detection_scale(big.shape) == pytest.approx(0.5)
    found = det.detect(big)
    target = tuple(2 * v for v in ASTRO_FACE)
    assert len(found) == 1 and iou(found[0].box, target) > 0.6
    # never shrunk so far that a min_size face falls below what the cascade finds reliably
    small_faces = HaarDetector(min_size=40, max_side=256)
    assert small_faces.detection_scale((1000, 1000)) * 40 >= RELIABLE_PX - 1e-9
    assert HaarDetector(max_side=640).detection_scale((480, 640)) == 1.0


def test_detect_near_searches_a_window(astro_bgr):
    det = HaarDetector()
    near = det.detect_near(astro_bgr, (170, 60, 100, 100))
    assert len(near) == 1 and iou(near[0].box, ASTRO_FACE) > 0.7
    assert det.detect_near(astro_bgr, (400, 400, 60, 60)) == []


def test_whole_image_detector_and_recognizer_none(tiny, astro_bgr):
    assert WholeImageDetector().detect(astro_bgr)[0].box == (0, 0, 512, 512)
    faces = Recognizer(model=tiny, detector="none", threads=1).predict(astro_bgr)
    assert len(faces) == 1 and faces[0].whole_image and faces[0].box == (0, 0, 512, 512)


def test_nms_prefers_frontal_and_drops_nested_boxes():
    dets = [Detection((10, 10, 100, 100), 3, "profile"), Detection((12, 12, 96, 96), 20, "frontal"),
            Detection((40, 40, 30, 30), 4, "frontal"), Detection((300, 10, 80, 80), 5, "profile_mirrored")]
    kept = nms(dets)
    assert [d.box for d in kept] == [(12, 12, 96, 96), (300, 10, 80, 80)]
    assert nms([]) == []


# -- the real bundled model ----------------------------------------------------------------------------------

@pytest.mark.skipif(not ZOO_DEFAULT.exists(), reason=default_model_missing_reason())
def test_default_model_finds_the_astronaut_happy():
    faces = Recognizer(threads=2).predict(ASTRONAUT)
    assert len(faces) == 1 and not faces[0].whole_image
    assert faces[0].label == "happy", faces[0].probabilities
    assert faces[0].confidence > 0.5


def test_face_dataclass_defaults():
    f = Face(box=(1, 2, 3, 4), label="happy", confidence=0.9)
    assert f.to_dict()["probabilities"] == {} and f.to_dict()["track_id"] is None


# -- drawing -------------------------------------------------------------------------------------------------

def test_annotate_draws_without_touching_the_input(rec, astro_bgr):
    from ferlab.inference.draw import annotate, color_for

    faces = rec.predict(astro_bgr)
    before = astro_bgr.copy()
    out = annotate(astro_bgr, faces)
    assert np.array_equal(astro_bgr, before) and out.shape == astro_bgr.shape
    x, y, w, h = faces[0].box
    assert np.abs(out.astype(int) - astro_bgr).sum() > 0
    assert tuple(out[y + h // 2, x]) == color_for(faces[0].label)  # the box edge has the label's colour
    gray = cv2.cvtColor(astro_bgr, cv2.COLOR_BGR2GRAY)
    assert annotate(gray, [f.to_dict() for f in faces]).shape == (512, 512, 3)  # grey in, dicts as faces
    # faces at every border and a whole-image face draw without errors
    probs = faces[0].probabilities
    edge = [Face((0, 0, 60, 60), "sad", 0.5, probs), Face((452, 452, 60, 60), "fear", 0.5, probs, track_id=3),
            Face((0, 0, 512, 512), "neutral", 0.4, probs, whole_image=True),
            Face((500, 0, 12, 12), "contempt", 0.9, {"contempt": 0.9, "other": 0.1})]
    assert annotate(astro_bgr, edge).shape == astro_bgr.shape
    tiny_img = np.zeros((20, 30, 3), np.uint8)
    assert annotate(tiny_img, [Face((0, 0, 30, 20), "happy", 0.9, probs, whole_image=True)]).shape == (20, 30, 3)
    assert color_for("something-new") == color_for("something-new")


def test_annotate_keypoints_and_no_face_note(astro_bgr):
    from ferlab.inference.draw import annotate

    blank = np.zeros((200, 300, 3), np.uint8)
    assert annotate(blank, []).sum() == 0
    noted = annotate(blank, [], note="no face found")
    assert noted[:40, :200].sum() > 0 and noted[100:].sum() == 0  # a banner at the top left only
    f = Face((100, 50, 60, 60), "happy", 0.9, {"happy": 0.9, "sad": 0.1},
             keypoints=((115, 70), (145, 70), (130, 85), (130, 100), (100, 75), (160, 75)))
    out = annotate(blank, [f], bars=False)
    assert out[70, 115].sum() > 0 and out[100, 130].sum() > 0  # eyes and mouth marked


def test_pipeline_sessions_do_not_busy_wait():
    """The detector and the classifier take turns on the same cores, so neither's threads may spin between runs
    (spinning made the 2-core live path bimodal: 7-8 ms a frame instead of 3.4 ms in a third of the runs,
    benchmarks/bench_detect.py); a classifier alone keeps ONNX Runtime's default."""
    from ferlab.inference.classifier import OnnxClassifier

    def spinning(session) -> str:
        try:
            return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:  # noqa: BLE001 - unset: ONNX Runtime raises
            return "default"

    rec = Recognizer("fast", threads=1)
    assert spinning(rec.classifier.session) == "0"
    assert spinning(rec.detector.short.session) == "0"
    assert spinning(OnnxClassifier("fast", threads=1).session) in ("default", "1")
