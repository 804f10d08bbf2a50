"""The cases of benchmarks/metrics_vs_quantus.py scored on the model's (encoded) inputs:
xai-bench's infidelity, max_sensitivity, efficient_mprt and smooth_mprt against Quantus
0.6.0's Infidelity, MaxSensitivity, EfficientMPRT and SmoothMPRT. Every callable computes its
whole metric on all images in one batch, with the same amount of work asked of both sides:

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
calls ``quantus.explain`` directly, which is pointed at the method for the call).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from xai_bench.metrics.quantus_adapter import ensure_quantus

N_PERTURB = 10
NR_SAMPLES = 50


def _explainer(method):
    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        return method(model, x, torch.as_tensor(np.asarray(targets))).detach().numpy()
    return explain


@contextlib.contextmanager
def _quantus_explains_with(method):
    """SmoothMPRT explains through ``quantus.explain``, not ``explain_func``."""
    q = ensure_quantus()
    original = q.explain
    q.explain = lambda model, inputs, targets, **_: _explainer(method)(model, inputs, targets)
    try:
        yield
    finally:
        q.explain = original


def cases(s: dict) -> list:
    """``[(name, ours, quantus), ...]``: callables doing each metric on all images of the
    shared setup ``s`` (benchmarks/metrics_vs_quantus.py: ``setup``)."""
    from xai_bench.metrics.randomisation import EfficientMPRT, SmoothMPRT
    from xai_bench.metrics.robustness import infidelity_scores, max_sensitivity_scores

    q = ensure_quantus()
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
