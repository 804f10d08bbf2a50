"""The explainable-model interface shared by every built-in ViT (conventions in
docs/definitions.md, 'Notation and conventions').

A model exposes ``image_size``, ``num_classes``, ``encode(images)``, ``forward(x)``,
``logit_bias``, ``explanation_mode()``, ``is_dynamic_linear``, ``training_loss``,
``confidence(logits)``, the token grid, the pooling kind and its per-block attention maps
(recorded on request, so that methods can read them and take their gradients)."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn


def image_and_token_grid(image_size, stem_strides, patch_size):
    """``(H, W)`` of the input and ``(rows, cols)`` of the token grid for a conv tokeniser with
    the given stem strides and kernel = stride patch convolution; the size must divide."""
    size = (int(image_size), int(image_size)) if isinstance(image_size, (int, float)) \
        else (int(image_size[0]), int(image_size[1]))
    stride = patch_size * math.prod(stem_strides)
    if size[0] % stride or size[1] % stride:
        raise ValueError(f"image_size {size} is not divisible by the total stride {stride}")
    return size, (size[0] // stride, size[1] // stride)


class AttentionRecorder:
    """Mixin for attention modules: when ``record`` is on, the attention matrix that is
    actually applied to the values (post-softmax, after any positional prior) is kept in
    ``attention`` (B, heads, N, N), still attached to the autograd graph."""

    record: bool = False
    attention: torch.Tensor | None = None

    def _keep(self, attn: torch.Tensor) -> None:
        if self.record:
            self.attention = attn


class ExplainableModel(nn.Module):
    """What every explainable model exposes (ViTs and CNNs alike); subclasses set the
    attributes below and implement ``encode`` and ``forward``."""

    #: (H, W) of the RGB images the model expects.
    image_size: tuple[int, int]
    num_classes: int
    #: channels of the encoded input ``encode(images)``.
    in_channels: int
    #: what ``encode`` does (xai_bench.contracts.model.ENCODINGS): "rgb", "normalised"
    #: (``mean``/``std`` buffers) or "rgb_inverse" (B-cos ``[x, 1-x]``).
    encoding: str = "rgb"
    #: constant added to every logit (0 for conventional models).
    logit_bias: float = 0.0
    #: True where ``W(x) x`` reproduces ``logits - logit_bias`` exactly.
    is_dynamic_linear: bool = False
    #: "bce" (sigmoid outputs, B-cos) or "ce" (softmax outputs, conventional).
    training_loss: str = "ce"
    #: how tokens (or feature-map positions) become the image representation: "mean" or "cls".
    pooling: str = "mean"
    #: model family, for tables: "bcos" or "conventional".
    family: str = "conventional"
    #: constructor keyword arguments (JSON-serialisable), enough to rebuild the model.
    config: dict

    def encode(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def explanation_mode(self):
        """Context manager: dynamic factors become constants (no-op for conventional
        models)."""
        return contextlib.nullcontext(self)

    def confidence(self, logits: torch.Tensor) -> torch.Tensor:
        """Class confidences the model was trained to output: sigmoid for BCE-trained
        models, softmax otherwise."""
        return logits.sigmoid() if self.training_loss == "bce" else logits.softmax(-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ExplainableViT(ExplainableModel):
    """Base class of the built-in ViTs. Subclasses build ``self.blocks`` (each with an
    ``attn`` module mixing in :class:`AttentionRecorder`) and set the attributes of
    :class:`ExplainableModel` and ``token_grid``."""

    #: (rows, cols) of the token grid.
    token_grid: tuple[int, int]

    @property
    def num_tokens(self) -> int:
        return self.token_grid[0] * self.token_grid[1]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def attention_modules(self) -> list[nn.Module]:
        return [blk.attn for blk in self.blocks]

    @contextlib.contextmanager
    def record_attention(self) -> Iterator[list]:
        """Within the context, every forward stores each block's applied attention matrix;
        the yielded list is filled (in block order) after each forward."""
        maps: list = []
        modules = self.attention_modules()
        for m in modules:
            m.record, m.attention = True, None
        handle = self.register_forward_hook(
            lambda *_: maps.__setitem__(slice(None), [m.attention for m in modules]))
        try:
            yield maps
        finally:
            handle.remove()
            for m in modules:
                m.record, m.attention = False, None

    def tokens_to_grid(self, token_values: torch.Tensor) -> torch.Tensor:
        """(B, N) token values -> (B, rows, cols)."""
        return token_values.reshape(token_values.shape[0], *self.token_grid)
