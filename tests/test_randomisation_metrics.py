"""efficient_mprt and smooth_mprt (xai_bench.metrics.randomisation): Quantus's EfficientMPRT /
SmoothMPRT on identical inputs, maps and randomised weights (Quantus handed our randomised
model and, for sMPRT, our noise), known answers of a model-independent map, the randomised
model, batched == per image, parts == whole, one-line errors for bad parameters."""

import numpy as np
import pytest
import torch

import xai_bench
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.errors import ConfigError
from xai_bench.metrics import join_parts
from xai_bench.metrics.randomisation import (
    discrete_entropy, fully_randomised, smoothed_maps,
)
from xai_bench.metrics.sanity import randomisation_stages

from xai_bench.metrics.quantus_adapter import ensure_quantus
from conftest import SelfLabelled, tiny_bcos_batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    """An untrained tiny B-cos ViT, its fully randomised copy, 3 images."""
    model, x, targets = tiny_bcos_batch()
    return model, fully_randomised(model, x[:1], 0), x, targets, xai_bench.get_method("ixg")


def one_randomised_layer(monkeypatch, randomised):
    """Quantus's model wrapper yields our fully randomised model as its only 'layer' (so the
    weights are identical; Quantus would re-initialise with reset_parameters())."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator",
                        lambda self, order="top_down", seed=42: iter([("all", randomised)]))
    monkeypatch.setattr(PyTorchModel, "random_layer_generator_length", property(lambda s: 1))


def explainer(method):
    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        return method(model, x, torch.as_tensor(np.asarray(targets))).detach().numpy()
    return explain


# ---- registration ---------------------------------------------------------------------------

def test_registered_with_their_cards():
    assert {"efficient_mprt", "smooth_mprt"} <= set(xai_bench.METRICS.list())
    e, s = xai_bench.get_metric("efficient_mprt"), xai_bench.get_metric("smooth_mprt")
    assert (e.category, e.higher_is_better, e.second_model) == ("sanity", True, True)
    assert (s.category, s.higher_is_better, s.second_model, s.reexplains) == \
        ("sanity", False, True, True)
    assert e.params == dict(n_images=32, n_bins=100, seed=0, selection="stratified")
    assert s.params == dict(n_images=8, nr_samples=50, noise_magnitude=0.1, seed=0,
                         selection="stratified")


# ---- the randomised model -------------------------------------------------------------------

def test_randomised_model_is_parameter_randomisations_last_stage(setup):
    model, randomised, x, _, _ = setup
    stages = randomisation_stages(model, x[:1])
    changed = {n for _, names in stages for n in names}
    trained, random = dict(model.named_parameters()), dict(randomised.named_parameters())
    for name, p in trained.items():
        same = torch.equal(p, random[name])
        # every randomised tensor is re-drawn from its mean and std (single entries and
        # constant tensors such as an all-zero prior stay as they are), the rest untouched
        constant = p.numel() < 2 or bool((p == p.flatten()[0]).all())
        assert same == (name not in changed or constant), name
    again = fully_randomised(model, x[:1], 0)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), randomised.parameters()))


# ---- eMPRT ----------------------------------------------------------------------------------

def test_discrete_entropy_is_quantus(setup):
    ensure_quantus()  # the numpy.trapz shim before Quantus is imported
    maps = torch.randn(4, 9, 9)
    maps[1] = maps[1].round()  # ties and empty bins
    ours = discrete_entropy(maps, 100)
    from quantus.functions.complexity_func import discrete_entropy as theirs_entropy
    theirs = [theirs_entropy(a=m.numpy(), x=None, n_bins=100) for m in maps]
    assert ours.tolist() == theirs
    assert discrete_entropy(torch.ones(1, 4, 4), 10).tolist() == [0.0]


def test_efficient_mprt_equals_quantus_on_the_same_randomised_model(setup, monkeypatch):
    q = ensure_quantus()
    model, randomised, x, targets, method = setup
    one_randomised_layer(monkeypatch, randomised)
    theirs = q.EfficientMPRT(disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=None,
        channel_first=True, explain_func=explainer(method), batch_size=len(x))
    metric = xai_bench.get_metric("efficient_mprt")
    ours = metric.score_batch(model, randomised, method, x, targets, 0)["scores"]
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-12, atol=0)


# ---- sMPRT ----------------------------------------------------------------------------------

def test_smooth_mprt_equals_quantus_on_the_same_noise_and_model(setup, monkeypatch):
    """Quantus draws its noise from numpy's global generator (different for the two models)
    and compares every layer of a bottom-up cascade by default; here it gets our per-image
    noise, our randomised model and ``return_last_correlation=True``."""
    q = ensure_quantus()
    model, randomised, x, targets, method = setup
    nr = 4
    one_randomised_layer(monkeypatch, randomised)
    table = []
    for img in x:  # draw j of image b's own stream: the noise smoothed_maps adds
        g = cpu_generator(derive_seed("smooth_mprt", content_seed(img, 0)))
        table.append(torch.stack([torch.randn(img.shape, generator=g) for _ in range(nr - 1)]))
    table = torch.stack(table, 1).double().numpy()  # (nr - 1, B, C, H, W)
    calls = {"n": 0}

    def randn(*shape):
        assert shape == x.shape
        calls["n"] += 1
        return table[(calls["n"] - 1) % (nr - 1)]

    monkeypatch.setattr(np.random, "randn", randn)
    monkeypatch.setattr(q, "explain", lambda m, inputs, targets, **_:
                        explainer(method)(m, inputs, targets))
    theirs = q.SmoothMPRT(nr_samples=nr, return_last_correlation=True, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=None,
        channel_first=True, explain_func=explainer(method), batch_size=len(x))
    assert calls["n"] == 3 * (nr - 1)  # a_batch, the trained model, the randomised model
    metric = xai_bench.get_metric("smooth_mprt", nr_samples=nr)
    ours = metric.score_batch(model, randomised, method, x, targets, 0)["scores"]
    # the inputs differ by float32 rounding of x + noise (Quantus adds in float64)
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), atol=1e-6)
    assert ours.abs().max() < 0.99


def test_smoothing_averages_the_noisy_maps_and_the_clean_one(setup):
    model, _, x, targets, method = setup
    one, = smoothed_maps(method, [model], x, targets, nr_samples=1, noise_magnitude=0.1, seed=0)
    torch.testing.assert_close(one, method(model, x, targets).double())
    quiet, = smoothed_maps(method, [model], x, targets, nr_samples=3, noise_magnitude=0.0, seed=0)
    torch.testing.assert_close(quiet, method(model, x, targets).double())


# ---- known answers, batched == per image, parts == whole ------------------------------------

@pytest.mark.parametrize("name, params, model_free, tolerance", [
    # a histogram is discontinuous: the float rounding of another batch moves a pixel or two
    # across a bin edge (one pixel of 32x32 changes the entropy by ~1e-3)
    ("efficient_mprt", dict(n_images=6), 0.0, 5e-3),
    # and near-equal pixels swap ranks (measured: 6e-6)
    ("smooth_mprt", dict(n_images=6, nr_samples=3), 1.0, 1e-4)])
def test_harness_known_answer_batched_and_parts(setup, name, params, model_free, tolerance):
    model = setup[0]
    data = SelfLabelled(model, 8, seed=2)
    metric = xai_bench.get_metric(name, **params)
    prepared = metric.prepare(model, data, batch_size=4, seed=0)
    assert metric.samples(prepared) == 6
    # a map that depends on the input only is the same for both models
    random = metric.evaluate(model, xai_bench.get_method("random"), prepared, batch_size=4)
    assert [r["value"] for r in random.records] == [model_free] * 6
    method = xai_bench.get_method("ixg")
    whole = metric.evaluate(model, method, prepared, batch_size=4)
    single = metric.evaluate(model, method, prepared, batch_size=1)
    values = np.array([r["value"] for r in whole.records])
    np.testing.assert_allclose(values, [r["value"] for r in single.records],
                               atol=tolerance)
    assert np.isfinite(values).all() and not np.allclose(values, model_free)
    parts = [metric.evaluate_part(model, method, prepared, a, b, batch_size=4)
             for a, b in [(0, 4), (4, 6)]]
    joined = metric.reduce(model, prepared, join_parts(parts))
    assert joined.records == whole.records and joined.summary == whole.summary
    before = [p.clone() for p in model.parameters()]
    metric.evaluate(model, method, prepared, batch_size=4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_efficient_mprt_leaves_out_constant_maps_and_skips_a_constant_method(setup):
    """A constant trained map has entropy 0 and no relative rise: its images are left out
    (before, they were NaN values in 'ok' records, and the run failed reading them back), and
    a method whose maps are all constant (the uniform baseline) does not apply."""
    from xai_bench.metrics.base import MetricNotApplicable

    model = setup[0]
    data = SelfLabelled(model, 8, seed=2)
    metric = xai_bench.get_metric("efficient_mprt", n_images=6)
    prepared = metric.prepare(model, data, batch_size=4, seed=0)
    with pytest.raises(MetricNotApplicable, match="constant"):
        metric.evaluate(model, xai_bench.get_method("uniform"), prepared, batch_size=4)
    ixg = xai_bench.get_method("ixg")
    every = metric.evaluate(model, ixg, prepared, batch_size=4)

    def flat_on_odd(m, x, targets):  # ixg, but a constant map on every second image
        maps = ixg(m, x, targets).clone()
        maps[1::2] = 1.0
        return maps

    kept = metric.evaluate(model, flat_on_odd, prepared, batch_size=6)
    assert [r["sample_id"] for r in kept.records] == [r["sample_id"] for r in every.records][::2]
    assert np.isfinite([r["value"] for r in kept.records]).all()
    assert kept.summary["n_undefined"] == 3
    assert kept.summary["mean"] == pytest.approx(np.mean([r["value"] for r in kept.records]))


def test_a_run_with_the_uniform_baseline_records_efficient_mprt_as_skipped(tmp_path):
    results = xai_bench.evaluate(models=["bcos_vit_nano"], methods="ixg,uniform",
                                 metrics="efficient_mprt", dataset="shapes", n_images=4,
                                 out=tmp_path, device="cpu", plots=False, report=False)
    rows = results.records.set_index("method")
    assert rows.loc["uniform", "status"] == "skipped"
    assert "constant" in rows.loc["uniform", "message"]
    assert (results.records[results.records["method"] == "ixg"]["status"] == "ok").all()


# ---- bad parameters -------------------------------------------------------------------------

@pytest.mark.parametrize("name, key, value", [
    ("efficient_mprt", "n_bins", 1), ("efficient_mprt", "n_images", 0),
    ("efficient_mprt", "seed", 0.5), ("smooth_mprt", "nr_samples", 0),
    ("smooth_mprt", "noise_magnitude", -0.1), ("smooth_mprt", "noise_magnitude", float("nan"))])
def test_bad_parameters_are_one_line_errors(name, key, value):
    with pytest.raises(ConfigError) as err:
        xai_bench.get_metric(name, **{key: value})
    message = str(err.value)
    assert "\n" not in message and key in message and name in message
