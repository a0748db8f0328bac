"""Batched augmentation on whole uint8 image batches (torch), for 2-core CPU training.

Every op takes a float batch (N, 1, H, W) in [0, 255] and a ``torch.Generator`` so a seed
reproduces it.  ``Augmenter`` chains them from a plain config dict (the recipe's ``augment``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ..errors import FerlabError


def random_crop(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` crop per image (one gather, no Python loop over images)."""
    n, c, h, w = x.shape
    if size >= h and size >= w:
        return x
    oy = torch.randint(0, h - size + 1, (n,), generator=g)
    ox = torch.randint(0, w - size + 1, (n,), generator=g)
    ar = torch.arange(size)
    rows = (oy[:, None] + ar[None, :])[:, None, :, None].expand(n, c, size, w)
    x = torch.gather(x, 2, rows)
    cols = (ox[:, None] + ar[None, :])[:, None, None, :].expand(n, c, size, size)
    return torch.gather(x, 3, cols)


def hflip(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    m = torch.rand(x.shape[0], generator=g) < p
    if m.any():
        x = x.clone()
        x[m] = x[m].flip(-1)
    return x


def affine(x: torch.Tensor, g: torch.Generator, rotate: float = 0.0, scale: float = 0.0,
           translate: float = 0.0, shear: float = 0.0, p: float = 1.0) -> torch.Tensor:
    """Random rotation (degrees), zoom (+-fraction), translation (fraction of size), shear (degrees)."""
    n = x.shape[0]
    if not (rotate or scale or translate or shear) or p <= 0:
        return x

    def u(a):
        return (torch.rand(n, generator=g) * 2 - 1) * a

    on = (torch.rand(n, generator=g) < p).float()
    ang = u(math.radians(rotate)) * on
    sh = u(math.radians(shear)) * on
    s = 1 + u(scale) * on
    tx, ty = u(2 * translate) * on, u(2 * translate) * on
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / s
    theta[:, 0, 1] = (-sin + torch.tan(sh) * cos) / s
    theta[:, 1, 0] = sin / s
    theta[:, 1, 1] = cos / s
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resized_crop(x: torch.Tensor, g: torch.Generator, scale=(0.8, 1.0), p: float = 1.0) -> torch.Tensor:
    """Random resized crop (zoom in on a random window covering ``scale`` of the area)."""
    n = x.shape[0]
    on = torch.rand(n, generator=g) < p
    area = scale[0] + torch.rand(n, generator=g) * (scale[1] - scale[0])
    side = torch.where(on, area.sqrt(), torch.ones(n))
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - side)
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - side)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def brightness_contrast(x: torch.Tensor, g: torch.Generator, brightness: float = 0.0,
                        contrast: float = 0.0) -> torch.Tensor:
    n = x.shape[0]
    if brightness:
        x = x + ((torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * brightness * 255)
    if contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * contrast) + mean
    return x.clamp(0, 255)


def gaussian_noise(x: torch.Tensor, g: torch.Generator, std: float) -> torch.Tensor:
    if std <= 0:
        return x
    return (x + torch.randn(x.shape, generator=g) * std).clamp(0, 255)


def random_gamma(x: torch.Tensor, g: torch.Generator, gamma: float) -> torch.Tensor:
    """Per-image gamma drawn log-uniformly in [1 / (1 + gamma), 1 + gamma] (exposure of real photos)."""
    if gamma <= 0:
        return x
    n = x.shape[0]
    k = torch.exp((torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * math.log1p(gamma))
    return 255.0 * (x.clamp(0, 255) / 255.0) ** k


def low_resolution(x: torch.Tensor, g: torch.Generator, p: float, min_side: int = 20) -> torch.Tensor:
    """With probability ``p`` per image: down-sample to a random side in [min_side, H) and back (the blur of a
    small face in a large photo, upscaled by the detector crop).  One side per batch keeps it one resize."""
    if p <= 0:
        return x
    n, _, h, w = x.shape
    on = torch.rand(n, generator=g) < p
    if not on.any():
        return x
    side = int(torch.randint(min_side, h, (1,), generator=g))
    small = F.interpolate(x[on], size=(side, side * w // h), mode="area")
    x = x.clone()
    x[on] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return x


def random_erasing(x: torch.Tensor, g: torch.Generator, p: float = 0.5, area=(0.02, 0.2)) -> torch.Tensor:
    """Erase one random rectangle per selected image with uniform noise (vectorised with a mask)."""
    if p <= 0:
        return x
    n, _, h, w = x.shape
    on = torch.rand(n, generator=g) < p
    a = (area[0] + torch.rand(n, generator=g) * (area[1] - area[0])) * h * w
    ratio = torch.exp((torch.rand(n, generator=g) * 2 - 1) * math.log(3))
    eh = (a * ratio).sqrt().clamp(1, h).long()
    ew = (a / ratio).sqrt().clamp(1, w).long()
    y0 = (torch.rand(n, generator=g) * (h - eh + 1).float()).long()
    x0 = (torch.rand(n, generator=g) * (w - ew + 1).float()).long()
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = (my[:, :, None] & mx[:, None, :] & on[:, None, None])[:, None]
    noise = torch.rand(x.shape, generator=g) * 255
    return torch.where(mask, noise, x)


@dataclass
class AugmentConfig:
    crop: int = 44            # random crop size (0 = no crop)
    flip: float = 0.5         # horizontal flip probability
    rotate: float = 0.0       # degrees
    scale: float = 0.0        # +- zoom fraction
    translate: float = 0.0    # +- fraction of the image size
    shear: float = 0.0        # degrees
    affine_p: float = 1.0     # probability that an image gets the affine transform
    resized_crop: float = 0.0  # probability of a random resized crop (area 0.8-1.0)
    brightness: float = 0.0   # +- fraction of 255
    contrast: float = 0.0     # +- fraction
    noise: float = 0.0        # gaussian noise std in grey levels
    gamma: float = 0.0        # gamma in [1/(1+g), 1+g], log-uniform
    low_res: float = 0.0      # probability of a down-and-up resampling (blur of small faces)
    erasing: float = 0.0      # random-erasing probability

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise FerlabError(f"unknown augmentation option(s): {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**d)


class Augmenter:
    """Applies an ``AugmentConfig`` to a uint8 batch (N, H, W) -> float (N, 1, crop, crop) in [0, 255]."""

    def __init__(self, config: AugmentConfig | dict | None = None, seed: int = 0):
        self.cfg = config if isinstance(config, AugmentConfig) else AugmentConfig.from_dict(config)
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, batch_u8: torch.Tensor) -> torch.Tensor:
        c, g = self.cfg, self.g
        x = batch_u8.float()
        if x.ndim == 3:
            x = x[:, None]
        if c.resized_crop:
            x = resized_crop(x, g, p=c.resized_crop)
        x = affine(x, g, c.rotate, c.scale, c.translate, c.shear, p=c.affine_p)
        if c.crop:
            x = random_crop(x, c.crop, g)
        if c.flip:
            x = hflip(x, c.flip, g)
        if c.brightness or c.contrast:
            x = brightness_contrast(x, g, c.brightness, c.contrast)
        x = random_gamma(x, g, c.gamma)
        x = low_resolution(x, g, c.low_res)
        x = gaussian_noise(x, g, c.noise)
        if c.erasing:
            x = random_erasing(x, g, c.erasing)
        return x
