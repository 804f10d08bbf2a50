"""The official B-cos-v2 ViTs: lucidrains-style SimpleViT and ViT-C (a conv stem instead of
the patch convolution), in their B-cos and standard versions, state-dict compatible with the
release (Böhle et al., TPAMI 2024; "Better plain ViT baselines", Beyer et al. 2022; "Early
convolutions help transformers see better", Xiao et al. 2021).

Architecture (facts of the official models):

- patches flattened in ``(p1 p2 c)`` order (row in patch, column in patch, channel) and
  embedded by one linear layer; ViT-C first runs a stem of 3×3 convolutions (stride 2 where
  the width grows, else 1), each followed by a LayerNorm of the feature map and the
  activation, then uses 1×1 "patches";
- a *fixed* 2-D sin-cos position embedding is *added* to the tokens; no CLS token;
- blocks: ``x + Attn(x)``, ``x + MLP(x)``; the attention normalises its input (LayerNorm)
  and takes q, k, v from one bias-free linear layer; MLP = LayerNorm, linear, activation,
  linear;
- mean over tokens, LayerNorm, linear head.

B-cos version: 6-channel input ``[x, 1-x]``, every linear layer except ``to_qkv`` is a B-cos
layer (B=2, no MaxOut, no bias), identity activations, norms without bias, logit bias
``-log(C-1)``; the network is wrapped with its logit layer, so its state-dict keys start
with ``0.`` (:class:`BcosSimpleViT`). In explanation mode q and k are detached (the attention
is a constant), the norms' variances and the B-cos scales too.

**Not complete**: the position embedding is a constant added to the tokens, so
``logit - logit_bias = Σ W(x) ⊙ x + (share of the position embedding)``; the input
contributions miss exactly that share (``is_dynamic_linear = False``).
Standard version: 3-channel ImageNet-normalised input, GELU, biases, CE training.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
from torch import nn

from xai_bench.models.base import AttentionRecorder, ExplainableViT, image_and_token_grid
from xai_bench.models.bcos_layers import ExplainableMixin, encode_six_channels, explanation_mode
from xai_bench.models.bcos_v2.common import default_logit_bias
from xai_bench.models.bcos_v2.layers import (
    BcosConv2dV2, BcosLinearV2, LayerNorm2dV2, LayerNormV2, LogitBias,
)

__all__ = ["SimpleViT", "BcosSimpleViT", "VIT_VARIANTS", "sincos_position_embedding"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (patch size, embed dim, depth, heads, MLP dim, conv stem widths or None); image 224².
# ViT-C drops one block to pay for its stem (as in the official models).
VIT_VARIANTS = {
    "simple_vit_ti_patch16_224": (16, 192, 12, 3, 768, None),
    "simple_vit_s_patch16_224": (16, 384, 12, 6, 1536, None),
    "simple_vit_b_patch16_224": (16, 768, 12, 12, 3072, None),
    "simple_vit_l_patch16_224": (16, 1024, 14, 16, 4096, None),
    "vitc_ti_patch1_14": (1, 192, 11, 3, 768, (24, 48, 96, 192)),
    "vitc_s_patch1_14": (1, 384, 11, 6, 1536, (48, 96, 192, 384)),
    "vitc_b_patch1_14": (1, 768, 11, 12, 3072, (64, 128, 128, 256, 256, 512)),
    "vitc_l_patch1_14": (1, 1024, 13, 16, 4096, (64, 128, 128, 256, 256, 512)),
}


def sincos_position_embedding(rows: int, cols: int, dim: int, temperature: float = 10_000.0,
                              device=None, dtype=torch.float32) -> torch.Tensor:
    """(rows·cols, dim) fixed 2-D embedding, token order row-major: for frequencies
    ``ω_i = temperature^(-i/(dim/4 - 1))``, ``[sin(c ω), cos(c ω), sin(r ω), cos(r ω)]`` of
    the token's column ``c`` and row ``r``."""
    if dim % 4:
        raise ValueError(f"the sin-cos embedding needs a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    omega = temperature ** -(torch.arange(quarter, device=device) / (quarter - 1))
    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device),
                          indexing="ij")
    r = r.reshape(-1, 1) * omega
    c = c.reshape(-1, 1) * omega
    return torch.cat([c.sin(), c.cos(), r.sin(), r.cos()], dim=1).to(dtype)


class SinCosPositionEmbedding(nn.Module):
    """Module form (no parameters): patches (B, rows, cols, D) -> embedding (rows·cols, D).
    A module so that its output can be hooked (e.g. to measure its share of a logit)."""

    def __init__(self, temperature: float = 10_000.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        rows, cols, dim = patches.shape[-3:]
        return sincos_position_embedding(rows, cols, dim, self.temperature, patches.device,
                                         patches.dtype)


class _Layers:
    """Factories of the B-cos or standard layers."""

    def __init__(self, bcos: bool, b: float, max_out: int):
        self.bcos, self.b, self.max_out = bcos, b, max_out

    def linear(self, n_in, n_out, bias=True):
        if self.bcos:
            return BcosLinearV2(n_in, n_out, b=self.b, max_out=self.max_out)
        return nn.Linear(n_in, n_out, bias=bias)

    def conv3x3(self, c_in, c_out, stride):
        if self.bcos:
            return BcosConv2dV2(c_in, c_out, 3, stride, 1, b=self.b, max_out=self.max_out)
        return nn.Conv2d(c_in, c_out, 3, stride, 1)

    def norm(self, dim):
        return LayerNormV2(dim, bias=not self.bcos)

    def norm2d(self, channels):
        return LayerNorm2dV2(channels, bias=not self.bcos)

    def act(self):
        return nn.Identity() if self.bcos else nn.GELU()


class PatchEmbedding(nn.Module):
    """(Optional conv stem,) ``(p1 p2 c)`` patch flattening, linear embedding:
    (B, C, H, W) -> (B, rows, cols, D)."""

    def __init__(self, in_channels, dim, patch_size, stem_widths, layers: _Layers):
        super().__init__()
        self.patch_size = patch_size
        self.stem_strides: list[int] = []
        c = in_channels
        if stem_widths:
            stem = []
            for width in stem_widths:
                stride = 2 if width > c else 1
                stem += [layers.conv3x3(c, width, stride), layers.norm2d(width), layers.act()]
                self.stem_strides.append(stride)
                c = width
            self.conv_stem = nn.Sequential(*stem)
        else:
            self.conv_stem = None
        self.linear = layers.linear(c * patch_size * patch_size, dim)

    def forward(self, x):
        if self.conv_stem is not None:
            x = self.conv_stem(x)
        bsz, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(bsz, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return self.linear(x.reshape(bsz, h // p, w // p, p * p * c))


class Attention(AttentionRecorder, ExplainableMixin, nn.Module):
    """LayerNorm on the input of q, k and v; bias-free ``to_qkv``; ``to_out`` a B-cos layer
    (standard: bias-free linear). Records the applied (post-softmax) attention. In
    explanation mode q and k are detached: the attention is a constant."""

    def __init__(self, dim, heads, layers: _Layers):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        inner = self.head_dim * heads
        self.norm = layers.norm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = layers.linear(inner, dim, bias=False)

    def forward(self, x):
        bsz, n, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(bsz, n, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if self.explanation_mode:
            q, k = q.detach(), k.detach()
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(-1)
        self._keep(attn)
        out = (attn @ v).transpose(1, 2).reshape(bsz, n, -1)
        return self.to_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, layers: _Layers):
        super().__init__()
        self.net = nn.Sequential(OrderedDict(
            norm=layers.norm(dim), linear1=layers.linear(dim, hidden), act=layers.act(),
            linear2=layers.linear(hidden, dim)))

    def forward(self, x):
        return self.net(x)


class Encoder(nn.Module):
    def __init__(self, dim, heads, mlp_dim, layers: _Layers):
        super().__init__()
        self.attn = Attention(dim, heads, layers)
        self.ff = FeedForward(dim, mlp_dim, layers)

    def forward(self, x):
        x = self.attn(x) + x
        return self.ff(x) + x


class SimpleViT(ExplainableViT):
    """SimpleViT / ViT-C in the official layout (state-dict keys as released). With
    ``bcos=False`` this is the released *standard* model; with ``bcos=True`` it is the
    network inside :class:`BcosSimpleViT` (which adds the logit bias and the ``0.`` key
    prefix: use that one for the B-cos models)."""

    pooling = "mean"
    is_dynamic_linear = False  # the added sin-cos position embedding (see module docstring)

    def __init__(self, num_classes: int = 1000, image_size=224, patch_size: int = 16,
                 dim: int = 192, depth: int = 12, heads: int = 3, mlp_dim: int = 768,
                 conv_stem=None, bcos: bool = False, b: float = 2, max_out: int = 1):
        super().__init__()
        self.config = dict(num_classes=num_classes, image_size=image_size,
                           patch_size=patch_size, dim=dim, depth=depth, heads=heads,
                           mlp_dim=mlp_dim, conv_stem=list(conv_stem) if conv_stem else None,
                           bcos=bcos, b=b, max_out=max_out)
        layers = _Layers(bcos, b, max_out)
        self.bcos = bool(bcos)
        self.family = "bcos" if bcos else "conventional"
        self.training_loss = "bce" if bcos else "ce"
        self.in_channels = 6 if bcos else 3
        self.encoding = "rgb_inverse" if bcos else "normalised"
        self.num_classes = num_classes
        self.to_patch_embedding = PatchEmbedding(self.in_channels, dim, patch_size, conv_stem,
                                                 layers)
        self.image_size, self.token_grid = image_and_token_grid(
            image_size, self.to_patch_embedding.stem_strides, patch_size)
        self.positional_embedding = SinCosPositionEmbedding()
        self.transformer = nn.Sequential(OrderedDict(
            (f"encoder_{i}", Encoder(dim, heads, mlp_dim, layers)) for i in range(depth)))
        self.linear_head = nn.Sequential(OrderedDict(
            norm=layers.norm(dim), linear=layers.linear(dim, num_classes)))
        if not bcos:
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                                 persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                                 persistent=False)

    @property
    def blocks(self):
        return self.transformer

    def encode(self, images):
        if self.bcos:
            return encode_six_channels(images)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def explanation_mode(self):
        return explanation_mode(self) if self.bcos else contextlib.nullcontext(self)

    def tokens(self, x):
        """Embedded tokens plus position embedding, (B, N, D)."""
        patches = self.to_patch_embedding(x)
        pe = self.positional_embedding(patches)
        return patches.flatten(1, 2) + pe

    def forward(self, x):
        t = self.transformer(self.tokens(x))
        return self.linear_head(t.mean(1))


class BcosSimpleViT(ExplainableViT):
    """B-cos SimpleViT / ViT-C as released: child ``0`` the network (:class:`SimpleViT` with
    ``bcos=True``), child ``1`` the logit bias; so the state-dict keys start with ``0.``.

    ``is_dynamic_linear`` is False: ``Σ W(x) ⊙ x`` misses the position embedding's share of
    ``logit - logit_bias`` (the embedding is added, not a function of the input)."""

    family = "bcos"
    training_loss = "bce"
    pooling = "mean"
    in_channels = 6
    encoding = "rgb_inverse"
    is_dynamic_linear = False

    def __init__(self, num_classes: int = 1000, image_size=224, patch_size: int = 16,
                 dim: int = 192, depth: int = 12, heads: int = 3, mlp_dim: int = 768,
                 conv_stem=None, b: float = 2, max_out: int = 1,
                 logit_bias: float | None = None):
        super().__init__()
        net = SimpleViT(num_classes, image_size, patch_size, dim, depth, heads, mlp_dim,
                        conv_stem, bcos=True, b=b, max_out=max_out)
        self.config = {**{k: v for k, v in net.config.items() if k != "bcos"},
                       "logit_bias": logit_bias}
        self.logit_bias = default_logit_bias(num_classes, logit_bias)
        self.add_module("0", net)
        self.add_module("1", LogitBias(self.logit_bias))
        self.num_classes, self.image_size, self.token_grid = \
            num_classes, net.image_size, net.token_grid

    @property
    def network(self) -> SimpleViT:
        return self._modules["0"]

    @property
    def blocks(self):
        return self.network.transformer

    def encode(self, images):
        return encode_six_channels(images)

    def explanation_mode(self):
        return explanation_mode(self)

    def forward(self, x):
        return self._modules["1"](self.network(x))
