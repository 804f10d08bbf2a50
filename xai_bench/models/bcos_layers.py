"""B-cos building blocks: the B-cos transform (linear and convolution), the 6-channel input
encoding, the logit layer and explanation mode.

B-cos transform of a weight row ``w`` for an input ``x`` (Böhle et al.):
``ŵ = w/‖w‖``, ``f(x) = |cos(x, ŵ)|^(B-1) · ŵᵀx`` with ``cos = ŵᵀx / ‖x‖``.
It is dynamic linear: ``f(x) = s(x) ŵᵀx`` with the input-dependent scale ``s(x)``. In
explanation mode ``s(x)`` is detached, so the gradient of an output w.r.t. the input *is* the
effective linear weight ``W(x)`` of that output.

Forward and backward. Whenever a graph is recorded (gradient methods, training), the two B-cos
layers run as one autograd function each (:class:`_BcosLinearFunction`,
:class:`_BcosConvFunction`): the forward computes exactly what the plain expressions below
compute and keeps ``|cos|^(B-1)``, the output, the norm and the MaxOut selection; the backward
is the closed form of the gradient in one pass (a handful of elementwise operations and the
matrix product or transposed convolution), where autograd would retrace every elementwise
step (``abs``, the division by the norm, the norm itself, the MaxOut). In explanation mode the
same function treats ``|cos|^(B-1)`` and the norm as constants. A backward that itself records
a graph (``create_graph=True``, e.g. double backward) recomputes the layer with the plain
expressions and differentiates those. A forward without a graph (perturbation metrics,
selection) computes the same fused expressions in place, without keeping anything.
:func:`fused` switches the fusion off (for comparisons).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

# Added under the square root of ‖x‖² so that an all-zero input (zero padding, removed pixels)
# gives cos = 0 instead of NaN. Small enough not to change any realistic activation.
NORM_EPS = 1e-6

# Run the B-cos layers as one autograd function each when a graph is recorded (module doc).
_FUSED = True


@contextlib.contextmanager
def fused(enabled: bool = True):
    """Within the context, B-cos layers use the fused forward/backward (``enabled``, the
    default outside any context) or the plain autograd expressions (``False``; same values,
    gradients equal to float rounding, slower backward)."""
    global _FUSED
    previous, _FUSED = _FUSED, bool(enabled)
    try:
        yield
    finally:
        _FUSED = previous


def _use_fused(x: torch.Tensor, weight: torch.Tensor, b: float, max_out: int) -> bool:
    return (_FUSED and b != 1.0 and max_out in (1, 2) and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad) and not _autocast(x))


def _use_fast_forward(x, weight, b, max_out) -> bool:
    """Whether a forward without a graph runs the fused expressions in place (the same
    values as the plain ones, fewer temporaries)."""
    return (_FUSED and b != 1.0 and max_out in (1, 2)
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def _autocast(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device (the fused backward assumes the forward's
    dtypes; xai-bench autocasts forward-only passes, which take the plain path anyway)."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # older torch: no device argument
        return torch.is_autocast_enabled()


def encode_six_channels(images: torch.Tensor) -> torch.Tensor:
    """``[r, g, b, 1-r, 1-g, 1-b]`` of ``[0, 1]`` RGB images ``(B, 3, H, W)``.

    Every pixel then has the same norm-independent colour angle, so the model cannot be
    biased towards bright pixels and W(x) can be shown in colour."""
    return torch.cat([images, 1.0 - images], dim=1)


MAX_OUT_CORRECTION = {1: 1.0, 2: 1.5}


def default_bcos_gain(fan_in: int, b: float, max_out: int = 1) -> float:
    """Output gain that keeps the per-unit RMS of a B-cos layer ≈ that of its input at init.

    For a random unit weight row and an input of ``n`` entries with RMS ``r``,
    ``ŵᵀx ≈ r`` and ``cos ≈ 1/√n``, so ``|cos|^(B-1) ŵᵀx ≈ r · n^{-(B-1)/2}``; multiplying by
    ``n^{(B-1)/2}`` restores the RMS. MaxOut keeps the larger of M units, which makes the
    output larger; the measured correction (``benchmarks/activation_norms.py``) divides it out.
    """
    correction = MAX_OUT_CORRECTION.get(max_out, 1.5) if b != 1.0 else 1.0
    return float(fan_in) ** ((b - 1.0) / 2.0) / correction


class ExplainableMixin:
    """Layers whose dynamic factors can be detached (explanation mode)."""

    explanation_mode: bool = False

    def set_explanation_mode(self, on: bool) -> None:
        self.explanation_mode = bool(on)


class BcosLinear(ExplainableMixin, nn.Module):
    """Bias-free B-cos linear layer with optional MaxOut.

    ``max_out=M`` computes M units per output and keeps the largest (piecewise selection, so
    the layer stays dynamic linear). Weights are stored raw and normalised at forward time.
    The output is multiplied by ``gain`` (default :func:`default_bcos_gain`)."""

    def __init__(self, in_features: int, out_features: int, b: float = 2.0, max_out: int = 1,
                 gain: float | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.b, self.max_out = float(b), int(max_out)
        self.gain = default_bcos_gain(in_features, self.b, self.max_out) if gain is None else float(gain)
        self.linear = nn.Linear(in_features, out_features * self.max_out, bias=False)

    def unit_weight(self) -> torch.Tensor:
        w = self.linear.weight
        return w / w.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.unit_weight()
        if _use_fused(x, weight, self.b, self.max_out):
            return _BcosLinearFunction.apply(x, weight, self.b, self.max_out, self.gain,
                                             self.explanation_mode)
        if _use_fast_forward(x, weight, self.b, self.max_out):
            return _fused_scale(F.linear(x, weight), _linear_norm(x), self.b, self.max_out,
                                self.gain, -1, keep=False)[0]
        return _bcos_linear(x, weight, self.b, self.max_out, self.gain, self.explanation_mode)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, b={self.b:g}, max_out={self.max_out}, "
                f"gain={self.gain:.4g}")


class BcosConv2d(ExplainableMixin, nn.Module):
    """Bias-free B-cos convolution with optional MaxOut; ``‖x‖`` is the norm of the input
    patch under the kernel (all channels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, b: float = 2.0, max_out: int = 1, gain: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.b, self.max_out = float(b), int(max_out)
        fan_in = in_channels * kernel_size * kernel_size
        self.gain = default_bcos_gain(fan_in, self.b, self.max_out) if gain is None else float(gain)
        self.conv = nn.Conv2d(in_channels, out_channels * self.max_out, kernel_size, stride,
                              padding, bias=False)

    def unit_weight(self) -> torch.Tensor:
        w = self.conv.weight
        return w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.unit_weight()
        args = (self.b, self.max_out, self.gain, self.explanation_mode, self.stride,
                self.padding)
        if _use_fused(x, weight, self.b, self.max_out):
            return _BcosConvFunction.apply(x, weight, *args)
        if _use_fast_forward(x, weight, self.b, self.max_out):
            lin = F.conv2d(x, weight, stride=self.stride, padding=self.padding)
            norm = _patch_norm(x, weight.shape[-1], self.stride, self.padding)
            return _fused_scale(lin, norm, self.b, self.max_out, self.gain, 1, keep=False)[0]
        return _bcos_conv(x, weight, *args)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, b={self.b:g}, "
                f"max_out={self.max_out}, gain={self.gain:.4g}")


def _bcos_linear(x, weight, b, max_out, gain, detach):
    """The B-cos linear layer as plain autograd expressions (``weight``: unit rows)."""
    out = F.linear(x, weight)
    out = _max_out(out, max_out, dim=-1)
    if b != 1.0:
        with _constant_if(detach):
            norm = _linear_norm(x)
        out = _bcos_scale(out, norm, b, detach)
    return out * gain


def _bcos_conv(x, weight, b, max_out, gain, detach, stride, padding):
    """The B-cos convolution as plain autograd expressions (``weight``: unit filters)."""
    out = F.conv2d(x, weight, stride=stride, padding=padding)
    out = _max_out(out, max_out, dim=1)
    if b != 1.0:
        with _constant_if(detach):
            norm = _patch_norm(x, weight.shape[-1], stride, padding)
        out = _bcos_scale(out, norm, b, detach)
    return out * gain


def _linear_norm(x):
    return (x.pow(2).sum(-1, keepdim=True) + NORM_EPS).sqrt()


def _patch_norm(x, kernel_size, stride, padding):
    ones = x.new_ones(1, 1, kernel_size, kernel_size)
    sq = F.conv2d(x.pow(2).sum(1, keepdim=True), ones, stride=stride, padding=padding)
    return (sq + NORM_EPS).sqrt()


def _fused_scale(lin, norm, b, max_out, gain, dim, keep=True):
    """Forward of MaxOut and the B-cos scale without a graph, the same values as
    :func:`_max_out` and :func:`_bcos_scale` (then ``× gain``) compute: returns the output,
    ``|cos|^(B-1)`` and, for MaxOut 2, whether the second unit of each pair won (ties go to
    the first, as with ``max``)."""
    selected = None
    if max_out == 2:
        dim = dim % lin.dim()
        groups = lin.unflatten(dim, (-1, 2))
        first, second = groups.select(dim + 1, 0), groups.select(dim + 1, 1)
        out = torch.maximum(first, second)
        selected = second > first if keep else None
    else:
        out = lin
    scale = out.abs().div_(norm)
    if b != 2.0:
        scale.pow_(b - 1.0)
    if not keep:  # nothing saved for a backward: the scale's memory takes the output
        return scale.mul_(out).mul_(gain), None, None
    return (out * scale).mul_(gain), scale, selected


def _fused_scale_backward(grad, out, scale, norm, selected, b, gain, detach, dim):
    """Gradient of ``y = gain · v · |cos|^(B-1)``, ``cos = v / ‖x‖`` w.r.t. the pre-MaxOut
    units and the norm: ``∂y/∂v = B · gain · |cos|^(B-1)`` (``gain · |cos|^(B-1)`` with the
    scale constant) and ``Σ_o g_o ∂y_o/∂‖x‖ = (1 - B) Σ_o g_o y_o / ‖x‖``. Returns the
    gradient of the units (MaxOut: the winner of each pair gets it, the other 0) and the
    factor ``c`` with ``∂L/∂x = c · x`` through the norm (``None`` with the scale constant)."""
    coef = None
    if not detach:
        coef = torch.linalg.vecdot(grad, out, dim=dim).unsqueeze(dim)
        coef.mul_(1.0 - b).div_(norm * norm)
    # one pass: factor · grad · scale
    g_units = torch.addcmul(grad.new_zeros(()), grad, scale, value=gain if detach else b * gain)
    if selected is not None:
        d = dim % g_units.dim() + 1
        shape = list(g_units.shape)
        shape.insert(d, 2)
        both = g_units.new_empty(shape)
        second = torch.mul(g_units, selected, out=both.select(d, 1))
        torch.sub(g_units, second, out=both.select(d, 0))  # exact: g - g or g - 0
        g_units = both.flatten(d - 1, d)
    return g_units, coef


def _needed(ctx, i: int) -> bool:
    """Whether the backward now running needs the gradient of input ``i``: needs_input_grad,
    narrowed to what this graph task executes (``torch.autograd.grad(y, x)`` needs no weight
    gradient, although the weights require grad), as autograd's own nodes do."""
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]
    try:
        return node is not None and torch._C._will_engine_execute_node(node)
    except (AttributeError, RuntimeError):  # private API gone or no graph task: be safe
        return True


class _BcosLinearFunction(torch.autograd.Function):
    """Fused B-cos linear layer (module doc). Inputs: ``x``, the unit weight rows, B,
    MaxOut, gain, explanation mode."""

    @staticmethod
    def forward(ctx, x, weight, b, max_out, gain, detach):
        norm = _linear_norm(x)
        out, scale, selected = _fused_scale(F.linear(x, weight), norm, b, max_out, gain, -1)
        ctx.save_for_backward(x, weight, out, scale, norm, selected)
        ctx.args = (b, max_out, gain, detach)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, out, scale, norm, selected = ctx.saved_tensors
        b, max_out, gain, detach = ctx.args
        if torch.is_grad_enabled():  # create_graph: differentiate the plain expressions
            return _differentiable_backward(ctx, grad, _bcos_linear, (x, weight),
                                            (b, max_out, gain, detach))
        need_x, need_w = _needed(ctx, 0), _needed(ctx, 1)
        g_units, coef = _fused_scale_backward(grad, out, scale, norm, selected, b, gain,
                                              detach, -1)
        grad_x = grad_w = None
        if need_x:
            grad_x = g_units.matmul(weight)
            if coef is not None:
                grad_x.addcmul_(x, coef)
        if need_w:
            grad_w = g_units.reshape(-1, weight.shape[0]).t().matmul(x.reshape(-1, x.shape[-1]))
        return grad_x, grad_w, None, None, None, None


class _BcosConvFunction(torch.autograd.Function):
    """Fused B-cos convolution (module doc). Inputs: ``x``, the unit filters, B, MaxOut,
    gain, explanation mode, stride, padding."""

    @staticmethod
    def forward(ctx, x, weight, b, max_out, gain, detach, stride, padding):
        norm = _patch_norm(x, weight.shape[-1], stride, padding)
        lin = F.conv2d(x, weight, stride=stride, padding=padding)
        out, scale, selected = _fused_scale(lin, norm, b, max_out, gain, 1)
        ctx.save_for_backward(x, weight, out, scale, norm, selected)
        ctx.args = (b, max_out, gain, detach, stride, padding)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, out, scale, norm, selected = ctx.saved_tensors
        b, max_out, gain, detach, stride, padding = ctx.args
        if torch.is_grad_enabled():
            return _differentiable_backward(ctx, grad, _bcos_conv, (x, weight), ctx.args)
        need_x, need_w = _needed(ctx, 0), _needed(ctx, 1)
        g_units, coef = _fused_scale_backward(grad, out, scale, norm, selected, b, gain,
                                              detach, 1)
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            g_units, x, weight, None, _pair(stride), _pair(padding), [1, 1], False, [0, 0],
            1, (need_x, need_w, False))
        if need_x and coef is not None:
            # through ‖patch‖: the ones-kernel convolution's transpose spreads c over patches
            k = weight.shape[-1]
            if max(_pair(padding)) <= k // 2:  # the adjoint of a sum pool, the cheapest way
                spread = torch.ops.aten.avg_pool2d_backward(
                    coef, x[:, :1], [k, k], _pair(stride), _pair(padding), False, True, 1)
            else:  # (pooling allows no more padding than that)
                spread = torch.ops.aten.convolution_backward(
                    coef, x[:, :1], x.new_ones(1, 1, k, k), None, _pair(stride),
                    _pair(padding), [1, 1], False, [0, 0], 1, (True, False, False))[0]
            grad_x.addcmul_(x, spread)
        return grad_x, grad_w, None, None, None, None, None, None


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _differentiable_backward(ctx, grad, plain, inputs, args):
    """Backward under ``create_graph=True``: recompute the layer with the plain expressions
    from the saved inputs and differentiate them, so that the gradient has a graph."""
    wanted = [i for i in range(len(inputs)) if ctx.needs_input_grad[i]]
    with torch.enable_grad():
        out = plain(*inputs, *args)
        got = torch.autograd.grad(out, [inputs[i] for i in wanted], grad, create_graph=True,
                                  allow_unused=True)
    grads = [None] * (len(inputs) + len(args))
    for i, g in zip(wanted, got):
        grads[i] = g
    return tuple(grads)


def _max_out(out: torch.Tensor, m: int, dim: int) -> torch.Tensor:
    if m == 1:
        return out
    dim = dim % out.dim()
    shape = out.shape[:dim] + (out.shape[dim] // m, m) + out.shape[dim + 1:]
    groups = out.reshape(shape)
    if torch.is_grad_enabled() and out.requires_grad:
        # max with indices: its backward is one scatter, cheaper than the full-size masks that
        # the backward of amax / maximum builds (measured on the nano B-cos ViT, batch 32:
        # forward+backward 207 ms against 239-246 ms, inherent 158 against 190-199 ms).
        return groups.max(dim=dim + 1).values
    if m == 2:  # no graph: the elementwise maximum of the pair is the cheapest forward
        return torch.maximum(groups.select(dim + 1, 0), groups.select(dim + 1, 1))
    return groups.amax(dim=dim + 1)


def _constant_if(explanation_mode: bool):
    """Context for the dynamic factors: in explanation mode they are constants, so they are
    computed without recording a graph (same values, no tensors saved for a backward pass
    that would never use them)."""
    return torch.no_grad() if explanation_mode else contextlib.nullcontext()


def _bcos_scale(out: torch.Tensor, norm: torch.Tensor, b: float, detach: bool) -> torch.Tensor:
    """``|cos|^(B-1) · out`` with ``cos = out / norm``; the scale is a constant in
    explanation mode."""
    with _constant_if(detach):
        cos = out.abs() / norm
        scale = cos if b == 2.0 else cos.pow(b - 1.0)
    return out * scale


class DetachableLayerNorm(ExplainableMixin, nn.LayerNorm):
    """LayerNorm whose statistics (mean, std) are constants in explanation mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.explanation_mode:
            return super().forward(x)
        with torch.no_grad():
            mean = x.mean(-1, keepdim=True)
            std = (x.var(-1, keepdim=True, unbiased=False) + self.eps).sqrt()
        out = (x - mean) / std
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class LogitLayer(nn.Module):
    """``logits / temperature + bias`` with the constant bias ``log(1/(C-1))`` by default, so
    that sigmoid outputs start near 1/C (B-cos models train with BCE)."""

    def __init__(self, num_classes: int, temperature: float = 1.0, bias: float | None = None):
        super().__init__()
        self.temperature = float(temperature)
        self.bias = math.log(1.0 / (num_classes - 1)) if bias is None else float(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.temperature + self.bias

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, bias={self.bias:.4g}"


@contextlib.contextmanager
def explanation_mode(module: nn.Module):
    """Detach the dynamic factors of every submodule that supports it (found by duck typing:
    a ``set_explanation_mode`` method), restoring the previous state on exit."""
    layers = [m for m in module.modules() if hasattr(m, "set_explanation_mode")]
    previous = [getattr(m, "explanation_mode", False) for m in layers]
    for m in layers:
        m.set_explanation_mode(True)
    try:
        yield module
    finally:
        for m, prev in zip(layers, previous):
            m.set_explanation_mode(prev)
