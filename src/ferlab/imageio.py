"""The one place that decodes untrusted image bytes.

Every image that enters ferlab (folder datasets, ``ferlab predict``, the HTTP API) is decoded here:
- only the formats in ``ALLOWED_FORMATS`` are accepted, recognised from the bytes (not the file name);
- the pixel count is read from the header and refused above ``MAX_PIXELS`` *before* decoding
  (no decompression bombs);
- truncated or malformed data is an error, never a half-decoded picture.
Errors are ``ImageError`` (a ``FerlabError``) with a ``kind`` the HTTP layer maps to a status code.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import FerlabError

ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF", "PPM"})
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm"})
MAX_PIXELS = 40_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024


class ImageError(FerlabError):
    """An image that cannot be used.  ``kind``: empty | unsupported | too_large | corrupt | missing."""

    def __init__(self, message: str, kind: str = "corrupt"):
        super().__init__(message)
        self.kind = kind


def decode_image(data: bytes, *, name: str = "image", mode: str = "bgr", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to a uint8 array: ``mode`` "bgr" / "rgb" (H, W, 3) or "gray" (H, W)."""
    from PIL import Image, ImageOps

    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large to decode safely", "too_large") from None
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError(f"{name}: not an image in a supported format "
                         f"({', '.join(sorted(ALLOWED_FORMATS))})", "unsupported") from None
    except Image.DecompressionBombWarning:
        raise ImageError(f"{name}: image too large to decode safely", "too_large") from None
    fmt = (img.format or "").upper()
    if fmt not in ALLOWED_FORMATS:
        raise ImageError(f"{name}: image format {fmt or 'unknown'} is not accepted "
                         f"(allowed: {', '.join(sorted(ALLOWED_FORMATS))})", "unsupported")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image has no pixels", "corrupt")
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} = {w * h / 1e6:.1f} megapixels, more than the "
                         f"{max_pixels / 1e6:.0f} megapixel limit", "too_large")
    try:
        img.load()
        img = ImageOps.exif_transpose(img) or img
        if mode == "gray":
            out = np.asarray(img.convert("L"), dtype=np.uint8)
        else:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
            out = rgb[:, :, ::-1] if mode == "bgr" else rgb
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{name}: truncated or corrupt {fmt} image ({str(e)[:80]})", "corrupt") from None
    return np.ascontiguousarray(out)


def read_image(path: str | os.PathLike, *, mode: str = "bgr", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file (see ``decode_image``); errors name the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{p}: file of {size / 2**20:.0f} MB is too large", "too_large")
        data = p.read_bytes()
    except IsADirectoryError:
        raise ImageError(f"{p}: is a folder, not an image", "unsupported") from None
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file", "missing") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied", "missing") from None
    return decode_image(data, name=str(p), mode=mode, max_pixels=max_pixels)


def to_array(image, *, mode: str = "bgr", channel_order: str = "bgr") -> np.ndarray:
    """Any accepted input -> uint8 array in ``mode``.

    Accepts a path (str / PathLike), bytes, a PIL image, or a numpy array (H, W) grayscale,
    (H, W, 3) in ``channel_order`` ("bgr" as OpenCV gives, or "rgb"), or (H, W, 4) with alpha.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, mode=mode)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), mode=mode)
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"image of {w * h / 1e6:.1f} megapixels is over the limit", "too_large")
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
            image, channel_order = rgb, "rgb"
    except ImportError:  # pragma: no cover - Pillow is a base dependency
        pass
    if not isinstance(image, np.ndarray):
        raise ImageError(f"cannot use an object of type {type(image).__name__} as an image", "unsupported")
    arr = image
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3) or min(arr.shape[:2]) == 0:
        raise ImageError(f"array of shape {arr.shape} is not an image (H, W), (H, W, 3) or (H, W, 4)", "unsupported")
    if arr.ndim == 2:
        if mode == "gray":
            return np.ascontiguousarray(arr)
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    if mode == "gray":
        r, g, b = (arr[..., 2], arr[..., 1], arr[..., 0]) if channel_order == "bgr" else (
            arr[..., 0], arr[..., 1], arr[..., 2])
        return np.round(0.299 * r + 0.587 * g + 0.114 * b).astype(np.uint8)
    if mode == channel_order:
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(arr[:, :, ::-1])


def encode_png(image: np.ndarray) -> bytes:
    """Encode a uint8 BGR or grayscale array as PNG."""
    from PIL import Image

    arr = image if image.ndim == 2 else image[:, :, ::-1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
