"""Provenance recorded with every checkpoint and run: versions, git sha, device, time."""

from __future__ import annotations

import datetime
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def collect_provenance(device=None) -> dict:
    import torch

    import xai_bench

    dev = str(device) if device is not None else "cpu"
    return {
        "xai_bench": xai_bench.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": str(torch.__version__),
        "torchvision": _version("torchvision"),
        "captum": _version("captum"),
        "numpy": _version("numpy"),
        "git_sha": git_sha(),
        "device": dev,
        "device_name": torch.cuda.get_device_name(0) if dev.startswith("cuda") else
        platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
