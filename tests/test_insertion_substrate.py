"""The insertion metric's blurred substrate: RISE's kernel against scipy.ndimage as the
independent reference, RISE's construction (zero padding of the model input) and the default
(RISE kernel, replicate padding, blurred in RGB) against computations written here."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

import xai_bench
from xai_bench.metrics.common import ImageSelection, gaussian_blur, rise_kernel

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMAGES = 3


def scipy_rise_kernel(size: int, sigma: float) -> np.ndarray:
    """RISE's construction: a delta Gaussian-filtered with scipy's defaults."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return scipy.ndimage.gaussian_filter(delta, sigma)


@pytest.fixture(scope="module", params=["vit_nano", "bcos_vit_nano"])
def model(request):
    torch.manual_seed(0)
    return xai_bench.get_model(request.param).eval()


def selection(model, n=N_IMAGES, seed=0) -> ImageSelection:
    """Random RGB images labelled with the model's own predictions."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, *model.image_size, generator=g)
    with torch.no_grad():
        labels = model(model.encode(images)).argmax(1)
    return ImageSelection(indices=torch.arange(n), labels=labels, images=images,
                          confidences=torch.ones(n), masks=None, n_requested=n, n_correct=n,
                          n_total=n, confidence="-")


def substrate(metric, model, prepared) -> torch.Tensor:
    x = model.encode(prepared.images)
    with torch.no_grad():
        start, originals = metric._inputs(model, prepared, slice(0, len(prepared)), x)
    assert torch.equal(originals, x)  # inserted pixels take their original encoded values
    return start


# ---------------------------------------------------------------- the kernel
@pytest.mark.parametrize("size, sigma", [(11, 5.0), (7, 2.0), (5, 1.0), (11, 1.0), (6, 2.0)])
def test_rise_kernel_equals_scipy_gaussian_filter_of_a_delta(size, sigma):
    kernel = rise_kernel(size, sigma)
    assert kernel.dtype == torch.float64 and kernel.shape == (size, size)
    np.testing.assert_allclose(kernel.numpy(), scipy_rise_kernel(size, sigma), rtol=0,
                               atol=1e-12)


def test_rise_default_kernel_is_nearly_a_box():
    kernel = rise_kernel()
    assert kernel.shape == (11, 11)
    assert float(kernel[5, 5] / kernel[0, 0]) == pytest.approx(1.1417, abs=5e-5)
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(kernel, kernel.T)
    # mirror-symmetric up to the order in which the reflected taps were summed
    torch.testing.assert_close(kernel, kernel.flip(0), rtol=0, atol=1e-15)


def test_gaussian_kernel_option_is_the_sampled_normalised_gaussian():
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    t = np.arange(11) - 5.0
    g = np.exp(-t ** 2 / (2 * 5.0 ** 2))
    g /= g.sum()
    expected = np.stack([[scipy.ndimage.correlate(c, np.outer(g, g), mode="nearest")
                          for c in im] for im in images.numpy()])
    got = gaussian_blur(images, 11, 5.0, kernel="gaussian", padding="replicate")
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- RISE exactly
def test_zero_padding_in_model_space_is_rise(model):
    metric = xai_bench.get_metric("insertion", n_images=N_IMAGES, n_steps=2,
                                  blur_padding="zeros", blur_space="model")
    prepared = selection(model)
    encoded = model.encode(prepared.images).double()
    channels = encoded.shape[1]
    # RISE: one (C, C, k, k) kernel with the blur on the diagonal, zero padding of klen // 2
    kern = torch.zeros(channels, channels, 11, 11, dtype=torch.float64)
    kern[range(channels), range(channels)] = torch.from_numpy(scipy_rise_kernel(11, 5.0))
    expected = torch.nn.functional.conv2d(encoded, kern, padding=11 // 2)
    got = substrate(metric, model, prepared)
    assert got.shape == encoded.shape
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-5)
    # the zero padding shows: the corner pixel sees only 36 of the kernel's 121 taps
    replicate = xai_bench.get_metric("insertion", blur_space="model")
    assert not torch.allclose(substrate(replicate, model, prepared), got, atol=1e-3)


def test_the_first_insertion_point_is_the_model_on_the_rise_substrate():
    torch.manual_seed(0)
    model = xai_bench.get_model("vit_nano").eval()
    metric = xai_bench.get_metric("insertion", n_images=N_IMAGES, n_steps=2,
                                  blur_padding="zeros", blur_space="model",
                                  keep_per_image_curves=True)
    prepared = selection(model)
    with torch.no_grad():
        encoded = model.encode(prepared.images)
        kern = torch.from_numpy(scipy_rise_kernel(11, 5.0)).float()
        start = torch.nn.functional.conv2d(encoded, kern.expand(3, 1, 11, 11), padding=5,
                                           groups=3)
        expected = model.confidence(model(start)).gather(1, prepared.labels[:, None])[:, 0]
    result = metric.evaluate(model, xai_bench.get_method("ixg"), prepared, batch_size=8)
    first = [c["value"] for c in result.curves
             if c["statistic"] == "per_image" and c["fraction"] == 0.0]
    np.testing.assert_allclose(first, expected.double().numpy(), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the default
def test_default_is_rise_kernel_replicate_padding_in_rgb(model):
    metric = xai_bench.get_metric("insertion")
    assert {k: metric.params[k] for k in ("blur_kernel", "blur_sigma", "blur_type",
                                          "blur_padding", "blur_space")} == dict(
        blur_kernel=11, blur_sigma=5.0, blur_type="rise", blur_padding="replicate",
        blur_space="rgb")
    prepared = selection(model)
    kernel = scipy_rise_kernel(11, 5.0)
    # mode="nearest" extends the border pixel outwards: replicate padding
    blurred = np.stack([[scipy.ndimage.correlate(c, kernel, mode="nearest") for c in im]
                        for im in prepared.images.double().numpy()])
    expected = model.encode(torch.from_numpy(blurred))
    torch.testing.assert_close(substrate(metric, model, prepared).double(), expected, rtol=0,
                               atol=1e-5)
    old = xai_bench.get_metric("insertion", blur_type="gaussian")
    assert not torch.allclose(substrate(old, model, prepared), substrate(metric, model, prepared),
                              atol=1e-3)


def test_a_constant_image_is_unchanged_by_the_default_blur():
    colour = torch.tensor([0.2, 0.7, 0.9])[None, :, None, None]
    images = colour.expand(2, 3, 32, 32).contiguous()
    torch.testing.assert_close(gaussian_blur(images), images, rtol=0, atol=1e-6)
    # zero padding does not keep it: the borders are pulled towards 0
    assert gaussian_blur(images, padding="zeros")[:, :, 0, 0].lt(images[:, :, 0, 0] - 0.1).all()


def test_the_substrate_is_named_in_the_records():
    default = xai_bench.get_metric("insertion").substrate_name()
    rise = xai_bench.get_metric("insertion", blur_padding="zeros",
                                blur_space="model").substrate_name()
    old = xai_bench.get_metric("insertion", blur_type="gaussian").substrate_name()
    assert default.startswith("blurred image") and "RISE kernel" in default
    assert "replicate padding" in default and "RGB" in default
    assert "zeros padding" in rise and "model input" in rise
    assert "gaussian" in old
    assert len({default, rise, old}) == 3


# ---------------------------------------------------------------- bad options
@pytest.mark.parametrize("option, value", [("blur_type", "box"), ("blur_padding", "reflect"),
                                           ("blur_space", "lab")])
def test_bad_options_raise(option, value):
    with pytest.raises(ValueError, match=f"{option} must be one of .*got '{value}'"):
        xai_bench.get_metric("insertion", **{option: value})


@pytest.mark.parametrize("option, value", [("kernel", "box"), ("padding", "circular")])
def test_bad_blur_options_raise(option, value):
    with pytest.raises(ValueError, match=f"{option} must be one of .*got '{value}'"):
        gaussian_blur(torch.zeros(1, 3, 8, 8), **{option: value})
