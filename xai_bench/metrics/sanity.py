"""Sanity checks as metrics (category ``sanity``; definitions: docs/definitions.md,
'parameter_randomisation' and 'random_target').

- ``parameter_randomisation`` (lower is better): Adebayo et al. (2018)'s cascading model
  randomisation. The model (a deep copy; the caller's model is never touched) is randomised
  cumulatively from the top down — the classification head first, then the transformer blocks
  from the last to the first — and after each stage the maps of the true class are compared
  with those of the trained model by the Spearman rank correlation of their absolute values.
  A method that explains the model gives low correlations; a model-independent one gives 1.
  The cascade always runs to the end; by default the maps are compared at 3 of its stages
  (head, the middle, everything randomised) to bound the cost (``max_stages=None``: all).
- ``random_target`` (lower is better): the Spearman rank correlation (absolute values) between
  the map of the true class and that of a random other class of the same image. Class-agnostic
  methods give exactly 1.

Both select images by :func:`~xai_bench.metrics.random_weights.sanity_images` (parameter
``selection``: per class in turn, or overall): the most confidently and correctly classified
test images of a trained model; on a model the run initialised with random weights
(``--untrained``) the most confident in their true class, correct or not (the rule and why are
in that function). The rank helpers :func:`average_ranks` and :func:`spearman` are vectorised
over rows (float64, average ties).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from xai_bench.contracts.model import has_attention, model_name
from xai_bench.contracts.metric import metric
from xai_bench.contracts.parameters import integer, one_of, or_none
from xai_bench.metrics.base import (
    MetricNotApplicable, MetricResult, SampleMetric,
)
from xai_bench.metrics.common import DEFAULT_SELECTION, SELECTION_RULES, ImageSelection, \
    attribute
from xai_bench.metrics.random_weights import sanity_images, selected_from
from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed

__all__ = ["average_ranks", "spearman", "randomisation_stages", "randomise_parameters",
           "evaluated_stages", "require_parameters", "RandomisationPlan", "RandomTargets",
           "ParameterRandomisation", "RandomTarget"]


# --------------------------------------------------------------------------- ranks
def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) of every row of ``values (B, N)`` in float64, ties getting the average
    of the ranks they span (as ``scipy.stats.rankdata(method="average")``)."""
    x = torch.as_tensor(values).detach().double()
    if x.dim() == 1:
        return average_ranks(x[None])[0]
    n = x.shape[1]
    if n == 0:
        return x.clone()
    ordered, order = torch.sort(x, dim=1, stable=True)
    idx = torch.arange(n, device=x.device).expand_as(order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    last = torch.where(ends, idx, torch.full_like(idx, n)).flip(1).cummin(dim=1).values.flip(1)
    ranks = torch.empty_like(ordered)
    ranks.scatter_(1, order, (first + last).double() / 2 + 1)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each pair of rows of ``a`` and ``b`` (``(B, ...)``,
    flattened per row): the Pearson correlation of the average ranks, in float64, ``(B,)``.

    Constant rows have no ranking: two constant rows give 1 (nothing changed), a constant row
    against a non-constant one gives 0. Results are clamped to [-1, 1]."""
    a = torch.as_tensor(a).detach()
    b = torch.as_tensor(b).detach()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1).to(a.device)
    ra, rb = average_ranks(a), average_ranks(b)
    da = ra - ra.mean(dim=1, keepdim=True)
    db = rb - rb.mean(dim=1, keepdim=True)
    va, vb = (da * da).sum(1), (db * db).sum(1)
    cov = (da * db).sum(1)
    # sqrt(va * vb) (not sqrt(va) * sqrt(vb)): identical rank vectors give exactly 1
    denom = torch.sqrt(va * vb)
    rho = torch.where(denom > 0, cov / torch.where(denom > 0, denom, torch.ones_like(denom)),
                      torch.zeros_like(denom))
    both_constant = (va == 0) & (vb == 0)
    rho = torch.where(both_constant, torch.ones_like(rho), rho)
    return rho.clamp(-1.0, 1.0)


# --------------------------------------------------------------------------- stages
def _modules_after_blocks(model, last_block, x) -> list:
    """Modules (outside the blocks, not the root) whose first call starts after
    ``last_block`` returned, in call order: the classification head (final norm, head, ...;
    a called module brings all its parameters, also those it uses without calling the
    submodule that owns them). Found with one forward pass of ``x`` under
    ``torch.no_grad()``."""
    inside = {id(m) for m in last_block.modules()}
    state = {"done": False}
    seen, after = set(), []
    handles = []

    def pre_hook(module, _inputs):
        if id(module) in seen:
            return
        seen.add(id(module))
        if state["done"]:
            after.append(module)

    def block_done(*_):
        state["done"] = True

    try:
        for module in model.modules():
            if module is model or id(module) in inside:
                continue
            if next(module.parameters(), None) is not None:
                handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(last_block.register_forward_hook(block_done))
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return after


def randomisation_stages(model, x) -> list[tuple[str, list[str]]]:
    """The cascade, top down: ``[(stage name, qualified parameter names), ...]``.

    Models with the attention capability: ``head`` (the parameters of every module first
    called after the last block, e.g. final norm and head), then ``block{L-1}`` … ``block0``.
    Other models: their top-level child modules that have parameters, in reverse order, named
    after the child. Each parameter belongs to the first stage that reaches it; parameters used
    before the first block (tokeniser, position embedding) are kept. ``x``: one encoded input
    (for the forward pass that finds the head)."""
    qualified = {}
    for name, p in model.named_parameters():
        qualified.setdefault(id(p), name)
    taken: set[int] = set()

    def names(params) -> list[str]:
        out = []
        for p in params:
            if id(p) in qualified and id(p) not in taken:
                taken.add(id(p))
                out.append(qualified[id(p)])
        return out

    stages: list[tuple[str, list[str]]] = []
    blocks = list(model.blocks) if has_attention(model) else []
    if blocks:
        block_params = {id(p) for blk in blocks for p in blk.parameters()}
        head = [p for m in _modules_after_blocks(model, blocks[-1], x)
                for p in m.parameters() if id(p) not in block_params]
        stages.append(("head", names(head)))
        for i in reversed(range(len(blocks))):
            stages.append((f"block{i}", names(blocks[i].parameters())))
    else:
        for child_name, child in reversed(list(model.named_children())):
            stages.append((child_name, names(child.parameters())))
    return [(n, ps) for n, ps in stages if ps]


def evaluated_stages(n_stages: int, max_stages: int | None) -> list[int]:
    """Indices of the stages whose maps are compared: all of them, or ``max_stages`` spread
    evenly over the cascade, always including the first (head) and the last (everything
    randomised); ``max_stages=1``: the last only."""
    if max_stages is None or max_stages >= n_stages:
        return list(range(n_stages))
    if max_stages == 1:
        return [n_stages - 1]
    k = int(max_stages)
    return sorted({int(round(i * (n_stages - 1) / (k - 1))) for i in range(k)})


@torch.no_grad()
def randomise_parameters(model, names, seed: int) -> None:
    """Re-initialise the parameters ``names`` of ``model`` in place: each tensor with ``n >= 2``
    entries becomes ``mean + std · z`` with the original tensor's mean and (population)
    standard deviation and ``z`` standard normal, drawn on the CPU from
    ``cpu_generator(derive_seed(seed, "parameter_randomisation", name))`` in float64 — the
    same numbers on every device. Single-entry tensors are kept."""
    params = dict(model.named_parameters())
    for name in names:
        p = params[name]
        if p.numel() < 2:
            continue
        original = p.detach().to("cpu", torch.float64)
        mean, std = original.mean(), original.std(correction=0)
        z = torch.randn(tuple(p.shape), dtype=torch.float64,
                        generator=cpu_generator(derive_seed(seed, "parameter_randomisation",
                                                            name)))
        p.copy_((mean + std * z).to(device=p.device, dtype=p.dtype))


def require_parameters(model) -> None:
    """:class:`MetricNotApplicable` unless ``model`` is an ``nn.Module`` with parameters (a
    randomisation metric has nothing to randomise otherwise)."""
    if not isinstance(model, torch.nn.Module) or next(model.parameters(), None) is None:
        raise MetricNotApplicable(f"model '{model_name(model)}' is not an nn.Module with "
                                  f"parameters; nothing to randomise")


def _maps(method, model, images, targets, *, device, batch_size) -> torch.Tensor:
    """The method's maps of ``images`` for ``targets``, batched; float64 on the CPU."""
    out = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            sl = slice(start, min(start + batch_size, len(images)))
            x = model.encode(images[sl].to(device))
            out.append(attribute(method, model, x, targets[sl].to(device)).double().cpu())
    return torch.cat(out)


def _check_n_images(n_images) -> int:
    if int(n_images) < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    return int(n_images)


# --------------------------------------------------------------------------- metrics
@dataclass
class RandomisationPlan:
    """Prepared images and cascade of one model. stages: names top down; stage_parameters:
    the qualified parameter names each stage randomises; evaluated: indices of the compared
    stages; fractions: cumulative share of the model's parameter entries randomised."""

    selection: ImageSelection
    selected_from: str             # the records' column of that name (selected_from())
    stages: list
    stage_parameters: list
    evaluated: list
    fractions: list
    seed: int

    def __len__(self) -> int:
        return len(self.selection)


@metric("parameter_randomisation", groups="default",
        higher_is_better=False, category="sanity",
        label="Spearman ρ with the\ntrained model's map", unit="(image, stage) pairs", place=5,
        second_model=True)
class ParameterRandomisation(SampleMetric):
    """Cascading model-parameter randomisation (Adebayo et al., 2018): Spearman rank
    correlation of |map| on the trained and on the cumulatively randomised model."""

    name = "parameter_randomisation"
    PARAMETER_CHECKS = {"n_images": integer(1), "max_stages": or_none(integer(1)),
                        "seed": integer(), "selection": one_of(*SELECTION_RULES)}
    category = "sanity"
    higher_is_better = False
    description = ("cascading parameter randomisation (head, then blocks last to first): "
                   "Spearman correlation of |map| with the trained model's (lower: more "
                   "model-sensitive)")

    def __init__(self, n_images: int = 8, max_stages: int | None = 3, seed: int = 0,
                 selection: str = DEFAULT_SELECTION):
        if max_stages is not None and int(max_stages) < 1:
            raise ValueError(f"max_stages must be >= 1 or None, got {max_stages}")
        super().__init__(n_images=_check_n_images(n_images),
                         max_stages=None if max_stages is None else int(max_stages),
                         seed=int(seed), selection=selection)

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32,
                seed=None) -> RandomisationPlan:
        seed = self._seed(seed)
        require_parameters(model)
        selection = sanity_images(model, dataset, self.params["n_images"], device=device,
                                  batch_size=batch_size, selection=self.params["selection"])
        stages = randomisation_stages(model, model.encode(selection.images[:1].to(device)))
        if not stages:
            raise MetricNotApplicable(f"model '{model_name(model)}' has no randomisable stage")
        sizes = {n: p.numel() for n, p in model.named_parameters()}
        total, done, fractions = sum(sizes.values()), 0, []
        for _, names in stages:
            done += sum(sizes[n] for n in names)
            fractions.append(done / total)
        return RandomisationPlan(selection=selection, selected_from=selected_from(model),
                                 stages=[n for n, _ in stages],
                                 stage_parameters=[list(ps) for _, ps in stages],
                                 evaluated=evaluated_stages(len(stages),
                                                            self.params["max_stages"]),
                                 fractions=fractions, seed=seed)

    def evaluate_part(self, model, method, prepared: RandomisationPlan, start: int, stop: int,
                      *, device="cpu", batch_size: int = 32) -> dict:
        """``rho_abs`` / ``rho_signed``: (images, compared stages) of the images
        ``start:stop`` (every part runs the whole cascade on its own copy of the model)."""
        sel = prepared.selection
        images, labels = sel.images[start:stop], sel.labels[start:stop]
        kwargs = dict(device=device, batch_size=batch_size)
        original = _maps(method, model, images, labels, **kwargs)
        randomised = copy.deepcopy(model)
        rho_abs, rho_signed = [], []
        last = max(prepared.evaluated)
        for s, names in enumerate(prepared.stage_parameters[:last + 1]):
            randomise_parameters(randomised, names, prepared.seed)
            if s in prepared.evaluated:
                maps = _maps(method, randomised, images, labels, **kwargs)
                rho_abs.append(spearman(original.abs(), maps.abs()))
                rho_signed.append(spearman(original, maps))
        del randomised
        return {"rho_abs": torch.stack(rho_abs, 1), "rho_signed": torch.stack(rho_signed, 1)}

    def reduce(self, model, prepared: RandomisationPlan, part: dict, *,
               device="cpu") -> MetricResult:
        sel = prepared.selection
        last = max(prepared.evaluated)
        # stage index -> per-image values
        rho_abs = {s: part["rho_abs"][:, j].contiguous()
                   for j, s in enumerate(prepared.evaluated)}
        rho_signed = {s: part["rho_signed"][:, j].contiguous()
                      for j, s in enumerate(prepared.evaluated)}
        records = []
        for i, (idx, y) in enumerate(zip(sel.indices.tolist(), sel.labels.tolist())):
            for s in prepared.evaluated:
                records.append(dict(sample_id=f"img{idx:05d}/stage{s}", target=int(y),
                                    value=float(rho_abs[s][i]), stage=prepared.stages[s],
                                    stage_index=s, rho_signed=float(rho_signed[s][i]),
                                    randomised_fraction=float(prepared.fractions[s]),
                                    source_index=idx, explained="true class",
                                    selected_from=prepared.selected_from,
                                    statistic="spearman_abs"))
        by_stage = {prepared.stages[s]: float(rho_abs[s].mean()) for s in prepared.evaluated}
        values = torch.stack([rho_abs[s] for s in prepared.evaluated])
        summary = dict(mean=float(values.mean()), final_mean=float(rho_abs[last].mean()),
                       mean_by_stage=by_stage, stages=[prepared.stages[s]
                                                       for s in prepared.evaluated],
                       n_images=len(sel), n_images_requested=sel.n_requested,
                       seed=prepared.seed)
        return MetricResult(records=records, curves=[], summary=summary)


@dataclass
class RandomTargets:
    """Prepared images of one model and, per image, its random other class."""

    selection: ImageSelection
    random_targets: torch.Tensor
    seed: int
    selected_from: str = ""        # the records' column of that name (selected_from())

    def __len__(self) -> int:
        return len(self.selection)


def random_other_class(image: torch.Tensor, label: int, num_classes: int, seed: int) -> int:
    """A class drawn uniformly from the ``num_classes - 1`` classes other than ``label``,
    seeded by the image's content and ``seed`` (not by its position in the selection)."""
    g = cpu_generator(derive_seed("random_target", content_seed(image, seed)))
    r = int(torch.randint(int(num_classes) - 1, (1,), generator=g))
    return r if r < int(label) else r + 1


@metric("random_target", groups="default",
        higher_is_better=False, category="sanity",
        label="Spearman ρ with the map\nof another class", place=6, reexplains=True)
class RandomTarget(SampleMetric):
    """Class sensitivity: Spearman rank correlation of |map| for the true class and for a
    random other class."""

    name = "random_target"
    PARAMETER_CHECKS = {"n_images": integer(1), "seed": integer(),
                        "selection": one_of(*SELECTION_RULES)}
    category = "sanity"
    higher_is_better = False
    description = ("random-target check: Spearman correlation of |map| for the true class and "
                   "a random other class (lower: more class-sensitive; class-agnostic: 1)")

    def __init__(self, n_images: int = 250, seed: int = 0, selection: str = DEFAULT_SELECTION):
        super().__init__(n_images=_check_n_images(n_images), seed=int(seed),
                         selection=selection)

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32,
                seed=None) -> RandomTargets:
        seed = self._seed(seed)
        if int(model.num_classes) < 2:
            raise MetricNotApplicable(f"model '{model_name(model)}' has fewer than 2 classes")
        selection = sanity_images(model, dataset, self.params["n_images"], device=device,
                                  batch_size=batch_size, selection=self.params["selection"])
        others = [random_other_class(img, int(y), model.num_classes, seed)
                  for img, y in zip(selection.images, selection.labels)]
        return RandomTargets(selection=selection,
                             random_targets=torch.tensor(others, dtype=torch.long), seed=seed,
                             selected_from=selected_from(model))

    def evaluate_part(self, model, method, prepared: RandomTargets, start: int, stop: int, *,
                      device="cpu", batch_size: int = 32) -> dict:
        """``rho_abs`` / ``rho_signed`` of the images ``start:stop``."""
        sel = prepared.selection
        rho_abs = torch.empty(stop - start, dtype=torch.float64)
        rho_signed = torch.empty(stop - start, dtype=torch.float64)
        with eval_mode(model):
            for first in range(start, stop, batch_size):
                sl = slice(first, min(first + batch_size, stop))
                here = slice(first - start, sl.stop - start)
                x = model.encode(sel.images[sl].to(device))
                true_maps = attribute(method, model, x, sel.labels[sl].to(device)).double()
                other_maps = attribute(method, model, x,
                                       prepared.random_targets[sl].to(device)).double()
                rho_abs[here] = spearman(true_maps.abs(), other_maps.abs()).cpu()
                rho_signed[here] = spearman(true_maps, other_maps).cpu()
        return {"rho_abs": rho_abs, "rho_signed": rho_signed}

    def reduce(self, model, prepared: RandomTargets, part: dict, *,
               device="cpu") -> MetricResult:
        sel = prepared.selection
        n = len(sel)
        rho_abs, rho_signed = part["rho_abs"], part["rho_signed"]
        records = [dict(sample_id=f"img{int(idx):05d}", target=int(y), random_target=int(r),
                        value=float(a), rho_signed=float(s), source_index=int(idx),
                        explained="true class vs random class",
                        selected_from=prepared.selected_from, statistic="spearman_abs")
                   for idx, y, r, a, s in zip(sel.indices, sel.labels, prepared.random_targets,
                                              rho_abs, rho_signed)]
        summary = dict(mean=float(rho_abs.mean()), mean_signed=float(rho_signed.mean()),
                       n_images=n, n_images_requested=sel.n_requested, seed=prepared.seed)
        return MetricResult(records=records, curves=[], summary=summary)
