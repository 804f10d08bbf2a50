import pytest
import torch
import torch.nn.functional as F

import xai_bench
from xai_bench.models.lrp import (
    relprop_linear, relprop_matmul, relprop_mean_pool, relprop_residual, safe_div,
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
