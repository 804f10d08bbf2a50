"""The one seeding scheme of xai-bench.

Every seed in the package is *derived*, never counted or hand-hashed:

- :func:`derive_seed` ``(*parts) -> int`` — a stable 63-bit seed (``0 <= s < 2**63``) from any
  parts (ints, strings, floats, ...). Each part is normalised (integers — including NumPy and
  0-d torch integers — become ``int``, other reals ``float``), encoded with ``repr`` and the
  encodings are joined by the unit separator ``"\\x1f"``; the seed is the first 8 bytes
  (little endian) of the SHA-256 of that UTF-8 string, top bit cleared. ``repr`` makes the
  encoding unambiguous: ``derive_seed(1)``, ``derive_seed("1")`` and ``derive_seed(1.0)``
  differ, and ``derive_seed("a", "b") != derive_seed("a\\x1fb")`` (``repr`` escapes the
  separator). The value is identical on every platform, Python and library version.
- :func:`content_seed` ``(tensor, seed) -> int`` — a seed from a tensor's exact bytes (on the
  CPU, contiguous; with its dtype and shape) and ``seed``: per-sample randomness that depends
  on the sample itself, not on its position in a batch, so a batched call equals the
  per-image calls.
- :func:`cpu_generator` ``(seed) -> torch.Generator`` — always a **CPU** generator. Callers
  draw on the CPU and move the result with ``.to(device)``, so CPU and GPU runs draw exactly
  the same numbers (device generators use different algorithms).
- :func:`numpy_rng` ``(seed) -> numpy.random.Generator`` — NumPy's PCG64 generator.

Typical use: ``cpu_generator(derive_seed(seed, "what", index))`` for a stream that is
independent of everything else, ``cpu_generator(content_seed(image, seed))`` for one image.
"""

from __future__ import annotations

import contextlib
import hashlib
import numbers
import random

import numpy as np
import torch

__all__ = ["derive_seed", "content_seed", "seeded_globals", "tensor_bytes", "cpu_generator", "per_image_uniform",
           "numpy_rng", "SEP"]

#: separator between the encoded parts (the ASCII unit separator)
SEP = "\x1f"
_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def _normalise(part):
    """Numbers of any library as plain ``int`` / ``float`` (so ``np.int64(3)`` and ``3`` give
    the same seed); ``bool`` is kept (``repr(True) != repr(1)``), everything else as is."""
    if isinstance(part, torch.Tensor) and part.dim() == 0:
        part = part.item()
    if isinstance(part, (bool, np.bool_)):
        return bool(part)
    if isinstance(part, numbers.Integral):
        return int(part)
    if isinstance(part, numbers.Real):
        return float(part)
    return part


def _digest_seed(text: str) -> int:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & _MASK63


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from ``parts`` (see the module docstring for the encoding)."""
    return _digest_seed(SEP.join(repr(_normalise(p)) for p in parts))


def tensor_bytes(tensor: torch.Tensor) -> tuple[str, tuple, bytes]:
    """``(dtype name, shape, raw bytes)`` of a tensor, moved to the CPU and made contiguous:
    what identifies its exact content on any device."""
    t = tensor.detach().to("cpu").contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return str(t.dtype).removeprefix("torch."), tuple(t.shape), raw


def content_seed(tensor: torch.Tensor, seed: int) -> int:
    """A seed derived from ``seed`` and a tensor's exact bytes (:func:`tensor_bytes`; its
    dtype and shape are part of the key): per-sample randomness that does not depend on the
    sample's position in a batch, and the same on CPU and GPU."""
    dtype, shape, raw = tensor_bytes(tensor)
    return derive_seed("content", dtype, shape, hashlib.sha256(raw).hexdigest(), int(seed))


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (reduced mod 2**64). Always the CPU, so
    CPU and GPU runs draw the same numbers: draw on the CPU, then ``.to(device)``."""
    return torch.Generator(device="cpu").manual_seed(int(seed) & _MASK64)


def per_image_uniform(x: torch.Tensor, shape, seed: int,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, *shape)`` IID uniform draws in [0, 1), image ``b``'s from
    ``cpu_generator(content_seed(x[b], seed))`` (the same for an image in any batch and on any
    device), on ``x``'s device."""
    shape = tuple(shape)
    draws = [torch.rand(shape, generator=cpu_generator(content_seed(img, seed)), dtype=dtype)
             for img in x]
    if not draws:
        return torch.empty(0, *shape, dtype=dtype, device=x.device)
    return torch.stack(draws).to(x.device)


def numpy_rng(seed: int) -> np.random.Generator:
    """``numpy.random.default_rng`` seeded with ``seed`` (reduced mod 2**64)."""
    return np.random.default_rng(int(seed) & _MASK64)


@contextlib.contextmanager
def seeded_globals(seed: int, device=None):
    """torch's (the CPU's and ``device``'s, where that is a CUDA device), numpy's and Python's
    global generators seeded with ``seed`` inside, restored after: for libraries that draw
    from the global generators (captum's GradientShap from numpy's, Quantus from all three),
    so that their draws are reproducible and leave the caller's streams untouched."""
    device = torch.device(device) if device is not None else None
    devices = [device] if device is not None and device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % 2 ** 32)
            random.seed(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
