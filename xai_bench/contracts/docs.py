"""The contract tables of ``docs/models.md`` (between its ``contract`` markers), generated
from the contracts themselves and the methods' declarations; a test keeps the page equal to
:func:`contract_markdown`."""

from __future__ import annotations

from xai_bench.contracts.members import members_table
from xai_bench.contracts.method import METHOD_MEMBERS
from xai_bench.contracts.metric import METRIC_MEMBERS
from xai_bench.contracts.model import CAPABILITY_MEMBERS, ENCODINGS, MODEL_MEMBERS, implied

__all__ = ["contract_markdown"]


def _capability_title(capability: str) -> str:
    """A capability's heading, with the built-in methods that declare they need it."""
    from xai_bench.registry import METHODS

    users = [name for name in METHODS.list() if METHODS.source(name) == "xai-bench"
             and capability in METHODS.card(name).requires]
    below = implied(capability)
    extra = f", on top of {', '.join(below)}" if below else ""
    return (f"**Capability `{capability}`** (methods with `requires=(\"{capability}\",)`"
            f"{extra}: {', '.join(users) or 'none'})")


def contract_markdown() -> str:
    parts = ["**Every model** (`xai_bench.contracts.model`; optional members take their "
             "default):", "", members_table(MODEL_MEMBERS), "",
             "Encodings (`encoding`; `decode` inverts them):", ""]
    parts += [f"- `{name}`: {what}" for name, what in ENCODINGS.items()] + [""]
    for name, members in CAPABILITY_MEMBERS.items():
        parts += [_capability_title(name) + ":", "", members_table(members), ""]
    parts += ["**Every method** (`xai_bench.contracts.method`; a plain function qualifies, "
              "declared with `@xai_bench.method`):", "", members_table(METHOD_MEMBERS), "",
              "**Every metric** (`xai_bench.contracts.metric`; subclass "
              "`xai_bench.metrics.Metric`, or a plain function declared with "
              "`@xai_bench.metric`):", "", members_table(METRIC_MEMBERS)]
    return "\n".join(parts)
