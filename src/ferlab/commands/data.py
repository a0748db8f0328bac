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

from ._options import SEED, STDOUT, check_output, int_in, write_output

#: the default training augmentation previewed by ``data show --augment``
DEFAULT_AUGMENT = {"crop": 44, "flip": 0.5, "rotate": 10, "scale": 0.1, "affine_p": 0.5, "erasing": 0.25}
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
    from ..errors import FerlabError
    from ..inference.crop import FaceCropper

    try:
        return load_dataset(args.path, labels=args.labels, votes=args.votes,
                            skip_bad=args.skip_bad if skip_bad is None else skip_bad, cropper=FaceCropper())
    except FerlabError:
        if _is_ferplus_votes(args.path):  # a new user's first guess: the FER+ file holds labels, not images
            action = getattr(args, "data_command", None) or "info"
            raise FerlabError(f"{args.path}: this is the FER+ votes file (labels only, no pixels): give the FER2013 "
                              f"CSV and the FER+ labels, e.g. ferlab data {action} fer2013.csv --labels "
                              "ferplus-majority (the votes are found beside the CSV or in ../ferplus/, else "
                              f"--votes {args.path})", "data") from None
        raise


def _is_ferplus_votes(path: str) -> bool:
    """Whether ``path`` is a FER+ votes file (fer2013new.csv: ``Usage,Image name,neutral,...``) by its header."""
    import gzip

    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rt", errors="replace") as f:
            header = f.readline(4096)
    except (OSError, EOFError, UnicodeError):
        return False
    columns = {c.strip().lower() for c in header.split(",")}
    return {"image name", "neutral", "happiness", "contempt"} <= columns and "pixels" not in columns


def _n(x: int) -> str:
    return f"{x:,}"


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
    from ..data.inspection import count_table

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


def run_show(args) -> int:
    from ..data.inspection import grid_size_px, write_grid
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

    from ..data.inspection import check_document, imbalance
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
    return check_document(ds, report, imb)
