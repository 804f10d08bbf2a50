"""Where a model's weights come from: ``get_model(name, pretrained=True)`` gives the weights
the run uses, plain state dicts (``.pth``, ``.safetensors``) load strictly through
``get_model(checkpoint=...)``, ``--checkpoint`` and ``evaluate``, and ``--model-arg`` reaches
the model and its cells' identity."""

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.contracts.model_args import ModelArgumentError, model_params_for
from xai_bench.errors import ConfigError
from xai_bench.storage.checkpoint_format import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

timm = pytest.importorskip("timm")

TIMM = "timm:vit_tiny_patch16_224"
# the architecture a plain state dict cannot tell (num_classes, img_size, patch_size it can)
ARCH = dict(embed_dim=48, num_heads=3, depth=2)


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.fixture(scope="module")
def timm_net():
    """A timm ViT as a researcher trains it: 32-pixel images, 8-pixel patches, 3 classes."""
    torch.manual_seed(3)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8,
                             num_classes=3, **ARCH).eval()


@pytest.fixture(scope="module")
def state_files(timm_net, tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    torch.save(timm_net.state_dict(), root / "own.pth")
    save_file(timm_net.state_dict(), str(root / "own.safetensors"))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of 48-pixel images in 3 classes (the model takes 32 pixels)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir()
        for i in range(2):
            pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


# ---------------------------------------------------------------------------- pretrained


def test_pretrained_gives_the_weights_the_run_uses():
    from xai_bench.run.config import RunConfig
    from xai_bench.run.models import ModelSpec, RunModels
    from xai_bench.training.shipped import SHIPPED_DIR, read_manifest

    model = xai_bench.get_model("vit_nano", pretrained=True)
    shipped = SHIPPED_DIR / read_manifest()["vit_nano"]["file"]
    stored = torch.load(shipped, weights_only=True)["state_dict"]
    ours = model.state_dict()
    assert set(ours) == set(stored)
    assert all(torch.equal(ours[k], stored[k]) for k in stored)
    assert model.weights_source == "shipped" and model.checkpoint_info["path"] == str(shipped)
    # what `xai-bench run` loads for the name (RunModels.load, the default rule)
    run_model, _ = RunModels(RunConfig(models=["vit_nano"]), {}, "cpu", progress=False,
                             log=lambda *a: None).load(ModelSpec("vit_nano", "vit_nano"))
    assert all(torch.equal(run_model.state_dict()[k].cpu(), stored[k]) for k in stored)
    # the default stays random weights, and says so
    random = xai_bench.get_model("vit_nano")
    assert random.weights_source == "random"
    assert not torch.equal(random.state_dict()["head.weight"], stored["head.weight"])


def test_pretrained_refusals_and_unknown_arguments_are_one_line():
    with pytest.raises(ConfigError, match="no shipped or official weights") as e:
        xai_bench.get_model("vit_micro", pretrained=True)
    text = one_line(e)
    assert "vit_nano" in text and "bcos_v2.*" in text and "timm:NAME" in text
    with pytest.raises(ConfigError, match="cannot change depth"):
        xai_bench.get_model("vit_nano", pretrained=True, depth=2)
    # an argument equal to the shipped configuration is fine
    assert xai_bench.get_model("vit_nano", pretrained=True, num_classes=10).num_classes == 10
    with pytest.raises(ModelArgumentError, match="did you mean 'image_size'") as e:
        xai_bench.get_model("vit_nano", image_sise=64)
    assert "embed_dim" in one_line(e) and isinstance(e.value, TypeError)
    with pytest.raises(ModelArgumentError, match="has no argument 'img_siz'.*'img_size'"):
        xai_bench.get_model(TIMM, img_siz=32)
    with pytest.raises(ConfigError, match="either pretrained=True or checkpoint"):
        xai_bench.get_model("vit_nano", pretrained=True, checkpoint="x.pt")


# ---------------------------------------------------------------------------- state dicts


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_timm_state_dict_loads_by_name(timm_net, state_files, suffix):
    path = state_files / f"own{suffix}"
    model = xai_bench.get_model(TIMM, checkpoint=path, **ARCH)
    # num_classes, img_size and patch_size come from the file's head and embeddings
    assert (model.num_classes, model.image_size, model.token_grid) == (3, (32, 32), (4, 4))
    assert model.weights_source == "state_dict"
    assert model.checkpoint_info["inferred"] == {"num_classes": 3, "img_size": 32,
                                                 "patch_size": 8}
    ours = {k[len("model."):]: v for k, v in model.state_dict().items() if k != "mean"
            and k != "std"}
    assert set(ours) == set(timm_net.state_dict())
    assert all(torch.equal(v, ours[k]) for k, v in timm_net.state_dict().items())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the adapter computes attention unfused: rounding only
        torch.testing.assert_close(model(x), timm_net(x), rtol=0, atol=1e-6)


def test_a_wrong_state_dict_names_its_keys(timm_net, tmp_path, state_files):
    state = dict(timm_net.state_dict())
    del state["blocks.1.mlp.fc2.bias"]
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError) as e:
        xai_bench.get_model(TIMM, checkpoint=tmp_path / "wrong.pth", **ARCH)
    text = one_line(e)
    assert "1 missing key: model.blocks.1.mlp.fc2.bias" in text
    assert "1 unexpected key: model.extra.weight" in text and "--model-arg" in text
    # a head of another size: named, with the num_classes that fits
    with pytest.raises(CheckpointError, match=r"size mismatch keys?: model.head.weight "
                                              r"\(3, 48\) in the file vs \(5, 48\)") as e:
        xai_bench.get_model(TIMM, checkpoint=state_files / "own.pth", num_classes=5, **ARCH)
    assert "pass num_classes=3" in one_line(e)
    # no state dict at all: what the file holds, and what to save instead
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "notes.pth")
    with pytest.raises(CheckpointError, match="neither an xai-bench checkpoint nor a state "
                                              "dict.*state_dict"):
        xai_bench.get_model(TIMM, checkpoint=tmp_path / "notes.pth", **ARCH)


def test_registered_models_take_wrapped_state_dicts(tmp_path):
    torch.manual_seed(1)
    net = xai_bench.get_model("vit_nano", depth=2)
    torch.save({"model": net.state_dict(), "epoch": 7}, tmp_path / "train_state.pt")
    model = xai_bench.get_model("vit_nano", checkpoint=tmp_path / "train_state.pt", depth=2)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in net.state_dict().items())
    with pytest.raises(CheckpointError, match=r"24 missing keys: blocks\.2\.") as e:
        xai_bench.get_model("vit_nano", checkpoint=tmp_path / "train_state.pt")
    one_line(e)


def test_safetensors_missing_says_how_to_install(state_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(CheckpointError, match="pip install safetensors") as e:
        xai_bench.get_model(TIMM, checkpoint=state_files / "own.safetensors", **ARCH)
    one_line(e)


def test_the_old_refusal_points_to_the_state_dict_route(state_files):
    from xai_bench.loading import load_model_from_checkpoint

    with pytest.raises(CheckpointError, match="not an xai-bench checkpoint") as e:
        load_model_from_checkpoint(state_files / "own.pth")
    assert "get_model(NAME, checkpoint=PATH)" in one_line(e)
    assert "save_timm_checkpoint" in one_line(e)


def test_save_timm_checkpoint_keeps_the_files_head(timm_net, state_files, tmp_path):
    from xai_bench.loading import save_timm_checkpoint

    tiny = dict(img_size=32, patch_size=8, **ARCH)
    file = str(state_files / "own.pth")
    for given in ({"num_classes": 3}, {}):  # the file's head, given or not
        path = save_timm_checkpoint(tmp_path / "ck.pt", "vit_tiny_patch16_224",
                                    pretrained_cfg_overlay=dict(file=file), **tiny, **given)
        model = xai_bench.get_model(TIMM, checkpoint=path)
        assert torch.equal(model.model.head.weight, timm_net.head.weight)
        assert torch.equal(model.model.blocks[1].mlp.fc2.weight, timm_net.blocks[1].mlp.fc2.weight)
    with pytest.warns(UserWarning, match="classifier is new and random"):
        path = save_timm_checkpoint(tmp_path / "new.pt", "vit_tiny_patch16_224",
                                    pretrained_cfg_overlay=dict(file=file), num_classes=4,
                                    **tiny)
    assert torch.load(path, weights_only=True)["recipe"]["head"].startswith("new")


# ---------------------------------------------------------------------------- the run


def test_model_params_are_per_model_or_for_all():
    # the command line splits at the first dot; model names may hold dots
    raw = {"bcos_v2": {"resnet50.num_classes": 4}, "*": {"image_size": 64},
           "vit_nano": {"image_size": 32}}
    assert model_params_for(raw, "bcos_v2.resnet50") == {"image_size": 64, "num_classes": 4}
    assert model_params_for(raw, "vit_nano") == {"image_size": 32}  # its own value wins
    assert model_params_for({"image_size": 48}, "vit_micro") == {"image_size": 48}


def test_run_with_a_state_dict_and_model_args(state_files, folder, tmp_path):
    """--checkpoint takes a plain timm state dict, --model-arg reaches the model (32 pixels
    on an image folder of 48-pixel images), both are in the cells' identity."""
    out = tmp_path / "runs"

    def run(*extra):
        args = ["run", "--models", TIMM, "--checkpoint", f"{TIMM}={state_files / 'own.pth'}",
                "--model-arg", f"{TIMM}.embed_dim=48", "--model-arg", "*.depth=2",
                "--model-arg", f"{TIMM}.num_heads=3", "--dataset", f"imagefolder:{folder}",
                "--methods", "rollout", "--metric", "pixel_perturbation", "--n-images", "2",
                "--device", "cpu", "--no-plots", "--no-progress", "--out", str(out),
                "--name", "r", *extra]
        return CliRunner().invoke(main, args)

    first = run()
    assert first.exit_code == 0, first.output
    info = json.loads((out / "r" / "run.json").read_text())
    assert info["config"]["model_params"] == {TIMM: {"embed_dim": 48, "num_heads": 3},
                                              "*": {"depth": 2}}
    model = info["models"][TIMM]
    assert model["image_size"] == [32, 32] and model["num_classes"] == 3
    assert model["model_args"] == {"depth": 2, "embed_dim": 48, "num_heads": 3}
    from xai_bench.storage.identity import file_sha256

    assert model["checkpoint_sha256"] == file_sha256(state_files / "own.pth")
    # another normalisation: the cells are recomputed, and the terminal says why
    again = run("--model-arg", f"{TIMM}.mean=0.5,0.5,0.5")
    assert again.exit_code == 0, again.output
    assert "arguments changed (mean (none) → [0.5, 0.5, 0.5])" in again.output.replace('"', "")
    # an argument the model does not take: one line, exit 2, before any work
    bad = run("--model-arg", "*.img_siz=32")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "has no argument 'img_siz' (--model-arg *.img_siz) — did you mean 'img_size'" \
        in bad.stderr
    elsewhere = run("--model-arg", "vit_nano.depth=2")
    assert elsewhere.exit_code == 2 and "which this run does not benchmark" in elsewhere.stderr


def test_evaluate_takes_a_state_dict_and_model_params(state_files, folder):
    results = xai_bench.evaluate(
        models=[TIMM], methods=["rollout"], metrics="pixel_perturbation",
        dataset=f"imagefolder:{folder}", checkpoints={TIMM: str(state_files / "own.safetensors")},
        model_params={TIMM: ARCH}, n_images=2, device="cpu", plots=False, report=False)
    records = results.records
    assert len(records) and (records["status"] == "ok").all(), records
    assert results.info["models"][TIMM]["model_args"] == ARCH
