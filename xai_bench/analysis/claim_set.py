"""Claim sets: the paper's claims, or a user's, as data (a JSON file), parsed and validated.

A claim set is a JSON file (the default: ``xai_bench/analysis/claims_paper.json``)::

    {"version": 1,
     "claims": [
       {"id": "a", "kind": "best_method", "metric": "grid_pointing_game",
        "method": "inherent", "text": "..."},
       ...]}

Fields of a claim: ``id`` (unique), ``kind`` (one of :data:`KINDS`), ``metric`` and
``text`` (required); ``method`` (required by ``best_method`` and ``ratio_to_twin_best``);
``models`` (a glob or list of globs selecting the claim's models; default: the B-cos models,
i.e. names starting with ``bcos_`` and the keys of ``pairs``); ``exclude`` (methods left out
when picking the claim model's best; default the run's baselines: the methods whose card
declares ``kind="baseline"``) and ``twin_exclude`` (the same for the twin; default the
baselines, plus ``method`` for ``ratio_to_twin_best``). How claims are decided:
:mod:`xai_bench.analysis.claims`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from xai_bench.contracts.cards import Cards
from xai_bench.errors import ConfigError

__all__ = ["Claim", "KINDS", "PAPER_CLAIMS", "load_claims", "parse_claims",
           "registered_metrics", "registered_baselines"]

KINDS = ("best_method", "ratio_to_twin_best", "best_vs_twin_best")
PAPER_CLAIMS = Path(__file__).with_name("claims_paper.json")
_FIELDS = {"id", "kind", "metric", "text", "method", "models", "exclude", "twin_exclude"}
_NEEDS_METHOD = ("best_method", "ratio_to_twin_best")


def registered_metrics() -> list:
    """The names of the registered metrics (the metric names a claim file may use)."""
    from xai_bench.registry import METRICS

    return METRICS.list()


def registered_baselines() -> tuple:
    """The registered methods whose card declares ``kind="baseline"``, in their declared
    place: the baselines of a claim that is not evaluated on a run."""
    from xai_bench.registry import METHODS

    cards = Cards()
    baselines = [card for card in map(cards.method, METHODS.list()) if card.is_baseline]
    baselines.sort(key=lambda c: (c.place is None, c.place or 0, c.name))
    return tuple(card.name for card in baselines)


@dataclass(frozen=True)
class Claim:
    """One claim (see the module docstring for the fields). ``exclude``/``twin_exclude``
    None: the baselines (those of the run when evaluated, else the registered ones)."""

    id: str
    kind: str
    metric: str
    text: str
    method: str | None = None
    models: tuple | None = None
    exclude: tuple | None = None
    twin_exclude: tuple | None = None

    def excluded(self, baselines=None) -> tuple:
        """The methods left out when picking the claim model's best method; ``baselines``:
        the run's baselines (None: the registered ones)."""
        if self.exclude is not None:
            return self.exclude
        return registered_baselines() if baselines is None else tuple(baselines)

    def twin_excluded(self, baselines=None) -> tuple:
        """The methods left out when picking the twin's best method (``baselines`` as for
        :meth:`excluded`): the claim's own method too for ``ratio_to_twin_best``, whose
        factor compares it with the best of the *other* methods."""
        if self.twin_exclude is not None:
            return self.twin_exclude
        base = registered_baselines() if baselines is None else tuple(baselines)
        return base + ((self.method,) if self.kind == "ratio_to_twin_best" else ())


def _names(value, what: str, cid: str) -> tuple:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v
                                                       for v in value):
        raise ConfigError(f"claim '{cid}': {what} must be a name or a list of names, got "
                          f"{value!r}")
    return tuple(value)


def parse_claims(data, *, source: str = "claims", known_metrics=None) -> list[Claim]:
    """Claims from parsed JSON (``{"claims": [...]}`` or a bare list of claim objects, or
    :class:`Claim` objects), validated; ``known_metrics`` (default: the registered metrics;
    ``False``: no check) are the accepted metric names. Problems are a one-line
    :class:`ConfigError` naming the claim."""
    if isinstance(data, dict):
        extra = set(data) - {"version", "claims", "description"}
        if extra or "claims" not in data:
            raise ConfigError(f"{source}: expected an object with a 'claims' list (and "
                              f"optionally 'version', 'description'), got keys "
                              f"{', '.join(sorted(data)) or 'none'}")
        data = data["claims"]
    if not isinstance(data, (list, tuple)):
        raise ConfigError(f"{source}: 'claims' must be a list of claim objects, got "
                          f"{type(data).__name__}")
    known = None if known_metrics is False else set(
        registered_metrics() if known_metrics is None else known_metrics)
    claims, seen = [], set()
    for i, item in enumerate(data):
        if isinstance(item, Claim):
            item = {k: v for k, v in item.__dict__.items() if v is not None}
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: claim #{i + 1} must be an object, got "
                              f"{type(item).__name__}")
        cid = str(item.get("id", f"#{i + 1}"))
        if not isinstance(item.get("id"), str) or not item["id"]:
            raise ConfigError(f"{source}: claim {cid} needs an 'id' (a non-empty string)")
        if cid in seen:
            raise ConfigError(f"{source}: claim id '{cid}' is used twice; give each claim its "
                              f"own id")
        seen.add(cid)
        unknown = set(item) - _FIELDS
        if unknown:
            raise ConfigError(f"{source}: claim '{cid}' has unknown field(s) "
                              f"{', '.join(sorted(unknown))}; allowed: "
                              f"{', '.join(sorted(_FIELDS))}")
        kind = item.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{source}: claim '{cid}' has unknown kind {kind!r}; use one of "
                              f"{', '.join(KINDS)}")
        metric = item.get("metric")
        if not isinstance(metric, str) or not metric:
            raise ConfigError(f"{source}: claim '{cid}' needs a 'metric' (a metric name)")
        if known is not None and metric not in known:
            raise ConfigError(f"{source}: claim '{cid}' names the unknown metric '{metric}'; "
                              f"use one of {', '.join(sorted(known))}")
        method = item.get("method")
        if kind in _NEEDS_METHOD and (not isinstance(method, str) or not method):
            raise ConfigError(f"{source}: claim '{cid}' of kind {kind} needs a 'method' "
                              f"(a method name)")
        if method is not None and not isinstance(method, str):
            raise ConfigError(f"{source}: claim '{cid}': 'method' must be a method name")
        text = item.get("text", "")
        if not isinstance(text, str):
            raise ConfigError(f"{source}: claim '{cid}': 'text' must be a string")
        models = item.get("models")
        claims.append(Claim(
            id=cid, kind=kind, metric=metric, text=text or f"{kind} on {metric}",
            method=method if kind in _NEEDS_METHOD else None,
            models=None if models is None else _names(models, "'models'", cid),
            exclude=None if item.get("exclude") is None
            else _names(item["exclude"], "'exclude'", cid),
            twin_exclude=None if item.get("twin_exclude") is None
            else _names(item["twin_exclude"], "'twin_exclude'", cid)))
    return claims


def load_claims(path=None, *, known_metrics=None) -> list[Claim]:
    """The claims of a JSON file (default: the paper's, ``xai_bench/analysis/claims_paper.json``);
    see :func:`parse_claims`."""
    path = PAPER_CLAIMS if path is None else Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"claims file {path} not found; pass the path of a JSON claims "
                          f"file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"claims file {path} cannot be read ({type(e).__name__}); pass a "
                          f"readable JSON file") from None
    except ValueError as e:
        raise ConfigError(f"claims file {path} is not valid JSON ({' '.join(str(e).split())}); "
                          f"fix the file") from None
    return parse_claims(data, source=str(path), known_metrics=known_metrics)
