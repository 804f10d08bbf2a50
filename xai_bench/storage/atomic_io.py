"""The one atomic writer: every result file, table, array archive and checkpoint goes through
:func:`write_bytes`.

A file is written to a temporary name in its own directory, flushed and ``fsync``-ed, given
the mode an ordinary ``open()`` would give it (``0o666`` less the process umask, e.g. 0644
under umask 022: files are readable by a lab group), then renamed over the target with
``os.replace`` and the directory entry ``fsync``-ed. Readers therefore see the old file or the
new one, never a half-written one, and a crash leaves at most a hidden ``.NAME.*.tmp`` file,
which never looks complete.

Any ``OSError`` while writing (read-only or full disk, permission denied, a file where a
directory should be) becomes a one-line :class:`~xai_bench.errors.OutputError` naming the
path; the temporary file is removed.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from xai_bench.errors import OutputError

__all__ = ["write_bytes", "write_text", "write_json", "write_csv", "write_arrays",
           "write_torch", "ensure_dir", "file_mode"]


def file_mode() -> int:
    """The mode ``open(path, "w")`` creates files with: ``0o666 & ~umask``."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _output_error(path: Path, error: OSError) -> OutputError:
    reason = error.strerror or type(error).__name__
    return OutputError(f"cannot write {path}: {reason}; choose a writable location with free "
                       f"space (e.g. another --out)")


def ensure_dir(path) -> Path:
    """``mkdir -p`` with the one-line :class:`OutputError` on failure."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _output_error(path, e) from None
    if not path.is_dir():
        raise OutputError(f"cannot write into {path}: it is not a directory")
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms / file systems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise _output_error(path, e) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, data) -> Path:
    """JSON with two-space indentation (non-JSON values written with ``str``)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path, frame) -> Path:
    """A pandas DataFrame as CSV without its index."""
    return write_text(path, frame.to_csv(index=False))


def write_arrays(path, arrays: dict) -> Path:
    """A compressed ``.npz`` of named arrays."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return write_bytes(path, buffer.getvalue())


def write_torch(path, payload) -> Path:
    """``torch.save(payload)`` (plain containers of tensors and Python values, so that
    ``torch.load(weights_only=True)`` reads it back)."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes(path, buffer.getvalue())


def write_figure(path, fig, **savefig_kwargs) -> Path:
    """A matplotlib figure rendered in memory (format from the suffix), then written
    atomically: a full disk never leaves a 0-byte image."""
    buffer = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buffer, format=fmt, **savefig_kwargs)
    return write_bytes(path, buffer.getvalue())
