"""Gradient-based methods: the model-inherent contribution maps of B-cos models, Input×Gradient
and Integrated Gradients (the latter two through captum, :mod:`xai_bench.methods.captum_adapter`). All sum the per-channel attributions
and take gradients of the target *logit*.

Shared conventions of every method in this package (see :func:`xai_bench.compute.modes.eval_mode`):

- the model is explained in eval mode (no batch-norm statistics updates, no dropout, so a
  batched call equals the per-image calls); each module's train/eval flag is restored after;
- parameters' ``requires_grad`` flags are never touched and no ``.grad`` is accumulated on
  them: gradients are taken with :func:`torch.autograd.grad` w.r.t. the input or the attention
  maps only (autograd then skips the parameter gradients altogether).
"""

from __future__ import annotations

import torch

from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import integer, number, one_of, or_none
from xai_bench.methods.base import AttributionMethod
from xai_bench.methods.captum_adapter import CHUNK_CHECK, IG_RULES, CaptumMethod
from xai_bench.methods.input_baselines import BASELINE_CHECK
from xai_bench.compute.modes import eval_mode


def input_gradient(model, x, targets):
    """``∂ y_t / ∂ x`` per sample (the samples are independent, so the gradient of the batch
    sum of the target logits gives every sample's own gradient), from one forward and one
    backward."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        chosen = logits.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(chosen, x)
    return grad


@method("inherent", kind="model-inherent", requires="dynamic_linear", place=0,
        colour="#D55E00", groups=("paper", "default"))  # vermillion
class Inherent(AttributionMethod):
    """Model-inherent B-cos contribution maps: W(x) ⊙ x summed over channels (explanation
    mode; sums to ``logit - logit_bias`` for a dynamic-linear model)."""

    def attribute(self, model, x, targets):
        # In explanation mode the gradient of logit c w.r.t. x *is* row c of W(x).
        with eval_mode(model), model.explanation_mode():
            weights = input_gradient(model, x, targets)
        return (weights * x).sum(1)


@method("ixg", kind="gradient", place=1, colour="#0072B2",  # blue
        groups=("paper", "default", "captum"))
class InputXGradient(CaptumMethod):
    """Input × Gradient (captum ``InputXGradient``) of the target logit, plain gradients
    (never explanation mode), summed over channels."""

    CAPTUM = "InputXGradient"

    def __init__(self):
        super().__init__()


@method("intgrad", kind="gradient", cost=120.0, place=2, colour="#56B4E9",  # sky blue
        groups=("paper", "default", "captum"))
class IntegratedGradients(CaptumMethod):
    """Integrated Gradients (captum) of the target logit: ``n_steps`` Gauss–Legendre steps
    from ``baseline`` (default the all-zero model input; ``blurred``, ``uniform`` noise or a
    grey level: :mod:`xai_bench.methods.input_baselines`) in the model's input space, summed
    over channels.

    ``chunk_size`` bounds memory: it is captum's ``internal_batch_size``, the number of
    interpolated inputs (images × steps) per forward/backward pass, an upper bound that the
    device's free memory may lower (:meth:`CaptumMethod.chunk_for`, from the measured
    forward+backward activation size per input). Below the batch size the images are split
    into groups of ``chunk`` images. ``"auto"`` (default): on the CPU 64 interpolated inputs
    for inputs of up to 64×64 pixels — the fastest per image for the nano models (32-512
    tried: larger chunks fall out of cache) — and 16 above (a B-cos ViT-B at 224² keeps ~350
    MB per input for its backward pass, so 64 inputs ran out of 23 GB), raised to the batch
    size; on a GPU all ``batch × n_steps`` inputs, as many of them as fit in half the free
    memory. An out-of-memory error halves the chunk and redoes the call. The chunking changes
    the maps only at float rounding (captum sums the steps chunk by chunk)."""

    #: captum's integration rules
    RULES = IG_RULES
    CAPTUM = "IntegratedGradients"
    ATTRIBUTE_ARGS = ("n_steps", "method", "baselines", "internal_batch_size")
    CHUNK_PARAM = "chunk_size"
    PARAMETER_CHECKS = {"n_steps": integer(1), "method": one_of(*RULES),
                        "chunk_size": CHUNK_CHECK,
                        "baseline": BASELINE_CHECK, "blur_sigma": or_none(number(above=0)),
                        "seed": integer()}

    def __init__(self, n_steps: int = 50, method: str = "gausslegendre",
                 chunk_size: int | str = "auto", baseline: str | float = "zeros",
                 blur_sigma: float | None = None, seed: int = 0):
        super().__init__(n_steps=n_steps, method=method, chunk_size=chunk_size,
                         baseline=baseline, blur_sigma=blur_sigma, seed=seed)

    def natural_items(self, x):
        return x.shape[0] * self.params["n_steps"]
