"""Fast feature extraction: run the frozen backbone once, cache its features, train only the head.

Used by ``train()`` when ``freeze: backbone`` and ``cache_features: true``.  The cached views are the
centre crop and its mirror image (the only augmentation that survives caching).  Minutes, not hours, on a
CPU: the backbone sees every image twice in total instead of once per epoch.  The run directory has the
same files as any other run, so ``ferlab evaluate`` / ``export`` work on it unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .build import build_model, prepare_data, targets
from .callbacks import update_best
from .config import TrainConfig
from .forward import extract_features
from .losses import class_weights, soft_cross_entropy
from .rundir import RunDir
from .schedule import lr_at
from .trainer import finish_run


def fit_head_cached(cfg: TrainConfig, run_dir: str | Path, progress: bool = True) -> dict:
    run = RunDir(run_dir)
    t_start = time.time()
    train, val = prepare_data(cfg)
    model = build_model(cfg, len(train.classes))
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    views = np.concatenate([train.images, train.images[:, :, ::-1]])
    x_train = torch.as_tensor(extract_features(model, np.ascontiguousarray(views), cfg.input_size))
    x_val = torch.as_tensor(extract_features(model, val.images, cfg.input_size))
    y_train = torch.cat([targets(train, cfg)] * 2)
    weights = class_weights(train.labels, len(train.classes), cfg.class_weights)
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    rows, best = [], {"val_acc": -1.0, "val_loss": float("inf"), "epoch_acc": -1, "epoch_loss": -1}
    n, bs = len(x_train), max(cfg.batch_size, 256)
    steps = max(n // bs, 1)
    extract_s = time.time() - t_start
    if progress:
        print(f"cached {n} training views and {len(x_val)} validation features in {extract_s:.0f} s", flush=True)
    for epoch in range(cfg.epochs):
        t0 = time.time()
        perm = torch.randperm(n, generator=g)
        head.train()
        tot, correct = 0.0, 0
        for s in range(steps):
            lr = lr_at(cfg, epoch + s / steps)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = perm[s * bs:(s + 1) * bs]
            logits = head(F.dropout(x_train[idx], 0.2, training=True))
            loss = soft_cross_entropy(logits, y_train[idx], weights, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y_train[idx].argmax(1)).sum())
        head.eval()
        with torch.no_grad():
            vl = head(x_val)
        val_loss = float(F.cross_entropy(vl, torch.as_tensor(val.labels)))
        val_acc = float((vl.argmax(1).numpy() == val.labels).mean())
        seen = steps * bs
        rows.append({"epoch": epoch + 1, "train_loss": tot / seen, "train_acc": correct / seen, "val_loss": val_loss,
                     "val_acc": val_acc, "lr": lr, "images_per_s": seen / max(time.time() - t0, 1e-9),
                     "epoch_s": time.time() - t0, "elapsed_s": time.time() - t_start})
        update_best(run, best, rows[-1], model)
    run.write_metrics(rows)
    run.write_curves(rows)
    summary = finish_run(cfg, run.path, model, rows, best, train.classes, train, val, time.time() - t_start)
    if progress:
        print(f"head trained on cached features: best validation accuracy {best['val_acc']:.4f} "
              f"(epoch {best['epoch_acc']}), {time.time() - t_start:.0f} s in all", flush=True)
    return summary
