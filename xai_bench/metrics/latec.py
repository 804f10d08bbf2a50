"""The ``latec`` group: the 20 image metrics of LATEC (Klein et al. 2024) with LATEC's fixed
hyperparameters (its ImageNet evaluation configuration) as defaults.

``xai-bench run --metric latec`` runs all of them. Seventeen are Quantus metrics through the
Quantus bridge (:mod:`xai_bench.metrics.quantus_adapter`); LATEC's insertion and deletion are its
own code, here our RISE-style ``insertion`` / ``deletion`` with LATEC's settings; LATEC's
infidelity is captum's ``infidelity`` with LATEC's Gaussian input noise. :data:`LATEC` is the
table (metric, Quantus class, category, hyperparameters); docs/definitions.md explains it.

Hyperparameters that LATEC fixed for 224×224 inputs are scaled to the image size ``H×W`` where
they are sizes (``"auto"``, the default; an integer overrides):

- ``area``: a pixel count, ``round(value · H·W / 224²)``, at least 1 (FaithfulnessCorrelation's
  ``subset_size``);
- ``divisor``: a pixel count that Quantus requires to divide ``H·W``: the divisor of ``H·W``
  nearest to the area-scaled value (ties: the smaller) (``features_in_step``);
- ``side``: a length, ``round(value · H / 224)``, at least 1 (``patch_size``);
- insertion / deletion: LATEC's 50 pixels a step of 224² (1004 steps) is kept as a fraction:
  ``n_steps = 1004`` on any image.

Where Quantus 0.6 differs from the Quantus fork LATEC used: Continuity takes neither
``patch_size`` nor ``similarity_func`` (dropped; see ``DROPPED``), and ROAD gives no score per
image in Quantus 0.6, so ``latec_road`` runs Quantus's ROAD curve image by image (the area
under the per-percentage correctness curve, Quantus's ``calculate_auc``).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from xai_bench.contracts.metric import metric
from xai_bench.contracts.parameters import Valid, integer, number, or_literal
from xai_bench.metrics.common import DEFAULT_SELECTION
from xai_bench.metrics.perturbation import Deletion, Insertion
from xai_bench.metrics.quantus_adapter import (
    QuantusMetric, function_check, metric_classes, ensure_quantus, quantus_function,
    signature_init,
)

__all__ = ["LATEC", "DROPPED", "SCALING", "scaled", "LatecQuantus", "latec_names"]

#: LATEC's side of the images its hyperparameters were chosen for
LATEC_SIDE = 224

#: metric -> (Quantus class, category, higher is better, LATEC's hyperparameters); the
#: functions by their name in quantus.functions; "abs"/"normalise" as LATEC passes them (else
#: Quantus's defaults)
LATEC = {
    # faithfulness
    "faithfulness_correlation": ("FaithfulnessCorrelation", "faithfulness", True, dict(
        nr_runs=100, subset_size=224, perturb_baseline="black",
        perturb_func="baseline_replacement_by_indices", similarity_func="correlation_pearson",
        abs=False, normalise=True)),
    "faithfulness_estimate": ("FaithfulnessEstimate", "faithfulness", True, dict(
        features_in_step=224, perturb_baseline="black",
        perturb_func="baseline_replacement_by_indices", similarity_func="correlation_pearson",
        normalise=True)),
    "monotonicity_correlation": ("MonotonicityCorrelation", "faithfulness", True, dict(
        nr_samples=10, features_in_step=3136, perturb_baseline="uniform",
        perturb_func="baseline_replacement_by_indices", similarity_func="correlation_spearman",
        normalise=True)),
    "pixel_flipping": ("PixelFlipping", "faithfulness", False, dict(
        features_in_step=224, perturb_baseline="black",
        perturb_func="baseline_replacement_by_indices", normalise=True)),
    "region_perturbation": ("RegionPerturbation", "faithfulness", False, dict(
        patch_size=14, regions_evaluation=10, perturb_baseline="uniform", normalise=True)),
    "insertion": (None, "faithfulness", True, dict(pixel_batch_size=50, sigma=5.0,
                                                   kernel_size=15)),
    "deletion": (None, "faithfulness", False, dict(pixel_batch_size=50)),
    "irof": ("IROF", "faithfulness", True, dict(
        segmentation_method="slic", perturb_baseline="mean",
        perturb_func="baseline_replacement_by_indices", normalise=True)),
    "road": ("ROAD", "faithfulness", False, dict(
        noise=0.1, percentages_max=100, perturb_func="noisy_linear_imputation",
        normalise=True)),
    "sufficiency": ("Sufficiency", "faithfulness", True, dict(threshold=0.9, normalise=True)),
    "infidelity": (None, "faithfulness", False, dict(n_perturb_samples=50)),
    # robustness
    "local_lipschitz_estimate": ("LocalLipschitzEstimate", "robustness", False, dict(
        nr_samples=5, perturb_std=0.1, perturb_mean=0.0, norm_numerator="distance_euclidean",
        norm_denominator="distance_euclidean", perturb_func="gaussian_noise",
        similarity_func="lipschitz_constant", normalise=True)),
    "max_sensitivity": ("MaxSensitivity", "robustness", False, dict(
        nr_samples=10, lower_bound=0.2, norm_numerator="fro_norm", norm_denominator="fro_norm",
        perturb_func="uniform_noise", similarity_func="difference", normalise=True)),
    "continuity": ("Continuity", "robustness", False, dict(
        patch_size=56, nr_steps=20, perturb_baseline="uniform",
        similarity_func="correlation_spearman", normalise=True)),
    "relative_input_stability": ("RelativeInputStability", "robustness", False, dict(
        nr_samples=10, normalise=True, return_nan_when_prediction_changes=False)),
    "relative_output_stability": ("RelativeOutputStability", "robustness", False, dict(
        nr_samples=10, normalise=True, return_nan_when_prediction_changes=False)),
    "relative_representation_stability": ("RelativeRepresentationStability", "robustness",
                                          False, dict(nr_samples=10, normalise=True,
                                                      return_nan_when_prediction_changes=False)),
    # complexity
    "sparseness": ("Sparseness", "complexity", True, dict(normalise=True)),
    "complexity": ("Complexity", "complexity", False, dict(normalise=True)),
    "effective_complexity": ("EffectiveComplexity", "complexity", False, dict(
        eps=0.01, normalise=True)),
}
#: LATEC hyperparameters that Quantus 0.6 does not take (left out, documented)
DROPPED = {"continuity": ("patch_size", "similarity_func")}
#: how a size-like hyperparameter follows the image size (see the module docstring)
SCALING = {("faithfulness_correlation", "subset_size"): "area",
           ("faithfulness_estimate", "features_in_step"): "divisor",
           ("monotonicity_correlation", "features_in_step"): "divisor",
           ("pixel_flipping", "features_in_step"): "divisor",
           ("region_perturbation", "patch_size"): "side"}
#: LATEC's per-image perturbation functions -> the Quantus 0.6 functions of the same
#: perturbation for a whole batch (Quantus 0.6 calls these metrics' perturbation with a batch;
#: the per-image ones fail there); IROF 0.6 replaces segments given as a mask
QUANTUS_06 = {"baseline_replacement_by_indices": "batch_baseline_replacement_by_indices",
              "gaussian_noise": "batch_gaussian_noise", "uniform_noise": "batch_uniform_noise"}
_IROF_06 = "baseline_replacement_by_mask"


def quantus_06_function(key: str, param: str, value: str) -> str:
    """The Quantus 0.6 function that does what LATEC's ``value`` did for ``param``."""
    if param != "perturb_func" or key == "road":
        return value
    return _IROF_06 if key == "irof" else QUANTUS_06.get(value, value)


def latec_names() -> list:
    return [f"latec_{n}" for n in LATEC]


def scaled(rule: str, value: int, height: int, width: int) -> int:
    """LATEC's ``value`` for 224² images at ``height × width`` by ``rule``."""
    if rule == "side":
        return max(1, round(value * height / LATEC_SIDE))
    area = max(1, round(value * height * width / LATEC_SIDE ** 2))
    if rule == "area":
        return area
    pixels = height * width
    divisors = [d for d in range(1, pixels + 1) if pixels % d == 0]
    return min(divisors, key=lambda d: (abs(d - area), d))


class LatecQuantus(QuantusMetric):
    """A LATEC metric on the Quantus bridge: LATEC's hyperparameters, the size-like ones
    (``"auto"``) scaled to the images (:data:`SCALING`)."""

    KEY = ""

    def quantus_kwargs(self, model, x: torch.Tensor) -> dict:
        kwargs = super().quantus_kwargs(model, x)
        height, width = x.shape[-2:]
        for (key, param), rule in SCALING.items():
            if key == self.KEY and kwargs.get(param) == "auto":
                kwargs[param] = scaled(rule, LATEC[key][3][param], height, width)
        accepted = inspect.signature(metric_classes()[self.QUANTUS].__init__).parameters
        if self.QUANTUS == "ROAD":
            kwargs["percentages"] = list(range(1, int(self.params["percentages_max"]), 2))
        return {k: v for k, v in kwargs.items() if k in accepted}


class LatecRoad(LatecQuantus):
    """ROAD (Rong et al. 2022) image by image: Quantus's noisy linear imputation of the top
    ``p`` % pixels by the map for ``p`` = 1, 3, ..., 99, whether the model still predicts the
    class; the value is the area under that 0/1 curve (Quantus's ``calculate_auc``)."""

    def score(self, model, method, x, targets, maps, masks, *, device, batch_size) -> list:
        ensure_quantus()
        from quantus.helpers.utils import calculate_auc

        imputation = quantus_function(self.params["perturb_func"], "latec_road perturb_func")
        percentages = list(range(1, int(self.params["percentages_max"]), 2))
        pixels = x.shape[-2] * x.shape[-1]
        out = []
        for img, target, a in zip(x, targets, maps):
            order = np.argsort(-a.detach().cpu().double().numpy().reshape(-1), kind="stable")
            arr = img.detach().cpu().numpy()
            copies = [imputation(arr=arr, indices=order[:int(pixels * p / 100)],
                                              noise=float(self.params["noise"]))
                      for p in percentages]
            with torch.no_grad():
                logits = model(torch.as_tensor(np.stack(copies), dtype=x.dtype, device=x.device))
            curve = (logits.argmax(1) == target).double().cpu().numpy()
            out.append((float(calculate_auc(curve)), curve))
        return out


class LatecInfidelity(LatecQuantus):
    """Infidelity (Yeh et al. 2019) as LATEC computes it: captum's ``infidelity`` with
    Gaussian input noise of std 0.005, ``n_perturb_samples`` draws; the map is given to every
    input channel."""

    NOISE_STD = 0.005

    def score(self, model, method, x, targets, maps, masks, *, device, batch_size) -> list:
        from captum.metrics import infidelity

        def perturb(inputs):
            noise = torch.randn(inputs.shape, dtype=inputs.dtype).to(inputs.device) * \
                self.NOISE_STD
            return noise, inputs - noise

        attributions = maps[:, None].expand_as(x).to(x.dtype)
        with torch.no_grad():
            values = infidelity(model, perturb, x, attributions, target=targets,
                                n_perturb_samples=int(self.params["n_perturb_samples"]))
        return [(float(v), None) for v in values.double().cpu()]


_SIZE = or_literal(integer(1), "auto")


def _make(key: str):
    quantus_name, category, higher, hyper = LATEC[key]
    dropped = DROPPED.get(key, ())
    params = {"n_images": 250, "seed": 0, "selection": DEFAULT_SELECTION}
    checks = dict(QuantusMetric.PARAMETER_CHECKS)
    functions = []
    for param, value in hyper.items():
        if param in dropped:
            continue
        if (key, param) in SCALING:
            params[param], checks[param] = "auto", _SIZE
        elif param.endswith("_func") or param.startswith("norm_"):
            params[param] = quantus_06_function(key, param, value)
            checks[param] = function_check(params[param])
            functions.append(param)
        else:
            params[param] = value
    params["softmax"] = None
    checks["softmax"] = Valid("true, false or none", lambda v: v is None or isinstance(v, bool))
    if key == "road":
        checks.update(noise=number(low=0), percentages_max=integer(2, 101))
    base = {"road": LatecRoad, "infidelity": LatecInfidelity}.get(key, LatecQuantus)
    doc = (f"LATEC {key.replace('_', ' ')} ({category}) with LATEC's hyperparameters "
           f"(xai_bench.metrics.latec).")
    cls = type(f"Latec_{key}", (base,), {
        "__init__": signature_init(base, params), "__doc__": doc, "__module__": __name__,
        "QUANTUS": quantus_name or "", "KEY": key, "FUNCTIONS": tuple(functions),
        "PARAMETER_CHECKS": checks})
    reexplains = quantus_name in ("LocalLipschitzEstimate", "MaxSensitivity", "Continuity",
                                  "RelativeInputStability", "RelativeOutputStability",
                                  "RelativeRepresentationStability")
    return metric(f"latec_{key}", higher_is_better=higher, category=category,
                  label=f"LATEC {key.replace('_', ' ')}", description=doc,
                  reexplains=reexplains, groups=("latec",))(cls)


@metric("latec_insertion", higher_is_better=True, category="faithfulness",
        label="LATEC insertion", groups=("latec",))
class LatecInsertion(Insertion):
    """LATEC insertion: pixels most important first into a Gaussian-blurred model input
    (kernel 15, sigma 5 as LATEC), 1004 steps (LATEC's 50 pixels of 224²)."""

    def __init__(self, n_images: int = 250, n_steps: int = 1004, blur_kernel: int = 15,
                 blur_sigma: float = 5.0, keep_per_image_curves: bool = False,
                 blur_type: str = "gaussian", blur_padding: str = "replicate",
                 blur_space: str = "model", selection: str = DEFAULT_SELECTION):
        super().__init__(n_images=n_images, n_steps=n_steps, blur_kernel=blur_kernel,
                         blur_sigma=blur_sigma, keep_per_image_curves=keep_per_image_curves,
                         blur_type=blur_type, blur_padding=blur_padding, blur_space=blur_space,
                         selection=selection)


@metric("latec_deletion", higher_is_better=False, category="faithfulness",
        label="LATEC deletion", groups=("latec",))
class LatecDeletion(Deletion):
    """LATEC deletion: pixels most important first set to zero in the model input, 1004 steps
    (LATEC's 50 pixels of 224²)."""

    def __init__(self, n_images: int = 250, n_steps: int = 1004,
                 keep_per_image_curves: bool = False, selection: str = DEFAULT_SELECTION):
        super().__init__(n_images=n_images, n_steps=n_steps,
                         keep_per_image_curves=keep_per_image_curves, selection=selection)


# the Quantus-bridged LATEC metrics, one declared class each (the registry finds them here)
for _key in LATEC:
    if _key not in ("insertion", "deletion"):
        globals()[f"Latec_{_key}"] = _make(_key)
del _key
