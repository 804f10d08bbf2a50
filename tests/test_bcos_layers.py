import contextlib
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


# --------------------------------------------------------------- the fused forward/backward

from xai_bench.models.bcos_layers import _BcosConvFunction, _BcosLinearFunction, fused  # noqa: E402


@pytest.mark.parametrize("b", [2.0, 2.5])
@pytest.mark.parametrize("max_out", [1, 2])
def test_fused_linear_gradcheck(b, max_out):
    torch.manual_seed(6)
    layer = BcosLinear(7, 5, b=b, max_out=max_out).double()
    x = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    w = layer.unit_weight().detach().requires_grad_()
    fn = lambda x, w: _BcosLinearFunction.apply(x, w, b, max_out, layer.gain, False)  # noqa
    assert torch.autograd.gradcheck(fn, (x, w))


@pytest.mark.parametrize("b", [2.0, 2.5])
@pytest.mark.parametrize("max_out", [1, 2])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 1, 2)])
def test_fused_conv_gradcheck(b, max_out, kernel, stride, padding):
    torch.manual_seed(7)
    conv = BcosConv2d(3, 4, kernel, stride=stride, padding=padding, b=b, max_out=max_out)
    conv = conv.double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = conv.unit_weight().detach().requires_grad_()
    fn = lambda x, w: _BcosConvFunction.apply(x, w, b, max_out, conv.gain, False, stride,  # noqa
                                              padding)
    assert torch.autograd.gradcheck(fn, (x, w))


def _input_and_weight_grads(model, x, target, explain):
    x = x.clone().requires_grad_(True)
    with (explanation_mode(model) if explain else contextlib.nullcontext()):
        logits = model(x)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(logits[:, target].sum(), [x] + params, allow_unused=True)
    return logits.detach(), grads[0], grads[1:]


@pytest.mark.parametrize("explain", [False, True])
def test_fused_model_gradients_equal_the_unfused_ones(explain):
    """The whole B-cos ViT: same logits (bitwise: the forward computes the same expressions),
    input and parameter gradients equal to float32 rounding; in explanation mode the input
    gradient is still W(x), whose contributions sum to the logit minus the bias."""
    import xai_bench

    torch.manual_seed(8)
    model = xai_bench.get_model("bcos_vit_nano").eval()
    x = model.encode(torch.rand(4, 3, 32, 32))
    logits, gx, gw = _input_and_weight_grads(model, x, 3, explain)
    with fused(False):
        ref_logits, ref_gx, ref_gw = _input_and_weight_grads(model, x, 3, explain)
    assert torch.equal(logits, ref_logits)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-4, atol=1e-5 * ref_gx.abs().max().item())
    assert [g is None for g in gw] == [g is None for g in ref_gw]  # (explanation mode: the
    for g, ref in zip(gw, ref_gw):                                  # attention is a constant)
        if ref is not None:
            torch.testing.assert_close(g, ref, rtol=1e-4,
                                       atol=1e-5 * ref.abs().max().item() + 1e-12)
    if explain:
        contributions = (gx * x).sum((1, 2, 3))
        torch.testing.assert_close(contributions, logits[:, 3] - model.logit_bias, rtol=1e-4,
                                   atol=1e-4)


def test_fused_explanation_mode_gradient_is_the_dynamic_weight():
    torch.manual_seed(9)
    conv = BcosConv2d(3, 4, 3, padding=1, b=2.0, max_out=2).double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    with explanation_mode(conv):
        y = conv(x)
        assert y.grad_fn.__class__.__name__ == "_BcosConvFunctionBackward"
        (g,) = torch.autograd.grad(y[0, 2, 1, 3], x)
    assert (g * x).sum().item() == pytest.approx(y[0, 2, 1, 3].item(), rel=1e-12)


def test_fused_gradient_of_a_zero_input_is_finite():
    for layer, x in ((BcosLinear(4, 3, max_out=2), torch.zeros(2, 4)),
                     (BcosConv2d(3, 4, 3, padding=1), torch.zeros(1, 3, 4, 4))):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(layer(x).sum(), x)
        assert torch.isfinite(g).all()


def test_double_backward_falls_back_to_the_plain_expressions():
    """``create_graph=True`` differentiates the plain expressions (recomputed), so second
    derivatives are right; gradgradcheck in float64."""
    torch.manual_seed(10)
    layer = BcosLinear(5, 3, b=2.0, max_out=2).double()
    conv = BcosConv2d(2, 3, 3, stride=2, padding=1).double()
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    xc = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(conv, (xc,))
    (g,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    with fused(False):
        (ref,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    torch.testing.assert_close(g, ref)
    assert g.requires_grad


def test_no_graph_no_fused_function_and_the_switch_restores():
    layer = BcosLinear(4, 3, max_out=2)
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert layer(x).grad_fn is None
    assert layer(x).grad_fn.__class__.__name__ == "_BcosLinearFunctionBackward"
    with fused(False):
        assert "BcosLinearFunction" not in layer(x).grad_fn.__class__.__name__
    assert layer(x).grad_fn.__class__.__name__ == "_BcosLinearFunctionBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the plain expressions
        assert "BcosLinearFunction" not in layer(x).grad_fn.__class__.__name__


@pytest.mark.parametrize("b", [2.0, 2.5])
def test_forward_without_a_graph_equals_the_plain_expressions(b):
    """Without a graph the layers compute the fused expressions in place: the same values,
    bit for bit, as the plain expressions and as the forward that records a graph."""
    torch.manual_seed(11)
    for layer, x in ((BcosLinear(6, 5, b=b, max_out=2), torch.randn(3, 7, 6)),
                     (BcosLinear(6, 5, b=b, max_out=1), torch.randn(3, 6)),
                     (BcosConv2d(3, 4, 3, padding=1, b=b, max_out=2), torch.randn(2, 3, 6, 6))):
        with torch.no_grad():
            fast = layer(x)
            with fused(False):
                plain = layer(x)
        assert torch.equal(fast, plain)
        assert torch.equal(fast, layer(x.clone().requires_grad_(True)).detach())
