import contextlib
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from xai_bench.data import SyntheticShapes


@pytest.fixture(scope="session")
def shapes_small():
    """A small train/test split of the embedded data (fast to generate)."""
    return (SyntheticShapes("train", n=600, seed=0), SyntheticShapes("test", n=200, seed=0))


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` imported as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: faster, and on a shared 2-core machine
    two threads per process oversubscribe the cores (measured: 20x slower training). Use it as
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def raise_above(limit: int, error=OOM):
    """A function of the chunk's size that raises ``error`` above ``limit`` items."""
    def check(n: int):
        if n > limit:
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                        "capacity of 79.10 GiB of which 1.00 GiB is free.")
    return check


def model_raising_above(model, limit: int, monkeypatch, error=OOM):
    """Patch ``model.forward`` to raise ``error`` for batches of more than ``limit`` inputs;
    returns the list of batch sizes it was called with."""
    original, calls, check = model.forward, [], raise_above(limit, error)

    def forward(x):
        calls.append(x.shape[0])
        check(x.shape[0])
        return original(x)

    monkeypatch.setattr(model, "forward", forward)
    return calls


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TINY = dict(embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16))


@pytest.fixture(scope="session")
def trained_pair(shapes_small):
    """A quickly trained tiny B-cos ViT and conventional twin (session-scoped: ~15 s); good
    enough that every class has correctly classified test images (the grid pointing game
    needs four)."""
    import xai_bench
    from xai_bench.training import default_recipe, train_model

    train_set, test_set = SyntheticShapes("train", n=2000, seed=0), shapes_small[1]
    models = {}
    for name in ("bcos_vit_nano", "vit_nano"):
        torch.manual_seed(0)
        model = xai_bench.get_model(name, **TINY)
        _, recipe = default_recipe(model, "shapes")
        recipe.epochs, recipe.lr = 5, 3e-3
        train_model(model, train_set, test_set, recipe, progress=False)
        models[name] = model.eval()
    return models


# ---- a tiny fake model with the explainable-model interface ---------------------------------

TINY_MODEL = "_test_tiny_linear"


class TinyLinear(nn.Module):
    """Average-pool to ``pool``×``pool`` and one linear layer: trains in a second, has the
    attributes of the explainable-model interface (``loss="bce"`` makes it B-cos-like)."""

    in_channels = 3
    pooling = "mean"

    def __init__(self, num_classes: int = 10, image_size=32, pool: int = 8, loss: str = "ce"):
        super().__init__()
        side = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
        self.config = dict(num_classes=num_classes, image_size=side, pool=pool, loss=loss)
        self.image_size = (side, side)
        self.num_classes = num_classes
        self.training_loss = loss
        self.family = "bcos" if loss == "bce" else "conventional"
        self.logit_bias = math.log(1 / (num_classes - 1)) if loss == "bce" else 0.0
        self.is_dynamic_linear = False
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.linear = nn.Linear(3 * pool * pool, num_classes)

    def encode(self, images):
        return (images - 0.5) / 0.25

    def forward(self, x):
        return self.linear(self.pool(x).flatten(1)) + self.logit_bias

    def explanation_mode(self):
        return contextlib.nullcontext()

    def confidence(self, logits):
        return logits.sigmoid() if self.training_loss == "bce" else logits.softmax(-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_tiny_linear(**kwargs):
    return TinyLinear(**kwargs)


@pytest.fixture(scope="module")
def tiny_model():
    """Registers :class:`TinyLinear` as ``_test_tiny_linear`` for the module's tests (and
    removes it afterwards, so that other test modules see the real registry)."""
    import xai_bench

    added = TINY_MODEL not in xai_bench.MODELS
    if added:
        xai_bench.MODELS.add(TINY_MODEL, build_tiny_linear, family="test",
                             description="test model: pool + linear")
    yield TINY_MODEL
    if added:
        xai_bench.MODELS.unregister(TINY_MODEL)


class ItemsOnly(torch.utils.data.Dataset):
    """The items of ``base`` without its in-memory tensors, so loaders take the
    ``dataset[i]`` / DataLoader path."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


@pytest.fixture(scope="module")
def pair_checkpoints(trained_pair, tmp_path_factory):
    """The trained pair saved as xai-bench checkpoints: ``{name: path}``."""
    from xai_bench.storage.checkpoint import save_checkpoint
    from xai_bench.training import RECIPES

    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, model in trained_pair.items():
        recipe = RECIPES["bcos-quick" if name.startswith("bcos") else "conventional-quick"]
        paths[name] = str(save_checkpoint(root / f"{name}.pt", model, name, "shapes", recipe,
                                          {"test_accuracy": 0.0}))
    return paths


class SelfLabelled(torch.utils.data.Dataset):
    """Random images labelled with a (possibly untrained) model's own predictions: every image
    is then correctly classified, so a metric's image selection needs no trained model."""

    def __init__(self, model, n: int = 12, seed: int = 0):
        self.images = torch.rand(n, 3, *model.image_size,
                                 generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            self.labels = model(model.encode(self.images)).argmax(1)
        self.name = "self_labelled"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def tiny_bcos_batch():
    """An untrained tiny B-cos ViT (6-channel input, seeded), 3 random images encoded for it
    and their targets: the shared inputs of the metric tests against Quantus and captum."""
    import xai_bench

    torch.manual_seed(0)
    model = xai_bench.get_model("bcos_vit_nano", **TINY).eval()
    images = torch.rand(3, 3, *model.image_size, generator=torch.Generator().manual_seed(1))
    return model, model.encode(images), torch.tensor([0, 3, 7])



def headless_browser() -> str:
    """The path of a headless Chromium for the report tests; skip without one, except where
    CI installs it (``XAI_BENCH_REQUIRE_BROWSER``): a skip there is a fault."""
    import os
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    reason = "no headless Chromium (install Debian's chromium package) to render the report"
    if os.environ.get("XAI_BENCH_REQUIRE_BROWSER"):
        pytest.fail(reason + "; XAI_BENCH_REQUIRE_BROWSER is set")
    pytest.skip(reason)
