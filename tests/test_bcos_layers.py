import math

import pytest
import torch
import torch.nn.functional as F

from xai_bench.models.bcos_layers import (
    BcosConv2d, BcosLinear, DetachableLayerNorm, LogitLayer, encode_six_channels,
    explanation_mode,
)


def test_b1_is_bias_free_linear_with_unit_rows():
    torch.manual_seed(0)
    layer = BcosLinear(8, 5, b=1.0)
    x = torch.randn(4, 8)
    w = layer.linear.weight
    expected = x @ (w / w.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(layer(x), expected)
    assert layer.gain == 1.0


@pytest.mark.parametrize("b", [1.5, 2.0, 3.0])
def test_output_bounded_by_input_norm_before_gain(b):
    torch.manual_seed(1)
    layer = BcosLinear(16, 32, b=b, gain=1.0)
    x = torch.randn(64, 16) * 5
    assert (layer(x).abs() <= x.norm(dim=1, keepdim=True) + 1e-5).all()
    # Aligned input reaches the bound: w-direction gives |cos| = 1.
    w = layer.unit_weight()[3]
    out = layer(2.5 * w[None])
    assert out[0, 3].item() == pytest.approx(2.5, rel=1e-5)


def test_conv_output_bounded_by_patch_norm():
    torch.manual_seed(2)
    conv = BcosConv2d(3, 6, 3, padding=1, b=2.0, gain=1.0)
    x = torch.randn(2, 3, 8, 8)
    patch_norm = F.unfold(x, 3, padding=1).norm(dim=1).view(2, 1, 8, 8)
    assert (conv(x).abs() <= patch_norm + 1e-5).all()


def test_conv_matches_linear_on_patches():
    torch.manual_seed(3)
    conv = BcosConv2d(3, 4, 3, padding=1, b=2.0, max_out=2)
    lin = BcosLinear(27, 4, b=2.0, max_out=2, gain=conv.gain)
    lin.linear.weight.data = conv.conv.weight.data.flatten(1).clone()
    x = torch.randn(1, 3, 5, 5)
    patches = F.unfold(x, 3, padding=1).transpose(1, 2)  # (1, 25, 27)
    expected = lin(patches).transpose(1, 2).reshape(1, 4, 5, 5)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_maxout_picks_larger_unit():
    layer = BcosLinear(2, 1, b=1.0, max_out=2)
    layer.linear.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = layer(torch.tensor([[3.0, -1.0], [-2.0, 0.5]]))
    assert out[:, 0].tolist() == [3.0, 0.5]


def test_zero_input_gives_zero_not_nan():
    layer = BcosConv2d(3, 4, 3, padding=1)
    assert torch.equal(layer(torch.zeros(1, 3, 4, 4)), torch.zeros(1, 4, 4, 4))


def test_explanation_mode_makes_gradient_the_dynamic_weight():
    torch.manual_seed(4)
    layer = BcosLinear(6, 3, b=2.0, max_out=2).double()
    x = torch.randn(1, 6, dtype=torch.float64, requires_grad=True)
    with explanation_mode(layer):
        y = layer(x)
        (g,) = torch.autograd.grad(y[0, 1], x)
    # Dynamic linear: the gradient (effective weight) times x reproduces the output exactly.
    assert (g * x).sum().item() == pytest.approx(y[0, 1].item(), rel=1e-12)
    assert layer.explanation_mode is False  # restored
    y2 = layer(x)
    (g2,) = torch.autograd.grad(y2[0, 1], x)
    assert not torch.allclose(g, g2)  # plain gradient differs (B=2 scale is not constant)


def test_detachable_layernorm_equals_layernorm():
    torch.manual_seed(5)
    ln = DetachableLayerNorm(8)
    ln.weight.data.uniform_(0.5, 1.5)
    ln.bias.data.uniform_(-1, 1)
    x = torch.randn(3, 8)
    ref = ln(x)
    with explanation_mode(ln):
        torch.testing.assert_close(ln(x), ref)


def test_encoding_and_logit_layer():
    img = torch.rand(2, 3, 4, 4)
    enc = encode_six_channels(img)
    assert enc.shape == (2, 6, 4, 4)
    torch.testing.assert_close(enc[:, :3] + enc[:, 3:], torch.ones(2, 3, 4, 4))
    layer = LogitLayer(10, temperature=2.0)
    assert layer.bias == pytest.approx(math.log(1 / 9))
    torch.testing.assert_close(layer(torch.ones(1, 10)), torch.full((1, 10), 0.5 + math.log(1 / 9)))
