"""The interface shared by every metric (definitions: docs/definitions.md, 'Metrics').

A metric works in two steps so that the expensive, model-dependent part is computed once and
shared by every attribution method evaluated on that model::

    metric = get_metric("grid_pointing_game", n_grids=250)
    prepared = metric.prepare(model, dataset, device="cpu", batch_size=32, seed=0)
    for method in methods:
        result = metric.evaluate(model, method, prepared, device="cpu", batch_size=32)
        result.records   # list of dicts, one observation each (tidy rows)
        result.curves    # list of dicts: perturbation curves (order, fraction, value, ...)
        result.summary   # dict: e.g. the mean score, the ABC of the mean curves

``prepare(model, dataset, ...)`` is model-dependent and method-independent (select the test
images, build the grids, cache clean confidences) and returns a dataclass of CPU tensors.
``evaluate(model, method, prepared, ...)`` calls ``method(model, x, targets)`` on batches of at
most ``batch_size`` encoded inputs and runs every perturbed copy through the model in chunked
forward passes of at most ``batch_size`` inputs under ``torch.no_grad()``.

Every record holds at least ``sample_id`` (a stable string), ``target`` (the class explained)
and ``value``; metrics add what was explained and how (``explained``, ``confidence``,
``substrate``, ``statistic``, ...). The runner adds model / method / metric / status.

Split over samples. A metric whose samples are scored independently (all the built-in ones)
also offers the two halves of ``evaluate`` so that one cell can be shared out in parts::

    n = metric.samples(prepared)                         # e.g. images, or grid cells
    parts = [metric.evaluate_part(model, method, prepared, start, stop, ...)
             for start, stop in ...]                     # dicts of tensors, any process
    result = metric.reduce(model, prepared, join_parts(parts), device="cpu")

``evaluate`` is exactly ``reduce(evaluate_part(0, n))``. A part whose ``start`` is a multiple
of ``batch_size`` computes its samples in the very batches ``evaluate`` uses, so the joined
parts are bit-identical to one call (the runner cuts parts that way; see docs/distributed.md).
``requested_samples()`` says how many samples the metric's parameters ask for before anything
is prepared (the runner plans its parts from it). A metric without ``samples`` (plugins may
leave it out) is evaluated whole.

A metric that cannot be computed for a (model, data set) pair — e.g. mask localisation on a
data set without object masks — raises :class:`MetricNotApplicable` from ``prepare``; the
runner records the cells as ``skipped`` with the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from xai_bench.contracts.parameters import check_parameter_values
from xai_bench.errors import NotApplicable

__all__ = ["Metric", "SampleMetric", "MetricResult", "MetricNotApplicable", "join_parts"]


class MetricNotApplicable(NotApplicable):
    """Raised by ``Metric.prepare`` when the metric cannot be computed for this model and data
    set (e.g. no object masks, no correctly classified images); the runner records ``skipped``."""


@dataclass
class MetricResult:
    """What ``Metric.evaluate`` returns.

    records: one dict per observation (``sample_id``, ``target``, ``value`` + metric facts);
    curves:  tidy curve rows (``order``, ``fraction``, ``value`` + e.g. ``statistic``);
    summary: a few aggregate numbers (e.g. ``mean``, ``abc``, ``n_images``);
    examples: optional arrays worth keeping for figures (e.g. the grid pointing game keeps one
    grid ``image`` (3, H, W), its ``maps`` (4, H, W) for the four cell classes and their
    ``targets``); the runner stores them next to the cell."""

    records: list = field(default_factory=list)
    curves: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)

    def records_frame(self):
        """The records as a pandas DataFrame (convenience for interactive use)."""
        import pandas as pd

        return pd.DataFrame(self.records)

    def curves_frame(self):
        import pandas as pd

        return pd.DataFrame(self.curves)


class Metric:
    """Base class of the metrics. Subclasses declare their parameters as keyword arguments of
    ``__init__`` (with the paper's defaults; the runner inspects the signature for
    ``n_grids``, ``n_images`` and ``seed``) and pass them to ``super().__init__(**params)``,
    which stores them in ``self.params``."""

    # The declarations (xai_bench.contracts.metric.MetricCard) as class attributes; a
    # subclass overrides them or is decorated with @xai_bench.metric(...).
    #: registered name
    name: str = "metric"
    #: "localisation", "perturbation", "sanity" or any word
    category: str = "other"
    #: whether larger values are better
    higher_is_better: bool = True
    #: one line for ``xai-bench list metrics``
    description: str = ""
    #: the quantity on a figure's axis (default: the name), what one sample is, the score of
    #: an uninformative map (None: unknown), the place in figures (None: after the built-ins)
    label: str = ""
    unit: str = "images"
    chance: float | None = None
    place: float | None = None
    #: what it needs: a method's maps, object masks, explaining again (another class or
    #: input), a second (e.g. randomised) model
    needs_maps: bool = True
    needs_masks: bool = False
    reexplains: bool = False
    second_model: bool = False
    #: {parameter: Valid} of xai_bench.contracts.parameters: the valid values of the
    #: parameters, checked before any work
    PARAMETER_CHECKS: dict = {}

    def __init__(self, **params):
        self.params = dict(params)
        # the declared valid values (PARAMETER_CHECKS) also hold for an object built directly
        check_parameter_values("metric", getattr(self, "name", type(self).__name__), type(self),
                               self.params)

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32, seed=None):
        """Model-dependent, method-independent preparation (a dataclass of CPU tensors)."""
        raise NotImplementedError

    def evaluate(self, model, method, prepared, *, device="cpu",
                 batch_size: int = 32) -> MetricResult:
        """Score ``method`` on what ``prepare`` selected."""
        raise NotImplementedError

    def samples(self, prepared) -> int | None:
        """How many samples :meth:`evaluate_part` splits over; ``None``: the metric is
        evaluated whole (the default)."""
        return None

    def requested_samples(self) -> int | None:
        """The samples the parameters ask for (``None``: unknown or not splittable)."""
        return None

    def __call__(self, model, method, dataset, *, device="cpu", batch_size: int = 32,
                 seed=None) -> MetricResult:
        """``prepare`` then ``evaluate`` (for a single method)."""
        prepared = self.prepare(model, dataset, device=device, batch_size=batch_size, seed=seed)
        return self.evaluate(model, method, prepared, device=device, batch_size=batch_size)

    def _seed(self, seed) -> int:
        """The seed given to ``prepare`` wins over the constructor's ``seed`` parameter."""
        return int(self.params.get("seed", 0) if seed is None else seed)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class SampleMetric(Metric):
    """A metric scored sample by sample: subclasses implement :meth:`evaluate_part` and
    :meth:`reduce`; ``evaluate`` is the two in one call. By default the samples are the
    prepared items (``len(prepared)``) and the parameters ask for ``n_images`` of them;
    metrics whose samples are something else (grid cells) override both."""

    def samples(self, prepared) -> int:
        return len(prepared)

    def requested_samples(self) -> int | None:
        return self.params.get("n_images")

    def evaluate_part(self, model, method, prepared, start: int, stop: int, *, device="cpu",
                      batch_size: int = 32) -> dict:
        """The raw per-sample results of samples ``start:stop`` (batches of ``batch_size``
        from ``start``): a dict of tensors whose first dimension runs over what the part
        produced, joined along it by :func:`join_parts`."""
        raise NotImplementedError

    def reduce(self, model, prepared, part: dict, *, device="cpu") -> MetricResult:
        """The cell's result from the joined parts of every sample."""
        raise NotImplementedError

    def evaluate(self, model, method, prepared, *, device="cpu",
                 batch_size: int = 32) -> MetricResult:
        part = self.evaluate_part(model, method, prepared, 0, self.samples(prepared),
                                  device=device, batch_size=batch_size)
        return self.reduce(model, prepared, part, device=device)


def join_parts(parts: list) -> dict:
    """The parts of one cell, in sample order, as one: each tensor concatenated along its
    first dimension (empty pieces are left out, so a part that kept nothing of a kind joins
    whatever shape the others have)."""
    names = list(dict.fromkeys(name for part in parts for name in part))
    joined = {}
    for name in names:
        pieces = [part[name] for part in parts if name in part]
        full = [t for t in pieces if t.numel()]
        joined[name] = torch.cat(full) if len(full) > 1 else (full or pieces)[0]
    return joined
