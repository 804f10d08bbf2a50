"""One run across several processes: ``torchrun --nproc-per-node N -m xai_bench run ...``.

torchrun (or ``srun`` through torchrun's environment variables) starts N copies of the same
command and tells each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. The runner then:

1. validates the configuration in every process (the same checks, the same one-line errors);
2. on rank 0 only, takes the run directory's lock, trains or loads the default models (so a
   model is trained once, not once per process) and measures their accuracy; the others wait
   at a barrier and then load the cached files;
3. shares out the **units** (one model × one method with its pending metrics: a unit's maps
   are explained once and scored by all its metrics, :mod:`xai_bench.compute.map_cache`), the most
   expensive first, each process claiming the next unclaimed one (a claim is a file created
   with ``O_EXCL`` under ``run_dir/.claims/<invocation>/``, so claiming needs nothing but the
   shared run directory and balances itself: a process that drew a cheap unit claims the
   next one sooner);
4. each process commits every finished cell atomically as a single-process run does, so a
   killed process (or job) loses only the cells it was computing, and the same command with
   any number of processes resumes;
5. after a barrier, rank 0 reads every cell and writes the same ``records.csv``,
   ``curves.csv``, statistics tables, ``run.json``, figures and report as a single-process
   run (:mod:`xai_bench.run.finish`); the other processes end without output.

The processes talk through ``torch.distributed`` (gloo on CPU, NCCL on CUDA) only for the
barriers and to agree on the invocation's name; the cells travel through the run directory,
which must therefore be on a file system every process sees (the usual case under SLURM).
Each process runs on ``cuda:LOCAL_RANK`` when the device is CUDA.
"""

from __future__ import annotations

import atexit
import datetime
import math
import os
import signal
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from xai_bench.errors import ConfigError, XaiBenchError

__all__ = ["Ranks", "ranks", "claim"]

#: how long a process waits at a barrier for the others (training a model on rank 0, or the
#: slowest unit at the end); XAI_BENCH_DIST_TIMEOUT_S overrides it
DEFAULT_TIMEOUT_S = 7 * 24 * 3600
TIMEOUT_VARIABLE = "XAI_BENCH_DIST_TIMEOUT_S"
CLAIMS = ".claims"


@dataclass
class Ranks:
    """This process's place in the job: ``rank`` of ``world`` (``local_rank`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def broadcast(self, value):
        """``value`` of rank 0, in every process (any picklable object)."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, work):
        """``work()`` run by rank 0 alone, its result in every process. When it fails on rank
        0 every process raises the same error instead (an :class:`XaiBenchError`, e.g. the run
        directory is locked or --out unwritable: the same one line everywhere; anything else:
        rank 0 keeps its traceback and the others say so in one line). Call it before any
        other collective, so that no process is left waiting for a peer that has gone."""
        if not self.distributed:
            return work()
        value = failure = crash = None
        if self.is_main:
            try:
                value = work()
            except XaiBenchError as e:
                failure = (type(e), str(e))
            except Exception as e:
                failure = (XaiBenchError, f"process 0 stopped with {type(e).__name__} (its "
                           f"traceback says why); the other processes stopped with it")
                crash = e
        value, failure = self.broadcast((value, failure) if self.is_main else None)
        if failure is None:
            return value
        self._stop_together()
        if crash is not None:
            raise crash
        kind, message = failure
        try:
            error = kind(message)
        except TypeError:  # a subclass with another constructor: the message is what counts
            error = XaiBenchError(message)
        raise error

    def _stop_together(self) -> None:
        """Wait until every process knows the job stops: torchrun's agent SIGTERMs the others
        once one has exited, which must not cut their own line short (they are ending
        anyway)."""
        from xai_bench.run.interrupts import ignore_termination

        ignore_termination()
        torch.distributed.barrier()

    def total(self, value: float) -> float:
        """The sum of ``value`` over the processes, in every process."""
        if not self.distributed:
            return value
        values = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return sum(values)

    def device(self, device: str) -> str:
        """The device of this process: ``cuda:LOCAL_RANK`` for ``cuda`` in a multi-process
        run (one GPU per process), otherwise ``device`` unchanged."""
        if self.distributed and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device


_RANKS: Ranks | None = None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer; "
                          f"start the processes with torchrun") from None


def barrier_timeout_s() -> float:
    """Seconds a process waits at a barrier: ``XAI_BENCH_DIST_TIMEOUT_S`` (a positive
    number), else :data:`DEFAULT_TIMEOUT_S`. Checked whenever it is set, before any process
    group starts, so that a typo is one line rather than a failed rendezvous."""
    value = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not value:
        return float(DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"environment variable {TIMEOUT_VARIABLE}={value!r} is not a "
                          f"positive number of seconds; set it to e.g. 3600, or unset it for "
                          f"the default ({DEFAULT_TIMEOUT_S} s)")
    return seconds


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def ranks(device: str = "cpu") -> Ranks:
    """This process's :class:`Ranks`, from torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``); one process without it. In a multi-process job the process group is
    initialised on the first call (NCCL for a CUDA ``device``, gloo otherwise)."""
    global _RANKS
    if _RANKS is not None:
        return _RANKS
    world = _env_int("WORLD_SIZE", 1)
    timeout_s = barrier_timeout_s()  # also in the launcher of --processes: refused once
    found = Ranks(rank=_env_int("RANK", 0), world=world, local_rank=_env_int("LOCAL_RANK", 0))
    if found.distributed and not torch.distributed.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(found.local_rank)
        stop_with_parent()  # a worker whose launcher was killed must not run on alone
        timeout = datetime.timedelta(seconds=timeout_s)
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
        # left to the interpreter's shutdown, the process group's threads may abort the
        # process as it exits ("terminate called without an active exception")
        atexit.register(_destroy_process_group)
    _RANKS = found
    return found


def new_invocation_name() -> str:
    """A fresh name for this invocation's claims and parts (rank 0 draws it, and
    :meth:`Ranks.agree` shares it)."""
    return uuid.uuid4().hex[:12]


# ---- a worker ends with its launcher ---------------------------------------------------------
#: how often the watchdog looks whether the launcher is still there
PARENT_POLL_S = 1.0
PR_SET_PDEATHSIG = 1
_WATCHED = False


def stop_with_parent() -> None:
    """SIGTERM this process when its parent (torchrun's agent, or ``xai-bench run
    --processes N``) dies, so that killing the launcher stops the job: torchrun starts its
    workers in their own sessions, where a signal to the launcher's process group does not
    reach them. SIGTERM ends a run with its one "interrupted" line, keeping every committed
    cell. Linux asks the kernel (``PR_SET_PDEATHSIG``); everywhere a daemon thread also
    compares ``os.getppid()`` with the parent's pid every second (the parent may have died
    before this call, or the kernel's signal may follow the death of the parent's thread
    rather than of its process)."""
    global _WATCHED
    if _WATCHED:
        return
    _WATCHED = True
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the thread alone
        pass
    threading.Thread(target=_watch_parent, args=(parent,), name="xai-bench-parent-watch",
                     daemon=True).start()


def _watch_parent(parent: int) -> None:
    import time

    while True:
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(PARENT_POLL_S)


def claim(run_dir, invocation: str, unit: str) -> bool:
    """True for exactly one process of the invocation: the first to create the unit's claim
    file (``O_CREAT | O_EXCL`` is atomic on local and network file systems)."""
    folder = Path(run_dir) / CLAIMS / invocation
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / unit, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def clear_claims(run_dir, invocation: str | None = None) -> None:
    """Remove the claim files of ``invocation`` (rank 0, once every process is done), or of
    every invocation (rank 0 at the start, holding the lock: claims left by a killed job)."""
    root = Path(run_dir) / CLAIMS
    folders = [root / invocation] if invocation else (
        [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink(missing_ok=True)
            folder.rmdir()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def launch_local(processes: int, argv: list) -> int:
    """``xai-bench run --processes N``: run this command as N processes on this machine,
    exactly as ``torchrun --standalone --nproc-per-node N -m xai_bench ARGV`` would (this
    process becomes torchrun's agent: it starts the workers, stops them all if one fails, and
    returns their exit code). Each worker gets one intra-op thread unless OMP_NUM_THREADS says
    otherwise, which on a CPU is what makes N processes faster than N threads."""
    import logging

    from torch.distributed import run as torchrun

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # torchrun's agent logs its rendezvous, the SIGTERMs it sends and each failed worker; the
    # workers' own lines say why a run stopped (the same line from each, for a refusal)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun.main(["--standalone", f"--nproc-per-node={int(processes)}", "--module",
                       "xai_bench", *argv])
    except SystemExit as e:  # torchrun exits with the failed worker's code
        return int(e.code or 0)
    except Exception as e:  # ChildFailedError: a worker failed; its output says why
        failures = getattr(e, "failures", None) or {}
        codes = {rank: getattr(f, "exitcode", 1) for rank, f in failures.items()}
        for rank, code in codes.items():
            if code < 0:  # killed by a signal: it could not say so itself
                print(f"worker process {rank} was killed by "
                      f"{signal.Signals(-code).name if -code in _SIGNALS else -code}",
                      file=sys.stderr)
        code = next((c for c in codes.values() if c), 1)
        return 128 - code if code < 0 else code  # a signal's exit code, as a shell's
    return 0


_SIGNALS = {int(s) for s in signal.Signals}
