"""The paper's grid: (B-cos) ViT-{Ti,S,B}-{13,38,87} on a frozen (B-cos) DenseNet-121.

Kept cheap (2 shared CPU cores): transformers with ``depth=1``, one 224² image per forward,
full-size parameter counts on the meta device."""

import json

import pytest
import torch
from click.testing import CliRunner
from torchvision.models import DenseNet, densenet121

import xai_bench
from xai_bench.models.bcos_v2.densenet import bcos_densenet121
from xai_bench.models.paper import (
    LAYERS, PAPER_MODELS, FrozenBackboneTokeniser, count_convs, cut_densenet_features,
)

CUTS = {13: (256, 56), 38: (512, 28), 87: (1024, 14)}  # channels, side at 224²
FAMILIES = {"bcos": ("bcos_vit", 6), "conventional": ("vit", 3)}  # prefix, input channels

# Full-size parameter counts (1000 classes): total and backbone (frozen); docs/paper_models.md.
PARAMS = {
    "bcos_vit_ti_13": (13_241_696, 352_544), "bcos_vit_ti_38": (13_403_040, 1_300_320),
    "bcos_vit_ti_87": (15_961_632, 4_252_128), "bcos_vit_s_13": (45_595_040, 352_544),
    "bcos_vit_s_38": (44_969_952, 1_300_320), "bcos_vit_s_87": (47_135_328, 4_252_128),
    "bcos_vit_b_13": (168_694_304, 352_544), "bcos_vit_b_38": (166_496_352, 1_300_320),
    "bcos_vit_b_87": (167_875_296, 4_252_128),
    "vit_ti_13": (6_701_096, 345_088), "vit_ti_38": (7_261_352, 1_298_560),
    "vit_ti_87": (10_035_624, 4_269_440), "vit_s_13": (23_672_936, 345_088),
    "vit_s_38": (23_839_976, 1_298_560), "vit_s_87": (26_417_640, 4_269_440),
    "vit_b_13": (89_467_112, 345_088), "vit_b_38": (88_847_720, 1_298_560),
    "vit_b_87": (91_032_168, 4_269_440),
}


def test_registry_has_the_18_paper_names():
    expected = {f"{p}_{s}_{n}" for p in ("bcos_vit", "vit") for s in ("ti", "s", "b")
                for n in LAYERS}
    assert set(PAPER_MODELS) == expected
    assert expected <= set(xai_bench.list_models())
    meta = xai_bench.MODELS.meta("bcos_vit_s_87")
    assert meta["paper_name"] == "B-cos ViT-S-87" and meta["layers"] == 87
    assert meta["family"] == "bcos" and "B-cos ViT-S-87" in meta["description"]
    assert xai_bench.MODELS.meta("vit_b_13")["paper_name"] == "ViT-B-13"


def test_parameter_counts_of_all_18_on_the_meta_device():
    for name, (total, backbone) in PARAMS.items():
        with torch.device("meta"):
            model = xai_bench.get_model(name)
        assert model.image_size == (224, 224) and model.num_tokens == 196, name
        assert model.num_classes == 1000 and model.name == name
        assert model.num_parameters() == total, name
        assert sum(p.numel() for p in model.tokeniser.backbone.parameters()) == backbone, name
        assert not any(p.requires_grad for p in model.tokeniser.backbone.parameters())


def test_conv_counts_and_cut_points():
    features = densenet121().features
    assert count_convs(features) == 120
    assert count_convs(bcos_densenet121().features) == 120
    for n in (13, 38, 87):
        cut = cut_densenet_features(features, n, pre_activation=False)
        assert count_convs(cut) == n
        assert list(cut._modules)[-1] == f"denseblock{LAYERS.index(n) + 1}"
        kept = cut_densenet_features(features, n)  # + the next transition's norm and ReLU
        assert count_convs(kept) == n
        assert list(kept[-1]._modules) == ["norm", "relu"]
    with pytest.raises(ValueError, match="possible counts are 1, 13, 14, 38"):
        cut_densenet_features(features, 12)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layers", LAYERS)
def test_cut_feature_maps_and_196_tokens(family, layers):
    prefix, channels = FAMILIES[family]
    model = xai_bench.get_model(f"{prefix}_ti_{layers}", depth=1).eval()
    assert isinstance(model.tokeniser, FrozenBackboneTokeniser)
    x = model.encode(torch.rand(1, 3, 224, 224))
    assert x.shape[1] == channels == model.in_channels
    with torch.no_grad():
        fmap = model.tokeniser.backbone(x)
        tokens = model.tokeniser(x)
        logits = model(x)
    c, side = CUTS[layers]
    assert fmap.shape == (1, c, side, side)
    assert tokens.shape == (1, 196, 192) and model.token_grid == (14, 14)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    if family == "conventional":  # ends with the transition's BatchNorm + ReLU
        assert fmap.min() >= 0


@pytest.mark.parametrize("layers", LAYERS)
def test_bcos_paper_model_is_complete(layers):
    torch.manual_seed(0)
    model = xai_bench.get_model(f"bcos_vit_ti_{layers}", depth=1).double().eval()
    assert model.is_dynamic_linear and model.training_loss == "bce"
    x = model.encode(torch.rand(1, 3, 224, 224, dtype=torch.float64)).requires_grad_(True)
    with model.explanation_mode():
        logits = model(x)
        (grad,) = torch.autograd.grad(logits[0, 7], x)
    # Σ contributions over the 6-channel input (backbone, token conv and ViT) = logit - bias
    torch.testing.assert_close((grad * x).sum(), logits[0, 7] - model.logit_bias,
                               rtol=1e-6, atol=1e-12)


def test_backbone_is_frozen_and_stays_in_eval_mode():
    model = xai_bench.get_model("vit_ti_13", depth=1, image_size=64, num_classes=5)
    backbone = model.tokeniser.backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    assert all(p.requires_grad for p in model.tokeniser.to_tokens.parameters())
    model.eval().train()
    assert model.training and model.blocks[0].training and model.tokeniser.to_tokens.training
    assert not any(m.training for m in backbone.modules())
    stats = {k: v.clone() for k, v in backbone.state_dict().items()}
    loss = model(model.encode(torch.rand(2, 3, 64, 64))).logsumexp(1).sum()
    loss.backward()
    for key, value in backbone.state_dict().items():  # running statistics untouched
        assert torch.equal(value, stats[key]), key
    assert all(p.grad is None for p in backbone.parameters())
    assert model.tokeniser.to_tokens.weight.grad is not None
    # full fine-tuning: trainable and in training mode with the rest of the model
    tuned = xai_bench.get_model("bcos_vit_ti_13", depth=1, image_size=64, num_classes=5,
                                finetune_backbone=True).train()
    assert all(p.requires_grad for p in tuned.tokeniser.backbone.parameters())
    assert tuned.tokeniser.backbone.training and tuned.config["finetune_backbone"] is True


def test_torchvision_backbone_checkpoint_loads_and_travels_in_the_state_dict(tmp_path):
    from xai_bench.storage.checkpoint import save_checkpoint

    torch.manual_seed(1)
    reference = densenet121()
    for m in reference.modules():  # non-default statistics, to see that they are loaded
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "densenet121.pth"
    torch.save(reference.state_dict(), path)
    model = xai_bench.get_model("vit_ti_38", depth=1, num_classes=10, backbone_checkpoint=path)
    ref = reference.features.state_dict()
    for key, value in model.tokeniser.backbone.state_dict().items():
        assert torch.equal(value, ref[key]), key
    config = model.config
    assert config["backbone_checkpoint"] is None and "densenet121.pth" in \
        config["backbone_weights"]
    json.dumps(config)  # JSON-serialisable
    saved = save_checkpoint(tmp_path / "model.pt", model, "vit_ti_38", "shapes", {}, {})
    path.unlink()  # the model reloads without the backbone file
    restored = xai_bench.get_model("vit_ti_38", checkpoint=saved)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert not any(p.requires_grad for p in restored.tokeniser.backbone.parameters())


def test_old_style_torchvision_keys_and_wrapped_state_dicts_load(tmp_path):
    reference = densenet121()
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
           for k, v in reference.state_dict().items()}
    torch.save({"state_dict": {f"module.{k}": v for k, v in old.items()}}, tmp_path / "old.pth")
    model = xai_bench.get_model("vit_ti_13", depth=1, backbone_checkpoint=tmp_path / "old.pth")
    ref = reference.features.state_dict()
    for key, value in model.tokeniser.backbone.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_bcos_backbone_checkpoint_loads(tmp_path):
    torch.manual_seed(2)
    reference = bcos_densenet121()
    torch.save(reference.state_dict(), tmp_path / "bcos_densenet121.pth")
    model = xai_bench.get_model("bcos_vit_ti_13", depth=1,
                                backbone_checkpoint=tmp_path / "bcos_densenet121.pth")
    ref = reference.features.state_dict()
    for key, value in model.tokeniser.backbone.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_wrong_backbone_checkpoints_give_a_one_line_error(tmp_path):
    torch.save(densenet121().state_dict(), tmp_path / "torchvision.pth")
    with pytest.raises(ValueError) as info:  # a torchvision DenseNet for the B-cos model
        xai_bench.get_model("bcos_vit_ti_13", depth=1,
                            backbone_checkpoint=tmp_path / "torchvision.pth")
    message = str(info.value)
    assert "\n" not in message and "does not fit the B-cos-v2 densenet121 cut after 13" \
        in message and "missing conv0.linear.weight" in message
    state = DenseNet(num_init_features=32).state_dict()  # a narrower stem
    torch.save(state, tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match=r"shape mismatch \(file != model\) conv0.weight \(32, 3, 7, 7\) != \(64"):
        xai_bench.get_model("vit_ti_13", depth=1, backbone_checkpoint=tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="does not exist"):
        xai_bench.get_model("vit_ti_13", depth=1, backbone_checkpoint=tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_text("not a torch file")
    with pytest.raises(ValueError, match="cannot be used"):
        xai_bench.get_model("vit_ti_13", depth=1, backbone_checkpoint=tmp_path / "junk.pth")
    with pytest.raises(TypeError, match="has no argument 'patch_size'"):  # the DenseNet cut's
        xai_bench.get_model("vit_ti_13", patch_size=2)


def test_cli_train_with_backbone_options(tmp_path):
    from xai_bench.cli import main

    torch.save(densenet121().state_dict(), tmp_path / "densenet121.pth")
    out = tmp_path / "vit_ti_13.pt"
    args = ["train", "vit_ti_13", "--dataset", "shapes:n=16", "--epochs", "1",
            "--batch-size", "8", "--quiet", "--model-arg", "depth=1", "--model-arg",
            "embed_dim=48", "--model-arg", "num_heads=2", "--backbone-checkpoint",
            str(tmp_path / "densenet121.pth"), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    model = xai_bench.get_model("vit_ti_13", checkpoint=out)
    assert model.image_size == (32, 32) and model.token_grid == (2, 2)
    assert "densenet121.pth" in model.config["backbone_weights"]
    assert not model.config["finetune_backbone"]
    bad = CliRunner().invoke(main, ["train", "vit_nano", "--finetune-backbone", "--out",
                                    str(tmp_path / "x.pt")])
    assert bad.exit_code == 2 and "apply to the DenseNet-121 paper models" in bad.output
