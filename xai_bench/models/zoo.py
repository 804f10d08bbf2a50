"""The model builders, declared for ``MODELS``: the name is the API
(``get_model("bcos_vit_nano")``).

Sizes (embed dim, depth, heads, MLP ratio):
- ``nano``  64 / 4 / 4 / 2 — the default pair for 32×32 inputs; trains on 2 CPU cores in
  minutes;
- ``micro`` 96 / 6 / 3 / 2 — a slightly larger CPU model (32×32 or 64×64);
- ``ti``, ``s``, ``b`` — ViT Tiny/Small/Base (192/384/768, depth 12, heads 3/6/12, MLP 4d) as
  in the paper, with a small conv stem giving 14×14 tokens at 224×224.

Every builder takes keyword overrides (e.g. ``position="additive"``, ``image_size=64``,
``num_classes=1000``); the B-cos builders take ``position`` in multiplicative (default),
additive, embedding, none.
"""

from __future__ import annotations

from xai_bench.models.bcos_vit import BcosViT
from xai_bench.models.declare import declare_model
from xai_bench.models.vit import ViT

# Small sizes: 32×32 input, stem strides (1, 2) and patch 2 → 8×8 = 64 tokens.
_SMALL_STEM = dict(image_size=32, stem_channels=(32, 64), stem_strides=(1, 2), patch_size=2)
# Paper sizes: 224×224 input, stem strides (2, 2) and patch 4 → 14×14 = 196 tokens.
_PAPER_STEM = dict(image_size=224, stem_channels=(32, 64), stem_strides=(2, 2), patch_size=4)

SIZES = {
    "nano": dict(embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, **_SMALL_STEM),
    "micro": dict(embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0, **_SMALL_STEM),
    "ti": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, **_PAPER_STEM),
    "s": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, **_PAPER_STEM),
    "b": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, **_PAPER_STEM),
}
_SIZE_NAMES = {"nano": "nano", "micro": "micro", "ti": "Tiny", "s": "Small", "b": "Base"}


def _builder(cls, size: str, name: str, family: str):
    defaults = SIZES[size]

    def build(**kwargs):
        model = cls(**{**defaults, **kwargs})
        model.name = name
        return model

    build.__name__ = name
    build.__doc__ = (f"{'B-cos' if family == 'bcos' else 'Conventional'} ViT-"
                     f"{_SIZE_NAMES[size]} (embed {defaults['embed_dim']}, depth "
                     f"{defaults['depth']}, {defaults['num_heads']} heads, "
                     f"{defaults['image_size']}² input).")
    return build


for _size in SIZES:
    for _cls, _family, _prefix in ((BcosViT, "bcos", "bcos_vit"), (ViT, "conventional", "vit")):
        _name = f"{_prefix}_{_size}"
        _build = _builder(_cls, _size, _name, _family)
        declare_model(_name, _build, family=_family, size=_size, description=_build.__doc__)
