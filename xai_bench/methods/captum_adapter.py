"""Any captum attribution as a method: ``captum:<Name>`` and ``captum:NoiseTunnel(<Name>)``.

``get_method("captum:Occlusion", sliding_window_shapes=(3, 8, 8))`` (or ``xai-bench run
--methods captum:Occlusion --method-arg captum:Occlusion.sliding_window_shapes=3,8,8``) builds
the class :func:`resolve_captum_method` generates for that name. Every attribution class of
``captum.attr`` whose constructor takes only the forward function (or the model) applies
(Saliency, InputXGradient, IntegratedGradients, GradientShap, DeepLift, DeepLiftShap,
GuidedBackprop, Deconvolution, Occlusion, FeatureAblation, ShapleyValueSampling,
ShapleyValues, Lime, KernelShap, LRP, ...); layer and neuron attributions, which need a layer,
do not, nor FeaturePermutation (it permutes features *across the batch*, so an image's map
would depend on the other images). ``NoiseTunnel(<Name>)`` wraps one of them.

Conventions (the declared reduction):

- captum's ``forward_func`` is the model, whose forward gives the logits; the target is the
  given ``targets``; the model runs in eval mode with gradients enabled;
- the map is captum's ``(B, C, H, W)`` attribution **summed over channels**;
- perturbation attributions with a ``feature_mask`` (FeatureAblation, ShapleyValueSampling,
  ShapleyValues, Lime, KernelShap) perturb one feature per **token cell** of the model's
  ``token_grid`` (all channels together) by default (``features="tokens"``), one feature per
  pixel (all channels) for a model without a token grid or with ``features="pixels"``;
- ``Occlusion``: ``sliding_window_shapes`` and ``strides`` default to one token patch over all
  channels (``(C, H / rows, W / cols)``; an eighth of the image for a model without a token
  grid);
- ``baselines`` is a constant in the model's input space (captum's default — zeros — when
  none); attributions that need a baseline distribution (GradientShap, DeepLiftShap) get that
  constant as a one-image distribution;
- stochastic attributions (NoiseTunnel, GradientShap, Lime, KernelShap, ShapleyValueSampling)
  run image by image with the global torch generator seeded by
  ``content_seed(image, seed)``, so a batched call equals the per-image calls.

Parameters are the keyword arguments of the captum constructor and of ``attribute()`` that
have simple defaults (numbers, strings, booleans, tuples, ``None``), plus ``features``
(perturbation attributions) and ``seed`` (stochastic ones); each is checked before any work.
The recorded ``params`` include ``captum_version``, so captum's version is part of a cell's
identity.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re

import torch

from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import content_seed
from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import (
    Valid, integer, number, one_of, or_none, resolve_parameters,
)
from xai_bench.errors import RegistryError, UnknownNameError
from xai_bench.methods.base import AttributionMethod

__all__ = ["resolve_captum_method", "captum_names", "CaptumMethod", "token_feature_mask"]

PREFIX = "captum"
#: attribute() arguments the adapter sets itself (never parameters)
_SET_BY_ADAPTER = ("inputs", "target", "additional_forward_args", "feature_mask",
                   "return_convergence_delta", "show_progress", "return_input_shape",
                   "attribution_method")
#: captum classes that look applicable but are not attributions of one image
_EXCLUDED = ("Attribution", "GradientAttribution", "PerturbationAttribution", "LimeBase",
             "FeaturePermutation", "NoiseTunnel")
_STOCHASTIC = ("NoiseTunnel", "GradientShap", "Lime", "KernelShap", "ShapleyValueSampling")
_NEEDS_DISTRIBUTION = ("GradientShap", "DeepLiftShap")
#: attributions whose surrogate model captum fits with scikit-learn
_NEEDS_SKLEARN = ("Lime", "KernelShap")
_SYNTAX = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\(\s*([A-Za-z_]\w*)\s*\))?\s*$")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shape_or_int(v) -> bool:
    if _is_int(v):
        return v >= 1
    return isinstance(v, (tuple, list)) and len(v) >= 1 and all(_is_int(i) and i >= 1 for i in v)


_SHAPE = or_none(Valid("a positive integer or a comma list of positive integers", _shape_or_int))
_BOOL = Valid("true or false", lambda v: isinstance(v, bool))
#: checks of the captum arguments that the adapter knows (others: the default's type)
_CHECKS = {
    "n_samples": integer(1), "nt_samples": integer(1), "nt_samples_batch_size": or_none(integer(1)),
    "stdevs": number(low=0), "nt_type": one_of("smoothgrad", "smoothgrad_sq", "vargrad"),
    "n_steps": integer(1), "perturbations_per_eval": integer(1),
    "internal_batch_size": or_none(integer(1)), "abs": _BOOL,
    "draw_baseline_from_distrib": _BOOL, "multiply_by_inputs": _BOOL,
    "eps": number(above=0), "baselines": or_none(number()),
    "sliding_window_shapes": _SHAPE, "strides": _SHAPE,
    "method": one_of("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
                     "riemann_trapezoid"),
    "features": one_of("tokens", "pixels"), "seed": integer(),
}
#: our defaults where captum has none or one that does not fit an image model
_DEFAULTS = {"sliding_window_shapes": None, "strides": None, "baselines": None}


def import_captum():
    """``captum.attr``, or a one-line :class:`RegistryError` saying how to install it."""
    try:
        import captum.attr as attr
    except ImportError as e:
        raise RegistryError(f"captum methods need captum (pip install captum): "
                            f"{type(e).__name__}: {e}") from None
    return attr


def captum_version() -> str:
    import captum

    return str(getattr(captum, "__version__", "unknown"))


def _applicable(cls) -> bool:
    attr = import_captum()
    if not (inspect.isclass(cls) and issubclass(cls, attr.Attribution)):
        return False
    if cls.__name__ in _EXCLUDED or cls.__name__.startswith(("Layer", "Neuron")):
        return False
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return False
    if not params or params[0].name not in ("forward_func", "model"):
        return False
    return all(p.default is not p.empty for p in params[1:])


def captum_names() -> list:
    """The ``captum.attr`` attribution names that ``captum:<Name>`` accepts."""
    attr = import_captum()
    return sorted(n for n in dir(attr) if _applicable(getattr(attr, n)))


def _simple(value) -> bool:
    if isinstance(value, tuple):
        return all(_simple(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _keyword_args(fn, skip: int, allow_none: bool = True) -> dict:
    out = {}
    for p in list(inspect.signature(fn).parameters.values())[skip:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in _SET_BY_ADAPTER \
                or p.name.endswith("_func"):  # callables cannot come from the command line
            continue
        if p.name in _DEFAULTS:
            out[p.name] = _DEFAULTS[p.name]
        elif p.default is not p.empty and _simple(p.default) and \
                (allow_none or p.default is not None):
            out[p.name] = p.default
    return out


def token_feature_mask(model, x: torch.Tensor, features: str = "tokens") -> torch.Tensor:
    """``(1, 1, H, W)`` long feature ids: one per cell of the model's ``token_grid``
    (``features="tokens"``, where the model has one), else one per pixel."""
    h, w = x.shape[-2:]
    grid = getattr(model, "token_grid", None)
    if features == "tokens" and grid is not None:
        rows, cols = int(grid[0]), int(grid[1])
        r = torch.arange(h, device=x.device) * rows // h
        c = torch.arange(w, device=x.device) * cols // w
        mask = r[:, None] * cols + c[None, :]
    else:
        mask = torch.arange(h * w, device=x.device).reshape(h, w)
    return mask[None, None]


def _patch_window(model, x: torch.Tensor) -> tuple:
    c, h, w = x.shape[1:]
    grid = getattr(model, "token_grid", None)
    rows, cols = (int(grid[0]), int(grid[1])) if grid is not None else (8, 8)
    return (c, max(1, h // rows), max(1, w // cols))


def _as_shape(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


class CaptumMethod(AttributionMethod):
    """Base of the generated ``captum:<Name>`` classes (see the module docstring): the captum
    attribution, summed over channels. Subclasses set ``CAPTUM``/``INNER`` (names in
    ``captum.attr``), ``INIT_ARGS`` (constructor keywords) and ``ATTRIBUTE_ARGS``."""

    CAPTUM: str = ""
    INNER: str | None = None
    INIT_ARGS: tuple = ()
    ATTRIBUTE_ARGS: tuple = ()
    USES_MASK = False
    STOCHASTIC = False

    def __init__(self, **params):
        super().__init__(**params)
        self.params["captum_version"] = captum_version()

    def build(self, model):
        """The captum attribution object for ``model``."""
        attr = import_captum()
        init = {k: self.params[k] for k in self.INIT_ARGS}
        if self.INNER is None:
            return getattr(attr, self.CAPTUM)(model, **init)
        return attr.NoiseTunnel(getattr(attr, self.INNER)(model, **init))

    def attribute_kwargs(self, model, x: torch.Tensor) -> dict:
        """The keyword arguments of captum's ``attribute()`` for the batch ``x``."""
        p = self.params
        kwargs = {k: _as_shape(p[k]) for k in self.ATTRIBUTE_ARGS if k not in _DEFAULTS}
        if "baselines" in self.ATTRIBUTE_ARGS:
            value = p["baselines"]
            if (self.INNER or self.CAPTUM) in _NEEDS_DISTRIBUTION:
                # DeepLiftShap wants more than one example: two equal ones
                kwargs["baselines"] = torch.full_like(x[:1], float(value or 0.0)).repeat(
                    2, *([1] * (x.dim() - 1)))
            elif value is not None:
                kwargs["baselines"] = float(value)
        if "sliding_window_shapes" in self.ATTRIBUTE_ARGS:
            window = _patch_window(model, x)
            kwargs["sliding_window_shapes"] = _as_shape(p["sliding_window_shapes"]) or window
            kwargs["strides"] = _as_shape(p["strides"]) or window
        if self.USES_MASK:
            kwargs["feature_mask"] = token_feature_mask(model, x, p["features"])
        return kwargs

    def _run(self, model, x, targets):
        return self.build(model).attribute(x, target=targets, **self.attribute_kwargs(model, x))

    def attribute(self, model, x, targets):
        with eval_mode(model), torch.enable_grad():
            if not self.STOCHASTIC:
                return self._run(model, x.clone().requires_grad_(True), targets).sum(1)
            maps = []
            for img, t in zip(x, targets):
                devices = [img.device] if img.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(content_seed(img, self.params["seed"]))
                    one = img[None].clone().requires_grad_(True)
                    maps.append(self._run(model, one, t[None]).sum(1))
            return torch.cat(maps)


_GENERATED: dict = {}


def _make(name: str, inner: str | None):
    attr = import_captum()
    base = attr.NoiseTunnel if inner else getattr(attr, name)
    explained = getattr(attr, inner or name)
    init_args = _keyword_args(explained.__init__, 2, allow_none=False)
    attribute_args = _keyword_args(explained.attribute, 2)
    if inner:
        attribute_args.update(_keyword_args(base.attribute, 2))
    uses_mask = "feature_mask" in inspect.signature(explained.attribute).parameters
    stochastic = (inner or name) in _STOCHASTIC or inner is not None
    params = {**init_args, **attribute_args}
    if uses_mask:
        params["features"] = "tokens"
    if stochastic:
        params["seed"] = 0
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    signature = inspect.Signature([self_param] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in params.items()])

    def __init__(self, **kwargs):
        # unknown keys, wrong types and invalid values: one-line ConfigErrors with suggestions,
        # also when the class is constructed directly (get_method)
        CaptumMethod.__init__(self, **resolve_parameters("method", self.name, type(self),
                                                         kwargs))

    __init__.__signature__ = signature
    full = f"{PREFIX}:{name}({inner})" if inner else f"{PREFIX}:{name}"
    shown = f"NoiseTunnel({inner})" if inner else name
    kind = ("perturbation" if issubclass(getattr(attr, inner or name), attr.PerturbationAttribution)
            else "gradient")
    doc = (f"captum {shown} of the target logit, summed over channels "
           f"(xai_bench.methods.captum_adapter).")
    cls = type(f"Captum_{name}_{inner}" if inner else f"Captum_{name}", (CaptumMethod,), {
        "__init__": __init__, "__doc__": doc, "__module__": __name__,
        "CAPTUM": name, "INNER": inner, "INIT_ARGS": tuple(init_args),
        "ATTRIBUTE_ARGS": tuple(attribute_args), "USES_MASK": uses_mask,
        "STOCHASTIC": stochastic,
        "PARAMETER_CHECKS": {k: _CHECKS[k] for k in params if k in _CHECKS}})
    cost = 10.0 if kind == "perturbation" else 2.5
    return method(full, kind=kind, cost=cost, description=doc)(cls)


def _unknown(name: str, names: list):
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or \
        difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.5)
    close = [next(n for n in names if n.lower() == c.lower()) for c in close]
    if close:
        hint = " or ".join(f"'{PREFIX}:{c}'" for c in close)
        return UnknownNameError(f"unknown captum attribution '{name}' — did you mean {hint}?")
    return UnknownNameError(f"unknown captum attribution '{name}'; captum {captum_version()} "
                            f"offers {', '.join(names)}")


def resolve_captum_method(rest: str):
    """Resolver of the ``captum:`` prefix of ``xai_bench.METHODS``: the method class of
    ``captum:<Name>`` or ``captum:NoiseTunnel(<Name>)``; unknown names raise
    :class:`UnknownNameError` with the closest captum names."""
    match = _SYNTAX.match(rest)
    if not match:
        raise UnknownNameError(f"'{PREFIX}:{rest}' is not a captum method name: write "
                               f"{PREFIX}:<Name> or {PREFIX}:NoiseTunnel(<Name>)")
    name, inner = match.groups()
    names = captum_names()
    if inner is not None and name != "NoiseTunnel":
        raise UnknownNameError(f"'{PREFIX}:{rest}': only NoiseTunnel wraps another "
                               f"attribution — did you mean '{PREFIX}:NoiseTunnel({inner})'?")
    if inner is None and name == "NoiseTunnel":
        raise UnknownNameError(f"'{PREFIX}:NoiseTunnel' wraps an attribution — write e.g. "
                               f"'{PREFIX}:NoiseTunnel(Saliency)'")
    explained = inner or name
    if explained not in names:
        raise _unknown(explained, names)
    if explained in _NEEDS_SKLEARN and importlib.util.find_spec("sklearn") is None:
        # captum fits its surrogate model with scikit-learn, which xai-bench does not require
        raise RegistryError(f"'{PREFIX}:{rest}' needs scikit-learn (captum fits its "
                            f"surrogate with it): pip install scikit-learn")
    key = (name, inner)
    if key not in _GENERATED:
        _GENERATED[key] = _make(name, inner)
    return _GENERATED[key]
