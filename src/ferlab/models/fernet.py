"""ferlab's own efficient networks for the bundled models."""

from __future__ import annotations

from torch import nn

from .layers import RepConvBN, conv_bn_act
from .registry import register_model


class FerNet(nn.Module):
    """VGG-style stages of ``depth`` 3x3 conv+BN+ReLU (one number, or one per stage) and a 2x2 max-pool,
    global average pooling, dropout and a linear head.  Cheap (no large fully-connected layers) and exports
    cleanly to ONNX.  ``rep=True`` trains each conv with RepVGG branches (``layers.RepConvBN``); ``deploy()``
    folds them away, leaving the plain network of the same name, weights and speed."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, widths=(32, 64, 128, 256), depth=2,
                 dropout: float = 0.3, rep: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        depths = (depth,) * len(widths) if isinstance(depth, int) else tuple(depth)
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            for _ in range(d):
                layers.append(RepConvBN(cin, w) if rep else conv_bn_act(cin, w))
                cin = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        self.num_features = cin

    def deploy(self) -> FerNet:
        """Fold every RepVGG block into its plain 3x3 conv+BN+ReLU (in place; exact in eval mode)."""
        for i, m in enumerate(self.features):
            if isinstance(m, RepConvBN):
                self.features[i] = m.fused()
        return self

    def forward_features(self, x):
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x):
        return self.head(self.dropout(self.forward_features(x)))


@register_model("fernet", "ferlab's default: VGG-style 32-64-128-256, 2 convs/stage, GAP head (1.2 M params)",
                family="vgg")
def fernet(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.3, **kw):
    return FerNet(num_classes, in_chans, widths=(32, 64, 128, 256), depth=2, dropout=dropout, **kw)


@register_model("fernet_fast", "ferlab's fast model: 16-32-64-128, 2 convs/stage, GAP head", family="vgg")
def fernet_fast(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.2, **kw):
    return FerNet(num_classes, in_chans, widths=(16, 32, 64, 128), depth=2, dropout=dropout, **kw)


@register_model("fernet_lite", "ferlab's mid-size model: 24-48-96-192, one conv at full resolution then 2 per "
                               "stage, GAP head (~43 M MACs at 44 px: the int8 budget of an AVX2 CPU, issue 16)",
                family="vgg")
def fernet_lite(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.3, **kw):
    # fernet spends 18 of its 94 M MACs on the second 3x3 conv at full resolution; this drops it (early
    # downsampling) and takes 3/4 of the widths, where 3x3 convs still beat separable ones in int8 on CPUs
    return FerNet(num_classes, in_chans, widths=(24, 48, 96, 192), depth=(1, 2, 2, 2), dropout=dropout, **kw)


@register_model("fernet_micro", "ferlab's smallest model: 16-32-64-128, one conv in each of the first two stages then 2 "
                                "per stage, GAP head (~15 M MACs at 44 px: issue 24's budget for 3x fer's speed on AVX2)",
                family="vgg")
def fernet_micro(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.2, widths=(16, 32, 64, 128),
                 depth=(1, 1, 2, 2), **kw):
    # fernet_fast less the second conv of its first two stages (9 of its 24 M MACs); ``widths`` and ``depth``
    # (a recipe's model_options) try other shapes of the same budget
    return FerNet(num_classes, in_chans, widths=tuple(widths), depth=tuple(depth), dropout=dropout, **kw)


@register_model("fernet_wide", "ferlab's wide model: 48-96-192-384, 2 convs/stage, GAP head", family="vgg")
def fernet_wide(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.3, **kw):
    return FerNet(num_classes, in_chans, widths=(48, 96, 192, 384), depth=2, dropout=dropout, **kw)
