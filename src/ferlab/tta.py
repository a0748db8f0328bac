"""Test-time augmentation (TTA): the one home of the views' geometry (numpy only).

A view is a ``crop`` x ``crop`` window of an image (N, H, W), optionally mirrored left-right (the last axis):

- ``none``: the centre crop, whose corner is ``((H - crop) // 2, (W - crop) // 2)``;
- ``flip``: the centre crop, then its mirror image;
- ``tencrop``: the top-left, top-right, bottom-left and bottom-right crops and the centre crop, then the
  mirror images of these five, in that order.

Both users average the views' softmax probabilities (not their logits): ``training.forward`` (torch models:
validation, ``ferlab evaluate RUN``, teachers) and ``evaluation.evaluate`` (ONNX models, whose graph
centre-crops by itself, so each view is placed where that crop finds it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import FerlabError

TTA_MODES = ("none", "flip", "tencrop")


class Box(NamedTuple):
    """One view: the crop's top-left corner and whether it is mirrored."""
    top: int
    left: int
    mirror: bool


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise FerlabError(f"unknown test-time augmentation {tta!r} (none, flip, tencrop)")
    return tta


def boxes(height: int, width: int, crop: int, tta: str = "none") -> list[Box]:
    """The views of ``tta`` on a ``height`` x ``width`` image, in the order their predictions are listed."""
    check_tta(tta)
    if crop > height or crop > width:
        raise FerlabError(f"cannot crop {crop}x{crop} views out of {height}x{width} images")
    dy, dx = height - crop, width - crop
    centre = (dy // 2, dx // 2)
    corners = [centre] if tta != "tencrop" else [(0, 0), (0, dx), (dy, 0), (dy, dx), centre]
    mirrors = (False,) if tta == "none" else (False, True)
    return [Box(top, left, mirror) for mirror in mirrors for top, left in corners]


def view(images: np.ndarray, box: Box, crop: int) -> np.ndarray:
    """The view ``box`` of images (..., H, W): (..., crop, crop), a numpy view (no copy)."""
    v = images[..., box.top:box.top + crop, box.left:box.left + crop]
    return v[..., ::-1] if box.mirror else v


def views(images: np.ndarray, crop: int, tta: str = "none") -> np.ndarray:
    """(V, N, crop, crop) views of images (N, H, W) for ``tta`` (V = 1, 2 or 10), same dtype."""
    images = np.asarray(images)
    h, w = images.shape[-2:]
    return np.stack([view(images, b, crop) for b in boxes(h, w, crop, tta)])
