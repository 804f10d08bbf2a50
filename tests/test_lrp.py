import pytest
import torch
import torch.nn.functional as F

import xai_bench
from xai_bench.models.lrp import (
    LRPLinear, relprop_linear, relprop_matmul, relprop_mean_pool, relprop_residual, safe_div,
)


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_alpha1_beta0_linear_conserves_positive_relevance():
    x, w = rand(3, 7), rand(5, 7, seed=1)
    r = rand(3, 5, seed=2).abs()
    out = relprop_linear(x, w, r)
    torch.testing.assert_close(out.sum(1), r.sum(1))


def test_linear_rule_known_answer():
    # one output z = 2·x0 + (-1)·x1 with x = (1, 1): only the activating part (2·1) counts.
    out = relprop_linear(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, -1.0]]),
                         torch.tensor([[3.0]]))
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.0]]))


def test_matmul_lrp0_halves_and_conserves():
    a, b = rand(2, 3, 4, 5).abs(), rand(2, 3, 5, 6, seed=1).abs()
    r = rand(2, 3, 4, 6, seed=2)
    ra, rb = relprop_matmul(a, b, r)
    torch.testing.assert_close(ra.sum((2, 3)), r.sum((2, 3)) / 2)
    torch.testing.assert_close(rb.sum((2, 3)), r.sum((2, 3)) / 2)


def test_residual_split_conserves_per_sample_and_keeps_ratio():
    a, b, r = rand(4, 6, 3), rand(4, 6, 3, seed=1), rand(4, 6, 3, seed=2)
    ra, rb = relprop_residual(a, b, r)
    torch.testing.assert_close(ra.sum((1, 2)) + rb.sum((1, 2)), r.sum((1, 2)))
    s = safe_div(r, a + b)
    raw_a, raw_b = (a * s).sum((1, 2)).abs(), (b * s).sum((1, 2)).abs()
    torch.testing.assert_close(ra.sum((1, 2)).abs() / rb.sum((1, 2)).abs(), raw_a / raw_b)


def test_mean_pool_conserves():
    t, r = rand(2, 5, 4).abs(), rand(2, 4, seed=1)
    torch.testing.assert_close(relprop_mean_pool(t, r).sum(1), r)


def test_vit_relprop_conserves_down_to_tokens_and_is_batched():
    torch.manual_seed(0)
    model = xai_bench.get_model("vit_nano").double().eval()
    x = model.encode(torch.rand(3, 3, 32, 32, dtype=torch.float64))
    with model.lrp_recording(), torch.no_grad():
        logits = model(x)
    onehot = F.one_hot(logits.argmax(1), 10).double()
    r_tokens = model.relprop(onehot)
    # α=1, β=0 conserves at every layer here, so the one-hot's unit relevance reaches the tokens.
    torch.testing.assert_close(r_tokens.sum((1, 2)), torch.ones(3, dtype=torch.float64))
    r_attn = [blk.attn.attention_relevance for blk in model.blocks]
    assert all(r.shape == (3, 4, 64, 64) for r in r_attn)
    single = []
    for i in range(3):
        with model.lrp_recording(), torch.no_grad():
            model(x[i:i + 1])
        model.relprop(onehot[i:i + 1])
        single.append(model.blocks[0].attn.attention_relevance)
    torch.testing.assert_close(torch.cat(single), r_attn[0])


def test_relprop_without_recording_is_a_clear_error():
    model = xai_bench.get_model("vit_nano").eval()
    with pytest.raises(RuntimeError, match="lrp_recording"):
        model.head.relprop(torch.ones(1, 10))


# --------------------------------------------- plrp against the original LRP rules, independently


def _grad_rule(z_fn, inputs, relevance):
    """LRP-0 through ``z = z_fn(*inputs)`` the way the reference code computes it: ``S = R/z``,
    ``C = ∂(z·S)/∂inputs`` by autograd, ``R_i = input_i ⊙ C_i``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        z = z_fn(*leaves)
    s = torch.where(z.abs() > 1e-9, relevance / torch.where(z.abs() > 1e-9, z, torch.ones_like(z)),
                    torch.zeros_like(z))
    grads = torch.autograd.grad(z, leaves, s.detach())
    return [leaf.detach() * g for leaf, g in zip(leaves, grads)]


def _linear_original(x, weight, relevance):
    """The original α1β0 rule: the x⁺w⁺ and x⁻w⁻ paths each normalised by their own sum."""
    (rp,) = _grad_rule(lambda t: t @ weight.clamp(min=0).T, [x.clamp(min=0)], relevance)
    (rn,) = _grad_rule(lambda t: t @ weight.clamp(max=0).T, [x.clamp(max=0)], relevance)
    return rp + rn


def _original_lrp_last_attention(model, x, onehot):
    """An independent forward of our ViT (written out here from its parameters) and a
    relevance pass with the original LRP rules down to the last block's attention matrix."""
    t = model.tokeniser(x) + model.pos_embed
    for blk in model.blocks[:-1]:
        t = blk(t)
    blk = model.blocks[-1]
    attn = blk.attn
    bsz, n, dim = t.shape
    heads, dh = attn.num_heads, attn.head_dim
    u = blk.norm1(t)
    qkv = F.linear(u, attn.qkv.weight, attn.qkv.bias).reshape(bsz, n, 3, heads, dh)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    a_mat = (q @ k.transpose(-1, -2) / dh ** 0.5).softmax(-1)
    o = (a_mat @ v).transpose(1, 2).reshape(bsz, n, dim)
    a_out = F.linear(o, attn.proj.weight, attn.proj.bias)
    h = t + a_out
    hidden = F.linear(blk.norm2(h), blk.mlp.fc1.weight, blk.mlp.fc1.bias)
    m = F.linear(F.gelu(hidden), blk.mlp.fc2.weight, blk.mlp.fc2.bias)
    out = model.norm(h + m)
    pooled = out.mean(1)

    r = _linear_original(pooled, model.head.weight, onehot)                 # head
    (r,) = _grad_rule(lambda z: z.mean(1), [out], r)                        # mean pool
    r_h, r_m = _grad_rule(lambda p, q_: p + q_, [h, m], r)                  # plain LRP-0
    r_m = _linear_original(F.gelu(hidden), blk.mlp.fc2.weight, r_m)         # fc2, GELU: id
    r_h = r_h + _linear_original(blk.norm2(h), blk.mlp.fc1.weight, r_m)    # fc1, LN: id
    _, r_a = _grad_rule(lambda p, q_: p + q_, [t, a_out], r_h)
    r_o = _linear_original(o, attn.proj.weight, r_a)                        # proj
    r_o = r_o.reshape(bsz, n, heads, dh).transpose(1, 2)
    r_attn, _ = _grad_rule(lambda p, q_: p @ q_, [a_mat, v], r_o)
    return r_attn / 2                                                       # each operand half


def test_plrp_equals_an_independent_implementation_of_the_original_lrp_rules():
    torch.manual_seed(0)
    model = xai_bench.get_model("vit_nano").double().eval()
    x = model.encode(torch.rand(3, 3, 32, 32, dtype=torch.float64))
    t = torch.tensor([0, 3, 7])
    with torch.no_grad():
        r_attn = _original_lrp_last_attention(model, x, F.one_hot(t, 10).double())
    last = r_attn.clamp(min=0).mean(1).mean(1).reshape(3, 1, *model.token_grid)
    expected = F.interpolate(last, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    got = xai_bench.get_method("plrp")(model, x, t)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-12)
    # the two rule sets differ: the default is not the rules of Chefer's own method
    other = xai_bench.get_method("plrp", rules="chefer")(model, x, t)
    assert not torch.allclose(other / other.flatten(1).amax(1)[:, None, None],
                              got / got.flatten(1).amax(1)[:, None, None], rtol=1e-3, atol=1e-4)


def test_original_linear_rule_normalises_each_path_separately():
    # z = 2·x0 + 1·x1 with x = (1, -1): the x⁺w⁺ path (2) and the x⁻w⁻ path (none: w⁻ = 0)…
    x, w, r = torch.tensor([[1.0, -2.0]]), torch.tensor([[2.0, -1.0]]), torch.tensor([[3.0]])
    # paths: x⁺w⁺ = 1·2 = 2 and x⁻w⁻ = (-2)(-1) = 2; joint rule: each gets 3·2/4 = 1.5;
    # original rule: each path passes on the whole 3 (total 6)
    torch.testing.assert_close(relprop_linear(x, w, r, rules="chefer"), torch.tensor([[1.5, 1.5]]))
    torch.testing.assert_close(relprop_linear(x, w, r, rules="lrp"), torch.tensor([[3.0, 3.0]]))
    a, b, rel = rand(2, 3, 4), rand(2, 3, 4, seed=1), rand(2, 3, 4, seed=2)
    ra, rb = relprop_residual(a, b, rel, rules="lrp")
    torch.testing.assert_close(ra, a * rel / (a + b))
    torch.testing.assert_close(rb, b * rel / (a + b))


@pytest.mark.parametrize("name", ["plrp", "chefer_lrp"])
def test_lrp_maps_are_batch_invariant_in_float64(name):
    """Batching changes nothing but rounding: in float64 a batched call equals the per-image
    calls to ~1e-9 of the map's scale. (In float32 the forward's rounding differs with the batch
    size and LRP's near-cancelling denominators amplify it: the tolerance is stated in
    docs/definitions.md, 'plrp'.)"""
    torch.manual_seed(2)
    model = xai_bench.get_model("vit_nano").double().eval()
    x = model.encode(torch.rand(6, 3, 32, 32, dtype=torch.float64))
    t = torch.arange(6) % 10
    method = xai_bench.get_method(name)
    batched = method(model, x, t)
    single = torch.cat([method(model, x[i:i + 1], t[i:i + 1]) for i in range(6)])
    scale = single.abs().flatten(1).amax(1)[:, None, None]
    assert ((batched - single).abs() / scale).max() < 1e-8


# ------------------------------------------- the fast α1β0 rule against its definition, float64


def _alpha1_beta0_by_definition(x, weight, relevance):
    """Each contribution ``c_ij = x_j w_ij`` written out; output i passes its relevance on to
    the inputs in proportion to its positive contributions: ``R_j = Σ_i c_ij⁺ / Σ_j' c_ij'⁺ R_i``
    (0 for an output without any)."""
    c = (x.unsqueeze(-2) * weight).clamp(min=0)           # (..., out, in)
    total = c.sum(-1, keepdim=True)
    share = torch.where(total > 0, c / torch.where(total > 0, total, 1.0), 0.0)
    return (share * relevance.unsqueeze(-1)).sum(-2)


@pytest.mark.parametrize("with_output", [False, True])
def test_fast_alpha1_beta0_rule_equals_its_definition(with_output):
    x, w, b = rand(2, 5, 9), rand(6, 9, seed=1), rand(6, seed=3)
    r = rand(2, 5, 6, seed=2)
    x[0, 0] = 0.0                                   # an all-zero input row
    x[1, 2] = w[4].sign() * -x[1, 2].abs()          # output 4 of this row: no positive part
    kw = dict(output=torch.nn.functional.linear(x, w, b), bias=b) if with_output else {}
    got = relprop_linear(x, w, r, **kw)
    torch.testing.assert_close(got, _alpha1_beta0_by_definition(x, w, r), rtol=1e-12,
                               atol=1e-12)
    # …and the straightforward four-product evaluation the rule replaces
    xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    s = safe_div(r, xp @ wp.T + xn @ wn.T)
    torch.testing.assert_close(got, xp * (s @ wp) + xn * (s @ wn), rtol=1e-12, atol=1e-12)


def test_lrp_linear_uses_the_recorded_output_with_the_same_result():
    torch.manual_seed(0)
    layer = LRPLinear(7, 4).double()
    torch.nn.init.normal_(layer.bias)
    x, r = rand(3, 7), rand(3, 4, seed=1)
    layer.lrp_record = True
    out = layer(x)
    assert layer.saved_output is not None and torch.equal(layer.saved_output, out)
    torch.testing.assert_close(layer.relprop(r), relprop_linear(x, layer.weight.detach(), r),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.relprop(r), _alpha1_beta0_by_definition(
        x, layer.weight.detach(), r), rtol=1e-12, atol=1e-12)
