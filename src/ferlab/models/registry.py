"""The one registry of models: ``create_model(name, num_classes=7, in_chans=1, **options)``.

A leaf, as in timm: the model files import ``register_model`` and ``ferlab.models`` (the package) imports the
families, so importing anything under ``ferlab.models`` registers every architecture; this module imports
no model file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FerlabError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    description: str
    family: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str = "", family: str = ""):
    """Decorator: ``@register_model("vgg_fer", "...")`` on a builder ``fn(num_classes, in_chans, **opts)``."""

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], family)
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FerlabError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, num_classes: int = 7, in_chans: int = 1, **options):
    """Build a registered model.  The only way ferlab builds a network."""
    entry = model_entry(name)
    try:
        return entry.builder(num_classes=num_classes, in_chans=in_chans, **options)
    except TypeError as e:
        raise FerlabError(f"model {name!r}: bad option ({e})") from None


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, input_size: int = 48, in_chans: int = 1) -> int:
    """Multiply-accumulates of one forward pass on a (1, in_chans, S, S) input (conv + linear layers)."""
    import torch
    from torch import nn

    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def lin_hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_chans, input_size, input_size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return int(total)
