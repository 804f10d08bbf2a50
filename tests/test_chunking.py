"""Memory-bounded chunks (xai_bench.compute.chunking): chunk sizes follow the free memory, and a chunk
that runs out of memory is retried at half the size with an unchanged result — for the helper
itself, Integrated Gradients' interpolation batches, ViT-CX's masked copies and the
perturbation metrics' perturbed copies. Out-of-memory errors are simulated by models and
functions that raise when given more than a set number of items."""

from __future__ import annotations

import pytest
import torch

import xai_bench
from xai_bench.compute import chunking
from xai_bench.metrics.common import perturbed_confidences, pixel_ranks

from conftest import OOM, model_raising_above, raise_above



@pytest.fixture(autouse=True)
def _fresh_cache():
    chunking.clear_cache()
    yield
    chunking.clear_cache()


# ---- the helper -----------------------------------------------------------------------------

@pytest.mark.parametrize("error", [OOM, RuntimeError])
def test_run_chunked_halves_on_oom_and_the_result_is_unchanged(error):
    values = torch.arange(23, dtype=torch.float64)
    out, chunks, told = torch.full_like(values, float("nan")), [], []
    check = raise_above(5, error)

    def fn(start, stop):
        chunks.append((start, stop))
        out[start:stop] = values[start:stop] ** 2  # written before the failure: redone
        check(stop - start)

    final = chunking.run_chunked(fn, len(values), 16, what="test items", on_oom=told.append)
    assert torch.equal(out, values ** 2)  # what one un-chunked call gives
    assert final == 4 and told == [8, 4]  # 16 -> 8 -> 4 and kept for the following chunks
    assert chunks[:3] == [(0, 16), (0, 8), (0, 4)]
    assert all(b - a <= 4 for a, b in chunks[3:]) and chunks[-1][1] == 23


def test_run_chunked_leaves_other_errors_alone():
    def fn(start, stop):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        chunking.run_chunked(fn, 10, 4)
    with pytest.raises(ValueError):
        chunking.run_chunked(lambda a, b: (_ for _ in ()).throw(ValueError("x")), 3, 2)


def test_one_item_that_does_not_fit_gives_a_one_line_error():
    check = raise_above(0)
    with pytest.raises(OOM) as info:
        chunking.run_chunked(lambda a, b: check(b - a), 10, 4, device="cpu", what="my items")
    message = str(info.value)
    assert "\n" not in message and "out of memory on cpu" in message
    assert "chunk of 1 item" in message and "my items" in message and "item 0 of 10" in message
    with pytest.raises(OOM) as info:
        chunking.retry_halving(lambda n: check(n), 8, device="cuda:1", what="captum")
    assert "\n" not in str(info.value) and "cuda:1" in str(info.value)
    assert "captum" in str(info.value)


def test_retry_halving():
    sizes = []

    def fn(n):
        sizes.append(n)
        raise_above(3)(n)
        return n

    assert chunking.retry_halving(fn, 20) == 2 and sizes == [20, 10, 5, 2]


def test_is_out_of_memory():
    assert chunking.is_out_of_memory(OOM("CUDA out of memory"))
    assert chunking.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert chunking.is_out_of_memory(RuntimeError(
        "[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"))
    assert not chunking.is_out_of_memory(RuntimeError("size mismatch"))
    assert not chunking.is_out_of_memory(ValueError("out of memory"))


# ---- sizes ----------------------------------------------------------------------------------

def test_free_memory_on_cpu_is_positive():
    assert chunking.free_memory_bytes("cpu") > 0
    assert chunking.free_memory_bytes(torch.zeros(1)) > 0


def test_chunk_size_follows_the_free_memory(monkeypatch):
    model = xai_bench.get_model("vit_nano").eval()
    x = model.encode(torch.rand(3, 3, 32, 32))
    calls = []
    model.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    per_item = chunking.activation_bytes(model, x, with_grad=True)
    assert per_item > 0 and calls == [1]  # one forward of one item on the CPU
    assert chunking.activation_bytes(model, x, with_grad=True) == per_item and calls == [1]
    forward_only = chunking.activation_bytes(model, x, with_grad=False)
    assert 0 < forward_only < per_item  # a smaller safety factor without the backward
    item = x[0].numel() * x.element_size()
    need = per_item + chunking.INPUT_COPIES * item

    def chunk(free, **kw):
        monkeypatch.setattr(chunking, "free_memory_bytes", lambda device: free)
        return chunking.chunk_size(model, x, "cpu", with_grad=True, **kw)

    assert chunk(int(2 * 10.5 * need)) == 10  # half of the free memory holds 10.5 items
    assert chunk(int(2 * 10.5 * need), fraction=0.25) == 5
    assert chunk(int(2 * 10.5 * need), requested=4) == 4  # an explicit size is an upper bound
    assert chunk(0) == 1 and chunk(0, requested=4) == 1  # never below 1
    assert chunk(1 << 50, requested=300) == 300
    n_calls = len(calls)
    assert chunk(1 << 50) >= 1 << 20 and len(calls) == n_calls  # cached: no more forwards
    chunking.remember_limit(model, x, with_grad=True, chunk=7)  # learnt from an OOM
    assert chunk(1 << 50, requested=300) == 7 and chunk(1 << 50) == 7


def test_small_requested_chunks_are_not_measured(monkeypatch):
    model = xai_bench.get_model("vit_nano").eval()
    calls = []
    model.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    x = model.encode(torch.rand(2, 3, 32, 32))
    monkeypatch.setattr(chunking, "free_memory_bytes", lambda device: 1 << 40)
    assert chunking.chunk_size(model, x, with_grad=True, requested=64) == 64
    assert calls == []  # fits even under the generous bound: the model never ran


# ---- the hot loops --------------------------------------------------------------------------

def test_intgrad_retries_smaller_interpolation_batches(monkeypatch):
    model = xai_bench.get_model("vit_nano").eval()
    x, t = model.encode(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))), \
        torch.tensor([1, 4])
    method = xai_bench.get_method("intgrad", n_steps=12)
    whole = xai_bench.get_method("intgrad", n_steps=12, chunk_size=24)(model, x, t)  # one pass
    same_chunks = xai_bench.get_method("intgrad", n_steps=12, chunk_size=4)(model, x, t)
    calls = model_raising_above(model, 7, monkeypatch)
    got = method(model, x, t)  # "auto": 64 on the CPU -> 32 -> 16 -> 8 -> 4 (+ captum's rule)
    assert max(calls) > 7 and calls[-1] <= 7
    assert torch.equal(got, same_chunks)  # captum with 4 interpolated inputs -> 2 steps each
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)  # un-chunked, to rounding
    calls.clear()
    method(model, x, t)  # the limit is remembered: no failed pass this time
    assert max(calls) <= 7


def test_intgrad_splits_images_when_one_step_of_each_does_not_fit(monkeypatch):
    model = xai_bench.get_model("bcos_vit_nano").double().eval()  # float64: no batch rounding
    x, t = model.encode(torch.rand(3, 3, 32, 32, dtype=torch.float64)), torch.tensor([0, 5, 9])
    whole = xai_bench.get_method("intgrad", n_steps=4, chunk_size=12)(model, x, t)
    calls = model_raising_above(model, 1, monkeypatch, error=RuntimeError)
    got = xai_bench.get_method("intgrad", n_steps=4)(model, x, t)
    assert set(calls[-12:]) == {1}  # one image, one step per pass
    torch.testing.assert_close(got, whole, rtol=1e-10, atol=1e-12)


def test_intgrad_chunk_for_keeps_the_cpu_caps(monkeypatch):
    model = xai_bench.get_model("vit_nano").eval()
    auto = xai_bench.get_method("intgrad")
    x = torch.zeros(2, 3, 32, 32)
    assert auto.chunk_for(model, x) == 64  # plenty of memory: the benchmark's CPU optimum
    assert xai_bench.get_method("intgrad", chunk_size=9).chunk_for(model, x) == 9
    monkeypatch.setattr(chunking, "free_memory_bytes", lambda device: 0)
    assert auto.chunk_for(model, x) == 1  # no memory: below the batch size, at least 1


def test_vit_cx_retries_smaller_chunks(monkeypatch):
    model = xai_bench.get_model("vit_nano").eval()
    x, t = model.encode(torch.rand(2, 3, 32, 32)), torch.tensor([3, 7])
    method = xai_bench.get_method("vit_cx", chunk_size=10)
    expected = method(model, x, t)
    calls = model_raising_above(model, 4, monkeypatch)
    got = xai_bench.get_method("vit_cx", chunk_size=10)(model, x, t)
    assert 10 in calls and max(calls[calls.index(10) + 1:]) <= 5
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


class Linear(torch.nn.Module):
    """A pooled linear classifier with a softmax confidence."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.linear = torch.nn.Linear(3 * 16, 5)

    def forward(self, x):
        return self.linear(self.pool(x).flatten(1))

    def confidence(self, logits):
        return logits.softmax(-1)


def test_perturbed_confidences_retry_smaller_chunks(monkeypatch):
    model = Linear().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 8, 8, generator=g)
    maps = torch.rand(3, 8, 8, generator=g)
    ranks = torch.stack([pixel_ranks(maps, True), pixel_ranks(maps, False)])
    points = [(0, 0), (0, 5), (0, 20), (1, 5), (1, 20)]
    targets = torch.tensor([0, 2, 4])
    whole = perturbed_confidences(model, x, None, ranks, points, targets, batch_size=15)
    by_three = perturbed_confidences(model, x, None, ranks, points, targets, batch_size=3)
    calls = model_raising_above(model, 3, monkeypatch)
    got = perturbed_confidences(model, x, None, ranks, points, targets, batch_size=12)
    assert calls[:3] == [12, 6, 3] and max(calls[3:]) <= 3 and got.dtype == torch.float64
    assert torch.equal(got, by_three)
    torch.testing.assert_close(got, whole, rtol=0, atol=1e-7)
    inside = torch.zeros_like(x) + 0.5
    a = perturbed_confidences(model, x, inside, ranks, points, targets, batch_size=3)
    monkeypatch.undo()
    chunking.clear_cache()  # forget the limit learnt above: one chunk of 15
    b = perturbed_confidences(model, x, inside, ranks, points, targets, batch_size=15)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
