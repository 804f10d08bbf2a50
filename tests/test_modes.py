"""xai_bench.compute.modes.eval_mode: eval mode for the duration, each submodule's own flag after."""

import pytest
import torch
from torch import nn

from xai_bench.compute.modes import eval_mode


def _mixed_model():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    model.train()
    model[0].eval()  # a frozen part kept in eval mode while the rest trains
    return model


def test_eval_mode_restores_each_submodules_own_flag():
    model = _mixed_model()
    before = [m.training for m in model.modules()]
    assert before == [True, False, True, True]
    with eval_mode(model) as inner:
        assert inner is model
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    assert model[0].training is False  # the frozen part is not flipped to train mode


def test_eval_mode_restores_on_error_and_leaves_eval_models_alone():
    model = _mixed_model()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == [True, False, True, True]
    frozen = nn.Sequential(nn.Linear(2, 2)).eval()
    with eval_mode(frozen):
        assert not frozen.training
    assert not any(m.training for m in frozen.modules())


def test_eval_mode_passes_plain_objects_through():
    class Double:
        training = True

        def eval(self):  # must not be called: not an nn.Module
            raise AssertionError("eval() called on a non-Module")

    obj = Double()
    with eval_mode(obj) as inner:
        assert inner is obj
    assert obj.training is True
    with eval_mode(None) as inner:
        assert inner is None


def test_no_other_eval_mode_helpers_remain():
    import xai_bench.methods.gradient as gradient
    import xai_bench.metrics.base as metrics_base

    assert not hasattr(gradient, "evaluating")
    assert not hasattr(metrics_base, "eval_mode")
    x = torch.zeros(1, 4)
    model = _mixed_model()
    with eval_mode(model):
        assert torch.equal(model(x), model(x))  # dropout off
