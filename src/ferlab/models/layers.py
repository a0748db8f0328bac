"""Small building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FerlabError


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, act: type[nn.Module] = nn.ReLU,
                order: str = "conv-bn-act") -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
    if order == "conv-act-bn":
        return nn.Sequential(conv, act(), nn.BatchNorm2d(cout))
    return nn.Sequential(conv, nn.BatchNorm2d(cout), act())


class RepConvBN(nn.Sequential):
    """A 3x3 conv+BN+ReLU block that trains with two more branches before its ReLU: a 1x1 conv+BN and, where the
    widths match, a BN of the input itself (RepVGG, Ding et al., 2021). In eval mode the three branches are one
    3x3 convolution, so ``fused()`` returns the plain ``conv_bn_act`` block it equals: the network that ships
    costs what it cost without them. Children ``0``-``2`` carry the plain block's names, so a plain block's
    weights load onto it unchanged."""

    def __init__(self, cin: int, cout: int):
        super().__init__(*conv_bn_act(cin, cout))
        self.rep1 = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.repid = nn.BatchNorm2d(cout) if cin == cout else None

    def forward(self, x):
        y = self[1](self[0](x)) + self.rep1(x)
        if self.repid is not None:
            y = y + self.repid(x)
        return self[2](y)

    def fused(self) -> nn.Sequential:
        conv3, bn3 = self[0], self[1]
        k, b = _fold(conv3.weight, bn3)
        k1, b1 = _fold(self.rep1[0].weight, self.rep1[1])
        k = k + nn.functional.pad(k1, (1, 1, 1, 1))
        b = b + b1
        if self.repid is not None:
            eye = torch.zeros_like(conv3.weight)
            eye[torch.arange(eye.shape[0]), torch.arange(eye.shape[0]), 1, 1] = 1.0
            kid, bid = _fold(eye, self.repid)
            k, b = k + kid, b + bid
        out = conv_bn_act(conv3.in_channels, conv3.out_channels).to(k.device)
        with torch.no_grad():
            out[0].weight.copy_(k)
            bn = out[1]  # the bias as an identity batch norm: (x - 0) / sqrt((1 - eps) + eps) * 1 + b
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        return out.train(self.training)


def _fold(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of a bias-free convolution followed by ``bn`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (weight * scale.reshape(-1, 1, 1, 1)).detach(), (bn.bias - bn.running_mean * scale).detach()


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh,
}


def activation(name: str) -> type[nn.Module]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise FerlabError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None
