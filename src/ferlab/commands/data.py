"""ferlab data info|show|check PATH: look at a dataset before training on it.

PATH is a fer2013 CSV (plain or .gz) or an image folder (FER2013 folder release or any labelled folder).
  info   per-split class counts and totals (``--labels ferplus-majority`` for the FER+ labels)
  show   a PNG grid of N samples per class (``--augment`` adds the same images under training augmentation)
  check  bad rows, exact and near duplicates within and across splits, blank images, class imbalance
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ._options import SEED, STDOUT, check_output, int_in, write_output

#: the default training augmentation previewed by ``data show --augment``
DEFAULT_AUGMENT = {"crop": 44, "flip": 0.5, "rotate": 10, "scale": 0.1, "affine_p": 0.5, "erasing": 0.25}
# grid geometry (inches at GRID_DPI): exact binary fractions, so the PNG size is exact
GRID_DPI = 64
CELL, LEFT, RIGHT, TOP, BOTTOM, GAP = 1.0, 1.5, 0.25, 0.5, 0.25, 0.5
MAX_WARNINGS_SHOWN = 10


def add_parser(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("path", help="fer2013 CSV (.csv or .csv.gz) or image folder")
    common.add_argument("--labels", default="fer2013",
                        help="fer2013 (default) or FER+ labels: ferplus-majority, ferplus-probability, "
                             "ferplus-crossentropy, ferplus-multitarget (ferplus7-<mode>: 7 FER2013 classes)")
    common.add_argument("--votes", help="FER+ votes file fer2013new.csv (default: beside the CSV or ../ferplus/)")
    common.add_argument("--skip-bad", action="store_true",
                        help="bad rows / unreadable images become counted warnings instead of errors")

    p = sub.add_parser("data", help="dataset tools: info, show, check",
                       description="Look at a dataset: class counts, sample grids, duplicates and leakage.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    pi = dsub.add_parser("info", parents=[common], help="per-split class counts and totals")
    pi.set_defaults(func=run_info)

    ps = dsub.add_parser("show", parents=[common], help="PNG grid of samples per class",
                         description="Write a labelled grid of N samples per class; with --augment also the "
                                     "same images under the batched training augmentation.")
    ps.add_argument("--out", required=True, help="output PNG")
    ps.add_argument("--per-class", type=int_in(1, 1000), default=8, metavar="N", help="samples per class (default 8)")
    ps.add_argument("--split", help="only this split (default: all)")
    ps.add_argument("--augment", nargs="?", const="default", metavar="RECIPE",
                    help="add an augmented copy of the grid: the default training augmentation, or the "
                         "'augment' of a recipe YAML")
    ps.add_argument("--seed", type=SEED, default=0, help="which samples are drawn (default 0)")
    ps.set_defaults(func=run_show)

    pc = dsub.add_parser("check", parents=[common], help="bad rows, duplicates, blank images, imbalance",
                         description="Report bad rows (loaded with --skip-bad), exact and near duplicates "
                                     "within and across splits, blank images and class imbalance. Exit 0.")
    pc.add_argument("--near-threshold", type=int_in(0, 64), default=4, metavar="BITS",
                    help="pHash Hamming distance for near duplicates (default 4 of 64)")
    pc.add_argument("--no-near", action="store_true", help="exact duplicates only")
    pc.add_argument("--json", metavar="OUT", help="also write the report as JSON (- for stdout: the text report "
                                                   "then goes to stderr)")
    pc.set_defaults(func=run_check)

    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _load(args, skip_bad: bool | None = None):
    from ..data import load_dataset
    from ..inference.crop import FaceCropper

    return load_dataset(args.path, labels=args.labels, votes=args.votes,
                        skip_bad=args.skip_bad if skip_bad is None else skip_bad, cropper=FaceCropper())


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


def _print_warnings(ds, out=None) -> None:
    if not ds.warnings:
        return
    out = out or sys.stdout
    print(f"{len(ds.warnings)} warning(s):", file=out)
    for w in ds.warnings[:MAX_WARNINGS_SHOWN]:
        print(f"  {w}", file=out)
    if len(ds.warnings) > MAX_WARNINGS_SHOWN:
        print(f"  ... and {len(ds.warnings) - MAX_WARNINGS_SHOWN} more", file=out)


def run_info(args) -> int:
    ds = _load(args)
    h, w = ds.images.shape[1:]
    print(f"{ds.source}: {_n(len(ds))} images {w}x{h} grayscale, {ds.num_classes} classes, "
          f"splits {', '.join(ds.split_names())} (labels: {args.labels})")
    if ds.soft is not None and not args.labels.endswith("majority"):
        print("counts are of the hard labels (majority; the argmax of the target where a Training image has no "
              "majority); training uses the soft targets")
    print("\n".join(count_table(ds)))
    unlabelled = int((ds.labels < 0).sum())
    if unlabelled:
        print(f"{_n(unlabelled)} images without a hard label")
    _print_warnings(ds)
    return 0


# ---------------------------------------------------------------- show


def load_augment_config(spec: str) -> dict:
    """``default`` -> DEFAULT_AUGMENT; a recipe YAML -> its ``augment`` mapping (default if it has none)."""
    from ..errors import FerlabError

    if spec == "default":
        return dict(DEFAULT_AUGMENT)
    import yaml

    p = Path(spec)
    if not p.is_file():
        raise FerlabError(f"{p}: no such recipe file (give a recipe YAML or no value for the default augmentation)")
    try:
        recipe = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise FerlabError(f"{p}: not a valid YAML recipe ({str(e).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise FerlabError(f"{p}: a recipe must be a mapping of options")
    aug = recipe.get("augment", DEFAULT_AUGMENT)
    if not isinstance(aug, dict):
        raise FerlabError(f"{p}: 'augment' must be a mapping, e.g. {{crop: 44, flip: 0.5}}")
    return dict(aug)


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

    from ..io import atomic_write

    picks = pick_per_class(ds, per_class, seed)
    aug_imgs = None
    if augment is not None:
        import torch

        from ..data.augment import Augmenter

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


def run_show(args) -> int:
    from ..errors import FerlabError

    if args.per_class < 1:
        raise FerlabError("--per-class must be at least 1")
    if not str(args.out).lower().endswith(".png"):
        raise FerlabError(f"{args.out}: the grid is written as PNG; give a .png file name")
    check_output(args.out, "--out")
    augment = load_augment_config(args.augment) if args.augment else None
    if augment is not None:
        from ..data.augment import AugmentConfig

        AugmentConfig.from_dict(augment)  # unknown options -> one-line error before any work
    ds = _load(args)
    if args.split:
        ds = ds.by_split(args.split)
    title = f"{Path(ds.source).name}  split: {args.split or 'all'}  labels: {args.labels}"
    if augment is not None:
        title += "  augment: " + ", ".join(f"{k}={v}" for k, v in augment.items())
    out = write_grid(ds, args.out, per_class=args.per_class, seed=args.seed, augment=augment, title=title)
    w, h = grid_size_px(ds.num_classes, args.per_class, augment is not None)
    print(f"wrote {out} ({w}x{h} px: {ds.num_classes} classes x {args.per_class} samples"
          f"{', original and augmented' if augment is not None else ''})")
    return 0


# ---------------------------------------------------------------- check


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


def run_check(args) -> int:
    import contextlib

    check_output(args.json, "--json", allow_stdout=True)
    if args.json == STDOUT:  # stdout carries the JSON; the text report goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            doc = _check(args)
        write_output(STDOUT, json.dumps(doc, indent=1) + "\n")
        return 0
    doc = _check(args)
    if args.json:
        write_output(args.json, json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0


def _check(args) -> dict:
    import time

    from ..data.leakage import find_leakage

    ds = _load(args, skip_bad=True)  # bad rows are counted, not fatal
    h, w = ds.images.shape[1:]
    print(f"{ds.source}: {_n(len(ds))} images {w}x{h}, {ds.num_classes} classes, splits "
          f"{', '.join(ds.split_names())}")
    print(f"loader warnings (bad rows skipped, classes dropped): {len(ds.warnings)}")
    for line in ds.warnings[:MAX_WARNINGS_SHOWN]:
        print(f"  {line}")
    if len(ds.warnings) > MAX_WARNINGS_SHOWN:
        print(f"  ... and {len(ds.warnings) - MAX_WARNINGS_SHOWN} more")
    t0 = time.perf_counter()
    report = find_leakage(ds, near=not args.no_near, near_threshold=args.near_threshold)
    print(f"duplicates (exact = pixel-identical; near = pHash within {args.near_threshold} bits), "
          f"{time.perf_counter() - t0:.1f} s:")
    for line in report.summary_lines():
        print(f"  {line}")
    print("class imbalance (largest / smallest class):")
    imb = imbalance(ds)
    for s, v in imb.items():
        ratio = "inf" if v["ratio"] == float("inf") else f"{v['ratio']:.1f}"
        print(f"  {s}: {ratio} ({v['max_class']} {_n(v['max'])} / {v['min_class']} {_n(v['min'])})")
    return {"source": ds.source, "n": len(ds), "classes": list(ds.classes), "counts": ds.class_counts(),
            "warnings": ds.warnings, "leakage": report.to_dict(),
            "imbalance": {s: {**v, "ratio": None if v["ratio"] == float("inf") else v["ratio"]}
                          for s, v in imb.items()}}
