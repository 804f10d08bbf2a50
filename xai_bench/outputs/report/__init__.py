"""One self-contained HTML page per run directory: ``RUN_DIR/report.html``.

:func:`report_html` reads a run directory (records, curves, run.json, examples, the
statistics tables), builds the run's summary once (:mod:`xai_bench.outputs.summary`, the
structure that summary.md and the terminal render too) and returns one page that a reader
can open offline, mail or print:

1. the title (run, data set, date) and *the answer*: the best method per (metric, model) —
   or the rank group of methods that tie with it — with its mean, 95 % interval, n and
   verdict, and a warning where n is small or the explained images fall on one class;
2. the paper's claims (holds / fails / inconclusive, with their intervals), only when the
   run has a B-cos model and its conventional twin;
3. per metric, from its card: what it measures and its direction, Fig. 6 (every method's
   mean with its 95 % interval), and the table of means with the best mean and the rank
   groups marked (collapsed);
4. the models (family, size, accuracy, checkpoint and its SHA-256) and the classes of the
   images the perturbation and sanity metrics explained;
5. examples: the Fig. 7 grids and, per (model, method), the samples it scored best and worst
   on (for every metric that keeps a gallery; one drawn, the others one line each);
6. the perturbation curves, the sanity checks, metric agreement and the replicates;
7. provenance: the command that reproduces the run, versions, seeds, parameters, per-cell
   timings and every cell that was skipped or ended in an error, with its message.

The long parts are ``<details>``: closed on load, opened by a click, and all opened by the
page's script before printing (and closed again after), so a printout holds every number.

The figures are those of :func:`xai_bench.outputs.plots.plot_run`, embedded as ``data:``
URIs. The page loads nothing from anywhere: no web fonts, scripts or style sheets; CSS and
the few lines of JavaScript that sort a table by its clicked header are inline.

:func:`write_report` reads and checks every input before it writes one file, atomically.
Modules: :mod:`.reading` (the inputs), :mod:`.answer`, :mod:`.sections`, :mod:`.galleries`,
:mod:`.provenance`, :mod:`.html`, :mod:`.style`,
:mod:`.page`.
"""

from xai_bench.outputs.report.page import REPORT, report_html, write_report
# the command line is rebuilt where the run's options are declared
from xai_bench.run.config import reproduce_command

__all__ = ["REPORT", "report_html", "write_report", "reproduce_command"]
