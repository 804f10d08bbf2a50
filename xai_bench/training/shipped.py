"""The default models shipped inside the package (``xai_bench/weights/``), so that a first
``xai-bench run`` on a fresh machine needs no training.

``weights/manifest.json`` lists, per model, the checkpoint file, its sha256 and what decides
the weights (model configuration, data set, recipe with its seed); the checkpoint itself
carries the rest of its metadata (recipe name, test accuracy, provenance of the training run).
:func:`shipped_checkpoint` hands out a shipped file only for exactly what it was trained for:
replicate 0 of the model's default recipe on the default data set, with the default
configuration. Everything else (other replicates, recipes, epochs, model arguments, data
sets) is trained on first use and cached, as before.

The shipped files are made by the project's own ``xai-bench train`` and registered here by
``benchmarks/shipped_models.py --write``, which also retrains them from the recorded recipe
and says how close the retrained models come. The test suite checks that each file matches
its sha256, loads with ``weights_only=True`` and still gives its recorded test accuracy on the
embedded test split (so a change to the data or model code cannot leave a stale file).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SHIPPED_DIR", "MANIFEST", "read_manifest", "shipped_checkpoint", "manifest_entry"]

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"
MANIFEST = SHIPPED_DIR / "manifest.json"


def read_manifest(path: Path = MANIFEST) -> dict:
    """``{model name: entry}`` (empty when nothing is shipped)."""
    if not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text())["models"]


def _plain(obj):
    return json.loads(json.dumps(obj, default=str))


def shipped_checkpoint(name: str, dataset_spec: str, recipe, config: dict,
                       replicate: int = 0, manifest: Path = MANIFEST) -> Path | None:
    """The shipped checkpoint of ``name`` when it was trained for exactly this request
    (``dataset_spec``, ``recipe`` incl. its seed, model ``config``, replicate 0) and its file
    matches the recorded sha256; else None (the caller trains)."""
    from xai_bench.storage.identity import file_sha256

    entry = read_manifest(manifest).get(name)
    if entry is None or replicate != 0 or entry["dataset"] != str(dataset_spec):
        return None
    if entry["recipe"] != _plain(recipe.to_dict()) or entry["model_config"] != _plain(config):
        return None
    path = Path(manifest).parent / entry["file"]
    if not path.is_file() or file_sha256(path) != entry["sha256"]:
        return None
    return path


def manifest_entry(path: Path) -> dict:
    """The manifest entry of a checkpoint written by ``xai-bench train``."""
    from xai_bench.storage.checkpoint import checkpoint_info
    from xai_bench.storage.identity import file_sha256

    meta = checkpoint_info(path)
    metrics = meta.get("metrics") or {}
    return _plain(dict(file=Path(path).name, sha256=file_sha256(path), dataset=meta["dataset"],
                       model_config=meta["model_config"], recipe=meta["recipe"],
                       recipe_name=meta.get("recipe_name"),
                       test_accuracy=metrics.get("test_accuracy"),
                       train_time_s=metrics.get("train_time_s"),
                       trained=(meta.get("provenance") or {}).get("timestamp_utc"),
                       git_sha=(meta.get("provenance") or {}).get("git_sha")))
