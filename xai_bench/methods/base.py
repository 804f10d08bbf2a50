"""The call contract shared by every attribution method (see docs/definitions.md, 'Shared
conventions and the token readout').

Like captum, construction binds the *how* (parameters with the papers' defaults) and the call
supplies the data::

    method = get_method("intgrad", n_steps=50)
    maps = method(model, x, targets)   # x: encoded input (B, C_in, H, W); targets: (B,)
                                       # maps: (B, H, W) at input resolution

A method declares which models it applies to (``applies_to(model)``) and reports its
parameters (``params``) so that results can record them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xai_bench.contracts.method import DEFAULT_METHOD_COST
from xai_bench.contracts.parameters import check_parameter_values
from xai_bench.errors import NotApplicable
from xai_bench.contracts.model import has_attention, has_capabilities, model_attr, model_name

from xai_bench.compute.seeding import content_seed  # noqa: F401  (moved; importable here as before)


class MethodNotApplicable(NotApplicable):
    """Raised when a method is called on a model it does not apply to."""


class AttributionMethod:
    """Base class: subclasses implement :meth:`attribute` (and usually :meth:`applies_to`).

    Subclasses define their parameters as keyword arguments of ``__init__`` and store them in
    ``self.params`` (via ``super().__init__(**params)``)."""

    # The declarations (xai_bench.contracts.method.MethodCard) as class attributes; a
    # subclass overrides them or is decorated with @xai_bench.method(...).
    #: registered name
    name: str = "method"
    #: "model-inherent", "attention", "gradient", "lrp", "perturbation", "baseline" or any word
    kind: str = "other"
    #: True where the map does not depend on the target class (e.g. rollout)
    class_agnostic: bool = False
    #: model capabilities without which the method does not apply
    requires: tuple = ()
    #: forward passes per explained image (relative cost, for scheduling)
    cost: float = DEFAULT_METHOD_COST
    #: how figures show it: label (default: the name), place, "#rrggbb" colour
    label: str = ""
    place: float | None = None
    colour: str | None = None
    #: groups that ``--methods`` can name besides the kind ("paper", "default", "captum", ...)
    groups: tuple = ()
    #: {parameter: Valid} of xai_bench.contracts.parameters: the valid values of the
    #: parameters, checked before any work
    PARAMETER_CHECKS: dict = {}

    def __init__(self, **params):
        self.params = dict(params)
        # the declared valid values (PARAMETER_CHECKS) also hold for an object built directly
        check_parameter_values("method", getattr(self, "name", type(self).__name__), type(self),
                               self.params)

    def applies_to(self, model) -> bool:
        """Whether the model has every capability the method ``requires``."""
        return has_capabilities(model, self.requires)

    def attribute(self, model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not self.applies_to(model):
            raise MethodNotApplicable(
                f"method '{self.name}' does not apply to model "
                f"'{model_name(model)}'")
        targets = torch.as_tensor(targets, device=x.device).long().reshape(-1)
        if x.dim() != 4 or targets.shape[0] != x.shape[0]:
            raise ValueError(f"expected x (B, C, H, W) and targets (B,), got {tuple(x.shape)} "
                             f"and {tuple(targets.shape)}")
        maps = self.attribute(model, x.detach(), targets)
        expected = (x.shape[0], x.shape[2], x.shape[3])
        if tuple(maps.shape) != expected:
            raise RuntimeError(f"method '{self.name}' returned maps of shape "
                               f"{tuple(maps.shape)}, expected {expected}")
        return maps.detach()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def upsample_token_map(model, token_values: torch.Tensor, size=None) -> torch.Tensor:
    """(B, N) token values -> (B, H, W) maps at input resolution: reshape to the token grid,
    bilinear upsampling (align_corners=False)."""
    grid = token_values.reshape(token_values.shape[0], 1, *model.token_grid)
    size = tuple(size or model.image_size)
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0]


def token_readout(matrix: torch.Tensor, model=None) -> torch.Tensor:
    """The patch-token values a token×token matrix ``(..., N, N)`` gives the image
    representation: ``(..., N_patch)``, in token-grid order.

    - ``model.pooling == "cls"`` (a CLS token at position 0, ``model.num_prefix_tokens >= 1``
      prefix tokens — CLS, distillation or register tokens — before the patch tokens, as in
      timm): the CLS row with the prefix columns dropped, ``matrix[..., 0, P:]``, exactly as
      the reference implementations of Chefer et al. read ``rollout[:, 0, 1:]``;
    - mean pooling (our models: no prefix tokens): where a reference reads the CLS row, take
      the mean over query rows instead and drop no column. With ``P`` prefix tokens that the
      pooling leaves out (timm's ``global_pool="avg"`` on a model with a CLS token) the mean
      runs over the patch rows and the prefix columns are dropped.

    ``model=None`` (or a model without ``num_prefix_tokens``) is the mean readout over all rows
    and columns, unchanged from earlier versions."""
    prefix = int(model_attr(model, "num_prefix_tokens") or 0) if model is not None else 0
    if model is not None and model_attr(model, "pooling") == "cls":
        if prefix < 1:
            raise ValueError(f"model '{model_name(model)}' has "
                             f"pooling='cls' but num_prefix_tokens={prefix}: a CLS readout "
                             f"needs the CLS token at position 0")
        return matrix[..., 0, prefix:]
    if prefix:
        return matrix[..., prefix:, prefix:].mean(dim=-2)
    return matrix.mean(dim=-2)


def is_vit(model) -> bool:
    """Models with the attention capability (:func:`xai_bench.contracts.model.has_attention`)."""
    return has_attention(model)
