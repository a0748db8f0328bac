"""A weight soup: the mean of the weights of runs fine-tuned from one starting point, as one network.

Runs that start from the same weights and differ only in seed (or a little in recipe) stay in one basin of
the loss, so the mean of their weights is itself a good network, often better than each (Wortsman et al.,
2022, "Model soups"), at the cost of one network.  The soup is written as a run directory (``config.yaml`` of
the first run, ``model.safetensors``, ``summary.json``) so ``ferlab export`` and ``ferlab evaluate`` take it
like any run; its summary names its ingredients and holds its own accuracy on their validation split,
measured here, next to theirs.  Batch-norm statistics are averaged like the weights.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import FerlabError
from ..io import portable_path
from .config import TrainConfig
from .rundir import RunDir

#: recipe keys that must agree for weights to be averaged (the network and what it reads)
SAME = ("model", "model_options", "input_size", "labels", "data", "val_split", "init")


def make_soup(runs: list[str | os.PathLike], out: str | os.PathLike, progress: bool = True) -> dict:
    """Average the weights of ``runs`` into the run directory ``out``; returns its summary."""
    from ..models.weights import load_state_dict
    from .build import load_run, prepare_data
    from .checkpoint import save_weights
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
    states = [load_state_dict(d.weights()) for d in dirs]
    if any(s.keys() != states[0].keys() for s in states[1:]):
        raise FerlabError("the runs' weights have different layers")
    mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
            for k, v in states[0].items()}
    model, summary, cfg = load_run(dirs[0])
    model.load_state_dict(mean)
    model.eval()
    _, val = prepare_data(TrainConfig.from_dict({**cfg.to_dict(), "balance": "none", "extra_data": []}))
    t0 = time.perf_counter()
    scores = []
    for m in [*(load_run(d)[0] for d in dirs), model]:
        scores.append(round(float((predict_logits(m, val.images, cfg.input_size).argmax(1) == val.labels).mean()), 6))
        if progress:
            print(f"{'soup' if m is model else dirs[len(scores) - 1].path}: {cfg.val_split} accuracy {scores[-1]:.2%}",
                  flush=True)
    summaries = [d.read_summary() for d in dirs]
    soup = {
        "ingredients": [portable_path(d.path) for d in dirs],
        "ingredient_val_acc": scores[:-1],
        "val_acc": scores[-1],
        "measured_s": round(time.perf_counter() - t0, 1),
    }
    summary = {
        **summary, "selected": "soup", "selected_epoch": None, "selected_val_acc": scores[-1],
        "selected_val_loss": None, "best_val_acc": max(scores), "seed": None,
        "train_time_s": float(np.sum([s.get("train_time_s", 0) for s in summaries])),
        "soup": soup,
    }
    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    save_weights(model, run / "model.safetensors", metadata={"soup_of": ", ".join(soup["ingredients"])})
    run.write_summary(summary)
    return summary


def describe(summary: dict) -> str:
    s = summary["soup"]
    each = ", ".join(f"{Path(p).name} {a:.2%}" for p, a in zip(s["ingredients"], s["ingredient_val_acc"]))
    return f"soup of {len(s['ingredients'])} runs: {summary['val_split']} accuracy {s['val_acc']:.2%} ({each})"
