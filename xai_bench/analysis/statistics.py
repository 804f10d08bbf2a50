"""Uncertainty, paired tests, rank groups and agreement for a run's records: one import for
the public names of the statistics modules (docs/statistics.md states every rule).

Every number the harness reports is an estimate from a finite sample of images (or grid
cells). Each gets a seeded bootstrap interval; methods are compared on the *same* samples
with a paired test and a Holm correction, and the verdicts the tables and the claims use are
derived from these. Input is the tidy records table
(:func:`xai_bench.storage.results.read_records`); only ``status == "ok"`` rows count, and
every output is split by the optional ``replicate`` column (0 when absent).

Where each part lives:

=====================================  ===========================================================
:mod:`~xai_bench.analysis.frames`      group keys, input checks, ``replicate``, seeded generators
:mod:`~xai_bench.analysis.samples`     the samples and the estimator of each group (mean / ratio)
:mod:`~xai_bench.analysis.bootstrap`   one-sample, paired and two-sample bootstrap intervals
:mod:`~xai_bench.analysis.summary`     the summary table (estimate and interval per group)
:mod:`~xai_bench.analysis.wilcoxon`    the Wilcoxon signed-rank test
:mod:`~xai_bench.analysis.comparisons` paired comparisons, Holm's correction
:mod:`~xai_bench.analysis.ranks`       rank groups and the best method (or a tie)
:mod:`~xai_bench.analysis.agreement`   agreement between metrics, stability over replicates
:mod:`~xai_bench.analysis.formatting`  numbers with their intervals as text
:mod:`~xai_bench.analysis.tables`      the registry of tables: analyse, write, read
=====================================  ===========================================================
"""

from __future__ import annotations

from xai_bench.analysis.agreement import (
    AGREEMENT_COLUMNS, STABILITY_COLUMNS, metric_agreement, replicate_stability,
)
from xai_bench.analysis.bootstrap import bootstrap_interval
from xai_bench.analysis.comparisons import COMPARISON_COLUMNS, compare, holm
from xai_bench.analysis.formatting import format_interval
from xai_bench.analysis.frames import INTERVALS, as_bool
from xai_bench.analysis.ranks import BEST_COLUMNS, RANK_COLUMNS, best_methods, rank_groups
from xai_bench.analysis.samples import sample_values
from xai_bench.analysis.summary import SUMMARY_COLUMNS, summarise
from xai_bench.analysis.tables import analyse, read_statistics, write_statistics

__all__ = [
    "sample_values", "bootstrap_interval", "summarise", "compare", "holm", "rank_groups",
    "best_methods", "metric_agreement", "replicate_stability", "format_interval", "as_bool",
    "analyse", "write_statistics", "read_statistics", "SUMMARY_COLUMNS", "COMPARISON_COLUMNS",
    "RANK_COLUMNS", "BEST_COLUMNS", "AGREEMENT_COLUMNS", "STABILITY_COLUMNS", "INTERVALS",
]
