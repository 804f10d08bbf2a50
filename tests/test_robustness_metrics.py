"""infidelity and max_sensitivity (xai_bench.metrics.robustness): the same numbers as calling
captum directly with the same seeded perturbations, Quantus's Infidelity / MaxSensitivity on
identical inputs where their definitions coincide, known answers, batched == per image,
parts == whole, one-line errors for bad parameters."""

import numpy as np
import pytest
import torch
from torch import nn

import xai_bench
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.errors import ConfigError
from xai_bench.metrics import join_parts
from xai_bench.metrics.robustness import infidelity_scores, max_sensitivity_scores

from xai_bench.metrics.quantus_adapter import ensure_quantus
from conftest import SelfLabelled, tiny_bcos_batch

pytestmark = pytest.mark.usefixtures("one_thread")

N_SAMPLES = 6


@pytest.fixture(scope="module")
def setup():
    """An untrained tiny B-cos ViT (6-channel input), 3 images, their IxG maps."""
    model, x, targets = tiny_bcos_batch()
    method = xai_bench.get_method("ixg")
    return model, x, targets, method, method(model, x, targets).detach()


def replaying(table, b: int):
    """A Quantus perturbation function that adds draw j of ``table`` (B, n, ...) on its j-th
    call: Quantus then perturbs with exactly our samples."""
    state = {"j": 0}

    def perturb(arr, indices, **_):
        out = arr + table[:, state["j"]].reshape(b, -1).numpy()
        state["j"] += 1
        return out

    return perturb


def noise_table(x, what, seed, n, kind):
    """(B, n, C, H, W): sample j of image b is draw j of image b's own stream — built here
    image by image, independently of how captum cuts the samples."""
    out = []
    for img in x:
        g = cpu_generator(derive_seed(what, content_seed(img, seed)))
        draw = (lambda: torch.randn(img.shape, generator=g)) if kind == "normal" else \
            (lambda: torch.rand(img.shape, generator=g) * 2 - 1)
        out.append(torch.stack([draw() for _ in range(n)]))
    return torch.stack(out)


class Replay:
    """captum's rows (image b repeated k times) of the next k samples of every image."""

    def __init__(self, table):
        self.table, self.next = table, 0

    def __call__(self, rows):
        b = self.table.shape[0]
        k = rows // b
        chunk = self.table[:, self.next:self.next + k].reshape(rows, *self.table.shape[2:])
        self.next += k
        return chunk


# ---- registration ---------------------------------------------------------------------------

def test_registered_with_their_cards():
    names = xai_bench.METRICS.list()
    assert "infidelity" in names and "max_sensitivity" in names
    inf, sens = xai_bench.get_metric("infidelity"), xai_bench.get_metric("max_sensitivity")
    assert (inf.category, inf.higher_is_better) == ("faithfulness", False)
    assert (sens.category, sens.higher_is_better, sens.reexplains) == ("robustness", False, True)
    assert inf.params == dict(n_images=250, n_perturb_samples=10, noise_std=0.003,
                              normalize=True, seed=0, selection="stratified")
    assert sens.params == dict(n_images=32, n_perturb_samples=10, perturb_radius=0.02, seed=0,
                            selection="stratified")


# ---- infidelity -----------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
def test_infidelity_is_captums_with_the_same_noise(setup, normalize):
    from captum.metrics import infidelity

    model, x, targets, _, maps = setup
    std = 0.05
    replay = Replay(noise_table(x, "infidelity", 0, N_SAMPLES, "normal") * std)

    def perturb(inputs):
        i = replay(inputs.shape[0])
        return i, inputs - i

    ours = infidelity_scores(model, x, targets, maps, n_perturb_samples=N_SAMPLES,
                             noise_std=std, normalize=normalize, seed=0, batch_size=6)
    with torch.no_grad():  # same sub-batches (6 rows = 2 samples of 3 images): same floats
        direct = infidelity(lambda t: model(t).double(), perturb, x,
                            maps.double()[:, None].expand(x.shape), target=targets,
                            n_perturb_samples=N_SAMPLES, max_examples_per_batch=6,
                            normalize=normalize)
    torch.testing.assert_close(ours, direct.double(), rtol=1e-12, atol=0)
    assert (ours > 0).all()


def test_infidelity_does_not_depend_on_the_sub_batches(setup):
    model, x, targets, _, maps = setup
    kw = dict(n_perturb_samples=N_SAMPLES, noise_std=0.05, normalize=True, seed=0)
    a = infidelity_scores(model, x, targets, maps, batch_size=3, **kw)
    b = infidelity_scores(model, x, targets, maps, batch_size=18, **kw)
    # only the float rounding of other forward batches differs
    torch.testing.assert_close(a, b, rtol=1e-3, atol=0)


def test_infidelity_unnormalised_equals_quantus_on_identical_noise(setup):
    """Quantus's Infidelity perturbs cumulative square patches with a black baseline (default
    4 px) and never rescales the map; with one patch covering the image, our noise as its
    perturbation and ``normalize=False`` the two definitions coincide."""
    q = ensure_quantus()
    model, x, targets, _, maps = setup
    std, b = 0.05, x.shape[0]
    table = noise_table(x, "infidelity", 0, N_SAMPLES, "normal") * std
    perturb = replaying(-table, b)

    theirs = q.Infidelity(perturb_patch_sizes=[x.shape[-1]], n_perturb_samples=N_SAMPLES,
                          perturb_func=perturb, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(), channel_first=True, batch_size=b)
    ours = infidelity_scores(model, x, targets, maps, n_perturb_samples=N_SAMPLES,
                             noise_std=std, normalize=False, seed=0, batch_size=b)
    # Quantus forms x - (x - I) and the products in float32
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-3)


class ChannelSum(nn.Module):
    """f(x) = W · (sum of the channels): the gradient of a pixel is the same in every
    channel, so a map equal to it is a perfect (infidelity 0) explanation."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16 * 16, 5, generator=torch.Generator()
                                               .manual_seed(3)))

    def forward(self, x):
        return x.sum(1).flatten(1) @ self.weight


def test_infidelity_of_the_exact_gradient_is_zero():
    model = ChannelSum()
    x = torch.rand(2, 6, 16, 16)
    targets = torch.tensor([1, 4])
    gradient = model.weight[:, targets].T.reshape(2, 16, 16).detach()
    kw = dict(n_perturb_samples=8, noise_std=0.1, seed=0, batch_size=4)
    # normalize=True: any positive scale of the map is as good
    exact = infidelity_scores(model, x, targets, 7.0 * gradient, normalize=True, **kw)
    assert exact.abs().max() < 1e-6  # float32 forward rounding; a wrong map: > 1e-2
    wrong = infidelity_scores(model, x, targets, torch.rand(2, 16, 16), normalize=True, **kw)
    assert (wrong > 1e-2).all()


# ---- max-sensitivity ------------------------------------------------------------------------

def test_max_sensitivity_is_captums_with_the_same_noise(setup):
    from captum.metrics import sensitivity_max

    model, x, targets, method, _ = setup
    radius = 0.02
    replay = Replay(noise_table(x, "max_sensitivity", 0, N_SAMPLES, "uniform"))

    def explain(inputs, target):
        if isinstance(inputs, tuple):
            return (method(model, inputs[0], target).double(),)
        return method(model, inputs, target).double()

    direct = sensitivity_max(explain, x, perturb_func=lambda t: t + replay(t.shape[0]) * radius,
                             n_perturb_samples=N_SAMPLES, max_examples_per_batch=6,
                             target=targets)
    ours = max_sensitivity_scores(method, model, x, targets, n_perturb_samples=N_SAMPLES,
                                  perturb_radius=radius, seed=0, batch_size=6)
    torch.testing.assert_close(ours, direct.double(), rtol=1e-12, atol=0)
    assert (ours > 0).all()


def test_max_sensitivity_equals_quantus_on_identical_noise(setup):
    """Quantus's MaxSensitivity has the same definition (Frobenius norm of the change over
    that of the unperturbed map, max over samples); it draws 200 samples by default from
    numpy's global generator, gives inf/nan for an all-zero map where captum divides by 1, and
    can drop samples whose prediction changed. Same samples here."""
    q = ensure_quantus()
    model, x, targets, method, maps = setup
    radius, b = 0.02, x.shape[0]
    table = noise_table(x, "max_sensitivity", 0, N_SAMPLES, "uniform") * radius
    perturb = replaying(table, b)

    def explain(model, inputs, targets, **_):
        return method(model, torch.as_tensor(inputs), torch.as_tensor(targets)).detach().numpy()

    theirs = q.MaxSensitivity(nr_samples=N_SAMPLES, perturb_func=perturb,
                              disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=maps[:, None].numpy(),
        channel_first=True, explain_func=explain, batch_size=b)
    ours = max_sensitivity_scores(method, model, x, targets, n_perturb_samples=N_SAMPLES,
                                  perturb_radius=radius, seed=0, batch_size=b)
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-4)


def test_max_sensitivity_known_answers(setup):
    model, x, targets, _, _ = setup
    kw = dict(n_perturb_samples=4, perturb_radius=0.02, seed=0, batch_size=12)
    # a constant map does not move; a map of fresh noise per input moves by about itself
    still = max_sensitivity_scores(xai_bench.get_method("uniform"), model, x, targets, **kw)
    assert still.tolist() == [0.0, 0.0, 0.0]
    noise = max_sensitivity_scores(xai_bench.get_method("random"), model, x, targets, **kw)
    assert (noise > 0.5).all()


# ---- the harness: batched == per image, parts == whole --------------------------------------

@pytest.mark.parametrize("name, params", [
    ("infidelity", dict(n_images=6, n_perturb_samples=4, noise_std=0.05)),
    ("max_sensitivity", dict(n_images=6, n_perturb_samples=3))])
def test_batched_per_image_and_parts(setup, name, params):
    model = setup[0]
    data = SelfLabelled(model, 8, seed=2)
    method = xai_bench.get_method("ixg")
    metric = xai_bench.get_metric(name, **params)
    prepared = metric.prepare(model, data, batch_size=4, seed=0)
    assert metric.samples(prepared) == 6
    whole = metric.evaluate(model, method, prepared, batch_size=4)
    single = metric.evaluate(model, method, prepared, batch_size=1)
    values = np.array([r["value"] for r in whole.records])
    np.testing.assert_allclose(values, [r["value"] for r in single.records], rtol=1e-3)
    assert np.isfinite(values).all() and (values > 0).all()
    assert whole.summary["mean"] == pytest.approx(values.mean())
    parts = [metric.evaluate_part(model, method, prepared, a, b, batch_size=4)
             for a, b in [(0, 4), (4, 6)]]
    joined = metric.reduce(model, prepared, join_parts(parts))
    assert joined.records == whole.records and joined.summary == whole.summary


# ---- bad parameters -------------------------------------------------------------------------

@pytest.mark.parametrize("name, key, value", [
    ("infidelity", "noise_std", -0.1), ("infidelity", "n_perturb_samples", 0),
    ("infidelity", "normalize", "yes"), ("infidelity", "n_images", 0),
    ("max_sensitivity", "perturb_radius", 0), ("max_sensitivity", "n_perturb_samples", 1.5),
    ("max_sensitivity", "seed", "a")])
def test_bad_parameters_are_one_line_errors(name, key, value):
    with pytest.raises(ConfigError) as err:
        xai_bench.get_metric(name, **{key: value})
    message = str(err.value)
    assert "\n" not in message and key in message and name in message
