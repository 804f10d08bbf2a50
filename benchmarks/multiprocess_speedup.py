"""Speed-up of the quick suite's cells with several processes (torchrun, gloo on CPU).

Usage::

    python benchmarks/multiprocess_speedup.py                  # 1 and 2 processes, 1 thread each
    python benchmarks/multiprocess_speedup.py --processes 1,2,4 --threads 1 -- --n-images 12

Runs the default ``xai-bench run`` (the shipped default pair on the embedded data: nothing is
trained) once per process count, each into a fresh run directory, with ``OMP_NUM_THREADS``
threads per process, and reads ``timings.cells_wall_s`` from each run.json: the wall time from
the first model card to the last process's last committed cell (imports, statistics, plots and
the report are left out: they do not scale with processes). It then checks that every run's
records equal the single-process run's, and prints the speed-up ``cells_wall(1) /
cells_wall(N)`` with the whole command's wall times for reference. Extra ``xai-bench run``
options go after ``--``.

Run it on an otherwise idle machine: the aim is >= 1.8x with 2 processes of one thread on 2
cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import OneLineParser, at_least, check_output_dir, one_line_errors  # noqa: E402


def run_once(out: Path, processes: int, threads: int, extra: list) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    name = f"p{processes}"
    args = ["run", "--out", str(out), "--name", name, "--no-plots", "--no-progress", "-q",
            *extra]
    if processes == 1:
        command = [sys.executable, "-m", "xai_bench", *args]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        command = [torchrun, "--standalone", f"--nproc-per-node={processes}", "-m",
                   "xai_bench", *args]
    t = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"{processes} process(es) failed:\n{done.stdout}{done.stderr}")
    info = json.loads((out / name / "run.json").read_text())
    return {"processes": processes, "command_wall_s": wall,
            "cells_wall_s": info["timings"]["cells_wall_s"],
            "cells_total_s": info["timings"]["cells_total_s"], "run_dir": out / name}


@one_line_errors
def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--threads", type=at_least(1), default=1, help="OMP threads per process")
    parser.add_argument("--keep", default=None, help="keep the run directories here")
    parser.add_argument("extra", nargs="*", help="options for xai-bench run (after --)")
    args = parser.parse_args(argv)
    import pandas as pd

    if any(not p.strip().isdigit() or int(p) < 1 for p in args.processes.split(",")):
        parser.error(f"--processes {args.processes!r}: give positive integers, e.g. 1,2")
    if args.keep:
        check_output_dir(args.keep, "--keep")
    counts = [int(p) for p in args.processes.split(",")]
    if counts[0] != 1:
        counts = [1] + counts
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="xai-speedup-"))
    root.mkdir(parents=True, exist_ok=True)
    results = [run_once(root, n, args.threads, args.extra) for n in counts]
    base = results[0]
    reference = pd.read_csv(base["run_dir"] / "records.csv")
    print(f"quick suite, {args.threads} thread(s) per process, {os.cpu_count()} CPU(s)")
    print(f"{'processes':>9}  {'cells wall s':>12}  {'speed-up':>8}  {'command wall s':>14}  "
          f"records equal")
    for r in results:
        same = pd.read_csv(r["run_dir"] / "records.csv").equals(reference)
        print(f"{r['processes']:>9}  {r['cells_wall_s']:>12.1f}  "
              f"{base['cells_wall_s'] / r['cells_wall_s']:>7.2f}x  "
              f"{r['command_wall_s']:>14.1f}  {'yes' if same else 'NO'}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
