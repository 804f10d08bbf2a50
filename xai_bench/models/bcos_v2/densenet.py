"""The official B-cos DenseNet-121 (B-cos-v2), state-dict compatible with its release.

Differences to torchvision's DenseNet-121: 6-channel input ``[x, 1-x]``; every convolution
is a B-cos convolution (B=2, no MaxOut, no bias); every batch norm is the uncentred one
without bias (:class:`~xai_bench.models.bcos_v2.layers.UncentredBatchNorm2d`); no ReLU
anywhere (so torchvision's ``relu0``, ``relu1``/``relu2`` and the transitions' ``relu`` are
absent); average instead of max pooling in the stem; the classifier is a 1×1 B-cos
convolution applied *before* global average pooling; logits get the constant bias
``-log(C - 1)``.

Feature extractor (e.g. for the tokeniser of the holistic B-cos ViT)::

    model = bcos_densenet121()                  # or get_model("bcos_v2.densenet121", ...)
    features = model.feature_extractor(38)      # first 38 convolution layers
    # == model.features[:6]: conv0, norm0, pool0, denseblock1, transition1, denseblock2
    #    (an nn.Sequential sharing the model's modules, not a copy)
    fmap = features(model.encode(images))       # (B, 512, H/8, W/8)

``model.features`` is an ``nn.Sequential`` whose children have torchvision's names and order
(``conv0, norm0, pool0, denseblock1, transition1, denseblock2, transition2, denseblock3,
transition3, denseblock4, norm5``), so ``model.features[:k]`` cuts it like torchvision's.
The cuts after 13, 38 and 87 convolution layers end after dense block 1, 2 and 3:
see :data:`DENSENET121_CUTS` for their channels and strides.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from xai_bench.models.bcos_v2.common import (
    ExplainableCNN, image_size_pair,
)
from xai_bench.models.bcos_v2.layers import BcosConv2dV2, UncentredBatchNorm2d

__all__ = ["BcosDenseNet", "bcos_densenet121", "DENSENET121_CUTS"]

#: number of convolution layers -> (last child of ``features`` kept, output channels, stride)
DENSENET121_CUTS = {
    13: ("denseblock1", 256, 4),
    38: ("denseblock2", 512, 8),
    87: ("denseblock3", 1024, 16),
    120: ("denseblock4", 1024, 32),
}


class _DenseLayer(nn.Module):
    """norm1 → 1×1 B-cos conv → norm2 → 3×3 B-cos conv (growth_rate new channels)."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, b: float,
                 max_out: int):
        super().__init__()
        width = bn_size * growth_rate
        self.norm1 = UncentredBatchNorm2d(in_channels)
        self.conv1 = BcosConv2dV2(in_channels, width, 1, b=b, max_out=max_out)
        self.norm2 = UncentredBatchNorm2d(width)
        self.conv2 = BcosConv2dV2(width, growth_rate, 3, padding=1, b=b, max_out=max_out)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv2(self.norm2(self.conv1(self.norm1(x))))


class _DenseBlock(nn.ModuleDict):
    """``denselayer1..n``; each sees the concatenation of the block input and all previous
    layers' outputs; the block returns the concatenation of all of them."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int,
                 b: float, max_out: int):
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = _DenseLayer(in_channels + i * growth_rate, growth_rate,
                                                     bn_size, b, max_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, b: float, max_out: int):
        super().__init__(OrderedDict(
            norm=UncentredBatchNorm2d(in_channels),
            conv=BcosConv2dV2(in_channels, out_channels, 1, b=b, max_out=max_out),
            pool=nn.AvgPool2d(2, stride=2),
        ))


class BcosDenseNet(ExplainableCNN):
    """B-cos DenseNet-BC (official B-cos-v2 layout; DenseNet-121 by default)."""

    def __init__(self, num_classes: int = 1000, image_size=224, growth_rate: int = 32,
                 block_config=(6, 12, 24, 16), num_init_features: int = 64, bn_size: int = 4,
                 b: float = 2, max_out: int = 1, logit_bias: float | None = None):
        super().__init__()
        self.config = dict(num_classes=num_classes, image_size=image_size,
                           growth_rate=growth_rate, block_config=list(block_config),
                           num_init_features=num_init_features, bn_size=bn_size, b=b,
                           max_out=max_out, logit_bias=logit_bias)
        self.image_size, self.num_classes = image_size_pair(image_size), num_classes
        features = OrderedDict(
            conv0=BcosConv2dV2(self.in_channels, num_init_features, 7, stride=2, padding=3, b=b,
                               max_out=max_out),
            norm0=UncentredBatchNorm2d(num_init_features),
            pool0=nn.AvgPool2d(3, stride=2, padding=1),
        )
        c = num_init_features
        for i, n in enumerate(block_config):
            features[f"denseblock{i + 1}"] = _DenseBlock(n, c, growth_rate, bn_size, b, max_out)
            c += n * growth_rate
            if i < len(block_config) - 1:
                features[f"transition{i + 1}"] = _Transition(c, c // 2, b, max_out)
                c //= 2
        features["norm5"] = UncentredBatchNorm2d(c)
        self.features = nn.Sequential(features)
        self.num_features = c
        self.classifier = BcosConv2dV2(c, num_classes, 1, b=b, max_out=max_out)
        self._add_logit_bias(num_classes, logit_bias)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.features(x))
        return self.pooled_logits(out)

    def feature_extractor(self, num_conv_layers: int) -> nn.Sequential:
        """``features`` up to and including the child that ends after ``num_conv_layers``
        convolution layers (a view sharing the modules, not a copy); for DenseNet-121 13, 38,
        87 or 120 (:data:`DENSENET121_CUTS`), or any count where a child of ``features``
        ends (e.g. 14: through ``transition1``)."""
        ends, count = [], 0
        for i, child in enumerate(self.features.children()):
            count += sum(isinstance(m, BcosConv2dV2) for m in child.modules())
            if count == num_conv_layers:
                return self.features[:i + 1]  # the first child reaching the count
            if not ends or ends[-1] != count:
                ends.append(count)
        raise ValueError(f"no child of `features` ends after {num_conv_layers} convolution "
                         f"layers; possible counts: {', '.join(map(str, ends))}")


def bcos_densenet121(num_classes: int = 1000, **kwargs) -> BcosDenseNet:
    """The official B-cos DenseNet-121 with random weights (7,945,440 parameters for 1000
    classes); keyword arguments go to :class:`BcosDenseNet` (e.g. ``image_size``,
    ``logit_bias``). Official weights: ``get_model("bcos_v2.densenet121", pretrained=True)``
    or ``checkpoint=PATH``, or directly
    ``model.load_state_dict(torch.load(PATH, weights_only=True))``.

    Feature extractor for a tokeniser: ``bcos_densenet121().feature_extractor(n)`` with
    ``n`` in 13, 38, 87 (after dense block 1, 2, 3: 256, 512, 1024 channels at stride 4, 8,
    16), equal to ``model.features[:4]``, ``[:6]``, ``[:8]`` (torchvision's child names and
    order, minus the ReLUs). Load the official weights into the full model first; the
    extractor shares them.
    """
    return BcosDenseNet(num_classes=num_classes, **kwargs)
