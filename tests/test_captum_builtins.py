"""The named methods computed by captum (xai_bench.methods.captum_builtins), intgrad's
baselines (xai_bench.methods.input_baselines), captum's batching from the harness's chunk, and
method groups (``--methods paper``): each named method equals captum's own result on the same
model, inputs and random state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xai_bench
from xai_bench.compute import chunking
from xai_bench.compute.seeding import content_seed
from xai_bench.contracts.model import decode
from xai_bench.errors import ConfigError, RegistryError, UnknownNameError
from xai_bench.methods.input_baselines import baseline_inputs

from conftest import model_raising_above

pytestmark = pytest.mark.usefixtures("one_thread")

captum_attr = pytest.importorskip("captum.attr")

TINY = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=(8, 16), num_classes=4)


@pytest.fixture(scope="module", params=["vit_nano", "bcos_vit_nano"])
def model(request):
    torch.manual_seed(0)
    return xai_bench.get_model(request.param, **TINY).eval()


@pytest.fixture(scope="module")
def data(model):
    g = torch.Generator().manual_seed(1)
    return model.encode(torch.rand(3, 3, 32, 32, generator=g)), torch.tensor([0, 3, 1])


def reference(model, make, x, targets, seed=None, **kwargs):
    """captum's attribution summed over channels; with ``seed``, image by image with torch's
    and numpy's global generators seeded by the image content (as the methods document)."""
    def one(xs, ts):
        with torch.enable_grad():
            return make(model).attribute(xs.clone().requires_grad_(True), target=ts,
                                         **kwargs).sum(1).detach()
    if seed is None:
        return one(x, targets)
    out = []
    for img, t in zip(x, targets):
        s = content_seed(img, seed)
        torch.manual_seed(s)
        np.random.seed(s % 2 ** 32)
        out.append(one(img[None], t[None]))
    return torch.cat(out)


def input_range(model):
    ends = model.encode(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1))
    return float((ends[1] - ends[0]).abs().max())


def close(a, b, tol=1e-5):
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)


# ------------------------------------------------------------------ equal to captum's result

def test_saliency_equals_captum(model, data):
    x, t = data
    close(xai_bench.get_method("saliency")(model, x, t),
          reference(model, captum_attr.Saliency, x, t))
    close(xai_bench.get_method("saliency", abs=False)(model, x, t),
          reference(model, captum_attr.Saliency, x, t, abs=False))


@pytest.mark.parametrize("name,nt_type,absolute", [("smoothgrad", "smoothgrad", True),
                                                   ("vargrad", "vargrad", False)])
def test_noise_tunnel_methods_equal_captum(model, data, name, nt_type, absolute):
    x, t = data
    ours = xai_bench.get_method(name, nt_samples=5, seed=7)(model, x, t)
    ref = reference(model, lambda m: captum_attr.NoiseTunnel(captum_attr.Saliency(m)), x, t,
                    seed=7, nt_type=nt_type, nt_samples=5, abs=absolute,
                    stdevs=0.15 * input_range(model))
    close(ours, ref)


def test_gradient_shap_equals_captum(model, data):
    x, t = data
    ours = xai_bench.get_method("gradient_shap", n_samples=6, noise_level=0.1, seed=2)(model, x, t)
    refs = []
    for img, target in zip(x, t):
        base = torch.zeros_like(img[None]).repeat(2, 1, 1, 1)
        refs.append(reference(model, captum_attr.GradientShap, img[None], target[None], seed=2,
                              n_samples=6, stdevs=0.1 * input_range(model), baselines=base))
    close(ours, torch.cat(refs))


def test_deeplift_equals_captum(model, data):
    x, t = data
    ours = xai_bench.get_method("deeplift")(model, x, t)
    close(ours, reference(model, captum_attr.DeepLift, x, t, baselines=torch.zeros_like(x)))


def test_occlusion_equals_captum_with_a_token_window(model, data):
    x, t = data
    c = x.shape[1]
    rows, cols = model.token_grid
    window = (c, 32 // rows, 32 // cols)
    ref = reference(model, captum_attr.Occlusion, x, t, sliding_window_shapes=window,
                    strides=window, baselines=torch.zeros_like(x))
    close(xai_bench.get_method("occlusion")(model, x, t), ref)
    close(xai_bench.get_method("occlusion", chunk_size=1)(model, x, t), ref)  # chunking


def test_kernel_shap_equals_captum(model, data):
    pytest.importorskip("sklearn")
    from xai_bench.methods.captum_adapter import token_feature_mask

    x, t = data
    ours = xai_bench.get_method("kernel_shap", n_samples=40, seed=4)(model, x, t)
    # 40 coalitions of 64 features: the regression is underdetermined, and float32 rounding
    # differences between batch sizes move its solution, so captum evaluates the perturbations
    # in the same batches as ours (the chunk: 64 per pass on the CPU)
    ref = reference(model, captum_attr.KernelShap, x, t, seed=4, n_samples=40,
                    baselines=torch.zeros_like(x[:1]), perturbations_per_eval=64,
                    feature_mask=token_feature_mask(model, x[:1]))
    close(ours, ref, tol=1e-4)


def test_lime_equals_captum_with_the_reference_kernel_and_ridge(model, data):
    pytest.importorskip("sklearn")
    from captum._utils.models.linear_model import SkLearnRidge
    from sklearn.metrics import pairwise_distances

    from xai_bench.methods.captum_adapter import token_feature_mask
    from xai_bench.methods.captum_builtins import lime_similarity

    # the kernel is LIME's: sqrt(exp(-d²/w²)), d the cosine distance of the binary sample to
    # the all-ones vector (sklearn's pairwise cosine distance, as the reference computes it)
    z = (torch.rand(7, 16, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    z[0] = 0  # an empty sample: distance 1
    d = pairwise_distances(np.vstack([np.ones(16), z.numpy()]), np.ones((1, 16)),
                           metric="cosine").ravel()[1:]
    d[0] = 1.0
    expected = np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2))
    got = [float(lime_similarity(0.25)(None, None, row[None])) for row in z]
    np.testing.assert_allclose(got, expected, rtol=1e-12)

    x, t = data
    ours = xai_bench.get_method("lime", n_samples=40, seed=5)(model, x, t)
    ref = reference(model, lambda m: captum_attr.Lime(
        m, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=lime_similarity(0.25)),
        x, t, seed=5, n_samples=40, baselines=torch.zeros_like(x[:1]),
        feature_mask=token_feature_mask(model, x[:1]))
    close(ours, ref, tol=1e-4)


@pytest.mark.parametrize("name,params", [("smoothgrad", dict(nt_samples=3)),
                                         ("gradient_shap", dict(n_samples=3)),
                                         ("occlusion", {}), ("deeplift", dict(baseline="blurred")),
                                         ("lime", dict(n_samples=20)),
                                         ("kernel_shap", dict(n_samples=20)),
                                         ("intgrad", dict(n_steps=4, baseline="uniform"))])
def test_batched_equals_per_image(model, data, name, params):
    if name in ("lime", "kernel_shap"):
        pytest.importorskip("sklearn")
    x, t = data
    method = xai_bench.get_method(name, **params)
    single = torch.cat([method(model, x[i:i + 1], t[i:i + 1]) for i in range(len(x))])
    close(method(model, x, t), single)


# ------------------------------------------------------------------ baselines

def test_intgrad_baselines_equal_captum_from_the_built_input(model, data):
    x, t = data
    for baseline in ("zeros", "blurred", "uniform", 0.5):
        base = baseline_inputs(model, x, baseline, seed=0)
        ours = xai_bench.get_method("intgrad", n_steps=8, baseline=baseline)(model, x, t)
        ref = reference(model, captum_attr.IntegratedGradients, x, t, baselines=base, n_steps=8)
        close(ours, ref)
    with pytest.raises(ConfigError, match="baseline"):
        xai_bench.get_method("intgrad", baseline="black")


def test_baseline_inputs_are_what_they_say(model, data):
    x, _ = data
    assert torch.equal(baseline_inputs(model, x, "zeros"), torch.zeros_like(x))
    grey = decode(model, baseline_inputs(model, x, 0.25))
    torch.testing.assert_close(grey, torch.full_like(grey, 0.25))
    noise = decode(model, baseline_inputs(model, x, "uniform", seed=3))
    assert noise.min() >= 0 and noise.max() <= 1 and noise.std() > 0.2
    again = baseline_inputs(model, x[1:2], "uniform", seed=3)  # per image, not per position
    torch.testing.assert_close(again, baseline_inputs(model, x, "uniform", seed=3)[1:2])
    blurred = decode(model, baseline_inputs(model, x, "blurred", blur_sigma=2.0))
    images = decode(model, x)
    assert blurred.shape == images.shape
    # a blur keeps the mean colour (replicated edges) and lowers the pixel-to-pixel variation
    torch.testing.assert_close(blurred.mean((2, 3)), images.mean((2, 3)), atol=0.02, rtol=0)
    step = lambda im: (im[..., 1:] - im[..., :-1]).abs().mean()  # noqa: E731
    assert step(blurred) < 0.5 * step(images)
    constant = torch.full((1, 3, 32, 32), 0.3)
    flat = decode(model, baseline_inputs(model, model.encode(constant), "blurred"))
    torch.testing.assert_close(flat, constant)


# ------------------------------------------------------------------ batching and memory

def test_chunk_comes_from_the_harness_and_halves_on_oom(model, data, monkeypatch):
    x, t = data
    method = xai_bench.get_method("occlusion")
    assert method.chunk_for(model, x) == 64  # the CPU cap for small inputs, memory to spare
    assert xai_bench.get_method("occlusion", chunk_size=5).chunk_for(model, x) == 15  # per image
    expected = method(model, x, t)
    calls = model_raising_above(model, 8, monkeypatch)
    chunking.clear_cache()
    got = method(model, x, t)
    monkeypatch.undo()
    chunking.clear_cache()
    assert max(calls[-5:]) <= 8 and any(c > 8 for c in calls)
    close(got, expected)


def test_a_smaller_chunk_than_the_batch_splits_it(model, data):
    x, t = data
    whole = xai_bench.get_method("intgrad", n_steps=4)(model, x, t)
    close(xai_bench.get_method("intgrad", n_steps=4, chunk_size=1)(model, x, t), whole)
    assert xai_bench.get_method("intgrad", chunk_size=8).params["chunk_size"] == 8


# ------------------------------------------------------------------ groups and errors

def test_method_groups():
    methods = xai_bench.METHODS
    paper = {"inherent", "ixg", "intgrad", "rollout", "finatt", "gradsam", "gradcam",
             "chefer_lrp", "plrp"}
    assert set(methods.resolve("paper")) == paper
    assert set(methods.resolve("default")) == paper | {"vit_cx", "random", "uniform", "centre"}
    assert {"saliency", "smoothgrad", "occlusion", "lime", "ixg", "intgrad"} <= set(
        methods.resolve("captum"))
    assert {"occlusion", "lime", "kernel_shap", "vit_cx"} <= set(methods.resolve("perturbation"))
    assert set(methods.resolve("baseline")) == {"random", "uniform", "centre"}
    assert set(methods.resolve("all")) >= set(methods.resolve("default")) | {"gae", "saliency"}
    assert methods.resolve("paper,saliency")[-1] == "saliency"
    from xai_bench.run.config import RunConfig

    assert RunConfig().methods == ["default"]
    with pytest.raises(UnknownNameError, match="did you mean 'paper'"):
        methods.resolve("papr")


def test_cli_accepts_an_integer_for_an_auto_parameter():
    from xai_bench.contracts.parameters import resolve_parameters
    from xai_bench.methods.gradient import IntegratedGradients

    params = resolve_parameters("method", "intgrad", IntegratedGradients, {"chunk_size": 8})
    assert params["chunk_size"] == 8
    with pytest.raises(ConfigError, match="chunk_size"):
        resolve_parameters("method", "intgrad", IntegratedGradients, {"chunk_size": "big"})


def test_lime_without_scikit_learn_is_a_one_line_refusal(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(RegistryError, match="pip install scikit-learn") as info:
        xai_bench.get_method("lime")
    assert "\n" not in str(info.value)


def test_noise_is_in_units_of_the_input_range():
    from xai_bench.methods.captum_builtins import input_range as ours

    bcos = xai_bench.get_model("bcos_vit_nano", **TINY)
    assert math.isclose(ours(bcos, torch.zeros(1, 6, 4, 4)), 1.0)
