"""LRP-based methods for the conventional ViT (Chefer et al. 2021): CheferLRP (gradient-weighted
relevance rollout, "transformer attribution") and partial LRP (last block's attention
relevance). Both need a model with ``lrp_recording()`` and ``relprop`` (the conventional twin);
the relevance rules live in :mod:`xai_bench.models.lrp`.

``start_layer`` is a 0-based block index, as in the reference code and for rollout (see
:mod:`xai_bench.methods.attention`); the default 1 leaves out the first block.

CheferLRP and the identity. The reference reads the CLS row of ``C = (I + Ā_L)⋯(I + Ā_s)`` and
drops the CLS column, which is where the identity's direct path (CLS → CLS) lands, so its maps
hold only the gradient-weighted relevance paths. With our mean readout (no CLS token, no
column dropped) the identity adds ``1/N`` to every token, while the ``Ā`` entries are tiny
(``R_A`` shares a unit of relevance among heads × N² entries): the literal readout of ``C``
is a near-constant map whose class-specific part is 1e-7 to 1e-5 of it (measured on the nano
ViT, trained or not), at or below float32 resolution, and every positive-mass metric (the grid
pointing game) would score it as uniform. (The maps' absolute scale is accordingly tiny,
~1e-9 to 1e-7: metrics must not use absolute thresholds.)
So by default we read out ``C - I`` (computed without cancellation as
``D ← Ā_l + D + Ā_l D``), the analogue of dropping the readout token's own column: the same
map up to the per-image constant ``1/N`` (identical rankings). ``include_identity=True`` gives
the literal ``readout(C)``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from xai_bench.methods.attention import check_start_layer
from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import integer, one_of
from xai_bench.methods.base import AttributionMethod, token_readout, upsample_token_map
from xai_bench.models.lrp import RULES, check_rules
from xai_bench.compute.modes import eval_mode


class _StopRelevance(Exception):
    """Raised to end a relevance pass once every wanted block has its attention relevance."""


def _shadow(obj, name, replacement, stack: contextlib.ExitStack) -> None:
    """Set ``obj.<name>`` on the instance for the duration of ``stack``."""
    missing = object()
    previous = obj.__dict__.get(name, missing)
    object.__setattr__(obj, name, replacement)

    def restore():
        if previous is missing:
            del obj.__dict__[name]
        else:
            object.__setattr__(obj, name, previous)

    stack.callback(restore)


@contextlib.contextmanager
def _relprop_stops_below(model, lowest: int):
    """While active, ``model.relprop`` ends (raising :class:`_StopRelevance`) once the block
    ``lowest`` has its attention relevance: what the pass computes further down is not
    needed.

    Only speed depends on this: it shadows, on the instances, the ``relprop`` of the block
    below ``lowest`` and the ``relprop`` of block ``lowest``'s ``attn.qkv`` (the layer below
    its attention matrix, which stops only if ``attn.attention_relevance`` is already set),
    so a model whose ``relprop`` does not go through them simply runs to the end (same
    result, full cost). The shadowing is undone on exit. With ``lowest`` 0 (every block) the
    pass runs to the end: ``model.relprop`` returns the token relevance."""
    if lowest <= 0:
        yield
        return

    def stop(*args, **kwargs):
        raise _StopRelevance

    with contextlib.ExitStack() as stack:
        if hasattr(model.blocks[lowest - 1], "relprop"):
            _shadow(model.blocks[lowest - 1], "relprop", stop, stack)
        attn = getattr(model.blocks[lowest], "attn", None)
        qkv = getattr(attn, "qkv", None)
        if qkv is not None and hasattr(qkv, "relprop"):
            qkv_relprop = qkv.relprop

            def qkv_or_stop(*args, **kwargs):
                if getattr(attn, "attention_relevance", None) is not None:
                    raise _StopRelevance
                return qkv_relprop(*args, **kwargs)

            _shadow(qkv, "relprop", qkv_or_stop, stack)
        yield


def attention_relevance(model, x, targets, with_gradients: bool, blocks=None,
                        rules: str = "chefer"):
    """One forward (recording the attention maps and what LRP needs), optionally one backward
    to the attention maps of ``blocks``, and one relevance pass from the one-hot targets
    (α=1, β=0, relevance rules ``rules``: :mod:`xai_bench.models.lrp`) that stops below the
    lowest block in ``blocks`` (default: every block).

    Returns ``(R_A, ∂y_t/∂A)``: lists over all blocks of (B, heads, N, N) tensors, ``None``
    for blocks not in ``blocks`` (and every gradient without ``with_gradients``)."""
    depth = len(model.blocks)
    wanted = sorted({b % depth for b in (range(depth) if blocks is None else blocks)})
    x = x.detach().clone().requires_grad_(with_gradients)
    with eval_mode(model):
        with torch.set_grad_enabled(with_gradients), model.record_attention() as maps, \
                model.lrp_recording():
            logits = model(x)
            maps = list(maps)
            grads = [None] * depth
            if with_gradients:
                got = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(),
                                          [maps[i] for i in wanted])
                for i, g in zip(wanted, got):
                    grads[i] = g
            onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
            del logits, maps  # free the graph before the relevance pass
            for blk in model.blocks:
                blk.attn.attention_relevance = None
            with torch.no_grad(), _relprop_stops_below(model, wanted[0]):
                try:
                    model.relprop(onehot, alpha=1.0, rules=rules)
                except _StopRelevance:
                    pass
        relevances = [None] * depth
        for i, blk in enumerate(model.blocks):
            if i in wanted:
                relevances[i] = blk.attn.attention_relevance
            blk.attn.attention_relevance = None  # do not keep batch-sized tensors on the model
    return relevances, grads


class _LRPMethod(AttributionMethod):
    kind, requires = "lrp", ("lrp",)


def relevance_paths(mats: list[torch.Tensor]) -> torch.Tensor:
    """``(I + M_L)⋯(I + M_1) - I`` for ``mats = [M_1, …, M_L]`` (later blocks on the left),
    accumulated as ``D ← M_l + D + M_l D`` so that small ``M`` lose no precision next to I."""
    paths = mats[0]
    for m in mats[1:]:
        paths = m + paths + m @ paths
    return paths


@method("chefer_lrp", kind="lrp", requires="lrp", cost=4.5, place=7,
        colour="#CC79A7", groups=("paper", "default"))  # reddish purple
class CheferLRP(_LRPMethod):
    """Chefer et al.'s transformer attribution: (I + Ā_L)⋯(I + Ā_s) without row normalisation,
    Ā = mean_h((∇A ⊙ R_A)⁺), from block ``start_layer`` (0-based, default 1), mean over query
    rows; the identity's direct path is left out unless ``include_identity`` (module doc)."""

    # the upper bound depends on the model's depth: checked when it runs
    PARAMETER_CHECKS = {"start_layer": integer(0)}

    def __init__(self, start_layer: int = 1, include_identity: bool = False):
        super().__init__(start_layer=start_layer, include_identity=bool(include_identity))

    def attribute(self, model, x, targets):
        start = check_start_layer(self.params["start_layer"], len(model.blocks))
        relevances, grads = attention_relevance(
            model, x, targets, with_gradients=True, blocks=range(start, len(model.blocks)))
        mats = [(g * r).clamp(min=0).mean(1)
                for g, r in zip(grads[start:], relevances[start:])]
        tokens = token_readout(relevance_paths(mats), model)
        if self.params["include_identity"]:
            tokens = tokens + 1.0 / tokens.shape[-1]  # readout of I: 1/N for every token
        return upsample_token_map(model, tokens)


@method("plrp", kind="lrp", requires="lrp", cost=2.2, place=8, colour="#882255",
        groups=("paper", "default"))  # Tol wine
class PartialLRP(_LRPMethod):
    """Partial LRP (Voita et al., as in Chefer et al.): the last block's attention relevance,
    clamped at 0, mean over heads, read out like the other token maps.

    ``rules="lrp"`` (default) propagates with the original LRP rules, as Chefer et al.'s
    partial-LRP baseline does: separately normalised α-β paths and
    plain LRP-0 residuals; ``rules="chefer"`` uses the rules of their own method (earlier
    versions of ``plrp``). See :mod:`xai_bench.models.lrp`."""

    PARAMETER_CHECKS = {"rules": one_of(*RULES)}

    def __init__(self, rules: str = "lrp"):
        super().__init__(rules=check_rules(rules))

    def attribute(self, model, x, targets):
        relevances, _ = attention_relevance(model, x, targets, with_gradients=False, blocks=[-1],
                                            rules=self.params["rules"])
        last = relevances[-1].clamp(min=0).mean(1)
        return upsample_token_map(model, token_readout(last, model))
