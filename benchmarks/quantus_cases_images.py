"""The cases of benchmarks/metrics_vs_quantus.py scored on RGB images: xai-bench's sparseness,
complexity, faithfulness_correlation and road against Quantus 0.6.0's Sparseness, Complexity,
FaithfulnessCorrelation and ROAD, with the same work asked of both sides:

- sparseness, complexity: the maps given, Quantus's defaults (normalise, abs);
- faithfulness_correlation: Quantus's defaults (100 runs of 224 features, 'black' baseline,
  target logit) on the RGB image — Quantus is given the model behind an encoding wrapper —
  forwarded 32 copies at a time on both sides; each side draws its own subsets (ours
  included in its time);
- road: most relevant first only (all Quantus computes), Quantus's 50 percentages 1..99 and
  noise 0.01, one forward batch per 32 copies. Quantus 0.6.0's ROAD fails on RGB images (it
  indexes the (C, H*W) image with C*H*W-feature indices), so both sides score the grey
  version of the images (the channel mean), which the wrapper replicates to RGB and encodes.
  The metric itself does both orders, twice this work.
"""

from __future__ import annotations

from torch import nn

from xai_bench.metrics.quantus_adapter import ensure_quantus


class OnImages(nn.Module):
    """The model called on the image (what Quantus is given, so that it perturbs the image)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(self.model.encode(images))


class Grey(nn.Module):
    """The model on one-channel images, replicated to RGB by ``encode``."""

    def __init__(self, model):
        super().__init__()
        self.model, self.training_loss = model, model.training_loss

    def encode(self, grey):
        return self.model.encode(grey.expand(-1, 3, -1, -1))

    def forward(self, x):
        return self.model(x)

    def confidence(self, logits):
        return self.model.confidence(logits)


def cases(s: dict) -> list:
    """``[(name, ours, quantus), ...]``: callables doing each metric on all images of the
    shared setup ``s`` (benchmarks/metrics_vs_quantus.py: ``setup``)."""
    from xai_bench.metrics import faithfulness as F
    from xai_bench.metrics.complexity import complexity, sparseness

    q = ensure_quantus()
    model, images, targets, maps = s["model"], s["images"], s["targets"], s["maps"]
    b = len(images)
    xn, yn, an = images.numpy(), targets.numpy(), maps[:, None].numpy()
    on_images = OnImages(model).eval()
    grey = images.mean(dim=1, keepdim=True)
    grey_model = Grey(model).eval()
    quiet = dict(disable_warnings=True, return_aggregate=False)

    def ours_sparseness():
        return sparseness(model, images, targets, maps)

    def quantus_sparseness():
        return q.Sparseness(**quiet)(model=None, x_batch=xn, y_batch=yn, a_batch=an.copy(),
                                     batch_size=b)

    def ours_complexity():
        return complexity(model, images, targets, maps)

    def quantus_complexity():
        return q.Complexity(**quiet)(model=None, x_batch=xn, y_batch=yn, a_batch=an.copy(),
                                     batch_size=b)

    def ours_faithfulness():
        subsets = F.draw_subsets(images, 100, 224, seed=0)
        return F.faithfulness_correlation(model, images, maps, targets, subsets, batch_size=b)

    def quantus_faithfulness():
        return q.FaithfulnessCorrelation(nr_runs=100, subset_size=224, **quiet)(
            model=on_images, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True,
            device="cpu", batch_size=b)

    def ours_road():
        return F.road_curves(grey_model, grey, maps, targets, noise=0.01, seed=0,
                             orders=("most_first",), batch_size=b)

    def quantus_road():
        return q.ROAD(noise=0.01, disable_warnings=True)(
            model=OnImages(grey_model).eval(), x_batch=grey.numpy(), y_batch=yn, a_batch=an,
            channel_first=True, device="cpu", batch_size=b)

    return [("sparseness", ours_sparseness, quantus_sparseness),
            ("complexity", ours_complexity, quantus_complexity),
            ("faithfulness_correlation", ours_faithfulness, quantus_faithfulness),
            ("road", ours_road, quantus_road)]
