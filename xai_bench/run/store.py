"""Where a run keeps its finished work: checked entry files under ``RUN_DIR/cells/`` and the
lock that keeps two processes out of one run directory.

Every entry (a finished cell, a model's summary, a part of a cell shared out in parts under
``RUN_DIR/parts/``) is one JSON file written atomically, holding
the entry's ``identity`` (everything that determined it), its payload and a ``checksum``
(SHA-256 of the rest). Arrays kept for figures go to a ``.npz`` beside it, written first, whose
SHA-256 the JSON records. Reading verifies both; a file that is truncated, garbled, edited or
whose arrays are missing is reported as a *problem* (and the runner recomputes it), never
trusted and never fatal.

:class:`MemoryStore` is the same interface without files (``xai_bench.evaluate(out=None)``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from xai_bench.storage import atomic_io
from xai_bench.errors import ConfigError, OutputError
from xai_bench.storage.identity import digest, file_sha256
from xai_bench.storage.results import file_safe, read_arrays

__all__ = ["RunStore", "MemoryStore", "RunLocked"]

LOCK_NAME = ".lock"
#: what separates a cell's key from its part number in a part's key (run.plan.part_key)
PART_MARK = "__part"


class RunLocked(ConfigError):
    """Another process holds the run directory."""


def _checksum(entry: dict) -> str:
    return digest({k: v for k, v in entry.items() if k != "checksum"})


class MemoryStore:
    """Entries kept in a dict: nothing is read back from a previous run."""

    run_dir = None

    def __init__(self):
        self.entries: dict = {}
        self.arrays: dict = {}

    def read(self, key: str):
        """``(entry or None, problem or None)``."""
        return self.entries.get(key), None

    def read_arrays(self, key: str) -> dict:
        return self.arrays.get(key, {})

    def write(self, key: str, entry: dict, arrays: dict | None = None) -> dict:
        if arrays:
            self.arrays[key] = {k: v for k, v in arrays.items()}
        entry = dict(entry, checksum=None)
        self.entries[key] = entry
        return entry

    def remove(self, key: str) -> None:
        self.entries.pop(key, None)
        self.arrays.pop(key, None)

    def remove_parts(self, keys) -> None:
        """Delete every part of the cells ``keys`` (see :meth:`RunStore.remove_parts`)."""
        prefixes = tuple(f"{key}{PART_MARK}" for key in keys)
        for key in [k for k in self.entries if prefixes and k.startswith(prefixes)]:
            self.remove(key)

    def remove_folder_if_empty(self) -> None:
        pass

    @contextlib.contextmanager
    def lock(self):
        yield self

    def discard_if_empty(self):
        pass


class RunStore:
    """Entries as checked files under ``run_dir/<folder>/`` (``cells`` by default)."""

    def __init__(self, run_dir, folder: str = "cells"):
        self.run_dir = Path(run_dir)
        self.folder = folder
        self.cells_dir = self.run_dir / folder

    def path(self, key: str) -> Path:
        return self.cells_dir / f"{file_safe(key)}.json"

    def arrays_path(self, key: str) -> Path:
        return self.cells_dir / f"{file_safe(key)}.npz"

    def read(self, key: str):
        """``(entry, None)`` for an intact entry, ``(None, None)`` when there is none, and
        ``(None, problem)`` for a file that cannot be trusted."""
        path = self.path(key)
        if not path.exists():
            return None, None
        name = f"{self.folder}/{path.name}"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None, f"{name} is unreadable (truncated or garbled)"
        if not isinstance(entry, dict) or "checksum" not in entry or "identity" not in entry:
            return None, f"{name} is not a cell file of this version"
        if entry["checksum"] != _checksum(entry):
            return None, f"{name} fails its checksum (edited or garbled)"
        expected = entry.get("arrays_sha256")
        if expected:
            arrays = self.arrays_path(key)
            try:
                found = file_sha256(arrays)
            except OSError:  # missing, or removed meanwhile (a joined part, by another process)
                return None, f"{name}: its arrays file {arrays.name} is missing"
            if found != expected:
                return None, f"{name}: its arrays file {arrays.name} fails its checksum"
        return entry, None

    def read_arrays(self, key: str) -> dict:
        path = self.arrays_path(key)
        return read_arrays(path) if path.exists() else {}

    def write(self, key: str, entry: dict, arrays: dict | None = None) -> dict:
        """Commit an entry: arrays first, then the JSON whose existence marks completion."""
        entry = dict(entry)
        if arrays:
            atomic_io.write_arrays(self.arrays_path(key), arrays)
            entry["arrays_sha256"] = file_sha256(self.arrays_path(key))
        else:
            entry["arrays_sha256"] = None
            self.arrays_path(key).unlink(missing_ok=True)
        entry["checksum"] = _checksum(entry)
        atomic_io.write_text(self.path(key), json.dumps(entry, indent=1, default=str) + "\n")
        return entry

    def remove(self, key: str) -> None:
        """Delete an entry and its arrays (a part once its cell is committed)."""
        self.path(key).unlink(missing_ok=True)
        self.arrays_path(key).unlink(missing_ok=True)

    def remove_parts(self, keys) -> None:
        """Delete every part file (and its arrays) of the cells ``keys``, whatever invocation
        wrote it and however many parts it was cut into: a committed cell holds it all, and a
        part left behind (a process killed between the commit and the clean-up, a cell cut
        differently since, or computed whole) would keep ``parts/`` from ever going away."""
        prefixes = tuple(f"{file_safe(key)}{PART_MARK}" for key in keys)
        try:
            names = [p.name for p in self.cells_dir.iterdir()] if prefixes else []
        except OSError:  # no parts folder: nothing was ever cut into parts
            return
        for name in names:
            if name.startswith(prefixes) and name.endswith((".json", ".npz")):
                (self.cells_dir / name).unlink(missing_ok=True)

    def remove_folder_if_empty(self) -> None:
        """Remove ``run_dir/<folder>/`` when nothing is left in it (rank 0, when every process
        is done: another could be writing into it until then)."""
        try:
            self.cells_dir.rmdir()
        except OSError:
            pass

    def discard_if_empty(self):
        """Remove the run directory if it holds nothing but the lock (and an empty
        ``cells/``): a run that failed before committing anything leaves no trace."""
        try:
            if self.cells_dir.is_dir() and not any(self.cells_dir.iterdir()):
                self.cells_dir.rmdir()
            if self.run_dir.is_dir() and [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
                (self.run_dir / LOCK_NAME).unlink()
                self.run_dir.rmdir()
                for parent in getattr(self, "_created", []):  # --out, if this run made it
                    if parent != self.run_dir and parent.is_dir() and not any(parent.iterdir()):
                        parent.rmdir()
        except OSError:
            pass

    @contextlib.contextmanager
    def lock(self):
        """Hold ``run_dir/.lock`` (an advisory ``flock``; released by the OS when the process
        dies, so a killed run never leaves a stale lock). A second process gets
        :class:`RunLocked` naming the holder's pid."""
        missing, probe = [], self.run_dir
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        atomic_io.ensure_dir(self.run_dir)
        self._created = missing  # innermost first
        path = self.run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, atomic_io.file_mode())
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror}; choose a writable --out") \
                from None
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # not POSIX: no locking
                pass
            except OSError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise RunLocked(f"run directory {self.run_dir} is in use by process {holder} "
                                f"(lock file {path}); wait for it to finish, or give another "
                                f"--name") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)
