"""What a run still has to compute, and how it is shared out.

A **cell** is one (model, method, metric); its key names its file. The plan keeps every
stored cell whose identity is the new one and lists the others as pending, with the reason
(:func:`plan_cells`). A **unit** is one (model, method) with its pending cells: its maps are
explained once and scored by all its metrics. A cell whose metric computes in parts is cut
into one part per batch of the samples it asks for, fixed by the configuration alone (never by
the number of processes), so that a cell is computed the same way whoever computes it. A
**work item** is part ``k`` of a unit: what one process claims (:mod:`xai_bench.run.distributed`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from xai_bench.contracts.method import DEFAULT_METHOD_COST
from xai_bench.run.identities import cell_identity, stale_reason

__all__ = ["cell_key", "part_key", "info_key", "PendingCell", "ModelPlan", "Plan",
           "plan_cells", "units", "n_parts", "WorkItem", "work_items", "unit_cost"]


def cell_key(model: str, method: str, metric: str) -> str:
    return f"{model}__{method}__{metric}"


def part_key(key: str, part: int) -> str:
    return f"{key}__part{part:04d}"


def info_key(model_label: str) -> str:
    """The key of a model's info cell (its card and test accuracy)."""
    return f"model__{model_label}"


@dataclass
class PendingCell:
    """A cell to compute: its method and metric entries, key and identity."""

    method: object
    metric: object
    key: str
    identity: dict


@dataclass
class ModelPlan:
    """One model of the run: its spec, its identity, and its pending cells."""

    spec: object
    identity: dict
    pending: list


@dataclass
class Plan:
    models: list                   # [ModelPlan]
    kept: dict                     # key -> stored cell reused as it is
    reasons: Counter               # why the pending cells are computed -> how many


def plan_cells(specs, methods, metrics, model_identity, data_ident, run_ident,
               store) -> Plan:
    """Per model, the cells of ``store`` whose identity is the new one (kept) and the
    others (pending); ``model_identity(spec)`` gives a model's identity."""
    plan = Plan([], {}, Counter())
    for spec in specs:
        model_ident = model_identity(spec)
        pending = []
        for metric in metrics:
            for method in methods:
                key = cell_key(spec.label, method.name, metric.name)
                ident = cell_identity(model_ident, method.identity, metric.identity,
                                      data_ident, run_ident)
                entry, problem = store.read(key)
                why = stale_reason(entry, problem, ident, spec.label, method.name, metric.name)
                if why is None:
                    plan.kept[key] = entry
                else:
                    if why:
                        plan.reasons[why] += 1
                    pending.append(PendingCell(method, metric, key, ident))
        plan.models.append(ModelPlan(spec, model_ident, pending))
    return plan


def units(pending) -> list:
    """``[(method, [PendingCell])]``: the pending cells of one model grouped by method, in
    method order (a unit is explained once; its maps are shared by its metrics)."""
    found: dict = {}
    for cell in pending:
        found.setdefault(cell.method.name, (cell.method, []))[1].append(cell)
    return list(found.values())


def n_parts(metric, batch_size: int) -> int:
    """How many parts a cell of ``metric`` is computed in: one per batch of the samples
    its parameters ask for (a metric that cannot be split, or that asks for one batch or
    less, is computed whole: 1)."""
    requested = metric.metric.requested_samples()
    if not requested:
        return 1
    return max(1, math.ceil(int(requested) / batch_size))


@dataclass
class WorkItem:
    """Part ``part`` of a unit (one model, one method, its pending cells): what one process
    claims by ``name``. ``cost``: its estimated share of the work (:func:`unit_cost`)."""

    spec: object
    method: object
    cells: list
    part: int
    name: str
    cost: float


def unit_cost(method, n_cells: float) -> float:
    """A unit's estimated share of the work: its method's declared cost (forward passes per
    explained image) times its cells, so that a multi-process run hands out the expensive
    units first and the cheap ones fill the gaps. A method that failed to load costs the
    default."""
    cost = method.method.card.cost if method.method is not None else DEFAULT_METHOD_COST
    return cost * n_cells


def work_items(plan: Plan, batch_size: int) -> list:
    """What the processes share out: part ``k`` of every unit, for ``k`` up to its cells'
    largest number of parts. Part 0 also holds the cells computed whole."""
    work = []
    for model in plan.models:
        for method, cells in units(model.pending):
            counts = [n_parts(cell.metric, batch_size) for cell in cells]
            for part in range(max(counts)):
                share = sum(1 / n for n in counts if part < n)
                name = cell_key(model.spec.label, method.name, "unit")
                if max(counts) > 1:
                    name = part_key(name, part)
                work.append(WorkItem(model.spec, method, cells, part, name,
                                     unit_cost(method, share)))
    return work
