"""Issue 13, resource exhaustion from tiny inputs: strips, lying headers and near-cap images.

Each case is a few hundred bytes that used to cost seconds to minutes and gigabytes.  The time and memory
bounds are generous (a loaded 2-core machine passes them by a wide margin; the unfixed code missed them by
10x or more) and memory is measured in a fresh subprocess (peak RSS growth over the loaded model), so no
test depends on a quiet machine.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers_images import strip_png
from PIL import Image

from ferlab.errors import FerlabError
from ferlab.imageio import MAX_ASPECT, MAX_SIDE, ImageError, check_size, decode_image, decode_image_reduced


def noise_image(w: int, h: int, fmt: str, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h)).save(buf, format=fmt)
    return buf.getvalue()


def test_the_audit_files_are_what_the_issue_describes():
    assert len(strip_png(1, 65535)) == 207
    assert len(strip_png(400000, 1)) == 468
    assert len(strip_png(20000, 1)) == 100


@pytest.mark.parametrize("w,h", [(1, 65535), (400000, 1), (20000, 1), (32769, 1)])
def test_strips_refused_from_the_header(w, h):
    with pytest.raises(ImageError) as e:
        decode_image(strip_png(w, h))
    assert e.value.kind in ("too_large", "bad_shape")
    assert f"{w}x{h}" in str(e.value)


def test_jpeg_strip_refused():
    buf = io.BytesIO()
    Image.new("L", (16385, 8), 128).save(buf, "JPEG")  # over the side limit
    with pytest.raises(ImageError, match="side"):
        decode_image(buf.getvalue())


def test_shape_limits():
    check_size(MAX_SIDE, -(-MAX_SIDE // MAX_ASPECT))  # the most elongated accepted shape
    with pytest.raises(ImageError) as e:
        check_size(MAX_ASPECT * 10 + 1, 10)
    assert e.value.kind == "bad_shape"
    with pytest.raises(ImageError):
        check_size(MAX_SIDE + 1, 1000)


def test_reduced_decoding_and_scale():
    data = noise_image(1600, 1200, "JPEG")
    full, scale, size = decode_image_reduced(data, mode="gray")
    assert full.shape == (1200, 1600) and scale == 1.0 and size == (1600, 1200)
    small, scale, size = decode_image_reduced(data, mode="gray", max_side=400)
    assert max(small.shape) <= 400 and size == (1600, 1200)
    assert scale == pytest.approx(small.shape[1] / 1600)
    png, scale, _ = decode_image_reduced(noise_image(1000, 500, "PNG"), mode="bgr", max_side=300)
    assert png.shape[2] == 3 and max(png.shape[:2]) <= 300 and scale < 0.5


def test_whole_image_crop_and_face_crop_bounded_by_the_output():
    """Shrink before padding: a 1 x 400000 array (past imageio, e.g. from the Python API) costs ~nothing."""
    import tracemalloc

    from ferlab.inference.crop import crop_face, whole_image_crop

    strip = np.full((1, 400_000), 128, np.uint8)
    tracemalloc.start()
    out = whole_image_crop(strip)
    tall = crop_face(np.full((9000, 100), 7, np.uint8), (0, 0, 100, 9000), 0.02)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (48, 48) and tall.shape == (48, 48)
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB traced"  # unfixed: a 400000^2 square (160 GB)
    assert int(out.mean()) == 128 and int(tall.mean()) == 7
    with pytest.raises(FerlabError, match="larger than"):
        crop_face(np.zeros((10, 10), np.uint8), (0, 0, 1000, 1000), 0.0)


def test_small_images_are_cropped_exactly_as_before():
    """Within the bounds nothing changes (bit-identical crops of ordinary images)."""
    import cv2

    from ferlab.inference.crop import whole_image_crop

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (300, 500), dtype=np.uint8)
    padded = cv2.copyMakeBorder(img, 100, 100, 0, 0, cv2.BORDER_REPLICATE)
    expected = cv2.resize(padded, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.array_equal(whole_image_crop(img), expected)


def test_every_pipeline_failure_is_a_ferlab_error(monkeypatch):
    """cv2.error (or anything else) inside detection, cropping or the classifier never escapes raw."""
    import cv2

    from ferlab.inference.recognizer import Recognizer

    rec = Recognizer("fast")
    img = np.full((120, 160, 3), 90, np.uint8)

    def boom(*a, **k):
        raise cv2.error("OpenCV(4.x) error: (-4:Insufficient memory) Failed to allocate 160000000000 bytes")

    monkeypatch.setattr(rec.detector, "detect", boom)
    with pytest.raises(FerlabError) as e:
        rec.predict(img)
    assert e.value.kind == "recognition" and "Insufficient memory" in str(e.value)
    rec = Recognizer("fast", detector="none")  # the whole image is the face: the classifier always runs
    monkeypatch.setattr(rec.classifier, "predict_proba", lambda x: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(FerlabError) as e:
        rec.predict(img)
    assert e.value.kind == "too_large"


_BUDGET_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from ferlab.errors import FerlabError
    from ferlab.inference.recognizer import Recognizer
    data = open(sys.argv[1], "rb").read()
    rec = Recognizer("fast", threads=1)
    rec.predict(bytes(open(sys.argv[2], "rb").read()))  # warm up: model loaded, first inference done
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        faces = rec.predict(data)
        result = f"{len(faces)} faces"
    except FerlabError as e:
        result = f"FerlabError {e.kind}"
    cpu = time.process_time() - c0
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"cpu_s": cpu, "wall_s": time.perf_counter() - t0, "grown_mb": grown, "result": result}))
""")


def _budget(tmp_path, data: bytes) -> dict:
    """CPU time (all threads: what the work costs, whatever else the machine runs) and peak-RSS growth of
    ``Recognizer.predict(data)`` in a fresh process (model already loaded)."""
    src, warm = tmp_path / "input.bin", tmp_path / "warm.png"
    src.write_bytes(data)
    warm.write_bytes(noise_image(64, 48, "PNG"))
    out = subprocess.run([sys.executable, "-c", _BUDGET_SCRIPT, str(src), str(warm)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("w,h", [(1, 65535), (400000, 1)])
def test_strip_budget_in_a_subprocess(tmp_path, w, h):
    """The 207-byte 1x65535 PNG took 115 s and 4.2 GB; the 468-byte 400000x1 one crashed OpenCV."""
    r = _budget(tmp_path, strip_png(w, h))
    assert r["result"].startswith("FerlabError"), r
    assert r["cpu_s"] < 10 and r["grown_mb"] < 200, r


def test_accepted_strip_at_the_shape_limit_budget(tmp_path):
    """The most elongated accepted image (16384 x 328): bounded by the output, not padded to 16384^2."""
    r = _budget(tmp_path, strip_png(MAX_SIDE, -(-MAX_SIDE // MAX_ASPECT)))
    assert r["result"].endswith("faces"), r
    assert r["cpu_s"] < 20 and r["grown_mb"] < 300, r


def test_near_cap_png_budget(tmp_path):
    """A 6300 x 6300 PNG (about 40 MP, ~100 KB) cost 12.5 s and ~900 MB per request: now bounded."""
    data = strip_png(6300, 6300)
    assert len(data) < 200_000
    r = _budget(tmp_path, data)
    assert r["result"].endswith("faces"), r
    assert r["cpu_s"] < 30 and r["grown_mb"] < 400, r


def test_near_cap_jpeg_budget(tmp_path):
    """A 40 MP JPEG: decoded (straight to grey when the detector does not use colour) and detected on a
    2 MP copy; colour costs about 10 bytes a pixel (imageio's stated budget), grey about 3."""
    r = _budget(tmp_path, noise_image(6300, 6300, "JPEG"))
    assert r["result"].endswith("faces"), r
    assert r["cpu_s"] < 30 and r["grown_mb"] < 500, r


#: found by benchmarks/fuzz_images.py (seed 0, case 275): a 150-byte PNG claiming 6300 x 6300 whose IDAT is a
#: broken zlib stream.  Pillow raises on the first load() and returns a half-decoded black picture on a
#: second one; reading the EXIF block before decoding triggered that first load, so the image "decoded".
BROKEN_NEAR_CAP_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d494844520000189c0000189c0800000000efd76ab60000004d4944415478da636060e7139551d632"
    "6460e612949057d3356160e3159156d2343067e01410975baa43b5b6e8e1ddf7756917b463a07153d531b662e0119652d4d037b3"
    "65e0179355d136b2746010925450d733b5716600ebb5b07703000eb708c138a86b220000000049454e44ae426082")


def test_broken_png_is_an_error_not_a_black_picture():
    for mode in ("gray", "bgr"):
        with pytest.raises(ImageError) as e:
            decode_image(BROKEN_NEAR_CAP_PNG, mode=mode)
        assert e.value.kind == "corrupt"


def test_exif_rotation_reported_in_the_full_size():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the picture is 40 wide, 64 high once rotated
    Image.new("RGB", (64, 40), (10, 20, 30)).save(buf, "JPEG", exif=exif.tobytes())
    img, scale, size = decode_image_reduced(buf.getvalue(), mode="gray")
    assert img.shape == (64, 40) and size == (40, 64) and scale == 1.0
