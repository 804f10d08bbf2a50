"""SIGTERM handled like Ctrl-C, so a run stopped by a job scheduler (or ``kill``) ends the
same clean way: finished cells stay committed, the process prints one line and exits with
128 + the signal number.

Every file is written atomically (:mod:`xai_bench.storage.atomic_io`), so stopping at any instant
leaves only complete files.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["Terminated", "terminate_as_interrupt", "ignore_termination", "SIGNAL_EXIT_CODES"]

#: exit codes by convention (128 + signal number)
SIGNAL_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
#: set by :func:`ignore_termination`: the process is ending with its own line
_ENDING = threading.Event()


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM."""

    signal_name = "SIGTERM"


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the context, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the
    main thread; the previous handler is restored afterwards. Elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if not _ENDING.is_set():
            signal.signal(signal.SIGTERM, previous)


def ignore_termination() -> None:
    """Ignore SIGTERM from now on (main thread): the process is about to end with its own
    line (a multi-process run's refusal), which a SIGTERM sent by torchrun's agent once
    another process has exited must not replace with "interrupted"."""
    if threading.current_thread() is threading.main_thread():
        _ENDING.set()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
