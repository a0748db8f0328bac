"""``ferlab predict``: files, folders (recursive), globs, outputs, bad files reported and skipped."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from helpers_models import ASTRONAUT, ROOT, make_tiny_model

from ferlab.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("models")))


def _png_claiming(w: int, h: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 32)) + chunk(b"IEND", b""))


@pytest.fixture()
def good_dir(tmp_path):
    d = tmp_path / "photos"
    (d / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(ASTRONAUT, d / "astronaut.jpg")
    cv2.imwrite(str(d / "sub" / "sky.png"), np.full((120, 160, 3), (200, 160, 90), np.uint8))
    cv2.imwrite(str(d / "sub" / "deeper" / "astro_small.png"), cv2.resize(cv2.imread(str(ASTRONAUT)), (384, 384)))
    (d / "sub" / "readme.txt").write_text("not an image, and not picked up from folders")
    (d / ".hidden").mkdir()
    shutil.copy(ASTRONAUT, d / ".hidden" / "skipped.jpg")
    return d


@pytest.fixture()
def bad_files(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(ASTRONAUT, d / "good.jpg")
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.png").write_text("hello, I am text\n")
    data = ASTRONAUT.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "huge.png").write_bytes(_png_claiming(9000, 9000))
    return d


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def test_one_file_table(tiny, capsys):
    assert main(["predict", str(ASTRONAUT), "--model", tiny]) == 0
    out, err = capsys.readouterr()
    lines = _lines(out)
    assert lines[0].split()[:2] == ["file", "face"] and "label" in lines[0] and "confidence" in lines[0]
    assert len(lines) == 2 and "astronaut.jpg" in lines[1] and "(1" in lines[1]  # a box, not "whole image"
    assert "1 image(s), 1 face(s)" in err and "Traceback" not in err


def test_folder_is_searched_recursively(tiny, good_dir, capsys):
    assert main(["predict", str(good_dir), "--model", tiny]) == 0
    out, _ = capsys.readouterr()
    rows = _lines(out)[1:]
    names = " ".join(rows)
    assert "astronaut.jpg" in names and "sky.png" in names and "astro_small.png" in names
    assert "readme" not in names and "skipped.jpg" not in names
    assert any("no face found" in r and "sky.png" in r for r in rows)  # no face, no label
    sky = next(r for r in rows if "sky.png" in r)
    assert not any(c in sky for c in ("angry", "happy", "sad", "neutral"))


def test_on_no_face_whole_and_detector_none(tiny, good_dir, capsys):
    sky = good_dir / "sub" / "sky.png"
    assert main(["predict", str(sky), "--model", tiny, "--on-no-face", "whole"]) == 0
    out, err = capsys.readouterr()
    row = _lines(out)[1]
    assert "whole (no face found)" in row and "1 image(s) with no face found" in err
    assert main(["predict", str(ASTRONAUT), "--model", tiny, "--detector", "none"]) == 0
    out, err = capsys.readouterr()
    row = _lines(out)[1]
    assert "whole image" in row and "no face" not in out and "no face" not in err
    assert "1 classified as a whole image" in err
    with pytest.raises(SystemExit) as e:
        main(["predict", str(sky), "--model", tiny, "--on-no-face", "guess"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_search_option(tiny, tmp_path, capsys):
    import cv2
    from helpers_models import frame_of_faces

    photo = tmp_path / "small_faces.png"
    cv2.imwrite(str(photo), frame_of_faces(36))  # 36 px faces: the thorough search finds them, fast does not
    counts = {}
    for search in ("fast", "thorough"):
        assert main(["predict", str(photo), "--model", tiny, "--search", search, "--json", "-"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["search"] == search
        counts[search] = len(doc["images"][0]["faces"])
    assert counts["fast"] <= 2 and counts["thorough"] >= 7
    with pytest.raises(SystemExit) as e:
        main(["predict", str(photo), "--model", tiny, "--search", "slow"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice" in err and "Traceback" not in err


def test_globs(tiny, good_dir, capsys):
    assert main(["predict", str(good_dir / "**" / "*.png"), "--model", tiny]) == 0
    out, _ = capsys.readouterr()
    rows = _lines(out)[1:]
    assert len(rows) == 2 and all(".png" in r for r in rows)
    assert main(["predict", str(good_dir / "*.jpg"), str(good_dir / "astronaut.jpg"), "--model", tiny]) == 0
    out, _ = capsys.readouterr()
    assert len(_lines(out)) == 2  # the same file twice is read once


def test_json_and_csv_outputs(tiny, good_dir, tmp_path, capsys):
    js, cs = tmp_path / "out" / "r.json", tmp_path / "out" / "r.csv"
    assert main(["predict", str(good_dir), "--model", tiny, "--json", str(js), "--csv", str(cs)]) == 0
    doc = json.loads(js.read_text())
    assert doc["model"] == "tiny" and doc["detector"] == "blazeface" and len(doc["classes"]) == 7
    assert doc["on_no_face"] == "skip"
    assert len(doc["images"]) == 3 and doc["failed"] == []
    astro = next(i for i in doc["images"] if i["file"].endswith("astronaut.jpg"))
    assert (astro["width"], astro["height"]) == (512, 512)
    face = astro["faces"][0]
    assert len(face["box"]) == 4 and not face["whole_image"] and astro["result"] == "faces"
    assert len(face["keypoints"]) == 6 and all(len(p) == 2 for p in face["keypoints"])
    sky = next(i for i in doc["images"] if i["file"].endswith("sky.png"))
    assert sky["faces"] == [] and sky["no_face"] is True and sky["result"] == "no face found"
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-3
    with open(cs, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(max(1, len(i["faces"])) for i in doc["images"])  # one row for a no-face image
    assert list(rows[0])[:8] == ["file", "face", "x", "y", "w", "h", "label", "confidence"]
    assert {"angry", "happy", "neutral", "result", "right_eye_x", "mouth_center_y"} <= set(rows[0])
    for r in rows:
        if r["file"].endswith("sky.png"):
            assert r["result"] == "no face found" and r["label"] == "" and r["happy"] == ""
            continue
        assert r["label"] in doc["classes"] and 0 <= float(r["confidence"]) <= 1
        assert float(r["right_eye_x"]) < float(r["left_eye_x"])
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_annotate_writes_copies(tiny, good_dir, tmp_path, capsys):
    out_dir = tmp_path / "ann"
    assert main(["predict", str(good_dir), "--model", tiny, "--annotate", str(out_dir), "-q"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "" and "annotated copies" in err
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert written == ["astronaut.jpg", "sub/deeper/astro_small.png", "sub/sky.png"]
    a = cv2.imread(str(out_dir / "astronaut.jpg"))
    orig = cv2.imread(str(ASTRONAUT))
    assert a.shape == orig.shape and np.abs(a.astype(int) - orig).mean() > 1  # something was drawn


def test_annotate_never_overwrites_the_input(tiny, tmp_path, capsys):
    d = tmp_path / "same"
    d.mkdir()
    shutil.copy(ASTRONAUT, d / "a.jpg")
    before = (d / "a.jpg").read_bytes()
    assert main(["predict", str(d / "a.jpg"), "--model", tiny, "--annotate", str(d)]) == 0
    assert (d / "a.jpg").read_bytes() == before and (d / "a_annotated.jpg").exists()


def test_bad_files_are_reported_and_skipped(tiny, bad_files, tmp_path, capsys):
    js = tmp_path / "r.json"
    assert main(["predict", str(bad_files), "--model", tiny, "--json", str(js)]) == 1
    out, err = capsys.readouterr()
    assert len(_lines(out)) == 2 and "good.jpg" in out
    skipped = [x for x in _lines(err) if x.startswith("ferlab predict: skipped")]
    assert len(skipped) == 4
    for name in ("zero.jpg", "text.png", "truncated.jpg", "huge.png"):
        assert sum(name in x for x in skipped) == 1, name
    assert "4 input(s) could not be read" in err and "Traceback" not in err
    assert any("megapixel" in x for x in skipped) and any("0 bytes" in x for x in skipped)
    doc = json.loads(js.read_text())
    assert {f["kind"] for f in doc["failed"]} == {"empty", "unsupported", "corrupt", "too_large"}


def test_nothing_readable_exits_2(tiny, bad_files, tmp_path, capsys):
    (bad_files / "good.jpg").unlink()
    js = tmp_path / "none.json"
    assert main(["predict", str(bad_files), "--model", tiny, "--json", str(js)]) == 2
    _, err = capsys.readouterr()
    assert "none of the 4 file(s) could be read" in err and not js.exists()


def test_empty_folder_exits_2_with_a_message(tiny, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert main(["predict", str(empty), "--model", tiny]) == 2
    _, err = capsys.readouterr()
    assert "no images found in this folder" in err and str(empty) in err
    assert len(_lines(err)) <= 2


def test_missing_path_and_unmatched_glob(tiny, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.jpg"), "--model", tiny]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "*.jpg"), "--model", tiny]) == 2
    assert "no image files match" in capsys.readouterr().err
    assert main(["predict", str(ASTRONAUT), str(tmp_path / "nope.jpg"), "--model", tiny]) == 1


def test_detector_none_and_bad_options(tiny, capsys):
    assert main(["predict", str(ASTRONAUT), "--model", tiny, "--detector", "none"]) == 0
    assert "whole image" in capsys.readouterr().out
    assert main(["predict", str(ASTRONAUT), "--model", tiny, "--detector", "dlib"]) == 2
    assert "unknown face detector" in capsys.readouterr().err
    assert main(["predict", str(ASTRONAUT), "--model", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_subprocess_exit_codes_and_no_traceback(tiny, bad_files, tmp_path):
    env_cmd = [sys.executable, "-m", "ferlab.cli", "predict", str(bad_files), "--model", tiny]
    r = subprocess.run(env_cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "4 input(s) could not be read" in r.stderr
    empty = tmp_path / "void"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", "predict", str(empty), "--model", tiny],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "no images found" in r.stderr
