"""Time xai-bench's sparseness, complexity, faithfulness_correlation and road against Quantus
0.6.0's Sparseness, Complexity, FaithfulnessCorrelation and ROAD on one fixed setup.

Usage::

    python benchmarks/native_vs_quantus_1.py              # median of 3, one thread
    python benchmarks/native_vs_quantus_1.py --repeats 5 --only road

Setup (shared by both sides): the shipped nano B-cos ViT (32×32 inputs, 6-channel encoding),
the 32 most confidently and correctly classified images of the embedded shapes test split, and
their ``ixg`` maps. Every callable computes its whole metric on all 32 images, with the same
work asked of both sides:

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

Prints seconds per image for each side and the ratio Quantus / ours (> 1: ours is faster).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import xai_bench

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import OneLineParser, at_least, one_line_errors  # noqa: E402

N_IMAGES = 32


def _quantus():
    if not hasattr(np, "trapz"):  # Quantus 0.6.0 calls np.trapz, gone in numpy >= 2.4
        np.trapz = np.trapezoid
    import quantus
    return quantus


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


def setup(method_name: str = "ixg") -> dict:
    """The shipped nano B-cos model, its 32 most confident correct test images (RGB), their
    labels and maps."""
    from xai_bench.data import SyntheticShapes
    from xai_bench.loading import load_model_from_checkpoint
    from xai_bench.metrics.common import select_confident
    from xai_bench.training.shipped import SHIPPED_DIR, read_manifest

    entry = read_manifest()["bcos_vit_nano"]
    model = load_model_from_checkpoint(SHIPPED_DIR / entry["file"]).eval()
    data = SyntheticShapes("test", n=200, seed=0)
    selection = select_confident(model, data, N_IMAGES, batch_size=N_IMAGES)
    images, targets = selection.images, selection.labels
    maps = xai_bench.get_method(method_name)(model, model.encode(images), targets).detach()
    return dict(model=model, images=images, targets=targets, maps=maps)


def cases(s: dict | None = None) -> list:
    """``[(name, ours, quantus), ...]``: callables doing each metric on all images of the
    shared setup ``s`` (built when not given)."""
    from xai_bench.metrics import faithfulness as F
    from xai_bench.metrics.complexity import complexity, sparseness

    q = _quantus()
    s = s or setup()
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


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@one_line_errors
def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=at_least(1), default=3)
    parser.add_argument("--only", default="", help="comma list of case names")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    s = setup()
    wanted = {w for w in args.only.split(",") if w}
    print(f"{'metric':<25} {'ours s/img':>11} {'quantus s/img':>14} {'quantus/ours':>13}")
    for name, ours, theirs in cases(s):
        if wanted and name not in wanted:
            continue
        a = _median_seconds(ours, args.repeats) / len(s["images"])
        b = _median_seconds(theirs, args.repeats) / len(s["images"])
        print(f"{name:<25} {a:>11.5f} {b:>14.5f} {b / a:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
