"""Losses: cross-entropy (class weights, label smoothing), soft-label CE, multi-target, mixup/cutmix."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FerlabError


def class_weights(labels: np.ndarray, num_classes: int, mode: str = "balanced") -> torch.Tensor | None:
    """'balanced': n / (C * count_c); 'sqrt': its square root; 'none': None."""
    if mode == "none":
        return None
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
    w = counts.sum() / (num_classes * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    elif mode != "balanced":
        raise FerlabError(f"unknown class_weights {mode!r} (none, balanced, sqrt)")
    return torch.tensor(w, dtype=torch.float32)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against a target distribution (N, C)."""
    c = logits.shape[1]
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / c
    logp = F.log_softmax(logits.float(), dim=1)
    per = -(target * logp)
    if weight is not None:
        per = per * weight[None, :]
    return per.sum(1).mean()


def multi_target_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FER+ multi-target: -log of the probability mass on the accepted emotions."""
    p = F.softmax(logits.float(), dim=1)
    mass = (p * (target > 0).float()).sum(1).clamp_min(1e-8)
    return -mass.log().mean()


def mix_batch(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, mixup: float, cutmix: float):
    """Mixup or cutmix (chosen at random when both are on) on a batch with one-hot/soft targets y."""
    if not mixup and not cutmix:
        return x, y
    use_cutmix = cutmix and (not mixup or torch.rand(1, generator=g).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=g))).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=g)
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm]
