"""Explain once, score many (xai_bench.compute.map_cache): shared maps equal recomputed ones, each
batch of a unit is explained once, class-agnostic methods once per distinct image."""

import pytest
import torch

import xai_bench
import xai_bench.compute.map_cache as map_cache
from xai_bench.compute.map_cache import MapCache, sharing_maps
from xai_bench.metrics.common import attribute
from xai_bench.methods.base import AttributionMethod
from xai_bench.run.runner import RunConfig, Runner


class Counting(AttributionMethod):
    """Input × a fixed per-class weight; counts its calls and the images it explained."""

    name = "counting"

    def __init__(self, agnostic=False):
        super().__init__()
        self.class_agnostic = agnostic
        self.calls, self.images = 0, 0

    def attribute(self, model, x, targets):
        self.calls += 1
        self.images += x.shape[0]
        scale = 1.0 if self.class_agnostic else (targets.double() + 1)[:, None, None]
        return x.double().sum(1) * scale


def test_a_batch_is_explained_once_and_copies_are_returned():
    model, method = torch.nn.Identity(), Counting()
    x, t = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    with sharing_maps(model) as cache:
        first = attribute(method, model, x, t)
        first.add_(100)  # a metric that edits its maps in place does not edit the cache
        again = attribute(method, model, x.clone(), t.clone())
        other_targets = attribute(method, model, x, torch.tensor([3, 2, 1, 0]))
    assert method.calls == 2 and cache.hits == 1 and cache.saved == 4
    assert torch.equal(again, method.attribute(model, x, t))
    assert not torch.equal(other_targets, again)
    outside = attribute(method, model, x, t)  # no cache outside the block
    assert method.calls == 4 and torch.equal(outside, again)


def test_only_the_model_it_was_opened_for_is_served():
    """The parameter-randomisation check explains randomised copies: never a hit."""
    model, copy, method = torch.nn.Identity(), torch.nn.Identity(), Counting()
    x, t = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    with sharing_maps(model):
        attribute(method, model, x, t)
        attribute(method, copy, x, t)
        attribute(method, copy, x, t)
    assert method.calls == 3


def test_class_agnostic_methods_explain_each_distinct_image_once():
    model, method = torch.nn.Identity(), Counting(agnostic=True)
    grids = torch.rand(2, 3, 8, 8)
    x = grids.repeat_interleave(4, dim=0)  # the grid pointing game: four targets per grid
    t = torch.tensor([0, 1, 2, 3] * 2)
    with sharing_maps(model):
        maps = attribute(method, model, x, t)
    assert method.calls == 1 and method.images == 2
    assert torch.equal(maps, x.double().sum(1))


def _records(config, disable=False, monkeypatch=None):
    if disable:
        monkeypatch.setattr(map_cache, "active_cache", lambda model: None)
    runner = Runner(config, progress=False, log=lambda *_: None)
    runner.run()
    if disable:
        monkeypatch.undo()
    frame = runner.records.sort_values(["model", "method", "metric", "sample_id"])
    return frame.reset_index(drop=True), runner


@pytest.mark.usefixtures("one_thread")
def test_a_run_with_shared_maps_equals_one_without(monkeypatch, pair_checkpoints):
    """Records are bit-identical with and without sharing (the methods are deterministic,
    so a shared map is the very map a metric would compute), and the sharing saves work."""
    config = RunConfig(models=["bcos_vit_nano", "vit_nano"], checkpoints=pair_checkpoints,
                       methods=["ixg", "intgrad", "random", "gradcam"],
                       metrics=["pixel_perturbation", "deletion", "insertion", "random_target"],
                       n_images=5, n_grids=1, batch_size=4, out=None,
                       method_params={"intgrad": {"n_steps": 4}})
    shared, runner = _records(config)
    alone, plain = _records(config, disable=True, monkeypatch=monkeypatch)
    assert runner.maps_saved > 0 and plain.maps_saved == 0
    assert (shared["status"] == "ok").sum() > 0
    assert shared[["model", "method", "metric", "sample_id", "status"]].equals(
        alone[["model", "method", "metric", "sample_id", "status"]])
    assert shared["value"].fillna(-9).tolist() == alone["value"].fillna(-9).tolist()


@pytest.mark.usefixtures("one_thread")
def test_rollout_explains_a_grid_once_not_four_times(pair_checkpoints, monkeypatch):
    calls = []
    rollout = xai_bench.get_method("rollout")
    original = type(rollout).attribute

    def counted(self, model, x, targets):
        calls.append(x.shape[0])
        return original(self, model, x, targets)

    monkeypatch.setattr(type(rollout), "attribute", counted)
    config = RunConfig(models=["vit_nano"], checkpoints={"vit_nano": pair_checkpoints[
        "vit_nano"]}, methods=["rollout"], metrics=["grid_pointing_game"], n_grids=2,
        batch_size=8, out=None,
        metric_params={"grid_pointing_game": {"confidence_threshold": 0}})
    runner = Runner(config, progress=False, log=lambda *_: None)
    runner.run()
    ok = runner.records[runner.records["status"] == "ok"]
    assert len(ok) == 8  # 2 grids × 4 cells scored
    assert sum(calls) == 2  # but each grid explained once


@pytest.mark.usefixtures("one_thread")
def test_perturbation_points_are_forwarded_once_per_model(pair_checkpoints, monkeypatch):
    """Pixel perturbation's most-first points are deletion's, the clean images are the 0 %
    point of both and insertion's last, and the all-zero and blurred inputs do not depend on
    the method: with two methods on one model 143 points are forwarded instead of 166
    (per method 17 + 33 + 33 = 83, of which 3 are method-independent and 10 shared)."""
    import xai_bench.metrics.common as common

    forwarded = []
    original = common.perturbed_confidences

    def counted(model, outside, inside, ranks, points, targets, batch_size):
        forwarded.append(len(points))
        return original(model, outside, inside, ranks, points, targets, batch_size)

    monkeypatch.setattr(common, "perturbed_confidences", counted)
    config = RunConfig(models=["bcos_vit_nano"],
                       checkpoints={"bcos_vit_nano": pair_checkpoints["bcos_vit_nano"]},
                       methods=["ixg", "centre"],
                       metrics=["pixel_perturbation", "deletion", "insertion"],
                       n_images=3, batch_size=4, out=None)
    shared, runner = _records(config)
    assert forwarded == [1] * 143  # one point per forward, 32x32 images in one chunk
    assert runner.copies_saved == 3 * (166 - 143)
    forwarded.clear()
    alone, _ = _records(config, disable=True, monkeypatch=monkeypatch)
    assert len(forwarded) == 166
    assert shared["value"].tolist() == alone["value"].tolist()
