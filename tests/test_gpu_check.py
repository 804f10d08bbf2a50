"""benchmarks/gpu_check.py end to end on the CPU with tiny options: the JSON has every part, and
the CPU-vs-CPU comparison of the quick suite's records finds no difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
TINY = ["--device", "cpu", "--dataset", "shapes:n=300", "--n-grids", "2", "--n-images", "2",
        "--sizes", "nano", "--batch-sizes", "2", "--repeats", "1",
        "--throughput-models", "bcos_vit_nano", "--throughput-batch", "4",
        "--throughput-repeats", "1", "--methods", "rollout,ixg",
        "--metrics", "default"]  # the quick suite's metrics (the script's default: all of them)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # in a process of its own, as a user runs it: the script sets up models, data and
    # registries of its own, which must not leak into the other tests
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def test_cpu_vs_cpu_records_agree_exactly(report):
    suite = report["suite"]
    comparison = suite["comparison"]
    assert comparison["n_compared"] > 0 and comparison["tolerance"] == 0.01
    assert comparison["n_over_tolerance"] == 0 and comparison["max_abs_diff"] == 0.0
    assert comparison["only_on_device"] == comparison["only_on_cpu"] == 0
    assert comparison["status_changed"] == 0 and comparison["nan_mismatch"] == 0
    assert suite["means"]["max_abs_diff"] == 0.0 and suite["best_method_changed"] == []
    assert set(comparison["per_metric"]) >= {"grid_pointing_game", "pixel_perturbation",
                                             "deletion", "random_target"}


def test_every_part_is_in_the_json(report):
    assert set(report) >= {"config", "environment", "suite", "method_cost", "throughput",
                           "protocol_estimate", "seconds"}
    rows = report["method_cost"]["rows"]
    assert {(r["model"], r["method"]) for r in rows} == {
        (m, name) for m in ("bcos_vit_nano", "vit_nano")
        for name in ("(fwd+bwd)", "rollout", "ixg")}
    assert all(r["cost"] > 0 and r["batch"] == 2 for r in rows)
    throughput = {r["model"]: r for r in report["throughput"]["rows"]}
    assert throughput["bcos_vit_nano"]["inherent_images_per_s"] > 0
    assert throughput["vit_nano"]["forward_fp32_images_per_s"] > 0  # the twin, for the estimate
    (pair,) = report["protocol_estimate"]["pairs"]
    assert set(pair["models"]) == {"bcos_vit_nano", "vit_nano"} and pair["total_hours"] > 0
    # on 8 GPUs: an eighth of the work, unless one part (one batch of one unit) takes longer
    assert pair["total_hours"] / 8 <= pair["wall_hours_on_gpus"] < pair["total_hours"]
    estimate = report["protocol_estimate"]
    assert estimate["explanations_per_method"]["grid_pointing_game"] == 1000  # 250 grids x 4
    assert estimate["forwards_per_method"] == {"pixel_perturbation": 250 * 17,
                                               "deletion": 250 * 33, "insertion": 250 * 33}
    per_method = pair["models"]["vit_nano"]["per_method"]
    assert set(per_method) == {"rollout", "ixg"}
    if estimate["maps_shared"]:  # rollout is class-agnostic: one map per grid, not four
        assert per_method["rollout"]["explained"] < per_method["ixg"]["explained"]
