"""The timm adapter (``timm:`` model names): interface, CLS readout, methods, registry, runner."""

import sys

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

import xai_bench  # noqa: E402
from xai_bench.methods.attention import attention_and_gradients, attention_maps  # noqa: E402
from xai_bench.methods.base import token_readout, upsample_token_map  # noqa: E402
from xai_bench.loading import save_timm_checkpoint  # noqa: E402
from xai_bench.models.timm_adapter import PretrainedWeightsError, TimmViT  # noqa: E402
from xai_bench.registry import Registry, RegistryError, UnknownNameError  # noqa: E402

NAME = "timm:vit_tiny_patch16_224"
# 32×32 input, patch 8: a 4×4 token grid plus the CLS token; small enough for 2 CPU cores.
TINY = dict(img_size=32, patch_size=8, embed_dim=48, num_heads=3, depth=2, num_classes=10)
METHODS = ["rollout", "finatt", "gradsam", "gradcam", "ixg", "intgrad", "vit_cx"]
METHOD_PARAMS = {"intgrad": dict(n_steps=8), "vit_cx": dict(chunk_size=64)}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return xai_bench.get_model(NAME, **TINY).eval()


def _images(n, size=32, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- interface


def test_interface_attributes(tiny):
    m = tiny
    assert isinstance(m, TimmViT) and m.name == NAME and m.timm_name == "vit_tiny_patch16_224"
    assert m.image_size == (32, 32) and m.token_grid == (4, 4) and m.num_tokens == 16
    assert m.num_classes == 10 and m.in_channels == 3 and m.num_blocks == 2
    assert (m.pooling, m.num_prefix_tokens) == ("cls", 1)
    assert (m.family, m.training_loss, m.logit_bias, m.is_dynamic_linear) == \
        ("conventional", "ce", 0.0, False)
    assert m.config == TINY and not m.pretrained
    assert all(blk.attn.fused_attn is False for blk in m.blocks)
    # encode: the mean/std of timm's pretrained_cfg (augreg weights: 0.5 / 0.5)
    cfg = m.model.pretrained_cfg
    x = _images(2)
    expected = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(
        1, 3, 1, 1)
    torch.testing.assert_close(m.encode(x), expected)
    with m.explanation_mode() as same:  # a no-op
        assert same is m
    logits = m(m.encode(x))
    assert logits.shape == (2, 10)
    torch.testing.assert_close(m.confidence(logits), logits.softmax(-1))


def test_unfused_attention_matches_timm_fused_forward(tiny):
    x = tiny.encode(_images(3))
    fused = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    fused.load_state_dict(tiny.model.state_dict())
    for blk in fused.blocks:
        blk.attn.fused_attn = True
    with torch.no_grad():
        torch.testing.assert_close(tiny(x), fused(x), rtol=1e-4, atol=1e-5)


def test_recorded_attention_is_applied_softmax_with_gradients(tiny):
    x = tiny.encode(_images(2))
    maps = attention_maps(tiny, x)
    assert len(maps) == 2 and all(a.shape == (2, 3, 17, 17) for a in maps)
    for a in maps:
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, 17))
    # recomputed by hand from the last block's input: softmax(q kᵀ / √d)
    captured = {}
    blk = tiny.blocks[-1]
    handle = blk.attn.register_forward_pre_hook(lambda mod, inp: captured.update(x=inp[0]))
    try:
        with torch.no_grad():
            tiny(x)
    finally:
        handle.remove()
    t = captured["x"]
    qkv = blk.attn.qkv(t).reshape(2, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)
    manual = (qkv[0] @ qkv[1].transpose(-1, -2) * 16 ** -0.5).softmax(-1)
    torch.testing.assert_close(maps[-1], manual, rtol=1e-5, atol=1e-6)
    # gradients w.r.t. the recorded maps flow; no hooks are left behind
    _, grads = attention_and_gradients(tiny, x, torch.tensor([0, 1]))
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    for blk in tiny.blocks:
        assert not blk.attn.attn_drop._forward_hooks and blk.attn.attention is None
        assert blk.attn.record is False
    assert not tiny._forward_hooks and not tiny._forward_pre_hooks


# ---------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method_name", METHODS)
def test_methods_run_and_batched_equals_single(tiny, method_name):
    method = xai_bench.get_method(method_name, **METHOD_PARAMS.get(method_name, {}))
    assert method.applies_to(tiny)
    x, targets = tiny.encode(_images(3)), torch.tensor([3, 1, 4])
    maps = method(tiny, x, targets)
    assert maps.shape == (3, 32, 32) and torch.isfinite(maps).all()
    nonzero = maps.abs().amax((1, 2)).gt(0)
    # GradCAM's final ReLU may legitimately zero a whole map of a random model
    assert nonzero.any() if method_name == "gradcam" else nonzero.all()
    single = torch.cat([method(tiny, x[i:i + 1], targets[i:i + 1]) for i in range(3)])
    scale = single.abs().amax((1, 2), keepdim=True).clamp(min=1e-12)
    assert ((maps - single).abs() / scale).max() < 1e-4


def test_not_applicable_methods_are_skipped(tiny):
    for name in ("inherent", "chefer_lrp", "plrp"):
        assert not xai_bench.get_method(name).applies_to(tiny)


class _FixedAttention(nn.Module):
    """Stands in for ``attn.attn_drop``: the block then applies ``matrix`` (N, N), whatever the
    softmax computed, and the adapter records what was applied."""

    def __init__(self, matrix):
        super().__init__()
        self.matrix = matrix

    def forward(self, attn):
        return self.matrix.to(attn).expand_as(attn)


def _controlled(matrices, **kwargs):
    torch.manual_seed(0)
    model = xai_bench.get_model(NAME, **{**TINY, "depth": len(matrices), **kwargs}).eval()
    for blk, m in zip(model.blocks, matrices):
        blk.attn.attn_drop = _FixedAttention(m)
    return model


def _row_stochastic(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=g).softmax(-1)


def test_cls_readout_known_answer():
    """Chefer et al.: rollout = (Â_L ⋯ Â_s)[CLS, 1:] on the grid, Â = rownorm(A + I)."""
    n = 17
    a1, a2 = _row_stochastic(1, n), _row_stochastic(2, n)
    # block 2's CLS row attends only to patch token 9 (grid row 2, column 1) and itself
    a2[0] = 0
    a2[0, 0], a2[0, 1 + 9] = 0.25, 0.75
    model = _controlled([a1, a2])
    x = model.encode(_images(2))
    eye = torch.eye(n)
    hat = [(a + eye) / (a + eye).sum(-1, keepdim=True) for a in (a1, a2)]

    finatt = xai_bench.get_method("finatt")(model, x, torch.tensor([0, 0]))
    expected_last = torch.zeros(16)
    expected_last[9] = 0.75
    torch.testing.assert_close(finatt[0], upsample_token_map(model, expected_last[None])[0])
    # token 9 is the patch at rows 16-23, columns 8-15 of the image (row-major grid)
    inside, outside = finatt[0][16:24, 8:16], finatt[0].clone()
    outside[16:24, 8:16] = 0
    assert inside.max() == finatt[0].max() > outside.max()

    rollout_all = xai_bench.get_method("rollout", start_layer=0)(model, x, torch.tensor([0, 0]))
    tokens = (hat[1] @ hat[0])[0, 1:]
    torch.testing.assert_close(rollout_all, upsample_token_map(model, tokens[None].repeat(2, 1)))
    rollout = xai_bench.get_method("rollout")(model, x, torch.tensor([0, 0]))  # start_layer=1
    torch.testing.assert_close(rollout[0], upsample_token_map(model, hat[1][0, 1:][None])[0])
    # the readout is not the mean over query rows
    assert not torch.allclose(rollout[0], upsample_token_map(model, hat[1].mean(0)[1:][None])[0])


def test_mean_pooling_readout_drops_prefix_tokens():
    n = 17
    a = _row_stochastic(3, n)
    model = _controlled([a], global_pool="avg")
    assert (model.pooling, model.num_prefix_tokens) == ("mean", 1)
    maps = xai_bench.get_method("finatt")(model, model.encode(_images(1)), torch.tensor([0]))
    torch.testing.assert_close(maps, upsample_token_map(model, a[1:, 1:].mean(0)[None]))
    no_cls = xai_bench.get_model(NAME, **{**TINY, "class_token": False, "global_pool": "avg"})
    assert (no_cls.pooling, no_cls.num_prefix_tokens) == ("mean", 0)


def test_register_tokens_are_prefix_tokens():
    try:
        model = xai_bench.get_model(NAME, **TINY, reg_tokens=2).eval()
    except ValueError as e:  # timm < 0.9.9 has no register tokens
        pytest.skip(str(e))
    assert (model.pooling, model.num_prefix_tokens) == ("cls", 3)
    x = model.encode(_images(2))
    maps = attention_maps(model, x)
    assert maps[-1].shape[-1] == 19
    expected = maps[-1].mean(1)[:, 0, 3:]
    torch.testing.assert_close(token_readout(maps[-1].mean(1), model), expected)
    out = xai_bench.get_method("gradcam")(model, x, torch.tensor([1, 2]))
    assert out.shape == (2, 32, 32) and torch.isfinite(out).all()


def test_token_readout_defaults_unchanged():
    m = torch.rand(2, 5, 5)
    torch.testing.assert_close(token_readout(m), m.mean(-2), rtol=0, atol=0)

    class Cls:
        pooling, num_prefix_tokens = "cls", 0

    with pytest.raises(ValueError, match="num_prefix_tokens"):
        token_readout(m, Cls())


# ---------------------------------------------------------------------------- registry


def test_registry_resolves_timm_names():
    assert NAME in xai_bench.MODELS and "timm:no_such_vit" not in xai_bench.MODELS
    assert xai_bench.MODELS.resolve(f"vit_nano,{NAME}") == ["vit_nano", NAME]
    assert "timm" in xai_bench.MODELS.prefixes()
    with pytest.raises(UnknownNameError, match="did you mean 'timm:vit_small_patch16_224'"):
        xai_bench.get_model("timm:vit_smal_patch16_224")
    with pytest.raises(UnknownNameError, match="unknown timm model 'xyzzy'"):
        xai_bench.MODELS.resolve("timm:xyzzy")
    with pytest.raises(UnknownNameError, match="prefixes: timm:"):
        xai_bench.get_model("timn:vit_small_patch16_224")
    with pytest.raises(ValueError, match="not a VisionTransformer"):
        xai_bench.get_model("timm:resnet18")
    # attention-pool heads are not supported (older timm rejects global_pool='map' itself)
    with pytest.raises(ValueError, match="global_pool='map'"):
        xai_bench.get_model(NAME, **TINY, global_pool="map", class_token=False)


def test_missing_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(RegistryError, match=r'pip install "xai-bench\[timm\]"'):
        xai_bench.get_model(NAME)
    assert NAME not in xai_bench.MODELS


def test_prefix_hook_is_generic():
    reg = Registry("model", "xai_bench.test_no_such_group")
    reg.add("plain", dict)
    reg.add("pre:taken", list)  # registered names win over a prefix
    reg.add_prefix("pre", lambda rest: (lambda **kw: ("built", rest, kw)))
    assert reg.get("pre:abc")(k=1) == ("built", "abc", {"k": 1})
    assert reg.get("pre:taken") is list
    assert reg.resolve("plain,pre:x") == ["plain", "pre:x"] and "pre:y" in reg
    assert reg.list() == ["plain", "pre:taken"]  # dynamic names are not listed
    with pytest.raises(ValueError, match="already registered"):
        reg.add_prefix("pre", "mod:fn")
    reg.add_prefix("broken", "xai_bench.no_such_module:fn")
    with pytest.raises(RegistryError, match="prefix 'broken:' .* failed to load"):
        reg.get("broken:x")


def test_pretrained_failure_is_one_line(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(PretrainedWeightsError) as info:
        xai_bench.get_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)),
                            **TINY)
    text = str(info.value)
    assert "\n" not in text and "vit_tiny_patch16_224" in text and "pretrained=False" in text


# ---------------------------------------------------------------------------- checkpoint, runner


def test_checkpoint_round_trip_and_runner_cell(tmp_path):
    from xai_bench.storage.results import read_records
    from xai_bench.run.runner import RunConfig, Runner

    torch.manual_seed(0)
    path = save_timm_checkpoint(tmp_path / "timm.pt", NAME, dataset="shapes", pretrained=False,
                                **TINY)
    model = xai_bench.get_model(NAME, checkpoint=path)
    assert isinstance(model, TimmViT) and model.config == TINY
    x = model.encode(_images(2))
    again = xai_bench.get_model(NAME, checkpoint=path)
    torch.testing.assert_close(model(x), again(x))

    config = RunConfig(models=[NAME], methods=["rollout", "inherent"],
                       metrics=["pixel_perturbation"], dataset="shapes",
                       checkpoints={NAME: str(path)}, n_images=2, batch_size=16, device="cpu",
                       out=str(tmp_path / "runs"), name="r")
    info = Runner(config, progress=False, log=lambda *a: None).run()
    assert info["models"][NAME]["family"] == "conventional"
    records = read_records(tmp_path / "runs" / "r")
    rollout = records[records["method"] == "rollout"]
    assert len(rollout) and (rollout["status"] == "ok").all(), rollout
    assert rollout["value"].notna().all()
    assert (records[records["method"] == "inherent"]["status"] == "skipped").all()
