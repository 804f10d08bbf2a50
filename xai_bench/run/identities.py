"""Cell identities and why a stored cell is not reused.

A cell's **identity** is everything that determines its numbers: the model (checkpoint
SHA-256 — an xai-bench checkpoint or a plain state dict alike —, or the weights' digest for a
model object, or the seed of an untrained one, its ``--model-arg`` constructor arguments where
given, and the source of its code), the method and the metric (registered name, implementing class,
parameters *after defaults*, the source digest of their xai-bench modules or, for plugins,
their distribution and version and module file), the data set, and the run (seed, batch size,
device type, forward options, the versions of xai-bench, Python and torch and the source of the
seeding and inference code). A stored cell is reused exactly when its identity equals the new
one; otherwise :func:`stale_reason` says why in one line (``stale: intgrad parameters changed
(n_steps 50 → 20)``).
"""

from __future__ import annotations

import json

import torch

from xai_bench.storage.identity import differences, module_closure, python_identity, \
    source_digest
from xai_bench.version import VERSION

__all__ = ["run_identity", "cell_identity", "info_identity", "stale_reason", "describe",
           "plugin_of", "IDENTITY_FORMAT"]

#: the shape of an identity; raised when the layout of what identifies a cell changes (2: the
#: package's modules moved into subpackages, so every source digest changed). A stored cell of
#: another format is recomputed once, with one reason for all of them.
IDENTITY_FORMAT = 2


def run_identity(config, device: str) -> dict:
    """The identity leaves every cell of the run shares."""
    harness = sorted(set(module_closure("xai_bench.compute.seeding"))
                     | set(module_closure("xai_bench.compute.inference")))
    return {"format": IDENTITY_FORMAT, "seed": config.seed, "batch_size": config.batch_size,
            "device": torch.device(device).type, "xai_bench": VERSION,
            **python_identity(), **config.forward_spec(), "harness": source_digest(harness)}


def as_json(obj):
    """``obj`` as it reads back from a JSON file (tuples become lists, keys strings), so a
    stored identity compares equal to a freshly computed one."""
    return json.loads(json.dumps(obj, default=repr))


def cell_identity(model: dict, method: dict, metric: dict, data: dict, run: dict) -> dict:
    return as_json({"model": model, "method": method, "metric": metric, "data": data,
                    "run": run})


def info_identity(model: dict, data: dict, run: dict) -> dict:
    """The identity of a model's info cell (its card and test accuracy)."""
    return as_json({"model": model, "data": data, "run": run})


def stale_reason(entry, problem, ident, model, method, metric):
    """None to reuse the stored cell, else why it is recomputed ('' for a new cell)."""
    if problem:
        return f"recomputed: {problem}"
    if entry is None:
        return ""
    if entry["identity"] != ident:
        stored = (entry["identity"].get("run") or {}).get("format", 1)
        if stored != IDENTITY_FORMAT:
            return (f"stale: written by an earlier xai-bench (identity format {stored} → "
                    f"{IDENTITY_FORMAT}); computed once more")
        return "stale: " + "; ".join(describe(d, model, method, metric)
                                     for d in differences(entry["identity"], ident)[:3])
    if any(r.get("status") == "error" for r in entry.get("records", [])):
        return "retried: ended in an error last time"
    return None


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                           for c in value):
        return value[:10]  # a sha256
    return text if len(text) <= 40 else text[:37] + "..."


def describe(diff, model, method, metric) -> str:
    """One phrase for one changed identity leaf ``(path, old, new)``."""
    path, old, new = diff
    head = path[0]
    who = {"model": f"model {model}", "method": method, "metric": metric}.get(head, head)
    leaf = path[-1]
    change = f"({_short(old)} → {_short(new)})"
    if head in ("method", "metric") and len(path) > 2 and path[1] == "params":
        return f"{who} parameters changed ({'.'.join(map(str, path[2:]))} {_short(old)} → " \
               f"{_short(new)})"
    if head == "model" and leaf == "checkpoint_sha256":
        return f"checkpoint of {model} changed (sha256 {_short(old)} → {_short(new)})"
    if head == "model" and leaf == "weights":
        return f"weights of {model} changed"
    if head == "model" and len(path) > 1 and path[1] == "args":
        key = ".".join(map(str, path[2:])) or "all"
        return f"model {model} arguments changed ({key} {_short(old)} → {_short(new)})"
    if len(path) > 1 and path[1] == "code":
        if leaf == "version":
            return f"{who} version changed {change}"
        if leaf == "source":
            return f"{who} source changed"
        return f"{who} implementation changed ({leaf} {_short(old)} → {_short(new)})"
    if head == "method" and leaf == "load_error":
        return f"{method} plugin load state changed"
    if head == "data":
        return "data set changed"
    if head == "run":
        if leaf == "harness":
            return "xai-bench's seeding/inference code changed"
        return f"{leaf.replace('_', ' ')} changed {change}"
    return f"{'.'.join(map(str, path))} changed {change}"


def plugin_of(identity: dict) -> dict | None:
    """What run.json records of a method or metric that is not xai-bench's own: its
    distribution, version and class (None for a built-in)."""
    code = identity.get("code") or {}
    if code.get("package") == "xai-bench" or not code:
        return None
    return {"distribution": code.get("distribution"), "version": code.get("version"),
            "class": code.get("class")}
