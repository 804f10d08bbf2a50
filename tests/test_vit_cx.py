"""ViT-CX (docs/definitions.md, 'vit_cx'): the call contract on both nano models (random init), batched
calls equal per-image calls, cluster sanity, the clustering rule against a brute-force
complete-linkage reference, known answers on a hand-built model (exact saliency formula,
delta correction, coverage normalisation; the reference's perturbation of the encoded input
with perturb_space="model"), and the number of forward passes and chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_bench
from xai_bench.methods.base import content_seed
from xai_bench.methods.vit_cx import (
    ViTCX, attention_input_norm, channel_maps, cluster_labels, cluster_masks, decode, mask_noise,
)


# The nano builders, made smaller still (8×8 tokens of dimension 32 at 32×32) to stay fast
# on two shared CPU cores; random initialisation.
TINY = dict(num_classes=4, embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16),
            stem_strides=(2, 2), patch_size=1)


@pytest.fixture(scope="module")
def models():
    out = {}
    for name in ("bcos_vit_nano", "vit_nano"):
        torch.manual_seed(0)
        out[name] = xai_bench.get_model(name, **TINY).eval()
    return out


def images(n, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g)
    return (base + 0.3 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def assert_maps_close(a, b, rtol=1e-4):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------------------ contract
def test_registered_and_applies():
    method = xai_bench.get_method("vit_cx")
    assert isinstance(method, ViTCX) and method.kind == "perturbation"
    assert method.params == dict(noise_sd=0.1, distance_threshold=0.1, seed=0, chunk_size=64,
                                 shared_noise=False, perturb_space="model")
    assert ViTCX(perturb_space="rgb").params["perturb_space"] == "rgb"
    with pytest.raises(ValueError):
        ViTCX(chunk_size=0)


@pytest.mark.parametrize("bad", ["pixel", "RGB", "", None])
def test_bad_perturb_space_is_rejected(bad):
    with pytest.raises(ValueError, match=r"perturb_space.*'rgb', 'model'.*got " + repr(bad)):
        ViTCX(perturb_space=bad)


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_decode_and_norm_accessor(models, name):
    model = models[name]
    imgs = images(2)
    torch.testing.assert_close(decode(model, model.encode(imgs)), imgs, rtol=0, atol=1e-6)
    norm = attention_input_norm(model.blocks[-1])
    expected = model.blocks[-1].attn.norm if name.startswith("bcos") else model.blocks[-1].norm1
    assert norm is expected and ViTCX().applies_to(model)


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_contract_deterministic_batched_equals_single(models, name):
    model = models[name]
    x, targets = model.encode(images(3)), torch.tensor([0, 3, 1])
    method = ViTCX(chunk_size=48)
    maps = method(model, x, targets)
    assert maps.shape == (3, 32, 32) and maps.dtype == x.dtype and torch.isfinite(maps).all()
    assert maps.abs().amax((1, 2)).gt(0).all()
    n_batched = method.last_num_masks
    assert_maps_close(method(model, x, targets), maps, rtol=0)  # deterministic
    singles, counts = [], []
    for i in range(3):
        singles.append(method(model, x[i:i + 1], targets[i:i + 1]))
        counts.append(method.last_num_masks)
    assert_maps_close(maps, torch.cat(singles))
    assert n_batched == pytest.approx(np.mean(counts))
    # a different chunking gives the same result; a different seed a different one
    assert_maps_close(ViTCX(chunk_size=1000)(model, x, targets), maps)
    assert not torch.allclose(ViTCX(seed=1, chunk_size=48)(model, x, targets), maps)


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_model_space_batched_equals_single(models, name):
    """perturb_space="model" keeps the per-image seeding: a batched call equals the per-image
    calls and the chunking does not change the result (B-cos: 6-channel noise)."""
    model = models[name]
    x, targets = model.encode(images(3, seed=6)), torch.tensor([2, 0, 1])
    method = ViTCX(chunk_size=48, perturb_space="model")
    maps = method(model, x, targets)
    assert maps.shape == (3, 32, 32) and torch.isfinite(maps).all()
    assert maps.abs().amax((1, 2)).gt(0).all()
    singles = torch.cat([method(model, x[i:i + 1], targets[i:i + 1]) for i in range(3)])
    assert_maps_close(maps, singles)
    assert_maps_close(ViTCX(chunk_size=1000, perturb_space="model")(model, x, targets), maps)


def test_model_state_left_alone(models):
    model = models["vit_nano"]
    x, targets = model.encode(images(2)), torch.tensor([1, 2])
    expected = ViTCX()(model, x, targets)
    model.train()
    try:
        got = ViTCX()(model, x, targets)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert_maps_close(got, expected, rtol=0)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_cluster_count_and_masks(models, name):
    model = models[name]
    x = model.encode(images(2, seed=3))
    method = ViTCX()
    tokens, _ = method.features(model, x)
    dim = tokens.shape[-1]
    assert tokens.shape == (2, model.num_tokens, dim)
    for masks in method.masks(model, tokens, (32, 32)):
        assert 1 <= len(masks) <= dim
        assert masks.shape[1:] == (32, 32)
        flat = masks.flatten(1)
        torch.testing.assert_close(flat.amin(1), torch.zeros(len(masks)))
        torch.testing.assert_close(flat.amax(1), torch.ones(len(masks)))
    # a looser threshold merges more
    loose = ViTCX(distance_threshold=0.5).masks(model, tokens, (32, 32))
    tight = ViTCX(distance_threshold=0.01).masks(model, tokens, (32, 32))
    for lo, mid, hi in zip(loose, method.masks(model, tokens, (32, 32)), tight):
        assert len(lo) <= len(mid) <= len(hi)


def _brute_force_complete_linkage(vectors: np.ndarray, threshold: float) -> list[frozenset]:
    """Agglomerative clustering as scikit-learn runs it: repeatedly merge the two clusters
    with the smallest complete-linkage cosine distance while it is below the threshold."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    dist = 1 - unit @ unit.T
    clusters = [{i} for i in range(len(vectors))]
    while len(clusters) > 1:
        best, pair = np.inf, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                d = max(dist[i, j] for i in clusters[a] for j in clusters[b])
                if d < best:
                    best, pair = d, (a, b)
        if best >= threshold:
            break
        a, b = pair
        clusters[a] |= clusters.pop(b)
    return sorted(frozenset(c) for c in clusters)


def _partition(labels):
    return sorted(frozenset(np.flatnonzero(labels == k)) for k in np.unique(labels[labels >= 0]))


def test_clustering_matches_brute_force_complete_linkage(models):
    model = models["vit_nano"]
    tokens, _ = ViTCX().features(model, model.encode(images(1, seed=5)))
    maps = channel_maps(tokens[0], model.token_grid, (32, 32))
    flat = maps.flatten(1).double().numpy()
    for threshold in (0.05, 0.1, 0.3):
        labels = cluster_labels(maps, threshold)
        assert _partition(labels) == _brute_force_complete_linkage(flat, threshold)
        assert list(np.unique(labels)) == list(range(labels.max() + 1))
        # labels are numbered by first appearance
        assert [labels[i] for i in sorted(np.unique(labels, return_index=True)[1])] == \
            list(range(labels.max() + 1))


# --------------------------------------------------------------------------- known answers
class FakeViT(nn.Module):
    """A 3-channel "ViT" whose token grid is the 8×8 pixel grid (so upsampling is the
    identity), whose last attention-input norm sees fixed feature maps, and whose logits are
    affine in the input: ``logit_c = Σ W_c ⊙ x + b_c``. ``confidence`` is a given function."""

    def record_attention(self):  # the attention capability (ViT-CX itself never calls it)
        raise NotImplementedError

    def __init__(self, feature_maps, weight, bias, confidence=lambda z: z):
        super().__init__()
        d, h, w = feature_maps.shape
        self.in_channels, self.image_size, self.token_grid = 3, (h, w), (h, w)
        self.num_classes = weight.shape[0]
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1, dtype=weight.dtype))
        self.register_buffer("std", torch.ones(1, 3, 1, 1, dtype=weight.dtype))
        self.register_buffer("tokens", feature_maps.reshape(d, h * w).T.contiguous())
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        block = nn.Module()
        block.norm1 = nn.Identity()
        self.blocks = nn.ModuleList([block])
        self._confidence = confidence

    def encode(self, images):
        return images

    def confidence(self, logits):
        return self._confidence(logits)

    def forward(self, x):
        self.blocks[-1].norm1(self.tokens.expand(x.shape[0], -1, -1))
        return torch.einsum("bchw,kchw->bk", x, self.weight) + self.bias


def _ramp_model(confidence=lambda z: z):
    """Feature maps that form exactly 2 clusters with known masks:
    {r, 3r+1, r²} -> M1 = (2r + r²)/3 and {1−r} -> M2 = 1−r (cosine distance 0.6 between
    r and 1−r; 0.03 between r and r²), plus a constant channel that is dropped."""
    r = (torch.arange(8, dtype=torch.float64) / 7).expand(8, 8)
    feats = torch.stack([r, 3 * r + 1, 1 - r, r ** 2, torch.full_like(r, 5.0)])
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64) / 8
    bias = torch.tensor([0.3, -0.2], dtype=torch.float64)
    model = FakeViT(feats, weight, bias, confidence)
    return model, torch.stack([(2 * r + r ** 2) / 3, 1 - r])


def test_known_masks_of_the_fake_model():
    model, expected = _ramp_model()
    method = ViTCX()
    tokens, _ = method.features(model, torch.rand(1, 3, 8, 8, dtype=torch.float64))
    (masks,) = method.masks(model, tokens, (8, 8))
    torch.testing.assert_close(masks, expected)
    assert method.applies_to(model)


def _expected_saliency(model, x, targets, masks, scores_fn):
    out = []
    for b in range(len(x)):
        s = torch.stack([scores_fn(b, i, m) for i, m in enumerate(masks)])
        out.append((s[:, None, None] * masks).sum(0) / masks.sum(0) / len(masks))
    return torch.stack(out)


def test_known_answer_affine_confidence_noise_cancels():
    """For an affine confidence the delta correction cancels the (shared) noise exactly:
    s_i = p(x⊙M_i), saliency = Σ s_i M_i / Σ M_j / N."""
    model, masks = _ramp_model()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1])
    method = ViTCX(chunk_size=3)
    got = method(model, x, targets)
    assert method.last_num_masks == 2

    def score(b, i, m):
        return model(x[b:b + 1] * m)[0, targets[b]]

    torch.testing.assert_close(got, _expected_saliency(model, x, targets, masks, score))


def test_known_answer_nonlinear_confidence_with_noise():
    """A nonlinear confidence: s_i = p(x⊙M_i + ε_i(1−M_i)) − p(x + ε_i(1−M_i)) + p(x) with the
    same ε_i in both perturbed images of mask i (noise on the RGB image, seeded by the image's
    content and the mask index); different masks get different draws by default."""
    model, masks = _ramp_model(confidence=lambda z: torch.tanh(z) ** 2)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 0])

    def p(inp, b):
        return model.confidence(model(model.encode(inp)))[0, targets[b]]

    for shared in (False, True):
        method = ViTCX(noise_sd=0.3, seed=7, chunk_size=5, shared_noise=shared)
        got = method(model, x, targets)

        def score(b, i, m):
            eps = mask_noise(content_seed(x[b], 7), i, (3, 8, 8), 0.3, "cpu", torch.float64,
                             shared=shared)
            xb = x[b:b + 1]
            return p(xb * m + eps * (1 - m), b) - p(xb + eps * (1 - m), b) + p(xb, b)

        expected = _expected_saliency(model, x, targets, masks, score)
        torch.testing.assert_close(got, expected)
        # the noise matters for a nonlinear confidence
        assert not torch.allclose(ViTCX(noise_sd=0.0)(model, x, targets), got)

    e0, e1 = (mask_noise(123, i, (3, 8, 8), 1.0, "cpu", torch.float64) for i in (0, 1))
    assert not torch.allclose(e0, e1) and e0.std().item() == pytest.approx(1, abs=0.3)
    s0, s1 = (mask_noise(123, i, (3, 8, 8), 1.0, "cpu", torch.float64, shared=True)
              for i in (0, 1))
    torch.testing.assert_close(s0, s1)


class NormalisedFakeViT(FakeViT):
    """FakeViT behind a conventional mean/std encoding with std 0.5, so that σ in RGB is 2σ in
    model space and a black pixel is not the data mean: the two perturbation spaces differ."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dtype = self.weight.dtype
        self.mean.copy_(torch.tensor([0.4, 0.5, 0.6], dtype=dtype).reshape(1, 3, 1, 1))
        self.std.fill_(0.5)

    def encode(self, images):
        return (images - self.mean) / self.std


def _normalised_ramp_model():
    plain, masks = _ramp_model()
    model = NormalisedFakeViT(plain.tokens.T.reshape(-1, 8, 8), plain.weight, plain.bias,
                              confidence=lambda z: torch.tanh(z) ** 2)
    return model, masks


def test_known_answer_model_space_is_the_reference_formula():
    """perturb_space="model" is the reference's perturbation of the encoded input x:
    s_i = p(x⊙M_i + ε_i(1−M_i)) − p(x + ε_i(1−M_i)) + p(x), no re-encoding, with ε_i drawn as
    in the RGB space (seeded by the encoded image and the mask index)."""
    model, masks = _normalised_ramp_model()
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x, targets = model.encode(rgb), torch.tensor([0, 1])

    def p(inp, b):
        return model.confidence(model(inp))[0, targets[b]]

    for shared in (False, True):
        method = ViTCX(seed=7, chunk_size=3, shared_noise=shared, perturb_space="model")
        got = method(model, x, targets)
        assert method.last_num_masks == 2

        def score(b, i, m):
            eps = mask_noise(content_seed(x[b], 7), i, (3, 8, 8), 0.1, "cpu", torch.float64,
                             shared=shared)
            xb = x[b:b + 1]
            return p(xb * m + eps * (1 - m), b) - p(xb + eps * (1 - m), b) + p(xb, b)

        torch.testing.assert_close(got, _expected_saliency(model, x, targets, masks, score))


def test_rgb_and_model_space_differ_and_masked_pixels_are_the_mean():
    """On a mean/std model the space matters: in model space a fully masked-out pixel of the
    perturbed input is 0 + ε (the data mean plus noise of σ in model units), in RGB space it is
    black plus noise, encoded: (ε − mean) / std."""
    model, masks = _normalised_ramp_model()
    rgb = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x, targets = model.encode(rgb), torch.tensor([1])
    assert (masks[0][:, 0] == 0).all() and (masks[1][:, 7] == 0).all()
    eps = [mask_noise(content_seed(x[0], 0), i, (3, 8, 8), 0.1, "cpu", torch.float64)
           for i in range(2)]
    maps, inputs = {}, {}
    for space in ("rgb", "model"):
        seen = []
        handle = model.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
        try:
            maps[space] = ViTCX(perturb_space=space)(model, x, targets)
        finally:
            handle.remove()
        assert len(seen) == 2 and seen[1].shape == (4, 3, 8, 8)  # clean, then 2N perturbed
        inputs[space] = seen[1]
    assert not torch.allclose(maps["rgb"], maps["model"], rtol=1e-3, atol=0)
    # item 2i is mask i's masked image; M_0 is 0 in column 0, M_1 in column 7
    for item, i, col in ((0, 0, 0), (2, 1, 7)):
        torch.testing.assert_close(inputs["model"][item, :, :, col], eps[i][:, :, col])
        black = model.encode(eps[i][None])[0]
        torch.testing.assert_close(inputs["rgb"][item, :, :, col], black[:, :, col])
    # item 2i+1 is mask i's noise-only image: x + ε where M_i = 0
    torch.testing.assert_close(inputs["model"][1, :, :, 0], (x[0] + eps[0])[:, :, 0])


def test_coverage_normalisation_and_uncovered_pixels():
    """Disjoint binary masks leave uncovered pixels at 0; covered pixels get s_i / N."""
    left = torch.zeros(8, 8, dtype=torch.float64)
    left[:, :3] = 1
    right = torch.zeros_like(left)
    right[:, 5:] = 1
    ones, zero = torch.ones(1, 3, 8, 8, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    model = FakeViT(torch.stack([left, 2 * left, right]), ones, zero)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    got = ViTCX()(model, x, torch.tensor([0]))[0]
    s_left, s_right = (x[0] * left).sum(), (x[0] * right).sum()  # affine: s_i = p(x⊙M_i)
    torch.testing.assert_close(got[:, :3], (s_left / 2).expand(8, 3))
    torch.testing.assert_close(got[:, 5:], (s_right / 2).expand(8, 3))
    assert (got[:, 3:5] == 0).all()


def test_no_masks_gives_zero_map():
    flat = torch.ones(2, 8, 8, dtype=torch.float64)  # constant maps: no masks at all
    model = FakeViT(flat, torch.ones(1, 3, 8, 8, dtype=torch.float64),
                    torch.zeros(1, dtype=torch.float64))
    method = ViTCX()
    got = method(model, torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 0]))
    assert (got == 0).all() and method.last_num_masks == 0
    assert len(cluster_masks(torch.zeros(3, 4, 4), 0.1)) == 0


# --------------------------------------------------------------------------- forward passes
@pytest.mark.parametrize("space", ["rgb", "model"])
@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_forward_passes_are_counted_and_chunked(models, name, space):
    model = models[name]
    x, targets = model.encode(images(3, seed=4)), torch.tensor([0, 1, 2])
    calls = []
    handle = model.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    try:
        chunk = 40
        method = ViTCX(chunk_size=chunk, perturb_space=space)
        tokens, _ = method.features(model, x)
        counts = [len(m) for m in method.masks(model, tokens, (32, 32))]
        calls.clear()
        method(model, x, targets)
    finally:
        handle.remove()
    total = 2 * sum(counts)
    assert calls[0] == 3  # one clean forward for features and p(x)
    assert len(calls) == 1 + math.ceil(total / chunk)
    assert all(c == chunk for c in calls[1:-1]) and sum(calls[1:]) == total
    assert sum(calls) <= sum(2 * n + 2 for n in counts)
    assert method.last_num_masks == pytest.approx(np.mean(counts))
    assert method.last_forward_passes == pytest.approx((3 + total) / 3)
