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

A shipped file that is there but does not match its sha256 is a one-line
:class:`~xai_bench.storage.checkpoint_format.CheckpointError` naming the file, raised before
anything is trained (a damaged installation must not turn silently into minutes of training);
a shipped file that was removed is trained on first use, like any other default model.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SHIPPED_DIR", "MANIFEST", "read_manifest", "shipped_checkpoint", "check_shipped_file",
           "manifest_entry"]

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
                       replicate: int = 0, manifest: Path | None = None) -> Path | None:
    """The shipped checkpoint of ``name`` when it was trained for exactly this request
    (``dataset_spec``, ``recipe`` incl. its seed, model ``config``, replicate 0); None when
    nothing is shipped for it or its file was removed (the caller trains). A file that does
    not match its recorded sha256 is a :class:`CheckpointError`. ``manifest``: default
    :data:`MANIFEST`, looked up at call time."""
    manifest = MANIFEST if manifest is None else Path(manifest)
    entry = read_manifest(manifest).get(name)
    if entry is None or replicate != 0 or entry["dataset"] != str(dataset_spec):
        return None
    if entry["recipe"] != _plain(recipe.to_dict()) or entry["model_config"] != _plain(config):
        return None
    path = manifest.parent / entry["file"]
    if not path.is_file():
        return None
    check_shipped_file(path, entry["sha256"], name)
    return path


def check_shipped_file(path: Path, sha256: str, name: str) -> None:
    """A :class:`CheckpointError` unless the shipped file ``path`` has the recorded sha256."""
    from xai_bench.storage.checkpoint_format import CheckpointError
    from xai_bench.storage.identity import file_sha256

    found = file_sha256(path)
    if found != sha256:
        raise CheckpointError(f"shipped weights {path} do not match their recorded sha256 "
                              f"({found[:12]}… instead of {sha256[:12]}…): the file is damaged "
                              f"or was replaced; reinstall xai-bench (pip install "
                              f"--force-reinstall xai-bench), or delete the file to train "
                              f"'{name}' instead")


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
