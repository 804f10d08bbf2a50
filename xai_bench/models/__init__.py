"""Models: B-cos layers, the holistic B-cos ViT, its conventional twin and the zoo."""

from xai_bench.models import zoo  # noqa: F401  (declares the builders)
from xai_bench.models import bcos_v2  # noqa: F401  (official B-cos-v2 models)
from xai_bench.models import paper  # noqa: F401  (the paper's DenseNet-121 grid)
from xai_bench.models.base import ExplainableViT
from xai_bench.models.bcos_vit import BcosViT
from xai_bench.models.vit import ViT

__all__ = ["ExplainableViT", "BcosViT", "ViT"]
