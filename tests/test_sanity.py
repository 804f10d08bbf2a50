"""The sanity-check metrics: cascading parameter randomisation and the random-target check
(docs/definitions.md, 'parameter_randomisation' and 'random_target')."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

import xai_bench
from conftest import TinyLinear
from xai_bench.metrics.sanity import (
    average_ranks, evaluated_stages, randomisation_stages, spearman,
)

N_IMAGES = 6


def _run(metric_name, model, method_name, dataset, *, batch_size=32, **params):
    metric = xai_bench.get_metric(metric_name, n_images=N_IMAGES, **params)
    method = xai_bench.get_method(method_name)
    prepared = metric.prepare(model, dataset, device="cpu", batch_size=batch_size, seed=0)
    return metric.evaluate(model, method, prepared, device="cpu", batch_size=batch_size)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- the Spearman helper -------------------------------------------------------------------

def test_average_ranks_and_spearman_equal_scipy_on_data_with_ties():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 6, (8, 97), generator=g).double()
    b = a + torch.randint(-3, 4, (8, 97), generator=g).double()  # correlated, many ties
    c = torch.randn(8, 97, generator=g, dtype=torch.float64)     # no ties
    for x, y in ((a, b), (a, c), (c, c.flip(1))):
        expected = [scipy.stats.spearmanr(x[i].numpy(), y[i].numpy()).statistic
                    for i in range(x.shape[0])]
        assert np.allclose(spearman(x, y).numpy(), expected, rtol=0, atol=1e-12)
    ranks = np.stack([scipy.stats.rankdata(row) for row in a.numpy()])
    assert np.array_equal(average_ranks(a).numpy(), ranks)
    assert average_ranks(a).dtype == torch.float64


def test_spearman_of_maps_constant_rows_and_identity():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(3, 5, 7, generator=g)
    assert torch.equal(spearman(maps, maps), torch.ones(3, dtype=torch.float64))
    assert torch.equal(spearman(maps, -maps), -torch.ones(3, dtype=torch.float64))
    const, other = torch.ones(2, 4, 4), torch.zeros(2, 4, 4)
    assert torch.equal(spearman(const, other), torch.ones(2, dtype=torch.float64))
    assert torch.equal(spearman(const, maps[:2, :4, :4]), torch.zeros(2, dtype=torch.float64))


# ---- stages --------------------------------------------------------------------------------

def test_the_cascade_runs_from_the_head_to_the_first_block(trained_pair):
    for model in trained_pair.values():
        x = model.encode(torch.rand(1, 3, *model.image_size))
        stages = randomisation_stages(model, x)
        assert [n for n, _ in stages] == ["head", "block1", "block0"]
        head = stages[0][1]
        assert any(name.startswith("head.") for name in head)
        assert all(name.startswith("blocks.1.") for name in stages[1][1])
        every = [n for _, names in stages for n in names]
        assert len(every) == len(set(every))
        assert not any(n.startswith("tokeniser.") for n in every)


def test_models_without_blocks_use_their_children_in_reverse_order():
    model = TinyLinear()
    stages = randomisation_stages(model, torch.zeros(1, 3, 32, 32))
    assert stages == [("linear", ["linear.weight", "linear.bias"])]


def test_evaluated_stages_spread_over_the_cascade():
    assert evaluated_stages(5, None) == [0, 1, 2, 3, 4]
    assert evaluated_stages(5, 9) == [0, 1, 2, 3, 4]
    assert evaluated_stages(7, 4) == [0, 2, 4, 6]
    assert evaluated_stages(5, 2) == [0, 4]
    assert evaluated_stages(5, 1) == [4]


# ---- parameter randomisation ---------------------------------------------------------------

def test_inherent_explanations_change_with_the_randomised_model(trained_pair, shapes_small):
    model = trained_pair["bcos_vit_nano"]
    result = _run("parameter_randomisation", model, "inherent", shapes_small[1])
    frame = result.records_frame()
    assert len(frame) == N_IMAGES * 3
    assert list(frame["stage"].iloc[:3]) == ["head", "block1", "block0"]
    assert list(frame["stage_index"].iloc[:3]) == [0, 1, 2]
    assert frame["sample_id"].iloc[1].endswith("/stage1")
    assert frame["sample_id"].iloc[0].startswith("img")
    last = frame[frame["stage"] == "block0"]["value"]
    assert last.mean() < 0.8, last.tolist()
    assert frame["value"].between(-1, 1).all() and frame["rho_signed"].between(-1, 1).all()
    fractions = frame["randomised_fraction"].iloc[:3].tolist()
    assert 0 < fractions[0] < fractions[1] < fractions[2] < 1
    assert result.summary["n_images"] == N_IMAGES
    assert result.summary["n_images_requested"] == N_IMAGES
    assert result.summary["final_mean"] == pytest.approx(last.mean())


@pytest.mark.parametrize("method", ["uniform", "centre", "random"])
@pytest.mark.parametrize("model_name", ["bcos_vit_nano", "vit_nano"])
def test_model_independent_maps_do_not_change(trained_pair, shapes_small, method, model_name):
    result = _run("parameter_randomisation", trained_pair[model_name], method, shapes_small[1])
    values = [r["value"] for r in result.records]
    assert len(values) == N_IMAGES * 3
    assert values == [1.0] * len(values)
    assert all(r["rho_signed"] == 1.0 for r in result.records)


def test_the_callers_model_is_untouched(trained_pair, shapes_small):
    model = trained_pair["vit_nano"]
    before = _state(model)
    flags = [m.training for m in model.modules()]
    _run("parameter_randomisation", model, "ixg", shapes_small[1])
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == flags


def test_records_are_reproducible_and_max_stages_subsets_them(trained_pair, shapes_small):
    model = trained_pair["bcos_vit_nano"]
    first = _run("parameter_randomisation", model, "ixg", shapes_small[1])
    second = _run("parameter_randomisation", model, "ixg", shapes_small[1])
    assert first.records == second.records
    short = _run("parameter_randomisation", model, "ixg", shapes_small[1], max_stages=2)
    assert sorted({r["stage"] for r in short.records}) == ["block0", "head"]
    full = {r["sample_id"]: r for r in first.records}
    assert all(full[r["sample_id"]] == r for r in short.records)  # same cascade, fewer stops


def test_the_method_is_called_in_batches_of_at_most_batch_size(trained_pair, shapes_small):
    model = trained_pair["bcos_vit_nano"]
    inner = xai_bench.get_method("inherent")
    sizes = []

    def counted(m, x, targets):
        sizes.append(x.shape[0])
        return inner(m, x, targets)

    for name in ("parameter_randomisation", "random_target"):
        sizes.clear()
        metric = xai_bench.get_metric(name, n_images=5)
        prepared = metric.prepare(model, shapes_small[1], device="cpu", batch_size=2, seed=0)
        metric.evaluate(model, counted, prepared, device="cpu", batch_size=2)
        assert sizes and max(sizes) <= 2


def test_parameter_validation():
    with pytest.raises(ValueError):
        xai_bench.get_metric("parameter_randomisation", n_images=0)
    with pytest.raises(ValueError):
        xai_bench.get_metric("parameter_randomisation", max_stages=0)
    with pytest.raises(ValueError):
        xai_bench.get_metric("random_target", n_images=0)


# ---- random target -------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["rollout", "finatt"])
@pytest.mark.parametrize("model_name", ["bcos_vit_nano", "vit_nano"])
def test_class_agnostic_methods_give_one(trained_pair, shapes_small, method, model_name):
    result = _run("random_target", trained_pair[model_name], method, shapes_small[1])
    assert [r["value"] for r in result.records] == [1.0] * N_IMAGES


def test_inherent_depends_on_the_class(trained_pair, shapes_small):
    result = _run("random_target", trained_pair["bcos_vit_nano"], "inherent", shapes_small[1])
    frame = result.records_frame()
    assert len(frame) == N_IMAGES and frame["value"].mean() < 1.0
    assert (frame["random_target"] != frame["target"]).all()
    assert frame["random_target"].between(0, 9).all()
    assert result.summary["n_images"] == N_IMAGES
    again = _run("random_target", trained_pair["bcos_vit_nano"], "inherent", shapes_small[1])
    assert again.records == result.records


def test_the_sanity_category_runs_through_evaluate(trained_pair, shapes_small):
    results = xai_bench.evaluate(models=[trained_pair["bcos_vit_nano"]],
                                 methods=["uniform", "inherent"], metrics="sanity",
                                 dataset=shapes_small[1], n_images=3,
                                 metric_params={"smooth_mprt": {"nr_samples": 4}})
    frame = results.records
    assert set(frame["metric"]) == {"parameter_randomisation", "random_target",
                                    "efficient_mprt", "smooth_mprt"}
    # eMPRT's relative rise is undefined for a constant map: uniform is skipped, with why
    constant = (frame["method"] == "uniform") & (frame["metric"] == "efficient_mprt")
    assert (frame.loc[constant, "status"] == "skipped").all() and constant.any()
    assert frame.loc[constant, "message"].str.contains("constant").all()
    assert (frame.loc[~constant, "status"] == "ok").all()
    assert set(frame["category"]) == {"sanity"}
    # every direction is the metric's own declaration (efficient_mprt: higher is better)
    for metric, rows in frame.groupby("metric"):
        assert set(rows["higher_is_better"]) == {xai_bench.METRICS.card(metric).higher_is_better}
    uniform = frame[(frame["method"] == "uniform") & (frame["metric"] == "random_target")]
    assert (uniform["value"] == 1.0).all()
