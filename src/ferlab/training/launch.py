"""``train`` and ``resume``: which training a recipe gets (the training loop, the cached-feature head fit, or
one run per stage) and resuming a killed run from its directory."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FerlabError
from .config import TrainConfig, load_config
from .headfit import fit_head_cached
from .rundir import RunDir
from .trainer import Trainer


def train(cfg: TrainConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
          on_epoch_end=None) -> dict:
    """Train ``cfg`` into ``run_dir``.  With ``cfg.stages`` (e.g. two-stage fine-tuning: head only, then the
    top blocks at a lower rate) each stage runs in ``run_dir/stageN`` starting from the previous stage's
    weights, and the last stage's result becomes the run's result."""
    if cfg.cache_features and not cfg.stages:
        if cfg.freeze != "backbone":
            raise FerlabError("cache_features needs freeze: backbone (only the head trains on cached features)")
        return fit_head_cached(cfg, run_dir, progress=progress)
    if not cfg.stages:
        return Trainer(cfg, run_dir, progress=progress, on_epoch_end=on_epoch_end).fit(resume=resume)
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    if not resume:
        run.write_config(cfg)
    base = {k: v for k, v in cfg.to_dict().items() if k != "stages"}
    summary: dict = {}
    prev: Path | None = None
    total_s, total_epochs = 0.0, 0
    for i, overrides in enumerate(cfg.stages, start=1):
        stage_cfg = TrainConfig.from_dict({**base, **overrides, "stages": []})
        if prev is not None:
            stage_cfg.init = str(prev)
        stage = RunDir(run / f"stage{i}")
        if stage.finished():
            summary = stage.read_summary()
        else:
            again = resume and stage.has_state()
            summary = Trainer(stage_cfg, stage.path, progress=progress, on_epoch_end=on_epoch_end).fit(resume=again)
        prev = stage.weights_path()
        total_s += summary.get("train_time_s", 0.0)
        total_epochs += summary.get("epochs_run", 0)
    run.copy_weights(prev)
    summary = {**summary, "stages": len(cfg.stages), "train_time_s": total_s, "epochs_run": total_epochs,
               "epochs": total_epochs}
    run.write_summary(summary)
    return summary


def resume(run_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Go on with a killed run from its last checkpoint (its recipe is the run's config.yaml)."""
    run = RunDir(run_dir).check()
    return train(load_config(run / RunDir.CONFIG), run.path, resume=True, progress=progress)
