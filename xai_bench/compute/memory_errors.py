"""Recognising an allocation failure: :func:`is_out_of_memory`.

A leaf module: both the chunking (which retries a chunk smaller) and the compiled forward
(which must let an out-of-memory error through rather than fall back to eager mode) ask it.
"""

from __future__ import annotations

import torch

__all__ = ["OUT_OF_MEMORY_ERRORS", "is_out_of_memory"]

#: the exception classes PyTorch raises when an allocation fails
OUT_OF_MEMORY_ERRORS = tuple(dict.fromkeys(
    cls for cls in (getattr(torch, "OutOfMemoryError", None),
                    getattr(torch.cuda, "OutOfMemoryError", None)) if cls is not None))
OOM_MESSAGES = ("out of memory", "can't allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure: torch's OutOfMemoryError, or a RuntimeError
    whose message says out of memory (older CUDA builds, other backends) or that the CPU
    allocator could not allocate."""
    if OUT_OF_MEMORY_ERRORS and isinstance(error, OUT_OF_MEMORY_ERRORS):
        return True
    if isinstance(error, RuntimeError):
        text = str(error).lower()
        return any(m in text for m in OOM_MESSAGES)
    return False
