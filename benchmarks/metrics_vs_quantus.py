"""Time xai-bench's native metrics against Quantus 0.6.0 (and captum) on one fixed setup,
side by side: seconds per image for each and the ratio Quantus / ours (> 1: ours is faster).

Usage::

    python benchmarks/metrics_vs_quantus.py                  # median of 3, one thread
    python benchmarks/metrics_vs_quantus.py --repeats 5 --only road,smooth_mprt

Setup (shared by every case): the shipped nano B-cos ViT (32×32 inputs, 6-channel encoding),
the 32 most confidently and correctly classified images of the embedded shapes test split,
and their ``ixg`` maps. The cases and what each side is asked to do are in
benchmarks/quantus_cases_images.py (sparseness, complexity, faithfulness_correlation, road:
scored on RGB images) and benchmarks/quantus_cases_inputs.py (infidelity, max_sensitivity,
efficient_mprt, smooth_mprt: scored on the encoded inputs). Timings depend on the machine's
load: run it on an idle machine and compare ratios, not seconds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

import xai_bench

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import OneLineParser, at_least, one_line_errors  # noqa: E402
import quantus_cases_images  # noqa: E402
import quantus_cases_inputs  # noqa: E402

N_IMAGES = 32


def setup(method_name: str = "ixg") -> dict:
    """The shipped nano B-cos model, its 32 most confident correct test images (RGB
    ``images`` and encoded ``x``), their labels, the method, its maps, and the fully
    randomised copy of the model the MPRT cases compare with."""
    from xai_bench.data import SyntheticShapes
    from xai_bench.loading import load_model_from_checkpoint
    from xai_bench.metrics.common import select_confident
    from xai_bench.metrics.randomisation import fully_randomised
    from xai_bench.training.shipped import SHIPPED_DIR, read_manifest

    entry = read_manifest()["bcos_vit_nano"]
    model = load_model_from_checkpoint(SHIPPED_DIR / entry["file"]).eval()
    data = SyntheticShapes("test", n=200, seed=0)
    selection = select_confident(model, data, N_IMAGES, batch_size=N_IMAGES)
    images, targets = selection.images, selection.labels
    x = model.encode(images)
    method = xai_bench.get_method(method_name)
    maps = method(model, x, targets).detach()
    return dict(model=model, images=images, x=x, targets=targets, method=method, maps=maps,
                randomised=fully_randomised(model, x[:1], 0))


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@one_line_errors
def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=at_least(1), default=3)
    parser.add_argument("--only", default="", help="comma list of metric names")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    s = setup()
    wanted = {w for w in args.only.split(",") if w}
    cases = quantus_cases_images.cases(s) + quantus_cases_inputs.cases(s)
    unknown = wanted - {name for name, _, _ in cases}
    if unknown:
        parser.error(f"--only names no case: {', '.join(sorted(unknown))}")
    n = len(s["images"])
    print(f"{'metric':<25} {'ours s/img':>11} {'quantus s/img':>14} {'quantus/ours':>13}")
    for name, ours, theirs in cases:
        if wanted and name not in wanted:
            continue
        a = median_seconds(ours, args.repeats) / n
        b = median_seconds(theirs, args.repeats) / n
        print(f"{name:<25} {a:>11.5f} {b:>14.5f} {b / a:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
