"""How many items fit in one chunk, and retrying smaller when a chunk runs out of memory.

Three hot loops push many inputs through a model in chunks: Integrated Gradients' interpolated
inputs (forward and backward), ViT-CX's masked copies and the perturbation metrics' perturbed
copies (forward only). Their chunk sizes used to be fixed numbers; this module sizes them from
the memory that is free on the device and the model's measured activation size per input item,
and recovers from an out-of-memory error by halving the chunk.

- :func:`free_memory_bytes`: what the device has free (CUDA: the driver's free memory plus
  what PyTorch's caching allocator holds but does not use; CPU: ``MemAvailable``).
- :func:`activation_bytes`: bytes one input item needs while it goes through the model
  (forward only, or forward and backward to the input), measured once per (model, item shape,
  dtype, gradients or not, device type, forward precision) and cached.
- :func:`chunk_size`: the largest chunk whose estimate fits in ``fraction`` of the free
  memory, never above the caller's (or user's) ``requested`` size and never below 1.
- :func:`run_chunked` / :func:`retry_halving`: run the work, and on an out-of-memory error
  empty the CUDA cache, halve the chunk and retry the chunk that failed.

**What the retry relies on.** ``fn(start, stop)`` must compute items ``start .. stop-1`` each
independently of the others (no state carried from one chunk to the next, no reduction across
items inside a chunk) and write them to a place indexed by the item (e.g. ``out[start:stop]``),
so that a chunk that failed half-way can simply be computed again, and the result is the same
whatever chunking happened. "The same" is exact for work that is deterministic per item; a
model whose float32 output for an item depends on how many items share the batch (some BLAS
kernels choose their blocking by the batch size) differs at rounding level, as it already did
between chunk sizes.

**How the activation size is measured** (:func:`activation_bytes`):

- CUDA: a forward (and, for gradient chunks, a backward to the input) of
  :data:`PROBE_ITEMS` items, reading ``torch.cuda.max_memory_allocated`` above what was
  allocated before (so the peak statistic is reset once per measurement); divided by the
  number of items, so the fixed overhead is counted per item (an overestimate: safe).
- CPU (and any other device): forward hooks on every submodule add up the bytes of the tensors
  the modules output for one item (a sum over all modules: more than the live peak of a
  forward pass, less than what a backward keeps, because tensors made inside a module's
  ``forward`` are not module outputs), times :data:`CPU_SAFETY` (2 without gradients, 4 with).
  A model that is not an ``nn.Module`` gets :data:`ACTIVATION_BOUND` times its input size.

Measuring costs one small forward; it is skipped when even :data:`ACTIVATION_BOUND` times the
input size per item fits for the requested chunk (the generous bound: a B-cos ViT-B at 224²
keeps about 300 times its input for its backward pass, the nano models far less), so small
models on a machine with memory to spare are never probed and their forward passes are
exactly the ones the work needs.
"""

from __future__ import annotations

import os
import weakref

import torch

from xai_bench.compute.memory_errors import OUT_OF_MEMORY_ERRORS, is_out_of_memory
from xai_bench.errors import one_line

__all__ = ["free_memory_bytes", "activation_bytes", "chunk_size", "run_chunked",
           "retry_halving", "is_out_of_memory", "remember_limit", "clear_cache",
           "OUT_OF_MEMORY_ERRORS"]

#: items pushed through the model when measuring on CUDA
PROBE_ITEMS = 2
#: CPU estimate: the sum of the module outputs' bytes per item times this
CPU_SAFETY = {False: 2.0, True: 4.0}
#: a generous bound on activation bytes per item relative to the input item's bytes
ACTIVATION_BOUND = 1000
#: the chunk's own inputs (the perturbed copy and what builds it) per item, in input sizes
INPUT_COPIES = 4

def _device(device) -> torch.device:
    if isinstance(device, torch.Tensor):
        return device.device
    return torch.device(device if device is not None else "cpu")


def free_memory_bytes(device) -> int:
    """Bytes free for new tensors on ``device``.

    CUDA: ``torch.cuda.mem_get_info(device)[0]`` plus the bytes PyTorch's caching allocator
    has reserved but not handed out (they are free for our tensors, though not for other
    processes). CPU: ``MemAvailable`` from ``/proc/meminfo``, else free physical pages
    (``os.sysconf``); other devices are treated like the CPU."""
    device = _device(device)
    if device.type == "cuda":
        free = int(torch.cuda.mem_get_info(device)[0])
        cached = int(torch.cuda.memory_reserved(device)) - int(
            torch.cuda.memory_allocated(device))
        return free + max(cached, 0)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 1 << 34  # unknown: assume 16 GiB rather than refusing to work


# ---- activation sizes -----------------------------------------------------------------------
# model -> {key: bytes per item}; model -> {key: largest chunk known to be too big, halved}
_ACTIVATIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LIMITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget every measured activation size and every chunk limit learnt from an OOM."""
    _ACTIVATIONS.clear()
    _LIMITS.clear()


def _precision() -> str:
    from xai_bench.compute.precision import current_options

    return current_options().precision


def _key(x: torch.Tensor, with_grad: bool) -> tuple:
    return (tuple(x.shape[1:]), x.dtype, bool(with_grad), x.device.type,
            "fp32" if with_grad else _precision())


def _slot(table, model):
    try:
        return table.setdefault(model, {})
    except TypeError:  # not weak-referenceable: nothing is cached
        return {}


def _item_bytes(x: torch.Tensor) -> int:
    return int(x[0].numel()) * x.element_size() if x.shape[0] else 0


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


def _target_sum(out):
    """A scalar of the model output that a backward pass can start from."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().sum() if out.dim() == 0 else out.reshape(out.shape[0], -1)[:, 0].sum()


def _measure_cuda(model, probe: torch.Tensor, with_grad: bool) -> float:
    from xai_bench.compute.precision import forward_autocast

    device = probe.device
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    if with_grad:
        inp = probe.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(_target_sum(model(inp)), inp)
        del inp
    else:
        with torch.no_grad(), forward_autocast(device):
            model(probe)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return max(peak - base, 0) / probe.shape[0]


def _measure_hooks(model, probe: torch.Tensor, with_grad: bool) -> float:
    from xai_bench.compute.precision import forward_autocast

    total = [0]

    def hook(module, inputs, output):
        total[0] += _tensor_bytes(output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), (forward_autocast(probe.device) if not with_grad
                               else _null()):
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return CPU_SAFETY[bool(with_grad)] * total[0] / probe.shape[0]


def _null():
    import contextlib

    return contextlib.nullcontext()


def activation_bytes(model, x: torch.Tensor, *, with_grad: bool) -> float:
    """Bytes one item of ``x`` (``x[0]``'s shape and dtype, on ``x``'s device) needs inside
    ``model``: forward only (under the active forward precision), or forward and backward to
    the input (``with_grad``; always float32). Measured once per (model, item shape, dtype,
    with_grad, device type, precision) and cached; see the module docstring for how. The
    model must be in the mode the work uses (eval)."""
    slot = _slot(_ACTIVATIONS, model)
    key = _key(x, with_grad)
    if key in slot:
        return slot[key]
    probe = x[:min(PROBE_ITEMS if x.device.type == "cuda" else 1, x.shape[0])].detach()
    if probe.shape[0] == 0:
        return 0.0
    if x.device.type == "cuda":
        value = _measure_cuda(model, probe, with_grad)
    elif isinstance(model, torch.nn.Module):
        value = _measure_hooks(model, probe, with_grad)
    else:
        value = float(ACTIVATION_BOUND * _item_bytes(x))
    slot[key] = float(value)
    return float(value)


def remember_limit(model, x: torch.Tensor, *, with_grad: bool, chunk: int) -> None:
    """Note that chunks of more than ``chunk`` items ran out of memory for this (model, item
    shape, ...): later :func:`chunk_size` calls stay at or below it."""
    slot = _slot(_LIMITS, model)
    key = _key(x, with_grad)
    slot[key] = min(int(chunk), slot.get(key, int(chunk)))


def chunk_size(model, x: torch.Tensor, device=None, *, with_grad: bool, requested=None,
               fraction: float = 0.5) -> int:
    """The largest number of items of ``x``'s kind whose estimated memory (their activations,
    :func:`activation_bytes`, plus :data:`INPUT_COPIES` copies of the input item) fits in
    ``fraction`` of :func:`free_memory_bytes` of ``device`` (default: ``x``'s device); at most
    ``requested`` when given (an explicit user-given chunk size is an upper bound), at most
    a limit learnt from an earlier out-of-memory error, and at least 1."""
    device = _device(x.device if device is None else device)
    item = _item_bytes(x)
    limits = _slot(_LIMITS, model)
    cap = limits.get(_key(x, with_grad))
    if requested is not None:
        cap = int(requested) if cap is None else min(cap, int(requested))
    budget = float(fraction) * free_memory_bytes(device)
    if cap is not None and cap * item * (ACTIVATION_BOUND + INPUT_COPIES) <= budget:
        return max(1, cap)  # fits even under the generous bound: no need to measure
    per_item = activation_bytes(model, x, with_grad=with_grad) + INPUT_COPIES * item
    fit = int(budget // per_item) if per_item > 0 else (cap or 1)
    if cap is not None:
        fit = min(fit, cap)
    return max(1, fit)


# ---- running in chunks ----------------------------------------------------------------------

def _release(device) -> None:
    if _device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fail(error, device, what: str, detail: str):
    """The error to raise when one item does not fit: the original's class (so callers that
    catch OutOfMemoryError still do), with a one-line message."""
    first = one_line(str(error)).split(". ")[0][:200]
    message = one_line(f"out of memory on {_device(device)} even with a chunk of 1 item "
                       f"({what}{detail}): {first}; free memory or use a smaller model")
    try:
        return type(error)(message)
    except Exception:  # noqa: BLE001 - a class whose constructor takes other arguments
        return RuntimeError(message)


def run_chunked(fn, n_items: int, chunk: int, *, device=None, what: str = "chunk",
                on_oom=None) -> int:
    """Call ``fn(start, stop)`` over ``[0, n_items)`` in chunks of ``chunk`` items. On an
    out-of-memory error (:func:`is_out_of_memory`) the CUDA cache is emptied, the chunk is
    halved and the chunk that failed is computed again (from its start, at the smaller size;
    later chunks keep the smaller size; ``on_oom(new_chunk)`` is told). A single item that
    still does not fit raises the same error class with a one-line message naming ``what``,
    the item and ``device``. Returns the chunk size it ended with.

    ``fn`` must compute every item independently and write it to its own place (see the
    module docstring); the result then does not depend on the chunking."""
    n_items, chunk = int(n_items), max(1, int(chunk))
    start = 0
    while start < n_items:
        stop = min(start + chunk, n_items)
        try:
            fn(start, stop)
        except Exception as error:  # noqa: BLE001 - only allocation failures are handled
            if not is_out_of_memory(error):
                raise
            if stop - start <= 1:
                raise _fail(error, device, what, f", item {start} of {n_items}") from error
            failed = True
        else:
            failed = False
        if failed:  # outside the except block, so the failed chunk's tensors can be freed
            _release(device)
            chunk = max(1, (stop - start) // 2)
            if on_oom is not None:
                on_oom(chunk)
            continue
        start = stop
    return chunk


def retry_halving(fn, size: int, *, device=None, what: str = "chunk", on_oom=None):
    """``fn(size)``; on an out-of-memory error empty the CUDA cache and call again with half
    the size, down to 1 (then a one-line error as in :func:`run_chunked`). For work that
    chunks internally (captum's ``internal_batch_size``) and is redone whole after a failure."""
    size = max(1, int(size))
    while True:
        try:
            return fn(size)
        except Exception as error:  # noqa: BLE001 - only allocation failures are handled
            if not is_out_of_memory(error):
                raise
            if size <= 1:
                raise _fail(error, device, what, "") from error
        _release(device)
        size = max(1, size // 2)
        if on_oom is not None:
            on_oom(size)
