"""``--annotate`` on group photos: no face's label is drawn over another face or another label (issue 21, item 5).

``draw.layout`` is a pure function (image shape + faces -> rectangles); these tests build group photos from the
astronaut's face pasted at known places and check the rectangles it returns, then that ``annotate`` draws inside
them, then one ``ferlab predict PHOTO --annotate DIR`` run.
"""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
from helpers_models import ASTRONAUT, make_tiny_model

from ferlab.cli import main
from ferlab.inference import draw
from ferlab.inference.draw import Layout, Placement, annotate, layout, overlaps

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
ASTRO_BOX = (166, 59, 119, 118)  # the astronaut's face in examples/astronaut.jpg (BlazeFace)
HEAD = (150, 40, 150, 160)  # x, y, w, h: the head cut around it


def _head() -> np.ndarray:
    x, y, w, h = HEAD
    return cv2.imread(str(ASTRONAUT))[y:y + h, x:x + w]


def _paste(img: np.ndarray, x: int, y: int, side: int) -> tuple[int, int, int, int]:
    """Paste the head ``side`` px wide at (x, y); return its face box."""
    hx, hy, hw, hh = HEAD
    fh = int(round(side * hh / hw))
    img[y:y + fh, x:x + side] = cv2.resize(_head(), (side, fh), interpolation=cv2.INTER_AREA)
    k = side / hw
    return (x + int((ASTRO_BOX[0] - hx) * k), y + int((ASTRO_BOX[1] - hy) * k), int(ASTRO_BOX[2] * k),
            int(ASTRO_BOX[3] * k))


def _background(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.full((h, w, 3), (90, 110, 130), np.uint8) + rng.integers(0, 30, (h, w, 3), dtype=np.uint8))


def group_photo(seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """1600x1200, 20 heads of 60-90 px, one in each cell of a 5x4 grid at a random place in it."""
    rng = np.random.default_rng(seed)
    img, boxes = _background(1200, 1600, seed), []
    for r, c in itertools.product(range(4), range(5)):
        side = int(rng.integers(60, 91))
        x = c * 320 + int(rng.integers(10, 320 - side - 10))
        y = r * 300 + int(rng.integers(10, 300 - int(side * 16 / 15) - 10))
        boxes.append(_paste(img, x, y, side))
    return img, boxes


def rows_of_faces(gap: int, size: tuple[int, int] = (1200, 1600), side: int = 88, cols: int = 5, rows: int = 4,
                  seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Heads ``side`` px wide in a ``cols`` x ``rows`` block at the image's centre, face boxes ``gap`` px apart."""
    H, W = size
    img = _background(H, W, seed)
    k = side / HEAD[2]
    fw, fh = int(ASTRO_BOX[2] * k), int(ASTRO_BOX[3] * k)
    x0, y0 = (W - cols * (fw + gap)) // 2, (H - rows * (fh + gap)) // 2
    dx, dy = int((ASTRO_BOX[0] - HEAD[0]) * k), int((ASTRO_BOX[1] - HEAD[1]) * k)
    boxes = []
    for r, c in itertools.product(range(rows), range(cols)):
        x, y = x0 + c * (fw + gap), y0 + r * (fh + gap)
        part = cv2.resize(_head(), (side, int(round(side * HEAD[3] / HEAD[2]))), interpolation=cv2.INTER_AREA)
        px, py = max(0, x - dx), max(0, y - dy)
        ph, pw = min(part.shape[0], H - py), min(part.shape[1], W - px)
        img[py:py + ph, px:px + pw] = part[:ph, :pw]
        boxes.append((x, y, fw, fh))
    for (x, y, w, h) in boxes:  # the face of each box on top, so neighbours' shoulders do not cover it
        img[y:y + h, x:x + w] = cv2.resize(cv2.imread(str(ASTRONAUT))[59:177, 166:285], (w, h))
    return img, boxes


def faces_for(boxes, seed: int = 1, track: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for k, b in enumerate(boxes):
        p = rng.dirichlet(np.ones(len(CLASSES)) * 0.5)
        top = int(np.argmax(p))
        out.append({"box": [int(v) for v in b], "label": CLASSES[top], "confidence": float(p[top]),
                    "probabilities": dict(zip(CLASSES, p.tolist())), "track_id": k + 1 if track else None})
    return out


def check_layout(plan: Layout, boxes) -> None:
    """What the issue asks, on the rectangles: no label (tag, bars) overlaps another label or any face box; no
    badge overlaps another face's box or any label or badge; the legend overlaps nothing; all inside the image;
    every face has its label or a number listed in the legend."""
    W, H = plan.width, plan.image_height
    owned = [(p.index, p.kind, r) for p in plan.faces for r in p.rects]
    for i, kind, r in owned:
        assert 0 <= r[0] and 0 <= r[1] and r[0] + r[2] <= W and r[1] + r[3] <= H and r[2] > 0 and r[3] > 0, \
            f"face {i}: {kind} {r} is not inside the {W}x{H} image"
        for j, b in enumerate(boxes):
            if kind == "badge" and i == j:
                continue  # a badge may sit inside its own face's corner
            assert not overlaps(r, b), f"face {i}: {kind} {r} overlaps face {j}'s box {b}"
    for (i, ki, a), (j, kj, b) in itertools.combinations(owned, 2):
        assert not overlaps(a, b), f"face {i}'s {ki} {a} overlaps face {j}'s {kj} {b}"
    numbered = sorted(p.number for p in plan.faces if p.kind == "badge")
    assert numbered == list(range(1, len(numbered) + 1))
    assert [p.index for p in sorted((p for p in plan.faces if p.kind == "badge"), key=lambda p: p.number)] \
        == list(plan.legend_order)
    assert all(p.kind in ("panel", "tag", "badge", "whole") for p in plan.faces)
    if not numbered:
        assert plan.legend is None and plan.height == H
        return
    lx, ly, lw, lh = plan.legend
    if plan.legend_below:
        assert (lx, ly, lw) == (0, H, W) and plan.height == H + lh
    else:
        assert plan.height == H and 0 <= lx and 0 <= ly and lx + lw <= W and ly + lh <= H
        if not plan.legend_over:
            assert not any(overlaps(plan.legend, b) for b in boxes)
            assert not any(overlaps(plan.legend, r) for _, _, r in owned)


def _apart(a, b) -> int:
    return max(0, a[0] - (b[0] + b[2]), b[0] - (a[0] + a[2]), a[1] - (b[1] + b[3]), b[1] - (a[1] + a[3]))


def _near_own_box(plan: Layout, boxes, reach: float) -> None:
    """Each face's tag (or badge) lies within ``reach`` px of its box; its bars by the box or by the tag."""
    for p in plan.faces:
        b = boxes[p.index]
        assert _apart(p.rects[0], b) <= reach, f"face {p.index}: {p.kind} {p.rects[0]} is far from its box {b}"
        for r in p.rects[1:]:
            assert min(_apart(r, b), _apart(r, p.rects[0])) <= reach, f"face {p.index}: bars {r} far from {b}"


# -- the layout -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_twenty_face_group_photo_every_label_beside_its_face_over_nothing(seed):
    img, boxes = group_photo(seed)
    faces = faces_for(boxes, seed=seed)
    plan = layout(img.shape, faces)
    assert len(plan.faces) == 20 and (plan.width, plan.height) == (1600, 1200)
    check_layout(plan, boxes)
    # room for every label beside its face: no legend, and the bars where they fit (most faces here)
    assert all(p.kind in ("panel", "tag") for p in plan.faces) and plan.legend is None
    assert sum(p.kind == "panel" for p in plan.faces) >= 15
    _near_own_box(plan, boxes, reach=12)


@pytest.mark.parametrize("gap", [2, 4])
def test_crowded_group_photo_is_numbered_with_a_legend(gap):
    """Faces that nearly touch: no room for labels, so every face gets a number and the legend lists them all."""
    img, boxes = rows_of_faces(gap)
    faces = faces_for(boxes)
    plan = layout(img.shape, faces)
    check_layout(plan, boxes)
    assert [p.kind for p in plan.faces] == ["badge"] * 20
    assert sorted(p.number for p in plan.faces) == list(range(1, 21))
    # reading order: numbered row by row, left to right
    assert [plan.faces[i].number for i in range(20)] == list(range(1, 21))
    assert plan.legend is not None and not plan.legend_below and not plan.legend_over  # room left of the block
    assert len(plan.legend_order) == 20
    _near_own_box(plan, boxes, reach=max(b for p in plan.faces for b in p.rects[0][2:]))


@pytest.mark.parametrize("gap,side", [(2, 60), (10, 70), (20, 80), (30, 88), (40, 88), (80, 90), (160, 64)])
def test_any_spacing_overlaps_nothing(gap, side):
    """From touching faces to well spread ones, with and without bars and track ids: the rules always hold."""
    img, boxes = rows_of_faces(gap, side=side)
    for bars, track in ((True, False), (False, True)):
        check_layout(layout(img.shape, faces_for(boxes, seed=gap, track=track), bars=bars), boxes)


def test_a_boxed_in_face_gets_a_number_the_others_keep_their_labels():
    """A 3x3 block of touching faces: only the middle one has no room, so only it is numbered."""
    img, boxes = rows_of_faces(2, size=(600, 800), side=88, cols=3, rows=3)
    plan = layout(img.shape, faces_for(boxes))
    check_layout(plan, boxes)
    kinds = [p.kind for p in plan.faces]
    assert kinds[4] == "badge" and plan.faces[4].number == 1 and plan.legend_order == (4,)
    assert all(k in ("panel", "tag") for j, k in enumerate(kinds) if j != 4)
    assert plan.legend is not None and not plan.legend_below
    _near_own_box(plan, boxes, reach=12)


def test_full_image_puts_the_legend_on_a_strip_below_or_over_a_corner_in_place():
    img, boxes = rows_of_faces(2, size=(240, 330), side=80, cols=4, rows=3)
    faces = faces_for(boxes)
    plan = layout(img.shape, faces)
    check_layout(plan, boxes)
    assert plan.legend_below and plan.height > 240 and [p.kind for p in plan.faces] == ["badge"] * 12
    out = annotate(img, faces)
    assert out.shape == (plan.height, 330, 3) and np.array_equal(out[240:, :, :].reshape(-1, 3).max(0) > 32,
                                                                 np.array([True, True, True]))
    # drawing in place (video frames, the webcam window): the frame keeps its size, the legend covers a corner
    frame = img.copy()
    inplace = layout(img.shape, faces, grow=False)
    check_layout(inplace, boxes)
    assert inplace.legend_over and inplace.height == 240
    assert annotate(frame, faces, copy=False).shape == img.shape
    assert annotate(img, faces, grow=False).shape == img.shape


def test_checks_fail_on_overlapping_labels(monkeypatch):
    """The checks above catch overlaps: a layout that ignores what is taken (every place "free") fails them."""
    img, boxes = group_photo(0)
    faces = faces_for(boxes)
    good = layout(img.shape, faces)
    check_layout(good, boxes)
    a, b = good.faces[0], good.faces[1]
    clash = Placement(b.index, b.kind, (a.rects[0],) + b.rects[1:])
    with pytest.raises(AssertionError, match="overlaps"):
        check_layout(Layout(good.width, good.image_height, good.height, good.boxes,
                            (a, clash) + good.faces[2:]), boxes)
    monkeypatch.setattr(draw._Board, "free", lambda self, r, ignore=None: True)
    crowded_img, crowded = rows_of_faces(4)
    with pytest.raises(AssertionError, match="overlaps"):
        check_layout(layout(crowded_img.shape, faces_for(crowded)), crowded)


def test_single_face_keeps_its_look():
    """One face: the label on the box's top edge at its left, the bars to the right of the box, level with its top
    (as annotate has always drawn it), and the image keeps its size."""
    astro = cv2.imread(str(ASTRONAUT))
    face = faces_for([ASTRO_BOX])[0]
    plan = layout(astro.shape, [face])
    check_layout(plan, [ASTRO_BOX])
    (p,) = plan.faces
    x, y, w, h = ASTRO_BOX
    tag, bars = p.rects
    assert p.kind == "panel" and plan.legend is None and plan.height == 512
    assert abs(tag[0] - x) <= 3 and 0 <= y - (tag[1] + tag[3]) <= 3  # sits on the top edge
    assert 0 < bars[0] - (x + w) <= 10 and abs(bars[1] - y) <= 3  # right of the box, level with its top
    out = annotate(astro, [face])
    assert out.shape == astro.shape
    assert tuple(out[tag[1] + 1, tag[0] + 1]) == draw.color_for(face["label"])  # the tag in the label's colour
    # near the top edge the tag goes below the box; near the right edge the bars go left of it
    edge = (512 - 130, 2, 120, 120)
    (q,) = layout(astro.shape, faces_for([edge])).faces
    check_layout(layout(astro.shape, faces_for([edge])), [edge])
    assert q.rects[0][1] >= edge[1] + edge[3] and q.rects[1][0] + q.rects[1][2] <= edge[0]


def test_labels_scale_with_the_image():
    """A 12 MP photo's labels are readable when it is shown shrunk to a screen; a 320 px image still works."""
    heights = {}
    for H, W in ((3000, 4000), (1200, 1600), (480, 640), (240, 320)):
        box = (W // 3, H // 3, max(24, W // 16), max(24, W // 16))
        plan = layout((H, W, 3), faces_for([box]))
        check_layout(plan, [box])
        heights[W] = plan.faces[0].rects[0][3]
    assert heights[4000] >= 4000 / 120  # >= 8 px tall when the photo is shown 1000 px wide
    assert heights[4000] > heights[1600] > heights[320] >= 12
    small = cv2.resize(cv2.imread(str(ASTRONAUT)), (320, 320))
    box = tuple(int(v * 320 / 512) for v in ASTRO_BOX)
    plan = layout(small.shape, faces_for([box]))
    check_layout(plan, [box])
    assert plan.faces[0].kind in ("panel", "tag") and annotate(small, faces_for([box])).shape == small.shape


def test_annotate_draws_only_inside_the_layout():
    """Everything annotate changes lies in a face box (its outline, keypoints), a label, a badge, a leader line or the
    legend: so the rectangles checked above are what is drawn."""
    for img, boxes in (group_photo(0), rows_of_faces(3), rows_of_faces(20, side=70)):
        faces = faces_for(boxes)
        plan = layout(img.shape, faces)
        out = annotate(img, faces)
        H, W = img.shape[:2]
        changed = np.any(out[:H] != img, axis=2)
        allowed = np.zeros((H, W), np.uint8)
        for x, y, w, h in boxes:
            allowed[max(0, y - 4):y + h + 5, max(0, x - 4):x + w + 5] = 1
        for p in plan.faces:
            for x, y, w, h in p.rects:
                allowed[y:y + h, x:x + w] = 1
            if p.leader is not None:
                cv2.line(allowed, p.leader[:2], p.leader[2:], 1, 5)
        if plan.legend is not None and not plan.legend_below:
            x, y, w, h = plan.legend
            allowed[y:y + h, x:x + w] = 1
        assert changed.any() and not (changed & (allowed == 0)).any()


def test_odd_faces_and_images_do_not_break_the_layout():
    img = np.zeros((200, 300, 3), np.uint8)
    odd = [(-20, -20, 60, 60), (280, 180, 50, 50), (100, 100, 0, 0), (150, 40, 1, 1), (0, 0, 300, 200)]
    plan = layout(img.shape, faces_for(odd))
    assert len(plan.faces) == 5 and annotate(img, faces_for(odd)).shape[1] == 300
    whole = dict(faces_for([(0, 0, 300, 200)])[0], whole_image=True)
    (p,) = layout(img.shape, [whole]).faces
    assert p.kind == "whole" and annotate(img, [whole]).shape == img.shape
    tiny = np.zeros((20, 30, 3), np.uint8)
    assert annotate(tiny, faces_for([(2, 2, 10, 10), (15, 5, 10, 10)])).shape[1] == 30
    assert layout((0, 0, 3), []).faces == () and annotate(img, []).sum() == 0


# -- end to end -------------------------------------------------------------------------------------------------

def test_predict_annotate_writes_the_group_photo(tmp_path, capsys):
    img, _ = group_photo(0)
    photo = tmp_path / "group.jpg"
    cv2.imwrite(str(photo), img)
    model = make_tiny_model(tmp_path / "models")
    out_dir, js = tmp_path / "annotated", tmp_path / "faces.json"
    assert main(["predict", str(photo), "--model", str(model), "--annotate", str(out_dir), "--json", str(js),
                 "-q"]) == 0
    written = cv2.imread(str(out_dir / "group.jpg"))
    assert written is not None and written.shape[1] == 1600 and written.shape[0] >= 1200
    faces = json.loads(js.read_text())["images"][0]["faces"]
    plan = layout(img.shape, faces)
    check_layout(plan, [f["box"] for f in faces if not f["whole_image"]])
    assert written.shape[0] == plan.height
