"""sparseness and complexity (xai_bench.metrics.complexity): known answers, equality with
Quantus 0.6.0 on identical maps, batched == per image, parts == whole, parameter errors."""

import math

import numpy as np
import pytest
import torch

import xai_bench
from xai_bench.contracts.parameters import resolve_parameters
from xai_bench.errors import ConfigError
from xai_bench.metrics import join_parts
from xai_bench.metrics.complexity import complexity, sparseness
from xai_bench.metrics.function import FunctionMetric
from xai_bench.metrics.quantus_adapter import ensure_quantus
from conftest import SelfLabelled

pytestmark = pytest.mark.usefixtures("one_thread")


def _maps(n=6, side=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, side, side, generator=g, dtype=torch.float64)


def _score(fn, maps, **kw):
    return fn(None, None, None, maps, **kw)


def test_known_answers_uniform_one_hot_zero():
    n = 10 * 10
    uniform = torch.full((1, 10, 10), 0.3)
    one_hot = torch.zeros(1, 10, 10)
    one_hot[0, 4, 7] = -2.0  # the sign goes with |.|
    zero = torch.zeros(1, 10, 10)
    assert abs(float(_score(sparseness, uniform))) < 1e-12
    assert float(_score(sparseness, one_hot)) == pytest.approx(1 - 1 / n, abs=1e-5)
    assert abs(float(_score(sparseness, zero))) < 1e-12  # the 1e-7 offset: uniform
    assert float(_score(complexity, uniform)) == pytest.approx(math.log(n), abs=1e-9)
    assert abs(float(_score(complexity, one_hot))) < 1e-9
    assert math.isnan(float(_score(complexity, zero)))  # 0/0, as Quantus
    # more concentrated: sparser and less complex
    spread = torch.rand(1, 10, 10, generator=torch.Generator().manual_seed(1))
    peaked = spread ** 8
    assert float(_score(sparseness, peaked)) > float(_score(sparseness, spread))
    assert float(_score(complexity, peaked)) < float(_score(complexity, spread))


@pytest.mark.parametrize("absolute", [True, False])
def test_equal_to_quantus_on_identical_maps(absolute):
    """One image at a time Quantus's batch-wide max normalisation is ours: equal to 1e-12;
    on a whole batch its normalisation by the batch's largest value moves the 1e-7 / 1e-12
    constants (measured: 8e-6 where one map is 50x the others, 1e-9 otherwise)."""
    quantus = ensure_quantus()
    maps = _maps()
    if not absolute:
        maps = maps.abs()  # Quantus's Gini / entropy of a signed map mean little; keep >= 0
        maps[1] *= 50  # a large map: batch-wide normalisation differs from per-map
    x = np.random.default_rng(0).random((len(maps), 3, *maps.shape[1:]))
    y = np.zeros(len(maps), dtype=int)
    kw = dict(abs=absolute, disable_warnings=True, return_aggregate=False)
    for fn, cls in ((sparseness, quantus.Sparseness), (complexity, quantus.Complexity)):
        ours = _score(fn, maps, absolute=absolute).numpy()
        single = np.array([cls(**kw)(None, x[i:i + 1], y[i:i + 1],
                                     a_batch=maps[i:i + 1].numpy().copy())[0]
                           for i in range(len(maps))])
        whole = np.array(cls(**kw)(None, x, y, a_batch=maps.numpy().copy()))
        assert np.abs(ours - single).max() < 1e-12, fn.__name__
        assert np.abs(ours - whole).max() < (1e-4 if not absolute else 1e-6), fn.__name__


def test_batched_equals_per_image():
    maps = _maps(n=5)
    maps[2] = 0.0
    for fn in (sparseness, complexity):
        whole = _score(fn, maps)
        single = torch.cat([_score(fn, maps[i:i + 1]) for i in range(len(maps))])
        assert torch.equal(torch.nan_to_num(whole, nan=-1.0), torch.nan_to_num(single, nan=-1.0))


def test_registered_with_their_cards():
    names = xai_bench.METRICS.list()
    assert {"sparseness", "complexity"} <= set(names)
    s, c = FunctionMetric(sparseness), FunctionMetric(complexity)
    assert (s.category, s.higher_is_better, s.chance) == ("complexity", True, 0.0)
    assert (c.category, c.higher_is_better) == ("complexity", False)
    assert s.params == dict(n_images=250, normalise=True, absolute=True,
                         selection="stratified")


def test_bad_parameters_are_one_line_errors():
    for name, fn in (("sparseness", sparseness), ("complexity", complexity)):
        with pytest.raises(ConfigError, match="absolute") as e:
            resolve_parameters("metric", name, fn, {"absolute": 1})
        assert "\n" not in str(e.value)
        with pytest.raises(ConfigError, match="unknown parameter 'abs'"):
            resolve_parameters("metric", name, fn, {"abs": True})


def test_parts_equal_whole_through_the_harness():
    """The function metrics through the harness: parts cut at batch multiples == whole."""
    torch.manual_seed(0)
    model = xai_bench.get_model("bcos_vit_nano", embed_dim=32, depth=2, num_heads=2,
                                stem_channels=(8, 16)).eval()
    data = SelfLabelled(model)
    method = xai_bench.get_method("ixg")
    for fn in (sparseness, complexity):
        metric = FunctionMetric(fn, n_images=10)
        prepared = metric.prepare(model, data, batch_size=4)
        whole = metric.evaluate(model, method, prepared, batch_size=4)
        parts = [metric.evaluate_part(model, method, prepared, a, b, batch_size=4)
                 for a, b in ((0, 4), (4, 10))]
        joined = metric.reduce(model, prepared, join_parts(parts))
        assert [r["value"] for r in joined.records] == [r["value"] for r in whole.records]
        assert len(whole.records) == 10
        values = torch.tensor([r["value"] for r in whole.records])
        assert torch.isfinite(values).all()
