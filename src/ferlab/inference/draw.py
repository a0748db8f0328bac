"""Annotate an image with recognised faces: box, label + confidence (and track id), probability bars.

``annotate(image_bgr, faces)`` returns an annotated BGR copy.  Text sizes follow the box and the image, so a
320 px thumbnail, a 640x480 webcam frame and a 12 MP phone photo all read well.  OpenCV drawing only.

Where the labels go is decided first, by ``layout`` (a pure function: boxes and text sizes in, rectangles
out), so that in a group photo no face's label is drawn over another face or another label:

- each face's label tag sits in free space near its box: above it (today's look: the tag on the box's top
  edge, the probability bars to its right), else below, right, left, then further away (with a thin leader
  line back to the box when it is not touching it);
- the bars are added where there is room for them after every face has its label;
- a face whose label finds no free place (a crowded photo) gets a small number badge at its box instead,
  and its label is written in a numbered legend: in a free area of the image, else on a strip added below
  the image (the annotated image is then taller than the input), else, when the image may not grow
  (``copy=False``: drawing into a video frame or a window in place), over the image's least crowded corner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX, without importing cv2 at module import

#: a rectangle ``(x, y, w, h)`` in pixels: columns ``x .. x + w - 1``, rows ``y .. y + h - 1``
Rect = tuple[int, int, int, int]


def color_for(label: str) -> tuple[int, int, int]:
    if label in COLORS:
        return COLORS[label]
    return _PALETTE[sum(label.encode()) % len(_PALETTE)]


def _ink(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``bg`` (BGR)."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def overlaps(a: Rect, b: Rect) -> bool:
    """Whether two rectangles share at least one pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# -- sizes ------------------------------------------------------------------------------------------------------

def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    import cv2

    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    return int(tw), int(th), int(base)


def _scales(base: int) -> tuple[float, float]:
    """The smallest and largest label scale for an image whose longest side is ``base``: the floor keeps a
    label readable when a large photo is shown shrunk to a screen (about 1/2400 of the side), the ceiling lets
    a large face in a large photo have a large label."""
    return max(0.4, base / 2400.0), max(1.2, base / 1200.0)


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 1.6)))


@dataclass(frozen=True)
class _Spec:
    """What one face needs drawn, and the sizes that takes."""

    box: Rect
    whole: bool
    label: str
    color: tuple[int, int, int]
    text: str
    scale: float
    thick: int
    probs: dict
    tag: tuple[int, int]  # w, h of the label tag
    bars: tuple[int, int] | None  # w, h of the bars panel (None: no bars)
    badge_scale: float


def _bars_metrics(n: int, scale: float) -> tuple[float, int, int, int, int]:
    fs = max(0.3, 0.45 * scale)
    row = max(9, int(round(20 * scale)))
    bar_w = max(30, int(round(80 * scale)))
    lw = _text_size("surprise", fs, _bar_thickness(fs))[0]
    return fs, row, bar_w, lw, row * n + 6


def _bar_thickness(fs: float) -> int:
    return max(1, int(fs * 1.5))


def _spec(d: dict, base: int, bars: bool) -> _Spec:
    x, y, w, h = (int(v) for v in d["box"])
    label, conf = str(d["label"]), float(d["confidence"])
    probs = dict(d.get("probabilities") or {})
    whole = bool(d.get("whole_image"))
    lo, hi = _scales(base)
    scale = float(np.clip((w if not whole else base / 3) / 220.0, lo, hi))
    thick = _thickness(scale)
    tid = d.get("track_id")
    text = f"{label} {conf:.0%}" + (f"  #{tid}" if tid is not None else "") + ("  (whole image)" if whole else "")
    tw, th, b = _text_size(text, scale, thick)
    bar_size = None
    if bars and probs:
        _, _, bar_w, lw, ph = _bars_metrics(len(probs), scale)
        bar_size = (lw + bar_w + 12, ph)
    return _Spec((x, y, w, h), whole, label, color_for(label), text, scale, thick, probs, (tw + 6, th + b + 4),
                 bar_size, lo)


# -- layout -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """Where one face's annotation goes.  ``kind``: ``"panel"`` (label tag and bars), ``"tag"`` (label tag
    only), ``"badge"`` (a number at the face; its label is in the legend) or ``"whole"`` (a whole-image
    result: a frame round the image, the label at its top left).  ``rects``: the tag and, for a panel, the
    bars (for a badge: the badge).  ``leader``: a line ``(x0, y0, x1, y1)`` from the box to a label placed
    away from it."""

    index: int
    kind: str
    rects: tuple[Rect, ...]
    number: int | None = None
    leader: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Layout:
    """The rectangles ``annotate`` draws into.  ``width`` x ``height``: the annotated image (``height`` is more
    than ``image_height`` when the legend is on a strip below the image).  ``faces``: one ``Placement`` per
    face, in the order given.  ``legend``: the legend's rectangle (None: no face needed it); ``legend_below``:
    it is on the added strip; ``legend_over``: no free area and no strip allowed, so it covers part of the
    image.  ``legend_columns``: how many columns its entries take; ``legend_order``: face indices, entry by
    entry."""

    width: int
    image_height: int
    height: int
    boxes: tuple[Rect, ...]
    faces: tuple[Placement, ...]
    legend: Rect | None = None
    legend_below: bool = False
    legend_over: bool = False
    legend_columns: int = 1
    legend_order: tuple[int, ...] = ()

    @property
    def labels(self) -> list[Rect]:
        """Every label tag and bars panel (not badges, not the legend)."""
        return [r for p in self.faces if p.kind in ("panel", "tag", "whole") for r in p.rects]

    @property
    def badges(self) -> list[Rect]:
        return [r for p in self.faces if p.kind == "badge" for r in p.rects]


def _reading_order(boxes: list[Rect], idx: list[int]) -> list[int]:
    """Face indices in reading order: rows (centres within half a median face height) top to bottom, each row
    left to right."""
    if not idx:
        return []
    med = float(np.median([max(1, boxes[i][3]) for i in idx]))
    by_cy = sorted(idx, key=lambda i: (boxes[i][1] + boxes[i][3] / 2, boxes[i][0], i))
    rows: list[list[int]] = []
    for i in by_cy:
        cy = boxes[i][1] + boxes[i][3] / 2
        if rows and cy - (boxes[rows[-1][0]][1] + boxes[rows[-1][0]][3] / 2) < med / 2:
            rows[-1].append(i)
        else:
            rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: (boxes[j][0], j))]


class _Board:
    """The image's occupied rectangles, asked whether a rectangle is free."""

    def __init__(self, W: int, H: int):
        self.W, self.H = W, H
        self.rects: list[Rect] = []
        self.owner: list[int] = []

    def add(self, r: Rect, owner: int) -> None:
        self.rects.append(r)
        self.owner.append(owner)

    def remove_owner(self, owner: int) -> None:
        keep = [k for k, o in enumerate(self.owner) if o != owner]
        self.rects = [self.rects[k] for k in keep]
        self.owner = [self.owner[k] for k in keep]

    def inside(self, r: Rect) -> bool:
        return r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= self.W and r[1] + r[3] <= self.H and r[2] > 0 and r[3] > 0

    def free(self, r: Rect, ignore: int | None = None) -> bool:
        return self.inside(r) and not any(o != ignore and overlaps(r, q) for q, o in zip(self.rects, self.owner))

    def free_mask(self, cands: np.ndarray) -> np.ndarray:
        """Which rows of an (N, 4) array of rectangles are inside the image and overlap nothing."""
        x, y, w, h = (cands[:, k:k + 1] for k in range(4))
        ok = (x[:, 0] >= 0) & (y[:, 0] >= 0) & (x[:, 0] + w[:, 0] <= self.W) & (y[:, 0] + h[:, 0] <= self.H)
        if self.rects:
            R = np.asarray(self.rects, np.int64)
            hit = ((x < R[:, 0] + R[:, 2]) & (R[:, 0] < x + w) & (y < R[:, 1] + R[:, 3]) & (R[:, 1] < y + h))
            ok &= ~hit.any(axis=1)
        return ok


def _clamp(r: Rect, W: int, H: int) -> Rect:
    x, y, w, h = r
    return (int(min(max(x, 0), max(0, W - w))), int(min(max(y, 0), max(0, H - h))), int(w), int(h))


def _near(box: Rect, w: int, h: int) -> list[Rect]:
    """Places for a ``w`` x ``h`` rectangle touching ``box``: above, below, right, left (each aligned with the
    box's start, end and centre)."""
    x, y, bw, bh = box
    return [(x, y - h, w, h), (x + bw - w, y - h, w, h), (x + (bw - w) // 2, y - h, w, h),
            (x, y + bh, w, h), (x + bw - w, y + bh, w, h), (x + (bw - w) // 2, y + bh, w, h),
            (x + bw, y, w, h), (x + bw, y + bh - h, w, h), (x + bw, y + (bh - h) // 2, w, h),
            (x - w, y, w, h), (x - w, y + bh - h, w, h), (x - w, y + (bh - h) // 2, w, h)]


def _gap(a: Rect, b: Rect) -> float:
    dx = max(0, b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]))
    dy = max(0, b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]))
    return math.hypot(dx, dy)


def _segment_hits(p: tuple[float, float], q: tuple[float, float], r: Rect) -> bool:
    """Whether the segment p-q crosses rectangle ``r`` (Liang-Barsky clipping)."""
    x0, y0 = p
    dx, dy = q[0] - x0, q[1] - y0
    t0, t1 = 0.0, 1.0
    for pk, qk in ((-dx, x0 - r[0]), (dx, r[0] + r[2] - 1 - x0), (-dy, y0 - r[1]), (dy, r[1] + r[3] - 1 - y0)):
        if pk == 0:
            if qk < 0:
                return False
            continue
        t = qk / pk
        if pk < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return True


def _leader(box: Rect, r: Rect) -> tuple[int, int, int, int]:
    """A line from the edge of ``box`` to the nearest point of ``r``."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    px = min(max(cx, r[0]), r[0] + r[2] - 1)
    py = min(max(cy, r[1]), r[1] + r[3] - 1)
    qx = min(max(px, box[0]), box[0] + box[2] - 1)
    qy = min(max(py, box[1]), box[1] + box[3] - 1)
    return int(round(qx)), int(round(qy)), int(round(px)), int(round(py))


def _far(board: _Board, box: Rect, w: int, h: int, own: int, faces: list[Rect], reach: float
         ) -> tuple[Rect, tuple | None] | None:
    """The nearest free place for a ``w`` x ``h`` rectangle within ``reach`` of ``box`` whose leader line
    crosses no other face."""
    step = max(2, min(w, h) // 3)
    x, y, bw, bh = box
    xs = np.arange(int(x - reach - w), int(x + bw + reach) + 1, step)
    ys = np.arange(int(y - reach - h), int(y + bh + reach) + 1, step)
    if not len(xs) or not len(ys):
        return None
    gx, gy = np.meshgrid(xs, ys)
    cands = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, w), np.full(gx.size, h)], axis=1).astype(np.int64)
    ok = board.free_mask(cands)
    if not ok.any():
        return None
    cands = cands[ok]
    dx = np.maximum(0, np.maximum(cands[:, 0] - (x + bw), x - (cands[:, 0] + w)))
    dy = np.maximum(0, np.maximum(cands[:, 1] - (y + bh), y - (cands[:, 1] + h)))
    dist = np.hypot(dx, dy)
    keep = dist <= reach
    cands, dist = cands[keep], dist[keep]
    for k in np.argsort(dist, kind="stable")[:400]:
        r = tuple(int(v) for v in cands[k])
        line = _leader(box, r)
        if not any(j != own and _segment_hits(line[:2], line[2:], fb) for j, fb in enumerate(faces)):
            return r, (line if _gap(box, r) >= 4 else None)
    return None


def _panel_options(box: Rect, tag: tuple[int, int], bars: tuple[int, int], gap: int) -> list[tuple[Rect, Rect]]:
    """(tag, bars) places: the tag on the box's top (or bottom) edge with the bars beside the box (right, else
    left), as a single face has always been drawn; then tag and bars stacked, touching the box (the tag on the
    side nearest the box when the stack is above it)."""
    x, y, bw, bh = box
    (tw, th), (pw, ph) = tag, bars
    out = []
    for ty in (y - th, y + bh):
        for px in (x + bw + gap, x - pw - gap):
            out.append(((x, ty, tw, th), (px, y, pw, ph)))
    sw, sh = max(tw, pw), th + ph
    for sx, sy, _, _ in _near(box, sw, sh):
        if sy + sh <= y:  # above the box: the tag next to it, the bars above the tag
            out.append(((sx, sy + ph, tw, th), (sx, sy, pw, ph)))
        else:
            out.append(((sx, sy, tw, th), (sx, sy + th, pw, ph)))
    return out


#: when at least this share of the faces (and two or more) find no free place for their label, every face is
#: numbered and listed in the legend: one way of reading a crowd, not labels on some faces and numbers on others
CROWD_SHARE = 0.25


def layout(shape: Sequence[int], faces: Sequence, bars: bool = True, grow: bool = True) -> Layout:
    """Where ``annotate`` draws each face's label: a pure function of the image's ``shape`` (H, W[, C]), the
    ``faces`` (``Face`` objects or their dicts) and whether probability ``bars`` are drawn.

    No label tag, bars panel or badge overlaps another one or another face's box; tags and bars overlap no box
    at all; all lie inside the image (a badge may sit inside a corner of its own face's box).  A face whose
    label finds no free place near its box gets a number and a legend entry (every face does, in reading
    order, when that happens to ``CROWD_SHARE`` of them).  ``grow``: the legend may go on a strip added below
    the image when there is no free area for it."""
    H, W = int(shape[0]), int(shape[1])
    return _plan(W, H, _specs(faces, max(H, W), bars), grow)


def _specs(faces: Sequence, base: int, bars: bool) -> list[_Spec]:
    return [_spec(f if isinstance(f, dict) else f.to_dict(), base, bars) for f in faces]


def _plan(W: int, H: int, specs: list[_Spec], grow: bool) -> Layout:
    n = len(specs)
    board = _Board(W, H)
    # the face boxes (clipped to the image, a little wider than the drawn outline) are obstacles for everyone
    anchors: dict[int, Rect] = {}
    for i, s in enumerate(specs):
        if s.whole:
            continue
        pad = max(2, s.thick) // 2 + 1
        x, y, w, h = s.box
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(W, x + w + pad), min(H, y + h + pad)
        anchors[i] = (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else _clamp((x, y, 1, 1), W, H)
        if x1 > x0 and y1 > y0:
            board.add(anchors[i], -1 - i)
    places: dict[int, Placement] = {}
    for i, s in enumerate(specs):  # a whole-image result: its label at the top left, as always
        if s.whole:
            tag = (8 - 3, 8, s.tag[0], s.tag[1])
            rects = [tag] + ([(8, tag[1] + tag[3] + 4, *s.bars)] if s.bars else [])
            places[i] = Placement(i, "whole", tuple(rects))
            for r in rects:
                board.add(r, i)
    order = _reading_order([s.box for s in specs], [i for i in range(n) if not specs[i].whole])
    places.update(_place_tags(board, specs, anchors, order))
    missing = [i for i in order if i not in places]
    if len(missing) >= max(2, CROWD_SHARE * len(order)):
        for i in order:
            places.pop(i, None)
            board.remove_owner(i)
        missing = list(order)
    places.update(_place_badges(board, specs, anchors, missing))
    places.update(_add_bars(board, specs, anchors, [i for i in order if places[i].kind == "tag"], places))
    legend, below, over, cols, height = None, False, False, 1, H
    if missing:
        legend, below, over, cols = _place_legend(board, [specs[i] for i in missing], list(anchors.values()), grow)
        if below:
            height = H + legend[3]
    return Layout(W, H, height, tuple(s.box for s in specs), tuple(places[i] for i in range(n)), legend, below,
                  over, cols, tuple(missing))


def _place_tags(board: _Board, specs: list[_Spec], anchors: dict[int, Rect], order: list[int]
                ) -> dict[int, Placement]:
    """A label tag for each face, in ``order``: touching its box (above first), else the nearest free place a
    little further away (with a leader line), else none."""
    W, H = board.W, board.H
    face_rects = [anchors.get(i, (0, 0, 0, 0)) for i in range(len(specs))]
    out = {}
    for i in order:
        s, anchor = specs[i], anchors[i]
        tw, th = s.tag
        got = next((r for r in (_clamp(c, W, H) for c in _near(anchor, tw, th)) if board.free(r)), None)
        line = None
        if got is None:
            found = _far(board, anchor, tw, th, i, face_rects, reach=max(1.5 * th, 0.4 * max(s.box[2], s.box[3])))
            if found is not None:
                got, line = found
        if got is not None:
            board.add(got, i)
            out[i] = Placement(i, "tag", (got,), leader=line)
    return out


def _place_badges(board: _Board, specs: list[_Spec], anchors: dict[int, Rect], faces: list[int]
                  ) -> dict[int, Placement]:
    """Numbers 1, 2, ... for ``faces``: a badge outside the box's top-left corner, else inside one of its corners
    (where face boxes overlap each other and no corner is clear, the top-left one, over the other box)."""
    W, H = board.W, board.H
    out = {}
    for num, i in enumerate(faces, 1):
        s, (x, y, _, _) = specs[i], anchors[i]
        bw, bh = _badge_size(num, s.badge_scale)
        bx, by, fw, fh = s.box
        left, right, top, bottom = bx + 2, bx + fw - bw - 2, by + 2, by + fh - bh - 2
        inner = [_clamp((cx, cy, bw, bh), W, H)
                 for cx, cy in ((left, top), (right, top), (left, bottom), (right, bottom))]
        cands = [_clamp(c, W, H) for c in ((x, y - bh, bw, bh), (x - bw, y, bw, bh))]
        got = next((r for r in cands if board.free(r)), None)
        if got is None:  # inside the box: a corner clear of other faces (boxes may overlap), else the top left
            got = next((r for r in inner if board.free(r, ignore=-1 - i)), inner[0])
        board.add(got, i)
        out[i] = Placement(i, "badge", (got,), number=num)
    return out


def _add_bars(board: _Board, specs: list[_Spec], anchors: dict[int, Rect], faces: list[int],
              places: dict[int, Placement]) -> dict[int, Placement]:
    """The probability bars for ``faces`` (each with a tag touching its box) where tag and bars fit together."""
    W, H = board.W, board.H
    out = {}
    for i in faces:
        s, old = specs[i], places[i]
        if s.bars is None or old.leader is not None:
            continue
        board.remove_owner(i)
        gap = 6 if s.scale <= 1.0 else int(round(6 * s.scale))
        got = None
        for tag, bar in _panel_options(anchors[i], s.tag, s.bars, gap):
            tag, bar = _clamp(tag, W, H), _clamp(bar, W, H)
            if board.free(tag) and board.free(bar) and not overlaps(tag, bar):
                got = (tag, bar)
                break
        for r in got or old.rects:
            board.add(r, i)
        if got is not None:
            out[i] = Placement(i, "panel", got)
    return out


def _badge_size(num: int, scale: float) -> tuple[int, int]:
    tw, th, b = _text_size(str(num), scale, _thickness(scale))
    side = th + b + 4
    return max(side, tw + 8), side


def _legend_metrics(specs: list[_Spec], scale: float) -> tuple[int, int, int]:
    """(entry width, row height, padding) of the legend's entries at ``scale``."""
    thick = _thickness(scale)
    bw, bh = _badge_size(len(specs), scale)
    widths = [_text_size(s.text, scale, thick)[0] for s in specs]
    pad = max(4, bh // 3)
    return bw + pad + max(widths) + 2 * pad, bh + pad, pad


def _place_legend(board: _Board, specs: list[_Spec], faces_boxes: list[Rect], grow: bool
                  ) -> tuple[Rect, bool, bool, int]:
    """The legend's rectangle: a free area of the image (1 to 4 columns, nearest a corner), else a strip below
    the image (``grow``), else the corner it covers the least face area in."""
    W, H = board.W, board.H
    scale = _scales(max(W, H))[0]
    ew, rh, pad = _legend_metrics(specs, scale)
    n = len(specs)
    for cols in range(1, min(n, 4) + 1):
        rows = -(-n // cols)
        lw, lh = cols * ew + pad, rows * rh + pad
        if lw > W or lh > H:
            continue
        step = max(2, rh // 2)
        xs = np.unique(np.r_[np.arange(0, W - lw + 1, step), W - lw])
        ys = np.unique(np.r_[np.arange(0, H - lh + 1, step), H - lh])
        gx, gy = np.meshgrid(xs, ys)
        cands = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, lw), np.full(gx.size, lh)], axis=1).astype(np.int64)
        ok = board.free_mask(cands)
        if ok.any():
            c = cands[ok]
            corner = np.minimum(c[:, 0], W - lw - c[:, 0]) + np.minimum(c[:, 1], H - lh - c[:, 1])
            r = tuple(int(v) for v in c[int(np.argmin(corner))])
            return r, False, False, cols
    if grow:
        cols = max(1, min(n, (W - pad) // ew))
        rows = -(-n // cols)
        return (0, H, W, rows * rh + pad), True, False, cols
    best = None
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        lw, lh = cols * ew + pad, rows * rh + pad
        spill = max(0, lw - W) + max(0, lh - H)  # > 0 only where no arrangement fits: entries are cut off
        lw, lh = min(W, lw), min(H, lh)
        for x, y in ((W - lw, H - lh), (W - lw, 0), (0, H - lh), (0, 0)):  # the webcam's fps is at the bottom left
            r = (x, y, lw, lh)
            cover = sum(max(0, min(r[0] + lw, b[0] + b[2]) - max(r[0], b[0]))
                        * max(0, min(r[1] + lh, b[1] + b[3]) - max(r[1], b[1])) for b in faces_boxes)
            key = (spill, cover, lw * lh)
            if best is None or key < best[0]:
                best = (key, r, cols)
    return best[1], False, True, best[2]


# -- drawing ----------------------------------------------------------------------------------------------------

def annotate(image: np.ndarray, faces: Sequence, bars: bool = True, copy: bool = True,
             note: str | None = None, grow: bool | None = None) -> np.ndarray:
    """Draw ``faces`` (``Face`` objects or their dicts) on a BGR (or grey) uint8 image: box, label,
    probability bars and, from BlazeFace, the eye / nose / mouth keypoints.  ``note`` (e.g. "no face
    found") is written in a banner at the top left when there are no faces.

    Labels are placed by ``layout``: never over another face or another label.  In a crowded photo a face
    may get a number and a legend entry instead; when the legend finds no free area it goes on a strip
    added below the image, so **the annotated image may be taller than the input**.  ``grow`` (default: yes
    for a copy, no with ``copy=False``, where the frame is drawn in place and keeps its size, as video and
    the webcam window need) says whether that strip may be added; without it the legend covers the image's
    least crowded corner."""
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
        thick = _thickness(scale)
        tw, th, b = _text_size(note, scale, thick)
        x, y = 10, 10 + int(24 * scale)
        cv2.rectangle(img, (x - 3, y - th - 4), (x + tw + 3, y + b), (60, 60, 60), -1)
        cv2.putText(img, note, (x, y), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
    if not faces:
        return img
    specs = _specs(faces, base, bars)
    plan = _plan(W, H, specs, copy if grow is None else grow)
    if plan.height > H:
        grown = np.empty((plan.height, W, 3), np.uint8)
        grown[:H] = img
        grown[H:] = (32, 32, 32)
        img = grown
    for s, f in zip(specs, faces):  # boxes and keypoints first: labels never cover another face's box
        d = f if isinstance(f, dict) else f.to_dict()
        x, y, w, h = s.box
        if s.whole:
            cv2.rectangle(img, (1, 1), (W - 2, H - 2), s.color, max(1, s.thick - 1))
        else:
            cv2.rectangle(img, (x, y), (x + w, y + h), s.color, max(2, s.thick))
        for kx, ky in (d.get("keypoints") or [])[:4]:  # eyes, nose tip, mouth centre
            cv2.circle(img, (int(round(kx)), int(round(ky))), max(2, s.thick), s.color, -1, cv2.LINE_AA)
    for p in plan.faces:
        s = specs[p.index]
        if p.leader is not None:
            cv2.line(img, p.leader[:2], p.leader[2:], s.color, max(1, s.thick - 1), cv2.LINE_AA)
        if p.kind == "badge":
            _badge(img, p.rects[0], p.number, s.color, s.badge_scale)
            continue
        _tag(img, p.rects[0], s.text, s.color, s.scale, s.thick)
        if len(p.rects) > 1:
            _bars(img, p.rects[1], s.probs, s.scale)
    if plan.legend is not None:
        _legend(img, plan, [specs[i] for i in plan.legend_order])
    return img


def _tag(img: np.ndarray, r: Rect, text: str, color, scale: float, thick: int) -> None:
    """The label on a filled rectangle of the label's colour."""
    import cv2

    x, y, w, h = r
    _, th, b = _text_size(text, scale, thick)
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), color, -1)
    cv2.putText(img, text, (x + 3, y + h - 1 - b), _FONT, scale, _ink(color), thick, cv2.LINE_AA)


def _badge(img: np.ndarray, r: Rect, num: int, color, scale: float) -> None:
    import cv2

    x, y, w, h = r
    thick = _thickness(scale)
    tw, th, b = _text_size(str(num), scale, thick)
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), color, -1)
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), (20, 20, 20), 1)
    cv2.putText(img, str(num), (x + (w - tw) // 2, y + h - 2 - b), _FONT, scale, _ink(color), thick, cv2.LINE_AA)


def _bars(img: np.ndarray, r: Rect, probs: dict, scale: float) -> None:
    """One bar per class on a darkened panel; the top class's name in white."""
    import cv2

    fs, row, bar_w, lw, _ = _bars_metrics(len(probs), scale)
    t = _bar_thickness(fs)
    x0, y0, w, h = r
    roi = img[y0:y0 + h, x0:x0 + w]
    roi[:] = (roi.astype(np.float32) * 0.45).astype(np.uint8)  # darken behind the panel
    top = max(probs, key=probs.get)
    for i, (name, p) in enumerate(probs.items()):
        ry = y0 + 3 + i * row
        col = color_for(name)
        cv2.putText(img, name, (x0 + 4, ry + row - 3), _FONT, fs,
                    (255, 255, 255) if name == top else (200, 200, 200), t, cv2.LINE_AA)
        bx0 = x0 + lw + 8
        cv2.rectangle(img, (bx0, ry + 2), (bx0 + bar_w, ry + row - 2), (70, 70, 70), -1)
        cv2.rectangle(img, (bx0, ry + 2), (bx0 + int(round(bar_w * float(p))), ry + row - 2), col, -1)


def _legend(img: np.ndarray, plan: Layout, specs: list[_Spec]) -> None:
    """The numbered entries of the faces that carry a badge, in columns."""
    import cv2

    x0, y0, w, h = plan.legend
    scale = _scales(max(plan.width, plan.image_height))[0]
    thick = _thickness(scale)
    ew, rh, pad = _legend_metrics(specs, scale)
    if not plan.legend_below:
        roi = img[y0:y0 + h, x0:x0 + w]
        roi[:] = (roi.astype(np.float32) * 0.3).astype(np.uint8)
    rows = -(-len(specs) // plan.legend_columns)
    for k, s in enumerate(specs):
        c, rr = divmod(k, rows)
        ex, ey = x0 + pad + c * ew, y0 + pad + rr * rh
        bw, bh = _badge_size(k + 1, scale)
        _badge(img, (ex, ey, bw, bh), k + 1, s.color, scale)
        _, th, b = _text_size(s.text, scale, thick)
        cv2.putText(img, s.text, (ex + bw + pad, ey + bh - 2 - b), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
