"""Architectures from the facial-expression-recognition literature, written in plain torch.

Every model takes ``(num_classes=7, in_chans=1, **options)``, accepts 44x44 and 48x48 grey images (the
transfer models any size), and follows the package convention: ``.head`` is the final ``nn.Linear``,
``forward_features(x)`` returns the vector fed to the head (N, ``num_features``), and
``finetune_blocks()`` lists the trunk from input to output (used by ``transfer.unfreeze_top``).

The transfer models (``resnet18``, ``vgg19``, ``efficientnet_b0/b5``) name their parameters exactly like
torchvision's, so an ImageNet state dict saved from torchvision (or timm, through ``transfer``) loads
without renaming.  Nothing here downloads weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FerlabError
from .layers import activation
from .registry import register_model

# ----------------------------------------------------------------------------------------------- helpers


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(size)`` that also exports to ONNX when ``size`` does not divide the input
    (e.g. 44x44 inputs whose last feature map is 2x2 where the 48x48 design flattens 3x3).

    Adaptive average pooling is separable, so it is two products with constant bin-averaging matrices
    built from the (static) input size: ``P_h @ x @ P_w^T``; identical to torch's bins."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    @staticmethod
    def _bins(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(n_out):
            start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)  # floor, ceil as in ATen
            rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(n_in)])
        return torch.tensor(rows, dtype=like.dtype, device=like.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = self.size
        if (h, w) == (oh, ow):
            return x
        if (oh, ow) == (1, 1):
            return x.mean((2, 3), keepdim=True)
        return self._bins(h, oh, x) @ x @ self._bins(w, ow, x).t()

    def extra_repr(self) -> str:
        return f"size={self.size}"


class SeparableConv2d(nn.Module):
    """Depthwise k x k conv followed by a pointwise 1x1 conv (Keras ``SeparableConv2D``, no bias)."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def _init_kaiming(model: nn.Module, linear_std: float | None = None) -> None:
    """torchvision-style initialisation: He-normal (fan-out) convs, unit BN, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


def _check_choice(model: str, option: str, value, choices) -> None:
    if value not in choices:
        raise FerlabError(f"model {model!r}: {option}={value!r} is not one of {', '.join(map(str, choices))}")


class _Classifier(nn.Module):
    """Base for models made of ``features`` (conv trunk) -> ``flatten`` -> ``fc`` (hidden dense layers)
    -> dropout -> ``head``."""

    features: nn.Module
    pool: nn.Module
    fc: nn.Module
    head: nn.Linear

    def forward_features(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))

    def forward(self, x):
        return self.head(self.drop(self.forward_features(x)))

    def finetune_blocks(self) -> list[nn.Module]:
        blocks = [b for b in self.features if any(True for _ in b.parameters())]
        return blocks + [b for b in self.fc if any(True for _ in b.parameters())]


def _dense(cin: int, cout: int, dropout: float, bn: bool = False, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(cin, cout)]
    if bn:
        layers.append(nn.BatchNorm1d(cout))
    layers += [act(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------- small CNNs


class LeNet5(_Classifier):
    """LeNet-5 style: three conv layers (conv, ReLU, 2x2 max-pool, batch norm) and three fully-connected
    layers with dropout.  The last feature map (6x6 at 48x48) is pooled to ``pool`` x ``pool``."""

    def __init__(self, num_classes=7, in_chans=1, widths=(32, 64, 128), kernels=(5, 5, 3), fc=(256, 128),
                 dropout=0.4, pool=6):
        super().__init__()
        blocks, cin = [], in_chans
        for w, k in zip(widths, kernels):
            blocks.append(nn.Sequential(nn.Conv2d(cin, w, k, padding=k // 2), nn.ReLU(inplace=True),
                                        nn.MaxPool2d(2), nn.BatchNorm2d(w)))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = AdaptiveAvgPool(pool)
        dims = [cin * pool * pool, *fc]
        self.fc = nn.Sequential(*[_dense(a, b, dropout) for a, b in zip(dims, dims[1:])])
        self.drop = nn.Identity()  # the hidden layers end with dropout already
        self.head = nn.Linear(dims[-1], num_classes)
        self.num_features = dims[-1]
        _init_kaiming(self)


class FerPlusNet(_Classifier):
    """Two conv layers (6@5x5 and 16@5x5, each BN, activation, 2x2 max-pool) and fully-connected
    1296-120-84-C with dropout: 16 x 9 x 9 = 1296 at 48x48 (other sizes are pooled to 9x9)."""

    def __init__(self, num_classes=7, in_chans=1, act="relu", dropout=0.5):
        super().__init__()
        a = activation(act)
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_chans, 6, 5), nn.BatchNorm2d(6), a(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), a(), nn.MaxPool2d(2)),
        )
        self.pool = AdaptiveAvgPool(9)
        self.fc = nn.Sequential(_dense(16 * 9 * 9, 120, dropout, act=a), _dense(120, 84, dropout, act=a))
        self.drop = nn.Identity()
        self.head = nn.Linear(84, num_classes)
        self.num_features = 84


class CnnF(_Classifier):
    """Four conv blocks 64@3x3, 128@5x5, 512@3x3, 512@3x3 (BN, ReLU, 2x2 max-pool, dropout 0.25 each),
    dense 256 and 512 (BN, ReLU, dropout 0.25), linear head; flattens 512 x 3 x 3."""

    def __init__(self, num_classes=7, in_chans=1, widths=(64, 128, 512, 512), kernels=(3, 5, 3, 3),
                 fc=(256, 512), dropout=0.25):
        super().__init__()
        blocks, cin = [], in_chans
        for w, k in zip(widths, kernels):
            blocks.append(nn.Sequential(nn.Conv2d(cin, w, k, padding=k // 2), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                        nn.MaxPool2d(2), nn.Dropout(dropout)))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = AdaptiveAvgPool(3)
        dims = [cin * 9, *fc]
        self.fc = nn.Sequential(*[_dense(a, b, dropout, bn=True) for a, b in zip(dims, dims[1:])])
        self.drop = nn.Identity()
        self.head = nn.Linear(dims[-1], num_classes)
        self.num_features = dims[-1]
        _init_kaiming(self)


class BasicCnn(_Classifier):
    """Four 3x3 conv layers of 32, 64, 256 and 512 filters, each ReLU and 2x2 max-pool, dropout 0.1 after
    the 2nd and 3rd and 0.2 after the 4th; flatten 512 x 3 x 3, dense 512 (dropout 0.2), head."""

    def __init__(self, num_classes=7, in_chans=1, widths=(32, 64, 256, 512), dropouts=(0.0, 0.1, 0.1, 0.2),
                 hidden=512, dropout=0.2):
        super().__init__()
        blocks, cin = [], in_chans
        for w, p in zip(widths, dropouts):
            layers = [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            if p > 0:
                layers.append(nn.Dropout(p))
            blocks.append(nn.Sequential(*layers))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = AdaptiveAvgPool(3)
        self.fc = nn.Sequential(_dense(cin * 9, hidden, dropout))
        self.drop = nn.Identity()
        self.head = nn.Linear(hidden, num_classes)
        self.num_features = hidden
        _init_kaiming(self)


class VggFer(_Classifier):
    """VGGNet variant of Khaireddin & Chen (2021, 73.28% on FER2013): four stages of two 3x3 convs (conv,
    ReLU, BN) and a 2x2 max-pool (64-128-256-512), flatten 512 x ``pool`` x ``pool``, FC 4096-4096-C
    with dropout.  (The paper trains on 40x40 crops, which gives a 2x2 map: ``pool=2`` reproduces it.)"""

    def __init__(self, num_classes=7, in_chans=1, widths=(64, 128, 256, 512), hidden=4096, dropout=0.2, pool=3):
        super().__init__()
        blocks, cin = [], in_chans
        for w in widths:
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(w),
                nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(w),
                nn.MaxPool2d(2)))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = AdaptiveAvgPool(pool)
        self.fc = nn.Sequential(_dense(cin * pool * pool, hidden, dropout), _dense(hidden, hidden, dropout))
        self.drop = nn.Identity()
        self.head = nn.Linear(hidden, num_classes)
        self.num_features = hidden
        _init_kaiming(self)


# ------------------------------------------------------------------------------------------- Xception


class XceptionModule(nn.Module):
    """Two depthwise-separable 3x3 convs with BN (ReLU between, and after the second when ``act2``),
    a 3x3/stride-2 max-pool, plus a strided 1x1 conv + BN residual."""

    def __init__(self, cin: int, cout: int, act2: bool = False):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
        self.sep1 = SeparableConv2d(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.sep2 = SeparableConv2d(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU(inplace=True) if act2 else nn.Identity()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.act2(self.bn2(self.sep2(y))))
        return y + self.residual(x)


class Xception(nn.Module):
    """A stem of plain 3x3 convs (BN, ReLU), residual Xception modules that halve the resolution,
    global average pooling, dropout and a linear head."""

    def __init__(self, num_classes=7, in_chans=1, stem=(32, 32), widths=(64, 128, 256, 512), stem_padding=1,
                 act2=True, dropout=0.5):
        super().__init__()
        layers, cin = [], in_chans
        for w in stem:
            layers.append(nn.Sequential(nn.Conv2d(cin, w, 3, padding=stem_padding, bias=False), nn.BatchNorm2d(w),
                                        nn.ReLU(inplace=True)))
            cin = w
        self.stem = nn.Sequential(*layers)
        mods = []
        for w in widths:
            mods.append(XceptionModule(cin, w, act2=act2))
            cin = w
        self.blocks = nn.Sequential(*mods)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        self.num_features = cin
        _init_kaiming(self)

    def forward_features(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))

    def forward(self, x):
        return self.head(self.drop(self.forward_features(x)))

    def finetune_blocks(self) -> list[nn.Module]:
        return [*self.stem, *self.blocks]


# ------------------------------------------------------------------------------- transfer models: common


class _Upscaled(nn.Module):
    """Shared input handling of the ImageNet-layout models: ``input_size`` upscales the image (bilinear)
    inside forward; ``stem="repeat"`` keeps a 3-channel first conv and repeats a grey input to 3 channels
    (``"sum"``: the first conv takes ``in_chans`` channels; ImageNet RGB kernels are summed on loading)."""

    input_size: int = 0
    repeat_to: int = 0

    def _prepare(self, x):
        if self.repeat_to and x.shape[1] != self.repeat_to:
            x = x.expand(-1, self.repeat_to, -1, -1)
        if self.input_size and (x.shape[-2] != self.input_size or x.shape[-1] != self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    def _stem_channels(self, name: str, in_chans: int, stem: str, input_size) -> int:
        _check_choice(name, "stem", stem, ("sum", "repeat"))
        if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 0:
            raise FerlabError(f"model {name!r}: input_size must be a non-negative integer (0 = no upscaling)")
        self.input_size = input_size
        self.repeat_to = 3 if stem == "repeat" and in_chans == 1 else 0
        return 3 if self.repeat_to else in_chans


# -------------------------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class ResNet(_Upscaled):
    """ResNet with torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``).
    ``stem="imagenet"``: 7x7/2 conv + 3x3/2 max-pool; ``"keep"``: 3x3/1 conv and no max-pool, which keeps
    the resolution of a 48x48 face (the usual choice when training from scratch on FER2013)."""

    def __init__(self, num_classes=7, in_chans=1, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem="imagenet",
                 input_size=0, zero_init_residual=False):
        super().__init__()
        _check_choice("resnet18", "stem", stem, ("imagenet", "keep"))
        self._stem_channels("resnet18", in_chans, "sum", input_size)
        self.stem_kind = stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        _init_kaiming(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self._prepare(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.forward_features(x))

    def finetune_blocks(self) -> list[nn.Module]:
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]


# ------------------------------------------------------------------------------------------------ VGG-19

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG(_Upscaled):
    """torchvision's VGG-19 layout (no batch norm): ``features.N`` convs and ReLUs, a 7x7 adaptive average
    pool, ``classifier.0/3/6`` linears.  ``hidden`` shrinks fc6/fc7 (ImageNet weights need 4096)."""

    def __init__(self, num_classes=7, in_chans=1, cfg=VGG19_CFG, hidden=4096, dropout=0.5, input_size=64,
                 stem="sum"):
        super().__init__()
        cin = self._stem_channels("vgg19", in_chans, stem, input_size)
        layers: list[nn.Module] = []
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = AdaptiveAvgPool(7)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 49, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes))
        self.num_features = hidden
        _init_kaiming(self, linear_std=0.01)

    @property
    def head(self) -> nn.Linear:
        return self.classifier[6]

    def forward_features(self, x):
        x = self.avgpool(self.features(self._prepare(x))).flatten(1)
        return self.classifier[:5](x)

    def forward(self, x):
        return self.classifier[6](self.classifier[5](self.forward_features(x)))

    def finetune_blocks(self) -> list[nn.Module]:
        stages, cur = [], []
        for m in self.features:
            cur.append(m)
            if isinstance(m, nn.MaxPool2d):
                stages.append(nn.ModuleList(cur))
                cur = []
        return [*stages, nn.ModuleList(list(self.classifier)[:6])]


# ---------------------------------------------------------------------------------------- EfficientNet


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvNormAct(nn.Sequential):
    """conv (no bias) + BN + optional activation; indices 0/1 as torchvision's ``Conv2dNormActivation``."""

    def __init__(self, cin, cout, k, stride=1, groups=1, act: type[nn.Module] | None = nn.SiLU, bn=nn.BatchNorm2d):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), bn(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


class StochasticDepth(nn.Module):
    """Drops the residual branch of whole samples with probability ``p`` while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p <= 0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * noise / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand, sd_prob, bn):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        mid = _make_divisible(cin * expand)
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(ConvNormAct(cin, mid, 1, bn=bn))
        layers.append(ConvNormAct(mid, mid, k, stride, groups=mid, bn=bn))
        layers.append(SqueezeExcitation(mid, max(1, cin // 4)))
        layers.append(ConvNormAct(mid, cout, 1, act=None, bn=bn))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob)

    def forward(self, x):
        y = self.block(x)
        return x + self.stochastic_depth(y) if self.use_res_connect else y


# (expand ratio, kernel, stride, in channels, out channels, layers) of EfficientNet-B0
EFFNET_B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class EfficientNet(_Upscaled):
    """EfficientNet with torchvision's parameter names: ``features.0`` stem, ``features.1-7`` MBConv
    stages (``features.N.M.block...``), ``features.8`` 1x1 head conv, ``classifier.1`` linear."""

    def __init__(self, num_classes=7, in_chans=1, width=1.0, depth=1.0, dropout=0.2, drop_path=0.2,
                 bn_eps=1e-5, bn_momentum=0.1, input_size=96, stem="sum", name="efficientnet"):
        super().__init__()
        cin0 = self._stem_channels(name, in_chans, stem, input_size)

        def bn(c):
            return nn.BatchNorm2d(c, eps=bn_eps, momentum=bn_momentum)

        stages = [(e, k, s, _make_divisible(i * width), _make_divisible(o * width), int(math.ceil(n * depth)))
                  for e, k, s, i, o, n in EFFNET_B0_STAGES]
        total = sum(st[-1] for st in stages)
        layers: list[nn.Module] = [ConvNormAct(cin0, stages[0][3], 3, 2, bn=bn)]
        idx = 0
        for e, k, s, i, o, n in stages:
            blocks = []
            for j in range(n):
                blocks.append(MBConv(i if j == 0 else o, o, k, s if j == 0 else 1, e, drop_path * idx / total, bn))
                idx += 1
            layers.append(nn.Sequential(*blocks))
        last_in = stages[-1][4]
        self.num_features = 4 * last_in
        layers.append(ConvNormAct(last_in, self.num_features, 1, bn=bn))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Linear:
        return self.classifier[1]

    def forward_features(self, x):
        return self.avgpool(self.features(self._prepare(x))).flatten(1)

    def forward(self, x):
        return self.classifier(self.forward_features(x))

    def finetune_blocks(self) -> list[nn.Module]:
        return list(self.features)


# ---------------------------------------------------------------------------------------- registrations


@register_model("lenet5", "LeNet-5 style: 3 conv (ReLU, max-pool, BN) + 3 fully-connected with dropout", family="lenet")
def lenet5(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.4, **kw):
    return LeNet5(num_classes, in_chans, dropout=dropout, **kw)


@register_model("ferplus_net", "conv 6@5x5 and 16@5x5 (BN, 2x2 pool), fc 1296-120-84; activation relu|sigmoid",
                family="lenet")
def ferplus_net(num_classes: int = 7, in_chans: int = 1, activation: str = "relu", dropout: float = 0.5):
    _check_choice("ferplus_net", "activation", activation, ("relu", "sigmoid"))
    return FerPlusNet(num_classes, in_chans, act=activation, dropout=dropout)


@register_model("cnn_f", "4 conv blocks 64-128-512-512 (BN, ReLU, pool, dropout .25), dense 256-512", family="cnn")
def cnn_f(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.25, **kw):
    return CnnF(num_classes, in_chans, dropout=dropout, **kw)


@register_model("basic_cnn", "4 conv layers 32-64-256-512 with max-pooling and dropout .1/.2, dense 512",
                family="cnn")
def basic_cnn(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.2, **kw):
    return BasicCnn(num_classes, in_chans, dropout=dropout, **kw)


@register_model("xception_res", "Xception-style: separable-conv residual modules 64-512 after a 32-32 stem, GAP",
                family="xception")
def xception_res(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.5, **kw):
    return Xception(num_classes, in_chans, stem=(32, 32), widths=(64, 128, 256, 512), dropout=dropout, **kw)


@register_model("mini_xception", "mini-Xception (Arriaga et al. 2017): 8-filter stem, residual modules 16-128",
                family="xception")
def mini_xception(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.0, **kw):
    """The original stem is two unpadded 3x3 convs of 8 filters; the original's final 3x3 class conv + GAP is
    replaced by GAP + a linear head (the package convention)."""
    return Xception(num_classes, in_chans, stem=(8, 8), widths=(16, 32, 64, 128), stem_padding=0, act2=False,
                    dropout=dropout, **kw)


@register_model("vgg_fer", "VGGNet of Khaireddin & Chen 2021: 4 stages of 2 conv (ReLU, BN) 64-512, FC 4096-4096",
                family="vgg")
def vgg_fer(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.2, **kw):
    return VggFer(num_classes, in_chans, dropout=dropout, **kw)


@register_model("resnet18", "ResNet-18 (torchvision names); stem=imagenet|keep (3x3/1, no max-pool)", family="resnet")
def resnet18(num_classes: int = 7, in_chans: int = 1, stem: str = "imagenet", input_size: int = 0, **kw):
    return ResNet(num_classes, in_chans, layers=(2, 2, 2, 2), stem=stem, input_size=input_size, **kw)


@register_model("vgg19", "VGG-19 (torchvision layout) for ImageNet transfer; input_size=64 upscaling, stem=sum|repeat",
                family="vgg")
def vgg19(num_classes: int = 7, in_chans: int = 1, input_size: int = 64, stem: str = "sum", hidden: int = 4096,
          dropout: float = 0.5):
    return VGG(num_classes, in_chans, hidden=hidden, dropout=dropout, input_size=input_size, stem=stem)


@register_model("efficientnet_b0", "EfficientNet-B0 (torchvision names) for ImageNet transfer; input_size=96",
                family="efficientnet")
def efficientnet_b0(num_classes: int = 7, in_chans: int = 1, input_size: int = 96, stem: str = "sum",
                    dropout: float = 0.2, drop_path: float = 0.2):
    return EfficientNet(num_classes, in_chans, 1.0, 1.0, dropout, drop_path, input_size=input_size, stem=stem,
                        name="efficientnet_b0")


@register_model("efficientnet_b5", "EfficientNet-B5 (torchvision names) for ImageNet transfer; input_size=96",
                family="efficientnet")
def efficientnet_b5(num_classes: int = 7, in_chans: int = 1, input_size: int = 96, stem: str = "sum",
                    dropout: float = 0.4, drop_path: float = 0.2):
    return EfficientNet(num_classes, in_chans, 1.6, 2.2, dropout, drop_path, bn_eps=1e-3, bn_momentum=0.01,
                        input_size=input_size, stem=stem, name="efficientnet_b5")
