"""A catalogue of bad input to the command line (``run``, ``train``, ``plot``, ``explain``,
``info``, ``list``).

Every case must end with exit code 2 and exactly one ``Error: ...`` line that names the problem,
no traceback, and nothing written: the set of files and directories under the test's
directories is the same before and after (no records.csv, run.json, *.png, checkpoint or
``cells/`` left behind). Nothing is trained: runs use ``--untrained`` or tiny untrained
checkpoints; training and the default-model cache are patched to fail the test if reached.
"""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.storage.checkpoint import CheckpointError, save_checkpoint
from xai_bench.cli import main
from xai_bench.training import RECIPES
from catalogue import assert_one_line_error, files_under, isolate_caches

#: a tiny conventional ViT (untrained): fast to build, load and run
NANO = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=(8, 16))
MARKER = "PWNED-by-pickle"
RUN_NAME = "r"
#: the options of a tiny positive run (everything a bad-input case does not change)
QUICK = ["--n-grids", "2", "--n-images", "2", "--methods", "uniform",
         "--metric", "mask_localisation", "--no-progress", "--no-plots"]


class _CodeOnLoad:
    """Unpickling this object (``torch.load(weights_only=False)``) would create a file: the
    proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _png(path: Path, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), colour).save(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Checkpoints (good and bad), a corrupt image folder and a finished run, shared by the
    cases (created once; the cases check that nothing is added here either)."""
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    model = xai_bench.get_model("vit_nano", **NANO)
    recipe = RECIPES["conventional-quick"]
    ckpt = save_checkpoint(root / "vit_nano.pt", model, "vit_nano", "shapes", recipe,
                           {"test_accuracy": 0.0})
    (root / "empty.pt").write_bytes(b"")
    (root / "notes.pt").write_text("these are my notes, not a checkpoint\n")
    (root / "truncated.pt").write_bytes(ckpt.read_bytes()[:100])
    # the stored config says embed_dim=32, the weights come from an embed_dim=48 model
    data = torch.load(ckpt, weights_only=True)
    data["state_dict"] = xai_bench.get_model("vit_nano", **{**NANO, "embed_dim": 48}).state_dict()
    torch.save(data, root / "wrong_dim.pt")
    # a pickle that would create MARKER when loaded with weights_only=False
    torch.save({"format": "xai-bench-checkpoint", "format_version": 1, "model": "vit_nano",
                "model_config": {}, "state_dict": {}, "payload": _CodeOnLoad(root / MARKER)},
               root / "pickle.pt")
    # an image folder with one undecodable image (sorted first, so every loader meets it)
    folder = root / "corrupt_folder"
    _png(folder / "a" / "1_good.png", (200, 30, 30))
    _png(folder / "b" / "2_good.png", (30, 30, 200))
    (folder / "a" / "0_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "bad_image.png").write_bytes(b"not an image at all")
    # a finished run (no plots) for the plot cases to copy and damage
    result = CliRunner().invoke(main, ["run", "--models", "vit_nano", "--checkpoint",
                                       f"vit_nano={ckpt}", *QUICK, "--out",
                                       str(root / "runs"), "--name", "good"])
    assert result.exit_code == 0, result.output
    assert (root / "runs" / "good" / "run.json").is_file()
    return SimpleNamespace(root=root, ckpt=ckpt, empty=root / "empty.pt",
                           text=root / "notes.pt", truncated=root / "truncated.pt",
                           wrong_dim=root / "wrong_dim.pt", pickle=root / "pickle.pt",
                           marker=root / MARKER, folder=folder,
                           bad_image=root / "bad_image.png", run=root / "runs" / "good")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """Caches outside the user's home; reaching the default-model cache is a test failure."""
    cache = tmp_path_factory.mktemp("cache")
    isolate_caches(monkeypatch, cache)
    import xai_bench.training as training

    def no_default_model(*args, **kwargs):
        raise AssertionError("the default-model cache was reached (it would train a model)")

    monkeypatch.setattr(training, "cached_default_model", no_default_model)



def _result_files(paths) -> list:
    return sorted(p for _, p in paths if Path(p).name in ("records.csv", "run.json", "cells")
                  or p.endswith((".png", ".pt", ".npz", ".csv")))




# ---- how the cases build their command lines -------------------------------------------------

def _value(item, ctx):
    return str(item(ctx)) if callable(item) else str(item)


def run_args(*extra):
    """``run`` of an untrained vit_nano with the quick options and ``--out <tmp>/results
    --name r``; ``extra`` (strings or ``ctx -> value``) comes last, so that it overrides."""
    def build(ctx):
        return ["run", "--models", "vit_nano", "--untrained", *QUICK, "--out", ctx.out,
                "--name", RUN_NAME, *(_value(e, ctx) for e in extra)]
    build.command = "run"
    return build


def train_args(*extra, out=None, may_train=False):
    def build(ctx):
        target = out(ctx) if out else ctx.tmp / "model.pt"
        model_args = []
        for key, value in NANO.items():
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            model_args += ["--model-arg", f"{key}={text}"]
        return ["train", "vit_nano", "--quiet", *model_args, "--out", target,
                *(_value(e, ctx) for e in extra)]
    build.command = "train"
    build.may_train = may_train  # the loop may start (and must fail on its first batch)
    return build


def cmd(*items):
    def build(ctx):
        return [_value(e, ctx) for e in items]
    build.command = items[0]
    return build


def ckpt_arg(attr):
    return lambda ctx: f"vit_nano={getattr(ctx.assets, attr)}"


def asset(attr):
    return lambda ctx: getattr(ctx.assets, attr)


def folder_spec(ctx):
    return f"imagefolder:{ctx.assets.folder}"


def with_setup(setup, build):
    """``setup(ctx)`` runs before the 'before' snapshot is taken."""
    def wrapped(ctx):
        setup(ctx)
        return build(ctx)
    wrapped.command = build.command
    wrapped.may_train = getattr(build, "may_train", False)
    return wrapped


def read_only_dir(ctx):
    ro = ctx.tmp / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    ctx.cleanup.append(lambda: ro.chmod(0o700))
    if os.access(ro, os.W_OK):
        pytest.skip("a read-only directory is writable for this user (root)")


def a_file(ctx):
    (ctx.tmp / "a_file.txt").write_text("a file, not a directory")


def copy_run(damage=None):
    def setup(ctx):
        target = ctx.tmp / "run"
        shutil.copytree(ctx.assets.run, target)
        if damage:
            damage(target)
    return setup


def damage_records(run):
    (run / "records.csv").write_bytes(bytes(range(256)) * 4)


def damage_examples(run):
    (run / "examples.npz").write_bytes(b"PK\x03\x04" + b"half an archive" * 10)


def damage_run_json(run):
    text = (run / "run.json").read_text()
    (run / "run.json").write_text(text[:len(text) // 2])


def run_dir(ctx):
    return ctx.tmp / "run"


DID_YOU_MEAN = "did you mean"

CASES = [
    # ---- run: names ----------------------------------------------------------------------
    pytest.param(run_args("--models", "vit_nan0"), ("unknown model 'vit_nan0'", DID_YOU_MEAN,
                                                     "vit_nano"), id="run-unknown-model"),
    pytest.param(run_args("--methods", "unifrom"), ("unknown method 'unifrom'", DID_YOU_MEAN,
                                                    "uniform"), id="run-unknown-method"),
    pytest.param(run_args("--metric", "mask_localisaton"),
                 ("unknown metric 'mask_localisaton'", DID_YOU_MEAN, "mask_localisation"),
                 id="run-unknown-metric"),
    pytest.param(run_args("--models", ""), ("no models given",), id="run-empty-models"),
    pytest.param(run_args("--methods", ","), ("no methods given",), id="run-empty-methods"),
    # ---- run: numbers --------------------------------------------------------------------
    pytest.param(run_args("--n-grids", "0"), ("--n-grids",), id="run-n-grids-0"),
    pytest.param(run_args("--batch-size", "-1"), ("--batch-size",), id="run-batch-size-negative"),
    pytest.param(run_args("--epochs", "0"), ("--epochs",), id="run-epochs-0"),
    # ---- run: --method-arg ---------------------------------------------------------------
    pytest.param(run_args("--methods", "intgrad", "--method-arg", "intgrad"),
                 ("--method-arg", "intgrad"), id="run-method-arg-without-value"),
    pytest.param(run_args("--methods", "intgrad", "--method-arg", "intgrad.=3"),
                 ("METHOD.KEY=VALUE", "intgrad."), id="run-method-arg-empty-key"),
    pytest.param(run_args("--methods", "intgrad", "--method-arg", "=3"),
                 ("--method-arg", "=3"), id="run-method-arg-nothing-before-equals"),
    pytest.param(run_args("--methods", "uniform,intgrad", "--method-arg", "intgrd.n_steps=5"),
                 ("unknown method 'intgrd'", DID_YOU_MEAN, "intgrad"),
                 id="run-method-arg-unknown-method"),
    pytest.param(run_args("--methods", "intgrad", "--method-arg", "intgrad.foo=1"),
                 ("unknown parameter 'foo'", "intgrad", "n_steps"),
                 id="run-method-arg-unknown-key"),
    pytest.param(run_args("--methods", "intgrad", "--method-arg", "intgrad.n_steps=abc"),
                 ("n_steps", "must be an integer", "'abc'"), id="run-method-arg-wrong-type"),
    pytest.param(run_args("--methods", "uniform", "--method-arg", "intgrad.n_steps=5"),
                 ("--method-arg for 'intgrad'", "add it to --methods"),
                 id="run-method-arg-for-a-method-not-run"),
    # ---- run: --metric-arg ---------------------------------------------------------------
    pytest.param(run_args("--metric-arg", "grid_pointing_game"),
                 ("--metric-arg", "METRIC.KEY=VALUE"), id="run-metric-arg-without-value"),
    pytest.param(run_args("--metric-arg", "grid_pointing_gme.seed=1"),
                 ("unknown metric 'grid_pointing_gme'", DID_YOU_MEAN, "grid_pointing_game"),
                 id="run-metric-arg-unknown-metric"),
    pytest.param(run_args("--metric", "grid_pointing_game", "--metric-arg",
                          "grid_pointing_game.threshold=0"),
                 ("unknown parameter 'threshold'", "confidence_threshold"),
                 id="run-metric-arg-unknown-key"),
    pytest.param(run_args("--metric", "grid_pointing_game", "--metric-arg",
                          "grid_pointing_game.confidence_threshold=1.5"),
                 ("metric 'grid_pointing_game'", "confidence_threshold", "1.5"),
                 id="run-metric-arg-bad-value"),
    pytest.param(run_args("--metric", "deletion", "--metric-arg",
                          "grid_pointing_game.confidence_threshold=0"),
                 ("--metric-arg for 'grid_pointing_game'", "add it to --metric"),
                 id="run-metric-arg-for-a-metric-not-run"),
    # ---- run: checkpoints ----------------------------------------------------------------
    pytest.param(run_args("--checkpoint", lambda c: f"bcos_vit_nano={c.assets.ckpt}"),
                 ("--checkpoint given for bcos_vit_nano", "does not benchmark"),
                 id="run-checkpoint-for-a-model-not-run"),
    pytest.param(run_args("--checkpoint", "vit_nano"), ("--checkpoint", "key=value"),
                 id="run-checkpoint-without-path"),
    pytest.param(run_args("--checkpoint", lambda c: f"vit_nano={c.tmp / 'missing.pt'}"),
                 ("missing.pt", "does not exist"), id="run-checkpoint-missing"),
    pytest.param(run_args("--checkpoint", ckpt_arg("empty")), ("empty.pt", "cannot be read"),
                 id="run-checkpoint-empty-file"),
    pytest.param(run_args("--checkpoint", ckpt_arg("text")), ("notes.pt", "cannot be read"),
                 id="run-checkpoint-text-file"),
    pytest.param(run_args("--checkpoint", ckpt_arg("truncated")),
                 ("truncated.pt", "cannot be read", "truncated"), id="run-checkpoint-truncated"),
    pytest.param(run_args("--models", "bcos_vit_nano", "--checkpoint",
                          lambda c: f"bcos_vit_nano={c.assets.ckpt}"),
                 ("holds model 'vit_nano', not 'bcos_vit_nano'",),
                 id="run-checkpoint-of-another-architecture"),
    pytest.param(run_args("--checkpoint", ckpt_arg("wrong_dim")),
                 ("wrong_dim.pt", "does not fit model 'vit_nano'", "size mismatch"),
                 id="run-checkpoint-other-embed-dim"),
    pytest.param(run_args("--checkpoint", ckpt_arg("pickle")),
                 ("pickle.pt", "pickled Python objects"), id="run-checkpoint-pickle"),
    # ---- run: data sets ------------------------------------------------------------------
    pytest.param(run_args("--dataset", "nope"), ("unknown data set 'nope'",),
                 id="run-dataset-unknown"),
    pytest.param(run_args("--dataset", "imagefolder:/does/not/exist"),
                 ("/does/not/exist", "does not exist"), id="run-dataset-missing-folder"),
    pytest.param(run_args("--dataset", "shapes:n=abc"), ("'n'", "must be an integer"),
                 id="run-dataset-bad-option"),
    pytest.param(run_args("--dataset", folder_spec), ("0_bad.png", "cannot be decoded"),
                 id="run-dataset-corrupt-image"),
    # ---- run: where results go -----------------------------------------------------------
    pytest.param(with_setup(a_file, run_args("--out", lambda c: c.tmp / "a_file.txt")),
                 ("a_file.txt", "is a file"), id="run-out-is-a-file"),
    pytest.param(with_setup(read_only_dir, run_args("--out", lambda c: c.tmp / "read-only" /
                                                    "results")),
                 ("read-only",), id="run-out-in-read-only-dir"),
    pytest.param(run_args("--out", "/proc/xai-bench-results"), ("/proc/xai-bench-results",),
                 id="run-out-under-proc"),
    pytest.param(with_setup(a_file, run_args("--out", lambda c: c.tmp / "a_file.txt" / "sub")),
                 ("a_file.txt",), id="run-out-below-a-file"),
    pytest.param(run_args("--name", "../escaped"), ("'../escaped'", "not a plain directory"),
                 id="run-name-escapes-out"),
    pytest.param(run_args("--name", "a/b"), ("'a/b'", "not a plain directory"),
                 id="run-name-with-slash"),
    # ---- train ---------------------------------------------------------------------------
    pytest.param(cmd("train", "vit_nan0", "--out", lambda c: c.tmp / "model.pt"),
                 ("unknown model 'vit_nan0'", DID_YOU_MEAN, "vit_nano"),
                 id="train-unknown-model"),
    pytest.param(train_args("--epochs", "0"), ("--epochs",), id="train-epochs-0"),
    pytest.param(train_args("--dataset", "nope"), ("unknown data set 'nope'",),
                 id="train-dataset-unknown"),
    pytest.param(train_args("--dataset", "imagefolder:/does/not/exist"),
                 ("/does/not/exist", "does not exist"), id="train-dataset-missing-folder"),
    pytest.param(train_args("--dataset", "shapes:n=abc"), ("'n'", "must be an integer"),
                 id="train-dataset-bad-option"),
    pytest.param(train_args("--dataset", folder_spec, "--epochs", "1", "--batch-size", "4",
                            may_train=True),
                 ("0_bad.png", "cannot be decoded"), id="train-dataset-corrupt-image"),
    pytest.param(with_setup(a_file, train_args(out=lambda c: c.tmp / "a_file.txt" / "m.pt")),
                 ("a_file.txt", "not a directory"), id="train-out-below-a-file"),
    pytest.param(train_args(out=lambda c: Path("/proc/xai-bench.pt")),
                 ("/proc/xai-bench.pt", "cannot write"), id="train-out-under-proc"),
    # ---- info ----------------------------------------------------------------------------
    pytest.param(cmd("info", lambda c: c.tmp / "missing.pt"), ("missing.pt", "does not exist"),
                 id="info-missing-checkpoint"),
    pytest.param(cmd("info", asset("empty")), ("empty.pt", "cannot be read"),
                 id="info-empty-checkpoint"),
    pytest.param(cmd("info", asset("text")), ("notes.pt", "cannot be read"),
                 id="info-text-file"),
    pytest.param(cmd("info", asset("truncated")), ("truncated.pt", "truncated"),
                 id="info-truncated-checkpoint"),
    pytest.param(cmd("info", asset("wrong_dim")), ("does not fit model 'vit_nano'",),
                 id="info-checkpoint-other-embed-dim"),
    pytest.param(cmd("info", asset("pickle")), ("pickle.pt", "pickled Python objects"),
                 id="info-pickle-checkpoint"),
    pytest.param(cmd("info", lambda c: c.tmp), ("is a directory",), id="info-on-a-directory"),
    pytest.param(cmd("info", asset("ckpt"), "--evaluate", folder_spec),
                 ("0_bad.png", "cannot be decoded"), id="info-evaluate-corrupt-image"),
    pytest.param(cmd("info", asset("ckpt"), "--evaluate", "nope"), ("unknown data set 'nope'",),
                 id="info-evaluate-unknown-dataset"),
    # ---- explain -------------------------------------------------------------------------
    pytest.param(cmd("explain", "vit_nano", "--checkpoint", asset("ckpt"), "--methods",
                     "uniform", "--n-images", "1", "--target", "99", "--out",
                     lambda c: c.tmp / "fig.png"),
                 ("--target 99", "not a class"), id="explain-target-99"),
    pytest.param(cmd("explain", "vit_micro", "--methods", "uniform", "--out",
                     lambda c: c.tmp / "fig.png"),
                 ("no checkpoint for 'vit_micro'", "--checkpoint PATH"),
                 id="explain-without-checkpoint-does-not-train"),
    pytest.param(cmd("explain", "vit_nano", "--checkpoint", asset("ckpt"), "--methods",
                     "unifrom", "--out", lambda c: c.tmp / "fig.png"),
                 ("unknown method 'unifrom'", DID_YOU_MEAN), id="explain-unknown-method"),
    pytest.param(cmd("explain", "bcos_vit_nano", "--checkpoint", asset("ckpt"), "--methods",
                     "uniform", "--out", lambda c: c.tmp / "fig.png"),
                 ("holds model 'vit_nano', not 'bcos_vit_nano'",),
                 id="explain-checkpoint-of-another-architecture"),
    pytest.param(cmd("explain", "vit_nano", "--checkpoint", asset("pickle"), "--out",
                     lambda c: c.tmp / "fig.png"),
                 ("pickled Python objects",), id="explain-pickle-checkpoint"),
    pytest.param(cmd("explain", "vit_nano", "--checkpoint", asset("ckpt"), "--methods",
                     "uniform", "--dataset", folder_spec, "--out", lambda c: c.tmp / "fig.png"),
                 ("0_bad.png", "cannot be decoded"), id="explain-dataset-corrupt-image"),
    pytest.param(cmd("explain", "vit_nano", "--checkpoint", asset("ckpt"), "--methods",
                     "uniform", asset("bad_image"), "--out", lambda c: c.tmp / "fig.png"),
                 ("bad_image.png", "cannot be decoded"), id="explain-corrupt-image-file"),
    # ---- plot ----------------------------------------------------------------------------
    pytest.param(cmd("plot", lambda c: c.tmp), ("no xai-bench run found",),
                 id="plot-dir-without-run"),
    pytest.param(with_setup(copy_run(damage_records), cmd("plot", run_dir)),
                 ("records.csv", "cannot be read"), id="plot-corrupt-records-csv"),
    pytest.param(with_setup(copy_run(damage_examples), cmd("plot", run_dir)),
                 ("examples.npz", "cannot be read"), id="plot-corrupt-examples-npz"),
    pytest.param(with_setup(copy_run(damage_run_json), cmd("plot", run_dir)),
                 ("run.json", "cannot be read"), id="plot-corrupt-run-json"),
    # ---- list ----------------------------------------------------------------------------
    pytest.param(cmd("list", "datasets", "nomatch"), ("no data-set spec matches 'nomatch'",),
                 id="list-datasets-nomatch"),
    pytest.param(cmd("list", "models", "nomatch"), ("no models match 'nomatch'",),
                 id="list-models-nomatch"),
]


@pytest.mark.parametrize("build, fragments", CASES)
def test_bad_input_is_one_line_and_writes_nothing(build, fragments, assets, tmp_path,
                                                  monkeypatch):
    ctx = SimpleNamespace(tmp=tmp_path, out=tmp_path / "results", assets=assets, cleanup=[])
    if not getattr(build, "may_train", False):  # the error must come before any training
        import xai_bench.training.loop as loop

        def no_training(*args, **kwargs):
            raise AssertionError("training started: the error should have come first")

        monkeypatch.setattr(loop, "train_model", no_training)
    try:
        args = [str(a) for a in build(ctx)]
        roots = (tmp_path, assets.root)
        before = files_under(*roots)
        result = CliRunner().invoke(main, args)
        after = files_under(*roots)
    finally:
        for undo in ctx.cleanup:
            undo()
    assert not assets.marker.exists(), "loading the pickle ran code"
    assert_one_line_error(result, fragments)
    added = after - before
    assert not _result_files(added), f"left behind: {_result_files(added)}"
    assert not added, f"created: {sorted(p for _, p in added)}"
    if build.command == "run":
        assert not (ctx.out / RUN_NAME).exists()
        assert not (tmp_path / "escaped").exists()


def test_catalogue_size():
    assert len(CASES) >= 36
    commands = {case.values[0].command for case in CASES}
    assert commands == {"run", "train", "plot", "explain", "info", "list"}


def test_get_model_refuses_a_pickle_checkpoint(assets):
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        xai_bench.get_model("vit_nano", checkpoint=assets.pickle)
    assert not assets.marker.exists()


def test_unicode_and_spaces_in_paths_work(assets, tmp_path):
    """Valid input under a path with non-ASCII characters and spaces: run, info and plot."""
    root = tmp_path / "résultats mit Leerzeichen"
    root.mkdir()
    ckpt = root / "modèle ü.pt"
    shutil.copy(assets.ckpt, ckpt)
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--models", "vit_nano", "--checkpoint",
                                  f"vit_nano={ckpt}", *QUICK, "--out", str(root / "sortie"),
                                  "--name", "lauf-ü"])
    assert result.exit_code == 0, result.output
    run = root / "sortie" / "lauf-ü"
    assert (run / "records.csv").is_file() and (run / "run.json").is_file()
    from xai_bench.storage.results import read_records

    records = read_records(run)
    assert set(records["status"]) == {"ok"} and len(records) == 2
    result = runner.invoke(main, ["info", str(ckpt)])
    assert result.exit_code == 0 and "vit_nano" in result.output, result.output
    result = runner.invoke(main, ["plot", str(run), "--out", str(root / "figures ä")])
    assert result.exit_code == 0, result.output
    assert (root / "figures ä" / "summary.md").is_file()


@pytest.mark.parametrize("message", [
    "Weights only load failed. WeightsUnpickler error: Unsupported global: GLOBAL os.system "
    "was not an allowed global by default.",
    "weights only load failed: unsupported global: global os.system was not an allowed global",
])
def test_pickle_is_recognised_whatever_the_case_of_torchs_message(message):
    from xai_bench.storage.checkpoint_format import _read_error

    error = _read_error(Path("x.pt"), RuntimeError(message))
    assert "pickled Python objects (os.system)" in str(error)
