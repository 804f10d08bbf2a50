"""The official B-cos ResNet-50 (B-cos-v2), state-dict compatible with its release.

Differences to torchvision's ResNet-50 (v1.5, stride in the 3×3 convolution): 6-channel input
``[x, 1-x]``; B-cos convolutions (B=2, no MaxOut, no bias); uncentred batch norms without
bias; no ReLU; average pooling in the stem; the classifier ``fc`` is a 1×1 B-cos convolution
applied before global average pooling; logit bias ``-log(C - 1)``. Dynamic linear in eval
mode: ``Σ W(x) ⊙ x = logit - logit_bias``.
"""

from __future__ import annotations

import torch
from torch import nn

from xai_bench.models.bcos_v2.common import (
    ExplainableCNN, image_size_pair,
)
from xai_bench.models.bcos_v2.layers import BcosConv2dV2, UncentredBatchNorm2d

__all__ = ["BcosResNet", "bcos_resnet50"]


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 (×4 channels), each followed by a norm; residual sum (with
    a strided 1×1 convolution + norm on the shortcut where the shape changes)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, b: float, max_out: int):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = BcosConv2dV2(in_channels, planes, 1, b=b, max_out=max_out)
        self.bn1 = UncentredBatchNorm2d(planes)
        self.conv2 = BcosConv2dV2(planes, planes, 3, stride, 1, b=b, max_out=max_out)
        self.bn2 = UncentredBatchNorm2d(planes)
        self.conv3 = BcosConv2dV2(planes, out, 1, b=b, max_out=max_out)
        self.bn3 = UncentredBatchNorm2d(out)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                BcosConv2dV2(in_channels, out, 1, stride, b=b, max_out=max_out),
                UncentredBatchNorm2d(out))

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        return out + (x if self.downsample is None else self.downsample(x))


class BcosResNet(ExplainableCNN):
    """B-cos ResNet with bottleneck blocks (official B-cos-v2 layout; ResNet-50 by default)."""

    def __init__(self, num_classes: int = 1000, image_size=224, layers=(3, 4, 6, 3),
                 width: int = 64, b: float = 2, max_out: int = 1,
                 logit_bias: float | None = None):
        super().__init__()
        self.config = dict(num_classes=num_classes, image_size=image_size, layers=list(layers),
                           width=width, b=b, max_out=max_out, logit_bias=logit_bias)
        self.image_size, self.num_classes = image_size_pair(image_size), num_classes
        self.conv1 = BcosConv2dV2(self.in_channels, width, 7, 2, 3, b=b, max_out=max_out)
        self.bn1 = UncentredBatchNorm2d(width)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        c = width
        for i, n in enumerate(layers):
            planes, blocks = width * 2 ** i, []
            for j in range(n):
                blocks.append(Bottleneck(c, planes, 2 if (j == 0 and i > 0) else 1, b, max_out))
                c = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages, self.num_features = len(layers), c
        self.fc = BcosConv2dV2(c, num_classes, 1, b=b, max_out=max_out)
        self._add_logit_bias(num_classes, logit_bias)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before the classifier (B, 2048, H/32, W/32)."""
        x = self.pool(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(self.forward_features(x))
        return self.pooled_logits(out)


def bcos_resnet50(num_classes: int = 1000, **kwargs) -> BcosResNet:
    """The official B-cos ResNet-50 with random weights (25,538,880 parameters for 1000
    classes); official weights: ``get_model("bcos_v2.resnet50", pretrained=True)`` or
    ``checkpoint=PATH``."""
    return BcosResNet(num_classes=num_classes, **kwargs)
