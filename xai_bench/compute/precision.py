"""Precision and compilation of the *forward-only* model calls (see docs/gpu.md).

Three hot loops only run the model forward, without gradients: the metrics' perturbed copies
(:func:`xai_bench.metrics.common.perturbed_confidences`), the selection pass
(:func:`xai_bench.compute.inference.predict`) and ViT-CX's masked copies. They may run in bfloat16
autocast and through ``torch.compile``; every gradient or explanation pass stays in float32
(B-cos completeness, ``Σ contributions = logit − bias``, needs it), and so do ViT-CX's clean
forward (its features are clustered) and every method's own forwards.

::

    from xai_bench.compute.precision import forward_options
    with forward_options("bf16", compile=True):
        metric.evaluate(model, method, prepared, device="cuda")

A run (``xai-bench run --precision bf16 --compile``, ``evaluate(precision=..., compile=...)``)
sets the options from its configuration for its whole duration.

- :func:`forward_options` sets the options for the code inside it (a ``contextvars``
  variable, so threads and asyncio tasks started elsewhere keep their own);
- :func:`forward_autocast` wraps a forward-only call: ``torch.autocast(device_type,
  dtype=torch.bfloat16)`` under ``"bf16"``, else nothing;
- :func:`forward_model` is the callable to use for that call: the model itself, or under
  ``compile=True`` a ``torch.compile``'d version cached per model object (it holds the model
  only through a weak reference), falling back to the plain model, with one warning per
  process, when compilation fails.

Outputs that leave :func:`forward_autocast` are bfloat16; :func:`full_precision` casts them
back to float32 before any confidence, softmax or comparison (float32 and float64 outputs are
left as they are, so fp32 runs are bit-identical to not using this module at all).
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
import weakref
from dataclasses import dataclass

import torch

from xai_bench.compute.memory_errors import is_out_of_memory
from xai_bench.errors import one_line

__all__ = ["PRECISIONS", "ForwardOptions", "forward_options", "current_options",
           "forward_autocast", "forward_model", "full_precision", "COMPILE_OPTIONS"]

#: the forward precisions: float32, or bfloat16 autocast (weights stay float32)
PRECISIONS = ("fp32", "bf16")
#: keyword arguments of ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``; the tests use
#: ``{"backend": "eager"}`` to stay fast)
COMPILE_OPTIONS: dict = {}


@dataclass(frozen=True)
class ForwardOptions:
    """The active forward options: ``precision`` (one of :data:`PRECISIONS`) and
    ``compile``."""

    precision: str = "fp32"
    compile: bool = False

    def key(self) -> tuple:
        """What identifies the options in a cache key."""
        return (self.precision, self.compile)


_OPTIONS: contextvars.ContextVar = contextvars.ContextVar("xai_bench_forward_options",
                                                          default=ForwardOptions())


def check_precision(precision) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}; "
                         f"got {precision!r}")
    return precision


@contextlib.contextmanager
def forward_options(precision: str = "fp32", compile: bool = False):
    """Use ``precision`` (``"fp32"`` or ``"bf16"``) and, with ``compile=True``,
    ``torch.compile`` for the forward-only model calls inside the block; yields the
    :class:`ForwardOptions`. The previous options are restored on exit (blocks nest)."""
    options = ForwardOptions(check_precision(precision), bool(compile))
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


def current_options() -> ForwardOptions:
    """The options in force here (default: fp32, no compilation)."""
    return _OPTIONS.get()


def _device_type(device) -> str:
    if isinstance(device, torch.Tensor):
        return device.device.type
    return torch.device(device if device is not None else "cpu").type


def forward_autocast(device):
    """Context manager for a forward-only model call on ``device`` (a device, its name or a
    tensor on it): bfloat16 autocast under ``"bf16"``, a null context under ``"fp32"``."""
    if current_options().precision == "bf16":
        return torch.autocast(_device_type(device), dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is a half-precision float (what autocast returns), else
    ``t`` itself (float32 and float64 pass unchanged, without a copy)."""
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.float()
    return t


# ---- torch.compile --------------------------------------------------------------------------

class _WeakForward(torch.nn.Module):
    """Calls the model it was made for through a weak reference, so that the compiled module
    cached for a model does not keep the model alive (the cache is keyed weakly by it)."""

    def __init__(self, model):
        super().__init__()
        object.__setattr__(self, "_target", weakref.ref(model))  # not a registered submodule

    def forward(self, *args, **kwargs):
        return self._target()(*args, **kwargs)


_WARNED = [False]


def _warn_once(model, error) -> None:
    if _WARNED[0]:
        return
    _WARNED[0] = True
    name = type(model).__name__
    warnings.warn(f"torch.compile failed for {name} ({one_line(str(error))[:300]}); the "
                  f"forward passes run uncompiled", RuntimeWarning, stacklevel=3)


class CompiledForward:
    """``model(*args)`` through ``torch.compile``; on the first compilation failure (at
    ``torch.compile`` or at any call: compilation is lazy and recompiles on new shapes) it
    warns once and calls the plain model from then on. Out-of-memory errors are not failures
    of compilation and are raised (so that the chunking halves)."""

    def __init__(self, model):
        self._model = weakref.ref(model)
        self.error: str | None = None
        try:
            self._compiled = torch.compile(_WeakForward(model), **COMPILE_OPTIONS)
        except Exception as error:  # noqa: BLE001 - any failure means: run uncompiled
            self._fail(model, error)

    def _fail(self, model, error) -> None:
        self.error = one_line(str(error))
        self._compiled = None
        _warn_once(model, error)

    def __call__(self, *args, **kwargs):
        model = self._model()
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                if is_out_of_memory(error):
                    raise
                self._fail(model, error)
        return model(*args, **kwargs)


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def forward_model(model):
    """The callable for a forward-only call of ``model``: ``model`` itself, or under
    ``compile=True`` its :class:`CompiledForward`, made once per model object. A model that
    cannot be weakly referenced is returned as it is (uncompiled)."""
    if not current_options().compile:
        return model
    try:
        compiled = _COMPILED.get(model)
    except TypeError:
        return model
    if compiled is None:
        compiled = _COMPILED[model] = CompiledForward(model)
    return compiled
