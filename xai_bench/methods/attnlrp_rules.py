"""LRP rules of AttnLRP (Achtibat et al. 2024) and CP-LRP (Ali et al. 2022) as modified
gradients, and the transformer pieces (LayerNorm, linear layers, attention, MLP, residual
sums, mean pooling) computed with them. :mod:`xai_bench.methods.attnlrp` assembles whole models
from these pieces and defines the methods (docs/definitions.md, 'attnlrp' and 'cp_lrp').

Gradient × input. Every rule here is written so that, for every tensor ``t`` of the forward
pass, the relevance LRP assigns to ``t`` equals ``t ⊙ g_t`` where ``g_t`` is the (modified)
gradient autograd delivers to ``t``. Starting the backward pass at the target logit with
gradient 1 (relevance = the logit), the relevance of the input is then ``x ⊙ ∂̃y_t/∂x``.
Each rule only changes how a gradient passes one operation:

- ε-rule of an affine map ``z = W a + b`` (linear layers, convolutions, batch norm, sums):
  ``R_a = a ⊙ Wᵀ (R_z / (z + ε sgn z))``. In gradient form: the gradient arriving at ``z`` is
  multiplied by ``z / (z + ε sgn z)`` (:func:`epsilon_rule`), then passes ``W`` as usual.
  The bias (and ``ε``) keep their share.
- uniform-ε rule of a product of two inputs (``q kᵀ``, ``A v``): the ε-rule on the product,
  then half of the relevance to each input: factor ``z / (2 z + ε sgn z)``
  (:func:`epsilon_rule` with ``share=2``), then the plain gradient to both factors.
- identity rule of an elementwise nonlinearity (GELU): ``R_in = R_out``, i.e. the gradient is
  multiplied by ``f(x)/x`` instead of ``f'(x)``; for GELU ``f(x)/x = Φ(x)`` exactly
  (:func:`gelu_identity`).
- LayerNorm: the standard deviation is treated as a constant (no gradient through it), the
  rest (centring, scaling by the weight, the bias) is affine and gets the ε-rule
  (:func:`layer_norm_rule`).
- softmax (AttnLRP): ``R_x = x ⊙ (R_s − s Σ R_s)``, the deep Taylor decomposition at ``x``
  with bias, which in gradient form *is* the plain softmax gradient
  (:func:`attention_softmax`); CP-LRP instead treats the attention weights as constants
  (no gradient through the softmax, the queries or the keys).
- constant factors (``1/√d``, layer scale, the feature gain of a backbone), ReLU,
  max-pooling, reshapes, concatenation and token selection: the plain gradient, which is the
  identity rule for them.

The stabiliser is sign-aware, ``z + ε·sgn(z)`` with ``sgn(0) = +1`` (the classic ε-rule), so
the factor is ``|z| / (|z| + ε)`` (:func:`epsilon_factor`); lxt adds ``+ε`` whatever the
sign, which agrees for ``z ≥ 0`` but amplifies the gradient where ``z`` is negative and within
a few ε of 0 (and divides by 0 at ``z = −ε``). Nothing here reads a tensor value on the host (no ``.item()``, no branching on
values): the rules run on any device without synchronisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["epsilon_factor", "epsilon_rule", "epsilon_rule_in_place", "gelu_identity",
           "layer_norm_rule", "linear_rule", "add_rule", "mean_rule", "attention_softmax",
           "attention_rule", "mlp_rule", "norm_rule"]


def epsilon_factor(z: torch.Tensor, epsilon: float, share: float = 1) -> torch.Tensor:
    """``z / (share·z + ε·sgn z)`` (the factor the ε-rule puts on the gradient at ``z``),
    computed as ``|z| / (share·|z| + ε)``, which is the same (also ``0`` at ``z = 0``), in
    three elementwise passes."""
    with torch.no_grad():
        magnitude = z.abs()
        denominator = magnitude * share + epsilon if share != 1 else magnitude + epsilon
        return magnitude.div_(denominator)


class _ScaleGradient(torch.autograd.Function):
    """Forward: the input unchanged (a view). Backward: the gradient times
    :func:`epsilon_factor`."""

    @staticmethod
    def forward(ctx, z, epsilon, share):
        ctx.save_for_backward(epsilon_factor(z, epsilon, share))
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        (factor,) = ctx.saved_tensors
        return grad * factor, None, None


def epsilon_rule(z: torch.Tensor, epsilon: float, share: float = 1) -> torch.Tensor:
    """Mark ``z`` as the output of an affine map (``share=1``: the ε-rule) or of a product of
    ``share`` inputs (``share=2``: the uniform-ε rule) whose relevance is to be propagated with
    stabiliser ``ε``. Returns a view of ``z`` (not to be modified in place: see
    :func:`epsilon_rule_in_place`)."""
    return _ScaleGradient.apply(z, float(epsilon), share)


def epsilon_rule_in_place(z: torch.Tensor, epsilon: float) -> None:
    """The ε-rule on ``z`` itself, through a tensor hook: for outputs that later operations
    modify in place (a batch norm followed by an in-place ReLU). The hook scales the gradient
    with respect to ``z`` as computed, before any in-place change."""
    if z.requires_grad:
        factor = epsilon_factor(z, epsilon)
        z.register_hook(lambda grad: grad * factor)


def _gelu_ratio(x: torch.Tensor, approximate: str) -> torch.Tensor:
    """``gelu(x) / x`` without a division: ``Φ(x)``, or its tanh approximation."""
    if approximate == "tanh":
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return torch.special.ndtr(x)  # Φ(x)


class _GeluIdentity(torch.autograd.Function):
    """GELU forward; backward: the identity rule (gradient × gelu(x)/x)."""

    @staticmethod
    def forward(ctx, x, approximate):
        with torch.no_grad():
            ctx.save_for_backward(_gelu_ratio(x, approximate))
        return F.gelu(x, approximate=approximate)

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


def gelu_identity(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu(x, approximate)`` whose relevance passes unchanged (identity rule)."""
    return _GeluIdentity.apply(x, approximate)


def layer_norm_rule(x: torch.Tensor, norm: nn.LayerNorm, epsilon: float) -> torch.Tensor:
    """``norm(x)`` over the last dimension with the standard deviation held constant (no
    gradient through it), then the ε-rule on the output: centring, weight and bias are an
    affine map of ``x`` (the bias keeps its share)."""
    mean = x.mean(-1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdim=True)
    y = centred / torch.sqrt(var + norm.eps).detach()
    if norm.weight is not None:
        y = y * norm.weight
    if norm.bias is not None:
        y = y + norm.bias
    return epsilon_rule(y, epsilon)


def norm_rule(x: torch.Tensor, norm: nn.Module, epsilon: float) -> torch.Tensor:
    """:func:`layer_norm_rule` for a LayerNorm, ``x`` itself for ``nn.Identity``."""
    if isinstance(norm, nn.Identity):
        return x
    return layer_norm_rule(x, norm, epsilon)


def linear_rule(x: torch.Tensor, linear: nn.Linear, epsilon: float) -> torch.Tensor:
    """``linear(x)`` with the ε-rule."""
    return epsilon_rule(F.linear(x, linear.weight, linear.bias), epsilon)


def add_rule(a: torch.Tensor, b: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``a + b`` with the ε-rule: relevance in proportion to ``a`` and ``b`` (a residual sum;
    a parameter added, e.g. a position embedding, keeps its share like a bias)."""
    return epsilon_rule(a + b, epsilon)


def mean_rule(x: torch.Tensor, dim: int, epsilon: float) -> torch.Tensor:
    """``x.mean(dim)`` with the ε-rule of the sum: ``R_i = x_i R / (Σ x + ε sgn)``."""
    return epsilon_rule(x.mean(dim), epsilon / x.shape[dim])


def attention_softmax(scores: torch.Tensor) -> torch.Tensor:
    """The attention softmax over the keys. Under AttnLRP its plain gradient is the softmax
    rule ``R_x = x ⊙ (R_s − s Σ R_s)``; kept as a module-level function (the tests wrap it to
    measure the relevance the rule absorbs)."""
    return scores.softmax(-1)


def attention_rule(x: torch.Tensor, *, qkv: nn.Linear, proj: nn.Linear, num_heads: int,
                   head_dim: int, scale: float, scale_queries: bool, conservative: bool,
                   epsilon: float, norm: nn.Module | None = None) -> torch.Tensor:
    """Multi-head self-attention with fused ``qkv`` (output ordered q, k, v × heads × head
    dim) and output projection ``proj``, under the rules.

    ``scale_queries``: the scale multiplies the queries before ``q kᵀ`` (timm), else the
    product (the conventional twin): the ε of the uniform rule sits on the product as the
    model computes it. ``conservative``: CP-LRP (attention weights constant, the ε-rule on
    ``A v`` with all relevance to ``v``); else AttnLRP (uniform-ε rule on both products,
    softmax rule). ``norm``: a LayerNorm on the heads' concatenated output (timm's
    ``scale_norm``) or ``None``."""
    bsz, n, _ = x.shape
    qkv_out = linear_rule(x, qkv, epsilon).reshape(bsz, n, 3, num_heads, head_dim)
    q, k, v = qkv_out.permute(2, 0, 3, 1, 4).unbind(0)
    if conservative:
        q, k = q.detach(), k.detach()
    if scale_queries:
        scores = (q * scale) @ k.transpose(-2, -1)
        if not conservative:
            scores = epsilon_rule(scores, epsilon, share=2)
    else:
        scores = q @ k.transpose(-2, -1)
        if not conservative:
            scores = epsilon_rule(scores, epsilon, share=2)
        scores = scores * scale
    attn = attention_softmax(scores)
    out = epsilon_rule(attn @ v, epsilon, share=1 if conservative else 2)
    out = out.transpose(1, 2).reshape(bsz, n, num_heads * head_dim)
    if norm is not None:
        out = norm_rule(out, norm, epsilon)
    return linear_rule(out, proj, epsilon)


def mlp_rule(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear, epsilon: float,
             approximate: str = "none", norm: nn.Module | None = None) -> torch.Tensor:
    """``fc2(norm(gelu(fc1(x))))``: ε-rule on both linear layers, identity rule on GELU."""
    hidden = gelu_identity(linear_rule(x, fc1, epsilon), approximate)
    if norm is not None:
        hidden = norm_rule(hidden, norm, epsilon)
    return linear_rule(hidden, fc2, epsilon)
