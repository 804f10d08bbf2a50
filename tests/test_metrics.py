"""Metrics: known answers on hand-built models, data sets and attribution methods."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xai_bench
import xai_bench.metrics
import xai_bench.metrics.localisation
from xai_bench.data.grids import cell_masks, make_grids, make_mosaic
from xai_bench.metrics import Metric, MetricNotApplicable, MetricResult
from xai_bench.metrics.common import pixel_ranks
from xai_bench.registry import METRICS

SIZE = 16
# six 5x5 squares (top-left corners) at disjoint positions of a 16x16 image
SQUARES = [(1, 0), (1, 5), (1, 11), (9, 0), (9, 5), (9, 11)]


# ---------------------------------------------------------------- fakes: data sets
class SquaresData:
    """In-memory data set with the interface of xai_bench.data: class k = a bright 5x5 square
    at SQUARES[k] on a dark noisy background; the mask is the square. Square brightness varies
    per image, so the models below are more or less confident."""

    def __init__(self, n_per_class=6, num_classes=6, seed=0, masks=True):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(num_classes).repeat_interleave(n_per_class)
        labels = labels[torch.randperm(len(labels), generator=g)]
        n = len(labels)
        images = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.4
        self.masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
        bright = 0.8 + 0.2 * torch.rand(n, generator=g)
        for i, k in enumerate(labels.tolist()):
            r, c = SQUARES[k]
            images[i, :, r:r + 5, c:c + 5] = bright[i]
            self.masks[i, r:r + 5, c:c + 5] = True
        self.images = (images * 255).round().to(torch.uint8)
        self.labels = labels
        self.has_masks = masks
        if not masks:
            self.masks = None
        self.num_classes = num_classes
        self.classes = [f"class{k}" for k in range(num_classes)]
        self.name = "squares"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float() / 255, int(self.labels[i])


COLOURS = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
                       dtype=torch.float32)


class ColourData:
    """Solid-colour images, class k = COLOURS[k]; items only (no `images` tensor), to
    exercise the per-item fallback."""

    def __init__(self, n_per_class=3):
        self.labels = torch.arange(len(COLOURS)).repeat(n_per_class)
        self.num_classes, self.has_masks = len(COLOURS), False

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        k = int(self.labels[i])
        return COLOURS[k][:, None, None].expand(3, SIZE, SIZE).clone(), k


# ---------------------------------------------------------------- fakes: models
class FakeModel(nn.Module):
    """Records the batch size of every forward pass."""

    image_size = (SIZE, SIZE)
    family = "fake"

    def __init__(self):
        super().__init__()
        self.calls = []

    def encode(self, images):
        return images.clone()

    def confidence(self, logits):
        return logits.sigmoid() if self.training_loss == "bce" else logits.softmax(-1)

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.logits(x)


class LinearModel(FakeModel):
    """logit_k = (<W_k, x> - 60) / 10 with W_k > 0 (1.1 on square k, 0.1 elsewhere); sigmoid.
    The exact contribution of a pixel to logit_k is (W_k * x) summed over channels."""

    training_loss, name = "bce", "linear"

    def __init__(self, num_classes=6):
        super().__init__()
        self.num_classes = num_classes
        w = torch.full((num_classes, 3, SIZE, SIZE), 0.1)
        for k in range(num_classes):
            r, c = SQUARES[k]
            w[k, :, r:r + 5, c:c + 5] += 1.0
        self.register_buffer("weight", w)

    def logits(self, x):
        return (torch.einsum("bchw,kchw->bk", x, self.weight) - 60.0) / 10.0


class ConstantModel(FakeModel):
    """Ignores its input: always predicts class 0 with the same confidence."""

    training_loss, name, num_classes = "bce", "constant", 6

    def logits(self, x):
        return torch.tensor([2.0, -1, -1, -1, -1, -1]) + 0 * x.sum(dim=(1, 2, 3))[:, None]


class ColourModel(FakeModel):
    """Softmax over -20 * squared distance of the mean colour to each class colour."""

    training_loss, name, num_classes = "ce", "colour", len(COLOURS)

    def logits(self, x):
        mean = x.mean(dim=(2, 3))
        return -20 * ((mean[:, None, :] - COLOURS[None]) ** 2).sum(-1)


# ---------------------------------------------------------------- fakes: methods
class Method:
    """A plain callable with `name` and `params`; records the batch sizes it is called on."""

    def __init__(self, name, fn):
        self.name, self.params, self.fn, self.calls = name, {}, fn, []

    def applies_to(self, model):
        return True

    def __call__(self, model, x, targets):
        self.calls.append(x.shape[0])
        return self.fn(model, x, targets)


uniform = Method("uniform", lambda m, x, t: torch.ones(x.shape[0], *x.shape[2:]))
contributions = Method("oracle", lambda m, x, t: (m.weight[t] * x).sum(1))
anti = Method("anti", lambda m, x, t: -(m.weight[t] * x).sum(1))
bright = Method("bright", lambda m, x, t: (x.mean(1) > 0.7).float())  # = the object mask


def random_method():
    g = torch.Generator().manual_seed(123)
    return Method("random", lambda m, x, t: torch.rand(x.shape[0], *x.shape[2:], generator=g))


def colour_oracle():
    """Positive exactly where the grid shows the target class's colour (nearest colour)."""
    def fn(model, x, targets):
        dist = ((x.permute(0, 2, 3, 1)[:, :, :, None, :] - COLOURS) ** 2).sum(-1)
        return (dist.argmin(-1) == targets[:, None, None]).float()
    return Method("colour_oracle", fn)


def abc_of(result):
    (row,) = [r for r in result.records if r["sample_id"] == "mean"]
    return row["value"]


# ---------------------------------------------------------------- registry / interface
NAMES = {"grid_pointing_game": ("localisation", True), "mask_localisation": ("localisation", True),
         "pixel_perturbation": ("perturbation", True), "deletion": ("perturbation", False),
         "insertion": ("perturbation", True)}


def test_registry_entries_have_category_and_direction():
    for name, (category, higher) in NAMES.items():
        assert name in METRICS
        card = METRICS.card(name)
        assert (card.category, card.higher_is_better) == (category, higher)
        assert card.description and card.label
        metric = xai_bench.get_metric(name)
        assert isinstance(metric, Metric) and metric.name == name
        assert (metric.category, metric.higher_is_better) == (category, higher)
    assert xai_bench.get_metric("grid_pointing_game").params == {
        "n_grids": 250, "seed": 0, "confidence_threshold": 0.5, "rank_by": "logit"}
    assert xai_bench.get_metric("pixel_perturbation").params["fractions"] == tuple(
        i / 32 for i in range(9))


# ---------------------------------------------------------------- grid pointing game
def test_grid_layout_is_row_major():
    cells = COLOURS[:4, :, None, None].expand(4, 3, SIZE, SIZE)[None]  # (1, 4, 3, H, W)
    mosaic = make_mosaic(cells)[0]
    assert mosaic.shape == (3, 2 * SIZE, 2 * SIZE)
    quadrants = [mosaic[:, :SIZE, :SIZE], mosaic[:, :SIZE, SIZE:],
                 mosaic[:, SIZE:, :SIZE], mosaic[:, SIZE:, SIZE:]]
    for q in range(4):
        assert torch.equal(quadrants[q], cells[0, q])
    # one implementation: the metrics package re-exports the data layer's grid helpers
    for module in (xai_bench.metrics, xai_bench.metrics.localisation):
        assert (module.make_mosaic, module.make_grids, module.cell_masks) == (
            make_mosaic, make_grids, cell_masks)
    grid = make_grids(cells)[0]  # scaled down by 2 to the model size
    assert grid.shape == (3, SIZE, SIZE)
    masks = cell_masks((SIZE, SIZE))
    assert masks.sum(dim=(1, 2)).tolist() == [SIZE * SIZE // 4] * 4
    assert masks[0, 0, 0] and masks[1, 0, -1] and masks[2, -1, 0] and masks[3, -1, -1]
    half = SIZE // 2
    interior = torch.zeros(SIZE, SIZE, dtype=torch.bool)  # away from the mixed boundary
    interior[: half - 1, : half - 1] = interior[: half - 1, half + 1:] = True
    interior[half + 1:, : half - 1] = interior[half + 1:, half + 1:] = True
    for q in range(4):
        region = masks[q] & interior
        assert torch.allclose(grid[:, region], COLOURS[q][:, None].expand(3, int(region.sum())),
                              atol=1e-6)
        # nearest colour of every pixel of cell q (boundary included) is image q's colour
        nearest = ((grid.permute(1, 2, 0)[:, :, None] - COLOURS[:4]) ** 2).sum(-1).argmin(-1)
        assert torch.equal(nearest == q, masks[q])


def test_grid_pointing_game_known_answers_uniform_and_oracle():
    data, model = ColourData(n_per_class=3), ColourModel()
    metric = xai_bench.get_metric("grid_pointing_game", n_grids=3, seed=1)
    prepared = metric.prepare(model, data, batch_size=8)
    assert len(prepared) == 3 and prepared.grids.shape == (3, 3, SIZE, SIZE)
    for g in range(3):  # the quadrant of cell c shows the image of class labels[g, c]
        for c in range(4):
            image, label = data[int(prepared.source_indices[g, c])]
            assert label == int(prepared.labels[g, c])
            assert torch.allclose(prepared.grids[g][:, prepared.cell_masks[c]].mean(1),
                                  image[:, 0, 0], atol=0.1)
    result = metric.evaluate(model, uniform, prepared, batch_size=5)
    assert isinstance(result, MetricResult)
    assert [r["value"] for r in result.records] == [0.25] * 12
    assert [r["sample_id"] for r in result.records[:5]] == [
        "grid0000/cell0", "grid0000/cell1", "grid0000/cell2", "grid0000/cell3", "grid0001/cell0"]
    assert max(uniform.calls[-3:]) <= 5 and sum(uniform.calls[-3:]) == 12
    oracle = colour_oracle()
    result = metric.evaluate(model, oracle, prepared, batch_size=5)
    assert [r["value"] for r in result.records] == [1.0] * 12
    assert result.summary["mean"] == 1.0 and result.summary["n_grids"] == 3
    assert {r["target"] for r in result.records} <= set(range(6))
    # a map without positive attribution scores 0
    negative = Method("neg", lambda m, x, t: -torch.ones(x.shape[0], *x.shape[2:]))
    assert {r["value"] for r in metric.evaluate(model, negative, prepared).records} == {0.0}


def test_grid_selection_distinct_classes_confidence_order_and_seed():
    data, model = SquaresData(n_per_class=5, num_classes=6), LinearModel()
    metric = xai_bench.get_metric("grid_pointing_game", n_grids=100, seed=0)
    prepared = metric.prepare(model, data, batch_size=7)
    # 30 correct images, 6 classes x 5: stops when fewer than 4 classes have unused images
    assert 5 <= len(prepared) < 100 and prepared.stopped_early
    with torch.no_grad():
        conf = model(data.images.float() / 255).sigmoid()
    assert (conf.argmax(1) == data.labels).all()
    used = {k: [] for k in range(6)}
    for labels, indices in zip(prepared.labels.tolist(), prepared.source_indices.tolist()):
        assert len(set(labels)) == 4
        for k, i in zip(labels, indices):
            assert int(data.labels[i]) == k
            used[k].append(i)
    for k, seq in used.items():
        ranked = sorted(torch.nonzero(data.labels == k)[:, 0].tolist(),
                        key=lambda i: -float(conf[i, k]))
        assert seq == ranked[: len(seq)]  # most confident unused first, in order
    remaining = sum(1 for k in used if len(used[k]) < 5)
    assert remaining < 4
    again = metric.prepare(model, data, batch_size=16)
    assert torch.equal(again.labels, prepared.labels)
    assert torch.equal(again.source_indices, prepared.source_indices)
    assert torch.equal(again.grids, prepared.grids)
    other = metric.prepare(model, data, batch_size=16, seed=5)
    assert not torch.equal(other.labels, prepared.labels)


def test_grid_needs_four_correct_classes():
    metric = xai_bench.get_metric("grid_pointing_game", n_grids=2)
    with pytest.raises(MetricNotApplicable, match="4 distinct classes"):
        metric.prepare(ConstantModel(), SquaresData(n_per_class=2))


# ---------------------------------------------------------------- mask localisation
def test_mask_localisation_oracle_and_uniform():
    data, model = SquaresData(n_per_class=3), LinearModel()
    metric = xai_bench.get_metric("mask_localisation", n_images=10)
    prepared = metric.prepare(model, data, batch_size=4)
    assert len(prepared) == 10 and prepared.masks.shape == (10, SIZE, SIZE)
    result = metric.evaluate(model, bright, prepared, batch_size=4)
    assert [r["value"] for r in result.records] == [1.0] * 10
    result = metric.evaluate(model, uniform, prepared, batch_size=4)
    for r in result.records:
        assert r["value"] == pytest.approx(25 / SIZE ** 2, abs=1e-12)
        assert r["value"] == pytest.approx(r["mask_fraction"], abs=1e-12)
        assert r["sample_id"] == f"img{r['source_index']:05d}"
    with pytest.raises(MetricNotApplicable, match="no object masks"):
        metric.prepare(model, SquaresData(n_per_class=3, masks=False))


# ---------------------------------------------------------------- pixel perturbation (ABC)
def test_selection_is_most_confident_correct_images():
    data, model = SquaresData(n_per_class=4), LinearModel()
    model.weight[2, :, 1:6, 11:16] = 0.1  # class 2 can no longer be recognised
    metric = xai_bench.get_metric("pixel_perturbation", n_images=8, selection="global")
    prepared = metric.prepare(model, data, batch_size=5)
    with torch.no_grad():
        conf = model(data.images.float() / 255).sigmoid()
    correct = torch.nonzero(conf.argmax(1) == data.labels)[:, 0].tolist()
    assert all(int(data.labels[i]) != 2 for i in correct)
    ranked = sorted(correct, key=lambda i: -float(conf[i, data.labels[i]]))
    assert prepared.indices.tolist() == ranked[:8]
    assert torch.allclose(prepared.confidences.double(),
                          conf[prepared.indices, prepared.labels].double(), atol=1e-6)


def test_abc_oracle_beats_random_and_is_positive():
    data, model = SquaresData(n_per_class=2), LinearModel()
    metric = xai_bench.get_metric("pixel_perturbation", n_images=12)
    prepared = metric.prepare(model, data, batch_size=8)
    res_oracle = metric.evaluate(model, contributions, prepared, batch_size=8)
    res_random = metric.evaluate(model, random_method(), prepared, batch_size=8)
    res_anti = metric.evaluate(model, anti, prepared, batch_size=8)
    oracle, rand, anti_abc = abc_of(res_oracle), abc_of(res_random), abc_of(res_anti)
    assert oracle > 0.1 and oracle > rand + 0.1 and anti_abc < rand - 0.1
    assert res_oracle.summary["abc"] == oracle
    per_image = [r for r in res_oracle.records if r["statistic"] == "per_image"]
    assert len(per_image) == 12 and all(r["value"] > 0 for r in per_image)
    assert all(r["substrate"] == "zero encoding" and r["confidence"] == "sigmoid"
               and r["explained"] == "true class" for r in res_oracle.records)
    curves = res_oracle.curves
    assert len(curves) == 18
    most = [c["value"] for c in curves if c["order"] == "most_first"]
    least = [c["value"] for c in curves if c["order"] == "least_first"]
    assert most[0] == least[0] == pytest.approx(1.0)
    assert [c["fraction"] for c in curves[:9]] == [i / 32 for i in range(9)]
    assert [c["pixels"] for c in curves[:9]] == [8 * i for i in range(9)]
    fr = torch.tensor([i / 32 for i in range(9)], dtype=torch.float64)
    assert oracle == pytest.approx(float(torch.trapezoid(torch.tensor(least) - torch.tensor(most),
                                                         fr)))


def test_abc_of_constant_confidence_model_is_zero():
    metric = xai_bench.get_metric("pixel_perturbation", n_images=4, keep_per_image_curves=True)
    model = ConstantModel()
    prepared = metric.prepare(model, SquaresData(n_per_class=2), batch_size=4)
    assert len(prepared) == 2  # only the two class-0 images are classified correctly
    assert prepared.n_requested == 4 and prepared.n_correct == 2
    result = metric.evaluate(model, random_method(), prepared, batch_size=4)
    assert {r["value"] for r in result.records} == {0.0}
    per_image_curves = [c for c in result.curves if c["statistic"] == "per_image"]
    assert len(per_image_curves) == 2 * 18
    assert {c["value"] for c in result.curves} == {1.0}


def test_pixel_perturbation_forward_count_and_chunking():
    data, model = SquaresData(n_per_class=2), LinearModel()
    metric = xai_bench.get_metric("pixel_perturbation", n_images=10)
    assert metric.forwards_per_image == 18 and metric.evaluate_forwards_per_image == 17
    prepared = metric.prepare(model, data, batch_size=5)
    assert sum(model.calls) == len(data) and max(model.calls) <= 5
    model.calls.clear()
    method = Method("oracle", contributions.fn)
    result = metric.evaluate(model, method, prepared, batch_size=7)
    assert sum(model.calls) == 17 * 10  # 1 shared 0 % point + 8 + 8 per image
    # every point is one forward of the chunk's images (curve_confidences): 17 of the first
    # chunk's 7 images, then 17 of the last 3
    assert model.calls == [7] * 17 + [3] * 17
    assert method.calls == [7, 3]
    assert result.summary["forward_passes"] == 170
    assert sum(model.calls) + len(prepared) == metric.forwards_per_image * len(prepared)


def test_selection_pass_is_shared_until_the_model_changes():
    data, model = SquaresData(n_per_class=2), LinearModel()
    first = xai_bench.get_metric("deletion", n_images=4).prepare(model, data, batch_size=8)
    assert sum(model.calls) == len(data)
    second = xai_bench.get_metric("pixel_perturbation", n_images=4).prepare(model, data,
                                                                            batch_size=8)
    assert sum(model.calls) == len(data)  # cached: the metrics of a model share the pass
    assert torch.equal(first.indices, second.indices)
    with torch.no_grad():
        model.weight.mul_(2.0)  # in-place change of the model: predictions are recomputed
    xai_bench.get_metric("pixel_perturbation", n_images=4).prepare(model, data, batch_size=8)
    assert sum(model.calls) == 2 * len(data)


def test_saturated_sigmoids_still_rank_by_logit():
    data, model = SquaresData(n_per_class=3), LinearModel()
    model.weight.mul_(20.0)  # logits ~ +100: sigmoid == 1.0 in float32 for every true class
    prepared = xai_bench.get_metric("mask_localisation", n_images=5,
                                      selection="global").prepare(model, data)
    with torch.no_grad():
        logits = model(data.images.float() / 255)
    assert (logits.sigmoid().gather(1, data.labels[:, None]) == 1.0).all()
    true_logit = logits.gather(1, data.labels[:, None])[:, 0]
    assert prepared.indices.tolist() == torch.argsort(-true_logit)[:5].tolist()


def test_ranking_is_stable_and_ties_keep_pixel_order():
    maps = torch.tensor([[[1.0, 3.0], [3.0, 0.0]]])
    assert pixel_ranks(maps, descending=True).tolist() == [[2, 0, 1, 3]]
    assert pixel_ranks(maps, descending=False).tolist() == [[1, 2, 3, 0]]
    flat = torch.zeros(1, 2, 2)
    assert pixel_ranks(flat, True).tolist() == pixel_ranks(flat, False).tolist() == [[0, 1, 2, 3]]


# ---------------------------------------------------------------- deletion / insertion
def test_deletion_and_insertion_order_oracle_random_anti():
    data, model = SquaresData(n_per_class=2), LinearModel()
    deletion = xai_bench.get_metric("deletion", n_images=8, n_steps=16)
    insertion = xai_bench.get_metric("insertion", n_images=8, n_steps=16)
    prepared = deletion.prepare(model, data, batch_size=8)  # shared selection
    model.calls.clear()
    d = {m.name: deletion.evaluate(model, m, prepared, batch_size=16)
         for m in (contributions, random_method(), anti)}
    assert sum(model.calls) == 3 * 8 * 17 and max(model.calls) <= 16  # 3 methods
    i = {m.name: insertion.evaluate(model, m, prepared, batch_size=16)
         for m in (contributions, random_method(), anti)}
    auc = {k: abc_of(v) for k, v in d.items()}
    assert auc["oracle"] < auc["random"] < auc["anti"]
    auc_i = {k: abc_of(v) for k, v in i.items()}
    assert auc_i["oracle"] > auc_i["random"] > auc_i["anti"]
    res = d["oracle"]
    per_image = [r["value"] for r in res.records if r["statistic"] == "per_image"]
    assert abc_of(res) == pytest.approx(sum(per_image) / len(per_image))  # trapezoid is linear
    assert [c["order"] for c in res.curves] == ["deletion"] * 17
    assert res.curves[0]["fraction"] == 0.0 and res.curves[-1]["fraction"] == 1.0
    assert res.records[0]["substrate"] == "zero encoding"
    assert i["oracle"].records[0]["substrate"].startswith("blurred image")
    assert (deletion.higher_is_better, insertion.higher_is_better) == (False, True)


# ---------------------------------------------------------------- real models and methods
class PredictedLabels:
    """Shapes images labelled with a model's own predictions (so that an untrained model has
    correctly classified images)."""

    def __init__(self, model, n=24):
        from xai_bench.data import SyntheticShapes

        base = SyntheticShapes("test", n=n, seed=0)
        self.images, self.masks, self.has_masks = base.images, base.masks, True
        with torch.no_grad():
            self.labels = model(model.encode(base.images.float() / 255)).argmax(1)
        self.num_classes = base.num_classes

    def __len__(self):
        return len(self.labels)


@pytest.mark.parametrize("model_name", ["vit_nano", "bcos_vit_nano"])
def test_metrics_run_on_real_models(model_name, one_thread):
    from xai_bench.metrics import GridSet

    model = xai_bench.get_model(model_name).eval()
    data = PredictedLabels(model)
    uniform_map, ixg = xai_bench.get_method("uniform"), xai_bench.get_method("ixg")
    # grid pointing game on hand-made grids (an untrained model may get < 4 classes right)
    cells = (data.images[:8].float() / 255).view(2, 4, 3, 32, 32)
    grids = GridSet(grids=make_grids(cells, model.image_size), labels=torch.arange(8).view(2, 4),
                    source_indices=torch.arange(8).view(2, 4), cell_masks=cell_masks((32, 32)),
                    n_requested=2, seed=0, stopped_early=False, confidence="-")
    grid = xai_bench.get_metric("grid_pointing_game", n_grids=2)
    result = grid.evaluate(model, uniform_map, grids, batch_size=4)
    assert [r["value"] for r in result.records] == [0.25] * 8
    result = grid.evaluate(model, ixg, grids, batch_size=4)
    assert all(0.0 <= r["value"] <= 1.0 for r in result.records)
    expected = "sigmoid" if model.training_loss == "bce" else "softmax"
    for name in ("pixel_perturbation", "deletion", "insertion", "mask_localisation"):
        params = {"n_images": 2, **({"n_steps": 4} if name in ("deletion", "insertion") else {})}
        metric = xai_bench.get_metric(name, **params)
        prepared = metric.prepare(model, data, batch_size=16)
        for method in (uniform_map, ixg):
            result = metric.evaluate(model, method, prepared, batch_size=16)
            assert all(math.isfinite(r["value"]) for r in result.records)
            assert all(r.get("confidence", expected) == expected for r in result.records)
        if name == "pixel_perturbation":  # uniform maps remove the same pixels in both orders
            # (equal up to float rounding: the same copies sit at other places in the batch)
            assert abs(abc_of(metric.evaluate(model, uniform_map, prepared))) < 1e-6
