"""A method: the input's edge energy (a plain function with its declarations)."""

import xai_bench


@xai_bench.method(kind="edge", class_agnostic=True, cost=0.2)
def edge_energy(model, x, targets, *, power=1.0):
    """Edge energy of the input: summed absolute differences to the right and lower pixel."""
    dx = x.diff(dim=-1, append=x[..., -1:]).abs()
    dy = x.diff(dim=-2, append=x[..., -1:, :]).abs()
    return (dx + dy).sum(1) ** power
