"""ferlab train RECIPE.yaml [key=value ...] | ferlab train --resume RUN_DIR"""

from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a recipe (configs/*.yaml) with key=value overrides",
                       description="Train a model. Example: ferlab train configs/fernet.yaml epochs=5 --out runs/x")
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: the built-in defaults, model fernet)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=0.01 augment.rotate=10")
    p.add_argument("--out", help="run directory (default runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training import load_config, resume, train

    if args.resume:
        summary = resume(args.resume, progress=not args.no_progress)
        out = args.resume
    else:
        recipe, overrides = args.recipe, list(args.overrides)
        if recipe and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
            recipe, overrides = None, [recipe, *overrides]
        cfg = load_config(recipe, overrides)
        out = args.out or str(Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
        summary = train(cfg, out, progress=not args.no_progress)
    if not summary:  # a non-main process of a torchrun (DDP) launch: rank 0 reports
        return 0
    print(f"run {out}: best validation accuracy {summary['best_val_acc']:.4f} at epoch {summary['best_epoch_acc']} "
          f"({summary['epochs_run']} epochs, {summary['train_time_s'] / 60:.1f} min, "
          f"{summary['images_per_s_median']:.0f} images/s)")
    return 0
