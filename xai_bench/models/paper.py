"""The paper's model grid: (B-cos) ViT-{Ti,S,B}-{13,38,87} on a frozen (B-cos) DenseNet-121.

"Holistically Explainable Vision Transformers" tokenises 224² images with a *frozen* DenseNet-121
cut after L = 13, 38 or 87 convolution layers (the end of dense block 1, 2 or 3: 56², 28², 14²
maps with 256, 512, 1024 channels), followed by one convolution with kernel = stride = 4, 2, 1,
so that every model sees 14 × 14 = 196 tokens. B-cos ViTs use the B-cos DenseNet-121 of B-cos-v2
(6-channel input) and a B-cos token convolution with MaxOut(2); conventional ViTs use
torchvision's ``densenet121`` and a plain ``Conv2d``.

Registered names (``get_model(name)``): ``bcos_vit_{ti,s,b}_{13,38,87}`` (paper name
``B-cos ViT-{Ti,S,B}-{L}``) and ``vit_{ti,s,b}_{13,38,87}`` (``ViT-{Ti,S,B}-{L}``); 1000 classes
and 224² by default. Options of every builder (besides the transformer's keyword arguments):

- ``backbone_checkpoint=PATH``: initialise the backbone from a DenseNet-121 state dict (the
  torchvision one for ``vit_*``, the official B-cos-v2 one for ``bcos_vit_*``); the kept layers
  must match exactly. The weights then live in the model's state dict, so an xai-bench
  checkpoint of the model reloads without the file (``config`` only records its name/hash in
  ``backbone_weights``, which is informational and ignored when building).
- ``finetune_backbone=False``: ``True`` trains the backbone too (full fine-tuning).
- ``feature_gain=1.0``: constant multiplying the backbone features before the token conv.
- ``pre_activation=True``: end the cut with the normalisation (torchvision: BatchNorm + ReLU;
  B-cos: the bias-free norm) that DenseNet applies to these features before its next
  convolution (the following transition's ``norm``/``relu``) — see docs/paper_models.md.

The pieces are reusable: :func:`cut_densenet_features` (any DenseNet ``features`` Sequential),
:class:`FrozenBackboneTokeniser`, :func:`load_backbone_checkpoint` and :data:`BACKBONES`
(name → factory of a full DenseNet-121 whose ``.features`` is cut; replace an entry to plug
in another implementation).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from xai_bench.models.bcos_layers import BcosConv2d
from xai_bench.models.bcos_vit import BcosViT
from xai_bench.models.declare import declare_model
from xai_bench.models.vit import ViT
from xai_bench.models.zoo import SIZES

#: Cut depths of the paper (convolution layers of DenseNet-121 kept).
LAYERS = (13, 38, 87)
#: Kernel = stride of the token convolution per cut (196 tokens at 224²).
TOKEN_KERNEL = {13: 4, 38: 2, 87: 1}
#: Channels and total stride of DenseNet-121's features after each cut.
DENSENET121_CUTS = {13: dict(channels=256, stride=4), 38: dict(channels=512, stride=8),
                    87: dict(channels=1024, stride=16)}
PAPER_SIZES = ("ti", "s", "b")
_SIZE_NAMES = {"ti": "Ti", "s": "S", "b": "B"}
# The transformer keyword arguments of the zoo sizes (the stem is replaced by the backbone).
_STEM_KEYS = ("stem_channels", "stem_strides", "patch_size")


# ---- backbones ------------------------------------------------------------------------------

def _torchvision_densenet121():
    from torchvision.models import densenet121

    return densenet121(weights=None)


def _bcos_densenet121():
    try:
        from xai_bench.models.bcos_v2.densenet import bcos_densenet121
    except ImportError as e:
        raise ImportError(f"the B-cos DenseNet-121 (xai_bench.models.bcos_v2.densenet."
                          f"bcos_densenet121) is not available: {e}") from None
    return bcos_densenet121(num_classes=1000)


#: Factories of the full DenseNet-121 per family; the tokeniser cuts their ``.features``.
BACKBONES = {"conventional": _torchvision_densenet121, "bcos": _bcos_densenet121}
BACKBONE_NAMES = {"conventional": "torchvision densenet121",
                  "bcos": "B-cos-v2 densenet121"}


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) or type(module).__name__.endswith("Conv2d")


def count_convs(module: nn.Module) -> int:
    """Convolution layers in ``module``: outermost ``Conv2d``-like modules (a B-cos conv that
    wraps an ``nn.Conv2d`` counts once)."""
    if _is_conv(module):
        return 1
    return sum(count_convs(child) for child in module.children())


def cut_densenet_features(features: nn.Sequential, num_convs: int,
                          pre_activation: bool = True) -> nn.Sequential:
    """The first children of a DenseNet ``features`` Sequential (torchvision child names
    ``conv0, norm0, [relu0,] pool0, denseblock1, transition1, ...``) holding exactly
    ``num_convs`` convolution layers: 13 = conv0 + denseblock1, 38 = + transition1 +
    denseblock2, 87 = + transition2 + denseblock3 (DenseNet-121). The modules are shared, not
    copied, and keep their names, so the cut's state-dict keys are those of ``features``.

    ``pre_activation``: also keep the normalisation DenseNet applies to these features before
    its next convolution — the next transition's ``norm`` (and ``relu``, if it has one), kept
    as a child with the transition's name (``transition1.norm.weight`` ...), or a final
    ``norm5`` (+ ReLU when the network uses ReLUs)."""
    children = list(features.named_children())
    kept, count, boundaries = [], 0, []
    for name, child in children:
        if count == num_convs:
            break
        kept.append((name, child))
        count += count_convs(child)
        boundaries.append(count)
    if count != num_convs:
        valid = sorted(set(boundaries))
        raise ValueError(f"cannot cut the DenseNet features after {num_convs} convolution "
                         f"layers: the cut must end between two children; possible counts are "
                         f"{', '.join(map(str, valid))}")
    if pre_activation and len(kept) < len(children):
        name, nxt = children[len(kept)]
        sub = dict(nxt.named_children())
        if "norm" in sub:
            kept.append((name, nn.Sequential(OrderedDict(
                (k, sub[k]) for k in ("norm", "relu") if k in sub))))
        elif not sub and name.startswith("norm"):
            kept.append((name, nxt))
            if any(isinstance(m, nn.ReLU) for _, c in kept for m in c.modules()):
                kept.append(("relu5", nn.ReLU()))
    return nn.Sequential(OrderedDict(kept))


class FrozenBackboneTokeniser(nn.Module):
    """``backbone`` (a CNN, frozen unless ``frozen=False``) → ``× feature_gain`` → token
    convolution ``to_tokens`` (kernel = stride) → ``(B, N, D)`` tokens.

    A frozen backbone has ``requires_grad=False`` and stays in eval mode (BatchNorm running
    statistics, no dropout) even under ``model.train()``; gradients still flow through it to
    the input, so input-gradient explanations cover the whole model."""

    def __init__(self, backbone: nn.Module, to_tokens: nn.Module, feature_gain: float = 1.0,
                 frozen: bool = True):
        super().__init__()
        self.backbone = backbone
        self.feature_gain = float(feature_gain)
        self.to_tokens = to_tokens
        self.frozen = bool(frozen)
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x):
        feats = self.backbone(x) * self.feature_gain
        return self.to_tokens(feats).flatten(2).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"feature_gain={self.feature_gain:g}, frozen={self.frozen}"


# ---- backbone checkpoints ---------------------------------------------------------------------

# torchvision's old checkpoints name dense-layer modules "norm.1", "conv.2", ...
_OLD_DENSE_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
    r"running_var))$")


def _features_state(data) -> dict:
    """The ``features``-level state dict (keys ``conv0.weight`` ...) of a DenseNet checkpoint:
    a plain state dict of the full model or of its ``features``, possibly under ``state_dict``
    / ``model`` and with ``module.`` prefixes."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor)
                                             for v in data.values()):
        raise ValueError("it is not a state dict of tensors")
    state = {}
    for key, value in data.items():
        key = re.sub(r"^(module\.)+", "", str(key))
        key = _OLD_DENSE_KEY.sub(r"\1\2", key)
        state[key] = value
    if any("features." in k for k in state):
        state = {k.split("features.", 1)[1]: v for k, v in state.items() if "features." in k}
    return state


def _short_list(items, n=4) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_backbone_checkpoint(backbone: nn.Module, path, what: str = "the DenseNet cut") -> str:
    """Load the DenseNet checkpoint at ``path`` (``torch.load(weights_only=True)``) into the
    cut ``backbone``: strict for the kept layers (later layers and the classifier are ignored;
    a missing ``num_batches_tracked`` is tolerated). Returns ``"<file name> (sha256 <16 hex>)"``.
    ``ValueError`` (one line, naming the mismatched keys) if the file does not fit."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"backbone checkpoint {path} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        state = _features_state(data)
    except Exception as e:  # unreadable, pickled objects, not a state dict
        raise ValueError(f"backbone checkpoint {path} cannot be used ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from None
    expected = backbone.state_dict()
    modules = {name for name, _ in backbone.named_modules()}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    unexpected = [k for k in state if k not in expected and k.rpartition(".")[0] in modules]
    if missing or shapes or unexpected:
        parts = [f"{label} {_short_list(keys)}" for label, keys in
                 (("missing", missing), ("shape mismatch (file != model)", shapes),
                  ("unexpected", unexpected)) if keys]
        raise ValueError(f"backbone checkpoint {path} does not fit {what}: {'; '.join(parts)}")
    backbone.load_state_dict({k: state[k] for k in expected if k in state}, strict=False)
    return f"{path.name} (sha256 {digest})"


# ---- the models ---------------------------------------------------------------------------------

def paper_name(family: str, size: str, layers: int) -> str:
    return f"{'B-cos ViT' if family == 'bcos' else 'ViT'}-{_SIZE_NAMES[size]}-{layers}"


def build_paper_model(family: str, size: str, layers: int, *, num_classes: int = 1000,
                      image_size: int = 224, feature_gain: float = 1.0,
                      pre_activation: bool = True, finetune_backbone: bool = False,
                      backbone_checkpoint=None, backbone_weights=None, **kwargs):
    """(B-cos) ViT-{size}-{layers}: the DenseNet-121 cut after ``layers`` convolutions, the
    token convolution (kernel = stride = 4, 2, 1) and the transformer of zoo size ``size``
    (``kwargs`` override its arguments: ``depth``, ``position``, ...). ``backbone_weights``
    is informational (recorded in ``config``) and ignored here."""
    if family not in BACKBONES:
        raise ValueError(f"family must be one of {', '.join(BACKBONES)}, got {family!r}")
    if layers not in TOKEN_KERNEL:
        raise ValueError(f"layers must be one of {', '.join(map(str, LAYERS))}, got {layers}")
    bad = [k for k in _STEM_KEYS + ("tokeniser",) if k in kwargs]
    if bad:
        raise TypeError(f"{paper_name(family, size, layers)} does not take "
                        f"{', '.join(bad)}: its tokeniser is the DenseNet-121 cut")
    cut = DENSENET121_CUTS[layers]
    kernel = TOKEN_KERNEL[layers]
    transformer = {k: v for k, v in SIZES[size].items() if k not in _STEM_KEYS + ("image_size",)}
    transformer.update(kwargs)
    backbone = cut_densenet_features(BACKBONES[family]().features, layers, pre_activation)

    def tokeniser(embed_dim):
        if family == "bcos":
            to_tokens = BcosConv2d(cut["channels"], embed_dim, kernel, stride=kernel,
                                   b=transformer.get("b", 2.0), max_out=2)
        else:
            to_tokens = nn.Conv2d(cut["channels"], embed_dim, kernel, stride=kernel)
        return FrozenBackboneTokeniser(backbone, to_tokens, feature_gain,
                                       frozen=not finetune_backbone)

    cls = BcosViT if family == "bcos" else ViT
    extra = dict(feature_gain=feature_gain) if family == "bcos" else {}
    model = cls(num_classes=num_classes, image_size=image_size, tokeniser=tokeniser,
                stem_channels=(cut["channels"],), stem_strides=(cut["stride"],),
                patch_size=kernel, **extra, **transformer)
    if backbone_checkpoint is not None:
        backbone_weights = load_backbone_checkpoint(
            backbone, backbone_checkpoint,
            f"the {BACKBONE_NAMES[family]} cut after {layers} convolution layers")
    config = {k: v for k, v in model.config.items() if k not in _STEM_KEYS}
    config.update(feature_gain=feature_gain, pre_activation=bool(pre_activation),
                  finetune_backbone=bool(finetune_backbone), backbone_checkpoint=None,
                  backbone_weights=backbone_weights)
    model.config = config
    model.paper_name = paper_name(family, size, layers)
    model.backbone_layers = layers
    return model


def _builder(family: str, size: str, layers: int, name: str):
    def build(**kwargs):
        model = build_paper_model(family, size, layers, **kwargs)
        model.name = name
        return model

    def accepted_arguments():  # read by get_model's argument check (build takes **kwargs)
        import inspect

        own = [q for q in inspect.signature(build_paper_model).parameters
               if q not in ("family", "size", "layers", "kwargs")]
        cls = BcosViT if family == "bcos" else ViT
        blocked = _STEM_KEYS + ("tokeniser", "image_size", "patch_size")
        return own + [q for q in inspect.signature(cls).parameters
                      if q not in own and q not in blocked and q not in ("self", "kwargs")]

    build.accepted_arguments = accepted_arguments
    d = SIZES[size]
    build.__name__ = name
    build.__doc__ = (f"{paper_name(family, size, layers)} (paper): {BACKBONE_NAMES[family]} "
                     f"cut after {layers} convs (frozen), {TOKEN_KERNEL[layers]}x"
                     f"{TOKEN_KERNEL[layers]} token conv, embed {d['embed_dim']}, depth "
                     f"{d['depth']}, {d['num_heads']} heads, 224² input, 196 tokens.")
    return build


#: registered name -> (family, size, layers)
PAPER_MODELS = {}
for _family, _prefix in (("bcos", "bcos_vit"), ("conventional", "vit")):
    for _size in PAPER_SIZES:
        for _layers in LAYERS:
            _name = f"{_prefix}_{_size}_{_layers}"
            PAPER_MODELS[_name] = (_family, _size, _layers)
            _build = _builder(_family, _size, _layers, _name)
            declare_model(_name, _build, family=_family, size=_size, layers=_layers,
                          backbone="bcos_densenet121" if _family == "bcos" else "densenet121",
                          paper_name=paper_name(_family, _size, _layers),
                          description=_build.__doc__)
