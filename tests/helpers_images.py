"""Test images made here: PNGs written byte by byte (strips, lying headers), small random PNGs, a face photo."""

from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
FER_SAMPLE = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013_sample.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def strip_png(w: int, h: int) -> bytes:
    """A valid 8-bit grey PNG of w x h mid-grey pixels: 207 bytes for 1 x 65535, 468 for 400000 x 1."""
    raw = b"".join(b"\x00" + b"\x80" * w for _ in range(h))
    return (PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def png_bytes(w: int = 64, h: int = 48) -> bytes:
    """A w x h RGB PNG of random pixels (always the same ones)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def face_photo() -> np.ndarray:
    """BGR photo with one face Haar finds: the astronaut example, else an upscaled, padded FER2013 face."""
    import cv2
    import pytest

    if ASTRONAUT.exists():
        return cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    with open(FER_SAMPLE) as f:
        for row in csv.DictReader(f):
            face = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
            big = cv2.copyMakeBorder(cv2.resize(face, (200, 200), interpolation=cv2.INTER_CUBIC),
                                     140, 140, 220, 220, cv2.BORDER_REPLICATE)
            if len(cascade.detectMultiScale(big, 1.1, 5, minSize=(40, 40))) == 1:
                return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    pytest.fail("no face image available (examples/astronaut.jpg or the FER2013 sample)")
