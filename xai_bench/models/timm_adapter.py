"""Bring your own ViT: any timm ``VisionTransformer`` behind the explainable-model interface.

``get_model("timm:vit_small_patch16_224")`` (or ``xai-bench run --models
timm:vit_small_patch16_224 ...``) builds the timm model — random weights by default (offline);
``pretrained=True`` passes through to timm — and wraps it in :class:`TimmViT`, which exposes
what the methods need (see :mod:`xai_bench.models.base`):

- ``image_size`` / ``token_grid`` from the patch embedding, ``num_classes``, ``in_channels=3``;
- ``encode``: the mean/std normalisation of the model's timm ``pretrained_cfg``;
- ``blocks`` (the timm blocks), whose ``attn`` modules record, inside
  :meth:`TimmViT.record_attention`, the post-softmax attention actually applied to the values:
  fused attention (``scaled_dot_product_attention``) is switched off
  (``attn.fused_attn = False``) and a forward hook on ``attn.attn_drop`` — the module that
  receives the softmax output just before ``attn @ v`` — keeps its output, still attached to
  the autograd graph (timm itself is not modified);
- ``pooling``: ``"cls"`` for class-token pooling (``global_pool="token"``), ``"mean"`` for
  average pooling (``global_pool="avg"``); ``num_prefix_tokens`` (CLS, distillation and
  register tokens, which timm puts before the patch tokens);
- a conventional model: ``family="conventional"``, ``training_loss="ce"``, ``logit_bias=0``,
  ``is_dynamic_linear=False``, ``explanation_mode()`` a no-op.

Builder keyword arguments go to ``timm.create_model`` (e.g. ``img_size=64, depth=2,
num_classes=10``); ``image_size`` is accepted as an alias of timm's ``img_size``. ``config``
holds them (not ``pretrained``), so ``xai-bench train`` checkpoints rebuild the model; use
:func:`xai_bench.loading.save_timm_checkpoint` to turn pretrained timm weights into a
checkpoint for ``xai-bench run --checkpoint timm:NAME=PATH``.

Supported: timm ``VisionTransformer`` and subclasses (``vit_*``, ``deit_*`` ...) with token or
average pooling and standard attention blocks; other timm models (CNNs, attention-pool heads,
parallel blocks) raise a clear ``ValueError``. Distilled DeiTs average a CLS-token and a
distillation-token head; the CLS readout uses the CLS row only (as Chefer et al.'s code).
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Iterator

import torch
from torch import nn

from xai_bench.errors import RegistryError, UnknownNameError
from xai_bench.models.base import ExplainableViT
from xai_bench.storage.checkpoint_format import CheckpointError

PREFIX = "timm"
INSTALL_HINT = 'pip install "xai-bench[timm]"'
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
_SUPPORTED_POOLING = {"token": "cls", "avg": "mean"}
#: builder arguments that select weights, not the architecture (kept out of ``config``)
_WEIGHT_ARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                "cache_dir")


class PretrainedWeightsError(CheckpointError):
    """timm could not provide the pretrained weights (offline, not cached, or not fitting)."""


def _one_line(text, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _describe(error: Exception) -> str:
    text = _one_line(error, 200)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def import_timm():
    """The ``timm`` module, or a one-line :class:`~xai_bench.errors.RegistryError` saying
    how to install it."""
    try:
        import timm
    except ImportError as e:
        raise RegistryError(f"timm models need the optional dependency timm ({INSTALL_HINT}): "
                            f"{type(e).__name__}: {_one_line(e, 120)}") from None
    return timm


def resolve_timm_model(name: str):
    """Resolver of the ``timm:`` prefix of ``xai_bench.MODELS``: the builder of
    ``timm:<name>`` (``name`` a timm model name, optionally with a pretrained tag such as
    ``vit_small_patch16_224.augreg_in21k_ft_in1k``). Unknown names raise
    :class:`~xai_bench.errors.UnknownNameError` with the closest timm names."""
    timm = import_timm()
    name = name.strip()
    if not timm.is_model(name):
        arch = name.split(".", 1)[0]
        candidates = timm.list_models()
        close = difflib.get_close_matches(arch, candidates, n=3, cutoff=0.6)
        vits = [c for c in timm.list_models(f"*{arch}*")][:3] if not close else []
        hint = close or vits
        if hint:
            names = [f"'{PREFIX}:{c}'" for c in hint]
            suggestion = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
            raise UnknownNameError(f"unknown timm model '{name}' — did you mean {suggestion}?")
        raise UnknownNameError(f"unknown timm model '{name}'; timm {timm.__version__} has no "
                               f"such model (list them with timm.list_models('vit_*'))")

    def build(**kwargs):
        return TimmViT(name, **kwargs)

    build.__name__ = f"{PREFIX}:{name}"
    build.__qualname__ = build.__name__
    build.__doc__ = f"timm '{name}' wrapped by xai_bench.models.timm_adapter.TimmViT."
    return build


class TimmViT(ExplainableViT):
    """A timm ``VisionTransformer`` with the explainable-model interface (see the module
    docstring). The timm model is ``self.model`` (its state-dict keys start with ``model.``);
    ``blocks`` are its blocks."""

    family = "conventional"
    training_loss = "ce"
    is_dynamic_linear = False
    logit_bias = 0.0
    in_channels = 3
    encoding = "normalised"

    def __init__(self, model_name: str, pretrained: bool = False, image_size=None, **kwargs):
        super().__init__()
        timm = import_timm()
        from timm.models.vision_transformer import VisionTransformer

        if image_size is not None:
            if kwargs.get("img_size") is not None and kwargs["img_size"] != image_size:
                raise ValueError(f"image_size={image_size!r} and img_size="
                                 f"{kwargs['img_size']!r} disagree; pass one of them")
            kwargs["img_size"] = tuple(image_size) if isinstance(image_size, list) \
                else image_size
        self.config = {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in kwargs.items() if k not in _WEIGHT_ARGS}
        self.timm_name = model_name
        self.pretrained = bool(pretrained)
        net = _create(timm, model_name, pretrained, kwargs)
        if not isinstance(net, VisionTransformer):
            raise ValueError(f"timm model '{model_name}' is a {type(net).__name__}, not a "
                             f"VisionTransformer: the timm adapter wraps timm ViTs (vit_*, "
                             f"deit_*, ...)")
        _check_supported(net, model_name)
        for blk in net.blocks:
            blk.attn.fused_attn = False  # the explicit softmax path, so attention can be read
        self.model = net

        self.name = f"{PREFIX}:{model_name}"
        self.num_classes = int(net.num_classes)
        self.image_size = tuple(int(s) for s in net.patch_embed.img_size)
        self.token_grid = tuple(int(s) for s in net.patch_embed.grid_size)
        self.num_prefix_tokens = int(net.num_prefix_tokens)
        self.pooling = _SUPPORTED_POOLING[net.global_pool]
        cfg = dict(getattr(net, "pretrained_cfg", None) or {})
        mean = tuple(float(v) for v in cfg.get("mean") or IMAGENET_DEFAULT_MEAN)
        std = tuple(float(v) for v in cfg.get("std") or IMAGENET_DEFAULT_STD)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        #: timm's own evaluation preprocessing of the weights (input size, interpolation,
        #: crop_pct, mean, std), for reference; xai-bench's data sets apply their own transform.
        self.data_config = {k: cfg[k] for k in ("input_size", "interpolation", "crop_pct",
                                                 "crop_mode", "mean", "std") if k in cfg}
        if self.pretrained and self.num_classes == 1000:
            from xai_bench.data.folders import imagenet_classes

            self.classes = imagenet_classes()

    @property
    def blocks(self) -> nn.Sequential:
        return self.model.blocks

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @contextlib.contextmanager
    def record_attention(self) -> Iterator[list]:
        """Within the context, every forward stores each block's applied attention matrix
        ``(B, heads, N, N)`` (``N`` = prefix + patch tokens) in ``blk.attn.attention``; the
        yielded list is filled (in block order) after each forward. The hooks that capture
        it exist only inside the context."""
        maps: list = []
        modules = self.attention_modules()
        handles = []

        def keeper(attn):
            def hook(_module, _inputs, output):
                if attn.record:
                    attn.attention = output
            return hook

        def collect(*_):
            missing = [i for i, m in enumerate(modules) if m.attention is None]
            if missing:
                raise RuntimeError(f"{self.name}: the attention of block(s) {missing} was not "
                                   f"recorded (fused attention on, or a timm attention module "
                                   f"without attn_drop); the timm adapter cannot explain it")
            maps[:] = [m.attention for m in modules]

        def reset(*_):
            for m in modules:
                m.attention = None

        try:
            for m in modules:
                m.record, m.attention = True, None
                handles.append(m.attn_drop.register_forward_hook(keeper(m)))
            handles.append(self.register_forward_pre_hook(reset))
            handles.append(self.register_forward_hook(collect))
            yield maps
        finally:
            for h in handles:
                h.remove()
            for m in modules:
                m.record, m.attention = False, None


def _create(timm, model_name: str, pretrained: bool, kwargs: dict):
    try:
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except (TypeError, AssertionError) as e:  # an argument the architecture does not take
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise ValueError(f"bad argument for timm model '{model_name}' ({given}): "
                         f"{_describe(e)}") from None
    except Exception as e:
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"pretrained weights of timm model '{model_name}' could not be loaded "
            f"({_describe(e)}); offline? put them in the Hugging Face "
            f"cache (HF_HUB_OFFLINE=1 then uses it without network), or pass "
            f"pretrained_cfg_overlay=dict(file=PATH) with a local weights file, or use "
            f"pretrained=False (random weights)") from None


def _check_supported(net, model_name: str) -> None:
    pool = getattr(net, "global_pool", None)
    if getattr(net, "attn_pool", None) is not None or pool not in _SUPPORTED_POOLING:
        raise ValueError(f"timm model '{model_name}' pools with global_pool={pool!r}; the timm "
                         f"adapter supports 'token' (CLS) and 'avg' pooling (pass "
                         f"global_pool='token' or 'avg')")
    if pool == "avg" and getattr(net, "pool_include_prefix", False) and net.num_prefix_tokens:
        raise ValueError(f"timm model '{model_name}' averages prefix tokens into its pooling "
                         f"(pool_include_prefix=True), which the adapter does not support")
    if not int(getattr(net, "num_classes", 0) or 0):
        raise ValueError(f"timm model '{model_name}' has no classifier head (num_classes=0); "
                         f"the methods explain class logits")
    if pool == "token" and not getattr(net, "has_class_token", net.num_prefix_tokens > 0):
        raise ValueError(f"timm model '{model_name}' uses token pooling without a class token")
    for i, blk in enumerate(net.blocks):
        attn = getattr(blk, "attn", None)
        if not (hasattr(attn, "fused_attn") and isinstance(getattr(attn, "attn_drop", None),
                                                           nn.Module)):
            raise ValueError(f"timm model '{model_name}': block {i} ({type(blk).__name__}) has "
                             f"no standard attention module (attn with fused_attn and "
                             f"attn_drop), so its attention maps cannot be recorded")
    grid = getattr(net.patch_embed, "grid_size", None)
    if grid is None or getattr(net.patch_embed, "img_size", None) is None:
        raise ValueError(f"timm model '{model_name}' has no fixed image size / token grid "
                         f"(pass img_size=...)")
