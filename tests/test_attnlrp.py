"""AttnLRP and CP-LRP (docs/definitions.md, 'attnlrp' and 'cp_lrp'): agreement with an
independent relevance computation built from lxt's own rule functions, conservation, the call
contract (shapes, batched = per-image, model state left alone), applicability, parameters.

Models: the conventional twin (embed 32, depth 2) and tiny timm ViTs (32×32 input, patch 8),
float64, with every parameter and batch-norm statistic randomised (so that biases, LayerNorm
weights and the batch norms all matter), 2-3 images each.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_bench
from xai_bench.errors import ConfigError
from xai_bench.methods import attnlrp_rules
from xai_bench.methods.attnlrp import input_relevance, rule_logits, unsupported
from xai_bench.methods.base import MethodNotApplicable

pytestmark = pytest.mark.usefixtures("one_thread")

TWIN = dict(embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16), num_classes=4)
TIMM = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=4)
TIMM_VARIANTS = {"cls": {}, "avg_layerscale": dict(global_pool="avg", class_token=False,
                                                   init_values=0.5)}
METHODS = {"attnlrp": False, "cp_lrp": True}  # name: conservative
# float64 agreement with lxt's rules (sign-aware stabiliser on both sides): measured <= 4e-14
REFERENCE_RTOL = 1e-10


def randomise(model, seed=0):
    """Weights of a realistic scale (std 1/√fan-in), non-zero biases, LayerNorm weights around
    1, random position embeddings / class tokens and batch-norm statistics; float64, eval."""
    g = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "pos_embed" not in name and "token" not in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype)
                        / math.sqrt(p[0].numel()))
            elif name.endswith("weight") or name.endswith("gamma"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def twin():
    return randomise(xai_bench.get_model("vit_nano", **TWIN))


_TIMM_CACHE: dict = {}


def timm_model(variant):
    pytest.importorskip("timm", reason="the timm ViT checks need timm")
    if variant not in _TIMM_CACHE:
        _TIMM_CACHE[variant] = randomise(xai_bench.get_model(
            "timm:vit_tiny_patch16_224", **TIMM, **TIMM_VARIANTS[variant]), seed=1)
    return _TIMM_CACHE[variant]


@pytest.fixture(params=["twin"] + [f"timm_{v}" for v in TIMM_VARIANTS])
def model(request, twin):
    """The twin and each timm variant (float64, randomised; built once per module)."""
    if request.param == "twin":
        return twin
    return timm_model(request.param[len("timm_"):])


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64), torch.arange(n) % 4


# ------------------------------------------------------------------ lxt's rules, loaded by path


@pytest.fixture(scope="module")
def lxt():
    """lxt's explicit rule modules (``functional``: linear_epsilon, softmax, matmul, add2,
    layer_norm, mean, mul2; ``rules``: epsilon_lrp, identity), loaded by file path: the
    package ``__init__`` imports transformers models that transformers 5 removed."""
    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lxt is not installed: the reference check needs lxt's rule functions")
    base = list(spec.submodule_search_locations)[0]

    def load(name, relative):
        s = importlib.util.spec_from_file_location(name, os.path.join(base, relative))
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
        return module

    functional = load("lxt_reference_functional", "explicit/functional.py")
    # rules.py imports `lxt.explicit.functional`: serve it the module just loaded
    added = "lxt.explicit.functional" not in sys.modules
    sys.modules.setdefault("lxt.explicit.functional", functional)
    try:
        rules = load("lxt_reference_rules", "explicit/rules.py")
    finally:
        if added:
            del sys.modules["lxt.explicit.functional"]
    return functional, rules


@contextlib.contextmanager
def sign_aware(lxt):
    """lxt's stabiliser ``z + ε`` replaced by ``z + ε·sgn(z)`` (sgn(0) = 1), the one
    xai-bench uses (docs: deviations), in both loaded lxt modules."""
    functional, rules = lxt
    original = functional._stabilize

    def stabilize(input, epsilon=1e-6, inplace=False):
        return input + epsilon * ((input >= 0).to(input.dtype) * 2 - 1)

    functional._stabilize = rules._stabilize = stabilize
    try:
        yield
    finally:
        functional._stabilize = rules._stabilize = original


def ref_layer_norm(lf, x, norm, eps):
    if isinstance(norm, nn.Identity):
        return x
    return lf.layer_norm_grad_fn.apply(x, norm.weight, norm.bias, norm.eps, eps)


def ref_attention(lf, lr, x, attn, scale, scale_queries, conservative, eps):
    b, n, _ = x.shape
    h, dh = attn.num_heads, attn.head_dim
    qkv = lf.linear_epsilon(x, attn.qkv.weight, attn.qkv.bias, eps)
    q, k, v = qkv.reshape(b, n, 3, h, dh).permute(2, 0, 3, 1, 4).unbind(0)
    if conservative:
        q, k = q.detach(), k.detach()
    if scale_queries:
        scores = lf.matmul(lf.mul2(q, scale), k.transpose(-2, -1), False, eps)
    else:
        scores = lf.mul2(lf.matmul(q, k.transpose(-2, -1), False, eps), scale)
    a = lf.softmax(scores, -1)
    if conservative:
        a = a.detach()
        out = lr.epsilon_lrp(lambda values: a @ values, eps, v)
    else:
        out = lf.matmul(a, v, False, eps)
    out = out.transpose(1, 2).reshape(b, n, h * dh)
    out = ref_layer_norm(lf, out, getattr(attn, "norm", nn.Identity()), eps)
    return lf.linear_epsilon(out, attn.proj.weight, attn.proj.bias, eps)


def ref_mlp(lf, lr, x, mlp, eps, act=F.gelu):
    hidden = lr.identity(act, lf.linear_epsilon(x, mlp.fc1.weight, mlp.fc1.bias, eps))
    hidden = ref_layer_norm(lf, hidden, getattr(mlp, "norm", nn.Identity()), eps)
    return lf.linear_epsilon(hidden, mlp.fc2.weight, mlp.fc2.bias, eps)


def ref_conv(lr, x, conv, eps):
    return lr.epsilon_lrp(lambda a: F.conv2d(a, conv.weight, conv.bias, conv.stride,
                                             conv.padding), eps, x)


def ref_twin_logits(lxt, model, x, conservative, eps):
    lf, lr = lxt
    h = x
    for layer in model.tokeniser.stem:
        if isinstance(layer, nn.Conv2d):
            h = ref_conv(lr, h, layer, eps)
        elif isinstance(layer, nn.BatchNorm2d):
            h = lr.epsilon_lrp(lambda a, bn=layer: F.batch_norm(
                a, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps),
                eps, h)
        else:
            h = lr.identity(F.relu, h)
    t = ref_conv(lr, h, model.tokeniser.to_tokens, eps).flatten(2).transpose(1, 2)
    t = lf.add2(t, model.pos_embed, False, eps)
    for blk in model.blocks:
        a = ref_attention(lf, lr, ref_layer_norm(lf, t, blk.norm1, eps), blk.attn,
                          1 / math.sqrt(blk.attn.head_dim), False, conservative, eps)
        t = lf.add2(t, a, False, eps)
        t = lf.add2(t, ref_mlp(lf, lr, ref_layer_norm(lf, t, blk.norm2, eps), blk.mlp, eps),
                    False, eps)
    pooled = lf.mean(ref_layer_norm(lf, t, model.norm, eps), 1, False, eps)
    return lf.linear_epsilon(pooled, model.head.weight, model.head.bias, eps)


def ref_timm_logits(lxt, model, x, conservative, eps):
    lf, lr = lxt
    net = model.model
    t = ref_conv(lr, x, net.patch_embed.proj, eps).flatten(2).transpose(1, 2)
    if net.cls_token is not None:
        t = torch.cat([net.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
    t = lf.add2(t, net.pos_embed, False, eps)
    for blk in net.blocks:
        a = ref_attention(lf, lr, ref_layer_norm(lf, t, blk.norm1, eps), blk.attn,
                          blk.attn.scale, True, conservative, eps)
        if not isinstance(blk.ls1, nn.Identity):  # a constant factor: all relevance to `a`
            a = lf.mul2(a, blk.ls1.gamma.detach())
        t = lf.add2(t, a, False, eps)
        m = ref_mlp(lf, lr, ref_layer_norm(lf, t, blk.norm2, eps), blk.mlp, eps)
        if not isinstance(blk.ls2, nn.Identity):
            m = lf.mul2(m, blk.ls2.gamma.detach())
        t = lf.add2(t, m, False, eps)
    t = ref_layer_norm(lf, t, net.norm, eps)
    if net.global_pool == "token":
        pooled = t[:, 0]
    else:
        pooled = lf.mean(t[:, net.num_prefix_tokens:], 1, False, eps)
    pooled = ref_layer_norm(lf, pooled, net.fc_norm, eps)
    return lf.linear_epsilon(pooled, net.head.weight, net.head.bias, eps)


def lxt_maps(lxt, model, x, targets, conservative, eps):
    """Explicit relevance propagation with lxt's functions: the backward pass carries
    relevance itself, starting from one-hot × logit; the map is the input relevance summed
    over channels."""
    forward = ref_twin_logits if hasattr(model, "tokeniser") else ref_timm_logits
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(lxt, model, x, conservative, eps)
        start = F.one_hot(targets, logits.shape[1]).to(logits.dtype) * logits.detach()
        (relevance,) = torch.autograd.grad(logits, x, start)
    return relevance.sum(1), logits.detach()


def max_rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("eps", [1e-6, 0.05])
def test_equals_lxt_rules_with_the_same_stabiliser(lxt, model, name, eps):
    """Same weights, float64: our maps equal lxt's explicit rules to 1e-10 of the map's
    maximum, at the default ε and at a large ε that makes every stabiliser matter."""
    x, t = images(2)
    with sign_aware(lxt):
        expected, ref_logits = lxt_maps(lxt, model, x, t, METHODS[name], eps)
    maps = xai_bench.get_method(name, epsilon=eps)(model, x, t)
    assert max_rel_diff(maps, expected) < REFERENCE_RTOL
    torch.testing.assert_close(rule_logits(model, x), ref_logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(METHODS))
def test_close_to_unmodified_lxt(lxt, model, name):
    """With lxt's own stabiliser (``z + ε`` whatever the sign of ``z``) the maps differ only
    where some ``z`` is negative and within a few ε of 0, where lxt's factor ``z / (z + ε)``
    is large: at ε = 1e-6 on these models by up to 1.3e-3 of the maximum (asserted < 1e-2)."""
    x, t = images(2)
    expected, _ = lxt_maps(lxt, model, x, t, METHODS[name], 1e-6)
    maps = xai_bench.get_method(name)(model, x, t)
    assert max_rel_diff(maps, expected) < 1e-2


def test_rule_forward_reproduces_the_model(model):
    x, _ = images(3)
    with torch.no_grad():
        for conservative in (False, True):
            torch.testing.assert_close(rule_logits(model, x, conservative), model(x),
                                       rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- conservation


def bias_like(model):
    """Every parameter that adds a constant to an affine map (biases, LayerNorm and
    batch-norm shifts, the position embedding, the class token): the relevance they keep is their own."""
    return [p for n, p in model.named_parameters()
            if n.endswith("bias") or "pos_embed" in n or "cls_token" in n]


def without_batch_norm_means(model):
    """A copy computing the same function, its batch-norm running means folded into the
    shifts (so that every batch-norm bias is a parameter)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias -= m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
                m.running_mean.zero_()
    return model


@contextlib.contextmanager
def softmax_absorption(monkeypatch):
    """Sum over the attention softmaxes of (relevance out − relevance in), i.e. what the
    AttnLRP softmax rule keeps (its deep Taylor decomposition's bias term)."""
    total = []
    plain = attnlrp_rules.attention_softmax

    def recording(scores):
        s = plain(scores)
        if scores.requires_grad:
            scores.register_hook(lambda g: total.append(-(scores.detach() * g).sum()))
            s.register_hook(lambda g: total.append((s.detach() * g).sum()))
        return s

    monkeypatch.setattr(attnlrp_rules, "attention_softmax", recording)
    yield total


@pytest.mark.parametrize("name", list(METHODS))
def test_conservation_including_biases(model, name, monkeypatch):
    """Σ input relevance + Σ relevance kept by bias-like parameters (+ for AttnLRP what the
    softmax rule keeps) = Σ explained logits, to 1e-9 relative at ε = 1e-12 (float64): only
    the stabilisers absorb anything else."""
    model = without_batch_norm_means(model)
    x, t = images(3)
    biases = bias_like(model)
    with softmax_absorption(monkeypatch) as absorbed:
        relevance, kept, logits = input_relevance(model, x, t, conservative=METHODS[name],
                                                  epsilon=1e-12, extra=biases)
    explained = logits.gather(1, t[:, None]).sum()
    total = relevance.sum() + sum(k.sum() for k in kept if k is not None)
    if name == "cp_lrp":
        assert not absorbed  # no relevance flows through the softmax
    total = total + sum(absorbed)
    assert abs(total - explained) <= 1e-9 * logits.abs().sum()


@pytest.mark.parametrize("name", list(METHODS))
def test_cp_lrp_conserves_without_biases(twin, name):
    """With every bias-like parameter zero, CP-LRP's input relevance sums to the logit (to
    1e-9 relative at ε = 1e-12); AttnLRP's does not (the softmax rule keeps a share)."""
    model = without_batch_norm_means(twin)
    with torch.no_grad():
        for p in bias_like(model):
            p.zero_()
    x, t = images(3)
    relevance, _, logits = input_relevance(model, x, t, conservative=METHODS[name],
                                           epsilon=1e-12)
    gap = (relevance.sum((1, 2, 3)) - logits.gather(1, t[:, None])[:, 0]).abs()
    if name == "cp_lrp":
        assert (gap <= 1e-9 * logits.abs().max()).all()
    else:
        assert (gap > 1e-6 * logits.abs().max()).any()


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", list(METHODS))
def test_batched_equals_per_image_and_shapes(model, name):
    m = xai_bench.get_method(name)
    x, t = images(3)
    maps = m(model, x, t)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float64
    assert torch.isfinite(maps).all() and torch.equal(maps, m(model, x, t))
    single = torch.cat([m(model, x[i:i + 1], t[i:i + 1]) for i in range(3)])
    assert max_rel_diff(maps, single) < 1e-12
    other = m(model, x, (t + 1) % 4)  # the map depends on the explained class
    assert not torch.allclose(maps, other)


@pytest.mark.parametrize("name", list(METHODS))
def test_float32_model_and_state_left_alone(name):
    torch.manual_seed(0)
    model = xai_bench.get_model("vit_nano", **TWIN)
    model.train()
    model.blocks[0].eval()
    next(model.parameters()).requires_grad_(False)
    training = [mod.training for mod in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, t = images(2)
    maps = xai_bench.get_method(name)(model, x.float(), t)
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert [mod.training for mod in model.modules()] == training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not any(mod._forward_hooks for mod in model.modules())


def test_hooks_removed_after_an_error(twin, monkeypatch):
    def broken(scores):
        raise RuntimeError("boom")

    monkeypatch.setattr(attnlrp_rules, "attention_softmax", broken)
    x, t = images(1)
    with pytest.raises(RuntimeError, match="boom"):
        xai_bench.get_method("attnlrp")(twin, x, t)
    assert not any(mod._forward_hooks for mod in twin.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(METHODS))
def test_cuda_equals_cpu_without_host_synchronisation(model, name):
    x, t = images(2)
    expected = xai_bench.get_method(name)(model, x, t)
    on_gpu = copy.deepcopy(model).cuda()
    m = xai_bench.get_method(name)
    xc, tc = x.cuda(), t.cuda()
    m(on_gpu, xc, tc)  # warm-up
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        maps = m(on_gpu, xc, tc)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert maps.device.type == "cuda" and max_rel_diff(maps.cpu(), expected) < 1e-10


# ----------------------------------------------------------------------------- applicability


def test_applies_to_known_vits_only(twin):
    bcos = xai_bench.get_model("bcos_vit_nano", embed_dim=32, depth=1, num_heads=2,
                               stem_channels=(8, 16))
    for name in METHODS:
        m = xai_bench.get_method(name)
        assert m.applies_to(twin) and not m.applies_to(bcos)
        assert not m.applies_to(nn.Linear(2, 2))
        with pytest.raises(MethodNotApplicable, match="does not apply"):
            m(bcos, torch.zeros(1, 6, 32, 32), torch.zeros(1, dtype=torch.long))
    assert "neither" in unsupported(bcos)


def test_unknown_timm_layers_are_not_applicable():
    pytest.importorskip("timm", reason="needs timm")
    plain = xai_bench.get_model("timm:vit_tiny_patch16_224", **TIMM)
    qk_norm = xai_bench.get_model("timm:vit_tiny_patch16_224", **TIMM, qk_norm=True)
    swapped = xai_bench.get_model("timm:vit_tiny_patch16_224", **TIMM)
    swapped.model.blocks[1].mlp.act = nn.SiLU()
    m = xai_bench.get_method("attnlrp")
    assert m.applies_to(plain)
    assert not m.applies_to(qk_norm) and "q/k norms" in unsupported(qk_norm)
    assert not m.applies_to(swapped) and "GELU" in unsupported(swapped)


def test_unknown_tokeniser_is_not_applicable():
    tokeniser = nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), nn.Flatten(2))
    model = xai_bench.get_model("vit_nano", **TWIN, tokeniser=tokeniser)
    assert "tokeniser" in unsupported(model)
    assert not xai_bench.get_method("cp_lrp").applies_to(model)


# ----------------------------------------------------------------------------- parameters


def test_parameters():
    for name in METHODS:
        m = xai_bench.get_method(name)
        assert m.params == {"epsilon": 1e-6} and m.kind == "lrp" and not m.class_agnostic
        assert xai_bench.get_method(name, epsilon=1e-3).params["epsilon"] == 1e-3
        for bad in (0, -1e-6, float("nan"), float("inf"), "small", True):
            with pytest.raises(ConfigError, match="epsilon"):
                xai_bench.get_method(name, epsilon=bad)
        with pytest.raises(ConfigError, match="epsilon"):
            type(m)(epsilon=0.0)


def test_frozen_densenet_tokeniser(monkeypatch):
    """The paper's conventional ViT-Ti-13 (a DenseNet-121 cut as tokeniser; one block here):
    applicable, and its batch norms, ReLUs, pooling and concatenations conserve relevance
    too (bias-inclusive, CP-LRP, ε = 1e-12, float64)."""
    pytest.importorskip("torchvision", reason="the paper models need torchvision")
    torch.manual_seed(0)
    model = randomise(xai_bench.get_model("vit_ti_13", depth=1, num_classes=4), seed=2)
    # (a copy: its frozen backbone's shifts need requires_grad for their relevance)
    model = without_batch_norm_means(model).requires_grad_(True)
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    t = torch.tensor([1])
    assert xai_bench.get_method("attnlrp").applies_to(model)
    relevance, kept, logits = input_relevance(model, x, t, conservative=True, epsilon=1e-12,
                                              extra=bias_like(model))
    total = relevance.sum() + sum(k.sum() for k in kept if k is not None)
    assert abs(total - logits[0, 1]) <= 1e-9 * logits.abs().sum()
    assert not any(mod._forward_hooks for mod in model.modules())
