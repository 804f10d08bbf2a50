"""Which test images the grid pointing game puts into its grids: the confidence threshold, the
per-class ranking (logit or confidence) and what the results record about the choice.

The fakes give every test image a hand-made logit vector: image ``i`` carries ``i / 256`` in
its first pixel, and the model looks its logits up in a table."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xai_bench
from xai_bench.compute.inference import Predictions
from xai_bench.metrics import MetricNotApplicable
from xai_bench.metrics.localisation import grid_candidates

SIZE = 8
OTHER = -8.0  # logit of every class an image does not belong to: far below any true logit


class IndexedImages:
    """In-memory data set (float images) whose image ``i`` has ``i / 256`` in pixel (0, 0, 0)
    of channel 0 — exact in float32, so the model can recover ``i``."""

    def __init__(self, labels):
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        n = len(self.labels)
        assert n <= 256
        self.images = torch.full((n, 3, SIZE, SIZE), 0.5)
        self.images[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32) / 256
        self.num_classes = int(self.labels.max()) + 1
        self.has_masks, self.name = False, "indexed"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


class TableModel(nn.Module):
    """Returns ``table[i]`` for image ``i`` of :class:`IndexedImages`; confidence is a sigmoid
    (``training_loss="bce"``) or a softmax (``"ce"``)."""

    image_size = (SIZE, SIZE)
    family = "fake"

    def __init__(self, table, training_loss):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))
        self.training_loss = training_loss
        self.num_classes = self.table.shape[1]
        self.name = f"table_{training_loss}"

    def encode(self, images):
        return images.clone()

    def confidence(self, logits):
        return logits.sigmoid() if self.training_loss == "bce" else logits.softmax(-1)

    def forward(self, x):
        return self.table[(x[:, 0, 0, 0] * 256).round().long()]


def uniform_maps(model, x, targets):
    return torch.ones(x.shape[0], *x.shape[2:])


def one_hot_rows(labels, true_logits, num_classes):
    """Logit table: ``true_logits[i]`` for the label of image i, OTHER elsewhere (so every
    image is classified correctly, whatever the sign of its true logit)."""
    table = torch.full((len(labels), num_classes), OTHER)
    table[torch.arange(len(labels)), torch.as_tensor(labels)] = torch.as_tensor(
        true_logits, dtype=torch.float32)
    return table


def cells_by_class(prepared):
    """class -> dataset indices in the order the grids used them."""
    used: dict[int, list[int]] = {}
    for labels, indices in zip(prepared.labels.tolist(), prepared.source_indices.tolist()):
        assert len(set(labels)) == 4
        for k, i in zip(labels, indices):
            used.setdefault(k, []).append(i)
    return used


def used_indices(prepared):
    return set(prepared.source_indices.reshape(-1).tolist())


def prepare(model, data, **params):
    return xai_bench.get_metric("grid_pointing_game", n_grids=100, **params).prepare(
        model, data, batch_size=7)


# ---------------------------------------------------------------- (a), (b) the threshold
# Four classes; each has two images above the default threshold 0.5 (logit > 0), one exactly
# at it (logit 0: sigmoid 0.5), one below it but still correct, and one misclassified.
# Equal counts per class, so all four classes are drawn in every grid and every eligible
# image is used.
PER_CLASS_LOGITS = [3.0, 0.25, 0.0, -1.5]


def threshold_case():
    labels, table, above, correct = [], [], set(), set()
    for k in range(4):
        for logit in PER_CLASS_LOGITS:
            i = len(labels)
            labels.append(k)
            row = torch.full((5,), OTHER)
            row[k] = logit
            table.append(row)
            correct.add(i)
            if logit > 0:
                above.add(i)
        i = len(labels)  # misclassified: class 4 wins
        labels.append(k)
        row = torch.full((5,), OTHER)
        row[k], row[4] = 1.0, 2.0
        table.append(row)
    return IndexedImages(labels), TableModel(torch.stack(table), "bce"), above, correct


def test_images_at_or_below_the_threshold_never_enter_a_grid():
    data, model, above, correct = threshold_case()
    prepared = prepare(model, data)  # default confidence_threshold = 0.5
    assert used_indices(prepared) == above
    assert len(prepared) == 2 and prepared.n_eligible == len(above) == 8
    assert prepared.n_correct == len(correct) == 16
    assert (prepared.confidence_threshold, prepared.rank_by) == (0.5, "logit")


def test_threshold_zero_keeps_every_correct_image():
    data, model, _, correct = threshold_case()
    prepared = prepare(model, data, confidence_threshold=0)
    assert used_indices(prepared) == correct
    assert len(prepared) == 4 and prepared.n_eligible == prepared.n_correct == 16
    for k, seq in cells_by_class(prepared).items():  # highest logit first, negatives last
        assert [float(model.table[i, k]) for i in seq] == PER_CLASS_LOGITS


def test_threshold_near_one_compares_beyond_float32_saturation():
    # sigmoid(19) = 1 - 5.6e-9 and sigmoid(25) = 1 - 1.4e-11 are both 1.0 in float32; only
    # the first is below 1 - 1e-9.
    labels = [k for k in range(4) for _ in range(2)]
    data = IndexedImages(labels)
    model = TableModel(one_hot_rows(labels, [25.0, 19.0] * 4, 4), "bce")
    assert (model.confidence(model.table).max(1).values == 1.0).all()
    prepared = prepare(model, data, confidence_threshold=1 - 1e-9)
    assert used_indices(prepared) == {0, 2, 4, 6}


def test_softmax_eligibility_is_not_a_prefix_of_the_logit_order():
    # Class 0's highest logit (6) has a close runner-up, so its softmax confidence (~0.52) is
    # below 0.6, while its lower logits (4, 2) are confident: the first is dropped, the later
    # ones still enter, in logit order.
    labels = [k for k in range(4) for _ in range(3)]
    table = one_hot_rows(labels, [6.0, 4.0, 2.0] * 4, 5)
    table[0, 4] = 5.9
    data, model = IndexedImages(labels), TableModel(table, "ce")
    assert model.confidence(table)[0, 0] < 0.6 < model.confidence(table)[1, 0]
    prepared = prepare(model, data, confidence_threshold=0.6)
    assert len(prepared) == 2 and cells_by_class(prepared)[0] == [1, 2]
    everything = prepare(model, data, confidence_threshold=0.5)
    assert len(everything) == 3 and cells_by_class(everything)[0] == [0, 1, 2]


# ---------------------------------------------------------------- (c), (d) the ranking
def softmax_disagreement_case():
    """Per class three images whose logit order is the reverse of their softmax order: the
    higher the true logit, the closer the runner-up (class 4)."""
    labels, rows = [], []
    for k in range(4):
        for true, runner_up in ((9.0, 8.8), (7.0, 5.0), (5.0, -4.0)):
            labels.append(k)
            row = torch.full((5,), OTHER)
            row[k], row[4] = true, runner_up
            rows.append(row)
    return IndexedImages(labels), TableModel(torch.stack(rows), "ce")


def test_rank_by_logit_and_by_confidence_on_a_softmax_model():
    data, model = softmax_disagreement_case()
    conf = model.confidence(model.table)
    for k in range(4):
        own = [3 * k, 3 * k + 1, 3 * k + 2]
        logits = [float(model.table[i, k]) for i in own]
        confs = [float(conf[i, k]) for i in own]
        assert logits == sorted(logits, reverse=True) and confs == sorted(confs)
        assert min(confs) > 0.5  # all eligible at the default threshold
    by_logit = cells_by_class(prepare(model, data, rank_by="logit"))
    by_conf = cells_by_class(prepare(model, data, rank_by="confidence"))
    for k in range(4):
        assert by_logit[k] == [3 * k, 3 * k + 1, 3 * k + 2]
        assert by_conf[k] == [3 * k + 2, 3 * k + 1, 3 * k]


def test_grid_candidates_on_hand_built_predictions():
    # Predictions without a model: the confidence is the softmax of the logits.
    _, model = softmax_disagreement_case()
    labels = torch.arange(4).repeat_interleave(3)
    found = Predictions(logits=model.table.clone(), labels=labels)
    wrong = found.logits.clone()
    wrong[5, 4] = 20.0  # image 5 is now misclassified
    found_wrong = Predictions(logits=wrong, labels=labels)
    assert grid_candidates(found, 0.5, "logit")[1] == [3, 4, 5]
    assert grid_candidates(found, 0.5, "confidence")[1] == [5, 4, 3]
    assert grid_candidates(found_wrong, 0.0, "logit")[1] == [3, 4]
    # softmax confidence of image 0 (logits 9 vs 8.8) is ~0.55
    assert 0 not in grid_candidates(found, 0.6, "logit")[0]


def test_both_rankings_agree_on_a_sigmoid_model():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(5).repeat(6)
    true = (torch.randn(len(labels), generator=g) * 3 + 1).clamp(min=OTHER + 1)
    # class 0 (images 0, 5, 10, ...): saturated logits, whose float32 sigmoid is 1.0 for all
    # three, and a tie, broken by dataset index
    true[0], true[5], true[10] = 30.0, 40.0, 35.0
    true[20] = true[15]
    data = IndexedImages(labels)
    model = TableModel(one_hot_rows(labels, true, 5), "bce")
    for threshold in (0.0, 0.5):
        by_logit = prepare(model, data, confidence_threshold=threshold, rank_by="logit")
        by_conf = prepare(model, data, confidence_threshold=threshold, rank_by="confidence")
        assert torch.equal(by_logit.source_indices, by_conf.source_indices)
        assert torch.equal(by_logit.labels, by_conf.labels)
        for k, seq in cells_by_class(by_logit).items():
            ranked = sorted((i for i in range(len(labels)) if int(labels[i]) == k
                             and (threshold == 0 or float(true[i]) > 0)),
                            key=lambda i: (-float(true[i]), i))
            assert seq == ranked[:len(seq)]


# ---------------------------------------------------------------- (e), (f) errors
def test_threshold_leaving_fewer_than_four_classes_is_not_applicable():
    # Five classes, all correct, but only three have an image with a positive logit.
    labels = list(range(5)) * 2
    true = [2.0, 1.0, 0.5, -1.0, -2.0] * 2
    data = IndexedImages(labels)
    model = TableModel(one_hot_rows(labels, true, 5), "bce")
    with pytest.raises(MetricNotApplicable, match=r"confidence > 0\.5.*confidence_threshold"):
        prepare(model, data)
    with pytest.raises(MetricNotApplicable, match="only 3 of the 5 classes"):
        prepare(model, data, confidence_threshold=0.5)
    assert len(prepare(model, data, confidence_threshold=0)) == 2


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, math.nan, "0.5", True, None])
def test_bad_confidence_threshold_raises(value):
    with pytest.raises(ValueError, match="confidence_threshold must be"):
        xai_bench.get_metric("grid_pointing_game", confidence_threshold=value)


@pytest.mark.parametrize("value", ["max", "", "Logit", None])
def test_bad_rank_by_raises(value):
    with pytest.raises(ValueError, match="rank_by must be one of logit, confidence"):
        xai_bench.get_metric("grid_pointing_game", rank_by=value)


# ---------------------------------------------------------------- (g) what is recorded
def test_records_and_summary_say_how_the_grids_were_chosen():
    data, model, above, correct = threshold_case()
    metric = xai_bench.get_metric("grid_pointing_game", n_grids=5, confidence_threshold=0.25,
                                  rank_by="confidence")
    assert metric.params == {"n_grids": 5, "seed": 0, "confidence_threshold": 0.25,
                             "rank_by": "confidence"}
    prepared = metric.prepare(model, data)
    result = metric.evaluate(model, uniform_maps, prepared, batch_size=3)
    assert len(result.records) == 4 * len(prepared) == 12  # threshold 0.25: logit 0 counts
    for row in result.records:
        assert (row["confidence_threshold"], row["rank_by"], row["confidence"]) == (
            0.25, "confidence", "sigmoid")
        assert row["value"] == pytest.approx(0.25)
    summary = result.summary
    assert (summary["confidence_threshold"], summary["rank_by"]) == (0.25, "confidence")
    assert summary["n_correct"] == len(correct)
    assert summary["n_eligible"] == len(above) + 4  # + the four images at logit 0
    assert summary["n_grids"] == 3 and summary["stopped_early"]
