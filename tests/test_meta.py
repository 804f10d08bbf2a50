"""The meta-evaluation (xai-bench run --meta, xai_bench.run.meta): seeded perturbations that
leave the caller's model alone, minor ones that keep the predictions, resilience of a metric
that ignores what is perturbed, reactivity of one that does not, the random baseline's zero
gap to itself, and meta.csv with its report section."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import xai_bench
from conftest import TinyLinear
from xai_bench.cli import main
from xai_bench.data import SyntheticShapes
from xai_bench.run.config import RunConfig
from xai_bench.run.meta import (
    META_COLUMNS, MetaSettings, _predicted, image_tensors, inter_reactivity, inter_resilience,
    intra_p_value, meta_evaluate, meta_summary, perturb_images, perturb_model,
    perturb_prepared, random_gaps,
)
from xai_bench.run.runner import Runner

pytestmark = pytest.mark.usefixtures("one_thread")

META_MODEL = "_test_meta_linear"


@pytest.fixture(scope="module")
def tiny_model():
    """``TinyLinear`` registered for this module's command-line test, removed afterwards."""
    xai_bench.MODELS.add(META_MODEL, lambda **kw: TinyLinear(**kw), family="test",
                         description="test model: pool + linear")
    yield META_MODEL
    xai_bench.MODELS.unregister(META_MODEL)


@pytest.fixture(scope="module")
def data():
    return SyntheticShapes("test", n=160, seed=0)


@pytest.fixture(scope="module")
def model(data):
    """The tiny pool + linear test model, fitted for a few steps: most test images are
    correctly classified."""
    torch.manual_seed(0)
    m = TinyLinear()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    x, y = m.encode(data.images.float() / 255 if data.images.dtype == torch.uint8
                    else data.images), data.labels
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


def _images(data, n=16):
    imgs = data.images[:n]
    return imgs.float() / 255 if imgs.dtype == torch.uint8 else imgs


# ---- perturbations --------------------------------------------------------------------------
def test_model_perturbation_is_seeded_leaves_the_original_and_minor_keeps_predictions(
        model, data):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = [_images(data, 64)]
    clean = _predicted(model, images, "cpu", 32)
    a, b = perturb_model(model, 0.001, seed=7), perturb_model(model, 0.001, seed=7)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the caller's model is untouched
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name  # same seed, same copy
        ratio = pa / dict(model.named_parameters())[name]
        assert (ratio - 1).abs().max() < 0.01 and (ratio != 1).any()
    assert not torch.equal(perturb_model(model, 0.001, seed=8).linear.weight, a.linear.weight)
    assert torch.equal(_predicted(a, images, "cpu", 32), clean)  # minor: predictions kept
    wrecked = perturb_model(model, 0.5, seed=7)
    assert (_predicted(wrecked, images, "cpu", 32) != clean).any()


def test_input_perturbation_is_bounded_clamped_and_per_image(data):
    x = _images(data, 6)
    noisy = perturb_images(x, 0.01, seed=3)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert (noisy - x).abs().max() <= 0.01 + 1e-6 and not torch.equal(noisy, x)
    # an image's noise does not depend on its batch: the same image, alone, gets the same
    assert torch.equal(perturb_images(x[2:3], 0.01, seed=3), noisy[2:3])
    grids = x[:4].reshape(2, 2, 3, *x.shape[-2:])  # any leading dimensions
    assert torch.equal(perturb_images(grids, 0.01, seed=3).reshape(x[:4].shape), noisy[:4])


@dataclasses.dataclass
class _Inner:
    images: torch.Tensor
    labels: torch.Tensor


@dataclasses.dataclass
class _Outer:
    selection: _Inner
    masks: torch.Tensor


def test_perturb_prepared_changes_only_the_images_nested_too(data):
    x = _images(data, 3)
    prepared = _Outer(_Inner(x, torch.arange(3)), torch.zeros(3, 32, 32, dtype=torch.bool))
    assert len(image_tensors(prepared)) == 1
    out = perturb_prepared(prepared, lambda t: t * 0)
    assert torch.equal(out.selection.images, torch.zeros_like(x))
    assert out.selection.labels is prepared.selection.labels and out.masks is prepared.masks
    assert torch.equal(prepared.selection.images, x)  # the original is kept
    assert perturb_prepared(_Inner(torch.zeros(3), torch.zeros(3)), lambda t: t) is None


# ---- statistics -----------------------------------------------------------------------------
def test_intra_and_inter_consistency():
    a = np.linspace(0, 1, 12)
    assert intra_p_value(a, a.copy()) == 1.0
    assert intra_p_value(a, a + 0.5) < 0.01  # every score moved the same way
    assert math.isnan(intra_p_value([np.nan], [1.0]))
    q = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 0.0]])  # 2 methods × 3 samples
    assert inter_resilience(q, q + 0.1) == 1.0
    assert inter_resilience(q, q[::-1]) == 0.0
    assert inter_reactivity(q, q - 1, higher_is_better=True) == 1.0
    assert inter_reactivity(q, q - 1, higher_is_better=False) == 0.0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="k must be >= 1"):
        MetaSettings(k=0)
    with pytest.raises(ValueError, match="model_minor must be > 0"):
        MetaSettings(model_minor=0)


# ---- toy metrics through the runner -------------------------------------------------------
@xai_bench.metric("_meta_map_mean", higher_is_better=True)
def map_mean(model, x, targets, maps):
    """Ignores the model: the mean of the map."""
    return maps.mean(dim=(1, 2))


@xai_bench.metric("_meta_pixel_spread", higher_is_better=True)
def pixel_spread(model, x, targets, maps):
    """Reacts to input noise by construction: the spread of the input."""
    return x.std(dim=(1, 2, 3))


def brightness(model, x, targets):
    """A method that ignores the model: the channel mean of the input."""
    return x.mean(1)


@pytest.fixture(scope="module")
def toy_run(model, data):
    config = RunConfig(models=[model], methods=[brightness, "random"],
                       metrics=[map_mean, pixel_spread], dataset=data, n_images=10,
                       batch_size=8, out=None)
    lines = []
    runner = Runner(config, progress=False, log=lines.append)
    runner.run()
    frame = meta_evaluate(runner, runner.records, MetaSettings(k=2, n_resamples=500))
    return runner, frame


def test_meta_of_toy_metrics(toy_run):
    runner, frame = toy_run
    assert list(frame.columns) == META_COLUMNS
    assert len(frame) == 4 and set(frame["method"]) == {"brightness", "random"}
    assert frame["minor_accepted_model"].all() and frame["minor_accepted_input"].all()
    assert (frame["disruptive_flipped_input"] > 0.5).all()  # the disruption does disrupt
    assert (frame["n_meta"] == 10).all()
    rows = frame.set_index(["metric", "method"])
    # maps and scores that ignore the model: nothing moves under model perturbation
    for method in ("brightness", "random"):
        assert rows.loc[("_meta_map_mean", method), "resilience_model"] == 1.0
        assert rows.loc[("_meta_map_mean", method), "reactivity_model"] == 0.0
    assert rows.loc[("_meta_pixel_spread", "brightness"), "resilience_model"] == 1.0
    # the input's spread moves under disruptive input noise, every image the same way
    assert rows.loc[("_meta_pixel_spread", "brightness"), "reactivity_input"] > 0.95
    assert rows.loc[("_meta_map_mean", "brightness"), "reactivity_input"] > 0.95
    summary = meta_summary(frame).set_index("metric")
    assert summary.loc["_meta_map_mean", "resilience_model"] == 1.0


def test_the_summary_reads_meta_csv_back_with_note_rows(toy_run, tmp_path):
    _, frame = toy_run
    note = dict.fromkeys(frame.columns, None) | dict(model="m", replicate=0, metric="other",
                                                      method="", note="not prepared")
    pd.concat([frame, pd.DataFrame([note])]).to_csv(tmp_path / "meta.csv", index=False)
    summary = meta_summary(pd.read_csv(tmp_path / "meta.csv"))
    assert list(summary["metric"]) == ["_meta_map_mean", "_meta_pixel_spread"]
    assert (summary["compared"] == 1).all()  # brightness; the random method is not counted
    from xai_bench.outputs.report.meta_section import meta_html

    page = meta_html(tmp_path)
    assert "Which metrics can be trusted" in page and "other: not prepared" in page


def test_random_gap_to_itself_is_zero_within_its_interval(toy_run):
    runner, frame = toy_run
    rows = frame.set_index(["metric", "method"])
    for metric in ("_meta_map_mean", "_meta_pixel_spread"):
        r = rows.loc[(metric, "random")]
        assert r["random_gap"] == 0.0 and r["random_gap_low"] <= 0.0 <= r["random_gap_high"]
        assert not r["separates_from_random"] and r["n_samples"] == 10
    # a map of the input's brightness and a random map differ in their means: separated
    r = rows.loc[("_meta_map_mean", "brightness")]
    assert r["separates_from_random"] == (r["random_gap_low"] > 0 or r["random_gap_high"] < 0)
    assert r["n_samples"] == 10 and np.isfinite(r["random_gap"])


def test_without_a_random_method_the_gap_is_empty(toy_run):
    runner, _ = toy_run
    records = runner.records[runner.records["method"] != "random"]
    assert random_gaps(records) == {}


# ---- the command line -----------------------------------------------------------------------
def _run(tmp_path, tiny_model, *extra):
    args = ["run", "--models", tiny_model, "--untrained", "--dataset", "shapes:n=96",
            "--methods", "random,ixg", "--metric", "mask_localisation", "--n-images", "6",
            "--batch-size", "8", "--out", str(tmp_path), "--name", "m", "--no-progress",
            *extra]
    return CliRunner().invoke(main, args)


def test_run_meta_writes_meta_csv_and_the_report_section(tmp_path, tiny_model):
    plain = _run(tmp_path / "plain", tiny_model, "--no-plots")
    assert plain.exit_code == 0, plain.output
    assert not (tmp_path / "plain" / "m" / "meta.csv").exists()
    assert "meta-evaluation" not in plain.output

    result = _run(tmp_path / "meta", tiny_model, "--meta")
    assert result.exit_code == 0, result.output
    assert "1 model(s) × 1 metric(s) × 2 method(s) × (1 + 2·3·2) settings = 26 extra " \
           "metric evaluations" in result.output
    run_dir = tmp_path / "meta" / "m"
    meta = pd.read_csv(run_dir / "meta.csv")
    assert list(meta.columns) == META_COLUMNS
    assert set(meta["method"]) == {"random", "ixg"} and set(meta["metric"]) == \
        {"mask_localisation"}
    assert meta["minor_accepted_model"].all()
    report = (run_dir / "report.html").read_text()
    assert "Which metrics can be trusted" in report
    assert report.index("Which metrics can be trusted") > report.index("Metric agreement")
    # the plain run's report (made now, from its directory) has no such section
    from xai_bench.outputs.report.meta_section import meta_html

    assert meta_html(tmp_path / "plain" / "m") == ""
