"""What the B-cos-v2 models share: the explainable-model interface of the CNNs, the official
weight files (names, download through torch.hub with hash check, fast failure offline) and
loading an official state dict with one-line errors."""

from __future__ import annotations

import math
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from xai_bench.storage.checkpoint_format import CheckpointError
from xai_bench.models.base import ExplainableModel, image_and_token_grid
from xai_bench.models.bcos_layers import encode_six_channels, explanation_mode
from xai_bench.models.bcos_v2.layers import LogitBias

#: GitHub release holding the official weights.
RELEASE_URL = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"

#: Our model name (without the ``bcos_v2.`` prefix) -> official file name,
#: ``<experiment>-<first 10 hex digits of the file's sha256>.pth`` (checked on download).
WEIGHT_FILES = {
    "densenet121": "densenet_121-b8daf96afb.pth",
    "densenet121_long": "densenet_121_long-5175461597.pth",
    "resnet50": "resnet_50-ead259efe4.pth",
    "resnet50_long": "resnet_50_long-ef38a88533.pth",
    "simple_vit_ti_patch16_224": "bcos_simple_vit_ti_patch16_224-4b0824b1c1.pth",
    "simple_vit_s_patch16_224": "bcos_simple_vit_s_patch16_224-75e99d1f73.pth",
    "simple_vit_b_patch16_224": "bcos_simple_vit_b_patch16_224-1fc4750806.pth",
    "simple_vit_l_patch16_224": "bcos_simple_vit_l_patch16_224-9613b2ad0a.pth",
    "vitc_ti_patch1_14": "bcos_vitc_ti_patch1_14-ddd6193a77.pth",
    "vitc_s_patch1_14": "bcos_vitc_s_patch1_14-cf55c88f0c.pth",
    "vitc_b_patch1_14": "bcos_vitc_b_patch1_14-a13c46397b.pth",
    "vitc_l_patch1_14": "bcos_vitc_l_patch1_14-8739e18b8d.pth",
    "standard_simple_vit_ti_patch16_224": "standard_simple_vit_ti_patch16_224-2ae8c65a39.pth",
    "standard_simple_vit_s_patch16_224": "standard_simple_vit_s_patch16_224-f2934fcdcf.pth",
    "standard_simple_vit_b_patch16_224": "standard_simple_vit_b_patch16_224-87074200ed.pth",
    "standard_simple_vit_l_patch16_224": "standard_simple_vit_l_patch16_224-62dc536e03.pth",
    "standard_vitc_ti_patch1_14": "standard_vitc_ti_patch1_14-a5d6bded37.pth",
    "standard_vitc_s_patch1_14": "standard_vitc_s_patch1_14-34ecd7288e.pth",
    "standard_vitc_b_patch1_14": "standard_vitc_b_patch1_14-4d374b0220.pth",
    "standard_vitc_l_patch1_14": "standard_vitc_l_patch1_14-560e48f246.pth",
}

#: Seconds allowed to open a connection to the release host before declaring us offline.
CONNECT_TIMEOUT_S = 3.0


def default_logit_bias(num_classes: int, given: float | None = None) -> float:
    """``given`` if set, else ``-log(C - 1)``: the official logit bias (``-log 999`` for
    ImageNet)."""
    if given is not None:
        return float(given)
    return -math.log(num_classes - 1) if num_classes > 1 else 0.0


def image_size_pair(image_size) -> tuple[int, int]:
    return image_and_token_grid(image_size, (), 1)[0]


class ExplainableCNN(ExplainableModel):
    """The explainable-model interface for the B-cos CNNs (no attention: attention methods
    skip them since they lack ``record_attention`` and ``token_grid``). Subclasses set
    ``image_size``, ``num_classes`` and ``config``, call :meth:`_add_logit_bias` and end their
    ``forward`` with :meth:`pooled_logits`.

    Every B-cos CNN here is dynamic linear in eval mode (B-cos convolutions, average pooling
    and the uncentred bias-free batch norm, which uses ``running_var`` then), so in
    explanation mode ``Σ W(x) ⊙ x = logit - logit_bias`` exactly (up to float error)."""

    in_channels: int = 6
    encoding: str = "rgb_inverse"
    is_dynamic_linear: bool = True
    training_loss: str = "bce"
    family: str = "bcos"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[r, g, b, 1-r, 1-g, 1-b]`` of ``[0, 1]`` images (the official ``AddInverse``)."""
        return encode_six_channels(images)

    def explanation_mode(self):
        return explanation_mode(self)

    def _add_logit_bias(self, num_classes: int, logit_bias: float | None) -> None:
        self.logit_bias = default_logit_bias(num_classes, logit_bias)
        self.logit_layer = LogitBias(self.logit_bias)

    def pooled_logits(self, class_maps: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) class evidence of the 1×1 B-cos classifier -> logits: global average
        pooling, then the logit bias."""
        return self.logit_layer(F.adaptive_avg_pool2d(class_maps, 1).flatten(1))


# ---------------------------------------------------------------------------- weight files

class PretrainedWeightsError(CheckpointError):
    """Official weights could not be obtained (offline, download or hash failure)."""


def weight_url(key: str) -> str:
    return f"{RELEASE_URL}/{WEIGHT_FILES[key]}"


def _offline_message(key: str, why: str) -> str:
    url = weight_url(key)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return (f"cannot download the official weights of 'bcos_v2.{key}' ({why}); download {url} "
            f"on a machine with internet access and pass checkpoint=PATH to get_model (or put "
            f"the file into {cache})")


def _reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to the host of ``url`` (or to the HTTPS proxy, if one is
    configured) opens within ``timeout`` seconds."""
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = target.hostname, target.port or 80
    else:
        host, port = urlparse(url).hostname, 443
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_state_dict(key: str, progress: bool = True) -> dict:
    """The official state dict of model ``key``: from torch.hub's cache if it is there, else
    downloaded (sha256 prefix checked against the file name). Without network it fails
    within :data:`CONNECT_TIMEOUT_S` seconds with a :class:`PretrainedWeightsError` telling
    the user to download the file and pass ``checkpoint=PATH``."""
    if key not in WEIGHT_FILES:
        raise PretrainedWeightsError(f"model 'bcos_v2.{key}' has no official weights")
    url = weight_url(key)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHT_FILES[key]
    if not cached.exists() and not _reachable(url, CONNECT_TIMEOUT_S):
        raise PretrainedWeightsError(_offline_message(
            key, f"{urlparse(url).hostname} is not reachable"))
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                  check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError) as e:
        raise PretrainedWeightsError(_offline_message(
            key, f"{type(e).__name__}: {' '.join(str(e).split())}")) from None
    except (RuntimeError, EOFError) as e:  # hash mismatch, or an unreadable cached file
        raise PretrainedWeightsError(f"the official weights {WEIGHT_FILES[key]} are corrupted "
                                     f"({' '.join(str(e).split())[:200]}); delete {cached} if "
                                     f"it exists and try again") from None


# ---------------------------------------------------------------------------- state dicts

def load_official_state_dict(model: nn.Module, state_dict: dict, source: str, name: str) -> None:
    """Load ``state_dict`` strictly; a mismatch is a one-line :class:`CheckpointError` naming
    the first missing / unexpected keys or shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("size mismatch", shapes)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label} key{'s' if len(keys) > 1 else ''}: "
                            f"{', '.join(keys[:3])}{more}")
    if problems:
        raise CheckpointError(f"{source} does not fit model '{name}' (is it the checkpoint "
                              f"of another architecture?): {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint_file(name: str, builder, path, **overrides):
    """``get_model(name, checkpoint=path)`` for the B-cos-v2 models: ``path`` is an official
    ``.pth`` (a plain state dict, read with ``weights_only=True``) or an xai-bench checkpoint
    of this model (restored by :func:`xai_bench.storage.checkpoint_format.restore_model`).
    Returns the model in eval mode with ``checkpoint_info``."""
    from xai_bench.storage.checkpoint_format import (
        FORMAT, check_checkpoint, read_weights_file, restore_model,
    )

    path = Path(path).expanduser()
    data = read_weights_file(path, "download the official weights (see docs/bcos_v2.md) and "
                                   "check the path")
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return restore_model(path, builder, name=name, data=check_checkpoint(data, path),
                             **overrides)
    if not isinstance(data, dict) or not data or \
            not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} is neither an official B-cos-v2 state dict (a dict of "
                              f"tensors) nor an xai-bench checkpoint")
    if overrides.pop("pretrained", False):
        raise ValueError("pass either pretrained=True or checkpoint=PATH, not both")
    model = builder(**overrides)
    load_official_state_dict(model, data, f"checkpoint {path}", name)
    model.name = name
    model.checkpoint_info = {"format": "bcos-v2-state-dict", "model": name, "path": str(path)}
    return model.eval()
