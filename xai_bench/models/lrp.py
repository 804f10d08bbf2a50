"""Layer-wise relevance propagation rules for the conventional ViT.

Two rule sets (``rules=``), both batched (every sum that normalises relevance is per sample):

``"chefer"`` — the rules of Chefer et al. 2021's own method (used by ``chefer_lrp``):
- linear layers: the α-β rule (α=1, β=0 by default: only positive contributions), with the
  two sign-consistent paths normalised *together*: ``S = R / (Z₁ + Z₂)``;
- residual additions: LRP-0 split, then rescaled so that the shares keep the ratio of their
  absolute sums and the total relevance is conserved.

``"lrp"`` — the original LRP rules, which Chefer et al.'s partial-LRP baseline uses (``plrp``):
- linear layers: the α-β rule with the two paths normalised *separately*: ``S₁ = R / Z₁``,
  ``S₂ = R / Z₂`` (so, for α=1, each path passes on the whole relevance where it is active);
- residual additions: plain LRP-0, ``R_a = a·R/(a+b)``, ``R_b = b·R/(a+b)``, no rescaling.

Shared by both:
- LayerNorm, GELU, softmax: identity;
- the two attention matmuls (``q kᵀ`` and ``A v``): LRP-0 for both operands, each half;
- mean pooling over tokens: LRP-0;
- bias terms receive no relevance.

Batch invariance. In float32, a matrix product's rounding depends on the batch size (the
kernels block differently), so the forward activations of a batched call differ from the
per-image ones in their last bits, and LRP divides by sums that can nearly cancel (``a + b``,
``A v``, ``q kᵀ``). The maps of a batched call therefore equal the per-image maps only up to
a tolerance (measured in docs/definitions.md, 'plrp'); in float64 they agree to ~1e-12.
Computing only the denominators in float64 does not help: the difference is already in the
activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-9

#: the relevance rule sets (module docstring)
RULES = ("chefer", "lrp")


def check_rules(rules: str) -> str:
    if rules not in RULES:
        raise ValueError(f"unknown LRP rules {rules!r}; choose one of {', '.join(RULES)}")
    return rules


def safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b`` with 0 where ``|b|`` is (numerically) zero (dividing by inf there: one mask,
    one division — this sits on LRP's hot path)."""
    return a / b.masked_fill(b.abs() <= EPS, float("inf"))


def relprop_linear(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                   alpha: float = 1.0, rules: str = "chefer", *,
                   output: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """α-β rule through ``z = x Wᵀ`` (no bias). With β = α - 1 ≥ 0, the positive (activating)
    parts get α times the relevance and the negative (inhibiting) parts β times it. The two
    sign-consistent paths are normalised together (``rules="chefer"``) or each by its own
    sum (``rules="lrp"``).

    ``output``: the forward's ``x Wᵀ + bias`` for this ``x``, if known (``bias``: the bias
    that was added, ``None`` for none); the α=1, β=0 ``"chefer"`` rule then needs one matrix
    product fewer (:func:`_relprop_alpha1_beta0`)."""
    beta = alpha - 1.0
    if rules == "chefer" and not beta:
        return _relprop_alpha1_beta0(x, weight, relevance, output, bias)
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)

    def share(w1, w2):
        # Relevance through the two sign-consistent paths z1 = x⁺·w1, z2 = x⁻·w2.
        z1, z2 = F.linear(xp, w1), F.linear(xn, w2)
        if rules == "lrp":
            return xp * (safe_div(relevance, z1) @ w1) + xn * (safe_div(relevance, z2) @ w2)
        s = safe_div(relevance, z1 + z2)
        return xp * (s @ w1) + xn * (s @ w2)

    out = alpha * share(wp, wn)
    if beta:
        out = out - beta * share(wn, wp)
    return out


def _relprop_alpha1_beta0(x, weight, relevance, output=None, bias=None):
    """The α=1, β=0 rule with jointly normalised paths,
    ``R_in = x⁺ ⊙ (S W⁺) + x⁻ ⊙ (S W⁻)`` with ``S = R / (x⁺W⁺ᵀ + x⁻W⁻ᵀ)``, in three matrix
    products when ``output`` is given (the straightforward evaluation takes four) and with
    few full-size temporaries (on the CPU every fresh large tensor also costs page faults).

    - The denominator, the sum of the positive contributions ``x_j w_ij > 0``, is
      ``(x Wᵀ + |x| |W|ᵀ) / 2``: ``x_j w_ij + |x_j w_ij|`` is twice the positive part of each
      contribution. ``x Wᵀ`` is the forward's output less the bias, so only ``|x| |W|ᵀ`` is a
      new product. (It is a difference where most contributions are negative; its rounding
      error is then ``eps·|x||W|ᵀ`` instead of ``eps·(x⁺W⁺ᵀ + x⁻W⁻ᵀ)``: a few ulps at the sizes
      used here. An output whose contributions are all ≤ 0 can be left with a tiny non-zero
      denominator, hence a huge ``S``, but ``S`` only meets the exact zeros of ``W⁺``/``W⁻``
      on the inputs of the matching sign, so it adds nothing.)
    - Every input is either positive or not, so ``x⁺ ⊙ (S W⁺) + x⁻ ⊙ (S W⁻)`` takes, per
      entry, ``x ⊙ S W⁺`` or ``x ⊙ S W⁻``: both products are masked (to exact zeros) and
      added, the same values as the sum of the two terms. No clamped copies of ``x``; ``|x|``
      and ``|W|`` leave their memory to ``S W⁺`` and ``W⁺``, ``W⁻``. (At ViT-B size, batch 32,
      a fresh MLP-sized tensor costs more in page faults than an elementwise pass over it.)
    """
    k, n = weight.shape[1], weight.shape[0]
    batch_shape = x.shape[:-1]
    x2 = x.reshape(-1, k)
    ax = x2.abs()
    w_part = weight.abs()
    if output is None:
        denom = torch.addmm(F.linear(x2, weight), ax, w_part.t(), beta=0.5, alpha=0.5)
    else:
        denom = torch.addmm(output.reshape(-1, n), ax, w_part.t(), beta=0.5, alpha=0.5)
        if bias is not None:
            denom.sub_(0.5 * bias)
    # safe_div in place: S = 0 where the denominator is (numerically) zero or, by rounding
    # of the difference above, slightly negative.
    denom.masked_fill_(denom <= EPS, float("inf"))
    s = torch.div(relevance.reshape(-1, n), denom, out=denom)
    not_positive = x2 <= 0
    out = torch.mm(s, torch.clamp(weight, min=0, out=w_part), out=ax)     # S W⁺ where x > 0
    out.masked_fill_(not_positive, 0.0)
    negative_part = torch.mm(s, torch.clamp(weight, max=0, out=w_part))  # S W⁻ where x ≤ 0
    del s, denom, w_part
    out.add_(negative_part.masked_fill_(not_positive.logical_not_(), 0.0))
    return out.mul_(x2).reshape(*batch_shape, k)


def _safe_div_(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor | None = None):
    """:func:`safe_div` that overwrites ``b`` (a temporary) with the result; ``scratch``
    (optional, ``b``'s shape) receives ``|b|``."""
    scratch = torch.abs(b) if scratch is None else torch.abs(b, out=scratch)
    b.masked_fill_(scratch <= EPS, float("inf"))
    return torch.div(a, b, out=b)


def relprop_matmul(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor):
    """LRP-0 through ``z = a @ b`` for both operands; each gets half, so the sum is
    conserved."""
    # (In place on the fresh temporaries: the same values as the plain expressions
    # a * (s @ bᵀ) / 2, and halving is exact.)
    z = a @ b
    scratch = torch.empty_like(z)
    s = _safe_div_(relevance, z, scratch)
    ra = (s @ b.transpose(-1, -2)).mul_(a).mul_(0.5)
    at = a.transpose(-1, -2)
    rb = torch.matmul(at, s, out=scratch) if scratch.shape == b.shape else at @ s
    return ra, rb.mul_(b).mul_(0.5)


def _per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1).view(-1, *([1] * (t.dim() - 1)))


def relprop_residual(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor,
                     rules: str = "chefer"):
    """Split the relevance of ``z = a + b`` (LRP-0); with ``rules="chefer"`` then rescale each
    share so that ``|Σ R_a| : |Σ R_b|`` is kept and ``Σ R_a + Σ R_b = Σ R`` (per sample)."""
    scratch = torch.empty_like(relevance)
    s = _safe_div_(relevance, a + b, scratch)
    ra = torch.mul(a, s, out=scratch)
    rb = s.mul_(b)  # s is not needed any more
    if rules == "lrp":
        return ra, rb
    sa, sb, total = _per_sample_sum(ra), _per_sample_sum(rb), _per_sample_sum(relevance)
    denom = sa.abs() + sb.abs()
    fa, fb = safe_div(sa.abs(), denom) * total, safe_div(sb.abs(), denom) * total
    return ra.mul_(safe_div(fa, sa)), rb.mul_(safe_div(fb, sb))


def relprop_mean_pool(tokens: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """LRP-0 through ``z = mean_n tokens[:, n]``: ``(B, N, D)`` relevance from ``(B, D)``."""
    n = tokens.shape[1]
    z = tokens.mean(1, keepdim=True)
    return tokens / n * safe_div(relevance.unsqueeze(1), z)


class LRPLinear(nn.Linear):
    """``nn.Linear`` that remembers its input while ``lrp_record`` is on."""

    lrp_record = False
    saved_input: torch.Tensor | None = None
    #: the forward's output (kept with the input: the α=1 rule's denominator reuses it)
    saved_output: torch.Tensor | None = None

    def forward(self, x):
        out = super().forward(x)
        if self.lrp_record:
            # Detached views, no copies. The ViT keeps most outputs anyway (q/k/v, the residual
            # branches); only fc1's (the GELU input) lives longer under no_grad.
            self.saved_input, self.saved_output = x.detach(), out.detach()
        return out

    def relprop(self, relevance: torch.Tensor, alpha: float = 1.0,
                rules: str = "chefer") -> torch.Tensor:
        if self.saved_input is None:
            raise RuntimeError("relprop needs a forward pass under model.lrp_recording()")
        bias = None if self.bias is None else self.bias.detach()
        return relprop_linear(self.saved_input, self.weight.detach(), relevance, alpha, rules,
                              output=self.saved_output, bias=bias)
