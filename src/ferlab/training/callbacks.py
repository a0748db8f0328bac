"""What happens after each epoch, as callbacks (as in Lightning): the training loop validates and hands the
epoch's metrics row to each callback in turn; the loop itself knows nothing of checkpoints or early stopping.

``Trainer`` runs, on the main process and in this order:

  BestWeights     best-model selection: ``best_acc`` / ``best_loss`` weights when validation improves
  Checkpoint      ``last.pt``, the full training state a killed run resumes from
  MetricsLog      ``metrics.csv``, ``curves.png`` and the epoch's line on the console
  EpochHook       the caller's ``on_epoch_end(row)`` (e.g. a hyper-parameter search pruning a trial)
  EarlyStopping   stop when ``early_stopping``'s metric has not improved in ``patience`` epochs

A callback's ``on_epoch_end(trainer, loop, row)`` returning True stops the run (the later ones do not run).
Every file goes through the run's ``RunDir``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .rundir import RunDir


def validated_model(loop: SimpleNamespace) -> torch.nn.Module:
    """The network that is validated and kept: the weight average with ``ema``, else the model."""
    return loop.ema.module if loop.ema is not None else loop.model


def update_best(run: RunDir, best: dict[str, Any], row: dict[str, Any], model: torch.nn.Module) -> None:
    """Record a better validation accuracy / loss in ``best`` and write that epoch's weights
    (``best_acc.safetensors`` / ``best_loss.safetensors``).  Shared with the cached-feature head fit."""
    epoch = int(row["epoch"])
    if row["val_acc"] > best["val_acc"]:
        best.update(val_acc=row["val_acc"], epoch_acc=epoch)
        run.save_weights(model, "best_acc", {"epoch": str(epoch)})
    if row["val_loss"] < best["val_loss"]:
        best.update(val_loss=row["val_loss"], epoch_loss=epoch)
        run.save_weights(model, "best_loss", {"epoch": str(epoch)})


def stale_epochs(rows: list[dict], metric: str) -> int:
    """Epochs since ``metric`` (``val_acc``: higher is better; ``val_loss``: lower) was at its best."""
    if not metric:
        return 0
    vals = [r[metric] for r in rows]
    best_i = int(np.argmax(vals) if metric == "val_acc" else np.argmin(vals))
    return len(vals) - 1 - best_i


class Callback:
    """One hook of the training loop; ``on_epoch_end`` returns True to stop the run."""

    def on_epoch_end(self, trainer, loop: SimpleNamespace, row: dict[str, Any]) -> bool:
        return False


class BestWeights(Callback):
    def on_epoch_end(self, trainer, loop, row) -> bool:
        update_best(trainer.rundir, loop.best, row, validated_model(loop))
        return False


class Checkpoint(Callback):
    """``last.pt``, written before ``metrics.csv`` and holding the rows: a run killed between the two files
    resumes from ``last.pt`` alone."""

    def on_epoch_end(self, trainer, loop, row) -> bool:
        trainer.rundir.save_state({
            "model": loop.model.state_dict(), "optimizer": loop.opt.state_dict(), "epoch": int(row["epoch"]),
            "best": loop.best, "elapsed": row["elapsed_s"], "aug_rng": loop.aug.g.get_state(),
            "gen_rng": loop.gen.get_state(), "torch_rng": torch.get_rng_state(), "plateau": loop.plateau.state(),
            "rows": [dict(r) for r in loop.rows],
            **({"ema": loop.ema.state_dict()} if loop.ema is not None else {}),
        })
        return False


class MetricsLog(Callback):
    def on_epoch_end(self, trainer, loop, row) -> bool:
        trainer.rundir.write_metrics(loop.rows)
        trainer.rundir.write_curves(loop.rows)
        if trainer.log:
            print(f"epoch {row['epoch']}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | "
                  f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.4f} | {row['images_per_s']:.0f} img/s",
                  flush=True)
        return False


class EpochHook(Callback):
    """The caller's ``on_epoch_end(row) -> bool`` (True stops the run)."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, trainer, loop, row) -> bool:
        return bool(self.fn(row))


class EarlyStopping(Callback):
    def on_epoch_end(self, trainer, loop, row) -> bool:
        cfg = trainer.cfg
        if not cfg.early_stopping:
            return False
        if stale_epochs(loop.rows, cfg.early_stopping) >= cfg.patience:
            if trainer.log:
                print(f"early stopping after epoch {row['epoch']}: no {cfg.early_stopping} gain "
                      f"in {cfg.patience} epochs", flush=True)
            return True
        return False


def default_callbacks(on_epoch_end=None) -> list[Callback]:
    """The trainer's callbacks, in the order they run."""
    hook = [EpochHook(on_epoch_end)] if on_epoch_end is not None else []
    return [BestWeights(), Checkpoint(), MetricsLog(), *hook, EarlyStopping()]
