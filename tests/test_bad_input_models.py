"""Bad model files (issue 22): a damaged shipped weight file, a checkpoint whose model
configuration asks for an enormous model (or one its weights do not hold), and pickles that
name the global they would have loaded.

The catalogue's format (as in tests/test_bad_input.py): every command-line case ends with exit
code 2 and exactly one ``Error: ...`` line that names the problem and the fix, no traceback,
and nothing written. Nothing is trained (the training loop is patched to fail the test) and
the real shipped files are never touched: the damaged one is a copy, found through a patched
manifest path.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import xai_bench
import xai_bench.training.shipped as shipped
from xai_bench.cli import main
from xai_bench.storage.checkpoint import CheckpointError, save_checkpoint
from xai_bench.storage.checkpoint_format import MAX_PARAMETERS, forbidden_global
from xai_bench.training import RECIPES
from catalogue import assert_one_line_error, files_under, isolate_caches

#: a tiny conventional ViT (untrained): fast to build, load and run
NANO = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=(8, 16))
QUICK = ["--n-grids", "2", "--n-images", "2", "--methods", "uniform",
         "--metric", "mask_localisation", "--no-progress", "--no-plots"]


class Payload:
    """A plain object: pickled by reference to its class, which weights-only loading refuses."""


class RunsSystem:
    def __reduce__(self):
        return (os.system, ("true",))


def _checkpoint(root: Path, name: str, **config) -> Path:
    """A tiny vit_nano checkpoint whose stored ``model_config`` is updated with ``config``
    (the weights stay those of the tiny model)."""
    torch.manual_seed(0)
    path = save_checkpoint(root / name, xai_bench.get_model("vit_nano", **NANO), "vit_nano",
                           "shapes", RECIPES["conventional-quick"], {})
    data = torch.load(path, weights_only=True)
    data["model_config"].update(config)
    torch.save(data, path)
    return path


def _pickle(root: Path, name: str, payload) -> Path:
    torch.save({"format": "xai-bench-checkpoint", "format_version": 1, "model": "vit_nano",
                "model_config": {}, "state_dict": {}, "payload": payload}, root / name)
    return root / name


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The bad files (created once), and a copy of the shipped weights with one byte of
    vit_nano's file flipped."""
    root = tmp_path_factory.mktemp("assets")
    weights = root / "weights"
    shutil.copytree(shipped.SHIPPED_DIR, weights,
                    ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    damaged = weights / shipped.read_manifest()["vit_nano"]["file"]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    return SimpleNamespace(
        root=root, manifest=weights / "manifest.json", damaged=damaged,
        # 34 billion parameters: a 137 GB allocation if it were built
        enormous=_checkpoint(root, "enormous.pt", embed_dim=65536),
        # 67 million parameters (buildable) against the tiny model's 14,538 stored
        inconsistent=_checkpoint(root, "inconsistent.pt", embed_dim=1024, depth=8,
                                 num_heads=8),
        system=_pickle(root, "system.pt", RunsSystem()),
        payload=_pickle(root, "payload.pt", Payload()))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory, assets):
    """Caches outside the user's home, the damaged copy as the shipped weights, and no
    training (an error must come before it)."""
    cache = tmp_path_factory.mktemp("cache")
    isolate_caches(monkeypatch, cache)
    monkeypatch.setattr(shipped, "MANIFEST", assets.manifest)
    import xai_bench.training.cache as cache_module
    import xai_bench.training.loop as loop

    def no_training(*args, **kwargs):
        raise AssertionError("training started: the error should have come first")

    monkeypatch.setattr(loop, "train_model", no_training)
    monkeypatch.setattr(cache_module, "train_and_save", no_training)





def run_args(*extra, untrained=True):
    def build(ctx):
        return ["run", "--models", "vit_nano", *(["--untrained"] if untrained else []), *QUICK,
                "--out", ctx.tmp / "results", "--name", "r",
                *(e(ctx) if callable(e) else e for e in extra)]
    return build


def explain_args(*extra):
    def build(ctx):
        return ["explain", "vit_nano", "--methods", "uniform", "--n-images", "1",
                *(e(ctx) if callable(e) else e for e in extra), "--out", ctx.tmp / "fig.png"]
    return build


def ckpt(attr):
    return lambda ctx: f"vit_nano={getattr(ctx.assets, attr)}"


def asset(attr):
    return lambda ctx: getattr(ctx.assets, attr)


SHIPPED_DAMAGED = ("vit_nano-shapes.pt", "do not match their recorded sha256",
                   "reinstall xai-bench", "delete the file")
ENORMOUS = ("enormous.pt", "model_config asks for a 'vit_nano' of 34.4 billion parameters",
            "MAX_PARAMETERS", "retrain")

CASES = [
    pytest.param(run_args(untrained=False), SHIPPED_DAMAGED, id="run-shipped-weights-damaged"),
    pytest.param(explain_args(), SHIPPED_DAMAGED, id="explain-shipped-weights-damaged"),
    pytest.param(run_args("--checkpoint", ckpt("enormous")), ENORMOUS,
                 id="run-checkpoint-enormous-config"),
    pytest.param(explain_args("--checkpoint", asset("enormous")), ENORMOUS,
                 id="explain-checkpoint-enormous-config"),
    pytest.param(run_args("--checkpoint", ckpt("inconsistent")),
                 ("inconsistent.pt", "but its weights hold 14,538",
                  "does not describe the weights"), id="run-checkpoint-config-not-its-weights"),
    pytest.param(run_args("--checkpoint", ckpt("system")),
                 ("system.pt", "pickled Python objects (", "system)"),
                 id="run-pickle-names-os-system"),
    pytest.param(explain_args("--checkpoint", asset("payload")),
                 ("payload.pt", "pickled Python objects (", ".Payload)"),
                 id="explain-pickle-names-its-class"),
]


@pytest.mark.parametrize("build, fragments", CASES)
def test_bad_model_file_is_one_line_and_writes_nothing(build, fragments, assets, tmp_path):
    ctx = SimpleNamespace(tmp=tmp_path, assets=assets)
    args = [str(a) for a in build(ctx)]
    before = files_under(tmp_path, assets.root)
    started = time.time()
    result = CliRunner().invoke(main, args)
    assert time.time() - started < 60, "the refusal came late"
    assert_one_line_error(result, fragments)
    added = files_under(tmp_path, assets.root) - before
    assert not added, f"created: {sorted(p for _, p in added)}"


def test_damaged_shipped_file_is_refused_before_training_and_a_removed_one_trains(assets,
                                                                                  tmp_path):
    with pytest.raises(CheckpointError, match="vit_nano-shapes.pt do not match"):
        xai_bench.training.cached_default_model("vit_nano", cache_dir=tmp_path, progress=False)
    copy = tmp_path / "weights"
    shutil.copytree(assets.manifest.parent, copy)
    (copy / assets.damaged.name).unlink()  # removed: what the message offers instead
    model = xai_bench.get_model("vit_nano")
    _, recipe = xai_bench.training.recipes.default_recipe(model, "shapes")
    assert shipped.shipped_checkpoint("vit_nano", "shapes", recipe, model.config,
                                      manifest=copy / "manifest.json") is None


def test_enormous_config_is_refused_without_building_it(assets, monkeypatch):
    """Through the API too; the model is never built off the meta device."""
    import xai_bench.models.vit as vit

    real, built_for_real = vit.ViT.__init__, []

    def watched(self, *args, **kwargs):
        if torch.empty(0).device.type != "meta":
            built_for_real.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(vit.ViT, "__init__", watched)
    for path, match in ((assets.enormous, "more than the 2.0 billion"),
                        (assets.inconsistent, "does not describe the weights")):
        started = time.time()
        with pytest.raises(CheckpointError, match=match):
            xai_bench.get_model("vit_nano", checkpoint=path)
        assert time.time() - started < 30
    assert built_for_real == []
    assert MAX_PARAMETERS == 2_000_000_000


@pytest.mark.parametrize("message, name", [
    ("Weights only load failed. WeightsUnpickler error: Unsupported global: GLOBAL "
     "builtins.open was not an allowed global by default. Please use `torch.serialization."
     "add_safe_globals([builtins.open])`", "builtins.open"),
    ("Weights only load failed.\n\nTrying to load unsupported GLOBAL posix.system whose module "
     "posix is blocked.\n\nCheck the documentation", "posix.system"),
    ("unsupported global: os.system was not an allowed global by default", "os.system"),
    ("Weights only load failed. Can only build Tensor, Parameter, OrderedDict or types "
     "allowlisted via `add_safe_globals`, but got <class 'pkg.Thing'>", "pkg.Thing"),
    ("Weights only load failed. Unsupported global: something new", "?"),
    ("PytorchStreamReader failed reading zip archive: failed finding central directory", None),
])
def test_forbidden_global_is_read_from_torchs_message(message, name):
    assert forbidden_global(message) == name
