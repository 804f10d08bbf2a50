"""``xai-bench list``: the registered models, methods, metrics and data-set specs."""

from __future__ import annotations

import fnmatch

import click

from xai_bench.cli.common import UsageError, friendly_errors
from xai_bench.registry import METHODS, METRICS, MODELS

__all__ = ["list_cmd"]


@click.command("list")
@click.argument("what", type=click.Choice(["models", "methods", "metrics", "datasets"]))
@click.argument("pattern", default="*")
@friendly_errors
def list_cmd(what, pattern):
    """List models, methods or metrics (glob PATTERN) with one sentence each, or data-set
    specs; plugins that fail to load are listed with their distribution and the reason.

    \b
    Example:
      xai-bench list models 'bcos_vit_*'
    """
    if what == "datasets":
        from xai_bench.data import list_datasets

        specs = {s: d for s, d in list_datasets().items() if fnmatch.fnmatchcase(s, pattern)}
        for spec, desc in specs.items():
            click.echo(f"{spec:18s} {desc}")
        if not specs:
            raise UsageError(f"no data-set spec matches '{pattern}'")
        return
    registry = {"models": MODELS, "methods": METHODS, "metrics": METRICS}[what]
    names = registry.list(pattern)
    failed = []
    for name in names:
        desc = registry.description(name)
        if name in registry.failures:
            failed.append(name)
            continue
        tags = ", ".join(f"{k}={v}" for k, v in _tags(registry, name).items())
        source = registry.source(name)
        origin = "" if source == "xai-bench" else f" [plugin: {source}]"
        click.echo(f"{name:22s} {tags:40s} {desc}{origin}".rstrip())
    prefixes = {p: d for p, d in registry.prefixes().items()
                if fnmatch.fnmatchcase(f"{p}:", pattern) or pattern in ("*", f"{p}:*")}
    for prefix, desc in prefixes.items():  # resolved on demand, so not listed one by one
        click.echo(f"{prefix + ':<name>':22s} {'(prefix)':40s} {desc}".rstrip())
    if failed:
        click.echo(f"\n{len(failed)} {what[:-1]} plugin(s) failed to load:")
        for name in failed:
            click.echo(f"  {name:20s} {registry.failures[name]}")
    for problem in registry.problems:
        if not any(problem == registry.failures.get(n) for n in failed):
            click.echo(f"warning: {problem}", err=True)
    if not names and not prefixes:
        raise UsageError(f"no {what} match '{pattern}'")


def _tags(registry, name) -> dict:
    """What ``xai-bench list`` shows of an entry besides its description: a method's kind and
    groups, a metric's category and direction (from their declarations), a model's registered facts."""
    if registry.kind == "method":
        card = registry.card(name)
        return {"kind": card.kind, **({"groups": "+".join(card.groups)} if card.groups else {}),
                **({"class_agnostic": True} if card.class_agnostic else {})}
    if registry.kind == "metric":
        card = registry.card(name)
        return {"category": card.category,
                **({"groups": "+".join(card.groups)} if card.groups else {}),
                "higher_is_better": card.higher_is_better}
    return {k: v for k, v in registry.meta(name).items()
            if k not in ("description", "source", "paper", "parameters")}
