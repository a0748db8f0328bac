"""Learning-rate schedules as pure functions of training progress (so resuming needs no scheduler state),
plus ReduceLROnPlateau, whose small state lives in the checkpoint."""

from __future__ import annotations

import math

from ..errors import FerlabError

SCHEDULERS = ("onecycle", "cosine", "exponential", "plateau", "none")


def lr_at(cfg, epoch_float: float, plateau_scale: float = 1.0) -> float:
    """Learning rate at fractional epoch ``epoch_float`` in [0, cfg.epochs)."""
    base, total = cfg.lr, max(cfg.epochs, 1e-9)
    t = min(max(epoch_float / total, 0.0), 1.0)
    if cfg.scheduler == "onecycle":
        pct = cfg.warmup_epochs / total if cfg.warmup_epochs else 0.25
        start, end = base / 25, base / 1e4
        if t < pct:
            return start + (base - start) * (1 - math.cos(math.pi * t / pct)) / 2
        u = (t - pct) / max(1 - pct, 1e-9)
        return end + (base - end) * (1 + math.cos(math.pi * u)) / 2
    warm = min(epoch_float / cfg.warmup_epochs, 1.0) if cfg.warmup_epochs else 1.0
    if cfg.scheduler == "cosine":
        w = cfg.warmup_epochs / total
        u = max(t - w, 0) / max(1 - w, 1e-9)
        return base * warm * (1 + math.cos(math.pi * u)) / 2
    if cfg.scheduler == "exponential":
        return base * warm * cfg.gamma ** int(epoch_float)
    if cfg.scheduler == "plateau":
        return base * warm * plateau_scale
    if cfg.scheduler == "none":
        return base * warm
    raise FerlabError(f"unknown scheduler {cfg.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")


class Plateau:
    """ReduceLROnPlateau on the validation loss: multiply the rate by ``factor`` after ``patience``
    epochs without improvement."""

    def __init__(self, factor: float, patience: int, state: dict | None = None):
        self.factor, self.patience = factor, patience
        s = state or {}
        self.scale, self.best, self.bad = s.get("scale", 1.0), s.get("best", float("inf")), s.get("bad", 0)

    def step(self, val_loss: float) -> None:
        if val_loss < self.best - 1e-4:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale *= self.factor
                self.bad = 0

    def state(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}
