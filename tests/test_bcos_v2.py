"""Official B-cos-v2 models: our re-implementations against the `bcos` package's (state dicts
load strictly, same logits and contribution maps), completeness where it holds, loading of
official `.pth` files and the offline behaviour of `pretrained=True`; our methods on them."""

import importlib.util
import socket
import time
import urllib.error

import pytest
import torch

import xai_bench
from xai_bench.storage.checkpoint import CheckpointError
from xai_bench.models.bcos_v2 import DENSENET121_CUTS, bcos_densenet121, common, zoo
from xai_bench.models.bcos_v2.common import PretrainedWeightsError

pytest.importorskip("bcos")
official_zoo = pytest.importorskip("bcos.models.pretrained")

VITS = ["simple_vit_ti_patch16_224", "simple_vit_s_patch16_224", "simple_vit_b_patch16_224",
        "simple_vit_l_patch16_224", "vitc_ti_patch1_14", "vitc_s_patch1_14",
        "vitc_b_patch1_14", "vitc_l_patch1_14"]
ALL = ["densenet121", "densenet121_long", "resnet50", "resnet50_long"] + VITS + \
    ["standard_" + v for v in VITS]


def official(key: str):
    """The `bcos` package's model for our key (same architecture for the `_long` weights)."""
    if "vit" in key:
        pytest.importorskip("einops")  # the official ViTs need it
    return getattr(official_zoo, key.replace("_long", ""))()


def randomise(model, x=None):
    """Non-trivial norm parameters (and, for batch norms, running variances calibrated on
    ``x`` so that eval-mode activations neither vanish nor explode through depth)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0, 0.1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if bns and x is not None:
        for m in bns:
            m.momentum = 1.0
        model.train()
        with torch.no_grad():
            model(x)
        for m in bns:
            m.momentum = 0.1
    return model.eval()


def contributions(model, x, target, explain):
    """Input × gradient of logit ``target`` summed over channels (explanation mode if
    ``explain``), and the logits."""
    x = x.clone().requires_grad_(True)
    with (model.explanation_mode() if explain else torch.enable_grad()):
        logits = model(x)
    (grad,) = torch.autograd.grad(logits[:, target].sum(), x)
    return (grad * x).sum(1), logits.detach()


def close(actual, expected):
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * max(scale, 1e-12))


# ---------------------------------------------------------------- architecture and weights

def test_state_dict_keys_shapes_and_parameter_counts_match_official():
    """Every registered model, built on the meta device (no memory, no time): same keys in
    the same order and the same shapes as the official model; parameter counts as
    documented in the registry."""
    assert sorted(xai_bench.list_models("bcos_v2.*")) == sorted("bcos_v2." + k for k in ALL)
    has_einops = importlib.util.find_spec("einops") is not None  # the official ViTs need it
    with torch.device("meta"):
        for key in ALL:
            if "vit" in key and not has_einops:
                continue
            ours = xai_bench.get_model("bcos_v2." + key)
            theirs = official(key).state_dict()
            mine = ours.state_dict()
            assert list(mine) == list(theirs), key
            assert all(mine[k].shape == theirs[k].shape for k in mine), key
            assert ours.num_parameters() == zoo.PARAMETERS[key], key
            assert xai_bench.MODELS.meta("bcos_v2." + key)["parameters"] == zoo.PARAMETERS[key]


@pytest.mark.parametrize("key,size", [
    ("densenet121", 64), ("resnet50", 64),
    ("simple_vit_ti_patch16_224", 64), ("simple_vit_s_patch16_224", 48),
    ("vitc_ti_patch1_14", 64), ("vitc_s_patch1_14", 48),
    ("standard_simple_vit_ti_patch16_224", 64), ("standard_vitc_ti_patch1_14", 64),
])
def test_same_logits_and_contributions_as_official(key, size):
    ours = xai_bench.get_model("bcos_v2." + key, image_size=size)
    x = ours.encode(torch.rand(2, 3, size, size))
    theirs = randomise(official(key), x)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    with torch.no_grad():
        expected = theirs(x)
        close(ours(x), expected)
    assert expected.std() > 1e-3  # a non-degenerate comparison
    explain = ours.family == "bcos"  # standard models: plain gradients
    mine, _ = contributions(ours, x, 7, explain)
    ref, _ = contributions(theirs, x, 7, explain)
    close(mine, ref)


def test_training_mode_batch_norm_matches_official():
    """Uncentred batch norm in training mode: batch statistics, running-variance update and
    batch counter as in the official model."""
    ours = bcos_densenet121()
    theirs = official("densenet121")
    ours.load_state_dict(theirs.state_dict())
    x = ours.encode(torch.rand(2, 3, 32, 32))
    ours.train(), theirs.train()
    close(ours(x), theirs(x))
    mine, ref = ours.state_dict(), theirs.state_dict()
    for k in ("features.norm0.running_var", "features.denseblock3.denselayer5.norm2.running_var",
              "features.norm5.num_batches_tracked"):
        torch.testing.assert_close(mine[k], ref[k])
    assert int(mine["features.norm5.num_batches_tracked"]) == 1


# ---------------------------------------------------------------- completeness

@pytest.mark.parametrize("name", ["bcos_v2.densenet121", "bcos_v2.resnet50"])
def test_cnns_are_complete(name):
    """Eval-mode B-cos CNNs are dynamic linear: Σ W(x) ⊙ x = logit - logit_bias."""
    model = xai_bench.get_model(name, image_size=64)
    x = model.encode(torch.rand(2, 3, 64, 64))
    randomise(model, x)
    assert model.is_dynamic_linear and model.training_loss == "bce"
    maps = xai_bench.get_method("inherent")(model, x, torch.tensor([3, 5]))
    with torch.no_grad():
        logits = model(x)
    expected = logits[[0, 1], [3, 5]] - model.logit_bias
    assert expected.abs().min() > 1e-4  # random B-cos CNNs have small logits around the bias
    torch.testing.assert_close(maps.sum((1, 2)), expected, rtol=1e-4, atol=1e-7)


def test_bcos_vit_contributions_miss_exactly_the_position_embedding():
    """B-cos ViTs are not complete: logit - bias = Σ W(x) ⊙ x + (∂y/∂pe) · pe (the added
    sin-cos embedding's share), which is not zero."""
    model = xai_bench.get_model("bcos_v2.vitc_ti_patch1_14", image_size=32)
    randomise(model)
    assert not model.is_dynamic_linear
    x = model.encode(torch.rand(2, 3, 32, 32))
    net = model.network
    kept = {}

    def as_leaf(module, inputs, output):
        kept["pe"] = output.detach().clone().requires_grad_(True)
        return kept["pe"]

    handle = net.positional_embedding.register_forward_hook(as_leaf)
    try:
        xg = x.clone().requires_grad_(True)
        with model.explanation_mode():
            logits = model(xg)
        gx, gpe = torch.autograd.grad(logits[:, 4].sum(), [xg, kept["pe"]])
    finally:
        handle.remove()
    inputs_share = (gx * x).sum((1, 2, 3))
    pe_share = (gpe * kept["pe"]).sum()  # the embedding is shared by the batch
    target = (logits[:, 4] - model.logit_bias).detach()
    torch.testing.assert_close(inputs_share.sum() + pe_share, target.sum(), rtol=1e-4,
                               atol=1e-6)
    assert abs(float(pe_share.detach())) > 1e-4 * float(target.abs().sum())


# ---------------------------------------------------------------- interface and methods

def test_interface_and_our_methods():
    vit = randomise(xai_bench.get_model("bcos_v2.simple_vit_ti_patch16_224", image_size=32))
    cnn = xai_bench.get_model("bcos_v2.resnet50", image_size=32)
    images = torch.rand(2, 3, 32, 32)
    randomise(cnn, cnn.encode(images))
    targets = torch.tensor([1, 2])
    assert vit.token_grid == (2, 2) and vit.num_blocks == 12 and vit.in_channels == 6
    assert vit.family == "bcos" and vit.pooling == "mean" and vit.num_classes == 1000
    assert abs(vit.logit_bias + torch.log(torch.tensor(999.0))) < 1e-6
    assert not hasattr(cnn, "record_attention") and not hasattr(cnn, "token_grid")
    for model in (vit, cnn):
        x = model.encode(images)
        for method in ("inherent", "ixg"):
            maps = xai_bench.get_method(method)(model, x, targets)
            assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    x = vit.encode(images)
    with vit.record_attention() as maps, torch.no_grad():
        vit(x)
    assert len(maps) == 12 and maps[0].shape == (2, 3, 4, 4)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, 3, 4))
    rollout = xai_bench.get_method("rollout")
    assert rollout(vit, x, targets).shape == (2, 32, 32)
    assert not rollout.applies_to(cnn)
    standard = xai_bench.get_model("bcos_v2.standard_vitc_ti_patch1_14", image_size=32)
    assert standard.family == "conventional" and standard.in_channels == 3
    assert standard.training_loss == "ce" and not xai_bench.get_method("inherent").applies_to(
        standard)
    assert rollout(standard, standard.encode(images), targets).shape == (2, 32, 32)


def test_densenet_feature_extractor_cuts_like_torchvision():
    model = bcos_densenet121()
    x = model.encode(torch.rand(1, 3, 64, 64))
    for n, (last, channels, stride) in DENSENET121_CUTS.items():
        features = model.feature_extractor(n)
        names = [name for name, _ in features.named_children()]
        assert names[:3] == ["conv0", "norm0", "pool0"] and names[-1] == last
        convs = sum(m.__class__.__name__ == "BcosConv2dV2" for m in features.modules())
        assert convs == n
        if n <= 38:
            assert features(x).shape == (1, channels, 64 // stride, 64 // stride)
    assert model.feature_extractor(13)[0] is model.features.conv0  # shared, not copied
    with pytest.raises(ValueError, match="possible counts: 1, 13, 14, 38"):
        model.feature_extractor(12)


# ---------------------------------------------------------------- loading

def test_get_model_loads_an_official_state_dict(tmp_path):
    theirs = randomise(official("vitc_ti_patch1_14"))
    path = tmp_path / "bcos_vitc_ti_patch1_14-ddd6193a77.pth"
    torch.save(theirs.state_dict(), path)
    model = xai_bench.get_model("bcos_v2.vitc_ti_patch1_14", checkpoint=path, image_size=32)
    assert not model.training and model.name == "bcos_v2.vitc_ti_patch1_14"
    assert model.checkpoint_info["path"] == str(path)
    x = model.encode(torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        close(model(x), theirs(x))


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(official("simple_vit_ti_patch16_224").state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        xai_bench.get_model("bcos_v2.standard_simple_vit_ti_patch16_224", checkpoint=path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    assert "missing keys: to_patch_embedding.linear.weight" in text
    assert "unexpected keys: 0.to_patch_embedding.linear.linear.weight" in text
    small = tmp_path / "small.pth"
    torch.save(xai_bench.get_model("bcos_v2.vitc_ti_patch1_14", num_classes=10).state_dict(),
               small)
    with pytest.raises(CheckpointError, match=r"size mismatch key: 0\.linear_head\.linear\."
                                              r"linear\.weight \(10, 192\) vs \(1000, 192\)"):
        xai_bench.get_model("bcos_v2.vitc_ti_patch1_14", checkpoint=small)
    with pytest.raises(CheckpointError, match="does not exist"):
        xai_bench.get_model("bcos_v2.resnet50", checkpoint=tmp_path / "nope.pth")


def test_xai_bench_checkpoints_of_bcos_v2_models_round_trip(tmp_path):
    from xai_bench.storage.checkpoint import save_checkpoint

    model = xai_bench.get_model("bcos_v2.vitc_ti_patch1_14", num_classes=10, image_size=32)
    path = save_checkpoint(tmp_path / "m.pt", model, model.name, "shapes", {}, {})
    restored = xai_bench.get_model("bcos_v2.vitc_ti_patch1_14", checkpoint=path)
    assert restored.config == model.config and restored.num_classes == 10
    x = model.encode(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model.eval()(x))


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No network (every connection attempt fails) and an empty torch.hub cache."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_pretrained_offline_fails_fast_with_instructions(offline):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsError) as info:
        xai_bench.get_model("bcos_v2.densenet121", pretrained=True)
    assert time.monotonic() - start < 5
    text = str(info.value)
    assert "\n" not in text and "checkpoint=PATH" in text
    assert "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights/" \
           "densenet_121-b8daf96afb.pth" in text


def test_pretrained_download_errors_are_one_line(offline, monkeypatch):
    monkeypatch.setattr(common, "_reachable", lambda *a: True)

    def fail(*args, **kwargs):
        raise urllib.error.URLError("timed out")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    with pytest.raises(PretrainedWeightsError, match="URLError: .*timed out.*checkpoint=PATH"):
        xai_bench.get_model("bcos_v2.resnet50_long", pretrained=True)


def test_pretrained_uses_the_torch_hub_cache(offline):
    """A file placed in torch.hub's cache under its official name is used without network."""
    theirs = randomise(official("vitc_ti_patch1_14"))
    offline.mkdir(parents=True)
    torch.save(theirs.state_dict(), offline / "bcos_vitc_ti_patch1_14-ddd6193a77.pth")
    model = xai_bench.get_model("bcos_v2.vitc_ti_patch1_14", pretrained=True, image_size=32)
    assert not model.training
    x = model.encode(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        close(model(x), theirs(x))
