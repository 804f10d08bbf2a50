"""B-cos building blocks: the B-cos transform (linear and convolution), the 6-channel input
encoding, the logit layer and explanation mode.

B-cos transform of a weight row ``w`` for an input ``x`` (Böhle et al.):
``ŵ = w/‖w‖``, ``f(x) = |cos(x, ŵ)|^(B-1) · ŵᵀx`` with ``cos = ŵᵀx / ‖x‖``.
It is dynamic linear: ``f(x) = s(x) ŵᵀx`` with the input-dependent scale ``s(x)``. In
explanation mode ``s(x)`` is detached, so the gradient of an output w.r.t. the input *is* the
effective linear weight ``W(x)`` of that output.
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


class _ExplainableMixin:
    """Layers whose dynamic factors can be detached (explanation mode)."""

    explanation_mode: bool = False

    def set_explanation_mode(self, on: bool) -> None:
        self.explanation_mode = bool(on)


class BcosLinear(_ExplainableMixin, nn.Module):
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
        out = F.linear(x, self.unit_weight())
        out = _max_out(out, self.max_out, dim=-1)
        if self.b != 1.0:
            with _constant_if(self.explanation_mode):
                norm = (x.pow(2).sum(-1, keepdim=True) + NORM_EPS).sqrt()
            out = _bcos_scale(out, norm, self.b, self.explanation_mode)
        return out * self.gain

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, b={self.b:g}, max_out={self.max_out}, "
                f"gain={self.gain:.4g}")


class BcosConv2d(_ExplainableMixin, nn.Module):
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
        out = F.conv2d(x, self.unit_weight(), stride=self.stride, padding=self.padding)
        out = _max_out(out, self.max_out, dim=1)
        if self.b != 1.0:
            with _constant_if(self.explanation_mode):
                ones = x.new_ones(1, 1, self.kernel_size, self.kernel_size)
                sq = F.conv2d(x.pow(2).sum(1, keepdim=True), ones, stride=self.stride,
                              padding=self.padding)
            out = _bcos_scale(out, (sq + NORM_EPS).sqrt(), self.b, self.explanation_mode)
        return out * self.gain

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, b={self.b:g}, "
                f"max_out={self.max_out}, gain={self.gain:.4g}")


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


class DetachableLayerNorm(_ExplainableMixin, nn.LayerNorm):
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
