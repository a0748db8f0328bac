"""Looking at a dataset (``ferlab data info|show|check``): class-count tables, sample grids, imbalance.

``count_table`` (one text row per split), ``write_grid`` (a labelled PNG of samples per class, optionally beside
the same images under the training augmentation; its size in pixels is ``grid_size_px``), ``imbalance`` (per
split, the largest / smallest class) and ``check_document`` (the JSON of ``ferlab data check``).  Duplicates and
leakage are ``data.leakage``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_write

# grid geometry (inches at GRID_DPI): exact binary fractions, so the PNG size is exact
GRID_DPI = 64
CELL, LEFT, RIGHT, TOP, BOTTOM, GAP = 1.0, 1.5, 0.25, 0.5, 0.25, 0.5


def _n(x: int) -> str:
    return f"{x:,}"


def count_table(ds) -> list[str]:
    """Text table: one row per split (and a total row), one column per class, plus the row total."""
    table = ds.class_counts()
    names = list(ds.classes)
    width = [max(len(c), 7) for c in names]
    split_w = max([len("total"), len("split"), *(len(s) for s in table)])
    head = f"{'split':<{split_w}} {'rows':>8} " + " ".join(f"{c:>{w}}" for c, w in zip(names, width))
    lines = [head, "-" * len(head)]
    totals = np.zeros(len(names), dtype=np.int64)
    for s, counts in table.items():
        vals = [counts[c] for c in names]
        totals += vals
        lines.append(f"{s:<{split_w}} {_n(sum(vals)):>8} " + " ".join(f"{_n(v):>{w}}" for v, w in zip(vals, width)))
    lines.append(f"{'total':<{split_w}} {_n(int(totals.sum())):>8} "
                 + " ".join(f"{_n(int(v)):>{w}}" for v, w in zip(totals, width)))
    return lines


def pick_per_class(ds, per_class: int, seed: int = 0) -> list[np.ndarray]:
    """For each class, up to ``per_class`` sample indices drawn at random (sorted by index)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(ds.num_classes):
        idx = np.flatnonzero(ds.labels == c)
        if len(idx) > per_class:
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        out.append(idx)
    return out


def grid_size_px(n_classes: int, per_class: int, augment: bool) -> tuple[int, int]:
    """(width, height) in pixels of the PNG written by ``write_grid``."""
    w_in, h_in = _figure_inches(n_classes, per_class, augment)
    return int(round(w_in * GRID_DPI)), int(round(h_in * GRID_DPI))


def _figure_inches(n_classes: int, per_class: int, augment: bool) -> tuple[float, float]:
    cols = per_class * (2 if augment else 1)
    w = LEFT + cols * CELL + (GAP if augment else 0.0) + RIGHT
    return w, TOP + n_classes * CELL + BOTTOM


def write_grid(ds, out: str | Path, per_class: int = 8, seed: int = 0, augment: dict | None = None,
               title: str = "") -> Path:
    """Write a labelled PNG grid (one row per class) atomically; with ``augment`` the same images are shown
    again, to the right, under ``Augmenter(augment)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = pick_per_class(ds, per_class, seed)
    aug_imgs = None
    if augment is not None:
        import torch

        from .augment import Augmenter

        flat = np.concatenate(picks) if any(len(p) for p in picks) else np.zeros(0, dtype=np.int64)
        aug_imgs = {}
        if len(flat):
            batch = Augmenter(augment, seed=seed)(torch.as_tensor(ds.images[flat]))
            aug = batch[:, 0].clamp(0, 255).numpy()
            aug_imgs = dict(zip(flat.tolist(), aug))
    C = ds.num_classes
    w_in, h_in = _figure_inches(C, per_class, augment is not None)
    fig = plt.figure(figsize=(w_in, h_in), dpi=GRID_DPI)
    counts = np.bincount(ds.labels[ds.labels >= 0], minlength=C)
    for r in range(C):
        y = BOTTOM + (C - 1 - r) * CELL
        fig.text((LEFT - 0.1) / w_in, (y + CELL / 2) / h_in, f"{ds.classes[r]}\n(n={counts[r]:,})",
                 ha="right", va="center", fontsize=9)
        for k in range(per_class):
            panels = [(0.0, None)] if augment is None else [(0.0, None), (per_class * CELL + GAP, aug_imgs)]
            for x0, source in panels:
                x = LEFT + x0 + k * CELL
                ax = fig.add_axes([(x + 0.03) / w_in, (y + 0.03) / h_in, (CELL - 0.06) / w_in, (CELL - 0.06) / h_in])
                ax.set_axis_off()
                if k < len(picks[r]):
                    i = int(picks[r][k])
                    img = ds.images[i] if source is None else source[i]
                    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    top_y = (BOTTOM + C * CELL + 0.05) / h_in
    if augment is not None:
        fig.text((LEFT + per_class * CELL / 2) / w_in, top_y, "original", ha="center", va="bottom", fontsize=10)
        fig.text((LEFT + per_class * CELL + GAP + per_class * CELL / 2) / w_in, top_y, "augmented",
                 ha="center", va="bottom", fontsize=10)
    if title:
        fig.text(0.01, 1 - 0.05 / h_in, title, ha="left", va="top", fontsize=8)

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=GRID_DPI)

    out = Path(out)
    try:
        atomic_write(out, write)
    finally:
        plt.close(fig)
    return out


def imbalance(ds) -> dict[str, dict]:
    """Per split: max/min class count ratio (inf when a class has no sample) and the classes involved."""
    out = {}
    for s, counts in ds.class_counts().items():
        vals = np.asarray(list(counts.values()))
        hi, lo = int(vals.argmax()), int(vals.argmin())
        ratio = float(vals[hi] / vals[lo]) if vals[lo] > 0 else float("inf")
        out[s] = {"ratio": ratio, "max_class": ds.classes[hi], "max": int(vals[hi]),
                  "min_class": ds.classes[lo], "min": int(vals[lo])}
    return out


def check_document(ds, leakage, imb: dict[str, dict]) -> dict:
    """The report of ``ferlab data check`` as JSON-ready data: source, size, classes, counts, loader warnings,
    the leakage report (``data.leakage.find_leakage``) and ``imbalance`` (an infinite ratio becomes null)."""
    return {"source": ds.source, "n": len(ds), "classes": list(ds.classes), "counts": ds.class_counts(),
            "warnings": ds.warnings, "leakage": leakage.to_dict(),
            "imbalance": {s: {**v, "ratio": None if v["ratio"] == float("inf") else v["ratio"]}
                          for s, v in imb.items()}}
