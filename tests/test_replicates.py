"""Replicates: independently initialised copies of each model, per-replicate checkpoints."""

import functools

import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.storage.checkpoint import load_checkpoint
from xai_bench.cli import main
from xai_bench.errors import ConfigError
from xai_bench.storage.results import read_records
from xai_bench.run.runner import RunConfig, Runner

QUIET = dict(progress=False, log=lambda *_: None)


@pytest.fixture
def quick_training(monkeypatch, tmp_path):
    """The default models train for a few steps only, into a cache of the test's own."""
    import xai_bench.training.loop as loop

    monkeypatch.setenv("XAI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loop, "train_model", functools.partial(loop.train_model, max_steps=3))


def test_default_pair_with_two_replicates(tmp_path, quick_training):
    cfg = RunConfig(methods=["uniform", "rollout", "random"], metrics=["mask_localisation"],
                    n_images=3, replicates=2, out=str(tmp_path), name="r")
    runner = Runner(cfg, **QUIET)
    info = runner.run()
    records = read_records(tmp_path / "r")
    assert set(records["replicate"]) == {0, 1}
    assert set(records["model"]) == {"bcos_vit_nano", "vit_nano"}
    assert len(runner.computed) == 2 * 2 * 3
    assert set(info["models"]) == {"bcos_vit_nano", "bcos_vit_nano@1", "vit_nano",
                                   "vit_nano@1"}
    for family in ("bcos_vit_nano", "vit_nano"):
        first = load_checkpoint(info["models"][family]["checkpoint"])
        second = load_checkpoint(info["models"][f"{family}@1"]["checkpoint"])
        assert second["recipe"]["seed"] == first["recipe"]["seed"] + 1
        weights = [(a, b) for a, b in zip(first["state_dict"].values(),
                                          second["state_dict"].values()) if a.numel() > 1]
        assert any(not torch.equal(a, b) for a, b in weights)
    import pandas as pd

    stability = pd.read_csv(tmp_path / "r" / "stability.csv")
    assert set(stability["family"]) == {"bcos_vit_nano", "vit_nano"}
    assert (stability["n_replicates"] == 2).all()
    firsts = stability.groupby(["family", "metric"])["n_first"].sum()
    assert (firsts >= 2).all()  # each replicate has a method ranked first (ties count each)
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert set(summary["replicate"]) == {0, 1}
    again = Runner(cfg, **QUIET)
    again.run()
    assert again.computed == []  # a rerun reuses every replicate's cells


def test_per_replicate_checkpoints_by_index_or_glob(tmp_path, pair_checkpoints):
    import shutil

    vit = pair_checkpoints["vit_nano"]
    (tmp_path / "ck").mkdir()
    # two different files: one file for two replicates is refused (tests/test_bad_input_run.py)
    from xai_bench.storage.checkpoint import save_checkpoint
    from xai_bench.training import RECIPES

    shutil.copy(vit, tmp_path / "ck" / "vit_0.pt")
    torch.manual_seed(1)
    other = str(save_checkpoint(tmp_path / "ck" / "vit_1.pt", xai_bench.get_model("vit_nano"),
                                "vit_nano", "shapes", RECIPES["conventional-quick"], {}))
    base = dict(models=["vit_nano"], methods=["uniform"], metrics=["mask_localisation"],
                n_images=2, replicates=2, out=str(tmp_path / "out"))
    by_glob = Runner(RunConfig(checkpoints={"vit_nano": str(tmp_path / "ck" / "vit_*.pt")},
                               **base), **QUIET)
    assert by_glob.checkpoints == {"vit_nano": str(tmp_path / "ck" / "vit_0.pt"),
                                   "vit_nano@1": str(tmp_path / "ck" / "vit_1.pt")}
    by_index = Runner(RunConfig(checkpoints={"vit_nano": vit, "vit_nano@1": other}, **base),
                      **QUIET)
    assert sorted(by_index.checkpoints) == ["vit_nano", "vit_nano@1"]
    with pytest.raises(ConfigError, match="no checkpoint for replicate"):
        Runner(RunConfig(checkpoints={"vit_nano": vit}, **base), **QUIET)
    with pytest.raises(ConfigError, match="matches 1 file"):
        Runner(RunConfig(checkpoints={"vit_nano": str(tmp_path / "ck" / "vit_0*.pt")},
                         **base), **QUIET)
    result = CliRunner().invoke(main, [
        "run", "--models", "vit_nano", "--replicates", "2", "--checkpoint",
        f"vit_nano@0={vit}", "--checkpoint", f"vit_nano@1={other}", "--methods", "uniform",
        "--metric", "mask_localisation", "--n-images", "2", "--out", str(tmp_path / "cli"),
        "--no-progress", "--no-plots"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, [
        "run", "--models", "vit_nano", "--replicates", "2", "--checkpoint",
        f"vit_nano@2={vit}", "--out", str(tmp_path / "bad"), "--no-progress"])
    assert bad.exit_code == 2 and "the replicate must be 0...1" in bad.output
    assert not (tmp_path / "bad").exists()
