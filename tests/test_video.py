"""Video: tracking with stable ids, smoothed probabilities, mp4 / CSV / timeline outputs, bad videos."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from helpers_models import ASTRONAUT, make_tiny_model
from PIL import Image

from ferlab.cli import main
from ferlab.errors import FerlabError
from ferlab.inference.detection import Detector
from ferlab.inference.live import LiveFaces
from ferlab.inference.recognizer import Recognizer
from ferlab.inference.video import IoUTracker, StreamRecognizer, process_video

N_FRAMES, W, H, FPS = 20, 480, 320, 10


def _frames():
    head = cv2.imread(str(ASTRONAUT))[20:240, 120:340]  # 220x220 with the 92 px face inside
    for i in range(N_FRAMES):
        frame = np.full((H, W, 3), (70, 90, 110), np.uint8)
        x = 10 + i * 12  # moves right by 12 px a frame
        frame[50:270, x:x + 220] = head
        yield frame


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "moving.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert vw.isOpened()
    for f in _frames():
        vw.write(f)
    vw.release()
    return path


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_process_video_outputs(tiny, clip, tmp_path):
    out, cs, tl = tmp_path / "o" / "annotated.mp4", tmp_path / "o" / "frames.csv", tmp_path / "o" / "timeline.png"
    s = process_video(clip, out, cs, every=1, timeline_png=tl, model=tiny)
    assert s["frames"] == N_FRAMES == s["frames_in_header"] and s["fps"] == pytest.approx(FPS)
    assert s["detector"] == "blazeface"
    # the track is confirmed at its third detection: the first two frames show no face
    assert len(s["tracks"]) == 1 and s["tracks"][0]["frames"] >= N_FRAMES - 3
    all_rows = _rows(cs)
    assert len(all_rows) == N_FRAMES
    assert list(all_rows[0])[:9] == ["frame", "time_s", "track_id", "x", "y", "w", "h", "label", "confidence"]
    assert list(all_rows[0])[-2:] == ["left_ear_tragion_x", "left_ear_tragion_y"]
    assert [r["track_id"] for r in all_rows[:2]] == ["", ""] and all_rows[0]["label"] == ""
    rows = [r for r in all_rows if r["track_id"]]
    assert {r["track_id"] for r in rows} == {"1"} and len(rows) >= N_FRAMES - 3
    assert all(float(r["right_eye_x"]) < float(r["left_eye_x"]) for r in rows)
    xs = [int(r["x"]) for r in rows]
    assert xs[-1] - xs[0] > 150 and all(b >= a - 6 for a, b in zip(xs, xs[1:]))  # follows the motion
    assert float(all_rows[5]["time_s"]) == pytest.approx(5 / FPS)
    for r in rows:
        probs = [float(r[c]) for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")]
        assert abs(sum(probs) - 1) < 0.01
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N_FRAMES and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == W
    cap.release()
    png = Image.open(tl)
    assert png.format == "PNG" and png.size[0] > 300
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temp files left


def test_detect_every_n_keeps_one_track(tiny, clip, tmp_path):
    cs = tmp_path / "every3.csv"
    s = process_video(clip, csv_path=cs, every=3, model=tiny, detector="haar")
    rows = _rows(cs)
    assert len(s["tracks"]) == 1
    assert sum(r["track_id"] == "1" for r in rows) >= N_FRAMES - 4  # found near the last box in between


def test_stream_recognizer_smooths_probabilities(tiny):
    rec = Recognizer(model=tiny, whole_image_fallback=False, threads=1)
    stream = StreamRecognizer(rec, every=1, smoothing=0.5, min_hits=1)
    ema, live = None, LiveFaces()  # the live path, run beside the stream on the same frames
    for frame in list(_frames())[:5]:
        faces = stream.process(frame)
        assert len(faces) == 1 and faces[0].track_id == 1
        dets = live(rec.detector, frame)
        raw = rec.classify(rec.crops(frame, dets), tta="none")[0]  # a live frame: one view, not the photo's flip
        ema = raw if ema is None else 0.5 * ema + 0.5 * raw
        got = np.array([faces[0].probabilities[c] for c in rec.classes])
        assert np.allclose(got, ema, atol=1e-5)
        assert faces[0].label == rec.classes[int(np.argmax(ema))]
    with pytest.raises(FerlabError):
        StreamRecognizer(rec, every=0)
    with pytest.raises(FerlabError):
        StreamRecognizer(rec, smoothing=1.0)


def test_iou_tracker_ids():
    t = IoUTracker(iou_threshold=0.3, max_missed=2, min_hits=1)
    a = t.update([(0, 0, 50, 50), (200, 0, 50, 50)], 0)
    assert [tr.id for tr, _ in a] == [1, 2]
    b = t.update([(205, 2, 50, 50), (5, 3, 50, 50)], 1)  # order swapped, both moved a little
    assert {tr.id: box for tr, box in b} == {1: (5, 3, 50, 50), 2: (205, 2, 50, 50)}
    c = t.update([(5, 3, 50, 50), (400, 300, 60, 60)], 2)  # a new face; face 2 not seen
    assert sorted(tr.id for tr, _ in c) == [1, 3]
    t.update([(5, 3, 50, 50)], 3)
    t.update([(5, 3, 50, 50)], 4)
    assert sorted(tr.id for tr in t.tracks) == [1, 3]  # 2 missed 3 frames (more than 2): dropped
    t.update([(5, 3, 50, 50)], 5)
    assert sorted(tr.id for tr in t.tracks) == [1]
    fast = IoUTracker()
    fast.update([(100, 100, 80, 80)], 0)
    moved = fast.update([(130, 100, 80, 80)], 1)  # IoU 0.45
    jumped = fast.update([(185, 110, 80, 80)], 2)  # IoU 0.14 but centres close: same face
    assert moved[0][0].id == jumped[0][0].id == 1


def test_video_cli(tiny, clip, tmp_path, capsys):
    out, cs, tl = tmp_path / "a.mp4", tmp_path / "f.csv", tmp_path / "t.png"
    rc = main(["video", str(clip), "--out", str(out), "--csv", str(cs), "--timeline", str(tl), "--every", "2",
               "--model", tiny])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"{N_FRAMES} frames" in captured.out and "face #1" in captured.out
    assert out.stat().st_size > 1000 and cs.exists() and tl.exists()


@pytest.mark.parametrize("content", [b"", b"this is not a video at all\n" * 20, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64])
def test_unsupported_video_exits_2(tiny, tmp_path, capsys, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    out = tmp_path / "out.mp4"
    rc = main(["video", str(bad), "--out", str(out), "--csv", str(tmp_path / "f.csv"), "--model", tiny])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.mp4" in err and len([x for x in err.splitlines() if x.strip()]) <= 2
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]  # nothing half-written


def test_missing_video_and_image_as_video(tiny, tmp_path, capsys):
    assert main(["video", str(tmp_path / "nope.mp4"), "--model", tiny]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(FerlabError):
        process_video(tmp_path, model=tiny)


def test_webcam_headless_opens_the_web_page(tiny, capsys, monkeypatch):
    import webbrowser

    from ferlab.commands import serve, webcam

    monkeypatch.setattr(webcam, "gui_problem", lambda: "this OpenCV build has no GUI (opencv-python-headless)")
    served, opened = [], []
    monkeypatch.setattr(serve, "run", lambda a: served.append(a) or 0)
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url))
    assert main(["webcam", "--model", tiny, "--port", "8765", "--no-browser"]) == 0
    err = capsys.readouterr().err
    assert "http://localhost:8765/" in err and "no GUI" in err and "Start camera" in err
    (a,) = served
    assert (a.host, a.port, a.model, a.detector) == ("127.0.0.1", 8765, tiny, "blazeface") and opened == []
    # without the [serve] extra: one line saying what to install, never a dead end
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "fastapi" else real(n, *a))
    assert main(["webcam", "--model", tiny]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install "ferlab[serve]"' in err


# -- confirmed tracks, timeline axis, browser-playable video ------------------------------------------------------

class _ScriptedDetector(Detector):
    """A detector that returns given boxes per frame (to test the tracker without a model); a ``Detector``, so
    it declares what it is (grey input, no search, no windows) by the base class's defaults."""

    name = "scripted"
    cheap = True

    def __init__(self, script):
        self.script, self.i = script, -1

    def detect_live(self, image):
        from ferlab.inference.detect import Detection

        self.i += 1
        return [Detection(b, 0.9, "blazeface") for b in self.script[self.i]]

    detect = detect_live


def test_unconfirmed_tracks_never_show(tiny):
    face, ghost = (100, 60, 100, 100), (300, 200, 80, 80)
    script = [[face], [face, ghost], [face], [face], [face, ghost], [face, ghost], [face, ghost], [face]]
    rec = Recognizer(model=tiny, threads=1)
    rec.detector = _ScriptedDetector(script)
    stream = StreamRecognizer(rec, min_hits=3)
    shown = [[f.track_id for f in stream.process(np.zeros((H, W, 3), np.uint8))] for _ in script]
    # the face appears from its third detection on; the one-frame ghost of frame 1 never does;
    # the ghost seen in frames 4-6 becomes a confirmed track at its third hit
    assert shown[:2] == [[], []] and shown[2] == [1] and shown[3] == [1]
    assert shown[4] == [1] and shown[5] == [1] and shown[6] == [1, 3] and shown[7] == [1]
    ids = [t.id for t in stream.all_tracks()]
    assert ids == [1, 3] and 2 not in ids
    with pytest.raises(FerlabError):
        IoUTracker(min_hits=0)


def test_timeline_panels_share_the_whole_time_range(tmp_path, monkeypatch):
    import matplotlib.figure

    from ferlab.inference.video import Track, plot_timeline

    classes = ["happy", "sad"]
    p = np.array([0.7, 0.3], np.float32)
    long = Track(1, (0, 0, 10, 10), 0, 99, history=[(t / 10, p) for t in range(100)], confirmed=True)
    single = Track(2, (0, 0, 10, 10), 50, 50, history=[(5.0, p)], confirmed=True)
    seen = {}
    orig = matplotlib.figure.Figure.savefig

    def spy(self, *a, **k):
        seen["xlims"] = [ax.get_xlim() for ax in self.axes if ax.get_visible() and ax.has_data()]
        return orig(self, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot_timeline([long, single], classes, tmp_path / "t.png")
    assert len(seen["xlims"]) == 2
    for lo, hi in seen["xlims"]:  # the one-frame track no longer squeezes the axis to a microsecond
        assert lo == pytest.approx(0.0) and hi == pytest.approx(9.9)


def _fourcc(path) -> str:
    cap = cv2.VideoCapture(str(path))
    try:
        v = int(cap.get(cv2.CAP_PROP_FOURCC))
        n = 0
        while cap.read()[0]:
            n += 1
    finally:
        cap.release()
    return "".join(chr((v >> 8 * i) & 0xFF) for i in range(4)).lower(), n


def test_webm_output_is_vp9(tiny, clip, tmp_path):
    out = tmp_path / "a.webm"
    s = process_video(clip, out, model=tiny, max_frames=6, fast=True)
    assert s["video_codec"] == "vp9" and s["detector"] == "blazeface (live pass)"
    codec, n = _fourcc(out)
    assert codec.startswith("vp9") and n == 6
    assert out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # Matroska / WebM


def test_mp4_is_h264_with_pyav_else_warns(tiny, clip, tmp_path, monkeypatch):
    import builtins

    warnings = []
    try:
        import av  # noqa: F401

        out = tmp_path / "h.mp4"
        s = process_video(clip, out, model=tiny, max_frames=6, warn=warnings.append)
        assert s["video_codec"] == "h264" and not warnings
        codec, n = _fourcc(out)
        assert codec in ("avc1", "h264") and n == 6
    except ImportError:
        pass
    real_import = builtins.__import__

    def no_av(name, *a, **k):
        if name == "av":
            raise ImportError("no av")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_av)
    out = tmp_path / "m.mp4"
    s = process_video(clip, out, model=tiny, max_frames=4, warn=warnings.append)
    assert s["video_codec"] == "mp4v" and len(warnings) == 1 and ".webm" in warnings[0]
    assert _fourcc(out)[1] == 4


@pytest.fixture(scope="module")
def small_faces_clip(tmp_path_factory):
    """4 still frames of eight 36 px faces: the thorough photo search (from 24 px) finds them, the fast one (from
    64 px) does not."""
    from helpers_models import frame_of_faces

    path = tmp_path_factory.mktemp("video") / "small_faces.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
    assert vw.isOpened()
    for _ in range(4):
        vw.write(frame_of_faces(36))
    vw.release()
    return path


def test_search_option_on_every_frame(tiny, small_faces_clip, tmp_path, capsys):
    import json

    s = process_video(small_faces_clip, model=tiny, search="fast")
    assert s["search"] == "fast" and len(s["tracks"]) <= 2
    js = tmp_path / "s.json"
    assert main(["video", str(small_faces_clip), "--model", tiny, "--search", "thorough", "--json", str(js)]) == 0
    s = json.loads(js.read_text())
    assert s["search"] == "thorough" and len(s["tracks"]) >= 7
    capsys.readouterr()
    # --fast runs the live pass, which has no photo search: thorough with it is one line, before any frame
    assert main(["video", str(small_faces_clip), "--model", tiny, "--fast", "--search", "thorough"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not go together" in err[0]
    with pytest.raises(SystemExit) as e:
        main(["video", str(small_faces_clip), "--model", tiny, "--search", "slow"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'slow'" in err and "Traceback" not in err
