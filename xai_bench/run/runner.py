"""The benchmark runner: crosses models × methods × metrics, batched, resumable, and never
reuses a stale result.

A run is a few small parts, wired together by :class:`Runner`:

* :mod:`~xai_bench.run.config` — what to run (:class:`RunConfig`, one field per run option);
* :mod:`~xai_bench.run.resolve` (with :mod:`~xai_bench.run.names` and
  :mod:`~xai_bench.run.models`) — everything checked and resolved before any file is created or
  any model is loaded or trained: unknown names, ``--method-arg`` keys and types, checkpoint
  paths, the run name;
* :mod:`~xai_bench.run.identities` — what determines a cell's numbers, and why a stored cell is
  not reused (``3 cells stale: intgrad parameters changed (n_steps 50 → 20)``);
* :mod:`~xai_bench.run.plan` — the pending cells, grouped into units and parts, shared out;
* :mod:`~xai_bench.run.execute` — cells computed whole or in parts, joined, committed;
* :mod:`~xai_bench.run.finish` — the tables, run.json, the statistics, the figures and the
  report.

Each finished cell is committed with its identity and a checksum (:mod:`xai_bench.run.store`).
A rerun reuses exactly the cells whose stored identity equals the new one and recomputes the
rest. Cells that ended in ``error`` are retried; garbled cell files are recomputed. A plugin
that fails to load or construct becomes ``error`` records for its own cells; a method that
raises or violates its contract (shape, dtype, NaN) likewise.

The run directory is locked while a process works in it; SIGINT/SIGTERM end the run with one
line, keeping every committed cell. Under torchrun the processes share the work
(:mod:`xai_bench.run.distributed`).
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from xai_bench.analysis.sample_size import SMALL_SAMPLE_N
from xai_bench.errors import Interrupted
from xai_bench.run.config import RunConfig, RunError
from xai_bench.run.dataset import RunDataset
from xai_bench.run.distributed import claim, clear_claims, new_invocation_name, ranks
from xai_bench.run.execute import Executor, model_ready
from xai_bench.run.finish import analyse_run, collect, run_info, summary_table, \
    write_figures, write_tables
from xai_bench.run.identities import info_identity, run_identity
from xai_bench.run.interrupts import terminate_as_interrupt
from xai_bench.run.models import RunModels
from xai_bench.run.names import resolve_metrics
from xai_bench.run.plan import info_key, plan_cells, work_items
from xai_bench.run.resolve import check_run_name, resolve_device, resolve_run
from xai_bench.run.store import MemoryStore, RunStore

__all__ = ["Runner", "RunConfig", "RunError", "resolve_metrics", "resolve_device",
           "summary_table", "PARTS_FOLDER"]

#: where the parts of a cell computed in parts wait for the rest (docs/distributed.md)
PARTS_FOLDER = "parts"
#: how many models keep their metrics' prepared selections and perturbed copies' confidences
#: at a time (a multi-process run's units come in cost order, not model by model)
MODELS_HELD = 2


class Runner:
    """Validates a :class:`RunConfig` at construction (nothing is written or loaded), then
    :meth:`run` computes the cells that are missing or stale and finishes the run (with a
    run directory, ``plots`` and ``report`` also write ``plots/`` and ``report.html``)."""

    def __init__(self, config: RunConfig, progress: bool = True, log=print, *,
                 plots: bool = False, report: bool = False):
        self.config = config
        self.progress, self.log = progress, log
        self.plots, self.report = plots, report
        # a lambda, so that a rank other than 0 stays quiet once self.log is replaced
        self.data = RunDataset(config.dataset, log=lambda *a: self.log(*a))
        resolved = resolve_run(config, self.data.test_split)
        self.model_specs, self.checkpoints = resolved.model_specs, resolved.checkpoints
        self.methods, self.metrics = resolved.methods, resolved.metrics
        self.run_name = check_run_name(config.run_name())
        # torchrun's environment: this process's rank (one process without it)
        self.ranks = ranks(resolved.device)
        self.device = self.ranks.device(resolved.device)
        if not self.ranks.is_main:
            self.log = lambda *_: None  # rank 0 speaks for the job
        if self.ranks.distributed and config.out is None:
            raise RunError("a multi-process run (torchrun) shares its cells through the run "
                           "directory: give --out on a file system every process sees")
        if config.out is None:
            self.store, self.run_dir = MemoryStore(), None
            self.parts = MemoryStore()
        else:
            out = Path(config.out)
            if out.exists() and not out.is_dir():
                raise RunError(f"--out {out} is a file; give a directory for the results")
            self.run_dir = out / self.run_name
            self.store = RunStore(self.run_dir)
            #: the parts of cells computed in parts, until their cell is committed
            self.parts = RunStore(self.run_dir, folder=PARTS_FOLDER)
        self.models = RunModels(config, self.checkpoints, self.device, self.progress, self.log)
        #: keys of the cells computed by this invocation, and why they were (not reused)
        self.computed: list = []
        self.reasons: Counter = Counter()
        #: images not explained again thanks to the shared maps (xai_bench.compute.map_cache)
        self.maps_saved = 0
        #: perturbed copies not forwarded again thanks to the shared forwards (same module)
        self.copies_saved = 0
        self.cells_wall_s = 0.0
        #: the figures and the report written by :meth:`finish` ({"plots": [...], "report": ...})
        self.outputs: dict = {}
        self._cells: dict = {}
        self._total = self._reused = 0
        self._held: list = []
        #: (model, metric, what) -> (used, requested) of the computed cells that used fewer
        self._shortfalls: dict = {}

    # ---- data and models -----------------------------------------------------------------
    def dataset(self, image_size=None):
        """The test split at ``image_size`` (a model's input size); see
        :class:`~xai_bench.run.dataset.RunDataset`."""
        return self.data.test_split(image_size)

    def load_model(self, spec):
        """``(model, info)`` of a :class:`~xai_bench.run.models.ModelSpec` or a model label
        (see :meth:`xai_bench.run.models.RunModels.load`)."""
        if isinstance(spec, str):
            spec = next(s for s in self.model_specs if s.label == spec)
        return self.models.load(spec)

    # ---- the run -------------------------------------------------------------------------
    def run(self) -> dict | None:
        """Compute what is missing or stale, then finish the run; returns run.json's content
        (``None`` in the processes other than rank 0 of a multi-process run, which assembles
        nothing). Raises :class:`~xai_bench.errors.Interrupted` on SIGINT/SIGTERM."""
        started = time.time()
        from xai_bench.compute.precision import forward_options

        cfg = self.config
        self._holds_lock = False
        with contextlib.ExitStack() as held, terminate_as_interrupt(), \
                forward_options(cfg.precision, cfg.compile):
            try:
                # in a multi-process run rank 0 holds the lock for the job and prepares it; the
                # others learn at the first collective whether to go on or stop with its error
                invocation = self.ranks.agree(lambda: self._prepare_job(held))
                self._run_cells(invocation)
                if not self.ranks.is_main:
                    return None
                return self.finish(time.time() - started)
            except KeyboardInterrupt as e:
                if self._holds_lock:
                    self.store.discard_if_empty()
                kept = self._reused + len(self.computed)
                stop = Interrupted(f"interrupted: {kept}/{self._total} cells kept; rerun "
                                   f"the same command to resume")
                stop.signal_name = getattr(e, "signal_name", "SIGINT")
                raise stop from None
            except BaseException:
                if self._holds_lock:
                    self.store.discard_if_empty()  # failed before any work: leave nothing
                raise

    def _prepare_job(self, held) -> str | None:
        """Rank 0 (or the only process): take the run directory's lock (held until ``held``
        closes), clear the claims a killed job left, and in a multi-process run train or load
        every default model once, here; returns the invocation's name (a multi-process run's
        claims and parts)."""
        held.enter_context(self.store.lock())
        self._holds_lock = True
        r = self.ranks
        if self.run_dir is not None:
            # claims of an earlier, killed invocation: rank 0 holds the lock, so they are stale
            clear_claims(self.run_dir)
        if not r.distributed:
            return None
        for spec in self.model_specs:
            self.models.identity(spec)
        return new_invocation_name()

    def _run_cells(self, invocation: str | None):
        r, cfg = self.ranks, self.config
        self.computed, self.reasons, self._reused = [], Counter(), 0
        run_ident, data_ident = run_identity(cfg, self.device), self.data.identity()
        self._total = len(self.model_specs) * len(self.metrics) * len(self.methods)
        plan = plan_cells(self.model_specs, self.methods, self.metrics, self.models.identity,
                          data_ident, run_ident, self.store)
        self._reused, self.reasons = len(plan.kept), plan.reasons
        where = self.run_dir if self.run_dir is not None else "(in memory)"
        self.log(f"run directory: {where} ({self._reused}/{self._total} cells already done)")
        for why, n in self.reasons.items():
            self.log(f"{n} cell{'s' if n > 1 else ''} {why}")
        if r.distributed:
            self.log(f"{r.world} processes share the work")
        from tqdm.auto import tqdm

        bar = tqdm(total=self._total, initial=self._reused, unit="cell", dynamic_ncols=True,
                   disable=not (self.progress and sys.stderr.isatty() and r.is_main))
        executor = Executor(
            self.store, self.parts, self.device, cfg.batch_size, cfg.seed,
            # stamps the parts this invocation commits (a part that failed is reused only by it)
            stamp=invocation or uuid.uuid4().hex[:12], test_split=self.data.test_split,
            # in a multi-process run exactly one of the processes that see all parts joins them
            join_claim=lambda key: not r.distributed or claim(self.run_dir, invocation,
                                                              f"{key}__join"),
            bar=bar, cells=dict(plan.kept), computed=self.computed)
        self._cells = executor.cells
        started = time.time()
        try:
            ready = {}
            if r.is_main:  # the model cards and accuracies: rank 0, before the cells
                for model in plan.models:
                    ident = info_identity(model.identity, data_ident, run_ident)
                    ready[model.spec.label] = model_ready(executor, self.models, model.spec,
                                                          ident, model.pending,
                                                          info_key(model.spec.label))
            r.barrier()
            work = work_items(plan, cfg.batch_size)
            if r.distributed:  # the expensive pieces first, the cheap ones fill the gaps
                work.sort(key=lambda item: -item.cost)
            for item in work:
                label = item.spec.label
                if r.distributed and not claim(self.run_dir, invocation, item.name):
                    continue
                ready[label] = ready.get(label) or model_ready(
                    executor, self.models, item.spec, None, [], info_key(label))
                if ready[label] is None:  # the model broke its contract: its cells are errors
                    continue
                self._hold(label, ready)
                executor.run_unit(ready[label], item.method, item.cells, item.part)
            r.barrier()  # every process has committed its cells
            self.maps_saved = r.total(executor.maps_saved)  # the images of every process
            self.copies_saved = r.total(executor.copies_saved)
            #: wall time from the first model card to the last process's last cell
            self.cells_wall_s = time.time() - started
            if r.distributed and r.is_main:
                clear_claims(self.run_dir, invocation)
                self._collect(plan)
            if r.is_main:
                # every cell is committed now: no part of them is needed, including those an
                # earlier, killed invocation left after committing the cell they made up
                self.parts.remove_parts(list(self._cells))
                self.parts.remove_folder_if_empty()
            self._note_shortfalls(plan)
        finally:
            bar.close()

    def _hold(self, label, scopes):
        """Keep the metrics' prepared selections and the perturbed copies' confidences
        (:class:`~xai_bench.run.execute.ModelScope`) of :data:`MODELS_HELD` models at a
        time; an older model's are dropped (and prepared again if it comes back)."""
        if label in self._held:
            return
        while len(self._held) >= MODELS_HELD:
            dropped = scopes.get(self._held.pop(0))
            if dropped is not None:
                dropped.prepared, dropped.confidences = {}, {}
        self._held.append(label)

    def _collect(self, plan):
        """Rank 0 of a multi-process run: every pending cell, as committed by whichever
        process computed it (rank 0 wrote the model cards itself)."""
        for model in plan.models:
            for cell in model.pending:
                entry, problem = self.store.read(cell.key)
                if entry is None:
                    raise RunError(f"cell {cell.key} was not committed by any process "
                                   f"({problem or 'missing'}); rerun the same command to "
                                   f"compute it")
                self._cells[cell.key] = entry

    def _note_shortfalls(self, plan):
        """Note the (model, metric) pairs whose computed cells used fewer samples than asked;
        :meth:`finish` says so, one line each, once it knows which estimates are small
        samples."""
        self._shortfalls = {}
        for model in plan.models:
            for cell in model.pending:
                for what, pair in (self._cells.get(cell.key, {}).get("notes") or {}).items():
                    self._shortfalls[(model.spec.name, cell.metric.name, what)] = tuple(pair)

    def _say_shortfalls(self, summary):
        """One line per (model, metric) whose computed cells used fewer samples than asked,
        saying whether its estimates are flagged as small samples
        (:mod:`xai_bench.analysis.sample_size`)."""
        from xai_bench.analysis.sample_size import small_samples

        small = small_samples(summary)
        smallest = small.groupby(["model", "metric"])["n"].min().to_dict() if len(small) else {}
        for (model, metric_name, what), (n, requested) in self._shortfalls.items():
            flag = smallest.get((model, metric_name))
            note = "" if flag is None else \
                f"; estimates from n = {flag} samples (below {SMALL_SAMPLE_N}) are flagged as " \
                f"small samples in the summary and the report"
            self.log(f"{metric_name} on {model}: {n} of the {requested} requested {what} could "
                     f"be used (the test set has too few correctly classified images that pass "
                     f"the selection; see the records' selection columns){note}")

    # ---- finishing -----------------------------------------------------------------------
    def finish(self, wall_s: float) -> dict:
        """Assemble records, curves, examples, run.json and the statistics from this run's
        cells; write them (and the figures and report, as asked) into the run directory."""
        collected = collect(self.model_specs, self.methods, self.metrics, self._cells,
                            self.store)
        info = run_info(self.config, device=self.device, run_name=self.run_name,
                        methods=self.methods, metrics=self.metrics, collected=collected,
                        dataset=self.dataset(), processes=self.ranks.world,
                        timings=dict(last_invocation_wall_s=round(wall_s, 3),
                                     cells_wall_s=round(self.cells_wall_s, 3),
                                     maps_reused_images=self.maps_saved,
                                     copies_reused=self.copies_saved))
        self.records, self.curves = collected.records, collected.curves
        self.examples, self.info = collected.examples, info
        if self.config.meta:  # meta.csv, before the report that shows it (xai_bench.run.meta)
            from xai_bench.run.meta import run_meta

            self.meta = run_meta(self, collected)
        self.tables = analyse_run(collected, info, self.config.seed, self.config.min_effect)
        self._say_shortfalls(self.tables["summary"])
        if self.run_dir is not None:
            write_tables(self.run_dir, collected, info, self.tables)
            self.outputs = write_figures(self.run_dir, plots=self.plots, report=self.report)
        return info
