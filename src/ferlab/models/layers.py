"""Small building blocks shared by the architectures."""

from __future__ import annotations

from torch import nn

from ..errors import FerlabError


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, act: type[nn.Module] = nn.ReLU,
                order: str = "conv-bn-act") -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
    if order == "conv-act-bn":
        return nn.Sequential(conv, act(), nn.BatchNorm2d(cout))
    return nn.Sequential(conv, nn.BatchNorm2d(cout), act())


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh,
}


def activation(name: str) -> type[nn.Module]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise FerlabError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None
