"""The B-cos colour image of a contribution (Böhle et al.): what the cells' galleries keep
and the explain figure draws.

Per pixel ``rgb = W[:3] / (W[:3] + W[3:])`` after clamping the 6-channel weights ``W`` of the
``[x, 1-x]`` encoding at 0, opacity from ``‖W‖`` scaled by its 99.5th percentile, shown only
where the contribution ``Σ W ⊙ x`` is positive.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["bcos_colour_image", "dynamic_weights", "has_colour_image"]


def has_colour_image(model) -> bool:
    """Whether ``model`` has a colour image: a dynamic-linear model whose input is the
    ``rgb_inverse`` encoding (so the weights of a pixel's colour and its inverse exist)."""
    from xai_bench.contracts.model import is_dynamic_linear, model_attr

    return is_dynamic_linear(model) and model_attr(model, "encoding") == "rgb_inverse"


def bcos_colour_image(weights: torch.Tensor, x: torch.Tensor,
                      percentile: float = 99.5) -> np.ndarray:
    """RGBA (H, W, 4) image of the dynamic weights ``W`` (6, H, W) of one input ``x``."""
    contribution = (weights * x).sum(0)
    w = weights.clamp(min=0)
    rgb = w[:3] / (w[:3] + w[3:] + 1e-12)
    norm = weights.norm(dim=0)
    scale = float(np.percentile(norm.flatten().cpu().numpy(), percentile)) or 1.0
    alpha = (norm / scale).clamp(max=1) * (contribution > 0)
    return torch.cat([rgb, alpha[None]]).permute(1, 2, 0).detach().cpu().numpy()


def dynamic_weights(model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rows ``W_c(x)`` of a B-cos model (gradient in explanation mode), shape like ``x``."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad(), model.explanation_mode():
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
    return grad
