"""A weight soup: the mean of the weights of runs fine-tuned from one starting point, as one network.

Runs that start from the same weights and differ only in seed (or a little in recipe) stay in one basin of
the loss, so the mean of their weights is itself a good network, often better than each (Wortsman et al.,
2022, "Model soups"), at the cost of one network.  The soup is written as a run directory (``config.yaml`` of
the first run, ``model.safetensors``, ``summary.json``) so ``ferlab export`` and ``ferlab evaluate`` take it
like any run; its summary names its ingredients and holds its own accuracy on their validation split,
measured here, next to theirs.  Batch-norm statistics are averaged like the weights.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import torch

from ..errors import FerlabError
from ..io import portable_path
from .config import TrainConfig
from .rundir import RunDir

#: recipe keys that must agree for weights to be averaged (the network and what it reads)
SAME = ("model", "model_options", "input_size", "labels", "data", "val_split", "init")


def make_soup(runs: list[str | os.PathLike], out: str | os.PathLike, progress: bool = True) -> dict:
    """Average the weights of ``runs`` into the run directory ``out``; returns its summary."""
    from .build import load_run, prepare_data
    from .forward import predict_logits

    if len(runs) < 2:
        raise FerlabError("a soup needs at least two runs")
    dirs = [RunDir(r).check() for r in runs]
    configs = [d.read_config() for d in dirs]
    for d, c in zip(dirs[1:], configs[1:]):
        for k in SAME:
            if getattr(c, k) != getattr(configs[0], k):
                raise FerlabError(f"{d.path}: {k} differs from {dirs[0].path} ({getattr(c, k)!r} vs "
                                  f"{getattr(configs[0], k)!r}); a soup averages runs of one recipe and one start")
    loaded = [load_run(d) for d in dirs]  # (model, summary, config) of each ingredient
    states = [m.state_dict() for m, _, _ in loaded]
    if any(s.keys() != states[0].keys() for s in states[1:]):
        raise FerlabError("the runs' weights have different layers")
    mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
            for k, v in states[0].items()}
    _, summary, cfg = loaded[0]
    model = copy.deepcopy(loaded[0][0])
    model.load_state_dict(mean)
    model.eval()
    _, val = prepare_data(TrainConfig.from_dict({**cfg.to_dict(), "balance": "none", "extra_data": []}))
    t0 = time.perf_counter()
    scores = []
    for name, m in [*((d.path, m) for d, (m, _, _) in zip(dirs, loaded)), ("soup", model)]:
        scores.append(round(float((predict_logits(m, val.images, cfg.input_size).argmax(1) == val.labels).mean()), 6))
        if progress:
            print(f"{name}: {cfg.val_split} accuracy {scores[-1]:.2%}", flush=True)
    soup = {
        "ingredients": [portable_path(d.path) for d in dirs],
        "ingredient_val_acc": scores[:-1],
        "val_acc": scores[-1],
        "measured_s": round(time.perf_counter() - t0, 1),
    }
    summary = {
        **summary, "selected": "soup", "selected_epoch": None, "selected_val_acc": scores[-1],
        "selected_val_loss": None, "best_val_acc": scores[-1], "best_epoch_acc": None, "best_val_loss": None,
        "best_epoch_loss": None, "seed": None,  # the first ingredient's own epochs and seed are not the soup's
        "train_time_s": float(sum(s.get("train_time_s", 0) for _, s, _ in loaded)),
        "soup": soup,
    }
    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    run.save_weights(model, metadata={"soup_of": ", ".join(soup["ingredients"])})
    run.write_summary(summary)
    return summary


def describe(summary: dict) -> str:
    s = summary["soup"]
    each = ", ".join(f"{Path(p).name} {a:.2%}" for p, a in zip(s["ingredients"], s["ingredient_val_acc"]))
    return f"soup of {len(s['ingredients'])} runs: {summary['val_split']} accuracy {s['val_acc']:.2%} ({each})"
