"""Any Quantus metric as an xai-bench metric: ``quantus:<Name>``.

``get_metric("quantus:PixelFlipping", features_in_step=16)`` (or ``xai-bench run --metrics
quantus:PixelFlipping --metric-arg quantus:PixelFlipping.features_in_step=16``) builds the
class :func:`resolve_quantus_metric` generates for that name: every metric class that Quantus
exports for images and torch models applies (Sparseness, Complexity, PixelFlipping,
FaithfulnessCorrelation, IROF, ROAD, MaxSensitivity, RelativeInputStability, PointingGame,
AttributionLocalisation, MPRT, RandomLogit, ...), except those in :data:`EXCLUDED` (why: there).

Conventions:

- the images are the ``n_images`` most confidently and correctly classified test images
  (:func:`~xai_bench.metrics.common.select_confident`), with object masks where Quantus needs
  ``s_batch`` (its localisation metrics; data sets without masks: ``skipped``);
- the maps come from the harness's ``attribute`` (explained once, shared with other metrics);
  Quantus is called on numpy arrays of one batch: ``x_batch`` the encoded input
  ``(B, C, H, W)`` (Quantus perturbs in the model's input space), ``y_batch`` the true classes,
  ``a_batch`` the maps ``(B, 1, H, W)``, ``s_batch`` the masks ``(B, 1, H, W)``, the torch model
  in eval mode, ``channel_first=True``, ``device`` and ``batch_size``;
- metrics that explain again (:data:`REEXPLAINS`: robustness and randomisation metrics,
  InputInvariance) get ``explain_func``: the evaluated method through ``attribute`` (torch in,
  numpy ``(B, 1, H, W)`` out, the method's own parameters);
- one record per image: ``value`` is Quantus's per-sample score as a float; a metric that
  returns a curve per sample (PixelFlipping, RegionPerturbation, Selectivity, ...) records the
  area under it by Quantus's own ``calculate_auc`` (what ``return_auc_per_sample=True`` and
  ``get_auc_score`` give) and keeps the curves as curve rows;
- direction and category are Quantus's declarations (``score_direction``,
  ``evaluation_category``, lower-cased);
- numpy's, torch's and Python's global generators are seeded per batch from the batch's content
  and ``seed`` (:func:`~xai_bench.compute.seeding.content_seed`), so random metrics are
  reproducible and independent of how a cell is split into parts (parts start at batch
  boundaries); Quantus draws for a whole batch at once, so their values do depend on the batch
  size. Quantus metrics with a ``seed`` argument of their own (MPRT, RandomLogit, ...) get the
  metric's ``seed``.

Parameters are the keyword arguments of the Quantus constructor (validated against its
signature) with Quantus's defaults made explicit: ``abs`` and ``normalise``, the functions
(``perturb_func``, ``similarity_func``, ``normalise_func``, ``norm_numerator``, ...) *by name*
of :mod:`quantus.functions` (e.g. ``"baseline_replacement_by_indices"``), the function Quantus
uses when none is given as the default; plus ``n_images``, ``seed`` and ``softmax`` (Quantus's
``__call__`` default of that metric). Our own defaults where Quantus's cannot apply: RandomLogit's
``num_classes`` is the model's (``None``), MPRT and SmoothMPRT return the average correlation
over layers (``return_average_correlation=True``: one number per image). ``quantus_version`` is
recorded in ``params``, so Quantus's version is part of a cell's identity.

numpy 2.4 removed ``np.trapz``, which Quantus 0.6 calls: :func:`ensure_quantus` sets
``numpy.trapz = numpy.trapezoid`` once where it is missing (the same function under its old
name) before importing Quantus.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import pkgutil

import numpy as np
import torch

from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import content_seed, seeded_globals
from xai_bench.contracts.metric import metric
from xai_bench.contracts.parameters import Valid, boolean, integer, one_of, resolve_parameters
from xai_bench.errors import (
    ConfigError, RegistryError, UnknownNameError, unknown_library_name,
)
from xai_bench.metrics.base import MetricNotApplicable, MetricResult, SampleMetric
from xai_bench.metrics.common import (
    DEFAULT_SELECTION, SELECTION_RULES, attribute, image_batches, image_records,
    select_confident,
)

__all__ = ["resolve_quantus_metric", "quantus_names", "QuantusMetric", "ensure_quantus",
           "quantus_version", "quantus_function", "explain_function", "INSTALL", "EXCLUDED",
           "REEXPLAINS", "SECOND_MODEL", "signature_init", "metric_classes", "function_check"]

PREFIX = "quantus"
INSTALL = 'pip install "xai-bench[quantus]"'
#: Quantus metric classes that cannot run on one batch of images with their maps, and why
EXCLUDED = {
    "Focus": "needs mosaics of four images (custom_batch), not single images",
    "SensitivityN": "correlates over the images of a batch: no score per image",
    "BatchSufficiency": "fails on image batches in Quantus 0.6; use quantus:Sufficiency",
    "ModelParameterRandomisation": "renamed MPRT in Quantus 0.5; use quantus:MPRT",
    "ROAD": "Quantus 0.6 returns the accuracy over all images per percentage (no score per "
            "image) and indexes pixels wrongly for inputs of more than one channel",
}
#: metrics whose perturbation gets a mask of one channel that Quantus 0.6 compares with the
#: input's shape (IROF: an assertion error on RGB inputs); the adapter broadcasts the mask
#: over the input's channels before Quantus's function sees it
_BROADCAST_MASK = frozenset({"IROF"})
#: metrics that call ``explain_func`` themselves (Quantus declares no attribute for it; a test
#: checks this table against the metrics' source)
REEXPLAINS = frozenset({
    "MPRT", "SmoothMPRT", "EfficientMPRT", "RandomLogit", "InputInvariance", "MaxSensitivity",
    "AvgSensitivity", "Continuity", "LocalLipschitzEstimate", "RelativeInputStability",
    "RelativeOutputStability", "RelativeRepresentationStability"})
#: metrics that explain randomised copies of the model
SECOND_MODEL = frozenset({"MPRT", "SmoothMPRT", "EfficientMPRT"})
#: constructor arguments the adapter sets itself (one score per image, quiet)
_SET_BY_ADAPTER = ("return_aggregate", "aggregate_func", "default_plot_func",
                   "disable_warnings", "display_progressbar", "return_auc_per_sample")
#: our defaults where Quantus's cannot apply to every model, or give no number per image
_OWN_DEFAULTS = {"RandomLogit": {"num_classes": None},
                 "MPRT": {"return_average_correlation": True},
                 "SmoothMPRT": {"return_average_correlation": True}}
#: the modules of quantus.functions searched for a function named by string, in order
_FUNCTION_MODULES = ("perturb_func", "similarity_func", "normalise_func", "norm_func",
                     "discretise_func", "loss_func", "complexity_func", "n_bins_func")
#: parameters that name functions although their names do not end in ``_func``
_FUNCTION_PARAMS = ("norm_numerator", "norm_denominator")


def ensure_quantus():
    """``quantus``, or a one-line :class:`RegistryError` saying how to install it. numpy >= 2.4
    lacks ``np.trapz`` (Quantus 0.6 calls it): it is aliased to ``np.trapezoid`` here, once."""
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    try:
        import quantus
    except ImportError as e:
        raise RegistryError(f"quantus metrics need Quantus: {INSTALL} "
                            f"({type(e).__name__}: {e})") from None
    return quantus


def quantus_version() -> str:
    return str(getattr(ensure_quantus(), "__version__", "unknown"))


def metric_classes() -> dict:
    """``{name: class}`` of Quantus's metrics declared for images and torch models."""
    quantus = ensure_quantus()
    from quantus.helpers.enums import DataType, ModelType
    from quantus.metrics.base import Metric

    out = {}
    for name in dir(quantus.metrics):
        cls = getattr(quantus.metrics, name)
        if not (inspect.isclass(cls) and issubclass(cls, Metric)) or \
                getattr(cls, "evaluation_category", None) is None:
            continue
        if DataType.IMAGE in getattr(cls, "data_applicability", ()) and \
                ModelType.TORCH in getattr(cls, "model_applicability", ()):
            out[name] = cls
    return out


def quantus_names() -> list:
    """The Quantus metric names that ``quantus:<Name>`` accepts."""
    return sorted(n for n in metric_classes() if n not in EXCLUDED)


@functools.lru_cache(maxsize=None)
def _functions() -> dict:
    """``{name: function}`` of :mod:`quantus.functions` (first module of
    :data:`_FUNCTION_MODULES` wins)."""
    ensure_quantus()
    import quantus.functions as package

    found = {}
    modules = list(_FUNCTION_MODULES) + sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in _FUNCTION_MODULES)
    for module_name in modules:
        module = importlib.import_module(f"quantus.functions.{module_name}")
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__ and \
                    not name.startswith("_"):
                found.setdefault(name, obj)
    return found


def quantus_function(name: str, parameter: str = "function"):
    """The function of :mod:`quantus.functions` called ``name`` (a one-line
    :class:`ConfigError` with the closest names otherwise)."""
    functions = _functions()
    if name in functions:
        return functions[name]
    close = difflib.get_close_matches(str(name), list(functions), n=3)
    hint = f" — did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"{parameter}: unknown quantus function {name!r}{hint}")


def _function_name(fn):
    """The name of a (possibly partially applied) Quantus function, or None."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    return name if name in _functions() else None


def _is_function_param(p: inspect.Parameter) -> bool:
    return p.name.endswith("_func") or p.name in _FUNCTION_PARAMS


def _simple(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_simple(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@functools.lru_cache(maxsize=None)
def _parameters(name: str) -> tuple:
    """``(defaults, function parameter names, call softmax default)`` of Quantus metric
    ``name``: the constructor's keyword arguments with simple defaults, the functions by the
    name of what Quantus uses when none is given (read from a default instance)."""
    cls = metric_classes()[name]
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
              and p.name not in _SET_BY_ADAPTER]
    functions = tuple(p.name for p in params if _is_function_param(p))
    try:
        default = cls(disable_warnings=True)
    except Exception:  # a metric that needs arguments to construct: Quantus's None stays
        default = None
    out = {}
    for p in params:
        if p.name in functions:
            out[p.name] = _function_name(getattr(default, p.name, None))
        elif p.default is not p.empty and _simple(p.default):
            out[p.name] = tuple(p.default) if isinstance(p.default, list) else p.default
    out.update(_OWN_DEFAULTS.get(name, {}))
    call = inspect.signature(cls.__call__).parameters.get("softmax")
    softmax = call.default if call is not None and call.default is not call.empty else None
    return out, functions, softmax


def signature_init(base, params: dict):
    """An ``__init__`` for a subclass of :class:`QuantusMetric` whose signature lists
    ``params`` (what :func:`~xai_bench.contracts.parameters.resolve_parameters` validates
    against): unknown keys, wrong types and bad values are one-line ConfigErrors."""
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    signature = inspect.Signature([self_param] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
        for k, v in params.items()])

    def __init__(self, **kwargs):
        base.__init__(self, **resolve_parameters("metric", self.name, type(self), kwargs))

    __init__.__signature__ = signature
    return __init__


def explain_function(method, calls: list | None = None):
    """Quantus's ``explain_func``: ``(model, inputs, targets, **kwargs) -> (B, 1, H, W)``
    numpy maps of ``method`` (through ``attribute``: shape-checked, shared where explained
    before); ``calls`` (a list) collects the batch sizes it was called with."""

    def explain(model, inputs, targets, device=None, **_):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        if device is not None:
            x = x.to(device)
        t = torch.as_tensor(np.asarray(targets)).long().reshape(-1).to(x.device)
        if t.numel() == 1 and x.shape[0] > 1:
            t = t.expand(x.shape[0])
        if calls is not None:
            calls.append(int(x.shape[0]))
        with eval_mode(model):
            maps = attribute(method, model, x, t)
        return maps[:, None].float().cpu().numpy()

    return explain


def broadcast_mask(fn):
    """``fn(arr, mask, **kwargs)`` with ``mask`` broadcast to ``arr``'s shape (a pixel mask
    ``(B, 1, H, W)`` over every channel), see :data:`_BROADCAST_MASK`."""

    @functools.wraps(fn)
    def perturb(arr, mask, **kwargs):
        return fn(arr=arr, mask=np.broadcast_to(mask, arr.shape), **kwargs)

    return perturb


def per_sample(result, n: int, name: str) -> list:
    """Quantus's result for a batch of ``n`` images as ``[(value, curve or None)]``."""
    if isinstance(result, dict):
        raise ValueError(f"quantus {name} returned {sorted(result)[:3]}... per layer, not one "
                         f"score per image; set return_average_correlation=true or "
                         f"return_last_correlation=true")
    result = list(result)
    if len(result) != n:
        raise ValueError(f"quantus {name} returned {len(result)} scores for {n} images; it "
                         f"gives no score per image")
    from quantus.helpers.utils import calculate_auc

    out = []
    for r in result:
        arr = np.asarray(r, dtype=np.float64)
        if arr.ndim == 0:
            out.append((float(arr), None))
        else:  # a curve: Quantus's own area (return_auc_per_sample, get_auc_score)
            out.append((float(calculate_auc(arr.reshape(-1))), arr.reshape(-1)))
    return out


def function_check(name: str) -> Valid:
    """The declared check of a parameter naming a function of ``quantus.functions``."""
    return Valid(f"the name of a function of quantus.functions (e.g. {name!r}) or none",
                 lambda v: v is None or (isinstance(v, str) and v in _functions()))


class QuantusMetric(SampleMetric):
    """Base of the ``quantus:<Name>`` classes and of the ``latec_*`` metrics (see the module
    docstring). Subclasses set ``QUANTUS`` (the class name in ``quantus.metrics``),
    ``FUNCTIONS`` (parameters that name functions) and ``SOFTMAX`` (the ``softmax`` argument
    of the call when the parameters do not set it)."""

    QUANTUS: str = ""
    FUNCTIONS: tuple = ()
    #: parameters that are ours, not the Quantus constructor's
    OWN = ("n_images", "seed", "softmax", "selection")
    PARAMETER_CHECKS = {"n_images": integer(1), "seed": integer(0, 2 ** 32 - 1),
                        "selection": one_of(*SELECTION_RULES),
                        "abs": boolean(), "normalise": boolean(), "softmax": boolean()}

    def __init__(self, **params):
        super().__init__(**params)
        self.params["quantus_version"] = quantus_version()

    # ---- what Quantus gets -----------------------------------------------------------------
    def quantus_kwargs(self, model, x: torch.Tensor) -> dict:
        """The Quantus constructor's keyword arguments for batches like ``x`` (functions
        resolved by name; subclasses fill in size-dependent values)."""
        cls = metric_classes()[self.QUANTUS]
        accepted = inspect.signature(cls.__init__).parameters
        kwargs = {}
        for key, value in self.params.items():
            if key in self.OWN or key == "quantus_version":
                continue
            if key in self.FUNCTIONS:
                if value is None:
                    continue  # Quantus's own default
                value = quantus_function(value, f"parameter '{key}' of metric '{self.name}'")
            elif isinstance(value, tuple):
                value = list(value)
            if key == "num_classes" and value is None:
                value = int(model.num_classes)
            if key in accepted:
                kwargs[key] = value
        if "seed" in accepted:
            kwargs["seed"] = int(self.params["seed"])
        if self.QUANTUS in _BROADCAST_MASK and "perturb_func" in accepted:
            kwargs["perturb_func"] = broadcast_mask(kwargs.get("perturb_func") or quantus_function(
                "baseline_replacement_by_mask"))
        if "return_aggregate" in accepted:
            kwargs["return_aggregate"] = False
        if "disable_warnings" in accepted:
            kwargs["disable_warnings"] = True
        if "display_progressbar" in accepted:
            kwargs["display_progressbar"] = False
        return kwargs

    def build(self, model, x: torch.Tensor):
        """A fresh Quantus metric object (Quantus keeps state between calls)."""
        ensure_quantus()
        return metric_classes()[self.QUANTUS](**self.quantus_kwargs(model, x))

    def call_kwargs(self, model, x, targets, maps, masks, method, *, device, batch_size) -> dict:
        """The keyword arguments of the Quantus call for one batch."""
        kwargs = dict(model=model, x_batch=x.detach().float().cpu().numpy(),
                      y_batch=targets.cpu().numpy(),
                      a_batch=maps[:, None].detach().float().cpu().numpy(),
                      s_batch=None if masks is None else
                      masks[:, None].float().cpu().numpy(),
                      channel_first=True, device=str(device), batch_size=int(batch_size))
        if self.params.get("softmax") is not None:
            kwargs["softmax"] = bool(self.params["softmax"])
        if self.reexplains:
            kwargs["explain_func"] = explain_function(method)
        return kwargs

    def score(self, model, method, x, targets, maps, masks, *, device, batch_size) -> list:
        """``[(value, curve or None)]`` of one batch."""
        quantus_metric = self.build(model, x)
        result = quantus_metric(**self.call_kwargs(model, x, targets, maps, masks, method,
                                                   device=device, batch_size=batch_size))
        return per_sample(result, x.shape[0], self.QUANTUS)

    # ---- the metric --------------------------------------------------------------------------
    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32, seed=None):
        ensure_quantus()
        return select_confident(model, dataset, self.params["n_images"], device=device,
                                batch_size=batch_size, with_masks=self.needs_masks,
                                selection=self.params.get("selection", DEFAULT_SELECTION))

    def evaluate_part(self, model, method, prepared, start: int, stop: int, *, device="cpu",
                      batch_size: int = 32) -> dict:
        """``scores`` (float64) of the images ``start:stop`` and their ``curves`` (padded with
        NaN to the longest; ``(n, 0)`` where the metric gives none)."""
        if self.needs_masks and prepared.masks is None:
            raise MetricNotApplicable("the data set has no object masks")
        scores = torch.empty(stop - start, dtype=torch.float64)
        curves = []
        with eval_mode(model):
            for sl, x, targets in image_batches(model, prepared, start, stop, batch_size,
                                                device):
                maps = attribute(method, model, x, targets)
                masks = prepared.masks[sl] if self.needs_masks else None
                with seeded_globals(content_seed(x, int(self.params["seed"]))):
                    out = self.score(model, method, x, targets, maps, masks, device=device,
                                     batch_size=batch_size)
                scores[sl.start - start:sl.stop - start] = torch.tensor([v for v, _ in out],
                                                                     dtype=torch.float64)
                curves += [c for _, c in out]
        length = max((len(c) for c in curves if c is not None), default=0)
        padded = torch.full((len(curves), length), float("nan"), dtype=torch.float64)
        for i, c in enumerate(curves):
            if c is not None:
                padded[i, :len(c)] = torch.from_numpy(c)
        return {"scores": scores, "curves": padded}

    def reduce(self, model, prepared, part: dict, *, device="cpu") -> MetricResult:
        scores = part["scores"]
        records = image_records(prepared, scores)
        curves = []
        table = part.get("curves")
        if table is not None and table.numel():
            for idx, y, row in zip(prepared.indices, prepared.labels, table):
                row = row[~torch.isnan(row)]
                n = len(row)
                curves += [dict(order=self.QUANTUS, fraction=i / max(n - 1, 1), value=float(v),
                                statistic="per_image", step=i, sample_id=f"img{int(idx):05d}",
                                target=int(y)) for i, v in enumerate(row.tolist())]
            if not torch.isnan(table).any():
                curves += [dict(order=self.QUANTUS, fraction=i / max(table.shape[1] - 1, 1),
                                value=float(v), statistic="mean_curve", step=i)
                           for i, v in enumerate(table.mean(0).tolist())]
        finite = scores[torch.isfinite(scores)]
        summary = dict(mean=float(finite.mean()) if len(finite) else float("nan"),
                       n_images=len(prepared), n_images_requested=prepared.n_requested,
                       n_nan=int(len(scores) - len(finite)))
        return MetricResult(records=records, curves=curves, summary=summary)


def _card(name: str) -> dict:
    """What Quantus declares about metric ``name``, as our card's fields."""
    cls = metric_classes()[name]
    from quantus.helpers.enums import EvaluationCategory, ScoreDirection

    category = cls.evaluation_category.value.lower()
    return dict(category=category, higher_is_better=cls.score_direction == ScoreDirection.HIGHER,
                needs_masks=cls.evaluation_category == EvaluationCategory.LOCALISATION,
                reexplains=name in REEXPLAINS, second_model=name in SECOND_MODEL)


_GENERATED: dict = {}


def _make(name: str):
    defaults, functions, softmax = _parameters(name)
    params = {"n_images": 250, "seed": 0, **defaults, "softmax": softmax,
              "selection": DEFAULT_SELECTION}
    checks = {**QuantusMetric.PARAMETER_CHECKS,
              **{k: function_check(defaults[k] or "baseline_replacement_by_indices")
                 for k in functions}}
    if softmax is None:
        checks["softmax"] = Valid("true, false or none", lambda v: v is None or
                                  isinstance(v, bool))
    full = f"{PREFIX}:{name}"
    card = _card(name)
    doc = (f"Quantus {name} ({card['category']}) on the method's maps of the most confidently "
           f"and correctly classified test images (xai_bench.metrics.quantus_adapter).")
    cls = type(f"Quantus_{name}", (QuantusMetric,), {
        "__init__": signature_init(QuantusMetric, params), "__doc__": doc,
        "__module__": __name__, "QUANTUS": name, "FUNCTIONS": functions,
        "PARAMETER_CHECKS": checks})
    return metric(full, label=name, description=doc, **card)(cls)


def _unknown(name: str, names: list):
    return unknown_library_name(name, names, what="quantus metric", prefix=PREFIX,
                                library=f"quantus {quantus_version()}")


def resolve_quantus_metric(rest: str):
    """Resolver of the ``quantus:`` prefix of ``xai_bench.METRICS``: the metric class of
    ``quantus:<Name>`` (generated once per name); unknown names raise
    :class:`UnknownNameError` with the closest Quantus names, a name in :data:`EXCLUDED` says
    why it does not apply."""
    name = rest.strip()
    names = quantus_names()
    if name in EXCLUDED:
        raise UnknownNameError(f"'{PREFIX}:{name}' does not apply: {EXCLUDED[name]}")
    if name not in names:
        raise _unknown(name, names)
    if name not in _GENERATED:
        _GENERATED[name] = _make(name)
    return _GENERATED[name]
