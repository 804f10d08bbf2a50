"""``quantus:<Name>``: any Quantus metric through the CLI and ``xai_bench.evaluate``, with
values equal to calling Quantus directly on the same arrays."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.data import get_dataset
from xai_bench.errors import ConfigError, RegistryError, UnknownNameError
from xai_bench.metrics.base import MetricNotApplicable, join_parts
from xai_bench.metrics import quantus_adapter as qa
from xai_bench.storage.checkpoint import save_checkpoint
from xai_bench.storage.results import read_records
from xai_bench.training import RECIPES


pytestmark = pytest.mark.usefixtures("one_thread")
quantus = qa.ensure_quantus()

DATA = "shapes:n=64"
#: a tiny conventional ViT (untrained): fast to build, save and run
NANO = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=(8, 16))
N = 3
#: the five metrics of the issue with a small PixelFlipping step (set through the CLI)
METRICS = ["quantus:Sparseness", "quantus:Complexity", "quantus:PixelFlipping",
           "quantus:RandomLogit", "quantus:AttributionLocalisation"]
OWN = {"quantus:PixelFlipping": {"features_in_step": 64}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An untrained tiny ViT saved as a checkpoint, loaded back, and the test split."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("q") / "nano.pt"
    save_checkpoint(path, xai_bench.get_model("vit_nano", **NANO), "vit_nano", "shapes",
                    RECIPES["conventional-quick"], {})
    model = xai_bench.get_model("vit_nano", checkpoint=path).eval()
    size = model.image_size[0]
    return "vit_nano", path, model, get_dataset(DATA, split="test", image_size=size)


def direct(name: str, model, dataset, method, explain=False, **kwargs):
    """Quantus called by hand on the arrays of the metric's images (one batch); ``explain``:
    with the method as ``explain_func``."""
    selection = qa.select_confident(model, dataset, N, with_masks=True)
    x = model.encode(selection.images)
    maps = method(model, x, selection.labels)
    metric = getattr(quantus, name)(disable_warnings=True, **kwargs)
    out = metric(model=model, x_batch=x.numpy(), y_batch=selection.labels.numpy(),
                 a_batch=maps[:, None].detach().numpy(),
                 s_batch=selection.masks[:, None].float().numpy(), channel_first=True,
                 device="cpu", batch_size=32,
                 explain_func=qa.explain_function(method) if explain else None)
    return [float(quantus.helpers.utils.calculate_auc(np.asarray(o))) if np.ndim(o) else
            float(o) for o in out]


def expected_values(model, dataset):
    method = xai_bench.get_method("saliency")
    return {
        "quantus:Sparseness": direct("Sparseness", model, dataset, method),
        "quantus:Complexity": direct("Complexity", model, dataset, method),
        "quantus:PixelFlipping": direct("PixelFlipping", model, dataset, method,
                                        features_in_step=64),
        "quantus:RandomLogit": direct("RandomLogit", model, dataset, method, num_classes=10,
                                      seed=0, explain=True),
        "quantus:AttributionLocalisation": direct("AttributionLocalisation", model, dataset,
                                                  method),
    }


def test_cli_run_equals_direct_quantus_calls(setup, tmp_path):
    name, path, model, dataset = setup
    args = ["run", "--models", name, "--checkpoint", f"{name}={path}", "--dataset", DATA,
            "--methods", "saliency", "--metrics", ",".join(METRICS), "--n-images", str(N),
            "--metric-arg", "quantus:PixelFlipping.features_in_step=64", "--no-plots",
            "--no-progress", "--out", str(tmp_path), "--name", "r"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = read_records(tmp_path / "r")
    assert (records["status"] == "ok").all(), records[records["status"] != "ok"]
    for metric, values in expected_values(model, dataset).items():
        got = records[records["metric"] == metric]["value"].tolist()
        assert len(got) == N
        np.testing.assert_allclose(got, values, rtol=1e-12, atol=1e-12, err_msg=metric)


def test_evaluate_equals_direct_quantus_calls(setup):
    _, _, model, dataset = setup
    results = xai_bench.evaluate(models=[model], methods="saliency", metrics=METRICS,
                                 dataset=DATA, n_images=N, metric_params=OWN, plots=False,
                                 report=False)
    records = results.records
    for metric, values in expected_values(model, dataset).items():
        got = records[records["metric"] == metric]
        assert (got["status"] == "ok").all()
        np.testing.assert_allclose(got["value"].tolist(), values, rtol=1e-12, atol=1e-12,
                                   err_msg=metric)
    # the curve of PixelFlipping is kept: one row per step (64 of the 3·32² input features
    # each) and image
    curves = results.curves
    pf = curves[(curves["metric"] == "quantus:PixelFlipping")
                & (curves["statistic"] == "per_image")]
    assert len(pf) == N * (3 * 32 * 32 // 64)


def test_reexplaining_metric_gets_the_method_as_explain_func(setup):
    _, _, model, dataset = setup
    saliency = xai_bench.get_method("saliency")
    calls = []

    def counting(model, x, targets):
        calls.append(x.shape[0])
        return saliency(model, x, targets)

    metric = xai_bench.get_metric("quantus:MaxSensitivity", n_images=N, nr_samples=4, seed=5)
    assert metric.reexplains and not metric.needs_masks
    prepared = metric.prepare(model, dataset)
    result = metric.evaluate(model, counting, prepared, batch_size=32)
    assert len(calls) > 1  # the maps once, then Quantus's perturbed inputs
    # the same call by hand, with the same explain function and the same seeded generators
    x = model.encode(prepared.images)
    maps = saliency(model, x, prepared.labels)
    by_hand = quantus.MaxSensitivity(nr_samples=4, disable_warnings=True)
    with qa.seeded_globals(qa.content_seed(x, 5)):
        values = by_hand(model=model, x_batch=x.numpy(), y_batch=prepared.labels.numpy(),
                         a_batch=maps[:, None].detach().numpy(), channel_first=True,
                         device="cpu", batch_size=32, explain_func=qa.explain_function(saliency))
    np.testing.assert_allclose([r["value"] for r in result.records], values, rtol=1e-12)


def test_parts_equal_the_whole_for_a_random_metric(setup):
    _, _, model, dataset = setup
    method = xai_bench.get_method("saliency")
    metric = xai_bench.get_metric("quantus:FaithfulnessCorrelation", n_images=4, nr_runs=5,
                                  subset_size=16)
    prepared = metric.prepare(model, dataset)
    assert metric.samples(prepared) == 4
    whole = metric.evaluate(model, method, prepared, batch_size=2)
    parts = [metric.evaluate_part(model, method, prepared, s, s + 2, batch_size=2)
             for s in (0, 2)]
    joined = metric.reduce(model, prepared, join_parts(parts))
    assert [r["value"] for r in joined.records] == [r["value"] for r in whole.records]
    again = metric.evaluate(model, method, prepared, batch_size=2)
    assert [r["value"] for r in again.records] == [r["value"] for r in whole.records]


def test_declarations_come_from_quantus():
    for name, category, higher in (("PixelFlipping", "faithfulness", False),
                                   ("Sparseness", "complexity", True),
                                   ("MaxSensitivity", "robustness", False),
                                   ("PointingGame", "localisation", True)):
        card = xai_bench.METRICS.card(f"quantus:{name}")
        assert (card.category, card.higher_is_better, card.label) == (category, higher, name)
    assert xai_bench.METRICS.card("quantus:PointingGame").needs_masks
    assert xai_bench.METRICS.card("quantus:MPRT").second_model
    assert xai_bench.METRICS.get("quantus:Sparseness") is \
        xai_bench.METRICS.get("quantus:Sparseness")  # cached per name


def test_reexplain_table_matches_the_quantus_source():
    calls = {n for n in qa.quantus_names() + sorted(qa.EXCLUDED)
             if n in qa.metric_classes() and any(
                 s in inspect.getsource(qa.metric_classes()[n])
                 for s in ("explain_batch(", "self.explain_func(",
                                       "explain_smooth_batch("))}
    assert calls - {"ModelParameterRandomisation"} == set(qa.REEXPLAINS)


def test_parameters_are_explicit_and_checked():
    metric = xai_bench.get_metric("quantus:PixelFlipping")
    p = metric.params
    assert p["perturb_func"] == "batch_baseline_replacement_by_indices"
    assert p["normalise_func"] == "normalise_by_max"
    assert (p["abs"], p["normalise"], p["features_in_step"], p["n_images"]) == \
        (False, True, 1, 250)
    assert p["quantus_version"] == quantus.__version__ and p["softmax"] is True
    with pytest.raises(ConfigError, match="did you mean 'features_in_step'"):
        xai_bench.get_metric("quantus:PixelFlipping", feature_in_step=4)
    with pytest.raises(ConfigError, match="perturb_func"):
        xai_bench.get_metric("quantus:PixelFlipping", perturb_func="no_such_function")
    with pytest.raises(ConfigError, match="n_images"):
        xai_bench.get_metric("quantus:Sparseness", n_images=0)


def test_masks_are_required_for_localisation(setup):
    _, _, model, dataset = setup

    class NoMasks:
        images, labels, has_masks, masks = dataset.images, dataset.labels, False, None

        def __len__(self):
            return len(dataset)

    metric = xai_bench.get_metric("quantus:AttributionLocalisation", n_images=N)
    with pytest.raises(MetricNotApplicable, match="no object masks"):
        metric.prepare(model, NoMasks())


def test_unknown_name_suggests_the_closest(tiny_model):
    with pytest.raises(UnknownNameError, match="did you mean 'quantus:Sparseness'"):
        xai_bench.METRICS.get("quantus:sparsenes")
    with pytest.raises(UnknownNameError, match="does not apply"):
        xai_bench.METRICS.get("quantus:Focus")
    result = CliRunner().invoke(main, ["run", "--models", tiny_model, "--untrained", "--metrics",
                                       "quantus:Sparsenes", "--no-plots"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "did you mean 'quantus:Sparseness'" in lines[0]


def test_missing_quantus_says_how_to_install(monkeypatch, tiny_model, tmp_path):
    monkeypatch.setitem(sys.modules, "quantus", None)  # import quantus -> ImportError
    with pytest.raises(RegistryError, match=r'pip install "xai-bench\[quantus\]"'):
        qa.ensure_quantus()
    with pytest.raises(RegistryError, match=r'pip install "xai-bench\[quantus\]"'):
        xai_bench.METRICS.get("quantus:Sparsenes")
    result = CliRunner().invoke(main, ["run", "--models", tiny_model, "--untrained", "--metrics",
                                       "quantus:Sparseness", "--no-plots", "--out", tmp_path])
    assert result.exit_code == 2 and 'pip install "xai-bench[quantus]"' in result.output
    # a LATEC metric (built on the bridge) is named in the one-line refusal, and nothing is
    # written
    result = CliRunner().invoke(main, ["run", "--models", tiny_model, "--untrained", "--metrics",
                                       "latec", "--no-plots", "--out", tmp_path / "latec"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "metric 'latec_" in lines[0] and "xai-bench[quantus]" in lines[0]
    assert not (tmp_path / "latec").exists()
