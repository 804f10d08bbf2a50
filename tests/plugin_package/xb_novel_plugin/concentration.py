"""A metric of a category the harness has never seen: how concentrated a map is."""

import xai_bench


@xai_bench.metric(higher_is_better=True, category="concentration",
                  label="share of |attribution|\nin the top pixels", unit="images")
def top_share(model, x, targets, maps, *, top=0.1):
    """Share of the absolute attribution that falls on the top fraction of the pixels."""
    flat = maps.abs().flatten(1)
    k = max(1, int(top * flat.shape[1]))
    return flat.topk(k, dim=1).values.sum(1) / flat.sum(1).clamp_min(1e-12)
