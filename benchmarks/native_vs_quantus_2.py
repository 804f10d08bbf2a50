"""Time xai-bench's infidelity, max_sensitivity, efficient_mprt and smooth_mprt against Quantus
0.6.0's Infidelity, MaxSensitivity, EfficientMPRT and SmoothMPRT on one fixed setup.

Usage::

    python benchmarks/native_vs_quantus_2.py              # median of 3, one thread
    python benchmarks/native_vs_quantus_2.py --repeats 5

Setup (shared by both sides): the shipped nano B-cos ViT (32×32 inputs, 6-channel encoding),
the 32 most confidently and correctly classified images of the embedded shapes test split, and
their ``ixg`` maps. Every callable computes its whole metric on all 32 images in one batch of
32, with the same amount of work asked of both sides:

- infidelity: 10 Gaussian perturbations per image (Quantus: one patch covering the image and a
  Gaussian perturbation function, as in tests/test_robustness_metrics.py); maps given;
- max_sensitivity: 10 uniform perturbations of radius 0.02, the method re-explaining them
  (Quantus: its own uniform noise, ``nr_samples=10``); maps given;
- efficient_mprt: maps of the trained and of the fully randomised model (Quantus randomises
  with its own ``reset_parameters()`` cascade, ``skip_layers=True``: one comparison at the
  end, as ours);
- smooth_mprt: 50 samples (49 noisy + the input) for the trained and the randomised model
  (Quantus: ``skip_layers=True, return_last_correlation=True``; it smooths the trained
  model's maps twice — once for ``a_batch``, once for its first layer — so it explains 3×50
  batches where we explain 2×50; in a run ours saves one more, the clean map of the trained
  model coming from the shared map cache).

Quantus's explanations go through the same xai-bench method (``explain_func``; SmoothMPRT
calls ``quantus.explain`` directly, which is pointed at the method for the call). Prints
seconds per image for each side and the ratio Quantus / ours (> 1: ours is faster).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xai_bench

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import OneLineParser, at_least, one_line_errors  # noqa: E402

N_IMAGES = 32
N_PERTURB = 10
NR_SAMPLES = 50


def _quantus():
    if not hasattr(np, "trapz"):  # Quantus 0.6.0 calls np.trapz, gone in numpy >= 2.4
        np.trapz = np.trapezoid
    import quantus
    return quantus


def setup(method_name: str = "ixg") -> dict:
    """The shipped nano B-cos model, its 32 most confident correct test images (encoded),
    their labels and maps, the metrics' prepared selections."""
    from xai_bench.data import SyntheticShapes
    from xai_bench.loading import load_model_from_checkpoint
    from xai_bench.metrics.common import select_confident
    from xai_bench.metrics.randomisation import fully_randomised
    from xai_bench.training.shipped import SHIPPED_DIR, read_manifest

    entry = read_manifest()["bcos_vit_nano"]
    model = load_model_from_checkpoint(SHIPPED_DIR / entry["file"]).eval()
    data = SyntheticShapes("test", n=200, seed=0)
    selection = select_confident(model, data, N_IMAGES, batch_size=N_IMAGES)
    x = model.encode(selection.images)
    targets = selection.labels
    method = xai_bench.get_method(method_name)
    maps = method(model, x, targets).detach()
    return dict(model=model, x=x, targets=targets, method=method, maps=maps,
                randomised=fully_randomised(model, x[:1], 0))


def _explainer(method):
    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        return method(model, x, torch.as_tensor(np.asarray(targets))).detach().numpy()
    return explain


@contextlib.contextmanager
def _quantus_explains_with(method):
    """SmoothMPRT explains through ``quantus.explain``, not ``explain_func``."""
    q = _quantus()
    original = q.explain
    q.explain = lambda model, inputs, targets, **_: _explainer(method)(model, inputs, targets)
    try:
        yield
    finally:
        q.explain = original


def cases(s: dict | None = None) -> list:
    """``[(name, ours, quantus), ...]``: callables doing each metric on all images of the
    shared setup ``s`` (built when not given)."""
    from xai_bench.metrics.randomisation import EfficientMPRT, SmoothMPRT
    from xai_bench.metrics.robustness import infidelity_scores, max_sensitivity_scores

    q = _quantus()
    s = s or setup()
    model, x, targets, method, maps = s["model"], s["x"], s["targets"], s["method"], s["maps"]
    b = len(x)
    xn, yn, an = x.numpy(), targets.numpy(), maps[:, None].numpy()
    explain = _explainer(method)

    def ours_infidelity():
        return infidelity_scores(model, x, targets, maps, n_perturb_samples=N_PERTURB,
                                 noise_std=0.003, normalize=True, seed=0, batch_size=b)

    def quantus_infidelity():
        rng = np.random.default_rng(0)

        def gaussian(arr, indices, **_):
            return arr - rng.normal(0, 0.003, arr.shape).astype(arr.dtype)

        return q.Infidelity(perturb_patch_sizes=[x.shape[-1]], n_perturb_samples=N_PERTURB,
                            perturb_func=gaussian, disable_warnings=True)(
            model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True,
            batch_size=b)

    def ours_sensitivity():
        return max_sensitivity_scores(method, model, x, targets, n_perturb_samples=N_PERTURB,
                                      perturb_radius=0.02, seed=0, batch_size=b)

    def quantus_sensitivity():
        return q.MaxSensitivity(nr_samples=N_PERTURB, lower_bound=0.02,
                                disable_warnings=True)(
            model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True,
            explain_func=explain, batch_size=b)

    emprt = EfficientMPRT()
    smprt = SmoothMPRT(nr_samples=NR_SAMPLES)

    def ours_emprt():
        return emprt.score_batch(model, s["randomised"], method, x, targets, 0)["scores"]

    def quantus_emprt():
        return q.EfficientMPRT(disable_warnings=True)(
            model=model, x_batch=xn, y_batch=yn, a_batch=None, channel_first=True,
            explain_func=explain, batch_size=b)

    def ours_smprt():
        return smprt.score_batch(model, s["randomised"], method, x, targets, 0)["scores"]

    def quantus_smprt():
        with _quantus_explains_with(method):
            return q.SmoothMPRT(nr_samples=NR_SAMPLES, skip_layers=True,
                                return_last_correlation=True, disable_warnings=True)(
                model=model, x_batch=xn, y_batch=yn, a_batch=None, channel_first=True,
                explain_func=explain, batch_size=b)

    return [("infidelity", ours_infidelity, quantus_infidelity),
            ("max_sensitivity", ours_sensitivity, quantus_sensitivity),
            ("efficient_mprt", ours_emprt, quantus_emprt),
            ("smooth_mprt", ours_smprt, quantus_smprt)]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
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
    parser.add_argument("--only", default="", help="comma list of case names")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    s = setup()
    wanted = {w for w in args.only.split(",") if w}
    print(f"{'metric':<16} {'ours s/img':>11} {'quantus s/img':>14} {'quantus/ours':>13}")
    for name, ours, theirs in cases(s):
        if wanted and name not in wanted:
            continue
        a = _median_seconds(ours, args.repeats) / len(s["x"])
        b = _median_seconds(theirs, args.repeats) / len(s["x"])
        print(f"{name:<16} {a:>11.4f} {b:>14.4f} {b / a:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
