"""Bring your own ViT: any timm ``VisionTransformer`` behind the explainable-model interface.

``get_model("timm:vit_small_patch16_224")`` (or ``xai-bench run --models
timm:vit_small_patch16_224 ...``) builds the timm model — random weights by default (offline);
``pretrained=True`` passes through to timm — and wraps it in :class:`TimmViT`, which exposes
what the methods need (see :mod:`xai_bench.models.base`):

- ``image_size`` / ``token_grid`` from the patch embedding, ``num_classes``, ``in_channels=3``;
- ``encode``: the mean/std normalisation of the model's timm ``pretrained_cfg`` (or the
  ``mean``/``std`` given);
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
holds them (not ``pretrained``), so ``xai-bench train`` checkpoints rebuild the model;
``mean``/``std`` set the normalisation. A plain timm state dict loads by name
(``get_model("timm:NAME", checkpoint=PATH)``, ``xai-bench run --checkpoint timm:NAME=PATH``:
:func:`arguments_from_state_dict` reads ``num_classes``, ``patch_size`` and ``img_size`` from
it, :meth:`TimmViT.adapt_state_dict` maps its keys); :func:`xai_bench.loading.
save_timm_checkpoint` turns pretrained timm weights into an xai-bench checkpoint. With a local
weights file (``pretrained_cfg_overlay=dict(file=PATH)``) the file's classifier is kept
(timm would drop it whenever ``num_classes`` differs from the tag's 1000).

Supported: timm ``VisionTransformer`` and subclasses (``vit_*``, ``deit_*`` ...) with token or
average pooling and standard attention blocks; other timm models (CNNs, attention-pool heads,
parallel blocks) raise a clear ``ValueError``. Distilled DeiTs average a CLS-token and a
distillation-token head; the CLS readout uses the CLS row only (as Chefer et al.'s code).
"""

from __future__ import annotations

import contextlib
import difflib
import warnings
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
    # what get_model reads: the arguments it may check before building, and those a plain
    # state dict of this architecture fixes (xai_bench.loading)
    build.accepted_arguments = lambda: accepted_arguments(name)
    build.arguments_from_state_dict = lambda state: arguments_from_state_dict(name, state)
    return build


def _default_net(name: str):
    """The timm model ``name`` with its defaults on torch's meta device (nothing allocated,
    the random state untouched)."""
    timm = import_timm()
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return timm.create_model(name)


def accepted_arguments(name: str) -> list:
    """The keyword arguments ``timm:<name>`` takes: :class:`TimmViT`'s own, those of
    ``timm.create_model`` and those of the architecture's class (following ``**kwargs`` to
    its bases)."""
    import inspect

    timm = import_timm()
    out = ["pretrained", "image_size", "mean", "std"]
    callables = [timm.create_model] + [vars(k)["__init__"] for k in
                                       type(_default_net(name)).__mro__
                                       if "__init__" in vars(k) and k is not object]
    for fn in callables:
        params = list(inspect.signature(fn).parameters.values())
        out += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in ("self", "model_name") and p.name not in out]
        if fn is not timm.create_model and not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out


def _timm_keys(state: dict) -> dict:
    """A state dict with the keys of the timm model (without :class:`TimmViT`'s ``model.``)."""
    if state and all(k.startswith("model.") or k in ("mean", "std") for k in state):
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return state


def arguments_from_state_dict(name: str, state: dict) -> dict:
    """What a plain state dict of ``timm:<name>`` fixes unambiguously: ``num_classes`` (the
    rows of ``head.weight``), ``patch_size`` (the patch embedding's kernel) and ``img_size``
    (the position embedding's square token grid times the patch size). The architecture
    (``depth``, ``embed_dim``, ``num_heads``) comes from the caller: the number of heads
    leaves no trace in the shapes, so guessing the rest would invite a silently wrong model."""
    state = _timm_keys(state)
    out: dict = {}
    head = state.get("head.weight")
    if isinstance(head, torch.Tensor) and head.dim() == 2:
        out["num_classes"] = int(head.shape[0])
    pos, proj = state.get("pos_embed"), state.get("patch_embed.proj.weight")
    if isinstance(pos, torch.Tensor) and isinstance(proj, torch.Tensor) and pos.dim() == 3 \
            and proj.dim() == 4 and proj.shape[-1] == proj.shape[-2]:
        net = _default_net(name)
        prefix = 0 if getattr(net, "no_embed_class", False) else int(net.num_prefix_tokens)
        tokens = int(pos.shape[1]) - prefix
        grid = int(round(tokens ** 0.5))
        if tokens > 0 and grid * grid == tokens and not getattr(net, "dynamic_img_size", False):
            out["img_size"] = grid * int(proj.shape[-1])
            out["patch_size"] = int(proj.shape[-1])
    return out


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

    def __init__(self, model_name: str, pretrained: bool = False, image_size=None, mean=None,
                 std=None, **kwargs):
        super().__init__()
        timm = import_timm()
        from timm.models.vision_transformer import VisionTransformer

        if image_size is not None:
            if kwargs.get("img_size") is not None and kwargs["img_size"] != image_size:
                raise ValueError(f"image_size={image_size!r} and img_size="
                                 f"{kwargs['img_size']!r} disagree; pass one of them")
            kwargs["img_size"] = tuple(image_size) if isinstance(image_size, list) \
                else image_size
        if pretrained:
            kwargs = _fit_file_head(kwargs)
        given = {"mean": mean, "std": std}
        self.config = {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in {**kwargs, **given}.items()
                       if k not in _WEIGHT_ARGS and not (k in given and v is None)}
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
        self.weights_source = "timm" if self.pretrained else "random"
        self.image_size = tuple(int(s) for s in net.patch_embed.img_size)
        self.token_grid = tuple(int(s) for s in net.patch_embed.grid_size)
        self.num_prefix_tokens = int(net.num_prefix_tokens)
        self.pooling = _SUPPORTED_POOLING[net.global_pool]
        cfg = dict(getattr(net, "pretrained_cfg", None) or {})
        #: whether pretrained weights came without their classifier (num_classes differs from
        #: theirs: timm's convention for fine-tuning gives a new, random head)
        self.new_head = self.pretrained and cfg.get("num_classes") is not None and \
            int(cfg["num_classes"]) != self.num_classes
        if self.new_head:
            warnings.warn(f"timm model '{model_name}': num_classes={self.num_classes} differs "
                          f"from the {cfg['num_classes']} classes of its pretrained weights, "
                          f"so its classifier is new and random (timm's fine-tuning "
                          f"convention); train it, or leave num_classes out to keep the "
                          f"weights' classifier", stacklevel=2)
        # the model's normalisation: given, else that of its timm pretrained_cfg
        mean = tuple(float(v) for v in (mean or cfg.get("mean") or IMAGENET_DEFAULT_MEAN))
        std = tuple(float(v) for v in (std or cfg.get("std") or IMAGENET_DEFAULT_STD))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"timm model '{model_name}': mean and std need 3 values each "
                             f"(std > 0), got mean={mean}, std={std}")
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

    def adapt_state_dict(self, state: dict) -> dict:
        """A plain timm state dict (keys of the timm model) as this wrapper's: keys under
        ``model.``, and the wrapper's own normalisation buffers where the file has none."""
        out = {f"model.{k}": v for k, v in _timm_keys(state).items()}
        for key in ("mean", "std"):
            out[key] = state.get(key, getattr(self, key))
        return out

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
    except TypeError as e:  # an argument the architecture does not take
        key = next((k for k in kwargs if f"unexpected keyword argument '{k}'" in str(e)), None)
        if key is not None:
            from xai_bench.contracts.model_args import ModelArgumentError, \
                unknown_argument_message

            raise ModelArgumentError(unknown_argument_message(
                f"{PREFIX}:{model_name}", key, accepted_arguments(model_name))) from None
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise ValueError(f"bad argument for timm model '{model_name}' ({given}): "
                         f"{_describe(e)}") from None
    except AssertionError as e:  # arguments that do not fit together
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


def _fit_file_head(kwargs: dict) -> dict:
    """``kwargs`` for timm pretrained weights from a local file
    (``pretrained_cfg_overlay=dict(file=PATH)``): the file's classifier is kept. timm drops
    the classifier of pretrained weights whenever ``num_classes`` differs from the
    ``num_classes`` of the model's pretrained config (1000 for ImageNet tags), whatever the file
    holds; so the overlay says how many classes the file's head has, and ``num_classes``
    defaults to it. A file that cannot be read is left to timm (its one-line error)."""
    overlay = kwargs.get("pretrained_cfg_overlay")
    file = overlay.get("file") if isinstance(overlay, dict) else None
    if not file:
        return kwargs
    from xai_bench.storage.state_dicts import plain_state_dict, read_any_weights

    try:
        state = _timm_keys(plain_state_dict(read_any_weights(file, ""), file))
    except CheckpointError:
        return kwargs
    head = state.get("head.weight")
    if not isinstance(head, torch.Tensor) or head.dim() != 2:
        return kwargs
    classes = int(head.shape[0])
    out = {**kwargs, "pretrained_cfg_overlay": {**overlay, "num_classes": classes}}
    out.setdefault("num_classes", classes)
    return out


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
