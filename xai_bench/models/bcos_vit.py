"""The holistic B-cos ViT of "Holistically Explainable Vision Transformers" (Böhle et al.).

Every component is dynamic linear, so in explanation mode the whole model is one matrix
``W(x)``: ``logits = W(x) x + logit_bias`` (exactly, except with a learned additive position
embedding, whose share of the logit is then missing from the input contributions).

- tokeniser: a small B-cos CNN, then one B-cos convolution with kernel = stride;
- attention: LayerNorm only on the query/key input; values and output projection are B-cos
  layers (MaxOut) on the raw tokens; positional information from a learned attention prior
  (multiplicative: ``softmax(qkᵀ/√d) ⊙ softmax(P)``, additive: ``softmax(qkᵀ/√d + P)``), a
  learned position embedding, or none;
- MLP: two B-cos layers with MaxOut, no GELU, no norm;
- head: mean over tokens, a B-cos layer without MaxOut, logit layer.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from xai_bench.models.base import AttentionRecorder, ExplainableViT, image_and_token_grid
from xai_bench.models.bcos_layers import (
    BcosConv2d, BcosLinear, DetachableLayerNorm, LogitLayer, encode_six_channels,
    explanation_mode,
)

POSITIONS = ("multiplicative", "additive", "embedding", "none")


class BcosTokeniser(nn.Module):
    """B-cos conv stem (3x3 convolutions with MaxOut) + a B-cos convolution with
    kernel = stride that turns the feature map into ``embed_dim``-dimensional tokens."""

    def __init__(self, in_channels, embed_dim, stem_channels, stem_strides, patch_size, b,
                 feature_gain):
        super().__init__()
        layers, c = [], in_channels
        for width, stride in zip(stem_channels, stem_strides):
            layers.append(BcosConv2d(c, width, 3, stride=stride, padding=1, b=b, max_out=2))
            c = width
        self.stem = nn.Sequential(*layers)
        # Paper: backbone features are scaled by a constant before the token convolution.
        self.feature_gain = float(feature_gain)
        self.to_tokens = BcosConv2d(c, embed_dim, patch_size, stride=patch_size, b=b, max_out=2)

    def forward(self, x):
        feats = self.stem(x) * self.feature_gain
        return self.to_tokens(feats).flatten(2).transpose(1, 2)  # (B, N, D)


class BcosAttention(AttentionRecorder, nn.Module):
    def __init__(self, dim, num_heads, num_tokens, position, b, max_out, prior_gain):
        super().__init__()
        assert dim % num_heads == 0, "embed_dim must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.position = position
        self.norm = DetachableLayerNorm(dim)
        self.qk = nn.Linear(dim, 2 * dim)
        self.v = BcosLinear(dim, dim, b=b, max_out=max_out)
        self.proj = BcosLinear(dim, dim, b=b, max_out=max_out)
        if position in ("multiplicative", "additive"):
            self.prior = nn.Parameter(torch.zeros(num_heads, num_tokens, num_tokens))
        # softmax(qkᵀ) ⊙ softmax(P) has rows summing to ~1/N at init (P = 0); the constant
        # restores rows summing to ~1 so the attention branch neither vanishes nor explodes.
        self.prior_gain = (float(num_tokens) if prior_gain is None else float(prior_gain)) \
            if position == "multiplicative" else 1.0
        self.explanation_mode = False

    def set_explanation_mode(self, on: bool) -> None:
        self.explanation_mode = bool(on)

    def attention_matrix(self, x):
        """The applied attention matrix (B, heads, N, N), after the positional prior."""
        bsz, n, dim = x.shape
        h, dh = self.num_heads, self.head_dim
        q, k = self.qk(self.norm(x)).reshape(bsz, n, 2, h, dh).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        if self.position == "additive":
            scores = scores + self.prior
        attn = scores.softmax(-1)
        if self.position == "multiplicative":
            attn = attn * (self.prior.softmax(-1) * self.prior_gain)
        return attn

    def forward(self, x):
        bsz, n, dim = x.shape
        # In explanation mode the attention is a constant (part of W(x)): computed without a
        # graph, it costs the backward pass nothing.
        with torch.no_grad() if self.explanation_mode else contextlib.nullcontext():
            attn = self.attention_matrix(x)
        self._keep(attn)
        h, dh = self.num_heads, self.head_dim
        v = self.v(x).reshape(bsz, n, h, dh).transpose(1, 2)
        out = (attn @ v).transpose(1, 2).reshape(bsz, n, dim)
        return self.proj(out)


class BcosMLP(nn.Module):
    def __init__(self, dim, hidden, b, max_out):
        super().__init__()
        self.fc1 = BcosLinear(dim, hidden, b=b, max_out=max_out)
        self.fc2 = BcosLinear(hidden, dim, b=b, max_out=max_out)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class BcosBlock(nn.Module):
    def __init__(self, dim, num_heads, num_tokens, mlp_ratio, position, b, max_out, prior_gain,
                 branch_gain):
        super().__init__()
        self.attn = BcosAttention(dim, num_heads, num_tokens, position, b, max_out, prior_gain)
        self.mlp = BcosMLP(dim, int(dim * mlp_ratio), b, max_out)
        # Constant on both residual branches: keeps the residual stream's norm O(1) through
        # depth (see docs/scales.md); a constant keeps the block dynamic linear.
        self.branch_gain = float(branch_gain)

    def forward(self, x):
        x = x + self.branch_gain * self.attn(x)
        return x + self.branch_gain * self.mlp(x)


class BcosViT(ExplainableViT):
    family = "bcos"
    training_loss = "bce"

    def __init__(self, num_classes: int = 10, image_size: int = 32, embed_dim: int = 64,
                 depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0,
                 stem_channels=(32, 64), stem_strides=(1, 2), patch_size: int = 2,
                 position: str = "multiplicative", b: float = 2.0, max_out: int = 2,
                 feature_gain: float = 1.0, prior_gain: float | None = None,
                 branch_gain: float | None = None, logit_temperature: float | None = None,
                 logit_bias: float | None = None, tokeniser=None):
        """``tokeniser``: ``None`` builds the small B-cos conv stem (``stem_*``,
        ``patch_size``, ``feature_gain``); else a ready-made module or a factory
        ``tokeniser(embed_dim) -> module`` mapping the 6-channel input to ``(B, N, embed_dim)``
        tokens. ``stem_strides`` × ``patch_size`` must then be its total stride (it sets the
        token grid), and ``config`` describes only the transformer: whoever passes a
        tokeniser must set a ``config`` that rebuilds the model (see ``models/paper.py``)."""
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
        size, grid = image_and_token_grid(image_size, stem_strides, patch_size)
        self.config = dict(num_classes=num_classes, image_size=image_size, embed_dim=embed_dim,
                           depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                           stem_channels=list(stem_channels), stem_strides=list(stem_strides),
                           patch_size=patch_size, position=position, b=b, max_out=max_out,
                           feature_gain=feature_gain, prior_gain=prior_gain,
                           branch_gain=branch_gain, logit_temperature=logit_temperature,
                           logit_bias=logit_bias)
        self.image_size, self.num_classes, self.in_channels = size, num_classes, 6
        self.encoding = "rgb_inverse"
        self.token_grid = grid
        self.position = position
        self.is_dynamic_linear = position != "embedding"
        n = self.num_tokens
        if tokeniser is None:
            self.tokeniser = BcosTokeniser(6, embed_dim, stem_channels, stem_strides, patch_size,
                                           b, feature_gain)
        else:
            self.tokeniser = tokeniser if isinstance(tokeniser, nn.Module) \
                else tokeniser(embed_dim)
        if position == "embedding":
            self.pos_embed = nn.Parameter(torch.randn(1, n, embed_dim) * 0.02)
        if branch_gain is None:
            # Branch outputs are correlated with the stream (MaxOut favours aligned units), so
            # they add up coherently: 1/depth keeps the stream's RMS O(1) through depth
            # (measured: x1.5 for depth 4 and 12; 1/sqrt(2·depth) grew x17 at depth 12).
            branch_gain = 1.0 / depth
        self.blocks = nn.ModuleList(
            BcosBlock(embed_dim, num_heads, n, mlp_ratio, position, b, max_out, prior_gain,
                      branch_gain) for _ in range(depth))
        self.head = BcosLinear(embed_dim, num_classes, b=b, max_out=1)
        if logit_temperature is None:
            # With the gains above the initial logits already have RMS ~1-2 around the bias.
            logit_temperature = 1.0
        self.logit_layer = LogitLayer(num_classes, logit_temperature, logit_bias)
        self.logit_bias = self.logit_layer.bias

    def encode(self, images):
        return encode_six_channels(images)

    def explanation_mode(self):
        return explanation_mode(self)

    def tokens(self, x):
        t = self.tokeniser(x)
        if self.position == "embedding":
            t = t + self.pos_embed
        return t

    def forward(self, x):
        t = self.tokens(x)
        for blk in self.blocks:
            t = blk(t)
        return self.logit_layer(self.head(t.mean(1)))

