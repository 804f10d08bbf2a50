"""Declaration of the official B-cos-v2 models under the ``bcos_v2.`` prefix.

Every builder takes ``pretrained=False`` (True: the released ImageNet weights, downloaded by
torch.hub with hash check; offline this fails within seconds, telling you to download the file
and pass ``checkpoint=PATH``), ``progress=True`` and the model's keyword arguments
(``num_classes``, ``image_size``, ``logit_bias``, ...). ``get_model(name, checkpoint=PATH)``
loads an official ``.pth`` strictly
(:func:`~xai_bench.models.bcos_v2.common.load_checkpoint_file`).
"""

from __future__ import annotations

import functools

from xai_bench.models.bcos_v2.common import (
    WEIGHT_FILES, download_state_dict, load_checkpoint_file, load_official_state_dict,
)
from xai_bench.models.bcos_v2.densenet import BcosDenseNet
from xai_bench.models.bcos_v2.resnet import BcosResNet
from xai_bench.models.bcos_v2.vit import VIT_VARIANTS, BcosSimpleViT, SimpleViT
from xai_bench.models.declare import declare_model

PREFIX = "bcos_v2."
SOURCE = "github.com/B-cos/B-cos-v2"
#: Böhle, Singh, Fritz, Schiele: "B-cos Alignment for Inherently Interpretable CNNs and Vision
#: Transformers", TPAMI 2024.
PAPER = "arXiv:2306.10898"

#: Parameter counts of the released models (1000 classes), as the ``bcos`` package builds
#: them; ``tests/test_bcos_v2.py`` checks ours against the package.
PARAMETERS = {
    "densenet121": 7_945_440, "densenet121_long": 7_945_440,
    "resnet50": 25_538_880, "resnet50_long": 25_538_880,
    "simple_vit_ti_patch16_224": 5_800_128, "simple_vit_s_patch16_224": 22_217_088,
    "simple_vit_b_patch16_224": 86_901_504, "simple_vit_l_patch16_224": 178_787_328,
    "vitc_ti_patch1_14": 5_318_712, "vitc_s_patch1_14": 20_878_704,
    "vitc_b_patch1_14": 81_326_016, "vitc_l_patch1_14": 167_444_160,
    "standard_simple_vit_ti_patch16_224": 5_670_184,
    "standard_simple_vit_s_patch16_224": 21_956_200,
    "standard_simple_vit_b_patch16_224": 86_378_728,
    "standard_simple_vit_l_patch16_224": 178_104_296,
    "standard_vitc_ti_patch1_14": 5_334_952, "standard_vitc_s_patch1_14": 20_910_184,
    "standard_vitc_b_patch1_14": 81_388_648, "standard_vitc_l_patch1_14": 167_541_352,
}


def _vit_builder(variant: str, bcos: bool):
    patch, dim, depth, heads, mlp, stem = VIT_VARIANTS[variant]
    defaults = dict(patch_size=patch, dim=dim, depth=depth, heads=heads, mlp_dim=mlp,
                    conv_stem=list(stem) if stem else None)

    def build(**kwargs):
        if bcos:
            return BcosSimpleViT(**{**defaults, **kwargs})
        return SimpleViT(**{**defaults, **kwargs, "bcos": False})

    return build


def _register(key: str, make, family: str, description: str, **meta) -> None:
    name = PREFIX + key

    def build(pretrained: bool = False, progress: bool = True, **kwargs):
        # Weights first: offline, fail before spending time on building the model.
        state = download_state_dict(key, progress=progress) if pretrained else None
        model = make(**kwargs)
        model.name = name
        if state is not None:
            load_official_state_dict(model, state, f"official weights {WEIGHT_FILES[key]}",
                                     name)
            model.eval()
        return model

    build.__name__ = name.replace(".", "_")
    build.__doc__ = description
    # get_model(name, checkpoint=PATH) reads official state dicts through this hook.
    build.load_checkpoint = functools.partial(load_checkpoint_file, name, build)
    declare_model(name, build, family=family, description=description,
                  parameters=PARAMETERS[key], input_size=224, source=SOURCE, paper=PAPER, **meta)


_register("densenet121", BcosDenseNet, "bcos",
          "B-cos DenseNet-121 (official B-cos-v2 weights: top-1 73.6%); dynamic linear.")
_register("densenet121_long", BcosDenseNet, "bcos",
          "B-cos DenseNet-121, longer training (official weights: top-1 77.3%); dynamic linear.")
_register("resnet50", BcosResNet, "bcos",
          "B-cos ResNet-50 (official B-cos-v2 weights: top-1 75.9%); dynamic linear.")
_register("resnet50_long", BcosResNet, "bcos",
          "B-cos ResNet-50, longer training (official weights: top-1 79.5%); dynamic linear.")

_SIZE_NAMES = {"ti": "Ti", "s": "S", "b": "B", "l": "L"}
for _variant in VIT_VARIANTS:
    _size = _variant.split("_")[-3]
    _arch = (f"ViT-C-{_SIZE_NAMES[_size]} (conv stem)" if _variant.startswith("vitc")
             else f"SimpleViT-{_SIZE_NAMES[_size]}/16")
    _register(_variant, _vit_builder(_variant, True), "bcos",
              f"B-cos {_arch} (official B-cos-v2); additive sin-cos position embedding, so "
              f"contributions are not complete.", size=_size)
    _register("standard_" + _variant, _vit_builder(_variant, False), "conventional",
              f"Standard (non-B-cos) {_arch}, the official B-cos-v2 baseline.", size=_size)
