"""Attention-based methods: FinAtt, Rollout, GradSAM and (Chefer's adaptation of) GradCAM.

Readout (:func:`~xai_bench.methods.base.token_readout`): our models average tokens (no CLS
token), so wherever a reference reads the CLS row of a token×token matrix we take the mean over
query rows and drop no column. Models with ``pooling == "cls"`` (e.g. timm ViTs through
:mod:`xai_bench.models.timm_adapter`) are read as in the reference implementations (Chefer et
al.): the CLS row, the ``num_prefix_tokens`` prefix columns dropped, the remaining patch tokens
on the token grid. The token×token matrices themselves (and rollout's products) always span all
tokens, prefix tokens included.
For the B-cos ViT the attention matrix used is the one actually applied to the values (after
the positional prior). These methods run the model's *plain* forward (never explanation mode),
in eval mode (see :func:`xai_bench.compute.modes.eval_mode`).

``start_layer`` (rollout here, CheferLRP in :mod:`~xai_bench.methods.lrp`) is a **0-based
block index**, exactly as in the reference implementation of Chefer et al.
(``compute_rollout_attention(..., start_layer=0)`` starts at the first block), so parameter
values carry over unchanged. The default ``start_layer=1`` is the value of the reference's
evaluation scripts (see docs/definitions.md, 'rollout'): the product starts at the *second*
block (the first block's attention is left out). ``start_layer=0`` uses every block.

Costs (in forward passes): FinAtt and Rollout need one forward without gradients; GradSAM and
GradCAM one forward and one backward to the attention maps only (the backward stops at the
first attention map that is needed: GradCAM's reaches only into the last block).
"""

from __future__ import annotations

import torch

from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import integer
from xai_bench.methods.base import AttributionMethod, token_readout, upsample_token_map
from xai_bench.compute.modes import eval_mode


def attention_maps(model, x):
    """Per-block applied attention (B, heads, N, N) from one forward without gradients."""
    with eval_mode(model), torch.no_grad(), model.record_attention() as maps:
        model(x)
    return list(maps)


def attention_and_gradients(model, x, targets, blocks=None):
    """Per-block attention maps and ``∂y_t/∂A`` (``y_t`` the target logit), from one forward
    and one backward; samples are independent, so the gradient of the batch sum gives every
    sample's own gradients. ``blocks``: indices of the blocks whose gradients are wanted
    (default all; others get ``None``)."""
    x = x.detach().clone().requires_grad_(True)  # keeps a graph even for frozen parameters
    with eval_mode(model), torch.enable_grad(), model.record_attention() as maps:
        logits = model(x)
        maps = list(maps)
        wanted = range(len(maps)) if blocks is None else sorted({b % len(maps) for b in blocks})
        chosen = logits.gather(1, targets[:, None]).sum()
        got = torch.autograd.grad(chosen, [maps[i] for i in wanted])
    grads = [None] * len(maps)
    for i, g in zip(wanted, got):
        grads[i] = g
    return [m.detach() for m in maps], grads


def check_start_layer(start_layer: int, depth: int) -> int:
    """Validate a 0-based ``start_layer`` against the model's depth."""
    if not isinstance(start_layer, int) or not 0 <= start_layer < depth:
        raise ValueError(f"start_layer={start_layer!r} is out of range for a model with {depth} "
                         f"blocks: it is a 0-based block index (0 = first block), "
                         f"0 <= start_layer <= {depth - 1}")
    return start_layer


def rollout_product(mats: list[torch.Tensor], start_layer: int, normalise: bool) -> torch.Tensor:
    """``(M_L + I) ⋯ (M_s + I)`` over blocks ``s = start_layer`` (0-based) to the last one,
    later blocks on the left; each factor row-normalised when ``normalise``. (B, N, N)."""
    used = mats[start_layer:]
    eye = torch.eye(used[0].shape[-1], device=used[0].device, dtype=used[0].dtype)
    joint = None
    for m in used:
        m = m + eye
        if normalise:
            m = m / m.sum(-1, keepdim=True)
        joint = m if joint is None else m @ joint
    return joint


class _AttentionMethod(AttributionMethod):
    kind, requires = "attention", ("attention",)


@method("finatt", kind="attention", class_agnostic=True, requires="attention", cost=1.1,
        place=4, colour="#332288", groups=("paper", "default"))  # Tol indigo
class FinAtt(_AttentionMethod):
    """Final-block attention, mean over heads, read out (mean over query rows, or the CLS row
    of a CLS-pooling model) (class-agnostic)."""

    def attribute(self, model, x, targets):
        last = attention_maps(model, x)[-1].mean(1)
        return upsample_token_map(model, token_readout(last, model))


@method("rollout", kind="attention", class_agnostic=True, requires="attention", cost=1.1,
        place=3, colour="#009E73", groups=("paper", "default"))  # bluish green
class Rollout(_AttentionMethod):
    """Attention rollout (Abnar & Zuidema): product of row-normalised (mean-head attention + I)
    from block ``start_layer`` (0-based, default 1 as in Chefer et al.'s evaluation) to the
    last block, later blocks on the left (class-agnostic)."""

    # the upper bound depends on the model's depth: checked when it runs
    PARAMETER_CHECKS = {"start_layer": integer(0)}

    def __init__(self, start_layer: int = 1):
        super().__init__(start_layer=start_layer)

    def attribute(self, model, x, targets):
        maps = attention_maps(model, x)
        start = check_start_layer(self.params["start_layer"], len(maps))
        joint = rollout_product([a.mean(1) for a in maps], start, normalise=True)
        return upsample_token_map(model, token_readout(joint, model))


@method("gradsam", kind="attention", requires="attention", place=5,
        colour="#E69F00", groups=("paper", "default"))  # orange
class GradSAM(_AttentionMethod):
    """GradSAM: mean over blocks and heads of A ⊙ ReLU(∂y_t/∂A) (ReLU on the gradient only),
    read out (mean over query rows, or the CLS row of a CLS-pooling model)."""

    def attribute(self, model, x, targets):
        maps, grads = attention_and_gradients(model, x, targets)
        total = sum((a * g.clamp(min=0)).mean(1) for a, g in zip(maps, grads)) / len(maps)
        return upsample_token_map(model, token_readout(total, model))


@method("gradcam", kind="attention", requires="attention", place=6,
        colour="#F0E442", groups=("paper", "default"))  # yellow
class GradCAM(_AttentionMethod):
    """GradCAM adapted to ViTs (Chefer et al.): last block, heads as channels; weight per head
    = mean of ∂y_t/∂A_h over the readout (query rows, or the CLS row) and the patch-token
    columns, activation per head = readout of A_h, map = ReLU(mean_h w_h · a_h)."""

    def attribute(self, model, x, targets):
        maps, grads = attention_and_gradients(model, x, targets, blocks=[-1])
        a = token_readout(maps[-1], model)                   # (B, heads, N_patch)
        w = token_readout(grads[-1], model).mean(-1, keepdim=True)  # (B, heads, 1)
        return upsample_token_map(model, (w * a).mean(1).clamp(min=0))
