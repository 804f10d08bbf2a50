"""The contracts (xai_bench.contracts), parameter resolution (xai_bench.contracts.parameters) and
content identities (xai_bench.storage.identity)."""

import functools

import pytest
import torch

import xai_bench
from xai_bench.errors import ConfigError, ContractError
from xai_bench.storage.identity import code_identity, differences, module_closure, weights_digest
from xai_bench.contracts.method import CheckedMethod, check_method
from xai_bench.contracts.metric import check_metric
from xai_bench.contracts.model import (
    capabilities, check_model, has_attention, has_lrp, is_dynamic_linear, model_attr,
)
from xai_bench.contracts.parameters import build_entry, resolve_parameters


def test_builtin_models_satisfy_the_contract_with_their_capabilities():
    bcos, vit = xai_bench.get_model("bcos_vit_nano"), xai_bench.get_model("vit_nano")
    assert capabilities(bcos) == ["attention", "dynamic_linear"]
    assert capabilities(vit) == ["attention", "lrp"]
    card = check_model(vit)
    assert card["family"] == "conventional" and card["parameters"] == vit.num_parameters()
    assert card["image_size"] == [32, 32] and card["num_classes"] == 10
    assert check_model(bcos)["family"] == "bcos"


def test_check_model_names_every_missing_member():
    class Half(torch.nn.Module):
        image_size = (8, 8)

        def forward(self, x):
            return x

    with pytest.raises(ContractError) as err:
        check_model(Half(), "half")
    message = str(err.value)
    for member in ("num_classes", "encode()", "confidence()", "training_loss"):
        assert member in message
    assert "image_size" not in message.split("lacks")[1].split("of the")[0]


def test_optional_members_have_their_documented_defaults():
    class Bare:
        pass

    bare = Bare()
    assert model_attr(bare, "logit_bias") == 0.0 and model_attr(bare, "pooling") == "mean"
    assert model_attr(bare, "family") == "conventional" and model_attr(bare, "in_channels") == 3
    with model_attr(bare, "explanation_mode")() as inside:
        assert inside is bare
    assert not has_attention(bare) and not has_lrp(bare) and not is_dynamic_linear(bare)
    with pytest.raises(KeyError):
        model_attr(bare, "not_a_member")


def test_any_callable_is_a_method_and_its_results_are_checked():
    def plain(model, x, targets):
        return x.sum(1)

    checked = check_method(plain)
    assert checked.name == "plain" and checked.params == {} and checked.applies_to(object())
    x = torch.rand(2, 3, 4, 4)
    assert checked(None, x, torch.zeros(2)).shape == (2, 4, 4)
    with pytest.raises(ContractError, match="cannot be called as method"):
        check_method(lambda model: model)
    with pytest.raises(ContractError, match="is a class"):
        check_method(CheckedMethod)
    bad = CheckedMethod(lambda m, x, t: x.sum(1).long(), name="ints")
    with pytest.raises(ContractError, match="floating dtype"):
        bad(None, x, torch.zeros(2))
    with pytest.raises(ContractError, match="not a tensor"):
        CheckedMethod(lambda m, x, t: [1], name="list")(None, x, torch.zeros(2))


def test_check_metric_lists_missing_members():
    class NotAMetric:
        name = "n"

    with pytest.raises(ContractError, match="category, higher_is_better, params, prepare"):
        check_metric(NotAMetric())
    assert check_metric(xai_bench.get_metric("deletion")) is not None


def test_parameters_after_defaults_and_their_checks():
    cls = xai_bench.METHODS.get("intgrad")
    params = resolve_parameters("method", "intgrad", cls, {"n_steps": 5})
    assert params["n_steps"] == 5 and len(params) > 1  # the defaults are filled in
    with pytest.raises(ConfigError, match="did you mean 'n_steps'"):
        resolve_parameters("method", "intgrad", cls, {"n_stepz": 5})
    with pytest.raises(ConfigError, match="must be an integer"):
        resolve_parameters("method", "intgrad", cls, {"n_steps": 2.5})

    def function_method(model, x, targets, *, power=1.0, mode="abs"):
        return x.sum(1)

    assert resolve_parameters("method", "f", function_method, {"power": 2}) == \
        {"power": 2, "mode": "abs"}
    obj, params = build_entry("method", "f", function_method, {"power": 3.0})
    assert isinstance(obj, functools.partial) and obj.keywords == {"power": 3.0}
    assert params == {"power": 3.0, "mode": "abs"}
    with pytest.raises(ConfigError, match="takes no parameters"):
        resolve_parameters("method", "duck", CheckedMethod(function_method), {"power": 1})


def test_code_identity_follows_the_source_closure():
    rollout = code_identity(xai_bench.METHODS.get("rollout"))
    uniform = code_identity(xai_bench.METHODS.get("uniform"))
    assert rollout["package"] == "xai-bench" and rollout["source"] != uniform["source"]
    assert "methods/attention.py" in module_closure("xai_bench.methods.attention")
    assert "methods/attention.py" not in module_closure("xai_bench.methods.baselines")
    assert "methods/base.py" in module_closure("xai_bench.methods.baselines")

    def local(model, x, targets):
        return x

    ident = code_identity(local)
    assert ident["class"].endswith("local") and ident["source"]


def test_weights_digest_changes_with_any_weight_and_differences_name_the_leaf():
    model = xai_bench.get_model("vit_nano")
    before = weights_digest(model)
    assert weights_digest(model) == before
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    assert weights_digest(model) != before
    assert differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == [(("a", "c"), 2, 3)]
    assert differences({"a": 1}, {"a": 1}) == []
