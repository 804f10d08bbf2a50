"""Computing cells: whole, or in parts that are joined once all are committed.

An :class:`Executor` holds what every cell of one invocation is computed with (device, batch
size, seed, the stores, this invocation's stamp, the progress bar); a :class:`ModelScope` what
the units of one model share (the model, its card, the metrics' prepared selections and the
perturbed copies' confidences). A unit's cells are explained once
(:func:`xai_bench.compute.map_cache.sharing_maps`).

A cell is committed with its identity (:mod:`xai_bench.run.store`) as soon as it is done.
A method that raises or breaks its contract, or a metric whose computation fails, gives an
``error`` cell; a metric that does not apply (:class:`~xai_bench.errors.NotApplicable`) a
``skipped`` one. An interrupt and the harness's own errors propagate.

The model is shared by every method, so a method that changes its parameters or buffers
would change what the next methods are measured on. A CPU copy of them is kept per model
(:attr:`ModelScope.pristine`) and compared exactly after every computed cell or part; a
method that changed them gets ``error`` cells (for the rest of its unit too) and the model is
restored before anything else runs on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from xai_bench.compute.seeding import derive_seed
from xai_bench.errors import ContractError, NotApplicable, XaiBenchError, one_line
from xai_bench.run.plan import n_parts, part_key

__all__ = ["Executor", "ModelScope", "attempt", "failed_records", "error_line"]


def error_line(error: Exception) -> str:
    return one_line(f"{type(error).__name__}: {error}")[:500]


def attempt(compute):
    """``(value, None, None)``, or ``(None, one-line error, status)`` when ``compute()`` fails
    the cell: status ``"skipped"`` when the metric does not apply to what it was given
    (:class:`NotApplicable`, e.g. eMPRT on constant maps), else ``"error"``. An interrupt and
    the harness's own errors (other than a broken contract) propagate."""
    try:
        return compute(), None, None
    except (KeyboardInterrupt, XaiBenchError) as e:
        if not isinstance(e, ContractError):
            raise
        return None, error_line(e), "error"
    except Exception as e:
        return None, error_line(e), "skipped" if isinstance(e, NotApplicable) else "error"


def failed_records(model: str, method: str, metric, status: str, message: str) -> list:
    """The one record of a cell that ended ``error`` or ``skipped`` before any sample."""
    return [dict(model=model, method=method, metric=metric.name,
                 category=metric.metric.category,
                 higher_is_better=metric.metric.higher_is_better, sample_id="-",
                 target=-1, value=math.nan, status=status, message=message)]


def _shortfall(summary: dict) -> dict:
    """``{what: [used, requested]}`` where a metric used fewer samples than requested."""
    out = {}
    for what in ("grids", "images"):
        n, requested = summary.get(f"n_{what}"), summary.get(f"n_{what}_requested")
        if isinstance(n, int) and isinstance(requested, int) and n < requested:
            out[what] = [n, requested]
    return out


def _tensors(model) -> dict:
    """name -> every parameter and buffer of ``model`` (non-persistent buffers too)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def weights_snapshot(model) -> dict:
    """An exact CPU copy of ``model``'s parameters and buffers."""
    return {name: t.detach().to("cpu", copy=True) for name, t in _tensors(model).items()}


def _same(current, saved) -> bool:
    if current.shape != saved.shape or current.dtype != saved.dtype:
        return False
    current = current.detach().cpu()
    if torch.equal(current, saved):
        return True
    # NaN != NaN: a weight that was NaN and still is has not changed
    return bool(current.is_floating_point() and
                ((current == saved) | (current.isnan() & saved.isnan())).all())


def changed_weights(model, snapshot: dict) -> list:
    """The names of the parameters and buffers of ``model`` that differ from ``snapshot``
    (added, removed, reshaped, cast or with other values)."""
    current = _tensors(model)
    return sorted(set(current) ^ set(snapshot)) + \
        [name for name, t in current.items() if name in snapshot and not _same(t, snapshot[name])]


def restore_weights(model, snapshot: dict) -> None:
    """Put ``snapshot``'s values back into ``model``'s parameters and buffers (on their
    device; a tensor that was cast or reshaped gets the saved one back)."""
    with torch.no_grad():
        for name, t in _tensors(model).items():
            saved = snapshot.get(name)
            if saved is None:
                continue
            if t.shape == saved.shape and t.dtype == saved.dtype:
                t.copy_(saved)
            else:
                t.data = saved.to(t.device, copy=True)


def _part_matches(entry, ident, count, stamp) -> bool:
    """Whether a committed part can be used: the cell's identity and cut, and no error
    unless this invocation made it (a cell that failed is retried by the next run, as a
    whole cell is)."""
    return entry is not None and entry["identity"] == ident and \
        entry["n_parts"] == count and \
        (not entry.get("error") or entry.get("invocation") == stamp)


@dataclass
class ModelScope:
    """What the units of one model share. ``prepared``: metric name -> ``(prepared, error,
    seconds)``, filled on first use; ``confidences``: the perturbed copies' confidences
    (:mod:`xai_bench.compute.map_cache`)."""

    model: object
    name: str                      # the registered name (the records' `model`)
    card: dict
    prepared: dict = field(default_factory=dict)
    confidences: dict = field(default_factory=dict)
    #: the model's parameters and buffers before any method ran (:func:`weights_snapshot`)
    pristine: dict | None = None
    #: method name -> why its cells are errors: it changed the model in this unit
    mutated: dict = field(default_factory=dict)

    def check_weights(self, method_name: str) -> str | None:
        """None if the model's weights are still the pristine ones and ``method_name`` has
        not changed them earlier in this unit; else the error message of its cells. Changed
        weights are restored at once, and the perturbed copies' confidences (some may come
        from the changed model) dropped; the prepared selections were all made before the
        change (every earlier cell was checked)."""
        changed = changed_weights(self.model, self.pristine)
        if changed:
            restore_weights(self.model, self.pristine)
            self.confidences.clear()
            more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
            # its later cells in this unit are errors too: they may reuse its maps
            self.mutated.setdefault(method_name, (
                f"method '{method_name}' changed the model's weights "
                f"({', '.join(changed[:3])}{more}); its cells are errors and the model was "
                f"restored for the other methods: a method must not modify the model (work "
                f"on a copy)"))
        return self.mutated.get(method_name)


@dataclass
class Executor:
    """What every cell of one invocation is computed with, and what it has committed."""

    store: object                  # committed cells (RunStore or MemoryStore)
    parts: object                  # committed parts of cells computed in parts
    device: str
    batch_size: int
    seed: int
    stamp: str                     # marks the parts this invocation commits
    test_split: Callable           # image size -> the test split
    join_claim: Callable           # key -> whether this process joins the cell's parts
    bar: object                    # progress bar (tqdm)
    cells: dict = field(default_factory=dict)      # key -> committed entry
    computed: list = field(default_factory=list)   # keys this invocation committed
    maps_saved: int = 0            # images not explained again (shared maps)
    copies_saved: int = 0          # perturbed copies not forwarded again

    def commit(self, key, ident, records, curves=(), examples=None, time_s=0.0,
               prepare_time_s=0.0, notes=None):
        entry = {"identity": ident, "key": key, "records": records, "curves": list(curves),
                 "time_s": round(time_s, 4), "prepare_time_s": round(prepare_time_s, 4),
                 "notes": notes or {}}
        self.cells[key] = self.store.write(key, entry, examples or {})
        self.computed.append(key)
        self.parts.remove_parts([key])  # the cell holds it all now (parts of any invocation)

    def commit_errors(self, model_name, pending, message):
        """Every pending cell of a model that broke its contract, as an error."""
        for cell in pending:
            self.commit(cell.key, cell.identity, failed_records(
                model_name, cell.method.name, cell.metric, "error", message))
            self.bar.update(1)

    # ---- units ---------------------------------------------------------------------------
    def run_unit(self, scope: ModelScope, method, cells, part=0):
        """Part ``part`` of one unit: ``method``'s pending ``cells`` on one model, sharing
        its maps. A cell of one part is computed whole at part 0; a cell of several gets its
        part ``part`` computed."""
        from xai_bench.compute.map_cache import sharing_maps

        if scope.pristine is None:  # before any method ran on this model
            scope.pristine = weights_snapshot(scope.model)
        scope.mutated.pop(method.name, None)  # judged per unit: a later part checks afresh
        # one cache per (model, method): the maps of one method are held at a time
        with sharing_maps(scope.model, confidences=scope.confidences) as cache:
            for cell in cells:
                count = n_parts(cell.metric, self.batch_size)
                if part >= count:
                    continue
                if cell.metric.name not in scope.prepared:
                    scope.prepared[cell.metric.name] = self._prepare(scope, cell.metric)
                if count > 1 and self._splits(scope, method, cell.metric):
                    self._run_part(scope, method, cell, part, count)
                elif part == 0:
                    self._run_whole(scope, method, cell)
        self.maps_saved += cache.saved
        self.copies_saved += cache.copies_saved

    def _prepare(self, scope, metric):
        """``(prepared, error, seconds)`` of one metric on one model (method-independent)."""
        t = time.time()
        try:
            split = self.test_split(scope.card["image_size"], scope.name)
            prepared = metric.metric.prepare(scope.model, split,
                                             device=self.device, batch_size=self.batch_size,
                                             seed=self.seed)
            return prepared, None, time.time() - t
        except XaiBenchError:
            raise
        except Exception as e:  # recorded per cell: skipped if not applicable, else error
            return None, e, time.time() - t

    @staticmethod
    def _splits(scope, method, metric) -> bool:
        """Whether the cell is computed in parts (else whole, at part 0: also every cell that
        ends as an error or is skipped before anything is computed)."""
        found, prepare_error, _ = scope.prepared[metric.name]
        return (method.error is None and prepare_error is None
                and method.method.applies_to(scope.model)
                and metric.metric.samples(found) is not None)

    # ---- whole cells ---------------------------------------------------------------------
    def _run_whole(self, scope, method, cell):
        metric = cell.metric
        prepared, prepare_error, prepare_time = scope.prepared[metric.name]
        self.bar.set_description(cell.key)
        t = time.time()
        curves, examples, notes = [], {}, {}
        if method.error is not None:
            records = failed_records(scope.name, method.name, metric, "error", method.error)
        elif prepare_error is not None:
            status = "skipped" if isinstance(prepare_error, NotApplicable) else "error"
            records = failed_records(scope.name, method.name, metric, status,
                                     error_line(prepare_error))
        elif not method.method.applies_to(scope.model):
            records = failed_records(scope.name, method.name, metric, "skipped",
                                     f"method '{method.name}' does not apply to "
                                     f"{scope.card['family']} model '{scope.name}'")
        else:
            torch.manual_seed(derive_seed(self.seed, cell.key))
            records, curves, examples, notes = self._scored(
                scope.name, method, metric, lambda: metric.metric.evaluate(
                    scope.model, method.method, prepared, device=self.device,
                    batch_size=self.batch_size))
            mutated = scope.check_weights(method.name)
            if mutated is not None:
                records, curves, examples, notes = failed_records(
                    scope.name, method.name, metric, "error", mutated), [], {}, {}
        self.commit(cell.key, cell.identity, records, curves, examples, time.time() - t,
                    prepare_time, notes)
        self.bar.update(1)

    @staticmethod
    def _scored(model_name, method, metric, compute):
        """``(records, curves, examples, notes)`` of the cell whose :class:`MetricResult`
        ``compute()`` returns (an error cell if it fails)."""
        result, error, status = attempt(compute)
        if error is not None:
            return failed_records(model_name, method.name, metric, status, error), [], {}, {}
        base = dict(model=model_name, method=method.name, metric=metric.name,
                    category=metric.metric.category,
                    higher_is_better=metric.metric.higher_is_better)
        records = [dict(base, **r, status="ok", message="") for r in result.records]
        curves = [dict(model=model_name, method=method.name, metric=metric.name, **c)
                  for c in result.curves]
        return records, curves, result.examples, _shortfall(result.summary)

    # ---- cells in parts ------------------------------------------------------------------
    def _run_part(self, scope, method, cell, part, count):
        """Compute part ``part`` of a cell (samples ``part·B`` to ``(part+1)·B`` of the
        prepared selection, ``B`` = batch size) and commit it, unless a part with the cell's
        identity is already committed; then, if every part is there, the cell itself."""
        found, _, _ = scope.prepared[cell.metric.name]
        key = part_key(cell.key, part)
        entry, _ = self.parts.read(key)
        if not _part_matches(entry, cell.identity, count, self.stamp):
            size = self.batch_size
            start, stop = part * size, min((part + 1) * size, cell.metric.metric.samples(found))
            self.bar.set_description(f"{cell.key} part {part + 1}/{count}")
            t = time.time()
            arrays, error = {}, None
            if start < stop:  # fewer samples than requested leave the last parts empty
                torch.manual_seed(derive_seed(self.seed, cell.key, part))
                values, error, _ = attempt(lambda: cell.metric.metric.evaluate_part(
                    scope.model, method.method, found, start, stop, device=self.device,
                    batch_size=size))
                error = scope.check_weights(method.name) or error
                if error is None:
                    arrays = {name: v.detach().cpu().numpy() for name, v in values.items()}
            self.parts.write(key, {"identity": cell.identity, "part": part, "n_parts": count,
                                   "samples": [start, stop], "error": error,
                                   "invocation": self.stamp,
                                   "time_s": round(time.time() - t, 4)}, arrays)
        self._join_if_complete(scope, method, cell, count)

    def _join_if_complete(self, scope, method, cell, count):
        """Join the parts of a cell and commit it once all are there. Every process checks
        after committing a part, so the last one to finish sees them all; in a multi-process
        run a claim makes exactly one of those that see them all do it. The last part is
        looked at first: parts come in order, so until the end one look says "not yet"."""
        entries = []
        for part in reversed(range(count)):
            entry, _ = self.parts.read(part_key(cell.key, part))
            if not _part_matches(entry, cell.identity, count, self.stamp):
                return
            entries.insert(0, entry)
        if not self.join_claim(cell.key):
            return
        metric = cell.metric
        found, _, prepare_time = scope.prepared[metric.name]
        t = time.time()
        error = next((e["error"] for e in entries if e.get("error")), None)
        if error is not None:
            rows = failed_records(scope.name, method.name, metric, "error", error), [], {}, {}
        else:
            from xai_bench.metrics.base import join_parts

            joined = join_parts([{name: torch.from_numpy(v) for name, v in
                                  self.parts.read_arrays(part_key(cell.key, part)).items()}
                                 for part in range(count)])
            rows = self._scored(scope.name, method, metric, lambda: metric.metric.reduce(
                scope.model, found, joined, device=self.device))
            mutated = scope.check_weights(method.name)
            if mutated is not None:
                rows = failed_records(scope.name, method.name, metric, "error", mutated), \
                    [], {}, {}
        records, curves, examples, notes = rows
        self.commit(cell.key, cell.identity, records, curves, examples,
                    sum(e["time_s"] for e in entries) + time.time() - t, prepare_time, notes)
        self.bar.update(1)


# ------------------------------------------------------------------------ model info cells
def _mark_weights(model, info: dict) -> None:
    """Mark a model the run drew at random (``--untrained``): the sanity metrics choose their
    images by the rule for random weights (:mod:`xai_bench.metrics.random_weights`)."""
    if info.get("untrained"):
        from xai_bench.metrics.random_weights import mark_random_weights

        mark_random_weights(model)


def model_ready(executor: Executor, models, spec, info_ident, pending, key: str):
    """``ModelScope`` of a model with its info cell ``key`` (card, test accuracy)
    committed, or None when the model breaks its contract (then its ``pending`` cells are
    committed as errors) or nothing of it is pending. ``info_ident=None``: only load it
    (another process wrote the info cell). ``models``: the run's
    :class:`~xai_bench.run.models.RunModels`."""
    from xai_bench.contracts.model import check_model

    store, name = executor.store, spec.name
    entry, _ = store.read(key)
    if info_ident is None:
        if entry is not None and "error" in entry.get("info", {}):
            return None
        model, info = models.load(spec)
        _mark_weights(model, info)
        return ModelScope(model, name, check_model(model, name))
    if not pending and entry is not None and entry["identity"] == info_ident:
        executor.cells[key] = entry
        return None
    try:
        model, info = models.load(spec)
        card = check_model(model, name)
        _mark_weights(model, info)
    except ContractError as e:  # every cell of this model is an error
        executor.commit_errors(name, pending, str(e))
        executor.cells[key] = store.write(key, {"identity": info_ident,
                                                "info": {"error": str(e)}})
        pending.clear()
        return None
    if entry is not None and entry["identity"] == info_ident:
        executor.cells[key] = entry
    else:
        from xai_bench.compute.inference import predict

        t = time.time()
        recorded = models.recorded_accuracy(spec, info)
        if recorded is None:
            accuracy = predict(model, executor.test_split(card["image_size"], name),
                               device=executor.device,
                               batch_size=executor.batch_size).accuracy
        summary = {**info, **card, "test_accuracy": accuracy if recorded is None else recorded,
                   "accuracy_from": "this run" if recorded is None else "checkpoint",
                   "eval_time_s": round(time.time() - t, 3)}
        executor.cells[key] = store.write(key, {"identity": info_ident, "info": summary})
    return ModelScope(model, name, card)
