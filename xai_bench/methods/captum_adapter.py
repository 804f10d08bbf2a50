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
  run image by image with the global torch and numpy generators seeded by
  ``content_seed(image, seed)``, so a batched call equals the per-image calls.

Parameters are the keyword arguments of the captum constructor and of ``attribute()`` that
have simple defaults (numbers, strings, booleans, tuples, ``None``), plus ``features``
(perturbation attributions) and ``seed`` (stochastic ones); each is checked before any work.
The recorded ``params`` include ``captum_version``, so captum's version is part of a cell's
identity.
"""

from __future__ import annotations

import importlib.util
import inspect
import re

import torch

from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import content_seed, seeded_globals
from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import (
    Valid, boolean, integer, number, one_of, or_literal, or_none, resolve_parameters,
)
from xai_bench.errors import RegistryError, UnknownNameError, unknown_library_name
from xai_bench.methods.base import AttributionMethod

__all__ = ["resolve_captum_method", "captum_names", "CaptumMethod", "token_feature_mask",
           "require_sklearn", "WINDOW_CHECK", "CHUNK_CHECK", "BATCHING_ARGS", "IG_RULES"]

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


#: the check of a window shape: one size or a size per dimension
WINDOW_CHECK = or_none(Valid("a positive integer or a comma list of positive integers",
                             _shape_or_int))
#: captum's batching arguments: inputs per pass, or perturbations / noise samples per image and
#: pass; the adapter sets them from the harness's memory-bounded chunk ("auto") or caps them
BATCHING_ARGS = ("internal_batch_size", "perturbations_per_eval", "nt_samples_batch_size")
#: the check of a chunk parameter: "auto" or a cap on the model inputs per pass
CHUNK_CHECK = or_literal(integer(1), "auto")
#: captum's integration rules (IntegratedGradients' ``method``)
IG_RULES = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
            "riemann_trapezoid")
#: checks of the captum arguments that the adapter knows (others: the default's type)
_CHECKS = {
    "n_samples": integer(1), "nt_samples": integer(1),
    "stdevs": number(low=0), "nt_type": one_of("smoothgrad", "smoothgrad_sq", "vargrad"),
    "n_steps": integer(1), "abs": boolean(),
    "draw_baseline_from_distrib": boolean(), "multiply_by_inputs": boolean(),
    "eps": number(above=0), "baselines": or_none(number()),
    "sliding_window_shapes": WINDOW_CHECK, "strides": WINDOW_CHECK,
    "method": one_of(*IG_RULES),
    "features": one_of("tokens", "pixels"), "seed": integer(),
    **{arg: CHUNK_CHECK for arg in BATCHING_ARGS},
}
#: our defaults where captum has none or one that does not fit an image model
_DEFAULTS = {"sliding_window_shapes": None, "strides": None, "baselines": None,
             **{arg: "auto" for arg in BATCHING_ARGS}}


def import_captum():
    """``captum.attr``, or a one-line :class:`RegistryError` saying how to install it."""
    try:
        import captum.attr as attr
    except ImportError as e:
        raise RegistryError(f"captum methods need captum (pip install captum): "
                            f"{type(e).__name__}: {e}") from None
    return attr


def require_sklearn(what: str) -> None:
    """A one-line :class:`RegistryError` unless scikit-learn is installed (captum fits the
    surrogate models of Lime and KernelShap with it)."""
    if importlib.util.find_spec("sklearn") is None:
        raise RegistryError(f"{what} needs scikit-learn (captum fits its surrogate model with "
                            f"it): pip install scikit-learn")


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
    """Base of the ``captum:<Name>`` classes (see the module docstring) and of the named
    built-ins that run through captum (``saliency``, ``occlusion``, ``intgrad``, ...): the
    captum attribution, summed over channels. Subclasses set ``CAPTUM``/``INNER`` (names in
    ``captum.attr``), ``INIT_ARGS`` (constructor keywords) and ``ATTRIBUTE_ARGS`` (keywords of
    ``attribute()`` passed on from ``params``); a named built-in may call captum's batching
    argument ``chunk_size`` (``CHUNK_PARAM``) and take a named ``baseline``
    (:mod:`xai_bench.methods.input_baselines`).

    Batching: captum's ``internal_batch_size`` / ``perturbations_per_eval`` /
    ``nt_samples_batch_size`` come from one chunk of model inputs per pass
    (:meth:`chunk_for`): ``"auto"`` sizes it from the device's free memory and the model's
    measured activation size (:func:`xai_bench.compute.chunking.chunk_size`), a number caps
    it; an out-of-memory error halves it and redoes the call
    (:func:`xai_bench.compute.chunking.retry_halving`). A chunk smaller than the batch splits
    the batch into groups of that many images. The chunking changes the maps only at float
    rounding (captum adds up its passes)."""

    CAPTUM: str = ""
    INNER: str | None = None
    INIT_ARGS: tuple = ()
    ATTRIBUTE_ARGS: tuple = ()
    USES_MASK = False
    STOCHASTIC = False
    #: the parameter that holds the chunk ("auto" or a number), if not captum's own name
    CHUNK_PARAM: str | None = None

    def __init__(self, **params):
        super().__init__(**params)
        self.params["captum_version"] = captum_version()

    @property
    def explained(self) -> str:
        """The captum attribution that is computed (inside a NoiseTunnel: the inner one)."""
        return self.INNER or self.CAPTUM

    def build(self, model):
        """The captum attribution object for ``model``."""
        attr = import_captum()
        init = {k: self.params[k] for k in self.INIT_ARGS}
        if self.INNER is None:
            return getattr(attr, self.CAPTUM)(model, **init)
        return attr.NoiseTunnel(getattr(attr, self.INNER)(model, **init))

    # ---- batching ------------------------------------------------------------------------
    def batching(self) -> tuple:
        """``(captum argument, value)`` of the batching argument this attribution has
        (``("", None)`` when it has none; value ``"auto"`` or a number)."""
        present = [a for a in BATCHING_ARGS if a in self.ATTRIBUTE_ARGS]
        if not present:
            return "", None
        # inside a NoiseTunnel the inner attribution's own argument takes the chunk (the noise
        # samples then go one at a time), else the noise samples per pass do
        arg = next((a for a in present if a != "nt_samples_batch_size"), present[0])
        return arg, self.params.get(self.CHUNK_PARAM or arg)

    def with_grad(self) -> bool:
        """Whether a pass runs backward (gradient attributions) or only forward."""
        return self.kind != "perturbation"

    def natural_items(self, x: torch.Tensor):
        """Model inputs all of the work needs at once, where known (``None``: unknown)."""
        return None

    def chunk_for(self, model, x: torch.Tensor) -> int:  # model None: no memory check
        """Model inputs per pass for the batch ``x``: the configured number (per image for
        perturbations and noise samples, in all for ``internal_batch_size``) or, for
        ``"auto"``, 64 on the CPU for inputs of up to 64×64 pixels and 16 above (larger
        chunks fall out of cache there), everything on a GPU; then lowered to what half the
        free memory of ``x``'s device holds, never below 1."""
        arg, value = self.batching()
        bsz = x.shape[0]
        if value == "auto":
            if x.device.type == "cpu":
                requested = 64 if x.shape[-2] * x.shape[-1] <= 64 * 64 else 16
            else:
                requested = self.natural_items(x) or 4096
            requested = max(requested, bsz)
        else:
            requested = int(value) * (1 if arg == "internal_batch_size" else bsz)
        if model is None:  # no model to measure: the configured size
            return max(1, requested)
        from xai_bench.compute.chunking import chunk_size

        return chunk_size(model, x, x.device, with_grad=self.with_grad(), requested=requested)

    def _batch_kwargs(self, chunk: int, images: int) -> dict:
        arg, _ = self.batching()
        out = {arg: chunk if arg == "internal_batch_size" else max(1, chunk // images)}
        if arg != "nt_samples_batch_size" and "nt_samples_batch_size" in self.ATTRIBUTE_ARGS:
            given = self.params.get("nt_samples_batch_size")
            out["nt_samples_batch_size"] = 1 if given == "auto" else int(given)
        return out

    # ---- the call ------------------------------------------------------------------------
    def attribute_kwargs(self, model, x: torch.Tensor) -> dict:
        """The keyword arguments of captum's ``attribute()`` for the batch ``x`` (batching
        arguments aside)."""
        p = self.params
        kwargs = {k: _as_shape(p[k]) for k in self.ATTRIBUTE_ARGS
                  if k in p and k not in _DEFAULTS and k != "baselines"}
        if "baselines" in self.ATTRIBUTE_ARGS:
            if "baseline" in p:  # a named baseline (named built-ins)
                from xai_bench.methods.input_baselines import baseline_inputs

                base = baseline_inputs(model, x, p["baseline"], seed=p.get("seed", 0),
                                       blur_sigma=p.get("blur_sigma"))
            elif p.get("baselines") is not None:
                base = torch.full_like(x, float(p["baselines"]))
            else:
                base = None
            if self.explained in _NEEDS_DISTRIBUTION:
                # a one-image distribution (the first image's: named baselines reach only
                # GradientShap, which runs image by image); DeepLiftShap wants more than one
                # example: two equal ones
                base = torch.zeros_like(x[:1]) if base is None else base[:1]
                kwargs["baselines"] = base.repeat(2, *([1] * (x.dim() - 1)))
            elif base is not None:
                kwargs["baselines"] = base
        if "sliding_window_shapes" in self.ATTRIBUTE_ARGS:
            window = _patch_window(model, x)
            kwargs["sliding_window_shapes"] = _as_shape(p["sliding_window_shapes"]) or window
            kwargs["strides"] = _as_shape(p["strides"]) or window
        if self.USES_MASK:
            kwargs["feature_mask"] = token_feature_mask(model, x, p["features"])
        return kwargs

    def _run(self, model, x, targets, batch_kwargs: dict):
        x = x.clone().requires_grad_(True)
        kwargs = {**self.attribute_kwargs(model, x.detach()), **batch_kwargs}
        return self.build(model).attribute(x, target=targets, **kwargs)

    def _chunked(self, model, x, targets):
        if not self.batching()[0]:  # captum takes everything at once
            return self._run(model, x, targets, {})
        from xai_bench.compute.chunking import remember_limit, retry_halving

        bsz = x.shape[0]

        def run(chunk: int) -> torch.Tensor:
            if chunk >= bsz:
                return self._run(model, x, targets, self._batch_kwargs(chunk, bsz))
            # fewer inputs per pass than images: groups of `chunk` images
            return torch.cat([self._run(model, x[s:s + chunk], targets[s:s + chunk],
                                        self._batch_kwargs(chunk, min(chunk, bsz - s)))
                              for s in range(0, bsz, chunk)])

        return retry_halving(
            run, self.chunk_for(model, x), device=x.device, what=f"{self.name}'s inputs",
            on_oom=lambda c: remember_limit(model, x, with_grad=self.with_grad(), chunk=c))

    def attribute(self, model, x, targets):
        with eval_mode(model), torch.enable_grad():
            if not self.STOCHASTIC:
                return self._chunked(model, x, targets).sum(1)
            maps = []
            for img, t in zip(x, targets):
                with seeded_globals(content_seed(img, self.params["seed"]), img.device):
                    maps.append(self._chunked(model, img[None], t[None]).sum(1))
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
    return method(full, kind=kind, cost=cost, description=doc, groups=("captum",))(cls)


def _unknown(name: str, names: list):
    return unknown_library_name(name, names, what="captum attribution", prefix=PREFIX,
                                library=f"captum {captum_version()}")


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
    if explained in _NEEDS_SKLEARN:
        require_sklearn(f"'{PREFIX}:{rest}'")
    key = (name, inner)
    if key not in _GENERATED:
        _GENERATED[key] = _make(name, inner)
    return _GENERATED[key]
