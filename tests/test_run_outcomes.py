"""Saying what happened: a run with a (model, metric) that has no ok cell prints the reasons
and exits 1; ``--untrained`` keeps the sanity checks that make sense on random weights; small
samples are named (xai_bench.analysis.sample_size)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from click.testing import CliRunner

from xai_bench.analysis.sample_size import SMALL_SAMPLE_N, small_sample_notes, small_samples
from xai_bench.cli import main
from xai_bench.run.outcomes import gaps, problem_lines, problems

pytestmark = pytest.mark.usefixtures("one_thread")

# vit_nano with the random weights of --seed 1 classifies none of the 10 test images of
# shapes:n=10 correctly (a random model with many classes would do the same on any data)
NONE_CORRECT = ["--models", "vit_nano", "--untrained", "--dataset", "shapes:n=10",
                "--seed", "1", "--methods", "saliency,ixg", "--no-plots", "--no-progress"]


def _run(tmp_path, *args):
    result = CliRunner().invoke(main, ["run", *NONE_CORRECT, "--out", str(tmp_path), *args])
    records = pd.read_csv(next(tmp_path.glob("*/records.csv")))
    return result, records


def test_no_ok_cell_exits_1_with_the_reasons_on_the_terminal(tmp_path):
    result, records = _run(tmp_path, "--metric", "deletion,random_target", "--n-images", "3")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    # the reason, once, naming the pair and both methods; and where to read more
    line = next(s for s in result.output.splitlines() if "vit_nano · deletion" in s)
    assert "skipped for all 2 methods (ixg, saliency)" in line
    assert "classifies no test image correctly" in line
    assert "records.csv" in result.output
    # the pair that has results is no problem, and every file was written completely
    problems_block = result.output[result.output.index("no result for 1 (model, metric)"):]
    assert "random_target" not in problems_block
    assert set(records.loc[records["metric"] == "deletion", "status"]) == {"skipped"}
    assert (records.loc[records["metric"] == "random_target", "status"] == "ok").all()
    run_dir = next(tmp_path.glob("*/records.csv")).parent
    assert (run_dir / "run.json").exists() and (run_dir / "summary.csv").exists()
    # the accuracy line says the weights are random, not that a model scored 0
    assert "test accuracy 0.0000 (random weights: --untrained)" in result.output


def test_a_metric_of_a_group_that_cannot_apply_is_a_note_not_a_failure(tmp_path):
    """The localisation category's metrics are skipped (no correct image), the named
    random_target has results: the run says why and exits 0; no result at all exits 1."""
    result, _ = _run(tmp_path / "a", "--metric", "localisation,random_target", "--n-images", "3",
                     "--n-grids", "1")
    assert result.exit_code == 0, result.output
    notes = [s for s in result.output.splitlines() if s.startswith("not applicable here")]
    assert any("vit_nano · grid_pointing_game" in s for s in notes), result.output
    assert "no result for" not in result.output
    nothing, _ = _run(tmp_path / "b", "--metric", "localisation", "--n-images", "3",
                      "--n-grids", "1")
    assert nothing.exit_code == 1 and "no result for 2 (model, metric)" in nothing.output


def test_untrained_sanity_metrics_explain_images_regardless_of_correctness(tmp_path):
    result, records = _run(tmp_path, "--metric", "parameter_randomisation,random_target",
                           "--n-images", "4")
    assert result.exit_code == 0, result.output
    ok = records[records["status"] == "ok"]
    assert set(ok["metric"]) == {"parameter_randomisation", "random_target"}
    assert set(ok["method"]) == {"saliency", "ixg"}
    # 4 images each, chosen among all test images (none is classified correctly)
    for metric in ("parameter_randomisation", "random_target"):
        rows = ok[ok["metric"] == metric]
        assert rows.groupby("method")["source_index"].nunique().eq(4).all()
        assert set(rows["selected_from"]) == {"all test images (random weights)"}
    assert ok["value"].between(-1, 1).all()


def test_the_random_weights_rule_applies_only_to_marked_models():
    """Unmarked (trained, or a caller's object): only correct images; marked by the run as
    random weights: the most confident in their true class, correct or not."""
    import torch

    from conftest import SelfLabelled, TinyLinear
    from xai_bench.metrics.random_weights import has_random_weights, mark_random_weights, \
        sanity_images

    torch.manual_seed(0)
    model = TinyLinear().eval()
    data = SelfLabelled(model, n=12)
    data.labels[2:] = (data.labels[2:] + 1) % 10  # only items 0 and 1 stay correct
    trained = sanity_images(model, data, 6, selection="global")
    assert not has_random_weights(model)
    assert sorted(trained.indices.tolist()) == [0, 1]  # fewer than asked: only 2 are correct
    mark_random_weights(model)
    chosen = sanity_images(model, data, 6, selection="global")
    assert len(chosen) == 6 and (chosen.indices >= 2).any()
    assert chosen.n_correct == 2 and chosen.labels.tolist() == data.labels[chosen.indices].tolist()
    confidence = model.confidence(model(model.encode(data.images))).detach()
    true_class = confidence[torch.arange(12), data.labels]
    assert torch.equal(chosen.indices, torch.sort(-true_class, stable=True).indices[:6])


def _records(rows):
    base = dict(sample_id="s", target=0, category="c", higher_is_better=True, replicate=0)
    return pd.DataFrame([dict(base, **r) for r in rows])


def test_gaps_group_one_reason_over_methods_and_keep_distinct_reasons_apart():
    rows = [dict(model="m", method=me, metric="gpg", value=math.nan, status="skipped",
                 message="MetricNotApplicable: model 'm' classifies no test image correctly")
            for me in ("a", "b", "c")]
    rows += [dict(model="m", method="rollout", metric="del", value=math.nan, status="skipped",
                  message="method 'rollout' does not apply to bcos model 'm'"),
             dict(model="m", method="gae", metric="del", value=math.nan, status="skipped",
                  message="method 'gae' does not apply to bcos model 'm'"),
             dict(model="m", method="x", metric="del", value=math.nan, status="error",
                  message="RuntimeError: boom"),
             dict(model="m", method="a", metric="ok_metric", value=0.5, status="ok",
                  message=""),
             dict(model="m", method="b", metric="ok_metric", value=math.nan, status="error",
                  message="RuntimeError: boom")]
    found = problems(_records(rows))
    lines = problem_lines(found)
    assert len(lines) == 3  # gpg; del (does not apply, for both methods); del (error)
    assert lines[0] == ("m · gpg: skipped for all 3 methods (a, b, c) — model 'm' classifies "
                        "no test image correctly")
    assert lines[1] == ("m · del: skipped for 2 methods (gae, rollout) — the method does not "
                        "apply to bcos model 'm'")
    assert lines[2] == "m · del: error for 1 method (x) — RuntimeError: boom"
    assert gaps(_records([r for r in rows if r["metric"] == "ok_metric"])) == []


def test_small_sample_notes_flag_below_the_threshold_only():
    summary = pd.DataFrame([
        dict(model="m", metric="deletion", method="saliency", replicate=0, n=2),
        dict(model="m", metric="deletion", method="ixg", replicate=0, n=2),
        dict(model="m", metric="deletion", method="gradcam", replicate=0, n=SMALL_SAMPLE_N - 1),
        dict(model="m", metric="insertion", method="saliency", replicate=0, n=SMALL_SAMPLE_N),
        dict(model="m", metric="insertion", method="ixg", replicate=0, n=250)])
    flagged = small_samples(summary)
    assert set(flagged["method"]) == {"saliency", "ixg", "gradcam"}
    assert set(flagged["metric"]) == {"deletion"}
    notes = small_sample_notes(summary)
    assert notes == [f"m · deletion: n = 2 for ixg, saliency; n = {SMALL_SAMPLE_N - 1} for "
                     f"gradcam (below {SMALL_SAMPLE_N}: intervals and tests are unreliable)"]
    # records are counted as the statistics count them: ok samples only
    recs = _records([dict(model="m", method="a", metric="d", value=float(i), status="ok",
                          message="") for i in range(3)]
                    + [dict(model="m", method="b", metric="d", value=float(i), status="ok",
                            message="") for i in range(SMALL_SAMPLE_N)])
    assert small_samples(recs).to_dict("records") == [dict(model="m", metric="d", method="a",
                                                           n=3)]
    assert small_sample_notes(summary[summary["metric"] == "insertion"]) == []


def test_untrained_metric_sanity_runs_the_checks_that_make_sense_and_exits_0(tmp_path):
    """--untrained --metric sanity: three checks give ok cells on images none of which is
    classified correctly; efficient_mprt is not run (it needs trained weights), which is
    said once and does not fail the run."""
    result, records = _run(tmp_path, "--metric", "sanity", "--n-images", "3",
                           "--metric-arg", "smooth_mprt.nr_samples=2")
    assert result.exit_code == 0, result.output
    ok = records[records["status"] == "ok"]
    assert set(ok["metric"]) == {"parameter_randomisation", "random_target", "smooth_mprt"}
    assert set(ok["selected_from"]) == {"all test images (random weights)"}
    line = next(s for s in result.output.splitlines() if "efficient_mprt" in s)
    assert line.startswith("not run on random weights: vit_nano · efficient_mprt: skipped")
    assert "needs trained weights" in line
