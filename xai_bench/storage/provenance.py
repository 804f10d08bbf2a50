"""Provenance recorded with every checkpoint and run: versions, git sha, device, time.

No host names or user names are recorded."""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from xai_bench.version import VERSION

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """HEAD of the git checkout that holds this package (None if it is not in one, or git
    is missing)."""
    def git(*args):
        out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        top = git("rev-parse", "--show-toplevel")
        # only the package's own repository (not, say, a repository around a virtualenv)
        if not top or Path(top).resolve() != PACKAGE_DIR.parent:
            return None
        return git("rev-parse", "HEAD") or None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def device_name(device=None) -> str:
    import torch

    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev.index if dev.index is not None else 0)
    return platform.processor() or platform.machine() or dev.type


def collect_provenance(device=None) -> dict:
    """Versions (python, platform, torch, torchvision, captum, numpy, xai_bench), the git sha of
    the package's repository, the device and its name, torch threads and a UTC timestamp."""
    import torch

    dev = str(device) if device is not None else "cpu"
    try:
        name = device_name(dev)
    except (RuntimeError, AssertionError, ValueError):
        name = None
    return {
        "xai_bench": VERSION,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": str(torch.__version__),
        "torchvision": _version("torchvision"),
        "captum": _version("captum"),
        "numpy": _version("numpy"),
        "git_sha": git_sha(),
        "device": dev,
        "device_name": name,
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
