"""The ``latec`` group: LATEC's 20 image metrics with its hyperparameters, on the Quantus
bridge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_bench
from xai_bench.data import get_dataset
from xai_bench.metrics import latec
from xai_bench.metrics import quantus_adapter as qa

pytestmark = pytest.mark.usefixtures("one_thread")
quantus = qa.ensure_quantus()

#: LATEC's configuration for ImageNet images, transcribed (metric: hyperparameters as LATEC
#: passes them; functions by name)
TRANSCRIBED = {
    "faithfulness_correlation": dict(nr_runs=100, subset_size=224, perturb_baseline="black",
                                     perturb_func="baseline_replacement_by_indices",
                                     similarity_func="correlation_pearson", abs=False,
                                     normalise=True),
    "faithfulness_estimate": dict(features_in_step=224, perturb_baseline="black",
                                  perturb_func="baseline_replacement_by_indices",
                                  similarity_func="correlation_pearson", normalise=True),
    "monotonicity_correlation": dict(nr_samples=10, features_in_step=3136,
                                     perturb_baseline="uniform",
                                     perturb_func="baseline_replacement_by_indices",
                                     similarity_func="correlation_spearman", normalise=True),
    "pixel_flipping": dict(features_in_step=224, perturb_baseline="black",
                           perturb_func="baseline_replacement_by_indices", normalise=True),
    "region_perturbation": dict(patch_size=14, regions_evaluation=10, perturb_baseline="uniform",
                                normalise=True),
    "insertion": dict(pixel_batch_size=50, sigma=5.0, kernel_size=15),
    "deletion": dict(pixel_batch_size=50),
    "irof": dict(segmentation_method="slic", perturb_baseline="mean",
                 perturb_func="baseline_replacement_by_indices", normalise=True),
    "road": dict(noise=0.1, percentages_max=100, perturb_func="noisy_linear_imputation",
                 normalise=True),
    "sufficiency": dict(threshold=0.9, normalise=True),
    "infidelity": dict(n_perturb_samples=50),
    "local_lipschitz_estimate": dict(nr_samples=5, perturb_std=0.1, perturb_mean=0.0,
                                     norm_numerator="distance_euclidean",
                                     norm_denominator="distance_euclidean",
                                     perturb_func="gaussian_noise",
                                     similarity_func="lipschitz_constant", normalise=True),
    "max_sensitivity": dict(nr_samples=10, lower_bound=0.2, norm_numerator="fro_norm",
                            norm_denominator="fro_norm", perturb_func="uniform_noise",
                            similarity_func="difference", normalise=True),
    "continuity": dict(patch_size=56, nr_steps=20, perturb_baseline="uniform",
                       similarity_func="correlation_spearman", normalise=True),
    "relative_input_stability": dict(nr_samples=10, normalise=True,
                                     return_nan_when_prediction_changes=False),
    "relative_output_stability": dict(nr_samples=10, normalise=True,
                                      return_nan_when_prediction_changes=False),
    "relative_representation_stability": dict(nr_samples=10, normalise=True,
                                              return_nan_when_prediction_changes=False),
    "sparseness": dict(normalise=True),
    "complexity": dict(normalise=True),
    "effective_complexity": dict(eps=0.01, normalise=True),
}
CATEGORIES = {"faithfulness": 11, "robustness": 6, "complexity": 3}


def test_the_group_is_latecs_twenty_metrics():
    names = xai_bench.METRICS.resolve("latec")
    assert sorted(names) == sorted(f"latec_{k}" for k in TRANSCRIBED) and len(names) == 20
    counts = {}
    for name in names:
        card = xai_bench.METRICS.card(name)
        assert "latec" in card.groups and "default" not in card.groups
        counts[card.category] = counts.get(card.category, 0) + 1
    assert counts == CATEGORIES
    assert "latec_sparseness" not in xai_bench.METRICS.resolve("default")


def test_the_table_is_latecs():
    assert {k: v[3] for k, v in latec.LATEC.items()} == TRANSCRIBED


def test_defaults_are_latecs_hyperparameters():
    for key, hyper in TRANSCRIBED.items():
        if key in ("insertion", "deletion"):
            continue
        params = qa.resolve_parameters("metric", f"latec_{key}",
                                       xai_bench.METRICS.get(f"latec_{key}"), {})
        for param, value in hyper.items():
            if param in latec.DROPPED.get(key, ()):
                assert param not in params
            elif (key, param) in latec.SCALING:
                assert params[param] == "auto"
            else:
                assert params[param] == latec.quantus_06_function(key, param, value), (key, param)
    deletion = xai_bench.get_metric("latec_deletion").params
    insertion = xai_bench.get_metric("latec_insertion").params
    assert deletion["n_steps"] == insertion["n_steps"] == round(224 * 224 / 50)
    assert (insertion["blur_kernel"], insertion["blur_sigma"], insertion["blur_type"],
            insertion["blur_space"]) == (15, 5.0, "gaussian", "model")


def test_direction_is_quantus_declaration():
    for key, (name, _, higher, _) in latec.LATEC.items():
        if name is not None and name != "ROAD":
            assert xai_bench.METRICS.card(f"quantus:{name}").higher_is_better == higher, key


def test_scaling_rules():
    assert latec.scaled("side", 14, 224, 224) == 14 and latec.scaled("side", 14, 32, 32) == 2
    assert latec.scaled("area", 224, 224, 224) == 224 and latec.scaled("area", 224, 32, 32) == 5
    assert latec.scaled("divisor", 224, 224, 224) == 224
    assert latec.scaled("divisor", 224, 32, 32) == 4      # 4.57 -> the nearest divisor of 1024
    assert latec.scaled("divisor", 3136, 32, 32) == 64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(3)
    model = xai_bench.get_model("vit_nano", embed_dim=32, depth=1, num_heads=2,
                                stem_channels=(8, 16)).eval()
    return model, get_dataset("shapes:n=64", split="test", image_size=32)


@pytest.mark.parametrize("key, quantus_name, kwargs", [
    ("sparseness", "Sparseness", dict(normalise=True)),
    ("pixel_flipping", "PixelFlipping", dict(features_in_step=4, perturb_baseline="black",
                                             normalise=True)),
])
def test_runs_end_to_end_as_quantus(setup, key, quantus_name, kwargs):
    model, dataset = setup
    method = xai_bench.get_method("saliency")
    metric = xai_bench.get_metric(f"latec_{key}", n_images=2)
    result = metric(model, method, dataset)
    sel = qa.select_confident(model, dataset, 2)
    x = model.encode(sel.images)
    out = getattr(quantus, quantus_name)(disable_warnings=True, **kwargs)(
        model=model, x_batch=x.numpy(), y_batch=sel.labels.numpy(),
        a_batch=method(model, x, sel.labels)[:, None].detach().numpy(), channel_first=True,
        device="cpu", batch_size=32)
    expected = [float(quantus.helpers.utils.calculate_auc(np.asarray(o))) if np.ndim(o)
                else float(o) for o in out]
    np.testing.assert_allclose([r["value"] for r in result.records], expected, rtol=1e-12)


def test_road_runs_image_by_image(setup):
    model, dataset = setup
    metric = xai_bench.get_metric("latec_road", n_images=2, percentages_max=40)
    result = metric(model, xai_bench.get_method("saliency"), dataset)
    steps = len(range(1, 40, 2))
    assert len(result.records) == 2
    assert all(0 <= r["value"] <= steps - 1 for r in result.records)
    assert sum(c["statistic"] == "per_image" for c in result.curves) == 2 * steps
