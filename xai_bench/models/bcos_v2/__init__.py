"""Official B-cos-v2 architectures (github.com/B-cos/B-cos-v2), state-dict compatible with the
released ImageNet checkpoints, with our explainable-model interface; registered as
``bcos_v2.<name>`` (see :mod:`~xai_bench.models.bcos_v2.zoo` and docs/bcos_v2.md).

- :func:`~xai_bench.models.bcos_v2.densenet.bcos_densenet121` (``features`` cut like
  torchvision's, ``feature_extractor(13 | 38 | 87)``),
- :func:`~xai_bench.models.bcos_v2.resnet.bcos_resnet50`,
- :class:`~xai_bench.models.bcos_v2.vit.BcosSimpleViT` (B-cos) and
  :class:`~xai_bench.models.bcos_v2.vit.SimpleViT` (standard): SimpleViT and ViT-C.
"""

from xai_bench.models.bcos_v2 import zoo  # noqa: F401  (declares the builders)
from xai_bench.models.bcos_v2.densenet import DENSENET121_CUTS, BcosDenseNet, bcos_densenet121
from xai_bench.models.bcos_v2.resnet import BcosResNet, bcos_resnet50
from xai_bench.models.bcos_v2.vit import BcosSimpleViT, SimpleViT

__all__ = ["BcosDenseNet", "bcos_densenet121", "DENSENET121_CUTS", "BcosResNet",
           "bcos_resnet50", "BcosSimpleViT", "SimpleViT"]
