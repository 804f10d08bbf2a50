"""Layers of the official B-cos-v2 models (Böhle et al., "B-cos Alignment for Inherently
Interpretable CNNs and Vision Transformers", TPAMI 2024; github.com/B-cos/B-cos-v2), written
so that their parameters and buffers carry the official state-dict names.

They differ from :mod:`xai_bench.models.bcos_layers` (our holistic ViT's layers) on purpose:

- no output gain, and the official stabilisers: ``‖x‖ + 1e-12`` for the linear layer,
  ``sqrt(Σ_patch x² + 1e-6)`` for the convolution, ``|cos| + 1e-6`` when ``B ≠ 2``;
- the weights live in a plain ``nn.Linear`` / ``nn.Conv2d`` called ``linear`` (state-dict key
  ``<name>.linear.weight``) and are normalised to unit rows at forward time;
- the norms are the official ones: LayerNorm (tokens) and "GN LayerNorm" (feature maps,
  one group) that keep only ``weight`` in the B-cos models, and the *uncentred* batch norm
  without bias (``x / sqrt(var + eps) · weight``) of the B-cos DenseNets / ResNets.

Explanation mode (``set_explanation_mode(True)``, found by duck typing by
:func:`xai_bench.models.bcos_layers.explanation_mode`) detaches exactly what the official
code detaches: the B-cos scale ``|cos|^(B-1)`` (numerator and ``‖x‖``), the variance of the
norms (their mean stays in the graph, so a centred norm is still linear in ``x``), and the
batch statistics of the uncentred batch norm in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xai_bench.models.bcos_layers import ExplainableMixin

__all__ = [
    "BcosLinearV2", "BcosConv2dV2", "LayerNormV2", "LayerNorm2dV2", "UncentredBatchNorm2d",
    "LogitBias",
]

# Stabilisers of the official implementation (kept so that logits match to float precision).
LINEAR_NORM_EPS = 1e-12   # added to ‖x‖ (not under the root)
CONV_NORM_EPS = 1e-6      # added to Σ x² over the patch, under the root
COS_EPS = 1e-6            # added to |cos| before the power when B ≠ 2


def _max_out(out: torch.Tensor, m: int, dim: int) -> torch.Tensor:
    if m == 1:
        return out
    return out.unflatten(dim, (out.shape[dim] // m, m)).amax(dim=dim + 1 if dim >= 0 else dim)


def _bcos_scaled(out: torch.Tensor, norm: torch.Tensor, b: float, detach: bool) -> torch.Tensor:
    """``|cos|^(B-1) · out`` with ``cos = out / norm``; the factor is a constant when
    ``detach`` (explanation mode)."""
    ref, norm = (out.detach(), norm.detach()) if detach else (out, norm)
    if b == 2:
        scale = ref.abs() / norm
    else:
        scale = ((ref / norm).abs() + COS_EPS).pow(b - 1)
    return scale * out


class BcosLinearV2(ExplainableMixin, nn.Module):
    """Official B-cos linear layer: unit-norm weight rows, no bias, optional MaxOut,
    ``out = |cos(x, ŵ)|^(B-1) · ŵᵀx``."""

    def __init__(self, in_features: int, out_features: int, b: float = 2, max_out: int = 1):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.b, self.max_out = b, int(max_out)
        self.linear = nn.Linear(in_features, out_features * self.max_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        out = F.linear(x, w / torch.linalg.vector_norm(w, dim=1, keepdim=True))
        out = _max_out(out, self.max_out, -1)
        if self.b == 1:
            return out
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) + LINEAR_NORM_EPS
        return _bcos_scaled(out, norm, self.b, self.explanation_mode)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, b={self.b:g}, max_out={self.max_out}"


class BcosConv2dV2(ExplainableMixin, nn.Module):
    """Official B-cos convolution (no bias, no groups or dilation): unit-norm kernels,
    ``‖x‖`` the norm of the input patch under the kernel over all channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, b: float = 2, max_out: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.b, self.max_out = b, int(max_out)
        self.linear = nn.Conv2d(in_channels, out_channels * self.max_out, kernel_size, stride,
                                padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.linear
        w = conv.weight
        w = w / torch.linalg.vector_norm(w, dim=(1, 2, 3), keepdim=True)
        out = F.conv2d(x, w, None, conv.stride, conv.padding)
        out = _max_out(out, self.max_out, 1)
        if self.b == 1:
            return out
        # Σ x² over each patch = (mean pool of the channel-summed squares) × patch area.
        area = conv.kernel_size[0] * conv.kernel_size[1]
        sq = F.avg_pool2d(x.pow(2).sum(1, keepdim=True), conv.kernel_size, conv.stride,
                          conv.padding)
        norm = (sq * area + CONV_NORM_EPS).sqrt()
        return _bcos_scaled(out, norm, self.b, self.explanation_mode)

    def extra_repr(self) -> str:
        c = self.linear
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={c.kernel_size[0]}, "
                f"stride={c.stride[0]}, padding={c.padding[0]}, b={self.b:g}, "
                f"max_out={self.max_out}")


class _NormMixin(ExplainableMixin):
    """Affine parameters of the official norms: ``weight`` always, ``bias`` only when asked
    (the B-cos models drop it, which keeps the norm free of an additive term)."""

    def _affine(self, channels: int, bias: bool) -> None:
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None


class LayerNormV2(_NormMixin, nn.Module):
    """LayerNorm over the last dimension (token features). In explanation mode only the
    variance is a constant: ``(x - mean(x)) / sqrt(var + eps)`` stays linear in ``x``."""

    def __init__(self, dim: int, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self._affine(dim, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.explanation_mode:
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        var = x.var(-1, unbiased=False, keepdim=True).detach()
        out = (x - x.mean(-1, keepdim=True)) / (var + self.eps).sqrt() * self.weight
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.dim}, bias={self.bias is not None}, eps={self.eps:g}"


class LayerNorm2dV2(_NormMixin, nn.Module):
    """LayerNorm of a feature map (B, C, H, W) over C, H and W together (group norm with one
    group), per-channel affine; variance detached in explanation mode."""

    def __init__(self, channels: int, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps
        self._affine(channels, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.explanation_mode:
            return F.group_norm(x, 1, self.weight, self.bias, self.eps)
        dims = (1, 2, 3)
        var = x.var(dims, unbiased=False, keepdim=True).detach()
        out = (x - x.mean(dims, keepdim=True)) / (var + self.eps).sqrt()
        out = out * self.weight[:, None, None]
        return out if self.bias is None else out + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.channels}, bias={self.bias is not None}, eps={self.eps:g}"


class UncentredBatchNorm2d(ExplainableMixin, nn.BatchNorm2d):
    """Batch norm *without centring and without bias*: ``x / sqrt(var + eps) · weight``,
    per channel, ``var`` over batch and space in training mode (updating ``running_var``;
    the inherited ``running_mean`` buffer is kept for state-dict compatibility but never
    used) and ``running_var`` in eval mode. Without a mean and a bias it is linear in ``x``;
    in explanation mode the batch variance is a constant."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        if self.training or self.running_var is None:
            var = (x.detach() if self.explanation_mode else x).var((0, 2, 3), unbiased=False)
            if self.training and self.running_var is not None:
                self.running_var.copy_((1 - factor) * self.running_var + factor * var.detach())
        else:
            var = self.running_var
        out = x / (var + self.eps).sqrt()[None, :, None, None]
        return out if self.weight is None else out * self.weight[None, :, None, None]


class LogitBias(nn.Module):
    """Adds a constant to the logits (the official logit layer without temperature):
    ``-log(C - 1)`` makes the initial sigmoid outputs ≈ 1/C for BCE training."""

    def __init__(self, bias: float):
        super().__init__()
        self.bias = float(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias

    def extra_repr(self) -> str:
        return f"bias={self.bias:.6g}"
