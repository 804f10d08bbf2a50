"""faithfulness_correlation and road (xai_bench.metrics.faithfulness): equality with Quantus
0.6.0 on identical inputs (same model on the image, same maps, same random subsets / noise),
known answers, batched == per image, parts == whole, parameter errors."""

import numpy as np
import pytest
import torch
from torch import nn

import xai_bench
from xai_bench.compute.seeding import content_seed
from xai_bench.errors import ConfigError
from xai_bench.metrics import join_parts
from xai_bench.metrics import faithfulness as F
from xai_bench.metrics.quantus_adapter import ensure_quantus
from conftest import SelfLabelled

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16))


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return xai_bench.get_model("bcos_vit_nano", **TINY).eval()


class OnImages(nn.Module):
    """What Quantus is given: the model called on the image (it encodes its input), so that
    Quantus perturbs the image as we do. Records every input it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, images):
        self.seen.append(images.detach().clone())
        return self.model(self.model.encode(images))


class Grey(nn.Module):
    """The model on one-channel images (replicated to RGB by ``encode``): Quantus 0.6.0's ROAD
    indexes a (C, H*W) image with (C*H*W)-feature indices and fails on RGB inputs."""

    def __init__(self, model):
        super().__init__()
        self.model, self.training_loss, self.seen = model, model.training_loss, []

    def encode(self, grey):
        self.seen.append(grey.detach().clone())
        return self.model.encode(grey.expand(-1, 3, -1, -1))

    def forward(self, x):
        return self.model(x)

    def confidence(self, logits):
        return self.model.confidence(logits)


def _inputs(n=4, channels=3, side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, channels, side, side, generator=g),
            torch.randn(n, side, side, generator=g), torch.arange(n) % 4)


# ---- faithfulness correlation --------------------------------------------------------------

def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(nano, monkeypatch):
    """Quantus draws our subsets (np.random.choice answers them in its call order: run by
    run, image by image): equal to 1e-6 (measured 5e-8: its float32 logit drops)."""
    quantus = ensure_quantus()
    images, maps, targets = _inputs()
    runs, size = 12, 224
    subsets = F.draw_subsets(images, runs, size, seed=3)
    ours = F.faithfulness_correlation(nano, images, maps, targets, subsets)
    queue = [subsets[b, r].numpy() for r in range(runs) for b in range(len(images))]
    monkeypatch.setattr(np.random, "choice", lambda *a, **k: queue.pop(0))
    metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size,
                                             disable_warnings=True, return_aggregate=False)
    theirs = metric(OnImages(nano).eval(), images.numpy(), targets.numpy(),
                    a_batch=maps.numpy(), device="cpu", batch_size=64)
    assert not queue
    assert np.abs(ours.numpy() - np.asarray(theirs)).max() < 1e-6
    assert ours.std() > 0.05  # not a degenerate comparison


def test_faithfulness_correlation_batched_equals_per_image(nano):
    images, maps, targets = _inputs()
    subsets = F.draw_subsets(images, 8, 100, seed=0)
    for b in range(len(images)):  # each image draws its own subsets, whatever its batch
        assert torch.equal(F.draw_subsets(images[b:b + 1], 8, 100, seed=0)[0], subsets[b])
    whole = F.faithfulness_correlation(nano, images, maps, targets, subsets, batch_size=7)
    single = torch.cat([F.faithfulness_correlation(nano, images[b:b + 1], maps[b:b + 1],
                                                   targets[b:b + 1], subsets[b:b + 1],
                                                   batch_size=3)
                        for b in range(len(images))])
    assert (whole - single).abs().max() < 1e-6  # forwards of other batch compositions


class GreyLinear(nn.Module):
    """logit_t = sum_{c, p} w_t[p] x[c, p]: the drop of removing features S of a grey image
    to the baseline m is sum_{(c, p) in S} w_t[p] (x[p] - m), the map w_t (x - m) summed."""

    training_loss = "ce"

    def __init__(self, side=8, classes=3):
        super().__init__()
        self.w = nn.Parameter(torch.randn(classes, side * side,
                                          generator=torch.Generator().manual_seed(0)))

    def encode(self, images):
        return images

    def forward(self, x):
        return x.sum(dim=1).flatten(1) @ self.w.T

    def confidence(self, logits):
        return logits.softmax(-1)


def test_faithfulness_correlation_known_answers():
    """The exact contribution map correlates 1, its negation -1, on a linear model."""
    model = GreyLinear()
    grey = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    images, targets = grey.expand(-1, 3, -1, -1).contiguous(), torch.tensor([0, 1, 2])
    base = F.baseline_values(images, "black")
    exact = model.w[targets].detach().view(3, 8, 8) * (grey[:, 0] - base[:, None, None])
    subsets = F.draw_subsets(images, 20, 30, seed=0)
    with torch.no_grad():
        plus = F.faithfulness_correlation(model, images, exact, targets, subsets)
        minus = F.faithfulness_correlation(model, images, -exact, targets, subsets)
        flat = F.faithfulness_correlation(model, images, torch.ones(3, 8, 8), targets, subsets)
    assert torch.allclose(plus, torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(minus, -torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert torch.isnan(flat).all()  # a constant map: every subset sums alike, undefined


# ---- ROAD ------------------------------------------------------------------------------------

def test_imputation_equals_quantus_and_known_answers():
    from quantus.functions.perturb_func import noisy_linear_imputation as theirs

    rng = np.random.default_rng(0)
    image = rng.random((3, 12, 10))
    removed = rng.permutation(120)[:80]  # Quantus takes the removed pixels' flat indices
    missing = np.zeros(120, dtype=bool)
    missing[removed] = True
    ours = F.noisy_linear_imputation(image, missing)
    assert np.abs(ours - theirs(image, removed, noise=0.0)).max() < 1e-12
    assert np.array_equal(ours.reshape(3, -1)[:, ~missing], image.reshape(3, -1)[:, ~missing])
    # a constant image stays constant; one interior pixel is its neighbours' weighted mean
    assert np.allclose(F.noisy_linear_imputation(np.full((2, 6, 6), 0.4), missing[:36]), 0.4)
    one = np.zeros(120, dtype=bool)
    one[5 * 10 + 4] = True
    expected = sum(w * image[:, 5 + dr, 4 + dc] for dr, dc, w in F.IMPUTATION_WEIGHTS)
    assert np.allclose(F.noisy_linear_imputation(image, one)[:, 5, 4], expected)
    noise = rng.standard_normal((3, 120))
    assert np.allclose(F.noisy_linear_imputation(image, missing, noise) - ours,
                       np.where(missing, noise, 0.0).reshape(3, 12, 10))


def test_road_equals_quantus_on_grey_images(nano, monkeypatch):
    """Quantus's ROAD (most relevant first only, accuracy) with our noise (np.random.randn
    answers our draws at the removed pixels, in its order): the imputed images agree to
    float32 rounding (2e-7; Quantus sums float32 products) and every accuracy agrees."""
    quantus = ensure_quantus()
    grey, maps, _ = _inputs(n=4, channels=1)
    ours_model, their_model = Grey(nano).eval(), OnImages(Grey(nano)).eval()
    with torch.no_grad():
        targets = nano(nano.encode(grey.expand(-1, 3, -1, -1))).argmax(1)
    targets[1] = (targets[1] + 1) % 10  # one image starts misclassified
    percentages = [1, 20, 45, 70, 99]
    ours = F.road_curves(ours_model, grey, maps, targets, percentages, noise=0.05, seed=2,
                         orders=("most_first",), batch_size=64)[:, 0]
    ranked = np.argsort(-maps.reshape(4, -1).numpy(), axis=1)
    queue = []
    for p in percentages:
        for b in range(4):
            draw = F.road_noise(content_seed(grey[b], 2), "most_first", p, (1, 32 * 32))
            queue.append(draw.numpy()[:, ranked[b, :F.road_removed(32 * 32, p)]])
    monkeypatch.setattr(np.random, "randn", lambda *shape: queue.pop(0).reshape(shape))
    metric = quantus.ROAD(percentages=percentages, noise=0.05, disable_warnings=True)
    mean_accuracy = metric(their_model, grey.numpy(), targets.numpy(),
                           a_batch=maps.numpy()[:, None], device="cpu", batch_size=64)
    assert not queue
    seen_ours = torch.cat(ours_model.seen[1:])  # [0] is the memory estimate's example
    seen_theirs = torch.cat(their_model.seen)  # one batch per percentage
    assert (seen_ours - seen_theirs.view(len(percentages), 4, 1, 32, 32).transpose(0, 1)
            .reshape_as(seen_ours)).abs().max() < 1e-6
    assert [mean_accuracy[p] for p in percentages] == ours.mean(0).tolist()
    assert ours[1].sum() < len(percentages)  # the comparison sees some misclassification


def test_road_batched_equals_per_image_and_negated_map_flips(nano):
    images, maps, targets = _inputs(n=3)
    kw = dict(percentages=(10, 50, 90), noise=0.01, seed=0, output="confidence")
    whole = F.road_curves(nano, images, maps, targets, batch_size=5, **kw)
    single = torch.cat([F.road_curves(nano, images[b:b + 1], maps[b:b + 1], targets[b:b + 1],
                                      batch_size=2, **kw) for b in range(3)])
    assert (whole - single).abs().max() < 1e-6
    # without noise, the negated map swaps the two orders exactly (no ties in the map)
    kw["noise"] = 0.0
    plus = F.road_curves(nano, images, maps, targets, **kw)
    minus = F.road_curves(nano, images, -maps, targets, **kw)
    assert torch.allclose(plus.flip(1), minus, atol=1e-6)


# ---- the metrics ---------------------------------------------------------------------------

def test_registered_and_parts_equal_whole(nano):
    assert {"faithfulness_correlation", "road"} <= set(xai_bench.METRICS.list())
    data, method = SelfLabelled(nano), xai_bench.get_method("ixg")
    for name, params in (("faithfulness_correlation", dict(nr_runs=6, subset_size=64)),
                         ("road", dict(percentages=(5, 50, 95), keep_per_image_curves=True))):
        metric = xai_bench.get_metric(name, n_images=10, **params)
        assert metric.category == "faithfulness" and metric.higher_is_better
        prepared = metric.prepare(nano, data, batch_size=4, seed=1)
        whole = metric.evaluate(nano, method, prepared, batch_size=4)
        parts = [metric.evaluate_part(nano, method, prepared, a, b, batch_size=4)
                 for a, b in ((0, 4), (4, 8), (8, 10))]
        joined = metric.reduce(nano, prepared, join_parts(parts))
        assert joined.records == whole.records and joined.curves == whole.curves, name
        assert joined.summary == whole.summary, name
        assert len(whole.records) == 10 and whole.summary["seed"] == 1
    road_rows = whole.curves
    assert {r["order"] for r in road_rows} == {"most_first", "least_first"}
    assert all(r["value"] in (0.0, 1.0) for r in road_rows if r["statistic"] == "per_image")


def test_bad_parameters_are_one_line_errors(nano):
    cases = [("faithfulness_correlation", dict(nr_runs=1), "nr_runs"),
             ("faithfulness_correlation", dict(baseline="grey"), "baseline"),
             ("faithfulness_correlation", dict(output="correct"), "output"),
             ("road", dict(percentages=(10, 100)), "percentages"),
             ("road", dict(percentages=(50, 10)), "percentages"),
             ("road", dict(noise=-1.0), "noise")]
    for name, params, word in cases:
        with pytest.raises((ConfigError, ValueError), match=word) as e:
            xai_bench.get_metric(name, **params)
        assert "\n" not in str(e.value)
    metric = xai_bench.get_metric("faithfulness_correlation", n_images=2, subset_size=5000)
    with pytest.raises(ValueError, match="subset_size=5000 is more than the 3072") as e:
        metric.prepare(nano, SelfLabelled(nano, n=2), batch_size=2)
    assert "\n" not in str(e.value)
