"""ferlab.imageio: the one module that decodes untrusted image bytes."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from ferlab.errors import FerlabError
from ferlab.imageio import (
    MAX_PIXELS,
    ImageError,
    decode_image,
    encode_png,
    is_image_path,
    read_image,
    to_array,
)


def _img(w=64, h=48, seed=0) -> np.ndarray:
    """A smooth RGB test picture (JPEG-friendly)."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 255 // (w + h)], -1)
    return rgb.astype(np.uint8)


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with a few bytes of pixel data (a decompression-bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


# -- bad inputs ----------------------------------------------------------------------------------------------

def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert e.value.kind == "empty" and str(p) in str(e.value)


def test_non_image_with_image_name(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is text, not a picture\n" * 10)
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert e.value.kind == "unsupported" and "notes.png" in str(e.value)
    assert isinstance(e.value, FerlabError)


def test_svg_is_refused(tmp_path):
    p = tmp_path / "face.jpg"
    p.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert e.value.kind == "unsupported"


def test_ico_format_not_in_allow_list(tmp_path):
    p = tmp_path / "icon.png"  # the name lies: the bytes are an ICO
    p.write_bytes(_encode(_img(32, 32), "ICO"))
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert e.value.kind == "unsupported" and "ICO" in str(e.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_an_error_not_half_a_picture(tmp_path, fmt):
    data = _encode(_img(256, 192), fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert e.value.kind == "corrupt" and "cut." in str(e.value)


def test_garbage_after_a_valid_signature(tmp_path):
    data = _encode(_img(), "PNG")
    p = tmp_path / "bad.png"
    p.write_bytes(data[:40] + bytes(range(256)) * 4)
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert e.value.kind in ("corrupt", "unsupported")


def test_over_40_megapixels_refused_before_decoding():
    data = _png_header_only(8000, 6000)  # 48 MP claimed, ~100 bytes on disk
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImageError) as e:
            decode_image(data, name="bomb.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.kind == "too_large" and "megapixel" in str(e.value) and "bomb.png" in str(e.value)
    assert peak < 5_000_000, f"{peak} bytes allocated: the image was decoded"
    assert time.perf_counter() - t0 < 1.0
    assert 8000 * 6000 > MAX_PIXELS


def test_gigapixel_header_refused():
    with pytest.raises(ImageError) as e:
        decode_image(_png_header_only(100_000, 100_000), name="huge.png")
    assert e.value.kind == "too_large"


def test_max_pixels_is_a_parameter():
    data = _encode(_img(100, 100), "PNG")
    with pytest.raises(ImageError) as e:
        decode_image(data, max_pixels=5000)
    assert e.value.kind == "too_large"
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "nope.jpg")
    assert e.value.kind == "missing" and "nope.jpg" in str(e.value)
    with pytest.raises(ImageError) as e:
        read_image(tmp_path)
    assert e.value.kind == "unsupported"


def test_file_size_cap(tmp_path, monkeypatch):
    import ferlab.imageio as imageio

    p = tmp_path / "big.png"
    p.write_bytes(_encode(_img(), "PNG"))
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", 100)
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert e.value.kind == "too_large"


def test_pil_image_over_the_pixel_cap():
    class ClaimsToBeHuge(Image.Image):  # only its size is asked for before anything is converted
        @property
        def size(self):
            return (8000, 6000)

    with pytest.raises(ImageError) as e:
        to_array(ClaimsToBeHuge())
    assert e.value.kind == "too_large"


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((2, 3, 4, 5), np.uint8),
                                 np.zeros((0, 5), np.uint8), np.zeros(7, np.uint8)])
def test_arrays_that_are_not_images(bad):
    with pytest.raises(ImageError) as e:
        to_array(bad)
    assert e.value.kind == "unsupported"


def test_unknown_object_type():
    with pytest.raises(ImageError):
        to_array({"not": "an image"})


# -- good inputs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM"])
def test_allowed_formats_decode_losslessly_enough(fmt):
    rgb = _img()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(_encode(rgb, fmt, **kw), mode="rgb")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    tol = 40 if fmt == "GIF" else 0  # GIF is palette-quantised
    assert np.abs(out.astype(int) - rgb).max() <= tol


def test_jpeg_modes_agree(tmp_path):
    data = _encode(_img(), "JPEG", quality=95)
    bgr, rgb, gray = (decode_image(data, mode=m) for m in ("bgr", "rgb", "gray"))
    assert bgr.shape == (48, 64, 3) and gray.shape == (48, 64)
    assert np.array_equal(bgr, rgb[:, :, ::-1])
    expect = np.round(rgb @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(gray.astype(int) - expect).max() <= 1
    p = tmp_path / "x.jpg"
    p.write_bytes(data)
    assert np.array_equal(read_image(p), bgr)
    assert np.array_equal(to_array(str(p)), bgr) and np.array_equal(to_array(p), bgr)
    assert np.array_equal(to_array(data), bgr) and np.array_equal(to_array(bytearray(data)), bgr)


def test_exif_rotation_is_applied():
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)  # left half red, right half blue
    rgb[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(rgb, "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data, mode="rgb")
    assert out.shape == (80, 40, 3)  # portrait after rotation
    assert out[5, 20, 0] > 200 and out[5, 20, 2] < 60  # red on top
    assert out[75, 20, 2] > 200 and out[75, 20, 0] < 60  # blue at the bottom


def test_numpy_gray_bgr_rgb_rgba_float():
    rgb = _img()
    bgr = rgb[:, :, ::-1].copy()
    gray = to_array(bgr, mode="gray")
    assert gray.shape == (48, 64)
    assert np.array_equal(to_array(rgb, mode="gray", channel_order="rgb"), gray)
    assert np.array_equal(to_array(bgr), bgr)
    assert np.array_equal(to_array(rgb, channel_order="rgb"), bgr)
    assert np.array_equal(to_array(bgr, mode="rgb"), rgb)
    rgba = np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)])
    assert np.array_equal(to_array(rgba), bgr)
    g3 = to_array(gray)
    assert g3.shape == (48, 64, 3) and np.array_equal(g3[:, :, 1], gray)
    assert np.array_equal(to_array(gray, mode="gray"), gray)
    assert np.array_equal(to_array(gray[:, :, None], mode="gray"), gray)
    f01 = bgr.astype(np.float32) / 255.0
    assert np.abs(to_array(f01).astype(int) - bgr).max() <= 1
    f255 = bgr.astype(np.float64)
    assert np.array_equal(to_array(f255), bgr)
    assert to_array(np.full((4, 4), 300, np.int32), mode="gray").max() == 255  # clipped


def test_pil_inputs():
    rgb = _img()
    bgr = rgb[:, :, ::-1]
    assert np.array_equal(to_array(Image.fromarray(rgb)), bgr)
    assert np.array_equal(to_array(Image.fromarray(rgb), mode="rgb"), rgb)
    rgba = Image.fromarray(rgb).convert("RGBA")
    assert np.array_equal(to_array(rgba), bgr)
    gray_pil = Image.fromarray(rgb).convert("L")
    out = to_array(gray_pil, mode="gray")
    assert out.shape == (48, 64) and np.abs(out.astype(int) - np.asarray(gray_pil)).max() <= 1
    pal = Image.fromarray(rgb).convert("P")
    assert to_array(pal).shape == (48, 64, 3)


def test_encode_png_roundtrip():
    bgr = _img()[:, :, ::-1].copy()
    assert np.array_equal(decode_image(encode_png(bgr)), bgr)
    g = bgr[:, :, 0].copy()
    assert np.array_equal(decode_image(encode_png(g), mode="gray"), g)


def test_is_image_path():
    assert is_image_path("a/b/C.JPG") and is_image_path("x.webp") and is_image_path("x.tiff")
    assert not is_image_path("x.txt") and not is_image_path("x.svg") and not is_image_path("x.ico")
