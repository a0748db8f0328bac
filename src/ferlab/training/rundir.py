"""The run directory: the one writer and reader of a training run's files (no torch needed to read one).

A run directory holds:
  config.yaml        the resolved recipe
  metrics.csv        one row per epoch (loss, accuracy, learning rate, images/s, time)
  curves.png         accuracy and loss curves
  last.pt            full training state (weights-only torch format), written atomically every epoch
  best_acc.safetensors / best_loss.safetensors   best weights by validation accuracy / loss
  model.safetensors  the run's result (the best checkpoint by ``select_metric``)
  summary.json       best epoch, validation metrics, time, images/s
  stageN/            one run directory per stage of a staged recipe

Every file is written atomically (``ferlab.io.atomic_write``): a run killed at any moment is resumable and
never holds half a file.  ``metrics.csv`` is read tolerantly (a torn last line of a run being written is
skipped), so ``ferlab compare`` can read runs that are still going.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import FerlabError
from ..io import atomic_write
from .config import TrainConfig, read_yaml


class RunDir:
    """``RunDir("runs/fernet")``: paths and readers/writers of one run directory."""

    CONFIG, METRICS, CURVES, SUMMARY, STATE = "config.yaml", "metrics.csv", "curves.png", "summary.json", "last.pt"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @staticmethod
    def is_run(path: str | os.PathLike) -> bool:
        """Whether ``path`` is a run directory (it has its config.yaml)."""
        p = Path(path)
        return p.is_dir() and (p / RunDir.CONFIG).is_file()

    def check(self) -> RunDir:
        if not (self.path / self.CONFIG).is_file():
            raise FerlabError(f"{self.path}: not a run directory (no config.yaml)")
        return self

    # -- config.yaml

    def write_config(self, recipe: TrainConfig | dict[str, Any]) -> None:
        d = recipe.to_dict() if isinstance(recipe, TrainConfig) else recipe
        atomic_write(self.path / self.CONFIG, lambda tmp: Path(tmp).write_text(yaml.safe_dump(d)))

    def read_config_dict(self, strict: bool = False) -> dict[str, Any]:
        """config.yaml as written (no validation); {} when there is none.  A file that is not UTF-8 YAML or not
        a mapping gives {} too, or with ``strict`` a one-line ``FerlabError``."""
        f = self.path / self.CONFIG
        try:
            d = (read_yaml(f, "run config") or {}) if f.is_file() else {}
        except FerlabError:
            if strict:
                raise
            return {}
        if not isinstance(d, dict):
            if strict:
                raise FerlabError(f"{f}: a run config must be a mapping")
            return {}
        return d

    def read_config(self) -> TrainConfig:
        """config.yaml as a validated ``TrainConfig``; a file that is not UTF-8 YAML, not a mapping or not a
        valid recipe is a one-line ``FerlabError`` naming it."""
        self.check()
        f = self.path / self.CONFIG
        d = read_yaml(f, "run config")
        if not isinstance(d, dict):
            raise FerlabError(f"{f}: a run config must be a mapping of recipe keys (is it the run's config.yaml?)")
        try:
            return TrainConfig.from_dict(d)
        except FerlabError as e:
            raise type(e)(f"{f}: {e}", e.kind) from None

    # -- metrics.csv

    def write_metrics(self, rows: list[dict]) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)

        atomic_write(self.path / self.METRICS, write)

    def read_metrics(self) -> list[dict[str, float]]:
        """One dict per epoch (``epoch`` an int, the rest floats); [] before the first epoch."""
        f = self.path / self.METRICS
        if not f.is_file():
            return []
        rows = []
        with open(f, newline="") as fh:
            for r in csv.DictReader(fh):
                try:
                    rows.append({k: (int(float(v)) if k == "epoch" else float(v)) for k, v in r.items() if k})
                except (TypeError, ValueError):
                    continue  # a torn last line of a run being written
        return rows

    # -- curves.png

    def write_curves(self, rows: list[dict]) -> None:
        """Loss and accuracy per epoch, training and validation (matplotlib).  With few epochs each one is
        marked (a line through one point draws nothing: a 1-epoch run had empty curves)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        ep = [r["epoch"] for r in rows]
        style = {"marker": "o", "markersize": 5 if len(ep) < 5 else 3} if len(ep) <= 30 else {}
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        ax[0].plot(ep, [r["train_loss"] for r in rows], label="train", **style)
        ax[0].plot(ep, [r["val_loss"] for r in rows], label="validation", **style)
        ax[0].set_title("loss")
        ax[1].plot(ep, [r["train_acc"] for r in rows], label="train", **style)
        ax[1].plot(ep, [r["val_acc"] for r in rows], label="validation", **style)
        ax[1].set_title("accuracy")
        for a in ax:
            a.set_xlabel("epoch")
            if len(ep) <= 10:  # whole epochs only (no 0.945 ... 1.050 ticks around a single epoch)
                a.set_xticks(ep)
                if len(ep) == 1:
                    a.set_xlim(ep[0] - 0.5, ep[0] + 0.5)
            else:
                a.xaxis.set_major_locator(MaxNLocator(integer=True))
            a.grid(alpha=0.3)
            a.legend()
        fig.tight_layout()
        atomic_write(self.path / self.CURVES, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
        plt.close(fig)

    # -- summary.json

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.path / self.SUMMARY, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))

    def read_summary(self) -> dict[str, Any]:
        """summary.json, or {} while the run is still going; a file that is not a JSON object is a one-line
        ``FerlabError``."""
        f = self.path / self.SUMMARY
        if not f.is_file():
            return {}
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise FerlabError(f"{f}: not a valid summary (JSON written by ferlab train)") from None
        if not isinstance(d, dict):
            raise FerlabError(f"{f}: not a valid summary (JSON written by ferlab train)")
        return d

    def finished(self) -> bool:
        return (self.path / self.SUMMARY).is_file()

    # -- weights (writing them needs torch: imported when called, so a RunDir reads runs without it)

    def weights_path(self, name: str = "model") -> Path:
        """``NAME.safetensors`` of this run: ``model`` (the result), ``best_acc``, ``best_loss``."""
        return self.path / f"{name}.safetensors"

    def weights(self, name: str = "model") -> Path:
        """``NAME.safetensors``, else ``best_acc.safetensors`` (a run still going)."""
        for f in (self.weights_path(name), self.weights_path("best_acc")):
            if f.is_file():
                return f
        raise FerlabError(f"{self.path}: no weights yet (model.safetensors / best_acc.safetensors)")

    def save_weights(self, model, name: str = "model", metadata: dict[str, str] | None = None) -> None:
        """The weights of a torch ``model`` as ``NAME.safetensors`` (atomically)."""
        from .checkpoint import save_weights

        save_weights(model, self.weights_path(name), metadata)

    def copy_weights(self, src: Path, name: str = "model") -> None:
        data = Path(src).read_bytes()
        atomic_write(self.weights_path(name), lambda tmp: Path(tmp).write_bytes(data))

    # -- last.pt (the full training state a killed run resumes from)

    def has_state(self) -> bool:
        return (self.path / self.STATE).exists()

    def save_state(self, state: dict) -> None:
        from .checkpoint import save_training_state

        save_training_state(state, self.path / self.STATE)

    def load_state(self) -> dict:
        from .checkpoint import load_training_state

        return load_training_state(self.path / self.STATE)
