"""Command line: ``xai-bench list|train|info|run|plot|report|explain``.

One module per command group: :mod:`~xai_bench.cli.listing` (list),
:mod:`~xai_bench.cli.train` (train, info), :mod:`~xai_bench.cli.run` (run, its options
generated from :class:`~xai_bench.run.config.RunConfig`), :mod:`~xai_bench.cli.outputs` (plot,
report, explain); :mod:`~xai_bench.cli.common` holds what they share. Anticipated errors
(unknown names, missing data or checkpoints, bad sizes) become a one-line ``Error: ...`` on
stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import click

from xai_bench.cli.common import (
    EXIT_USAGE, UsageError, dotted_params, friendly_errors, parse_key_values,
)
from xai_bench.cli.listing import list_cmd
from xai_bench.cli.outputs import explain, plot, report
from xai_bench.cli.run import run
from xai_bench.cli.train import info, train
from xai_bench.version import VERSION

__all__ = ["main", "UsageError", "friendly_errors", "parse_key_values", "dotted_params",
           "EXIT_USAGE"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="xai-bench")
def main():
    """xai-bench: explainability benchmark harness for (B-cos) vision transformers.

    \b
    Examples:
      xai-bench run                               # the quick suite on the embedded data
      xai-bench list models 'bcos_*'
      xai-bench train bcos_vit_nano --dataset shapes --out bcos.pt
      xai-bench plot results/
    """


for _command in (list_cmd, train, info, run, plot, report, explain):
    main.add_command(_command)
