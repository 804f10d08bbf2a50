"""RISE (docs/definitions.md, 'rise'): equality with a mirror of the reference algorithm
(mask generation by linear upsampling with mirror reflection and a random crop, one masked
image at a time, softmax score, weighted sum of masks / N / p1), a known answer on a linear
"model", the masks themselves, batched = per-image, chunking and out-of-memory halving,
forward counts, and one-line errors for bad parameters. Tiny models, random initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from torch import nn

import xai_bench
from xai_bench.compute import chunking
from xai_bench.compute.precision import forward_options
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.errors import ConfigError
from xai_bench.methods.rise import RISE, interpolation_rows

from conftest import model_raising_above

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16), num_classes=4)


@pytest.fixture(autouse=True)
def _fresh_chunk_cache():
    chunking.clear_cache()
    yield
    chunking.clear_cache()


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
    return (base + 0.4 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def assert_maps_close(a, b, rtol=1e-5):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------ the reference's mirror
def reference_masks(generator, n, s, p1, size):
    """The reference's ``generate_masks``, with its numpy draws replaced by the same torch
    generator draws as the implementation (grids, then row offsets, then column offsets):
    per mask, linear upsampling of the s×s grid to (s+1)·cell by scipy's zoom with
    pixel-edge alignment and mirror reflection (what ``skimage.transform.resize(order=1,
    mode="reflect", anti_aliasing=False)`` calls), cropped at the random offset."""
    h, w = size
    cell = (math.ceil(h / s), math.ceil(w / s))
    up = ((s + 1) * cell[0], (s + 1) * cell[1])
    grid = (torch.rand(n, s, s, generator=generator, dtype=torch.float64) < p1).numpy()
    dy = torch.randint(0, cell[0], (n,), generator=generator).numpy()
    dx = torch.randint(0, cell[1], (n,), generator=generator).numpy()
    masks = np.empty((n, h, w))
    for i in range(n):
        big = ndi.zoom(grid[i].astype("float64"), (up[0] / s, up[1] / s), order=1,
                       mode="mirror", grid_mode=True)
        assert big.shape == up
        masks[i] = big[dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return torch.from_numpy(masks).float()


def reference_rise(model, x, target, masks, p1, space="rgb", score="softmax", baseline=0.0,
                   normalise="p1"):
    """The reference's ``forward`` for one image: one masked input per mask, the class
    score, ``Σ_i p_i M_i / N / p1`` (``normalise="coverage"``: ``/ Σ_i M_i`` instead)."""
    n, h, w = masks.shape
    sal = torch.zeros(h, w)
    rgb = xai_bench.contracts.model.decode(model, x[None])[0] if space == "rgb" else x
    for i in range(n):
        m = masks[i]
        if space == "rgb":
            inp = model.encode((rgb * m + baseline * (1 - m))[None])
        else:
            inp = (x * m + baseline * (1 - m))[None]
        with torch.no_grad():
            logits = model(inp)
        if score == "softmax":
            value = logits.softmax(-1)[0, target]
        elif score == "probability":
            value = model.confidence(logits)[0, target]
        else:
            value = logits[0, target]
        sal += value * m
    if normalise == "coverage":
        return sal / masks.sum(0)
    return sal / n / p1


@pytest.mark.parametrize("name,space,score,normalise", [
    ("vit_nano", "model", "softmax", "p1"),        # the reference literally: x ⊙ M, softmax
    ("vit_nano", "rgb", "probability", "p1"),
    ("bcos_vit_nano", "rgb", "softmax", "p1"),
    ("bcos_vit_nano", "model", "logit", "p1"),
    ("bcos_vit_nano", "rgb", "probability", "coverage"),
    ("vit_nano", "model", "softmax", "coverage"),
])
def test_equals_the_reference_mirror(models, name, space, score, normalise):
    model = models[name]
    x, targets = model.encode(images(2)), torch.tensor([1, 3])
    n, s, p1 = 48, 5, 0.4
    method = RISE(n_masks=n, grid=s, p1=p1, seed=3, perturb_space=space, score=score,
                  chunk_size=40, normalise=normalise)
    maps = method(model, x, targets)
    masks = reference_masks(cpu_generator(derive_seed(3, "rise")), n, s, p1, (32, 32))
    torch.testing.assert_close(method.masks(x).float(), masks, rtol=0, atol=1e-6)
    for b in range(2):
        expected = reference_rise(model, x[b], int(targets[b]), masks, p1, space, score,
                                  normalise=normalise)
        assert_maps_close(maps[b], expected)


def test_per_image_masks_equal_the_mirror_with_the_image_seed(models):
    model = models["vit_nano"]
    x, targets = model.encode(images(2, seed=4)), torch.tensor([0, 2])
    method = RISE(n_masks=32, grid=4, seed=1, shared_masks=False, baseline=0.5)
    maps = method(model, x, targets)
    for b in range(2):
        gen = cpu_generator(derive_seed(content_seed(x[b], 1), "rise"))
        masks = reference_masks(gen, 32, 4, 0.5, (32, 32))
        expected = reference_rise(model, x[b], int(targets[b]), masks, 0.5, "rgb",
                                  "probability", baseline=0.5)
        assert_maps_close(maps[b], expected)


# ------------------------------------------------------------------------------ the masks
@pytest.mark.parametrize("s,size", [(8, (32, 32)), (7, (32, 32)), (3, (17, 29)), (1, (6, 6))])
def test_interpolation_rows_match_scipy_zoom(s, size):
    g = torch.Generator().manual_seed(s)
    for length in size:
        rows = interpolation_rows(s, length)
        cell = math.ceil(length / s)
        assert rows.shape == (cell, length, s)
        torch.testing.assert_close(rows.sum(-1), torch.ones(cell, length, dtype=torch.float64))
        line = torch.rand(s, generator=g, dtype=torch.float64)
        big = ndi.zoom(line.numpy(), (s + 1) * cell / s, order=1, mode="mirror", grid_mode=True)
        for d in range(cell):
            np.testing.assert_allclose((rows[d] @ line).numpy(), big[d:d + length],
                                       rtol=0, atol=1e-12)


def test_masks_are_smooth_in_range_and_keep_p1_on_average():
    x = torch.zeros(1, 3, 32, 32)
    masks = RISE(n_masks=400, grid=8, p1=0.3).masks(x)
    assert masks.shape == (400, 32, 32) and masks.dtype == torch.float64
    assert masks.min() >= 0 and masks.max() <= 1
    # one grid cell spans (s+1)·cell/s = 4.5 pixels: neighbours differ by at most 1/4.5
    assert (masks.diff(dim=1).abs().max() <= 1 / 4.5 + 1e-9)
    assert (masks.diff(dim=2).abs().max() <= 1 / 4.5 + 1e-9)
    assert abs(masks.mean().item() - 0.3) < 0.02
    # the offsets differ between masks: not all cell borders at the same place
    assert len({tuple(m[0, :5].tolist()) for m in masks}) > 50
    # seeded: the same seed gives the same masks, another seed others
    assert torch.equal(RISE(n_masks=400, grid=8, p1=0.3).masks(x), masks)
    assert not torch.equal(RISE(n_masks=400, grid=8, p1=0.3, seed=1).masks(x), masks)


# ------------------------------------------------------------------- known answer (linear)
class LinearScore(nn.Module):
    """A 'model' whose logit of class 0 is Σ w ⊙ image (RGB encoding, one channel used);
    class 1's logit is 0."""

    image_size = (16, 16)
    num_classes = 2
    training_loss = "ce"

    def __init__(self, weight):
        super().__init__()
        self.register_buffer("weight", weight)

    def encode(self, images):
        return images

    def confidence(self, logits):
        return logits.softmax(-1)

    def forward(self, x):
        first = (x[:, 0] * self.weight).flatten(1).sum(1)
        return torch.stack([first, torch.zeros_like(first)], dim=1)


def test_known_answer_on_a_linear_score():
    """For a linear logit ``f(img) = Σ_μ w_μ img_μ`` on a constant image of ones, masked to
    black, the RISE map is ``Σ_μ w_μ C(μ, λ) / p1`` with ``C = Σ_i M_i M_iᵀ / N`` the masks'
    second moment; with w the indicator of a square region, it is larger inside the region
    than anywhere away from it."""
    weight = torch.zeros(16, 16, dtype=torch.float64)
    weight[2:6, 9:13] = 1.0 / 16
    model = LinearScore(weight).double()
    x = torch.ones(1, 3, 16, 16, dtype=torch.float64)
    method = RISE(n_masks=600, grid=4, p1=0.5, score="logit")
    maps = method(model, x, torch.tensor([0]))[0]
    m = method.masks(x).flatten(1)  # (N, H·W)
    second = m.T @ m / m.shape[0]
    expected = (weight.flatten() @ second / 0.5).view(16, 16)
    torch.testing.assert_close(maps, expected, rtol=1e-10, atol=1e-12)
    inside = maps[2:6, 9:13].min()
    far = torch.cat([maps[10:, :6].flatten(), maps[12:, 12:].flatten()])
    assert inside > far.max() + 0.05
    # away from the region the map is E[f] · E[M] / p1 = p1 · p1 / p1 = p1, up to sampling
    assert abs(far.mean().item() - 0.5) < 0.05


def test_a_constant_score_gives_the_mean_mask_over_p1():
    """A score that ignores the image: the map is c · mean_i M_i / p1 (the reference does not
    normalise by the realised coverage)."""
    model = LinearScore(torch.zeros(16, 16))
    x = torch.rand(2, 3, 16, 16)
    method = RISE(n_masks=100, grid=4, p1=0.25)
    maps = method(model, x, torch.tensor([0, 1]))
    expected = method.masks(x).float().mean(0) / 0.25 * 0.5  # softmax of (0, 0): 0.5
    torch.testing.assert_close(maps, expected.expand(2, 16, 16), rtol=1e-5, atol=1e-6)
    # normalised by the coverage instead, the map is that constant exactly (up to rounding)
    flat = RISE(n_masks=100, grid=4, p1=0.25, normalise="coverage")(model, x,
                                                                     torch.tensor([0, 1]))
    torch.testing.assert_close(flat, torch.full((2, 16, 16), 0.5), rtol=1e-6, atol=1e-6)


def test_non_square_images():
    """Rows and columns have their own cell sizes (ceil(12/5) = 3, ceil(21/5) = 5)."""
    model = LinearScore(torch.zeros(12, 21))
    x = torch.rand(2, 3, 12, 21)
    method = RISE(n_masks=30, grid=5, p1=0.5, shared_masks=False)
    maps = method(model, x, torch.tensor([0, 0]))
    assert maps.shape == (2, 12, 21)
    masks = method.masks(x)
    assert masks.shape == (2, 30, 12, 21)
    for b in range(2):
        gen = cpu_generator(derive_seed(content_seed(x[b], 0), "rise"))
        torch.testing.assert_close(masks[b].float(), reference_masks(gen, 30, 5, 0.5, (12, 21)),
                                   rtol=0, atol=1e-6)
    torch.testing.assert_close(maps, masks.float().mean(1) / 0.5 * 0.5, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ contract and batching
def test_registered_with_its_defaults():
    method = xai_bench.get_method("rise")
    assert isinstance(method, RISE) and method.kind == "perturbation"
    assert method.params == dict(n_masks=2000, grid=8, p1=0.5, seed=0, chunk_size="auto",
                                 score="probability", perturb_space="rgb", baseline=0.0,
                                 shared_masks=True, normalise="p1")
    card = xai_bench.contracts.method.method_card(RISE)
    assert card.requires == () and card.place == 13 and card.colour == "#88CCEE"


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
@pytest.mark.parametrize("shared,normalise", [(True, "p1"), (False, "coverage")])
def test_batched_equals_per_image_and_chunking_changes_nothing(models, name, shared, normalise):
    model = models[name]
    x, targets = model.encode(images(3, seed=2)), torch.tensor([0, 3, 1])
    kw = dict(n_masks=40, grid=4, shared_masks=shared, normalise=normalise)
    method = RISE(chunk_size=50, **kw)
    maps = method(model, x, targets)
    assert maps.shape == (3, 32, 32) and maps.dtype == x.dtype and torch.isfinite(maps).all()
    assert method.applies_to(model) and method.last_forward_passes == 40
    for b in range(3):
        assert_maps_close(method(model, x[b:b + 1], targets[b:b + 1])[0], maps[b])
    assert_maps_close(RISE(chunk_size=1, **kw)(model, x, targets), maps)
    assert not torch.allclose(RISE(seed=5, **kw)(model, x, targets), maps)


def test_the_target_matters_and_a_batch_order_change_permutes(models):
    model = models["vit_nano"]
    x = model.encode(images(3, seed=6))
    method = RISE(n_masks=24, grid=4)
    maps = method(model, x, torch.tensor([0, 1, 2]))
    other = method(model, x, torch.tensor([3, 1, 2]))
    assert not torch.allclose(maps[0], other[0])
    assert_maps_close(other[1:], maps[1:])
    perm = torch.tensor([2, 0, 1])
    assert_maps_close(method(model, x[perm], torch.tensor([2, 0, 1])), maps[perm])


def test_forward_count_and_oom_halving(models, monkeypatch):
    model = models["vit_nano"]
    x, targets = model.encode(images(2, seed=7)), torch.tensor([1, 2])
    expected = RISE(n_masks=15, grid=4, chunk_size=10)(model, x, targets)
    calls = model_raising_above(model, 4, monkeypatch)
    got = RISE(n_masks=15, grid=4, chunk_size=10)(model, x, targets)
    assert calls[0] == 10 and max(calls[1:]) <= 5
    assert sum(c for c in calls if c <= 4) == 2 * 15  # every copy forwarded once
    assert_maps_close(got, expected)


def test_auto_chunk_on_the_cpu_and_an_explicit_bound(models, monkeypatch):
    model = models["vit_nano"]
    x, targets = model.encode(images(2, seed=9)), torch.tensor([0, 1])
    calls = model_raising_above(model, 10 ** 9, monkeypatch)  # only counts
    RISE(n_masks=40, grid=4)(model, x, targets)  # 80 copies, "auto": 32 on the CPU
    assert calls == [32, 32, 16]
    calls.clear()
    xai_bench.get_method("rise", n_masks=40, grid=4, chunk_size=25)(model, x, targets)
    assert calls == [25, 25, 25, 5]


def test_remembers_the_smaller_chunk(models, monkeypatch):
    model = models["vit_nano"]
    x, targets = model.encode(images(1)), torch.tensor([0])
    calls = model_raising_above(model, 3, monkeypatch)
    RISE(n_masks=12, grid=4, chunk_size=12)(model, x, targets)
    calls.clear()
    RISE(n_masks=12, grid=4, chunk_size=12)(model, x, targets)
    assert max(calls) <= 3  # the limit learnt from the first call holds for the second


def test_bf16_forwards_stay_close(models):
    model = models["vit_nano"]
    x, targets = model.encode(images(2, seed=8)), torch.tensor([0, 1])
    method = RISE(n_masks=24, grid=4)
    maps = method(model, x, targets)
    with forward_options("bf16"):
        low = method(model, x, targets)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - maps).abs().max() < 0.05 * maps.abs().max()


def test_train_mode_is_restored_and_empty_batch(models):
    model = models["vit_nano"].train()
    try:
        x = model.encode(images(1))
        RISE(n_masks=4, grid=2)(model, x, torch.tensor([0]))
        assert all(m.training for m in model.modules())
    finally:
        model.eval()
    empty = RISE(n_masks=4, grid=2)(model, x[:0], torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, 32, 32)


# ------------------------------------------------------------------------ bad parameters
@pytest.mark.parametrize("params", [
    dict(n_masks=0), dict(n_masks=2.5), dict(grid=0), dict(p1=0), dict(p1=1.5),
    dict(p1=float("nan")), dict(seed=1.5), dict(chunk_size=0), dict(chunk_size="big"),
    dict(score="prob"), dict(normalise="mean"),
    dict(perturb_space="pixel"), dict(baseline=float("inf")), dict(shared_masks="yes"),
])
def test_bad_parameters_are_one_line_errors(params):
    key = next(iter(params))
    with pytest.raises(ConfigError, match=rf"parameter '{key}' of method 'rise' must be") as e:
        RISE(**params)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        xai_bench.get_method("rise", **params)
    assert "\n" not in str(e.value) and key in str(e.value)
