"""Multi-process runs (xai_bench.run.distributed): torchrun with gloo on CPU gives the records of a
single-process run, a killed job resumes with any number of processes, claims are exclusive."""

import contextlib
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


# ---- many processes fail like one (issue 22) ---------------------------------------------------
QUICK = ["run", "--methods", "uniform", "--metric", "deletion", "--n-images", "2",
         "--no-plots", "--no-progress"]


def _quick(out, processes, launcher="torchrun", *more):
    if launcher == "flag":
        return [sys.executable, "-m", "xai_bench", *QUICK, "--out", str(out), "--name", "q",
                "--processes", str(processes), *more]
    return [TORCHRUN, "--standalone", f"--nproc-per-node={processes}", "-m", "xai_bench",
            *QUICK, "--out", str(out), "--name", "q", *more]


def _error_lines(text):
    return [line for line in text.splitlines() if line.startswith("Error:")]


def _no_worker_traceback(stderr):
    """No worker printed a traceback (torchrun's own command prints one for ChildFailedError,
    naming the workers' exit codes: that is torchrun's, not ours)."""
    assert "[rank" not in stderr and "Connection closed" not in stderr
    assert "DistNetworkError" not in stderr and "xai_bench/" not in stderr


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_a_locked_run_directory_stops_every_rank_with_the_same_line(tmp_path):
    """Only rank 0 takes the lock; rank 1 used to die in its first broadcast with gloo's
    "Connection closed by peer" traceback."""
    import fcntl

    run_dir = tmp_path / "q"
    run_dir.mkdir()
    with open(run_dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        done = subprocess.run(_quick(tmp_path, 2), env=_env(tmp_path), capture_output=True,
                              text=True, timeout=300)
    lines = _error_lines(done.stderr)
    assert done.returncode != 0 and len(lines) == 2 and lines[0] == lines[1], done.stderr
    assert "in use by process 4242" in lines[0] and "--name" in lines[0]
    _no_worker_traceback(done.stderr)
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # the other job's, intact


def test_an_unwritable_out_stops_every_process_with_the_same_line(tmp_path):
    """--out under a regular file (unwritable even as root): rank 0 finds it, every worker
    says it once, exit 2, no traceback anywhere (`--processes 2` is torchrun's agent
    in-process, quiet about the workers' exits)."""
    (tmp_path / "a-file").write_text("not a directory\n")
    done = subprocess.run(_quick(tmp_path / "a-file" / "out", 2, "flag"), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    lines = _error_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 2 and lines[0] == lines[1], done.stderr
    assert "a-file" in lines[0] and "--out" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("value, launcher", [("0", "torchrun"), ("abc", "flag")])
def test_a_malformed_barrier_timeout_is_one_line_before_any_rendezvous(tmp_path, value,
                                                                       launcher):
    if launcher == "torchrun" and TORCHRUN is None:
        pytest.skip("torchrun is not installed")
    env = dict(_env(tmp_path), XAI_BENCH_DIST_TIMEOUT_S=value)
    done = subprocess.run(_quick(tmp_path, 2, launcher), env=env, capture_output=True,
                          text=True, timeout=300)
    lines = _error_lines(done.stderr)
    # torchrun: each worker refuses before its rendezvous; --processes: the launcher, once
    assert len(lines) == (2 if launcher == "torchrun" else 1), done.stderr
    assert f"XAI_BENCH_DIST_TIMEOUT_S={value!r} is not a positive number" in lines[0]
    assert done.returncode == (2 if launcher == "flag" else 1)
    _no_worker_traceback(done.stderr)
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("value", ["-5", "nan", "inf", " "])
def test_barrier_timeout_values(monkeypatch, value):
    from xai_bench.errors import ConfigError
    from xai_bench.run.distributed import DEFAULT_TIMEOUT_S, barrier_timeout_s

    monkeypatch.setenv("XAI_BENCH_DIST_TIMEOUT_S", value)
    if value.strip():
        with pytest.raises(ConfigError, match="positive number of seconds; set it to"):
            barrier_timeout_s()
    else:  # blank: unset
        assert barrier_timeout_s() == DEFAULT_TIMEOUT_S
    monkeypatch.setenv("XAI_BENCH_DIST_TIMEOUT_S", "2.5")
    assert barrier_timeout_s() == 2.5


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(TORCHRUN is None or not Path("/proc/self/stat").exists(),
                    reason="torchrun or /proc is missing")
def test_workers_stop_when_their_launcher_is_killed(tmp_path):
    """kill -9 of `xai-bench run --processes 2` alone (its own session, like a scheduler
    killing the job's leader): the workers, in sessions of their own, notice and stop."""
    job = subprocess.Popen(_command(tmp_path, "orphans", 2, launcher="flag"),
                           env=_env(tmp_path), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    workers: list = []
    try:
        deadline = time.time() + 120
        cells = tmp_path / "orphans" / "cells"
        while time.time() < deadline and job.poll() is None:  # both working
            workers = [p for p in _descendants(job.pid) if _alive(p)]
            if len(workers) >= 2 and cells.is_dir():
                break
            time.sleep(0.1)
        assert job.poll() is None and len(workers) >= 2, "the job ended before the kill"
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "workers outlived their launcher"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_parts_of_committed_cells_are_removed_by_a_resume(tmp_path):
    """Parts a killed invocation left after committing their cell (or cut differently) are
    removed by the next run, and with them the parts folder."""
    from xai_bench.run.plan import part_key
    from xai_bench.run.store import RunStore

    cfg = RunConfig(models=["vit_nano"], methods=["uniform"], metrics=["grid_pointing_game"],
                    n_grids=5, batch_size=8, out=str(tmp_path), name="p")
    Runner(cfg, progress=False, log=lambda *_: None).run()
    parts = RunStore(tmp_path / "p", folder="parts")
    key = "vit_nano__uniform__grid_pointing_game"
    assert RunStore(tmp_path / "p").read(key)[0] is not None
    for part in (0, 2, 7):  # as if the job was killed between the commit and the clean-up
        parts.write(part_key(key, part), {"identity": {}, "part": part, "n_parts": 3},
                    {"values": __import__("numpy").zeros(2)})
    resumed = Runner(cfg, progress=False, log=lambda *_: None)
    resumed.run()
    assert not resumed.computed and not (tmp_path / "p" / "parts").exists()


def test_removing_a_cells_parts_keeps_the_other_cells_parts(tmp_path):
    from xai_bench.run.store import MemoryStore, RunStore

    for store in (RunStore(tmp_path, folder="parts"), MemoryStore()):
        for key in ("m__a__d__part0000", "m__a__d__part0003", "m__a__dd__part0000"):
            store.write(key, {"identity": {}})
        store.remove_parts(["m__a__d"])
        assert store.read("m__a__d__part0000")[0] is None
        assert store.read("m__a__d__part0003")[0] is None
        assert store.read("m__a__dd__part0000")[0] is not None
