"""Annotate an image with recognised faces: box, label + confidence (and track id), probability bars.

``annotate(image_bgr, faces)`` returns an annotated BGR copy; sizes follow the image and the box so the
text stays legible on a phone photo and on a 640x480 webcam frame alike.  OpenCV drawing only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: BGR colour per expression (names of FER2013 and FER+); unknown names get a stable colour from a palette
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "anger": (40, 40, 220),
    "disgust": (40, 140, 40), "fear": (160, 60, 160),
    "happy": (0, 200, 255), "happiness": (0, 200, 255),
    "sad": (200, 120, 40), "sadness": (200, 120, 40),
    "surprise": (220, 200, 0), "neutral": (190, 190, 190), "contempt": (90, 90, 160),
}
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def color_for(label: str) -> tuple[int, int, int]:
    if label in COLORS:
        return COLORS[label]
    return _PALETTE[sum(label.encode()) % len(_PALETTE)]


def _text(img, text, org, scale, color, thickness, bg=None):
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    x, y = int(org[0]), int(org[1])
    if bg is not None:
        cv2.rectangle(img, (x - 3, y - th - 4), (x + tw + 3, y + base), bg, -1)
    else:
        cv2.putText(img, text, (x, y), font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), font, scale, color, thickness, cv2.LINE_AA)
    return tw, th


def _ink(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``bg`` (BGR)."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def annotate(image: np.ndarray, faces: Sequence, bars: bool = True, copy: bool = True,
             note: str | None = None) -> np.ndarray:
    """Draw ``faces`` (``Face`` objects or their dicts) on a BGR (or grey) uint8 image: box, label,
    probability bars and, from BlazeFace, the eye / nose / mouth keypoints.  ``note`` (e.g. "no face
    found") is written in a banner at the top left when there are no faces."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif copy:
        img = img.copy()
    H, W = img.shape[:2]
    base = max(H, W)
    if not faces and note:
        scale = float(np.clip(base / 900.0, 0.45, 1.4))
        _text(img, note, (10, 10 + int(24 * scale)), scale, (255, 255, 255), max(1, int(round(scale * 1.6))),
              bg=(60, 60, 60))
    for f in faces:
        d = f if isinstance(f, dict) else f.to_dict()
        x, y, w, h = (int(v) for v in d["box"])
        label, conf, probs = d["label"], float(d["confidence"]), d.get("probabilities") or {}
        col = color_for(label)
        whole = bool(d.get("whole_image"))
        scale = float(np.clip((w if not whole else base / 3) / 220.0, 0.4, 1.2))
        thick = max(1, int(round(scale * 1.6)))
        tid = d.get("track_id")
        text = f"{label} {conf:.0%}" + (f"  #{tid}" if tid is not None else "") + ("  (whole image)" if whole else "")
        if whole:
            cv2.rectangle(img, (1, 1), (W - 2, H - 2), col, max(1, thick - 1))
            _text(img, text, (8, 8 + int(24 * scale)), scale, _ink(col), thick, bg=col)
            bx, by = 8, 16 + int(24 * scale)
        else:
            cv2.rectangle(img, (x, y), (x + w, y + h), col, max(2, thick))
            ty = y - 6 if y - 6 - 24 * scale > 0 else y + h + int(24 * scale)
            _text(img, text, (x + 2, ty), scale, _ink(col), thick, bg=col)
            bx, by = x + w + 6, y
        for kx, ky in (d.get("keypoints") or [])[:4]:  # eyes, nose tip, mouth centre
            cv2.circle(img, (int(round(kx)), int(round(ky))), max(2, thick), col, -1, cv2.LINE_AA)
        if bars and probs:
            _bars(img, probs, bx, by, scale, anchor_w=w if not whole else 0, box_x=x)
    return img


def _bars(img: np.ndarray, probs: dict, x: int, y: int, scale: float, anchor_w: int, box_x: int) -> None:
    """A small panel of one bar per class, right of the box (left of it, or inside, near the image edge)."""
    import cv2

    H, W = img.shape[:2]
    fs = max(0.3, 0.45 * scale)
    row = max(9, int(round(20 * scale)))
    bar_w = max(30, int(round(80 * scale)))
    (lw, _), _ = cv2.getTextSize("surprise", cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    panel_w = lw + bar_w + 12
    panel_h = row * len(probs) + 6
    if x + panel_w > W:  # no room on the right: try the left of the box, else inside the image edge
        x = box_x - panel_w - 6 if box_x - panel_w - 6 >= 0 else max(0, W - panel_w)
    y = int(np.clip(y, 0, max(0, H - panel_h)))
    x0, y0, x1, y1 = x, y, min(W, x + panel_w), min(H, y + panel_h)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi.astype(np.float32) * 0.45).astype(np.uint8)  # darken behind the panel
    top = max(probs, key=probs.get)
    for i, (name, p) in enumerate(probs.items()):
        ry = y0 + 3 + i * row
        col = color_for(name)
        cv2.putText(img, name, (x0 + 4, ry + row - 3), cv2.FONT_HERSHEY_SIMPLEX, fs,
                    (255, 255, 255) if name == top else (200, 200, 200), 1, cv2.LINE_AA)
        bx0 = x0 + lw + 8
        cv2.rectangle(img, (bx0, ry + 2), (bx0 + bar_w, ry + row - 2), (70, 70, 70), -1)
        cv2.rectangle(img, (bx0, ry + 2), (bx0 + int(round(bar_w * float(p))), ry + row - 2), col, -1)
