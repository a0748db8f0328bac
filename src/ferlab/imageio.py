"""The one place that decodes untrusted image bytes.

Every image that enters ferlab (folder datasets, ``ferlab predict``, the HTTP API) is decoded here:
- only the formats in ``ALLOWED_FORMATS`` are accepted, recognised from the bytes (not the file name);
- the size is read from the header and refused *before* decoding: more than ``MAX_PIXELS`` pixels
  (decompression bombs), a side over ``MAX_SIDE`` or a shape more elongated than ``MAX_ASPECT`` : 1
  (a 207-byte 1 x 65535 PNG is a valid image, and no face);
- ``max_side`` decodes a large image reduced (JPEG: DCT scaling through Pillow's ``draft``, so the full
  picture never exists in memory; other formats: ``reduce`` right after loading), which bounds the memory
  and time of everything downstream;
- truncated or malformed data is an error, never a half-decoded picture; *any* failure inside the decoder
  (Pillow raises many exception types on hostile input) becomes an ``ImageError``.
Errors are ``ImageError`` (a ``FerlabError``) with a ``kind`` the HTTP layer maps to a status code.

Files are read by ``read_file``: regular files only (a device such as ``/dev/zero`` never ends, a FIFO named
``x.jpg`` blocks its reader), never more than ``MAX_FILE_BYTES``.  The one input walker lives here too
(``walk_inputs``, ``folder_files``, ``read_list_file``): files, folders, globs and list files -> regular files,
for ``ferlab predict``, ``ferlab batch`` and the data floor's photo folders.

Memory budget (peak, measured): a grey decode costs about 3 bytes per pixel (120 MB at ``MAX_PIXELS`` = 40 M;
large JPEGs go straight to grey), a colour one about 10 (Pillow holds RGB as 4 bytes a pixel, plus one copy
out and the result: 400 MB at 40 M); with ``max_side`` (the HTTP API: 4096) a JPEG is never decoded at full
size.  ``tests/test_hardening_images.py`` checks these bounds in a subprocess.
"""

from __future__ import annotations

import glob
import io
import math
import os
import stat
import warnings
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np

from .errors import FerlabError

ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF", "PPM"})
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm"})
MAX_PIXELS = 40_000_000
#: longest accepted side, in pixels (a 16384 x 2441 panorama is accepted; a 20000 x 1 strip is not)
MAX_SIDE = 16_384
#: most elongated accepted shape, long side : short side (panoramas are ~4-10 : 1; faces are never 50 : 1)
MAX_ASPECT = 50
MAX_FILE_BYTES = 200 * 1024 * 1024
#: above this many pixels a JPEG wanted in grey is decoded straight to grey (memory)
LARGE_PIXELS = 4_000_000


class ImageError(FerlabError):
    """An image that cannot be used.  ``kind``: empty | unsupported | too_large | bad_shape | corrupt | missing."""

    def __init__(self, message: str, kind: str = "corrupt"):
        super().__init__(message, kind)


def check_size(w: int, h: int, *, name: str = "image", max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a ``w`` x ``h`` image by the limits above (``ImageError``), before any pixel is decoded."""
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image has no pixels ({w}x{h})", "corrupt")
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} = {w * h / 1e6:.1f} megapixels, more than the "
                         f"{max_pixels / 1e6:.0f} megapixel limit", "too_large")
    if max(w, h) > MAX_SIDE:
        raise ImageError(f"{name}: {w}x{h} has a side over the {MAX_SIDE} pixel limit", "too_large")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{name}: {w}x{h} is a strip, not a picture (more elongated than "
                         f"{MAX_ASPECT}:1)", "bad_shape")


def _open(data: bytes, name: str, max_pixels: int):
    """Pillow image of ``data`` with its header checked (format, size); nothing decoded yet."""
    from PIL import Image

    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image too large to decode safely", "too_large") from None
    except MemoryError:
        raise ImageError(f"{name}: image header asks for more memory than is available", "too_large") from None
    except Exception:  # noqa: BLE001 - Pillow raises assorted types on hostile headers; all mean "not an image"
        raise ImageError(f"{name}: not an image in a supported format "
                         f"({', '.join(sorted(ALLOWED_FORMATS))})", "unsupported") from None
    fmt = (img.format or "").upper()
    if fmt not in ALLOWED_FORMATS:
        raise ImageError(f"{name}: image format {fmt or 'unknown'} is not accepted "
                         f"(allowed: {', '.join(sorted(ALLOWED_FORMATS))})", "unsupported")
    try:
        w, h = (int(v) for v in img.size)
    except Exception:  # noqa: BLE001
        raise ImageError(f"{name}: unreadable image size", "corrupt") from None
    check_size(w, h, name=name, max_pixels=max_pixels)
    return img


def _reduce_factor(w: int, h: int, max_side: int | None) -> int:
    if not max_side or max(w, h) <= max_side:
        return 1
    return math.ceil(max(w, h) / max_side)


def _decode(img, name: str, mode: str, max_side: int | None) -> tuple[np.ndarray, bool]:
    """(pixels, whether EXIF rotation swapped width and height).  ``img.load()`` runs once: Pillow answers a
    second load of a broken PNG with a half-decoded picture, so nothing may touch the pixels (nor the EXIF
    block, which Pillow may read by loading the image) before it."""
    from PIL import Image, ImageOps

    fmt = (img.format or "").upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            w, h = img.size
            k = _reduce_factor(w, h, max_side)
            if fmt == "JPEG" and (k > 1 or (mode == "gray" and w * h > LARGE_PIXELS)):
                # DCT scaling decodes at 1/2, 1/4 or 1/8 size, never the full one; a large picture wanted in
                # grey is decoded straight to luma (no full-size RGB copy; may differ by one grey level)
                img.draft("L" if mode == "gray" and w * h > LARGE_PIXELS else img.mode,
                          (max(1, w // k), max(1, h // k)))
            img.load()
            k = _reduce_factor(*img.size, max_side)
            if k > 1:
                img = img.reduce(k)
            orientation = _orientation(img)
            if orientation not in (None, 1):  # exif_transpose copies even when there is nothing to do
                img = ImageOps.exif_transpose(img) or img
            check_size(*img.size, name=name, max_pixels=MAX_PIXELS)
            # one copy out of Pillow, the channel swap in place: peak ~2x the decoded picture
            want = "L" if mode == "gray" else "RGB"
            conv = img if img.mode == want else img.convert(want)
            if conv is not img:
                img.close()
            out = np.array(conv, dtype=np.uint8)
            conv.close()
            del img, conv
            if mode == "bgr":
                import cv2

                cv2.cvtColor(out, cv2.COLOR_RGB2BGR, dst=out)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this {fmt} image", "too_large") from None
    except Exception as e:  # noqa: BLE001 - truncated, malformed or lying data: never a half-decoded picture
        raise ImageError(f"{name}: truncated or corrupt {fmt} image ({type(e).__name__}: {str(e)[:80]})",
                         "corrupt") from None
    if out.ndim not in (2, 3) or min(out.shape[:2]) == 0:
        raise ImageError(f"{name}: decoded to an empty picture", "corrupt")
    return np.ascontiguousarray(out), orientation in (5, 6, 7, 8)


def decode_image(data: bytes, *, name: str = "image", mode: str = "bgr", max_pixels: int = MAX_PIXELS,
                 max_side: int | None = None) -> np.ndarray:
    """Decode image bytes to a uint8 array: ``mode`` "bgr" / "rgb" (H, W, 3) or "gray" (H, W).

    ``max_side``: decode reduced so that the longest side is at most this (an integer factor; see
    ``decode_image_reduced`` for the factor, to map coordinates back)."""
    return decode_image_reduced(data, name=name, mode=mode, max_pixels=max_pixels, max_side=max_side)[0]


def decode_image_reduced(data: bytes, *, name: str = "image", mode: str = "bgr", max_pixels: int = MAX_PIXELS,
                         max_side: int | None = None) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(array, scale, (width, height) of the full image after EXIF rotation): ``scale`` = array size / full
    size (1.0 when not reduced), so a box (x, y, w, h) in the array is (x / scale, ...) in the image."""
    if mode not in ("bgr", "rgb", "gray"):
        raise FerlabError(f"image mode must be bgr, rgb or gray (got {mode!r})", "bad_option")
    img = _open(bytes(data), name, max_pixels)
    w, h = img.size
    out, swapped = _decode(img, name, mode, max_side)
    if swapped:
        w, h = h, w
    scale = out.shape[1] / w if w else 1.0
    return out, (1.0 if out.shape[1] == w and out.shape[0] == h else scale), (w, h)


def _orientation(img) -> int | None:
    try:
        return img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored by exif_transpose as well
        return None



def read_file(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of a *regular* file, at most ``limit`` of them (default ``MAX_FILE_BYTES``) (``ImageError`` otherwise; errors name the file).

    Devices (``/dev/zero`` never ends), FIFOs (a reader blocks until a writer comes) and sockets are refused
    from the opened descriptor's own ``fstat`` (opened non-blocking, so a FIFO cannot hold the open either);
    the size on disk is not trusted: at most ``limit`` + 1 bytes are read, and one more than ``limit`` is a
    refusal (a file growing while it is read, a ``/proc`` file that says it holds 0 bytes)."""
    p = Path(path)
    limit = MAX_FILE_BYTES if limit is None else limit
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    too_large = f"{p}: file larger than the {limit / 2**20:.0f} MB limit"
    try:
        fd = os.open(p, flags)
    except IsADirectoryError:
        raise ImageError(f"{p}: is a folder, not an image", "unsupported") from None
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file", "missing") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied", "missing") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or type(e).__name__})", "missing") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{p}: is a folder, not an image", "unsupported")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{p}: not a regular file (a device, FIFO or socket): not read", "unsupported")
        if st.st_size > limit:
            raise ImageError(f"{p}: file of {st.st_size / 2**20:.0f} MB is too large "
                             f"(limit {limit / 2**20:.0f} MB)", "too_large")
        chunks, n = [], 0
        while n <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or type(e).__name__})", "missing") from None
    finally:
        os.close(fd)
    if n > limit:
        raise ImageError(too_large, "too_large")
    return b"".join(chunks)


def read_image(path: str | os.PathLike, *, mode: str = "bgr", max_pixels: int = MAX_PIXELS,
               max_side: int | None = None) -> np.ndarray:
    """Read (``read_file``: regular files only, at most ``MAX_FILE_BYTES``) and decode an image file (see
    ``decode_image``); errors name the file."""
    p = Path(path)
    data = read_file(p)
    return decode_image(data, name=str(p), mode=mode, max_pixels=max_pixels, max_side=max_side)


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
            check_size(*image.size)
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
    check_size(arr.shape[1], arr.shape[0], name=f"array of shape {arr.shape}")
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


# ------------------------------------------------------------------------------------------- the input walker
_GLOB_CHARS = frozenset("*?[")
#: the longest list file (``--list``, ``@FILE``) read
MAX_LIST_BYTES = 64 * 1024 * 1024


def is_regular_file(path: str | os.PathLike) -> bool:
    """A regular file (symbolic links followed): not a folder, device, FIFO or socket, nor a broken link."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def folder_files(folder: str | os.PathLike, suffixes: Collection[str] = IMAGE_SUFFIXES) -> tuple[list[Path], int]:
    """The regular files under ``folder`` whose suffix (any case) is in ``suffixes``, recursively, hidden
    files and folders skipped, in ``os.walk`` order (a folder's files sorted by name, then its sub-folders
    sorted by name); and how many other regular files were passed over.  Devices, FIFOs, sockets and broken
    links are neither listed nor counted (a FIFO named ``x.jpg`` would block its reader)."""
    found, other = [], 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if not is_regular_file(p):
                continue
            if p.suffix.lower() in suffixes:
                found.append(p)
            else:
                other += 1
    return found, other


def read_list_file(path: str | os.PathLike) -> list[str]:
    """The entries of a list file: one path a line, blank lines and ``#`` comments skipped, relative paths
    taken relative to the list file's folder (``FerlabError`` in one line when it cannot be read).  A pipe
    is accepted (``--list <(find ...)``), but never more than ``MAX_LIST_BYTES`` are read (``/dev/zero``)."""
    lp = Path(path)
    try:
        if lp.is_dir():
            raise IsADirectoryError(21, "is a folder")
        with open(lp, "rb") as fh:
            data = fh.read(MAX_LIST_BYTES + 1)
        if len(data) > MAX_LIST_BYTES:
            raise FerlabError(f"{path}: list file larger than {MAX_LIST_BYTES // 2**20} MB", "input")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise FerlabError(f"{path}: list file not found", "input") from None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise FerlabError(f"{path}: cannot read the list file ({why})", "input") from None
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s if Path(s).is_absolute() else str(lp.parent / s))
    return out


class _InputWalker:
    """The state of one ``walk_inputs``: the files found in order, each once (by its resolved path), and the
    problems."""

    def __init__(self, suffixes: Collection[str], noun: str, folder_hint: str, sort_folders: bool):
        self.suffixes, self.noun, self.folder_hint, self.sort_folders = suffixes, noun, folder_hint, sort_folders
        self.singular = " or ".join(w.removesuffix("s") for w in noun.split(" or "))  # "image or video"
        self.files: list[tuple[Path, Path | None]] = []
        self.problems: list[tuple[str, str]] = []
        self.seen: set[Path] = set()

    def add(self, path: Path, root: Path | None) -> None:
        key = path.resolve()
        if key not in self.seen:
            self.seen.add(key)
            self.files.append((path, root))

    def add_dir(self, d: Path) -> int:
        found = folder_files(d, self.suffixes)[0]
        for q in sorted(found) if self.sort_folders else found:
            self.add(q, d)
        return len(found)

    def add_glob(self, pattern: str) -> int:
        """Its folders searched, its regular files kept when their suffix is wanted: how many files found."""
        n = 0
        for m in sorted(glob.glob(pattern, recursive=True)):
            mp = Path(m)
            if mp.is_dir():
                n += self.add_dir(mp)
            elif mp.suffix.lower() in self.suffixes and is_regular_file(mp):
                self.add(mp, None)
                n += 1
        return n

    def add_input(self, arg: str) -> None:
        p = Path(arg)
        if p.is_dir():
            if self.add_dir(p) == 0:
                self.problems.append((arg, f"{arg}: no {self.noun} found in this folder{self.folder_hint}"))
        elif p.exists():
            if is_regular_file(p):
                self.add(p, None)
            else:
                self.problems.append((arg, f"{arg}: not a regular file (a device, FIFO or socket): not read"))
        elif _GLOB_CHARS & set(arg):
            if self.add_glob(arg) == 0:
                self.problems.append((arg, f"{arg}: no {self.singular} files match this pattern"))
        else:
            self.problems.append((arg, f"{arg}: no such file or folder"))


def walk_inputs(inputs: Iterable[str], suffixes: Collection[str] = IMAGE_SUFFIXES, *,
                list_files: Iterable[str] = (), noun: str = "images", folder_hint: str = "",
                sort_folders: bool = False) -> tuple[list[tuple[Path, Path | None]], list[tuple[str, str]]]:
    """The one input walker of ``ferlab predict``, ``ferlab batch`` and the photo folders: files, folders,
    globs and list files -> (``(file, folder it was found in or None)`` in order, each file once (by its
    resolved path), and the problems ``(input, one-line message)``).

    - a folder is searched recursively for ``suffixes`` (``folder_files``; ``sort_folders``: its files sorted
      by path instead of folder by folder);
    - a file named explicitly is kept whatever its suffix (the decoder checks the bytes), if it is a regular
      file: a device (``/dev/zero``), FIFO or socket is a problem, never read;
    - a glob (``*``, ``?``, ``[``) that names no existing path is expanded (``**`` recursive): its folders are
      searched, its regular files kept when their suffix is in ``suffixes``;
    - ``list_files`` (``read_list_file``): each entry is treated as an input of its own.
    ``noun`` names what is looked for in the messages ("images", "images or videos")."""
    walker = _InputWalker(suffixes, noun, folder_hint, sort_folders)
    for arg in inputs:
        walker.add_input(arg)
    for lf in list_files:
        for entry in read_list_file(lf):
            walker.add_input(entry)
    return walker.files, walker.problems
