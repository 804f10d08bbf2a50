"""The command line: list, train, info, and one-line errors (exit code 2, no traceback)."""

import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main, parse_key_values
from xai_bench.data import get_dataset
from xai_bench.compute.inference import predict

DATA = "shapes:n=256"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_usage_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    # our errors are exactly one line; click's own option checks add its usage lines first
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stderr.strip().endswith(lines[0])
    if "Usage:" not in result.stderr:
        assert result.stderr.strip() == lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """One CLI training run of the fake model (n=256, 1 epoch), shared by the tests."""
    out = tmp_path_factory.mktemp("cli") / "tiny.pt"
    result = invoke("train", tiny_model, "--dataset", DATA, "--epochs", 1, "--quiet",
                    "--lr", 0.01, "--seed", 3, "--model-arg", "pool=4", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and xai_bench.__version__ in result.output
    for command in ([], ["list"], ["train"], ["info"], ["run"], ["plot"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_list(tiny_model):
    result = invoke("list", "models")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert tiny_model in names and "bcos_vit_nano" in names and "vit_nano" in names
    result = invoke("list", "models", "_test_*")
    assert result.exit_code == 0 and result.output.split()[0] == tiny_model
    assert "test model" in result.output  # the description
    assert invoke("list", "methods").exit_code == 0
    assert invoke("list", "metrics").exit_code == 0
    assert "shapes" in invoke("list", "datasets").output
    assert_usage_error(invoke("list", "models", "zzz*"), "no models match")
    assert "timm:<name>" in names  # prefixes resolved on demand are listed as such
    assert invoke("list", "models", "timm:*").output.split()[0] == "timm:<name>"
    assert "timm:<name>" not in invoke("list", "models", "bcos_*").output


def test_list_reports_plugin_problems(monkeypatch):
    monkeypatch.setattr(xai_bench.MODELS, "problems", ["model plugin 'x' failed to load"])
    result = invoke("list", "models")
    assert result.exit_code == 0 and "warning: model plugin 'x'" in result.stderr


def test_train_writes_a_restorable_checkpoint(trained, tiny_model):
    out, output = trained
    assert "test accuracy" in output and "train time" in output and "wall time" in output
    model = xai_bench.get_model(tiny_model, checkpoint=out)
    info = model.checkpoint_info
    assert model.config["pool"] == 4 and info["dataset"] == DATA
    assert info["recipe"]["epochs"] == 1 and info["recipe"]["seed"] == 3
    assert info["recipe"]["loss"] == "ce" and info["recipe_name"] == "conventional-quick"
    assert info["metrics"]["train_images"] == 256 and info["metrics"]["steps"] == 4
    test_set = get_dataset(DATA, "test")
    assert predict(model, test_set).accuracy == pytest.approx(info["metrics"]["test_accuracy"])
    # a restored copy gives identical outputs
    again = xai_bench.get_model(tiny_model, checkpoint=out)
    x = model.encode(torch.rand(4, 3, 32, 32))
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_train_is_reproducible(trained, tiny_model, tmp_path):
    out, _ = trained
    again = tmp_path / "again.pt"
    result = invoke("train", tiny_model, "--dataset", DATA, "--epochs", 1, "--quiet",
                    "--lr", 0.01, "--seed", 3, "--model-arg", "pool=4", "--out", again)
    assert result.exit_code == 0, result.output
    a = xai_bench.get_model(tiny_model, checkpoint=out)
    b = xai_bench.get_model(tiny_model, checkpoint=again)
    x = a.encode(torch.rand(4, 3, 32, 32))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_train_bce_model_with_recipe(tiny_model, tmp_path):
    out = tmp_path / "b.pt"
    result = invoke("train", tiny_model, "--dataset", DATA, "--recipe", "bcos-quick",
                    "--epochs", 1, "--batch-size", 128, "--limit-train", 128, "--quiet",
                    "--model-arg", "loss=bce", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    info = xai_bench.get_model(tiny_model, checkpoint=out).checkpoint_info
    assert info["model_config"]["loss"] == "bce" and info["recipe"]["loss"] == "bce"
    assert info["recipe"]["batch_size"] == 128 and info["metrics"]["steps"] == 1


def test_info(trained, tiny_model):
    out, _ = trained
    result = invoke("info", out, "--evaluate", DATA)
    assert result.exit_code == 0, result.output
    assert tiny_model in result.output and "test_accuracy" in result.output
    assert "accuracy" in result.output.splitlines()[-1]


def test_unknown_model_suggests(tmp_path):
    line = assert_usage_error(invoke("train", "bcos_vit_nan", "--out", tmp_path / "x.pt"),
                              "did you mean")
    assert "bcos_vit_nano" in line
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--model-arg", "pool"], "key=value"),
    (["--model-arg", "colour=blue"], "bad --model-arg"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--recipe", "fastest"], "unknown recipe 'fastest'"),
    (["--dataset", "mnist"], "unknown data set 'mnist'"),
    (["--dataset", "imagefolder:/no/such/dir"], "/no/such/dir"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_train_errors_are_one_line(tiny_model, tmp_path, args, fragment):
    out = tmp_path / "x.pt"
    assert_usage_error(invoke("train", tiny_model, "--dataset", DATA, "--quiet", *args,
                              "--out", out), fragment)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_train_without_cuda(tiny_model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available")
    assert_usage_error(invoke("train", tiny_model, "--dataset", DATA, "--device", "cuda",
                              "--out", tmp_path / "x.pt"), "cuda")


def test_bad_checkpoints_are_one_line(trained, tmp_path):
    out, _ = trained
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x93NUMPY" + bytes(range(256)) * 8)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(out.read_bytes()[:700])
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    for path, fragment in ((junk, "cannot be read"), (truncated, "cannot be read"),
                           (tensor, "not an xai-bench checkpoint"),
                           (tmp_path / "missing.pt", "does not exist")):
        assert_usage_error(invoke("info", path), str(path), fragment)


def test_run_rejects_a_checkpoint_of_another_model(trained, tiny_model, tmp_path):
    out, _ = trained
    result = invoke("run", "--models", "vit_nano", "--methods", "uniform", "--metrics",
                    "localisation", "--checkpoint", f"vit_nano={out}", "--quiet",
                    "--no-plots", "--out", tmp_path)
    assert_usage_error(result, f"holds model '{tiny_model}', not 'vit_nano'")


def test_parse_key_values():
    assert parse_key_values(["a=1", "b=2.5", "c=true", "d=additive", "e=none", "f= x ",
                             "g=16,32"]) == \
        {"a": 1, "b": 2.5, "c": True, "d": "additive", "e": None, "f": "x", "g": (16, 32)}


def test_train_to_an_unwritable_out_fails_before_training(tiny_model, tmp_path, monkeypatch):
    import xai_bench.training.loop as loop

    monkeypatch.setattr(loop, "train_model", lambda *a, **k: pytest.fail("trained"))
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a directory should be")
    assert_usage_error(invoke("train", tiny_model, "--dataset", DATA, "--quiet", "--out",
                              blocker / "sub" / "x.pt"), "cannot write", "not a directory")
    (tmp_path / "adir").mkdir()
    assert_usage_error(invoke("train", tiny_model, "--dataset", DATA, "--quiet", "--out",
                              tmp_path / "adir"), "directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "file.txt"]


def test_train_into_a_new_directory(trained, tiny_model, tmp_path):
    out = tmp_path / "new" / "dir" / "x.pt"
    result = invoke("train", tiny_model, "--dataset", DATA, "--epochs", 1, "--quiet",
                    "--limit-train", 64, "--out", out)
    assert result.exit_code == 0, result.output
    info = xai_bench.get_model(tiny_model, checkpoint=out).checkpoint_info
    # the metadata every trained checkpoint records (train_and_save)
    assert set(info["metrics"]) >= {"test_accuracy", "train_time_s", "eval_time_s",
                                    "images_per_s", "epochs", "steps", "train_images",
                                    "history"}
    assert info["recipe_name"] == "conventional-quick" and info["classes"]
    assert info["provenance"]["device"] == "cpu"


def test_explain_without_checkpoint_needs_a_default_model(tiny_model, tmp_path, monkeypatch):
    import xai_bench.training as training

    monkeypatch.setattr(training, "cached_default_model",
                        lambda *a, **k: pytest.fail("would train a model"))
    out = tmp_path / "fig.png"
    assert_usage_error(invoke("explain", tiny_model, "--out", out),
                       "pass --checkpoint PATH", f"xai-bench train {tiny_model} --out PATH")
    assert_usage_error(invoke("explain", "vit_nano", "--dataset", "cifar10", "--out", out),
                       "pass --checkpoint PATH", "--dataset cifar10")
    assert_usage_error(invoke("explain", "vit_nan", "--out", out), "did you mean")
    assert not out.exists()


def test_explain_default_model_says_it_uses_the_cached_default(tmp_path, monkeypatch):
    import xai_bench.training as training
    from conftest import TinyLinear

    calls = []

    def fake(name, dataset, **kwargs):
        calls.append((name, dataset))
        return TinyLinear().eval(), {"checkpoint": "/cache/vit_nano.pt", "cached": True}

    monkeypatch.setattr(training, "cached_default_model", fake)
    out = tmp_path / "fig.png"
    result = invoke("explain", "vit_nano", "--methods", "uniform", "--n-images", 2,
                    "--out", out)
    assert result.exit_code == 0, result.output
    assert calls == [("vit_nano", "shapes")] and out.exists()
    assert "using the default vit_nano" in result.stderr and "/cache/vit_nano.pt" in result.stderr
