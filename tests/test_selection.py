"""Which images the image-selecting metrics explain: the stratified rule (the most confident
correct image of each class in turn, the default) and the global rule (the most confident
overall, the rule before), as a run option (``--selection``) that is part of exactly the
cells that select images."""

from __future__ import annotations

import pytest
import torch

from xai_bench.metrics.common import (
    confident_order, select_confident, selection_order, stratified_order,
)
from xai_bench.run.config import RunConfig, reproduce_command
from xai_bench.run.runner import Runner

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stratified_takes_each_class_in_turn_most_confident_first():
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6, 0.99, 0.5, 0.5])
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    correct = torch.tensor([True, True, True, True, True, True, True, False])
    order = selection_order(confidence, correct, labels, "global")
    assert order.tolist() == [5, 3, 0, 1, 2, 4, 6]  # today's rule, unchanged
    # round 1: the best of classes 2, 1, 0 (by confidence); round 2: 0, 1, 2; then class 0;
    # class 3 has no correct image and is skipped
    assert selection_order(confidence, correct, labels).tolist() == [5, 3, 0, 1, 4, 6, 2]
    # ties go to the lower data-set index, within a class and across classes
    tied = stratified_order(confident_order(torch.zeros(4), torch.ones(4, dtype=torch.bool)),
                            torch.tensor([1, 1, 0, 0]))
    assert tied.tolist() == [0, 2, 1, 3]


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="selection must be one of 'stratified', 'global'"):
        selection_order(torch.zeros(2), torch.ones(2, dtype=torch.bool), torch.zeros(2),
                        "random")


@pytest.mark.slow  # two inference passes over the 2000 test images, about 45 s on one thread
def test_the_quick_suite_selection_covers_every_class():
    """The default pair on the default data at n_images=24: stratified covers all 10 classes
    (the global rule picked 21 of 24 images of one class on the B-cos model and 24 of 24 on
    its twin)."""
    import xai_bench.training as training
    from xai_bench.data import get_dataset
    from xai_bench.training.defaults import DEFAULT_DATASET, DEFAULT_MODELS

    data = get_dataset(DEFAULT_DATASET)
    for name in DEFAULT_MODELS:
        model, _ = training.cached_default_model(name, DEFAULT_DATASET, progress=False,
                                                 log=lambda *_: None, device="cpu")
        stratified = select_confident(model, data, 24)
        assert stratified.selection == "stratified"
        counts = stratified.class_counts()
        assert sorted(counts) == list(range(10)) and max(counts.values()) <= 3, (name, counts)
        old = select_confident(model, data, 24, selection="global")
        from xai_bench.compute.inference import predict

        found = predict(model, data)
        assert old.indices.tolist() == \
            confident_order(found.log_confidence, found.correct)[:24].tolist()
        assert max(old.class_counts().values()) >= 20, (name, old.class_counts())


def test_selection_is_a_run_option_that_reproduces():
    assert RunConfig().selection == "stratified"
    spec = RunConfig(selection="global").spec()
    assert spec["selection"] == "global" and "selection" not in RunConfig().spec()
    command, _ = reproduce_command({"config": spec})
    assert "--selection global" in command


def test_the_rule_recomputes_exactly_the_cells_that_select_images(tmp_path, tiny_model):
    import xai_bench
    from conftest import SelfLabelled

    model = xai_bench.get_model(tiny_model)
    data = SelfLabelled(model, n=40)
    data.classes = [str(c) for c in range(10)]

    def run(**options):
        lines = []
        cfg = RunConfig(models=[model], methods=["uniform"],
                        metrics=["pixel_perturbation", "grid_pointing_game"], dataset=data,
                        n_images=6, n_grids=1, batch_size=8, out=str(tmp_path), name="x",
                        metric_params={"grid_pointing_game": {"confidence_threshold": 0}},
                        **options)
        runner = Runner(cfg, progress=False, log=lines.append)
        runner.run()
        return runner, lines

    first, _ = run()
    assert len(first.computed) == 2
    records = first.records
    pp = records[(records.metric == "pixel_perturbation") & (records.statistic == "per_image")]
    assert pp.target.nunique() == min(6, data.labels.unique().numel())  # one per class first
    changed, lines = run(selection="global")
    assert changed.computed == ["TinyLinear__uniform__pixel_perturbation"]
    assert any("pixel_perturbation parameters changed (selection stratified → global)" in line
               for line in lines), lines
    again, _ = run(selection="global")
    assert again.computed == []
