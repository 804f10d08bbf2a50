"""The model contract: what the harness, the methods and the metrics may ask of a model.

The **core** (every model): ``image_size``, ``num_classes``, ``encode(images)``, the forward
call ``model(x)``, ``confidence(logits)`` and ``training_loss``. Optional members have
defaults (:data:`MODEL_MEMBERS`). **Capabilities** add members (:data:`CAPABILITY_MEMBERS`):

- ``attention``: ``token_grid``, ``blocks`` and ``record_attention()`` (per-block attention
  maps that stay in the autograd graph);
- ``lrp``: attention plus ``relprop()`` and ``lrp_recording()``;
- ``dynamic_linear`` (B-cos): ``is_dynamic_linear`` true and ``explanation_mode()`` in which
  ``W(x) x = logits − logit_bias``.

A method declares the capabilities it needs (``requires``); :func:`capabilities` is the only
test of them. How the input is encoded is declared too (``encoding``), and :func:`decode`
turns an encoded input back into RGB images: nothing infers the encoding from the number of
channels.
"""

from __future__ import annotations

import contextlib

from xai_bench.contracts.members import REQUIRED, Member, missing_members
from xai_bench.errors import ContractError

__all__ = ["MODEL_MEMBERS", "CAPABILITY_MEMBERS", "ENCODINGS", "model_attr", "model_name",
           "capabilities", "has_capabilities", "has_attention", "has_lrp", "is_dynamic_linear",
           "decode", "parameter_count", "check_model", "implied"]

#: how ``encode`` maps RGB images in [0, 1] to the model's input
ENCODINGS = {
    "rgb": "the RGB image itself",
    "normalised": "(rgb − mean) / std per channel, with the model's `mean` and `std` "
                  "(1, 3, 1, 1) tensors",
    "rgb_inverse": "[r, g, b, 1 − r, 1 − g, 1 − b] (B-cos): six channels",
}

MODEL_MEMBERS = (
    Member("image_size", False, REQUIRED, "(H, W) of the RGB images the model expects"),
    Member("num_classes", False, REQUIRED, "number of output logits"),
    Member("encode", True, REQUIRED, "encode(images): RGB in [0, 1] (B, 3, H, W) -> model input"),
    Member("forward", True, REQUIRED, "model(x): encoded input -> logits (B, num_classes)"),
    Member("confidence", True, REQUIRED, "confidence(logits): class confidences "
           "(sigmoid or softmax)"),
    Member("training_loss", False, REQUIRED, "'bce' (sigmoid outputs) or 'ce' (softmax)"),
    Member("encoding", False, "rgb", "what encode does: 'rgb', 'normalised' (uses `mean`, "
           "`std`) or 'rgb_inverse' (B-cos [x, 1-x])"),
    Member("decode", True, "from `encoding`", "decode(x): encoded input -> RGB images"),
    Member("logit_bias", False, 0.0, "constant added to every logit"),
    Member("is_dynamic_linear", False, False, "True where W(x) x = logits - logit_bias exactly"),
    Member("explanation_mode", True, "no-op", "context manager: dynamic factors become "
           "constants"),
    Member("family", False, "conventional", "'bcos' or 'conventional', for tables"),
    Member("pooling", False, "mean", "'mean' or 'cls': how tokens become the representation"),
    Member("num_prefix_tokens", False, 0, "CLS/distillation/register tokens before the patch "
           "tokens"),
    Member("in_channels", False, 3, "channels of the encoded input"),
    Member("config", False, {}, "constructor keyword arguments, enough to rebuild the model"),
    Member("checkpoint_info", False, {}, "what its checkpoint recorded (model, model_config, "
           "dataset, recipe, metrics, provenance); set when loaded from one"),
)
CAPABILITY_MEMBERS = {
    "attention": (
        Member("token_grid", False, REQUIRED, "(rows, cols) of the patch-token grid"),
        Member("blocks", False, REQUIRED, "the transformer blocks, each with an attn module"),
        Member("record_attention", True, REQUIRED, "context manager yielding the per-block "
               "attention maps (B, heads, N, N), attached to the autograd graph"),
    ),
    "lrp": (
        Member("relprop", True, REQUIRED, "relprop(relevance, alpha=1.0, rules='chefer'): "
               "propagate LRP relevance from the logits to the input (rules 'chefer' or "
               "'lrp'; each block's attn.attention_relevance keeps what reached its attention "
               "matrix)"),
        Member("lrp_recording", True, REQUIRED, "context manager: forwards keep what relprop "
               "needs"),
    ),
    "dynamic_linear": (
        Member("is_dynamic_linear", False, REQUIRED, "True (or family == 'bcos')"),
        Member("explanation_mode", True, REQUIRED, "context manager in which W(x) is constant"),
    ),
}
#: capabilities that build on another
_IMPLIES = {"lrp": ("attention",)}


def implied(capability: str) -> tuple:
    """The capabilities that ``capability`` builds on (``lrp``: ``attention``)."""
    return _IMPLIES.get(capability, ())


def model_name(model) -> str:
    return str(getattr(model, "name", None) or type(model).__name__)


def model_attr(model, name: str):
    """An optional model member, or its documented default."""
    for member in MODEL_MEMBERS:
        if member.name == name:
            if hasattr(model, name):
                return getattr(model, name)
            if name == "explanation_mode":
                return lambda: contextlib.nullcontext(model)
            if name == "decode":
                return lambda x: decode(model, x)
            return member.default if member.default is not REQUIRED else None
    raise KeyError(f"'{name}' is not a member of the model contract")


def _has(model, capability: str) -> bool:
    if capability == "dynamic_linear":
        flag = bool(getattr(model, "is_dynamic_linear", False)) or \
            getattr(model, "family", None) == "bcos"
        return flag and callable(getattr(model, "explanation_mode", None))
    return all(_has(model, c) for c in _IMPLIES.get(capability, ())) and \
        not missing_members(model, CAPABILITY_MEMBERS[capability])


def capabilities(model) -> list[str]:
    """The capabilities ``model`` provides, e.g. ``["attention", "lrp"]``."""
    return [name for name in CAPABILITY_MEMBERS if _has(model, name)]


def has_capabilities(model, required) -> bool:
    """Whether ``model`` provides every capability in ``required`` (unknown names: False)."""
    return all(name in CAPABILITY_MEMBERS and _has(model, name) for name in required)


def has_attention(model) -> bool:
    return _has(model, "attention")


def has_lrp(model) -> bool:
    return _has(model, "lrp")


def is_dynamic_linear(model) -> bool:
    """B-cos models: ``is_dynamic_linear`` true or ``family == "bcos"``, with an
    ``explanation_mode()``."""
    return _has(model, "dynamic_linear")


def decode(model, x):
    """The RGB images (B, 3, H, W) an encoded input ``x`` stands for: the model's own
    ``decode`` where it has one, else the inverse of its declared ``encoding``."""
    own = getattr(model, "decode", None)
    if callable(own):
        return own(x)
    encoding = model_attr(model, "encoding")
    if encoding == "rgb_inverse":
        return x[:, :3]
    if encoding == "normalised":
        return x * model.std.to(x) + model.mean.to(x)
    return x


def parameter_count(model) -> int | None:
    count = getattr(model, "num_parameters", None)
    if callable(count):
        return int(count())
    params = getattr(model, "parameters", None)
    return sum(p.numel() for p in params()) if callable(params) else None


def check_model(model, name: str | None = None) -> dict:
    """Check the core contract; return the model's card (name, family, parameters,
    capabilities, config). :class:`ContractError` lists every missing member."""
    missing = missing_members(model, MODEL_MEMBERS)
    label = name or model_name(model)
    if missing:
        raise ContractError(f"model '{label}' lacks {', '.join(missing)} of the model contract "
                            f"(see docs/models.md); add them or subclass "
                            f"xai_bench.models.ExplainableModel")
    size = model.image_size
    try:
        size = (int(size), int(size)) if isinstance(size, (int, float)) else \
            (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        raise ContractError(f"model '{label}' has image_size {size!r}; expected (H, W)") \
            from None
    if model.training_loss not in ("bce", "ce"):
        raise ContractError(f"model '{label}' has training_loss {model.training_loss!r}; "
                            f"expected 'bce' or 'ce'")
    encoding = model_attr(model, "encoding")
    if encoding not in ENCODINGS:
        raise ContractError(f"model '{label}' has encoding {encoding!r}; expected one of "
                            f"{', '.join(ENCODINGS)}")
    if encoding == "normalised" and not callable(getattr(model, "decode", None)) and \
            not (hasattr(model, "mean") and hasattr(model, "std")):
        raise ContractError(f"model '{label}' declares encoding 'normalised' but has no mean "
                            f"and std tensors; add them or a decode(x) method")
    config = model_attr(model, "config")
    return {"family": model_attr(model, "family"), "parameters": parameter_count(model),
            "capabilities": capabilities(model), "image_size": list(size),
            "num_classes": int(model.num_classes), "encoding": encoding,
            "config": dict(config) if isinstance(config, dict) else {}}
