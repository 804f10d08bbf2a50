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

__all__ = ["Terminated", "terminate_as_interrupt", "SIGNAL_EXIT_CODES"]

#: exit codes by convention (128 + signal number)
SIGNAL_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


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
        signal.signal(signal.SIGTERM, previous)
