"""The contract tables of ``docs/models.md`` (between its ``contract`` markers), generated
from the contracts themselves; a test keeps the page equal to :func:`contract_markdown`."""

from __future__ import annotations

from xai_bench.contracts.members import members_table
from xai_bench.contracts.method import METHOD_MEMBERS
from xai_bench.contracts.metric import METRIC_MEMBERS
from xai_bench.contracts.model import CAPABILITY_MEMBERS, ENCODINGS, MODEL_MEMBERS

__all__ = ["contract_markdown"]

_TITLES = {"attention": "**Attention** (`requires=(\"attention\",)`: rollout, finatt, gradsam, "
                        "gradcam, vit_cx)",
           "lrp": "**LRP** (`requires=(\"lrp\",)`, on top of attention: chefer_lrp, plrp)",
           "dynamic_linear": "**Dynamic linear** (`requires=(\"dynamic_linear\",)`: inherent)"}


def contract_markdown() -> str:
    parts = ["**Every model** (`xai_bench.contracts.model`; optional members take their "
             "default):", "", members_table(MODEL_MEMBERS), "",
             "Encodings (`encoding`; `decode` inverts them):", ""]
    parts += [f"- `{name}`: {what}" for name, what in ENCODINGS.items()] + [""]
    for name, members in CAPABILITY_MEMBERS.items():
        parts += [_TITLES[name] + ":", "", members_table(members), ""]
    parts += ["**Every method** (`xai_bench.contracts.method`; a plain function qualifies, "
              "declared with `@xai_bench.method`):", "", members_table(METHOD_MEMBERS), "",
              "**Every metric** (`xai_bench.contracts.metric`; subclass "
              "`xai_bench.metrics.Metric`, or a plain function declared with "
              "`@xai_bench.metric`):", "", members_table(METRIC_MEMBERS)]
    return "\n".join(parts)
