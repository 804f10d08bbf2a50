"""``captum:<Name>`` methods (xai_bench.methods.captum_adapter) against captum itself."""

from __future__ import annotations

import pytest
import torch

import xai_bench
from xai_bench.compute.seeding import content_seed
from xai_bench.errors import ConfigError, UnknownNameError
from xai_bench.storage.results import read_records

captum_attr = pytest.importorskip("captum.attr")

TINY = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=(8, 16))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return xai_bench.get_model("vit_nano", **TINY).eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 32, 32, generator=g), torch.tensor([0, 3, 7])


def _captum(model, cls, x, targets, **kwargs):
    with torch.enable_grad():
        return cls(model).attribute(x.clone().requires_grad_(True), target=targets,
                                    **kwargs).sum(1).detach()


@pytest.mark.parametrize("name", ["Saliency", "InputXGradient"])
def test_gradient_attributions_equal_captum(model, data, name):
    x, t = data
    ours = xai_bench.get_method(f"captum:{name}")(model, x, t)
    assert torch.allclose(ours, _captum(model, getattr(captum_attr, name), x, t), atol=1e-6)


def test_occlusion_equals_captum(model, data):
    x, t = data
    ours = xai_bench.get_method("captum:Occlusion", sliding_window_shapes=(3, 8, 8),
                                strides=(3, 4, 4))(model, x, t)
    ref = _captum(model, captum_attr.Occlusion, x, t, sliding_window_shapes=(3, 8, 8),
                  strides=(3, 4, 4))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_occlusion_default_window_is_one_token_patch(model, data):
    x, t = data
    rows, cols = model.token_grid
    window = (3, 32 // rows, 32 // cols)
    ours = xai_bench.get_method("captum:Occlusion")(model, x, t)
    ref = _captum(model, captum_attr.Occlusion, x, t, sliding_window_shapes=window,
                  strides=window)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_noise_tunnel_equals_captum_with_the_seed(model, data):
    x, t = data
    method = xai_bench.get_method("captum:NoiseTunnel(Saliency)", nt_samples=4, stdevs=0.5,
                                  seed=3)
    ours = method(model, x, t)
    refs = []
    for img, target in zip(x, t):
        torch.manual_seed(content_seed(img, 3))
        refs.append(_captum(model, lambda m: captum_attr.NoiseTunnel(captum_attr.Saliency(m)),
                            img[None], target[None], nt_samples=4, stdevs=0.5,
                            nt_type="smoothgrad"))
    assert torch.allclose(ours, torch.cat(refs), atol=1e-6)
    assert method.params["nt_samples"] == 4 and method.params["captum_version"]


@pytest.mark.parametrize("name,kwargs", [("Saliency", {}),
                                         ("Occlusion", {"sliding_window_shapes": (3, 8, 8)}),
                                         ("NoiseTunnel(Saliency)", {"nt_samples": 2}),
                                         ("FeatureAblation", {})])
def test_batched_equals_per_image(model, data, name, kwargs):
    x, t = data
    method = xai_bench.get_method(f"captum:{name}", **kwargs)
    batched = method(model, x, t)
    single = torch.cat([method(model, x[i:i + 1], t[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(batched, single, atol=1e-5)


def test_feature_ablation_perturbs_token_cells(model, data):
    x, t = data
    maps = xai_bench.get_method("captum:FeatureAblation")(model, x[:1], t[:1])[0]
    rows, cols = model.token_grid
    ph, pw = 32 // rows, 32 // cols
    cells = maps.reshape(rows, ph, cols, pw).permute(0, 2, 1, 3).reshape(rows * cols, -1)
    # captum gives every pixel of a feature its total, split over the channels: within a
    # token cell the channel-summed map is constant
    assert torch.allclose(cells, cells[:, :1].expand_as(cells), atol=1e-6)


def test_params_and_identity_record_captum_version(model):
    method = xai_bench.get_method("captum:IntegratedGradients", n_steps=8)
    assert method.params["n_steps"] == 8
    assert method.params["captum_version"] == __import__("captum").__version__


def test_unknown_name_is_one_line_with_a_suggestion():
    with pytest.raises(UnknownNameError) as e:
        xai_bench.get_method("captum:Saliancy")
    assert "captum:Saliency" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UnknownNameError) as e:
        xai_bench.get_method("captum:NoiseTunnel(InputXGradiant)")
    assert "captum:InputXGradient" in str(e.value)


def test_unknown_or_invalid_argument_is_one_line_with_a_suggestion():
    with pytest.raises(ConfigError) as e:
        xai_bench.get_method("captum:Occlusion", sliding_window_shape=(3, 8, 8))
    text = str(e.value)
    assert "sliding_window_shapes" in text and "\n" not in text
    with pytest.raises(ConfigError):
        xai_bench.get_method("captum:NoiseTunnel(Saliency)", nt_type="smooth")
    with pytest.raises(ConfigError):
        xai_bench.get_method("captum:Occlusion", strides=(0, 4, 4))


def test_cli_parses_captum_method_args():
    from xai_bench.cli.common import dotted_params

    parsed = dotted_params(["captum:Occlusion.sliding_window_shapes=6,8,8",
                            "captum:NoiseTunnel(Saliency).nt_samples=4"],
                           "--method-arg", "METHOD", "x.k=v")
    assert parsed == {"captum:Occlusion": {"sliding_window_shapes": (6, 8, 8)},
                      "captum:NoiseTunnel(Saliency)": {"nt_samples": 4}}


def test_evaluate_runs_a_captum_method(tmp_path):
    result = xai_bench.evaluate(models=["vit_nano"], untrained=True,
                                methods=["captum:Saliency",
                                         "captum:NoiseTunnel(Saliency)"],
                                method_params={"captum:NoiseTunnel(Saliency)":
                                               {"nt_samples": 2}},
                                metrics="deletion", n_images=2, out=tmp_path / "r",
                                plots=False, report=False, progress=False)
    records = read_records(result.run_dir)
    assert set(records["method"]) == {"captum:Saliency", "captum:NoiseTunnel(Saliency)"}
    assert (records["status"] == "ok").all(), records[records["status"] != "ok"]
