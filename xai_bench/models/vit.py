"""The conventional twin of the B-cos ViT: a standard pre-norm ViT.

Same tokeniser idea (a small conv stem, then a convolution with kernel = stride), learned
position embedding, ``LN → MSA → residual``, ``LN → MLP(GELU) → residual``, final LayerNorm,
mean pooling over tokens (no CLS token), linear head. Every transformer layer supports LRP
relevance propagation (``model.relprop``, rules in :mod:`xai_bench.models.lrp`), which the
CheferLRP and pLRP methods use; relevance is propagated down to the input tokens.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from xai_bench.models.base import AttentionRecorder, ExplainableViT, image_and_token_grid
from xai_bench.models.lrp import (
    LRPLinear, check_rules, relprop_matmul, relprop_mean_pool, relprop_residual,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvTokeniser(nn.Module):
    """Conv-BN-ReLU stem, then a convolution with kernel = stride producing the tokens."""

    def __init__(self, embed_dim, stem_channels, stem_strides, patch_size):
        super().__init__()
        layers, c = [], 3
        for width, stride in zip(stem_channels, stem_strides):
            layers += [nn.Conv2d(c, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            c = width
        self.stem = nn.Sequential(*layers)
        self.to_tokens = nn.Conv2d(c, embed_dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.to_tokens(self.stem(x)).flatten(2).transpose(1, 2)


class Attention(AttentionRecorder, nn.Module):
    lrp_record = False

    def __init__(self, dim, num_heads):
        super().__init__()
        assert dim % num_heads == 0, "embed_dim must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = LRPLinear(dim, 3 * dim)
        self.proj = LRPLinear(dim, dim)
        #: LRP relevance that reached the attention matrix in the last ``relprop``
        #: (B, heads, N, N).
        self.attention_relevance: torch.Tensor | None = None

    def forward(self, x):
        bsz, n, dim = x.shape
        qkv = self.qkv(x).reshape(bsz, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(-1)
        self._keep(attn)
        if self.lrp_record:
            self._saved = (q.detach(), k.detach(), v.detach(), attn.detach())
        out = (attn @ v).transpose(1, 2).reshape(bsz, n, dim)
        return self.proj(out)

    def relprop(self, relevance, alpha=1.0, rules="chefer"):
        q, k, v, attn = self._saved
        bsz, h, n, dh = v.shape
        r_out = self.proj.relprop(relevance, alpha, rules)
        r_out = r_out.reshape(bsz, n, h, dh).transpose(1, 2)
        r_attn, r_v = relprop_matmul(attn, v, r_out)
        self.attention_relevance = r_attn
        # softmax: identity; the 1/sqrt(d) factor cancels in LRP-0.
        r_q, r_kt = relprop_matmul(q, k.transpose(-1, -2), r_attn)
        r_qkv = torch.stack([r_q, r_kt.transpose(-1, -2), r_v])  # (3, B, h, N, dh)
        r_qkv = r_qkv.permute(1, 3, 0, 2, 4).reshape(bsz, n, 3 * h * dh)
        return self.qkv.relprop(r_qkv, alpha, rules)


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = LRPLinear(dim, hidden), LRPLinear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))

    def relprop(self, relevance, alpha=1.0, rules="chefer"):
        r = self.fc2.relprop(relevance, alpha, rules)
        return self.fc1.relprop(r, alpha, rules)  # GELU: identity


class Block(nn.Module):
    lrp_record = False

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        a = self.attn(self.norm1(x))
        h = x + a
        m = self.mlp(self.norm2(h))
        if self.lrp_record:
            self._saved = (x.detach(), a.detach(), h.detach(), m.detach())
        return h + m

    def relprop(self, relevance, alpha=1.0, rules="chefer"):
        x, a, h, m = self._saved
        r_h, r_m = relprop_residual(h, m, relevance, rules)
        r_h = r_h + self.mlp.relprop(r_m, alpha, rules)  # LayerNorm: identity; h's two uses add
        r_x, r_a = relprop_residual(x, a, r_h, rules)
        return r_x + self.attn.relprop(r_a, alpha, rules)


class ViT(ExplainableViT):
    family = "conventional"
    training_loss = "ce"
    is_dynamic_linear = False
    logit_bias = 0.0

    def __init__(self, num_classes: int = 10, image_size: int = 32, embed_dim: int = 64,
                 depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0,
                 stem_channels=(32, 64), stem_strides=(1, 2), patch_size: int = 2,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, tokeniser=None):
        """``tokeniser``: ``None`` builds the small conv stem (``stem_*``, ``patch_size``);
        else a ready-made module or a factory ``tokeniser(embed_dim) -> module`` mapping the
        normalised RGB input to ``(B, N, embed_dim)`` tokens (left as it is by the weight
        init). ``stem_strides`` × ``patch_size`` must then be its total stride (it sets the
        token grid), and ``config`` describes only the transformer: whoever passes a
        tokeniser must set a ``config`` that rebuilds the model (see ``models/paper.py``)."""
        super().__init__()
        size, grid = image_and_token_grid(image_size, stem_strides, patch_size)
        self.config = dict(num_classes=num_classes, image_size=image_size, embed_dim=embed_dim,
                           depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                           stem_channels=list(stem_channels), stem_strides=list(stem_strides),
                           patch_size=patch_size, mean=list(mean), std=list(std))
        self.image_size, self.num_classes, self.in_channels = size, num_classes, 3
        self.encoding = "normalised"
        self.token_grid = grid
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        if tokeniser is None:
            self.tokeniser = ConvTokeniser(embed_dim, stem_channels, stem_strides, patch_size)
        else:
            self.tokeniser = tokeniser if isinstance(tokeniser, nn.Module) \
                else tokeniser(embed_dim)
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_tokens, embed_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = LRPLinear(embed_dim, num_classes)
        if tokeniser is None:
            self.apply(_init_weights)
        else:  # same init order as above, but a given (e.g. pretrained) tokeniser is kept
            for name, child in self.named_children():
                if name != "tokeniser":
                    child.apply(_init_weights)

    def encode(self, images):
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def forward(self, x):
        t = self.tokeniser(x) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        pooled = self.norm(t).mean(1)
        if self.lrp_recording_on:
            self._pool_input = self.norm(t).detach()
        return self.head(pooled)

    # ---- LRP -------------------------------------------------------------------------
    lrp_recording_on = False

    @contextlib.contextmanager
    def lrp_recording(self):
        """Forward passes inside the context keep what :meth:`relprop` needs."""
        layers = [m for m in self.modules() if hasattr(m, "lrp_record")]
        for m in layers:
            m.lrp_record = True
        self.lrp_recording_on = True
        try:
            yield self
        finally:
            for m in layers:
                m.lrp_record = False
            self.lrp_recording_on = False

    def relprop(self, relevance: torch.Tensor, alpha: float = 1.0,
                rules: str = "chefer") -> torch.Tensor:
        """Propagate ``relevance`` (B, num_classes) — e.g. the one-hot target — from the logits
        down to the input tokens (B, N, D), after a forward under :meth:`lrp_recording`.
        Each block's ``attn.attention_relevance`` holds the relevance reaching its attention
        matrix. ``rules``: ``"chefer"`` or ``"lrp"`` (:mod:`xai_bench.models.lrp`)."""
        check_rules(rules)
        r = self.head.relprop(relevance, alpha, rules)
        r = relprop_mean_pool(self._pool_input, r)  # final LayerNorm: identity
        for blk in reversed(self.blocks):
            r = blk.relprop(r, alpha, rules)
        return r


def _init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
