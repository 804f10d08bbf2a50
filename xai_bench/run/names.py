"""What ``--models``, ``--methods`` and ``--metric`` name: comma-separated names, globs,
``all``, method groups and kinds, metric categories (:meth:`xai_bench.registry.Registry.groups`), or (through :func:`xai_bench.evaluate`) objects, resolved against
the registries."""

from __future__ import annotations

from xai_bench.registry import METRICS
from xai_bench.run.config import RunError

__all__ = ["split_names", "names_or_objects", "resolve_metrics"]


def split_names(spec) -> list:
    """Comma-separated strings split; objects kept."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        if isinstance(item, str):
            out += [p.strip() for p in item.split(",")]
        else:
            out.append(item)
    return out


def names_or_objects(kind: str, registry, spec) -> list:
    """The registered names (globs and ``all`` expanded, each once) and objects of ``spec``."""
    parts = split_names(spec)
    if not [p for p in parts if not isinstance(p, str) or p]:
        raise RunError(f"no {kind}s given; pass names, globs or 'all' "
                       f"(`xai-bench list {kind}s`)")
    out: list = []
    for part in parts:
        if isinstance(part, str):
            if part:
                out += [n for n in registry.resolve([part]) if n not in out]
        else:
            out.append(part)
    return out


def resolve_metrics(spec) -> list:
    """Metric names, globs, ``all``, a category (e.g. ``localisation``) or metric objects."""
    return names_or_objects("metric", METRICS, spec)
