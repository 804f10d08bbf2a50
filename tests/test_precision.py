"""Forward precision and compilation (xai_bench.compute.precision): the options validate and nest,
fp32 is bit-identical to not using them, bf16 stays within a stated tolerance of fp32 on the
shipped nano models, and compile=True either works or falls back to the plain model."""

from __future__ import annotations

import warnings

import pytest
import torch

import xai_bench
from xai_bench.compute import precision
from xai_bench.data import get_dataset
from xai_bench.compute.inference import predict
from xai_bench.metrics.common import perturbed_confidences, pixel_ranks
from xai_bench.compute.precision import (
    PRECISIONS, current_options, forward_autocast, forward_model, forward_options,
    full_precision,
)
from xai_bench.training.shipped import SHIPPED_DIR, read_manifest

#: largest |bf16 − fp32| of a perturbed true-class confidence we accept (measured on 8 test
#: images × 7 points: 0.015 for bcos_vit_nano, 0.008 for vit_nano; see docs/gpu.md)
BF16_CONFIDENCE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def shipped():
    manifest = read_manifest()
    return {name: xai_bench.get_model(name, checkpoint=str(SHIPPED_DIR / entry["file"])).eval()
            for name, entry in manifest.items()}


@pytest.fixture(scope="module")
def test_images():
    data = get_dataset("shapes", "test")
    return data.images[:8].float() / 255, data.labels[:8]


def confidences(model, images, labels):
    maps = torch.rand(len(images), *images.shape[-2:], generator=torch.Generator().manual_seed(0))
    ranks = torch.stack([pixel_ranks(maps, True), pixel_ranks(maps, False)])
    points = [(0, 0)] + [(r, k) for r in (0, 1) for k in (32, 128, 256)]
    return perturbed_confidences(model, model.encode(images), None, ranks, points, labels, 16)


def test_forward_options_validate_and_nest():
    assert PRECISIONS == ("fp32", "bf16")
    assert current_options().precision == "fp32" and not current_options().compile
    with pytest.raises(ValueError, match="'fp32', 'bf16'.*'fp16'"):
        with forward_options("fp16"):
            pass
    with forward_options("bf16") as outer:
        assert outer.precision == "bf16" and current_options() == outer
        with forward_options("fp32", compile=True):
            assert current_options().precision == "fp32" and current_options().compile
        assert current_options() == outer
    assert current_options().precision == "fp32"


def test_forward_autocast_and_full_precision():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with forward_autocast("cpu"):
        assert layer(x).dtype == torch.float32  # fp32: a null context
    with forward_options("bf16"), forward_autocast(torch.device("cpu")):
        out = layer(x)
    assert out.dtype == torch.bfloat16 and full_precision(out).dtype == torch.float32
    double = torch.zeros(2, dtype=torch.float64)
    assert full_precision(double) is double and full_precision(x) is x
    assert forward_model(layer) is layer


def test_fp32_is_bit_identical_to_no_options(shipped, test_images):
    model = shipped["bcos_vit_nano"]
    images, labels = test_images
    plain = confidences(model, images, labels)
    with forward_options("fp32"):
        assert torch.equal(confidences(model, images, labels), plain)


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_bf16_perturbed_confidences_stay_close_to_fp32(shipped, test_images, name):
    model = shipped[name]
    images, labels = test_images
    fp32 = confidences(model, images, labels)
    with forward_options("bf16"):
        bf16 = confidences(model, images, labels)
    assert bf16.dtype == torch.float64 and bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32)  # bf16 really ran
    assert (bf16 - fp32).abs().max() <= BF16_CONFIDENCE_TOLERANCE


def test_predict_keeps_precisions_apart():
    model = xai_bench.get_model("vit_nano").eval()
    data = get_dataset("shapes", "test")
    subset = torch.utils.data.Subset(data, range(24))
    fp32 = predict(model, subset, batch_size=8)
    with forward_options("bf16"):
        bf16 = predict(model, subset, batch_size=8)
    assert bf16 is not fp32 and bf16.logits.dtype == torch.float32
    assert not torch.equal(bf16.logits, fp32.logits)
    assert (bf16.logits - fp32.logits).abs().max() < 0.1
    # the cache tells the precisions apart: fp32 again gives the fp32 logits, not the bf16 ones
    assert torch.equal(predict(model, subset, batch_size=8).logits, fp32.logits)


needs_compile = pytest.mark.skipif(not hasattr(torch, "compile"), reason="no torch.compile")


@needs_compile
def test_compile_works_on_cpu_and_is_cached_per_model(monkeypatch):
    # the eager backend: what dynamo captures runs as it is, so this stays fast (inductor's
    # C++ compilation takes ~30 s on two cores); a failing backend falls back, tested below
    monkeypatch.setitem(precision.COMPILE_OPTIONS, "backend", "eager")
    model = xai_bench.get_model("vit_nano").eval()
    x = model.encode(torch.rand(3, 3, 32, 32))
    with torch.no_grad():
        expected = model(x)
    with forward_options(compile=True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forward = forward_model(model)
        assert forward is not model and forward_model(model) is forward
        with torch.no_grad():
            got = forward(x)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]  # no fallback
    assert forward.error is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@needs_compile
def test_compile_failure_falls_back_with_one_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler\nfor this platform")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(precision, "_WARNED", [False])
    model, other = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with forward_options(compile=True):
        with pytest.warns(RuntimeWarning, match="torch.compile failed.*no compiler for this"):
            out = forward_model(model)(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per process
            assert torch.equal(forward_model(other)(x), other(x))
    assert torch.equal(out, model(x))


@needs_compile
def test_compile_failure_at_call_time_falls_back(monkeypatch):
    class Lazy:  # what torch.compile returns: fails on the first call
        def __init__(self, module, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            raise RuntimeError("backend compiler failed")

    monkeypatch.setattr(torch, "compile", Lazy)
    monkeypatch.setattr(precision, "_WARNED", [False])
    model = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with forward_options(compile=True), pytest.warns(RuntimeWarning, match="compiler failed"):
        forward = forward_model(model)
        assert torch.equal(forward(x), model(x))
    assert forward.error is not None
