"""ferlab train RECIPE.yaml [key=value ...] | ferlab train --resume RUN_DIR"""

from __future__ import annotations

import time
from pathlib import Path

from ._options import add_progress, check_output, progress_of


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a recipe (configs/*.yaml) with key=value overrides",
                       description="Train a model. Example: ferlab train configs/fernet.yaml epochs=5 --out runs/x")
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: the built-in defaults, model fernet)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=0.01 augment.rotate=10")
    p.add_argument("--out", help="run directory (default runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    add_progress(p, default=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training import load_config, resume, train
    from ..training.config import check_runnable

    if args.resume:
        summary = resume(args.resume, progress=progress_of(args))
        out = args.resume
    else:
        recipe, overrides = args.recipe, list(args.overrides)
        if recipe and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
            recipe, overrides = None, [recipe, *overrides]
        cfg = load_config(recipe, overrides)  # every key checked (type and range) before anything runs
        check_runnable(cfg)
        out = args.out or str(Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
        check_output(out, "--out", folder=True)  # not created here: the trainer makes it when the run starts
        summary = train(cfg, out, progress=progress_of(args))
    if not summary:  # a non-main process of a torchrun (DDP) launch: rank 0 reports
        return 0
    print(f"run {out}: {selection_line(summary)} ({summary['epochs_run']} epochs, "
          f"{summary['train_time_s'] / 60:.1f} min, {summary['images_per_s_median']:.0f} images/s)")
    return 0


def selection_line(summary: dict) -> str:
    """What model.safetensors holds: the selected epoch and its validation numbers (not the best-accuracy
    epoch when the run selects by validation loss), with the best accuracy beside it when that differs."""
    sel = summary.get("selected", "best_acc")
    epoch = summary.get("selected_epoch")
    acc, loss = summary.get("selected_val_acc"), summary.get("selected_val_loss")
    if epoch is None:  # a summary written before selected_epoch existed
        epoch = summary.get("best_epoch_loss") if sel == "best_loss" else summary.get("best_epoch_acc")
        acc = summary.get("best_val_acc") if sel == "best_acc" else None
        loss = summary.get("best_val_loss") if sel == "best_loss" else None
    why = {"best_acc": "best validation accuracy", "best_loss": "lowest validation loss",
           "last": "last epoch"}.get(sel, sel)
    nums = ", ".join(t for t in (f"validation accuracy {acc:.4f}" if acc is not None else "",
                                 f"loss {loss:.4f}" if loss is not None else "") if t)
    line = f"kept epoch {epoch} ({why})" + (f": {nums}" if nums else "")
    if summary.get("best_epoch_acc") not in (None, epoch):
        line += f"; best validation accuracy {summary['best_val_acc']:.4f} was at epoch {summary['best_epoch_acc']}"
    return line
