"""Gradient-based methods: the model-inherent contribution maps of B-cos models, Input×Gradient
and Integrated Gradients (the latter two through captum). All sum the per-channel attributions
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
from xai_bench.contracts.parameters import integer, one_of, or_literal
from xai_bench.methods.base import AttributionMethod
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
        colour="#D55E00")  # vermillion
class Inherent(AttributionMethod):
    """Model-inherent B-cos contribution maps: W(x) ⊙ x summed over channels (explanation
    mode; sums to ``logit - logit_bias`` for a dynamic-linear model)."""

    def attribute(self, model, x, targets):
        # In explanation mode the gradient of logit c w.r.t. x *is* row c of W(x).
        with eval_mode(model), model.explanation_mode():
            weights = input_gradient(model, x, targets)
        return (weights * x).sum(1)


@method("ixg", kind="gradient", place=1, colour="#0072B2")  # blue
class InputXGradient(AttributionMethod):
    """Input × Gradient (captum ``InputXGradient``) of the target logit, plain gradients
    (never explanation mode), summed over channels."""

    def attribute(self, model, x, targets):
        from captum.attr import InputXGradient as CaptumIxG

        with eval_mode(model), torch.enable_grad():
            attr = CaptumIxG(model).attribute(x.clone().requires_grad_(True), target=targets)
        return attr.sum(1)


@method("intgrad", kind="gradient", cost=120.0, place=2, colour="#56B4E9")  # sky blue
class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (captum) of the target logit: ``n_steps`` Gauss–Legendre steps
    from a zero baseline in the model's input space, summed over channels.

    ``chunk_size`` bounds memory: it is captum's ``internal_batch_size``, the number of
    interpolated inputs (images × steps) per forward/backward pass, an upper bound that the
    device's free memory may lower (:func:`xai_bench.compute.chunking.chunk_size`, from the measured
    forward+backward activation size per input). At or above the batch size every pass holds
    at least one step of every image (captum's own minimum); below it (little memory) the
    images are split into groups of ``chunk`` images, one step per pass. ``"auto"``
    (default): on the CPU 64 interpolated inputs for inputs of up to 64×64 pixels — the
    fastest per image for the nano models (32-512 tried: larger chunks fall out of cache) —
    and 16 above (a B-cos ViT-B at 224² keeps ~350 MB per input for its backward pass, so 64
    inputs ran out of 23 GB); on a GPU all ``batch × n_steps`` inputs, as many of them as fit
    in half the free memory. An out-of-memory error halves the chunk and redoes the call
    (:func:`xai_bench.compute.chunking.retry_halving`; later calls start at the smaller size). The
    chunking changes the maps only at float rounding (captum sums the steps chunk by
    chunk)."""


    #: captum's integration rules
    RULES = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
             "riemann_trapezoid")
    PARAMETER_CHECKS = {"n_steps": integer(1), "method": one_of(*RULES),
                        "chunk_size": or_literal(integer(1), "auto")}

    def __init__(self, n_steps: int = 50, method: str = "gausslegendre",
                 chunk_size: int | str = "auto"):
        if chunk_size != "auto" and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1 or 'auto', got {chunk_size}")
        super().__init__(n_steps=int(n_steps), method=method,
                         chunk_size=chunk_size if chunk_size == "auto" else int(chunk_size))

    def chunk_for(self, x: torch.Tensor, model=None) -> int:
        """Interpolated inputs per pass for the batch ``x``: the configured (or ``"auto"``)
        size, raised to the batch size; with ``model``, lowered to what the free memory of
        ``x``'s device holds (possibly below the batch size, never below 1)."""
        chunk = self.params["chunk_size"]
        if chunk == "auto":
            if x.device.type == "cpu":
                chunk = 64 if x.shape[-2] * x.shape[-1] <= 64 * 64 else 16
            else:
                chunk = x.shape[0] * self.params["n_steps"]
        chunk = max(chunk, x.shape[0])
        if model is not None:
            from xai_bench.compute.chunking import chunk_size

            chunk = chunk_size(model, x, x.device, with_grad=True, requested=chunk)
        return chunk

    def _captum(self, model, x, targets, internal_batch_size: int):
        from captum.attr import IntegratedGradients as CaptumIG

        p = self.params
        return CaptumIG(model).attribute(
            x.clone(), baselines=torch.zeros_like(x), target=targets, n_steps=p["n_steps"],
            method=p["method"], internal_batch_size=internal_batch_size)

    def attribute(self, model, x, targets):
        from xai_bench.compute.chunking import remember_limit, retry_halving

        bsz = x.shape[0]

        def run(chunk: int) -> torch.Tensor:
            if chunk >= bsz:
                return self._captum(model, x, targets, chunk)
            # fewer inputs per pass than images: groups of `chunk` images, one step per pass
            return torch.cat([self._captum(model, x[s:s + chunk], targets[s:s + chunk], chunk)
                              for s in range(0, bsz, chunk)])

        with eval_mode(model), torch.enable_grad():
            attr = retry_halving(
                run, self.chunk_for(x, model), device=x.device,
                what="intgrad's interpolated inputs",
                on_oom=lambda c: remember_limit(model, x, with_grad=True, chunk=c))
        return attr.sum(1)
