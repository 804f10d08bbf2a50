"""Declaring model builders next to their code, without importing the registry.

A builder module calls :func:`declare_model` (or uses the :func:`model` decorator) for each
builder it defines; :data:`xai_bench.registry.MODELS` imports the built-in model modules on
first use and registers every declaration (:func:`declared_models`) with its metadata. So a
model's source closure (what a cell's identity hashes) holds only model code, not the
registry.

A leaf module: it imports nothing of xai-bench.
"""

from __future__ import annotations

__all__ = ["ENTRY", "declare_model", "model", "declared_models"]

#: the attribute a declared builder carries: ``(name, metadata)``
ENTRY = "__xai_bench_model__"

_DECLARED: list = []  # builders, in declaration order


def declare_model(name: str, builder, **meta):
    """Declare ``builder`` (a callable returning the model) as model ``name`` with the
    metadata ``meta`` (``family``, ``size``, ``description``, ...; what
    ``MODELS.meta(name)`` returns). Returns ``builder``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    setattr(builder, ENTRY, (name, dict(meta)))
    _DECLARED.append(builder)
    return builder


def model(name: str | None = None, **meta):
    """Decorator form of :func:`declare_model`: ``@model("my_vit", family="bcos")`` (the
    name defaults to the function's)."""
    def decorate(builder):
        return declare_model(name or builder.__name__, builder, **meta)

    return decorate


def declared_models() -> list[tuple[str, object, dict]]:
    """``[(name, builder, metadata)]`` of every declaration so far, in declaration order."""
    out = []
    for builder in _DECLARED:
        name, meta = getattr(builder, ENTRY)
        out.append((name, builder, dict(meta)))
    return out
