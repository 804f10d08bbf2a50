"""Multi-process runs (xai_bench.run.distributed): torchrun with gloo on CPU gives the records of a
single-process run, a killed job resumes with any number of processes, claims are exclusive."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from xai_bench.run.distributed import CLAIMS, Ranks, claim, clear_claims
from xai_bench.run.runner import RunConfig, Runner, RunError

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or \
    shutil.which("torchrun")

# the shipped default pair: nothing to train; intgrad makes the run long enough to be killed
ARGS = ["run", "--methods", "ixg,rollout,uniform,intgrad", "--metric",
        "pixel_perturbation,deletion,grid_pointing_game", "--n-grids", "2", "--n-images", "6",
        "--batch-size", "4", "--method-arg", "intgrad.n_steps=24", "--no-plots",
        "--no-progress"]


def _env(tmp_path):
    # a fatal signal in a worker prints every thread's Python stack (diagnosis)
    env = dict(os.environ, OMP_NUM_THREADS="1", XAI_BENCH_CACHE=str(tmp_path / "cache"),
               PYTHONFAULTHANDLER="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _command(out, name, processes, launcher="torchrun"):
    if processes == 1 or launcher == "flag":  # `xai-bench run --processes N` starts torchrun
        return [sys.executable, "-m", "xai_bench", *ARGS, "--out", str(out), "--name", name,
                "--processes", str(processes)]
    return [TORCHRUN, "--standalone", f"--nproc-per-node={processes}", "-m", "xai_bench",
            *ARGS, "--out", str(out), "--name", name]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in their own sessions)."""
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _records(run_dir):
    frame = pd.read_csv(run_dir / "records.csv")
    return frame.sort_values(["model", "method", "metric", "sample_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(_command(out, "one", 1), env=_env(out), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, _records(out / "one")


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_gloo_processes_give_the_single_process_records(reference):
    out, single = reference
    name = "two"
    done = subprocess.run(_command(out, name, 2), env=_env(out), capture_output=True,
                          text=True, timeout=600)
    if done.returncode and "Signal 6 (SIGABRT)" in done.stderr:
        # A worker aborted inside the C++ runtime ("terminate called without an active
        # exception", no Python error) once on a loaded 2-core CI machine and never in
        # repeated runs here: one fresh retry, reported; a second abort or any other
        # failure fails the test.
        warnings.warn("a torchrun worker aborted (SIGABRT); retried once:\n" + done.stderr[-2000:])
        name = "two-again"
        done = subprocess.run(_command(out, name, 2), env=_env(out), capture_output=True,
                              text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 processes share the work" in done.stdout
    run_dir = out / name
    two = _records(run_dir)
    # bitwise: every method here is deterministic, and a cell is computed the same way
    # whichever process computes it
    assert two.equals(single)
    assert pd.read_csv(run_dir / "curves.csv").equals(pd.read_csv(out / "one" / "curves.csv"))
    assert not (run_dir / CLAIMS).exists()  # rank 0 removed the claims
    assert not (run_dir / "parts").exists()  # every cell in parts was joined
    # the maps reused by every process add up to those of the single process
    reused = [json.loads((out / run / "run.json").read_text())["timings"]["maps_reused_images"]
              for run in ("one", name)]
    assert reused[0] == reused[1] > 0
    # rank 0 alone reported: one summary, not two
    assert done.stdout.count("tables:") == 1


@pytest.mark.skipif(TORCHRUN is None or not Path("/proc/self/stat").exists(),
                    reason="torchrun or /proc is missing")
def test_a_killed_two_process_job_resumes_with_one_process(reference):
    """``xai-bench run --processes 2``, killed (torchrun's agent and both workers at once)
    after a few cells, then resumed by one process: the records of the uninterrupted run."""
    out, single = reference
    run_dir = out / "killed"
    job = subprocess.Popen(_command(out, "killed", 2, launcher="flag"), env=_env(out),
                           stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    cells = run_dir / "cells"
    try:
        # kill the whole job (torchrun and both workers) once a few cells are committed
        while time.time() < deadline and job.poll() is None:
            committed = len(list(cells.glob("*__*__*.json"))) if cells.is_dir() else 0
            if committed >= 4:
                break
            time.sleep(0.05)
        assert job.poll() is None, "the job ended before it could be killed"
        for pid in [job.pid] + _descendants(job.pid):  # the whole job at once, no clean-up
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        job.wait(timeout=60)
    kept = len(list(cells.glob("*__*__*.json")))
    assert 4 <= kept < 24 and not (run_dir / "records.csv").exists()
    done = subprocess.run(_command(out, "killed", 1), env=_env(out), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"({kept}/24 cells already done)" in done.stdout
    assert _records(run_dir).equals(single)
    assert not (run_dir / CLAIMS).exists()  # the killed job's claims were cleared


def test_a_unit_is_claimed_by_exactly_one_process(tmp_path):
    assert claim(tmp_path, "inv", "m__ixg__unit")
    assert not claim(tmp_path, "inv", "m__ixg__unit")
    assert claim(tmp_path, "other", "m__ixg__unit")  # another invocation: a fresh claim
    clear_claims(tmp_path, "inv")
    assert (tmp_path / CLAIMS / "other").is_dir()
    clear_claims(tmp_path)
    assert not (tmp_path / CLAIMS).exists()


def test_ranks_place_processes_on_their_own_gpu():
    assert Ranks(rank=3, world=4, local_rank=1).device("cuda") == "cuda:1"
    assert Ranks(rank=3, world=4, local_rank=1).device("cpu") == "cpu"
    assert Ranks().device("cuda") == "cuda"


def test_a_multi_process_run_needs_a_run_directory(monkeypatch):
    import xai_bench.run.distributed as distributed

    monkeypatch.setattr(distributed, "_RANKS", Ranks(rank=0, world=2))
    with pytest.raises(RunError, match="run directory"):
        Runner(RunConfig(methods=["uniform"], metrics=["deletion"], out=None), progress=False)
