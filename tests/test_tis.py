"""TIS (docs/definitions.md, 'tis'): agreement with an independent mirror of the authors'
algorithm (same weights, same k-means initialisation), the k-means against the reference
library's update rule, the token-dropping forward (all tokens kept = the full forward; a
dropped forward = the transformer run by hand on the token subset, with the additive prior
restricted), known answers, batched = per-image, chunking, applicability and parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import xai_bench
from xai_bench.errors import ConfigError
from xai_bench.methods.base import MethodNotApplicable
from xai_bench.methods.tis import (
    TIS, block_activations, initial_channels, keep_indices, kept_tokens, kmeans, token_dropping,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16), num_classes=4)
TIMM_TINY = dict(img_size=32, patch_size=8, embed_dim=48, num_heads=3, depth=2, num_classes=10)


def build(name, **kwargs):
    torch.manual_seed(0)
    return xai_bench.get_model(name, **{**TINY, **kwargs}).eval()


@pytest.fixture(scope="module")
def models():
    return {"vit": build("vit_nano"),
            "bcos_embedding": build("bcos_vit_nano", position="embedding"),
            "bcos_additive": build("bcos_vit_nano", position="additive")}


@pytest.fixture(scope="module")
def timm_model():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    return xai_bench.get_model("timm:vit_tiny_patch16_224", **TIMM_TINY).eval()


def images(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = model.image_size
    return model.encode(torch.rand(n, 3, *size, generator=g))


def spread_prior(model):
    """Random additive priors (they start at 0, which would hide a wrong restriction)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.prior.copy_(torch.randn(blk.attn.prior.shape, generator=g))


# ----------------------------------------------------------------- the reference, mirrored
def mirror_kmeans(points, init, max_iter=100, tol=1e-4):
    """The reference k-means library's full-batch update (learning rate 1), written out."""
    c = points[init]
    k = c.shape[0]
    for _ in range(max_iter):
        sim = 2 * points @ c.transpose(-2, -1) - (points ** 2).sum(dim=1)[:, None] \
            - (c ** 2).sum(dim=1)[None, :]
        closest = sim.max(dim=-1)[1]
        mask = (closest[None].expand(k, -1) == torch.arange(k)[:, None]).float()
        grad = mask @ points / mask.sum(-1)[:, None]
        grad[grad != grad] = 0
        error = (grad - c).pow(2).sum()
        c = c * 0 + grad
        if error <= tol:
            break
    return c


def mirror_tis(model, x1, class_idx, init, tokens_ratio=0.5, batch_size=5, normalise=True,
               hook_timm_pos_drop=False):
    """The authors' TIS on one image, step by step as their code does it: concatenated block
    outputs without the prefix tokens, k-means centroids, top-k binary masks, a hook that
    turns the single image's token sequence into one sequence per mask (prefix tokens kept in
    front), the target's confidence, coverage-normalised sum, min-max, bilinear upsampling."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    acts = []
    handles = [b.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
               for b in model.blocks]
    with torch.no_grad():
        model(x1)
    for h in handles:
        h.remove()
    points = torch.cat(acts, dim=-1).squeeze(0)[prefix:].T
    raw_masks = mirror_kmeans(points, init)
    n_tok = raw_masks.shape[1]
    index_list, mask_list = [], []
    for raw in raw_masks:
        idx = raw.topk(int(tokens_ratio * n_tok))[1]
        binary = torch.zeros_like(raw)
        binary[idx] = 1
        index_list.append(idx)
        mask_list.append(binary)
    current = {}

    def sample(seq):
        head, tokens = seq[:, :prefix], seq[:, prefix:]
        return torch.cat([torch.cat([head, tokens[:, idx]], dim=1)
                          for idx in current["indices"]])

    if hook_timm_pos_drop:  # where the authors hook timm ViTs
        handle = model.model.pos_drop.register_forward_hook(lambda m, i, o: sample(o))
    else:  # our ViTs have no pos_drop: the input of the first block is the same sequence
        handle = model.blocks[0].register_forward_pre_hook(lambda m, a: (sample(a[0]),))
    scores = []
    with torch.no_grad():
        for start in range(0, len(index_list), batch_size):
            current["indices"] = index_list[start:start + batch_size]
            scores.append(model.confidence(model(x1))[:, class_idx])
    handle.remove()
    scores = torch.cat(scores)
    masks = torch.vstack(mask_list).T
    sal = (scores * masks).sum(-1) / masks.sum(-1)
    sal = sal.reshape(model.token_grid)
    if normalise:
        sal = sal - sal.min()
        sal = sal / sal.max()
    return F.interpolate(sal[None, None], size=model.image_size, mode="bilinear",
                         align_corners=False)[0, 0]


def mirror_init(model, x, seed, n_masks):
    points = block_activations(model, x[None])[0]
    return initial_channels(x, seed, points.shape[0], min(n_masks, points.shape[0]))


@pytest.mark.parametrize("key", ["vit", "bcos_embedding"])
def test_equals_the_mirrored_reference(models, key):
    model = models[key]
    x, targets = images(model, 2), torch.tensor([1, 3])
    method = TIS(n_masks=20, chunk_size=7, seed=5)
    maps = method(model, x, targets)
    assert method.last_num_masks == 20 and method.last_tokens_kept == 32
    for b in range(2):
        init = mirror_init(model, x[b], 5, 20)
        expected = mirror_tis(model, x[b:b + 1], int(targets[b]), init)
        assert not expected.isnan().any()  # every token kept by some mask (else NaN there)
        torch.testing.assert_close(maps[b], expected, rtol=1e-5, atol=1e-5)


def test_equals_the_mirrored_reference_on_timm_with_cls(timm_model):
    x, targets = images(timm_model, 2, seed=4), torch.tensor([2, 7])
    maps = TIS(n_masks=10, chunk_size=4)(timm_model, x, targets)
    for b in range(2):
        init = mirror_init(timm_model, x[b], 0, 10)
        expected = mirror_tis(timm_model, x[b:b + 1], int(targets[b]), init,
                              hook_timm_pos_drop=True)
        assert not expected.isnan().any()
        torch.testing.assert_close(maps[b], expected, rtol=1e-5, atol=1e-5)


def test_kmeans_matches_the_library_rule_also_with_empty_clusters():
    g = torch.Generator().manual_seed(1)
    points = torch.randn(40, 6, generator=g)
    points[30:] = points[0]  # duplicates: their centroids tie and one of them empties
    for init in (torch.randperm(40, generator=g)[:9], torch.tensor([0, 30, 31, 5, 6])):
        expected = mirror_kmeans(points, init)
        for stop_early in (True, False):  # the CUDA path runs every iteration
            torch.testing.assert_close(kmeans(points, init, stop_early=stop_early), expected,
                                       rtol=0, atol=1e-6)
    # centroids 0 and 30 tie for every point: the first wins, the empty second becomes 0
    first = kmeans(points, torch.tensor([0, 30]), max_iter=1)
    assert torch.equal(first[1], torch.zeros(6)) and torch.allclose(first[0], points.mean(0))


def test_keep_indices_are_the_top_values_ties_to_the_lower_index():
    c = torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0]])
    assert keep_indices(c, 2).tolist() == [[1, 3], [0, 1]]


# ----------------------------------------------------------------------- token dropping
def bcos_v2_tiny():
    torch.manual_seed(0)
    return xai_bench.get_model("bcos_v2.simple_vit_ti_patch16_224", image_size=32, patch_size=8,
                               depth=2, dim=48, heads=3, mlp_dim=96, num_classes=4).eval()


@pytest.mark.parametrize("key", ["vit", "bcos_embedding", "bcos_additive", "timm", "bcos_v2"])
def test_keeping_every_token_is_the_full_forward(models, timm_model, key):
    if key == "timm":
        model = timm_model
    else:
        model = bcos_v2_tiny() if key == "bcos_v2" else models[key]
    assert token_dropping(model) is not None
    if key == "bcos_additive":
        spread_prior(model)
    x = images(model, 2)
    n = model.token_grid[0] * model.token_grid[1]
    keep = torch.arange(n).repeat(3, 1)
    source = torch.tensor([0, 1, 1])
    with torch.no_grad():
        full = model(x)
        with kept_tokens(model, keep, source):
            dropped = model(x)
    torch.testing.assert_close(dropped, full[source], rtol=1e-5, atol=1e-5)


def test_dropped_forward_is_the_vit_on_the_token_subset(models):
    model = models["vit"]
    x = images(model, 2)
    keep = torch.tensor([[0, 5, 9, 63], [1, 2, 3, 40]])
    with torch.no_grad():
        with kept_tokens(model, keep, torch.tensor([1, 0])):
            dropped = model(x)
        t = (model.tokeniser(x) + model.pos_embed)[torch.tensor([[1], [0]]), keep]
        for blk in model.blocks:
            t = blk(t)
        by_hand = model.head(model.norm(t).mean(1))
    torch.testing.assert_close(dropped, by_hand, rtol=1e-5, atol=1e-6)


def test_additive_prior_is_restricted_to_the_kept_tokens(models):
    model = models["bcos_additive"]
    spread_prior(model)
    twin = build("bcos_vit_nano", position="additive")
    twin.load_state_dict(model.state_dict())
    x = images(model, 1)
    keep = torch.tensor([2, 7, 8, 30, 31, 50])
    with torch.no_grad():
        for blk in twin.blocks:  # a model whose prior *is* the restricted one
            blk.attn.prior = torch.nn.Parameter(blk.attn.prior[:, keep][:, :, keep].clone())
        t = twin.tokens(x)[:, keep]
        for blk in twin.blocks:
            t = blk(t)
        by_hand = twin.logit_layer(twin.head(t.mean(1)))
        with kept_tokens(model, keep[None], torch.tensor([0])):
            dropped = model(x)
        # the model is as it was: its priors are parameters again, no hook is left
        full = model(x)
    for blk in model.blocks:
        assert isinstance(blk.attn.prior, torch.nn.Parameter)
        assert blk.attn.prior.shape[-1] == model.num_tokens
    assert not model.blocks[0]._forward_pre_hooks
    assert sum(1 for n, _ in model.named_parameters() if n.endswith("prior")) == 2
    torch.testing.assert_close(dropped, by_hand, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(dropped, full)


# ----------------------------------------------------------------------- known answers
def test_keeping_all_tokens_gives_the_clean_confidence(models):
    model = models["vit"]
    x, targets = images(model, 2), torch.tensor([0, 2])
    maps = TIS(n_masks=5, tokens_ratio=1.0, normalise=False)(model, x, targets)
    with torch.no_grad():
        p = model.confidence(model(x)).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(maps, p[:, None, None].expand_as(maps), rtol=1e-5, atol=1e-6)
    flat = TIS(n_masks=5, tokens_ratio=1.0)(model, x, targets)  # constant: min-max gives 0
    assert torch.equal(flat, torch.zeros_like(flat))


def test_saliency_is_the_coverage_normalised_score_average():
    method = TIS(normalise=False)

    class Grid:
        token_grid = (1, 4)

    keep = torch.tensor([[[0, 1], [1, 2], [0, 1]]])
    scores = torch.tensor([[0.2, 0.8, 0.5]])
    sal = method.saliency(Grid(), keep, scores, (1, 4))
    # token 0: (0.2+0.5)/2, token 1: (0.2+0.8+0.5)/3, token 2: 0.8, token 3: never kept -> 0
    torch.testing.assert_close(sal[0, 0], torch.tensor([0.35, 0.5, 0.8, 0.0]))


# ----------------------------------------------------------- contract, batching, chunking
@pytest.mark.parametrize("key", ["vit", "bcos_additive"])
def test_batched_equals_per_image_and_chunking_changes_nothing(models, key):
    model = models[key]
    x, targets = images(model, 3, seed=2), torch.tensor([0, 3, 1])
    maps = TIS(n_masks=8, chunk_size=5)(model, x, targets)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    single = torch.cat([TIS(n_masks=8, chunk_size=5)(model, x[i:i + 1], targets[i:i + 1])
                        for i in range(3)])
    torch.testing.assert_close(maps, single, rtol=1e-5, atol=1e-6)
    for chunk in (1, 64):
        torch.testing.assert_close(TIS(n_masks=8, chunk_size=chunk)(model, x, targets), maps,
                                   rtol=1e-5, atol=1e-5)  # BLAS blocking: rounding only
    other = TIS(n_masks=8, seed=1)(model, x, targets)
    assert not torch.allclose(other, maps)  # the seed draws other initial centroids


def test_applicability_follows_the_position_scheme(models, timm_model):
    method = xai_bench.get_method("tis")
    assert isinstance(method, TIS) and method.kind == "perturbation"
    assert method.params == dict(n_masks=1024, tokens_ratio=0.5, normalise=True, seed=0,
                                 chunk_size=128)
    for model in (*models.values(), timm_model, build("bcos_vit_nano", position="none")):
        assert method.applies_to(model), model
    assert token_dropping(models["bcos_additive"]) == "sequence+prior"
    multiplicative = build("bcos_vit_nano")
    assert multiplicative.position == "multiplicative" and not method.applies_to(multiplicative)
    with pytest.raises(MethodNotApplicable):
        method(multiplicative, images(multiplicative, 1), torch.tensor([0]))
    with pytest.raises(ValueError, match="cannot drop tokens"):
        with kept_tokens(multiplicative, torch.zeros(1, 1, dtype=torch.long),
                         torch.zeros(1, dtype=torch.long)):
            pass


def test_fewer_channels_than_masks_gives_one_mask_per_channel(models):
    model = models["vit"]  # 2 blocks × 32 features = 64 channels
    method = TIS(n_masks=1000, tokens_ratio=0.1)
    method(model, images(model, 1), torch.tensor([0]))
    assert method.last_num_masks == 64 and method.last_tokens_kept == 6


@pytest.mark.parametrize("key, value", [
    ("n_masks", 0), ("n_masks", 2.5), ("tokens_ratio", 0), ("tokens_ratio", 1.5),
    ("tokens_ratio", math.nan), ("chunk_size", 0), ("seed", 0.5), ("normalise", "yes")])
def test_bad_parameters_are_one_line_errors(key, value):
    with pytest.raises(ConfigError) as info:
        TIS(**{key: value})
    assert "\n" not in str(info.value) and key in str(info.value)
