"""AttnLRP (Achtibat et al. 2024) and CP-LRP (Ali et al. 2022) for conventional ViTs: the
conventional twin (:class:`xai_bench.models.vit.ViT`) and timm ViTs
(:class:`xai_bench.models.timm_adapter.TimmViT`). Definitions: docs/definitions.md, 'attnlrp'
and 'cp_lrp'.

Both explain the target logit: the relevance starts as the logit itself at the target class,
flows down with the rules of :mod:`xai_bench.methods.attnlrp_rules` (written as modified
gradients, so one forward and one backward give the relevance ``x ⊙ ∂̃y_t/∂x`` of every input
value), and the map is the input relevance summed over channels, ``(B, H, W)``.

The model is not modified: the transformer is recomputed from the model's own modules and
parameters with the rules (:func:`rule_logits`), which reproduces the model's logits up to
float rounding; only the tokeniser of the twin (a CNN of known layer types) runs its own
forward, with temporary forward hooks that put the ε-rule on its convolutions, batch norms
and linear layers (removed on exit, also on error). A model whose layers are not all known
here is "not applicable" (:func:`unsupported` says why), never explained with wrong rules.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from xai_bench.compute.modes import eval_mode
from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import number
from xai_bench.methods.attnlrp_rules import (
    add_rule, attention_rule, epsilon_rule, epsilon_rule_in_place, linear_rule, mean_rule,
    mlp_rule, norm_rule,
)
from xai_bench.methods.base import AttributionMethod
from xai_bench.models.paper import FrozenBackboneTokeniser
from xai_bench.models.timm_adapter import TimmViT
from xai_bench.models.vit import MLP, Attention, Block, ConvTokeniser, ViT

__all__ = ["AttnLRP", "CPLRP", "input_relevance", "rule_logits", "unsupported",
           "DEFAULT_EPSILON"]

#: the ε of every ε-rule (lxt's default for linear layers)
DEFAULT_EPSILON = 1e-6

# Layers the twin's tokeniser may contain: the ε-rule goes on the affine ones, the others pass
# the plain gradient (ReLU and max-pooling: identity / winner-take-all; average pooling: LRP-0).
_TOKENISER_AFFINE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
_TOKENISER_PLAIN = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout,
                    nn.Sequential, ConvTokeniser, FrozenBackboneTokeniser)
_TORCHVISION_DENSENET = {"torchvision.models.densenet." + n
                         for n in ("_DenseBlock", "_DenseLayer", "_Transition")}
_TIMM_GELU = {"timm.layers.activations.GELU": "none",
              "timm.layers.activations.GELUTanh": "tanh"}


def _qualname(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _is_layer_norm(m) -> bool:
    return (isinstance(m, nn.LayerNorm) and type(m).__name__ in ("LayerNorm", "LayerNormFp32")
            and len(m.normalized_shape) == 1)


def _is_norm_or_identity(m) -> bool:
    return type(m) is nn.Identity or _is_layer_norm(m)


def _is_dropout(m) -> bool:
    return type(m) in (nn.Dropout, nn.Identity)


def _gelu_approximation(act) -> str | None:
    """``"none"`` / ``"tanh"`` for a GELU module, ``None`` for anything else."""
    if type(act) is nn.GELU:
        return act.approximate
    return _TIMM_GELU.get(_qualname(act))


# ---- which models --------------------------------------------------------------------------

def _twin_unsupported(model: ViT) -> str | None:
    if type(model).forward is not ViT.forward:
        return f"{type(model).__name__} overrides the ViT forward"
    for i, blk in enumerate(model.blocks):
        if not (type(blk) is Block and type(blk.attn) is Attention and type(blk.mlp) is MLP
                and _is_layer_norm(blk.norm1) and _is_layer_norm(blk.norm2)):
            return f"block {i} is not a standard block of xai_bench.models.vit"
    if not (_is_layer_norm(model.norm) and isinstance(model.head, nn.Linear)):
        return "its final norm or head is not a LayerNorm / linear layer"
    if type(model.tokeniser) not in (ConvTokeniser, FrozenBackboneTokeniser):
        return f"its tokeniser {type(model.tokeniser).__name__} is not one whose layers are known"
    for m in model.tokeniser.modules():
        if not (type(m) in _TOKENISER_AFFINE + _TOKENISER_PLAIN
                or _qualname(m) in _TORCHVISION_DENSENET):
            return f"its tokeniser contains a {type(m).__name__} layer"
        if getattr(m, "memory_efficient", False):  # checkpointing recomputes without the rules
            return "its tokeniser recomputes layers in the backward pass (memory_efficient)"
    return None


def _timm_block_unsupported(blk, timm_layers, block_cls) -> str | None:
    attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
    if type(blk) is not block_cls or type(attn) is not timm_layers.Attention \
            or type(mlp) is not timm_layers.Mlp:
        return "not a standard timm Block(Attention, Mlp)"
    if not (_is_layer_norm(blk.norm1) and _is_layer_norm(blk.norm2)):
        return "its norms are not LayerNorms"
    if not (type(attn.q_norm) is nn.Identity and type(attn.k_norm) is nn.Identity
            and _is_norm_or_identity(attn.norm) and getattr(attn, "gate", None) is None
            and isinstance(attn.qkv, nn.Linear) and isinstance(attn.proj, nn.Linear)
            and _is_dropout(attn.attn_drop) and _is_dropout(attn.proj_drop)):
        return "its attention has q/k norms, a gate or non-linear projections"
    if not (isinstance(mlp.fc1, nn.Linear) and isinstance(mlp.fc2, nn.Linear)
            and _gelu_approximation(mlp.act) is not None and _is_norm_or_identity(mlp.norm)
            and _is_dropout(mlp.drop1) and _is_dropout(mlp.drop2)):
        return "its MLP is not linear-GELU-linear"
    for ls in (blk.ls1, blk.ls2):
        if not (type(ls) is nn.Identity or (type(ls) is timm_layers.LayerScale)):
            return "its layer scale is not timm's LayerScale"
    for dp in (blk.drop_path1, blk.drop_path2):
        if type(dp) not in (nn.Identity, timm_layers.DropPath):
            return "its drop path is not timm's DropPath"
    return None


def _timm_unsupported(model: TimmViT) -> str | None:
    import timm.layers as timm_layers
    from timm.models.vision_transformer import Block as TimmBlock, VisionTransformer

    net = model.model
    if type(net) is not VisionTransformer:
        return f"{type(net).__name__} is not timm's plain VisionTransformer"
    pe = net.patch_embed
    if not (type(pe) is timm_layers.PatchEmbed and type(pe.proj) is nn.Conv2d and pe.flatten
            and not pe.dynamic_img_pad and _is_norm_or_identity(pe.norm)):
        return "its patch embedding is not a plain convolution"
    if getattr(net, "dynamic_img_size", False) or net.attn_pool is not None:
        return "dynamic image size or attention pooling"
    if net.global_pool not in ("token", "avg") or (net.global_pool == "avg"
                                                     and net.pool_include_prefix):
        return f"pooling {net.global_pool!r}"
    if not (_is_dropout(net.pos_drop) and type(net.patch_drop) in (nn.Identity,
                                                                    timm_layers.PatchDropout)
            and _is_dropout(net.head_drop)):
        return "unknown dropout layers"
    if not all(_is_norm_or_identity(m) for m in (net.norm_pre, net.norm, net.fc_norm)) \
            or not isinstance(net.head, nn.Linear):
        return "its norms or head are not LayerNorm / linear"
    for i, blk in enumerate(net.blocks):
        reason = _timm_block_unsupported(blk, timm_layers, TimmBlock)
        if reason:
            return f"block {i}: {reason}"
    return None


def unsupported(model) -> str | None:
    """Why the rules here cannot explain ``model`` (``None``: they can): it must be the
    conventional twin (standard blocks, a conv or frozen-DenseNet tokeniser) or a timm
    ``VisionTransformer`` made of plain Attention / Mlp(GELU) / LayerNorm blocks."""
    try:
        if isinstance(model, ViT):
            return _twin_unsupported(model)
        if isinstance(model, TimmViT):
            return _timm_unsupported(model)
    except AttributeError as e:  # another timm version's layers: unknown, so not applicable
        return f"unexpected layer structure ({e})"
    return f"{type(model).__name__} is neither the conventional ViT nor a timm ViT"


# ---- the forward pass under the rules --------------------------------------------------------

@contextlib.contextmanager
def _epsilon_rule_on_affine_layers(module: nn.Module, epsilon: float):
    """While active, the outputs of ``module``'s convolutions, batch norms and linear layers
    carry the ε-rule (forward hooks, removed on exit)."""

    def hook(_module, _inputs, output):
        epsilon_rule_in_place(output, epsilon)  # an in-place ReLU may follow

    handles = []
    try:
        for m in module.modules():
            if isinstance(m, _TOKENISER_AFFINE):
                handles.append(m.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def _twin_logits(model: ViT, x, conservative: bool, eps: float):
    with _epsilon_rule_on_affine_layers(model.tokeniser, eps):
        tokens = model.tokeniser(x)
    t = add_rule(tokens, model.pos_embed, eps)
    for blk in model.blocks:
        attn = blk.attn
        a = attention_rule(norm_rule(t, blk.norm1, eps), qkv=attn.qkv, proj=attn.proj,
                           num_heads=attn.num_heads, head_dim=attn.head_dim,
                           scale=1.0 / math.sqrt(attn.head_dim), scale_queries=False,
                           conservative=conservative, epsilon=eps)
        h = add_rule(t, a, eps)
        m = mlp_rule(norm_rule(h, blk.norm2, eps), blk.mlp.fc1, blk.mlp.fc2, eps)
        t = add_rule(h, m, eps)
    pooled = mean_rule(norm_rule(t, model.norm, eps), 1, eps)
    return linear_rule(pooled, model.head, eps)


def _layer_scale(ls, x):
    return x if type(ls) is nn.Identity else x * ls.gamma  # a constant factor: identity rule


def _optional_norm(norm):
    return None if type(norm) is nn.Identity else norm


def _timm_logits(model: TimmViT, x, conservative: bool, eps: float):
    net = model.model
    pe = net.patch_embed
    t = epsilon_rule(pe.proj(x), eps)
    t = norm_rule(t.flatten(2).transpose(1, 2), pe.norm, eps)
    prefix = [tok.expand(t.shape[0], -1, -1) for tok in (net.cls_token, net.reg_token)
              if tok is not None]  # prefix tokens: constants, their relevance is their own
    if net.pos_embed is not None and net.no_embed_class:
        t = add_rule(t, net.pos_embed, eps)
    if prefix:
        t = torch.cat(prefix + [t], dim=1)
    if net.pos_embed is not None and not net.no_embed_class:
        t = add_rule(t, net.pos_embed, eps)
    t = norm_rule(t, net.norm_pre, eps)
    for blk in net.blocks:
        attn, mlp = blk.attn, blk.mlp
        a = attention_rule(norm_rule(t, blk.norm1, eps), qkv=attn.qkv, proj=attn.proj,
                           num_heads=attn.num_heads, head_dim=attn.head_dim, scale=attn.scale,
                           scale_queries=True, conservative=conservative, epsilon=eps,
                           norm=_optional_norm(attn.norm))
        t = add_rule(t, _layer_scale(blk.ls1, a), eps)
        m = mlp_rule(norm_rule(t, blk.norm2, eps), mlp.fc1, mlp.fc2, eps,
                     approximate=_gelu_approximation(mlp.act), norm=_optional_norm(mlp.norm))
        t = add_rule(t, _layer_scale(blk.ls2, m), eps)
    t = norm_rule(t, net.norm, eps)
    if net.global_pool == "token":
        pooled = t[:, 0]
    else:
        pooled = mean_rule(t[:, net.num_prefix_tokens:], 1, eps)
    return linear_rule(norm_rule(pooled, net.fc_norm, eps), net.head, eps)


def rule_logits(model, x: torch.Tensor, conservative: bool = False,
                epsilon: float = DEFAULT_EPSILON) -> torch.Tensor:
    """The model's logits ``(B, classes)`` recomputed with the LRP rules attached (AttnLRP, or
    CP-LRP with ``conservative``): equal to ``model(x)`` up to float rounding; their modified
    gradient times the input is the relevance. Call it in eval mode (as
    :func:`input_relevance` does). ``ValueError`` if :func:`unsupported` names a reason."""
    reason = unsupported(model)
    if reason:
        raise ValueError(f"AttnLRP / CP-LRP cannot explain this model: {reason}")
    forward = _twin_logits if isinstance(model, ViT) else _timm_logits
    return forward(model, x, bool(conservative), float(epsilon))


def input_relevance(model, x: torch.Tensor, targets: torch.Tensor, *,
                    conservative: bool = False, epsilon: float = DEFAULT_EPSILON,
                    extra=()):
    """LRP relevance of the target logits: ``(R_x, R_extra, logits)`` with ``R_x`` the
    relevance of every input value ``(B, C, H, W)``, ``R_extra`` that of each tensor in
    ``extra`` (e.g. biases, which keep a share of the relevance: ``t ⊙ ∂̃Σ_b y_b/∂t``, summed
    over the batch for parameters; each must require grad; ``None`` where no relevance
    reaches it) and the logits the
    rules explained (detached). One forward and one backward, in eval mode; gradients are
    taken with :func:`torch.autograd.grad`, nothing accumulates in ``.grad``."""
    targets = torch.as_tensor(targets, device=x.device).long().reshape(-1)
    x = x.detach().clone().requires_grad_(True)
    extra = list(extra)
    with eval_mode(model), torch.enable_grad():
        logits = rule_logits(model, x, conservative, epsilon)
        chosen = logits.gather(1, targets[:, None]).sum()
        grads = torch.autograd.grad(chosen, [x] + extra, allow_unused=True)
    relevance = x.detach() * grads[0]
    others = [None if g is None else t.detach() * g for t, g in zip(extra, grads[1:])]
    return relevance, others, logits.detach()


class _RelevanceMethod(AttributionMethod):
    """Shared by both methods: the channel sum of :func:`input_relevance`."""

    conservative = False
    PARAMETER_CHECKS = {"epsilon": number(above=0)}

    def __init__(self, epsilon: float = DEFAULT_EPSILON):
        super().__init__(epsilon=epsilon)
        self.params["epsilon"] = float(epsilon)

    def applies_to(self, model) -> bool:
        return super().applies_to(model) and unsupported(model) is None

    def attribute(self, model, x, targets):
        relevance, _, _ = input_relevance(model, x, targets, conservative=self.conservative,
                                          epsilon=self.params["epsilon"])
        return relevance.sum(1)


# cost (forward passes per image, benchmarks/method_cost.py, CPU clock, 1 thread): 3.9-4.0 on
# vit_nano at batch 32 (its conv stem at full resolution makes the rules' elementwise work
# count), 2.2-2.3 on vit_b at batch 8; one forward + backward is 2.6 and 2.0 there.
@method("attnlrp", kind="lrp", requires="attention", cost=4.0, place=11,
        colour="#44AA99")  # Tol teal
class AttnLRP(_RelevanceMethod):
    """AttnLRP (Achtibat et al. 2024) of the target logit: ε-rule on linear layers, sums and
    the patch embedding, identity rule on GELU, LayerNorm with its standard deviation held
    constant, the softmax rule, the uniform-ε rule on ``q kᵀ`` and ``A v``; relevance at the
    input summed over channels. ``epsilon`` (default 1e-6): the stabiliser of every ε-rule."""

    conservative = False


@method("cp_lrp", kind="lrp", requires="attention", cost=4.0, place=12,
        colour="#117733")  # Tol green
class CPLRP(_RelevanceMethod):
    """CP-LRP (Ali et al. 2022) of the target logit: as :class:`AttnLRP` outside the
    attention; inside, the attention weights are constants (no relevance through the
    softmax, queries or keys) and ``A v`` gets the ε-rule, all relevance to the values.
    ``epsilon`` (default 1e-6): the stabiliser of every ε-rule."""

    conservative = True
