"""GAE: the generic attention-model explanation of Chefer, Gur & Wolf (2021b), for
self-attention ViTs (see docs/definitions.md, 'gae').

Per block ``l`` (in order), with ``A_l`` the applied attention probabilities
``(B, heads, N, N)`` and ``∇A_l = ∂y_t/∂A_l`` (``y_t`` the target logit)::

    Ā_l = mean_h (∇A_l ⊙ A_l)⁺          (ReLU of the product, then the mean over heads)
    R_l = R_{l-1} + Ā_l R_{l-1},   R_0 = I

so ``R = (I + Ā_L)⋯(I + Ā_1)`` over all tokens, without any normalisation, from every block
(the reference has no ``start_layer``). The map is the readout of ``R``
(:func:`~xai_bench.methods.base.token_readout`): the CLS row without the prefix columns for a
CLS-pooling model (timm ViTs), exactly the reference's ``R[0, 1:]``; the mean over query rows
for our mean-pooling models (no CLS token).

The identity: GAE has CheferLRP's structure (:mod:`xai_bench.methods.lrp`, whose docstring
explains the problem), with ``∇A ⊙ A`` in place of ``∇A ⊙ R_A``. With the mean readout the
identity adds the constant ``1/N`` to every token, next to which the class-specific part can be
small; so by default we read out ``R - I`` (accumulated without cancellation by
:func:`~xai_bench.methods.lrp.relevance_paths`), the same map up to that per-image constant
(identical rankings). ``include_identity=True`` reads out the literal ``R``. With the CLS
readout the identity's only contribution (CLS → CLS) lies in a dropped column: both settings
give the reference's map exactly.

Cost: one forward and one backward to the attention maps (the backward stops at the first
block's attention), and ``L`` products of ``N × N`` matrices per image.
"""

from __future__ import annotations

import torch

from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import boolean
from xai_bench.methods.attention import attention_and_gradients
from xai_bench.methods.base import AttributionMethod, token_readout, upsample_token_map
from xai_bench.methods.lrp import relevance_paths


def gae_block_matrices(maps: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """``Ā_l = mean_h ReLU(∇A_l ⊙ A_l)`` for every block: a list of (B, N, N)."""
    return [(g * a).clamp(min=0).mean(1) for a, g in zip(maps, grads)]


@method("gae", kind="attention", requires="attention", cost=2.1, place=10,
        colour="#AA4499")  # Tol purple
class GAE(AttributionMethod):
    """Chefer, Gur & Wolf's generic attention explainability: ``R = (I + Ā_L)⋯(I + Ā_1)``
    with ``Ā_l = mean_h (∇A_l ⊙ A_l)⁺`` over every block, read out (CLS row without the prefix
    columns, or the mean over query rows); the identity's direct path is left out unless
    ``include_identity`` (module doc)."""

    kind, requires = "attention", ("attention",)
    PARAMETER_CHECKS = {"include_identity": boolean()}

    def __init__(self, include_identity: bool = False):
        super().__init__(include_identity=include_identity)

    def attribute(self, model, x, targets):
        maps, grads = attention_and_gradients(model, x, targets)
        tokens = token_readout(relevance_paths(gae_block_matrices(maps, grads)), model)
        if self.params["include_identity"]:
            n = maps[0].shape[-1]
            eye = torch.eye(n, device=tokens.device, dtype=tokens.dtype)
            tokens = tokens + token_readout(eye, model)  # 1/N per token, or 0 (CLS readout)
        return upsample_token_map(model, tokens)
