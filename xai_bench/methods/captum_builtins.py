"""The common captum attributions under their own names, with parameters that fit images:
``saliency``, ``smoothgrad``, ``vargrad``, ``gradient_shap``, ``deeplift``, ``occlusion``,
``lime`` and ``kernel_shap``.

Each is a :class:`~xai_bench.methods.captum_adapter.CaptumMethod`: captum computes it, on the
model's encoded input, of the target logit, and the map is captum's attribution summed over
channels; captum's version is a recorded parameter. What the names add to ``captum:<Name>``
(docs/definitions.md, 'captum methods'):

- uniform parameter names: ``chunk_size`` ("auto" or a cap on model inputs per pass, for
  captum's ``internal_batch_size`` / ``perturbations_per_eval`` / ``nt_samples_batch_size``),
  ``baseline`` (:mod:`xai_bench.methods.input_baselines`: ``zeros``, ``blurred``, ``uniform``
  noise or a grey level), ``seed`` for the stochastic ones (seeded per image by its content, so a
  batched call equals the per-image calls);
- noise in units of the input's range: ``noise_level`` σ / (max − min of the model's input
  channels over RGB [0, 1]), SmoothGrad's parametrisation (σ = 15 % of the range by default);
- perturbation features are the model's token cells (one feature per token patch, all channels
  together; ``features="pixels"`` for single pixels).
"""

from __future__ import annotations

import warnings

import torch

from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import boolean, integer, number, one_of, or_none
from xai_bench.methods.captum_adapter import (
    CHUNK_CHECK, WINDOW_CHECK, CaptumMethod, import_captum, require_sklearn,
)
from xai_bench.methods.input_baselines import BASELINE_CHECK

__all__ = ["Saliency", "SmoothGrad", "VarGrad", "GradientShap", "DeepLift", "Occlusion",
           "Lime", "KernelShap", "input_range", "lime_similarity"]

_NOISE = {"nt_samples": integer(1), "noise_level": number(low=0), "abs": boolean(),
          "chunk_size": CHUNK_CHECK, "seed": integer()}
_PERTURB = {"baseline": BASELINE_CHECK, "blur_sigma": or_none(number(above=0)),
            "chunk_size": CHUNK_CHECK}
_SURROGATE = {**_PERTURB, "n_samples": integer(1), "features": one_of("tokens", "pixels"),
              "seed": integer()}


def input_range(model, x: torch.Tensor) -> float:
    """The largest span of a model input channel over RGB images in [0, 1]: 1 for RGB and the
    B-cos encoding, 1/std for a normalised one."""
    grey = torch.tensor([0.0, 1.0], device=x.device, dtype=x.dtype).view(2, 1, 1, 1)
    ends = model.encode(grey.expand(2, 3, 1, 1))
    return float((ends[1] - ends[0]).abs().max())


class _NoiseTunnel(CaptumMethod):
    """Saliency under captum's NoiseTunnel: ``nt_samples`` noisy copies (Gaussian, std
    ``noise_level`` × the input range) per image, reduced by ``nt_type``."""

    CAPTUM, INNER, STOCHASTIC = "NoiseTunnel", "Saliency", True
    ATTRIBUTE_ARGS = ("nt_type", "nt_samples", "abs", "stdevs", "nt_samples_batch_size")
    CHUNK_PARAM = "chunk_size"
    NT_TYPE = "smoothgrad"
    PARAMETER_CHECKS = _NOISE

    def natural_items(self, x):
        return x.shape[0] * self.params["nt_samples"]

    def attribute_kwargs(self, model, x):
        p = self.params
        return {"nt_type": self.NT_TYPE, "nt_samples": p["nt_samples"], "abs": p["abs"],
                "stdevs": p["noise_level"] * input_range(model, x)}


@method("saliency", kind="gradient", cost=2.5, place=20, colour="#77AADD", groups=("captum",))
class Saliency(CaptumMethod):
    """Saliency (Simonyan et al. 2014): the absolute gradient of the target logit
    (``abs=False``: the signed gradient), summed over channels (captum ``Saliency``)."""

    CAPTUM, ATTRIBUTE_ARGS = "Saliency", ("abs",)
    PARAMETER_CHECKS = {"abs": boolean()}

    def __init__(self, abs: bool = True):  # noqa: A002 - captum's name
        super().__init__(abs=abs)


@method("smoothgrad", kind="gradient", cost=150.0, place=21, colour="#99DDFF",
        groups=("captum",))
class SmoothGrad(_NoiseTunnel):
    """SmoothGrad (Smilkov et al. 2017): the mean absolute gradient over ``nt_samples`` noisy
    copies of the input (noise std ``noise_level`` × the input's range), summed over
    channels (captum ``NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``)."""

    def __init__(self, nt_samples: int = 50, noise_level: float = 0.15, abs: bool = True,  # noqa: A002
                 chunk_size: int | str = "auto", seed: int = 0):
        super().__init__(nt_samples=nt_samples, noise_level=noise_level, abs=abs,
                         chunk_size=chunk_size, seed=seed)


@method("vargrad", kind="gradient", cost=150.0, place=22, colour="#44BB99", groups=("captum",))
class VarGrad(_NoiseTunnel):
    """VarGrad (Adebayo et al. 2018): the variance of the gradient over ``nt_samples`` noisy
    copies of the input (noise std ``noise_level`` × the input's range), summed over
    channels (captum ``NoiseTunnel(Saliency)``, ``nt_type="vargrad"``, signed gradients)."""

    NT_TYPE = "vargrad"

    def __init__(self, nt_samples: int = 50, noise_level: float = 0.15, abs: bool = False,  # noqa: A002
                 chunk_size: int | str = "auto", seed: int = 0):
        super().__init__(nt_samples=nt_samples, noise_level=noise_level, abs=abs,
                         chunk_size=chunk_size, seed=seed)


@method("gradient_shap", kind="gradient", cost=145.0, place=23, colour="#BBCC33",
        groups=("captum",))
class GradientShap(CaptumMethod):
    """GradientSHAP (Lundberg & Lee 2017, captum ``GradientShap``): the mean of
    gradient × (input − baseline) at ``n_samples`` random points between the baseline and the
    input (noise std ``noise_level`` × the input's range added to the input), summed over
    channels."""

    CAPTUM, STOCHASTIC = "GradientShap", True
    ATTRIBUTE_ARGS = ("n_samples", "stdevs", "baselines")
    PARAMETER_CHECKS = {"n_samples": integer(1), "noise_level": number(low=0), "seed": integer(),
                        "baseline": BASELINE_CHECK, "blur_sigma": or_none(number(above=0))}

    def __init__(self, n_samples: int = 50, noise_level: float = 0.0,
                 baseline: str | float = "zeros", blur_sigma: float | None = None,
                 seed: int = 0):
        super().__init__(n_samples=n_samples, noise_level=noise_level, baseline=baseline,
                         blur_sigma=blur_sigma, seed=seed)

    def attribute_kwargs(self, model, x):
        kwargs = super().attribute_kwargs(model, x)
        kwargs["stdevs"] = self.params["noise_level"] * input_range(model, x)
        return kwargs


@method("deeplift", kind="gradient", cost=6.5, place=24, colour="#AAAA00", groups=("captum",))
class DeepLift(CaptumMethod):
    """DeepLIFT (Shrikumar et al. 2017, captum ``DeepLift``, Rescale rule) against
    ``baseline``, summed over channels. captum applies the Rescale rule to the
    nonlinearities it knows as modules (ReLU, ELU, Sigmoid, Tanh, Softmax, ...); the others
    (GELU, LayerNorm, attention products, B-cos layers) pass plain gradients, so the map does
    not sum exactly to logit(x) − logit(baseline) on a ViT."""

    CAPTUM = "DeepLift"
    INIT_ARGS, ATTRIBUTE_ARGS = ("multiply_by_inputs", "eps"), ("baselines",)
    PARAMETER_CHECKS = {"baseline": BASELINE_CHECK, "blur_sigma": or_none(number(above=0)),
                        "multiply_by_inputs": boolean(), "eps": number(above=0)}

    def __init__(self, baseline: str | float = "zeros", blur_sigma: float | None = None,
                 multiply_by_inputs: bool = True, eps: float = 1e-10):
        super().__init__(baseline=baseline, blur_sigma=blur_sigma,
                         multiply_by_inputs=multiply_by_inputs, eps=eps)

    def applies_to(self, model) -> bool:
        return isinstance(model, torch.nn.Module)  # captum hooks the model's modules

    def attribute(self, model, x, targets):
        with warnings.catch_warnings():  # captum's notice that it hooks the activations
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            return super().attribute(model, x, targets)


@method("occlusion", kind="perturbation", cost=75.0, place=25, colour="#EE8866",
        groups=("captum",))
class Occlusion(CaptumMethod):
    """Occlusion (Zeiler & Fergus 2014, captum ``Occlusion``): the drop of the target logit
    when one window is replaced by ``baseline``, spread over the window; windows of one token
    patch (all channels) at a stride of one patch by default, summed over channels."""

    CAPTUM = "Occlusion"
    ATTRIBUTE_ARGS = ("sliding_window_shapes", "strides", "baselines", "perturbations_per_eval")
    CHUNK_PARAM = "chunk_size"
    PARAMETER_CHECKS = {**_PERTURB, "sliding_window_shapes": WINDOW_CHECK,
                        "strides": WINDOW_CHECK}

    def __init__(self, sliding_window_shapes=None, strides=None, baseline: str | float = "zeros",
                 blur_sigma: float | None = None, chunk_size: int | str = "auto"):
        super().__init__(sliding_window_shapes=sliding_window_shapes, strides=strides,
                         baseline=baseline, blur_sigma=blur_sigma, chunk_size=chunk_size)


class _Surrogate(CaptumMethod):
    """A surrogate-model attribution over token features (captum Lime / KernelShap)."""

    ATTRIBUTE_ARGS = ("n_samples", "baselines", "perturbations_per_eval")
    CHUNK_PARAM, USES_MASK, STOCHASTIC = "chunk_size", True, True
    PARAMETER_CHECKS = _SURROGATE

    def __init__(self, n_samples: int = 256, features: str = "tokens",
                 baseline: str | float = "zeros", blur_sigma: float | None = None,
                 chunk_size: int | str = "auto", seed: int = 0, **more):
        require_sklearn(f"method '{self.name}'")
        super().__init__(n_samples=n_samples, features=features, baseline=baseline,
                         blur_sigma=blur_sigma, chunk_size=chunk_size, seed=seed, **more)


def lime_similarity(kernel_width: float):
    """LIME's image kernel as a captum ``similarity_func``: ``sqrt(exp(-d² / w²))`` with
    ``d`` the cosine distance between a sample's binary feature vector and the all-ones
    vector of the unperturbed image."""

    def similarity(original, perturbed, interpretable, **kwargs):
        z = interpretable.to(torch.float64).flatten()
        cosine = z.sum() / (z.norm() * z.numel() ** 0.5).clamp(min=1e-12)
        return torch.sqrt(torch.exp(-(1.0 - cosine) ** 2 / kernel_width ** 2))

    return similarity


@method("lime", kind="perturbation", cost=325.0, place=26, colour="#EEDD88", groups=("captum",))
class Lime(_Surrogate):
    """LIME (Ribeiro et al. 2016) through captum's ``Lime``, with the reference's image
    settings rather than captum's defaults: a ridge regression (``alpha``, 1 as in the
    reference) of the target logit on ``n_samples`` random subsets of the token features
    (each kept with probability 1/2, the others set to ``baseline``), weighted by
    ``sqrt(exp(-d² / kernel_width²))`` with ``d`` the cosine distance of the kept-feature
    vector to all-ones (``kernel_width`` 0.25); its coefficient per feature is the map over
    that feature."""

    CAPTUM = "Lime"
    PARAMETER_CHECKS = {**_SURROGATE, "alpha": number(low=0), "kernel_width": number(above=0)}

    def __init__(self, n_samples: int = 256, features: str = "tokens",
                 baseline: str | float = "zeros", blur_sigma: float | None = None,
                 chunk_size: int | str = "auto", seed: int = 0, alpha: float = 1.0,
                 kernel_width: float = 0.25):
        super().__init__(n_samples=n_samples, features=features, baseline=baseline,
                         blur_sigma=blur_sigma, chunk_size=chunk_size, seed=seed, alpha=alpha,
                         kernel_width=kernel_width)

    def build(self, model):
        from captum._utils.models.linear_model import SkLearnRidge

        attr = import_captum()
        return attr.Lime(model, interpretable_model=SkLearnRidge(alpha=self.params["alpha"]),
                         similarity_func=lime_similarity(self.params["kernel_width"]))


@method("kernel_shap", kind="perturbation", cost=400.0, place=27, colour="#FFAABB",
        groups=("captum",))
class KernelShap(_Surrogate):
    """KernelSHAP (Lundberg & Lee 2017, captum ``KernelShap``): a linear model fitted to the
    target logit on ``n_samples`` coalitions of the token features (the others set to
    ``baseline``) with the Shapley kernel's weights; its coefficient per feature (the
    feature's Shapley value estimate) is the map over that feature."""

    CAPTUM = "KernelShap"
