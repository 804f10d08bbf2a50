"""The Python entry point of a benchmark run: :func:`evaluate`.

``xai-bench run`` is a thin layer over it. Models, methods, metrics and the data set may be
given by name (as on the command line) or as objects::

    import torch, xai_bench

    def edges(model, x, targets):             # a plain function is a method
        return x.diff(dim=-1, append=x[..., -1:]).abs().sum(1)

    results = xai_bench.evaluate(models=["vit_nano"], methods=["rollout", edges],
                                 metrics="grid_pointing_game", untrained=True, n_grids=4)
    results.records                            # tidy DataFrame (see xai_bench.storage.results)
    results.summary                            # n, mean, 95 % interval per cell
    results.claims                             # the paper's claims, tested

With ``out=None`` (the default) everything stays in memory; with ``out=DIR`` the run is
written under ``DIR/<run name>/`` and resumable exactly as from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xai_bench.training.defaults import DEFAULT_DATASET, DEFAULT_MODELS

__all__ = ["evaluate", "Results"]


@dataclass
class Results:
    """What :func:`evaluate` returns: the tidy tables and the run's facts."""

    records: "object"                 # pandas DataFrame, schema xai_bench.storage.results.RECORD_COLUMNS
    curves: "object"                  # pandas DataFrame, schema CURVE_COLUMNS
    info: dict                        # what run.json holds
    examples: dict = field(default_factory=dict)  # "model/method/metric/name" -> array
    run_dir: Path | None = None
    #: the statistical tables (xai_bench.analysis.statistics.analyse): summary, comparisons, ranks,
    #: best, agreement, claims and, with replicates, stability
    tables: dict = field(default_factory=dict)
    #: what the run directory got besides the tables: {"plots": [paths], "report": path}
    outputs: dict = field(default_factory=dict)

    @property
    def problems(self) -> list:
        """Why some (model, metric) pairs have no result: one line per reason (what
        `xai-bench run` prints before exiting 1); empty when every pair has one."""
        from xai_bench.run.outcomes import problem_lines, problems, unrequested

        named = (self.info or {}).get("config", {}).get("metrics")
        return problem_lines(unrequested(problems(self.records), self.records, named)[0],
                             limit=None)

    @property
    def summary(self):
        """Per (model, method, metric, replicate): n, mean and its 95 % bootstrap interval."""
        return self.tables["summary"]

    @property
    def comparisons(self):
        """Paired, Holm-corrected comparisons of every pair of methods."""
        return self.tables["comparisons"]

    @property
    def claims(self):
        """The paper's claims: holds / fails / inconclusive, with their numbers."""
        return self.tables["claims"]

    def means(self):
        """Mean value per (metric, model) and method of the ok records (a pivot table)."""
        from xai_bench.run.finish import summary_table

        return summary_table(self.records)

    @property
    def counts(self) -> dict:
        """Records per status (``ok``, ``skipped``, ``error``)."""
        return dict(self.info.get("counts", {}))


def evaluate(models=DEFAULT_MODELS, methods="default", metrics="default", dataset=DEFAULT_DATASET,
             out=None, *, checkpoints=None, replicates: int = 1, n_grids: int = 24,
             n_images: int = 24, selection: str = "stratified", batch_size: int = 32, device: str = "auto", seed: int = 0,
             name: str | None = None, method_params: dict | None = None,
             metric_params: dict | None = None, model_params: dict | None = None,
             untrained: bool = False,
             train_epochs: int | None = None, precision: str = "fp32", compile: bool = False,
             meta: bool = False, min_effect=None, plots: bool = True, report: bool = True,
             progress: bool = False, log=None,
             before_run=None) -> "Results | None":
    """Benchmark ``models`` × ``methods`` × ``metrics`` on ``dataset``.

    models: names, globs, ``"all"`` or ``nn.Module`` objects with the model contract
    (:mod:`xai_bench.contracts`); methods: names, globs, ``"all"``, groups (``"default"``: the
    paper's methods, ViT-CX and the baselines; ``"paper"``, ``"captum"``, a kind such as
    ``"gradient"``) or method objects / plain functions ``f(model, x, targets) -> maps``;
    metrics: names, globs, categories, groups (``"default"``: the paper's seven metrics;
    ``"latec"``) or metric objects;
    dataset: a spec (``xai-bench list datasets``) or a data set object. The keyword options
    are those of ``xai-bench run`` under their own names (the fields of
    :class:`~xai_bench.run.config.RunConfig`: ``method_params`` is
    ``{method: {key: value}}``, ``metric_params`` ``{metric: {key: value}}`` (e.g.
    ``{"grid_pointing_game": {"confidence_threshold": 0}}``), ``model_params``
    ``{model: {key: value}}`` the models' constructor arguments (``"*"`` for every model,
    e.g. ``{"timm:vit_tiny_patch16_224": {"img_size": 32, "num_classes": 4}}``; also applied
    to a checkpoint's stored arguments and part of the cells' identity), ``checkpoints``
    ``{model: path}`` or ``{"model@r": path}`` per replicate, or ``{model: glob}`` (an
    xai-bench checkpoint, or a plain state dict ``.pt``/``.pth``/``.safetensors``);
    ``replicates=N`` runs N independently initialised copies of each model;
    ``selection``: which images the image-selecting metrics explain, ``"stratified"``
    (the most confident correct image of each class in turn) or ``"global"``;
    ``precision="bf16"`` and ``compile=True`` for the forward-only work,
    :mod:`xai_bench.compute.precision`; ``min_effect``: the smallest difference worth
    reporting, e.g. ``0.01``, ``"0.2sd"`` or ``{"grid_pointing_game": 0.01}``,
    :func:`~xai_bench.analysis.effects.parse_min_effect`; ``meta=True`` also meta-evaluates
    every metric into ``meta.csv``, :mod:`xai_bench.run.meta`). With ``out``, the run
    directory is the one ``xai-bench run`` writes: ``plots=False`` leaves out ``plots/`` (the report then draws
    its figures into the page only) and ``report=False`` leaves out ``report.html``
    (``xai-bench run --no-plots`` is both). Invalid input raises a one-line
    :class:`~xai_bench.errors.XaiBenchError` before any work. Under torchrun
    (:mod:`xai_bench.run.distributed`) the processes share the work and only rank 0 returns
    :class:`Results`; the others return ``None``."""
    # every keyword named like a RunConfig field is a run option (tests/test_run_options.py
    # checks that the names and defaults are the fields')
    given = dict(locals())
    from xai_bench.run.config import RunConfig
    from xai_bench.run.runner import Runner

    config = RunConfig.from_options(**{k: v for k, v in given.items()
                                       if k in RunConfig.option_names()})
    runner = Runner(config, progress=progress, log=log or (lambda *_: None), plots=plots,
                    report=report)
    if before_run is not None:  # the configuration is valid; e.g. the CLI's --processes
        before_run(runner)
    info = runner.run()
    if info is None:  # a process other than rank 0 of a multi-process run: rank 0 reports
        return None
    return Results(records=runner.records, curves=runner.curves, info=info,
                   examples=runner.examples, run_dir=runner.run_dir, tables=runner.tables,
                   outputs=runner.outputs)
