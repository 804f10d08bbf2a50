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
                   alpha: float = 1.0, rules: str = "chefer") -> torch.Tensor:
    """α-β rule through ``z = x Wᵀ`` (no bias). With β = α - 1 ≥ 0, the positive (activating)
    parts get α times the relevance and the negative (inhibiting) parts β times it. The two
    sign-consistent paths are normalised together (``rules="chefer"``) or each by its own
    sum (``rules="lrp"``)."""
    beta = alpha - 1.0
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


def relprop_matmul(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor):
    """LRP-0 through ``z = a @ b`` for both operands; each gets half, so the sum is
    conserved."""
    s = safe_div(relevance, a @ b)
    ra = a * (s @ b.transpose(-1, -2))
    rb = b * (a.transpose(-1, -2) @ s)
    return ra / 2, rb / 2


def _per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1).view(-1, *([1] * (t.dim() - 1)))


def relprop_residual(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor,
                     rules: str = "chefer"):
    """Split the relevance of ``z = a + b`` (LRP-0); with ``rules="chefer"`` then rescale each
    share so that ``|Σ R_a| : |Σ R_b|`` is kept and ``Σ R_a + Σ R_b = Σ R`` (per sample)."""
    s = safe_div(relevance, a + b)
    ra, rb = a * s, b * s
    if rules == "lrp":
        return ra, rb
    sa, sb, total = _per_sample_sum(ra), _per_sample_sum(rb), _per_sample_sum(relevance)
    denom = sa.abs() + sb.abs()
    fa, fb = safe_div(sa.abs(), denom) * total, safe_div(sb.abs(), denom) * total
    return ra * safe_div(fa, sa), rb * safe_div(fb, sb)


def relprop_mean_pool(tokens: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """LRP-0 through ``z = mean_n tokens[:, n]``: ``(B, N, D)`` relevance from ``(B, D)``."""
    n = tokens.shape[1]
    z = tokens.mean(1, keepdim=True)
    return tokens / n * safe_div(relevance.unsqueeze(1), z)


class LRPLinear(nn.Linear):
    """``nn.Linear`` that remembers its input while ``lrp_record`` is on."""

    lrp_record = False
    saved_input: torch.Tensor | None = None

    def forward(self, x):
        if self.lrp_record:
            self.saved_input = x.detach()
        return super().forward(x)

    def relprop(self, relevance: torch.Tensor, alpha: float = 1.0,
                rules: str = "chefer") -> torch.Tensor:
        if self.saved_input is None:
            raise RuntimeError("relprop needs a forward pass under model.lrp_recording()")
        return relprop_linear(self.saved_input, self.weight.detach(), relevance, alpha, rules)
