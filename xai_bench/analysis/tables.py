"""The statistics tables of a run, each registered once: its name (``NAME.csv`` in the run
directory), its columns, its producer and whether it applies to every run.

A producer is ``produce(records, tables, options) -> DataFrame``: a function of the records
and of the tables registered before it (``tables``, by name; ``needs`` lists the ones it
reads) under the :class:`AnalysisOptions` of the analysis. :func:`analyse` produces, in
registration order, every table that applies; :func:`write_statistics` writes them;
:func:`read_statistics` reads them back from a run directory and produces only those it
lacks. Adding a table is one :func:`register_table` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xai_bench.analysis.agreement import (
    AGREEMENT_COLUMNS, STABILITY_COLUMNS, metric_agreement, replicate_stability,
)
from xai_bench.analysis.claims import CLAIM_COLUMNS, evaluate_claims, load_claims
from xai_bench.analysis.comparisons import COMPARISON_COLUMNS, compare
from xai_bench.analysis.ranks import BEST_COLUMNS, RANK_COLUMNS, best_methods, rank_groups
from xai_bench.analysis.summary import SUMMARY_COLUMNS, summarise
from xai_bench.errors import ConfigError, XaiBenchError
from xai_bench.storage.results import (
    ResultsError, check_booleans, check_numbers, read_table,
)

__all__ = ["AnalysisOptions", "StatisticsTable", "TABLES", "register_table", "analyse",
           "write_statistics", "read_statistics", "run_seed", "run_min_effect"]


@dataclass(frozen=True)
class AnalysisOptions:
    """The options of one analysis: the bootstrap's (``confidence``, ``n_resamples``,
    ``seed``, ``interval``), the tests' ``alpha``, the ``claims`` to check (None/False: none;
    ``True``/``"paper"``: the paper's; a path or a list of claims), the twin ``pairs``, the
    run's ``declarations`` (run.json's; None: the registry's cards) and the smallest
    difference worth reporting, ``min_effect`` (``--min-effect``; None: every significant
    difference counts)."""

    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0
    alpha: float = 0.05
    interval: str = "bca"
    claims: object = None
    pairs: dict | None = None
    declarations: dict | None = None
    min_effect: object = None

    @property
    def bootstrap(self) -> dict:
        """The keyword arguments every bootstrap takes."""
        return dict(confidence=self.confidence, n_resamples=self.n_resamples, seed=self.seed,
                    interval=self.interval)


#: produce(records, earlier tables, options) -> the table
Producer = Callable[[pd.DataFrame, dict, AnalysisOptions], pd.DataFrame]
#: applies(records, earlier tables, options) -> whether the table is produced
Condition = Callable[[pd.DataFrame, dict, AnalysisOptions], bool]


@dataclass(frozen=True)
class StatisticsTable:
    """One registered table. ``columns``: the columns it always has (first, in this order);
    ``needs``: the earlier tables its producer reads; ``applies``: None for a table of every
    run, else the condition under which it is produced and written."""

    name: str
    columns: tuple
    produce: Producer
    needs: tuple = ()
    applies: Condition | None = None

    def applies_to(self, records: pd.DataFrame, tables: dict, options: AnalysisOptions) -> bool:
        return self.applies is None or bool(self.applies(records, tables, options))


#: the registered tables by name, in registration order (the order they are produced in)
TABLES: dict[str, StatisticsTable] = {}


def register_table(name: str, columns, produce: Producer, *, needs=(),
                   applies: Condition | None = None) -> StatisticsTable:
    """Register the table ``name`` (see :class:`StatisticsTable`); the tables it ``needs``
    must be registered before it, so that they are produced first."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"a statistics table needs a name usable as a file name (letters, "
                          f"digits, '_'), got {name!r}")
    if name in TABLES:
        raise ConfigError(f"the statistics table '{name}' is registered already; give the new "
                          f"table its own name")
    unknown = [n for n in needs if n not in TABLES]
    if unknown:
        raise ConfigError(f"the statistics table '{name}' needs {', '.join(unknown)}, which "
                          f"is not registered before it; register it first")
    table = StatisticsTable(name, tuple(columns), produce, tuple(needs), applies)
    TABLES[name] = table
    return table


# ------------------------------------------------------------------------------ the tables

def _has_replicates(records, tables, options) -> bool:
    summary = tables["summary"]
    return bool(len(summary)) and summary["replicate"].nunique() > 1


def _claims_asked(records, tables, options) -> bool:
    return options.claims is not None and options.claims is not False


def _claims(records, tables, options) -> pd.DataFrame:
    claims = options.claims
    if claims is True or (isinstance(claims, str) and claims == "paper"):
        claims = load_claims()
    elif isinstance(claims, (str, Path)):
        claims = load_claims(claims)
    return evaluate_claims(tables["summary"], tables["comparisons"], records, claims,
                           pairs=options.pairs, declarations=options.declarations,
                           **options.bootstrap)


register_table("summary", SUMMARY_COLUMNS,
               lambda records, tables, o: summarise(records, **o.bootstrap))
register_table("comparisons", COMPARISON_COLUMNS,
               lambda records, tables, o: compare(records, alpha=o.alpha,
                                                  min_effect=o.min_effect, **o.bootstrap))
register_table("ranks", RANK_COLUMNS,
               lambda records, tables, o: rank_groups(tables["summary"], tables["comparisons"]),
               needs=("summary", "comparisons"))
register_table("best", BEST_COLUMNS,
               lambda records, tables, o: best_methods(tables["summary"], tables["comparisons"]),
               needs=("summary", "comparisons"))
register_table("agreement", AGREEMENT_COLUMNS,
               lambda records, tables, o: metric_agreement(tables["summary"]),
               needs=("summary",))
register_table("stability", STABILITY_COLUMNS,
               lambda records, tables, o: replicate_stability(tables["summary"]),
               needs=("summary",), applies=_has_replicates)
register_table("claims", CLAIM_COLUMNS, _claims, needs=("summary", "comparisons"),
               applies=_claims_asked)


# ------------------------------------------------------------------------------ producing

def _complete(records: pd.DataFrame, options: AnalysisOptions, given: dict):
    """``(tables, computed)``: the tables of ``given`` as they are, and every other registered
    table that applies produced now (in registration order, so that each producer finds
    the tables it needs); ``computed`` names the produced ones."""
    tables, computed = {}, []
    for table in TABLES.values():
        if table.name in given:
            tables[table.name] = given[table.name]
        elif table.applies_to(records, tables, options):
            tables[table.name] = table.produce(records, tables, options)
            computed.append(table.name)
    return tables, computed


def analyse(records: pd.DataFrame, *, confidence: float = 0.95, n_resamples: int = 2000,
            seed: int = 0, alpha: float = 0.05, interval: str = "bca", claims=None,
            pairs=None, declarations: dict | None = None, min_effect=None) -> dict:
    """Every registered statistics table that applies, as DataFrames by name: ``summary``,
    ``comparisons``, ``ranks``, ``best``, ``agreement``, ``stability`` (when there are several
    replicates) and ``claims`` (when ``claims`` is given: ``True``/``"paper"`` for the
    paper's claims, a path or a list of claims; ``pairs`` as for
    :func:`xai_bench.analysis.claims.evaluate_claims`); ``declarations``: the run's
    (run.json's ``declarations``; None: the registry's cards); ``min_effect``: the smallest
    difference worth reporting (:func:`~xai_bench.analysis.effects.parse_min_effect`)."""
    options = AnalysisOptions(confidence=confidence, n_resamples=n_resamples, seed=seed,
                              alpha=alpha, interval=interval, claims=claims, pairs=pairs,
                              declarations=declarations, min_effect=min_effect)
    return _complete(records, options, {})[0]


def write_statistics(records: pd.DataFrame, out_dir, tables: dict | None = None,
                     **options) -> dict:
    """Write the registered tables of :func:`analyse` (computed with ``options`` unless
    given) as ``NAME.csv`` into ``out_dir`` atomically; returns ``{name: path}``."""
    from xai_bench.storage.atomic_io import ensure_dir, write_csv

    tables = analyse(records, **options) if tables is None else tables
    out_dir = Path(ensure_dir(out_dir))
    return {name: write_csv(out_dir / f"{name}.csv", tables[name])
            for name in TABLES if name in tables}


# ------------------------------------------------------------------------------ reading

def run_min_effect(info: dict):
    """The ``--min-effect`` a run was analysed with (run.json's ``config``; None: none)."""
    return ((info or {}).get("config") or {}).get("min_effect")


#: columns added to stored tables after their first version (effect sizes, --min-effect)
_ADDED_LATER = ("effect_size", "negligible", "diff_ci_low", "diff_ci_high")


def _current(path: Path, table: StatisticsTable) -> bool:
    """False for a table written by an earlier version (it lacks only columns added since):
    it is produced again from the run's records rather than refused. Any other lack is
    left to :func:`_read_stored` to name."""
    try:
        header = set(pd.read_csv(path, nrows=0).columns)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError,
            pd.errors.EmptyDataError):
        return True
    missing = [c for c in table.columns if c not in header]
    return not missing or not all(c in _ADDED_LATER for c in missing)


def run_seed(info: dict) -> int:
    """The seed a run was made with (run.json's ``seeds``, else its ``config``; 0 when
    neither holds a non-negative integer)."""
    info = info or {}
    for value in ((info.get("seeds") or {}).get("seed"), (info.get("config") or {}).get("seed")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


_NUMBERS = ("mean", "ci_low", "ci_high", "estimate", "tau", "p_value", "p_holm", "best_mean",
            "diff", "diff_ci_low", "diff_ci_high", "effect_size", "std", "min", "max", "range",
            "share_first")
_TEXTS = ("text", "detail", "twin", "model", "runner_up", "tied", "group", "best")


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """A table as its readers expect it whether read from CSV or just computed: replicates
    as int, numbers as float (NaN for blanks), texts without missing values."""
    table = table.copy()
    if "replicate" in table:
        table["replicate"] = pd.to_numeric(table["replicate"], errors="coerce") \
            .fillna(0).astype(int)
    for col in _NUMBERS:
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in _TEXTS:
        if col in table:
            table[col] = table[col].astype(object).where(table[col].notna(), "")
    return table


#: further number columns of the stored tables (counts, ranks, the runner-up's numbers)
_MORE_NUMBERS = ("n", "n_methods", "n_replicates", "n_first", "rank", "mean_a", "mean_b",
                 "best_ci_low", "best_ci_high", "runner_up_mean", "runner_up_ci_low",
                 "runner_up_ci_high")
#: the columns whose values identify one row of a stored table (a repeat is a duplicate)
_ROW_KEYS = {"summary": ("model", "method", "metric", "replicate")}


def _read_stored(path: Path, table: StatisticsTable) -> pd.DataFrame:
    """A stored statistics table, checked: its columns, numbers where numbers belong (blank
    is allowed: an undefined interval), ``higher_is_better`` a boolean, no repeated row;
    the first bad row is a one-line :class:`ResultsError` naming the file and line."""
    frame = read_table(path, table.columns)
    numbers = [c for c in (*_NUMBERS, *_MORE_NUMBERS, "replicate") if c in frame]
    frame = check_numbers(frame, path, numbers)
    frame = check_booleans(frame, path, "higher_is_better", blank=True)
    key = list(_ROW_KEYS.get(table.name, ()))
    if key and frame.duplicated(subset=key).any():
        index = frame.duplicated(subset=key).idxmax()
        raise ResultsError(f"{path} line {frame.index.get_loc(index) + 2}: a second row for "
                           f"{'/'.join(str(frame.at[index, c]) for c in key)} "
                           f"({', '.join(key)}); remove it or rerun the `xai-bench run` "
                           f"command that made it")
    return frame


def read_statistics(run_dir, records: pd.DataFrame, info: dict) -> dict:
    """The statistics tables of a run directory as DataFrames by name (every registered table
    that applies to the run). Tables the directory lacks (a run written before they
    existed) are computed now from ``records`` and the tables it has, with the run's seed,
    the paper's claims and the run's ``declarations``; ``tables["computed"]`` names them
    (a tuple), or is False when every table was read. A table that cannot be read is a
    one-line :class:`~xai_bench.storage.results.ResultsError`."""
    run_dir = Path(run_dir)
    info = info or {}
    stored = {name: _typed(_read_stored(run_dir / f"{name}.csv", table))
              for name, table in TABLES.items()
              if (run_dir / f"{name}.csv").is_file() and _current(run_dir / f"{name}.csv", table)}
    options = AnalysisOptions(seed=run_seed(info), claims=True,
                              declarations=info.get("declarations"),
                              min_effect=run_min_effect(info))
    try:
        tables, computed = _complete(records, options, stored)
    except XaiBenchError as e:
        raise ResultsError(f"{run_dir / 'records.csv'}: the statistics cannot be computed "
                           f"({' '.join(str(e).split())}); rerun `xai-bench run`") from None
    tables = {name: table if name in stored else _typed(table)
              for name, table in tables.items()}
    tables["computed"] = tuple(computed) or False
    return tables

