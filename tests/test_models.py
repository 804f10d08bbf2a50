import pytest
import torch

import xai_bench
from xai_bench.models.bcos_vit import POSITIONS

# the DenseNet-121 paper grid (bcos_vit_{ti,s,b}_{13,38,87}) has its own tests
BCOS_MODELS = [n for n in xai_bench.list_models("bcos_vit_*")
               if "layers" not in xai_bench.MODELS.meta(n)]
SMALL = dict(image_size=32, stem_strides=(1, 2), patch_size=2)  # 64 tokens for the big sizes


def small_kwargs(name):
    # Paper-size models are checked at full width/depth on a 32×32 input to stay fast.
    return {} if name.endswith(("nano", "micro")) else SMALL


def contributions(model, images, targets):
    x = model.encode(images).requires_grad_(True)
    with model.explanation_mode():
        logits = model(x)
        chosen = logits.gather(1, targets[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(chosen.sum(), x)
    return (grad * x).sum(1), chosen


def test_registry_lists_both_families_and_sizes():
    assert set(BCOS_MODELS) == {f"bcos_vit_{s}" for s in ("nano", "micro", "ti", "s", "b")}
    assert "vit_nano" in xai_bench.list_models("vit_*")


@pytest.mark.parametrize("name", BCOS_MODELS)
@pytest.mark.parametrize("position", [p for p in POSITIONS if p != "embedding"])
def test_bcos_contributions_sum_to_logit_minus_bias(name, position):
    torch.manual_seed(0)
    model = xai_bench.get_model(name, position=position, **small_kwargs(name)).double().eval()
    assert model.is_dynamic_linear
    images = torch.rand(2, 3, *model.image_size, dtype=torch.float64)
    targets = torch.tensor([1, 7])
    maps, logits = contributions(model, images, targets)
    assert maps.shape == (2, *model.image_size)
    torch.testing.assert_close(maps.sum((1, 2)), logits - model.logit_bias, rtol=1e-6, atol=1e-9)
    other, _ = contributions(model, images, torch.tensor([4, 2]))
    assert not torch.allclose(maps, other)  # maps differ between classes


def test_bcos_with_position_embedding_is_complete_up_to_the_embedding_share():
    torch.manual_seed(0)
    model = xai_bench.get_model("bcos_vit_nano", position="embedding").double().eval()
    assert not model.is_dynamic_linear
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    x = model.encode(images).requires_grad_(True)
    with model.explanation_mode():
        logits = model(x)
        (gx, gp) = torch.autograd.grad(logits[:, 3].sum(), [x, model.pos_embed])
    # pos_embed is shared across the batch: its gradient sums over samples, so check one image.
    x1 = x[:1].detach().requires_grad_(True)
    with model.explanation_mode():
        l1 = model(x1)
        gx1, gp1 = torch.autograd.grad(l1[0, 3], [x1, model.pos_embed])
    total = (gx1 * x1).sum() + (gp1 * model.pos_embed).sum()
    assert total.item() == pytest.approx(l1[0, 3].item() - model.logit_bias, rel=1e-6)


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_interface(name):
    model = xai_bench.get_model(name).eval()
    images = torch.rand(3, 3, 32, 32)
    x = model.encode(images)
    assert x.shape[1] == model.in_channels
    with model.record_attention() as maps:
        logits = model(x)
    assert logits.shape == (3, model.num_classes) == (3, 10)
    assert model.image_size == (32, 32) and model.token_grid == (8, 8)
    assert model.pooling == "mean"
    assert len(maps) == model.num_blocks
    n = model.num_tokens
    assert all(m.shape == (3, model.blocks[0].attn.num_heads, n, n) for m in maps)
    # attention maps stay in the graph so methods can take their gradients
    grads = torch.autograd.grad(logits[:, 0].sum(), maps)
    assert all(g.shape == m.shape for g, m in zip(grads, maps))
    conf = model.confidence(logits)
    assert ((conf >= 0) & (conf <= 1)).all()
    assert model.training_loss == ("bce" if name.startswith("bcos") else "ce")
    assert (model.logit_bias != 0) == name.startswith("bcos")
    with model.explanation_mode():
        pass
    # not recording any more
    model(x)
    assert model.blocks[0].attn.attention is None


def test_conventional_attention_rows_sum_to_one_and_bcos_applied_attention_is_recorded():
    for name in ("vit_nano", "bcos_vit_nano"):
        model = xai_bench.get_model(name).eval()
        with torch.no_grad(), model.record_attention() as maps:
            model(model.encode(torch.rand(2, 3, 32, 32)))
        rows = maps[0].sum(-1)
        if name == "vit_nano":
            torch.testing.assert_close(rows, torch.ones_like(rows))
        else:  # multiplicative prior × N: rows sum to ~1 at init (prior = uniform)
            assert rows.mean().item() == pytest.approx(1.0, rel=0.3)


def test_batched_forward_equals_per_image():
    torch.manual_seed(0)
    for name in ("bcos_vit_nano", "vit_nano"):
        model = xai_bench.get_model(name).eval()
        x = model.encode(torch.rand(4, 3, 32, 32))
        with torch.no_grad():
            batched = model(x)
            single = torch.cat([model(x[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="position"):
        xai_bench.get_model("bcos_vit_nano", position="sideways")
    with pytest.raises(ValueError, match="divisible"):
        xai_bench.get_model("vit_nano", image_size=30)


def test_initial_activations_are_order_one():
    # The chosen gains keep logits O(1) around the bias at init (docs: scale constants).
    torch.manual_seed(0)
    model = xai_bench.get_model("bcos_vit_nano").eval()
    with torch.no_grad():
        logits = model(model.encode(torch.rand(16, 3, 32, 32)))
    spread = (logits - model.logit_bias).pow(2).mean().sqrt().item()
    assert 0.05 < spread < 20
