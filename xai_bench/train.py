"""Training recipes (no pretrained weights are reachable offline).

As in the paper: B-cos models train with binary cross-entropy on one-hot targets (sigmoid
outputs) and Adam, conventional ones with softmax cross-entropy and AdamW; RandAugment for
natural images. The quick recipes train the default small pair on the embedded ``shapes``
data in minutes on two CPU cores.

Public API: :class:`Recipe`, :data:`RECIPES`, :func:`default_recipe`, :func:`train_model`
(returns a :class:`TrainResult`), :func:`evaluate` / :func:`predict`, and the default-model
cache :func:`cached_default_model`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from xai_bench.data import load_batch
from xai_bench.data.augment import mosaic_batch, train_augmentation

LOSSES = ("bce", "ce")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AUGMENTATIONS = ("shapes", "randaugment", "none")


@dataclass
class Recipe:
    """Everything that decides a training run (besides the model and the data)."""

    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"        # adam | adamw
    loss: str = "bce"              # bce (one-hot targets, sigmoid) | ce (softmax)
    schedule: str = "cosine"       # cosine (after a linear warm-up) | step | constant
    warmup_epochs: float = 1.0     # linear warm-up (any schedule)
    milestones: list = field(default_factory=lambda: [0.6])  # step: fractions of training
    gamma: float = 0.1             # step: factor at each milestone
    augmentation: str = "shapes"   # shapes | randaugment | none
    label_smoothing: float = 0.0
    mosaic: float = 0.0            # fraction of each batch replaced by 2x2 mosaics (multi-label)
    grad_clip: float | None = None  # max gradient norm
    seed: int = 0

    def __post_init__(self):
        self.milestones = [float(m) for m in self.milestones]
        self.validate()

    def validate(self) -> "Recipe":
        """Raise ``ValueError`` (one line) for a recipe that cannot train."""
        for name, allowed in (("loss", LOSSES), ("optimizer", OPTIMIZERS),
                              ("schedule", SCHEDULES), ("augmentation", AUGMENTATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} '{getattr(self, name)}' in the recipe; use "
                                 f"one of {', '.join(allowed)}")
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and "
                             f"{self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("lr must be > 0, weight_decay and warmup_epochs >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.mosaic <= 1:
            raise ValueError(f"mosaic must be a fraction in [0, 1], got {self.mosaic}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown recipe fields: {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (``None`` values are ignored)."""
        return Recipe.from_dict({**self.to_dict(),
                                 **{k: v for k, v in changes.items() if v is not None}})


RECIPES = {
    # the default small pair on the embedded shapes data (minutes on 2 CPU cores)
    # A quarter of each batch is 2x2 mosaics (multi-label), so that the grid pointing game's
    # half-size objects are recognised at all (a deviation from the paper's ImageNet recipe,
    # where objects come at every scale; recorded with the recipe).
    "bcos-quick": Recipe(epochs=4, mosaic=0.25),  # B-cos converges in fewer epochs
    "conventional-quick": Recipe(optimizer="adamw", weight_decay=1e-4, loss="ce", mosaic=0.25),
    # the paper's recipe (RandAugment, 100 epochs, lr x0.1 after 60)
    "bcos-paper": Recipe(epochs=100, batch_size=256, schedule="step", milestones=[0.6],
                         warmup_epochs=0, augmentation="randaugment"),
    "conventional-paper": Recipe(epochs=100, batch_size=1024, optimizer="adamw",
                                 weight_decay=1e-4, loss="ce", schedule="step",
                                 milestones=[0.6], warmup_epochs=0, augmentation="randaugment"),
}


def get_recipe(name: str) -> Recipe:
    """A fresh copy of preset ``name`` (``ValueError`` naming the presets if unknown)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}'; use one of {', '.join(RECIPES)}")
    return Recipe.from_dict(RECIPES[name].to_dict())


def default_recipe(model, dataset_spec: str) -> tuple[str, Recipe]:
    """``(name, recipe)``: the quick recipe of the model's family on the embedded shapes data,
    the paper-style one elsewhere (a fresh copy: change its epochs freely)."""
    family = "bcos" if getattr(model, "training_loss", "ce") == "bce" else "conventional"
    kind = str(dataset_spec).split(":")[0].strip().lower()
    speed = "quick" if kind in ("shapes", "synthetic") else "paper"
    name = f"{family}-{speed}"
    return name, get_recipe(name)


@dataclass
class TrainResult:
    accuracy: float
    train_time_s: float
    eval_time_s: float
    images_per_s: float
    epochs: int
    steps: int
    history: list

    def to_dict(self) -> dict:
        return asdict(self)


def loss_fn(kind: str, logits: torch.Tensor, targets: torch.Tensor,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """``bce``: binary cross-entropy of every logit against one-hot targets (mean over batch
    and classes; the B-cos recipe); ``ce``: softmax cross-entropy. ``targets``: class indices
    ``(B,)`` or per-class counts ``(B, C)`` (mosaics: every present class is positive for
    ``bce``; ``ce`` takes the classes' shares as a target distribution)."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss '{kind}'; use bce or ce")
    if targets.dim() == 1:
        targets = F.one_hot(targets, logits.shape[1])
    targets = targets.to(logits.dtype)
    if kind == "bce":
        positive = (targets > 0).to(logits.dtype)
        if label_smoothing:
            positive = positive * (1 - label_smoothing) + label_smoothing / logits.shape[1]
        return F.binary_cross_entropy_with_logits(logits, positive)
    shares = targets / targets.sum(1, keepdim=True)
    return F.cross_entropy(logits, shares, label_smoothing=label_smoothing)


def lr_factor(recipe: Recipe, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of ``recipe.lr`` at optimisation ``step`` (0-based) of ``total``."""
    warm = int(round(recipe.warmup_epochs * steps_per_epoch))
    warm = min(warm, max(0, total - 1))
    if step < warm:
        return (step + 1) / warm
    if recipe.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if recipe.schedule == "step":
        return recipe.gamma ** sum(step >= m * total for m in recipe.milestones)
    return 1.0


def _optimizer(model, recipe: Recipe):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(recipe.optimizer)
    if cls is None:
        raise ValueError(f"unknown optimizer '{recipe.optimizer}'; use adam or adamw")
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _in_memory(dataset) -> bool:
    base = dataset
    while isinstance(base, torch.utils.data.Subset):
        base = base.dataset
    return isinstance(getattr(base, "images", None), torch.Tensor) and \
        isinstance(getattr(base, "labels", None), torch.Tensor)


def iter_batches(dataset, batches, num_workers: int | None = None):
    """Yield ``(float images, labels)`` for each index tensor in ``batches``: by tensor
    indexing for in-memory data sets, else through a ``DataLoader`` (worker processes)."""
    batches = [torch.as_tensor(b, dtype=torch.long) for b in batches]
    if _in_memory(dataset):
        for idx in batches:
            yield load_batch(dataset, idx)
        return
    if num_workers is None:
        num_workers = min(8, (os.cpu_count() or 1) - 1) if (os.cpu_count() or 1) > 2 else 0
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[b.tolist() for b in batches],
                                         num_workers=num_workers,
                                         pin_memory=torch.cuda.is_available())
    for images, labels in loader:
        yield images.float(), torch.as_tensor(labels, dtype=torch.long)


def _num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def train_model(model, train_set, test_set, recipe: Recipe, device: str = "cpu",
                progress: bool = True, max_steps: int | None = None,
                limit_train: int | None = None) -> TrainResult:
    """Train ``model`` in place with ``recipe`` and return its test accuracy and timings.

    ``limit_train`` uses only the first N training images; ``max_steps`` stops early (the
    schedule is laid out over the shorter run). Augmentation is applied to the float RGB batch
    before ``model.encode``. Deterministic for a given ``recipe.seed`` on CPU."""
    recipe.validate()
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    model.to(device).train()
    n = len(train_set) if limit_train is None else min(int(limit_train), len(train_set))
    if n < 1:
        raise ValueError("the training set is empty")
    batch_size = min(recipe.batch_size, n)
    steps_per_epoch = max(1, n // batch_size)  # the last incomplete batch is dropped
    total = steps_per_epoch * recipe.epochs
    if max_steps is not None:
        total = max(1, min(total, int(max_steps)))
    opt = _optimizer(model, recipe)
    augment = train_augmentation(getattr(model, "image_size", None), recipe.augmentation)
    history, step, seen = [], 0, 0
    bar = _bar(total, progress)
    start = time.perf_counter()
    try:
        while step < total:
            epoch_start, losses, correct, count = time.perf_counter(), [], 0, 0
            order = torch.randperm(n, generator=gen)
            todo = min(steps_per_epoch, total - step)
            chunks = [order[i * batch_size:(i + 1) * batch_size] for i in range(todo)]
            for images, labels in iter_batches(train_set, chunks):
                images, labels = images.to(device), labels.to(device)
                if recipe.augmentation != "none":
                    images = augment(images, generator=gen)
                targets, plain = labels, slice(None)
                if recipe.mosaic:
                    images, targets = mosaic_batch(images, labels, model.num_classes,
                                                   recipe.mosaic, generator=gen)
                    plain = targets.sum(1) == 1  # mosaics count four cells
                logits = model(model.encode(images))
                loss = loss_fn(recipe.loss, logits, targets, recipe.label_smoothing)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training diverged at step {step} (loss "
                                             f"{loss.item()}); lower the learning rate")
                lr = recipe.lr * lr_factor(recipe, step, total, steps_per_epoch)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                opt.step()
                step, seen = step + 1, seen + len(labels)
                losses.append(loss.item())
                # training accuracy on the plain (non-mosaic) images
                correct += (logits.detach()[plain].argmax(1) == labels[plain]).sum().item()
                count += len(labels[plain])
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}",
                                img_s=f"{seen / (time.perf_counter() - start):.0f}")
            history.append(dict(epoch=len(history) + 1, steps=len(losses),
                                loss=sum(losses) / max(1, len(losses)),
                                train_accuracy=correct / max(1, count), lr=lr,
                                time_s=round(time.perf_counter() - epoch_start, 3)))
    finally:
        bar.close()
        opt.zero_grad(set_to_none=True)  # leave no gradients on the model
    train_time = time.perf_counter() - start
    t = time.perf_counter()
    acc = evaluate(model, test_set, batch_size=max(256, batch_size), device=device)
    return TrainResult(accuracy=acc, train_time_s=train_time,
                       eval_time_s=time.perf_counter() - t,
                       images_per_s=seen / max(train_time, 1e-9), epochs=len(history),
                       steps=step, history=history)


@torch.no_grad()
def predict(model, dataset, batch_size: int = 256, device: str = "cpu"):
    """Logits of the whole data set (eval mode), batched; returns (logits, labels) on CPU."""
    was_training = model.training
    model.eval()
    out, labels = [], []
    chunks = [torch.arange(s, min(s + batch_size, len(dataset)))
              for s in range(0, len(dataset), batch_size)]
    try:
        for images, y in iter_batches(dataset, chunks):
            out.append(model(model.encode(images.to(device))).float().cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("cannot evaluate on an empty data set")
    return torch.cat(out), torch.cat(labels)


def evaluate(model, dataset, batch_size: int = 256, device: str = "cpu") -> float:
    """Top-1 accuracy on ``dataset`` (eval mode, no gradients)."""
    logits, labels = predict(model, dataset, batch_size, device)
    return (logits.argmax(1) == labels).float().mean().item()


def _bar(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False,
                disable=not enabled or not sys.stderr.isatty())


# ---- the default-model cache ----------------------------------------------------------------

def model_cache_dir(cache_dir=None) -> Path:
    """``cache_dir`` if given, else ``$XAI_BENCH_CACHE/models``, else
    ``~/.cache/xai_bench/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("XAI_BENCH_CACHE")
    root = Path(root).expanduser() if root else Path.home() / ".cache" / "xai_bench"
    return root / "models"


def cache_key(name: str, config: dict, dataset_spec: str, recipe: Recipe) -> str:
    """Short hash of everything that decides the trained weights."""
    import xai_bench

    payload = json.dumps(dict(model=name, config=config, dataset=dataset_spec,
                              recipe=recipe.to_dict(), version=xai_bench.__version__),
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_path(name: str, config: dict, dataset_spec: str, recipe: Recipe,
               cache_dir=None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(dataset_spec))
    return model_cache_dir(cache_dir) / \
        f"{name}-{safe}-{cache_key(name, config, dataset_spec, recipe)}.pt"


def seeded_model(name: str, seed: int, **kwargs):
    """``get_model(name, **kwargs)`` with its random initialisation drawn from ``seed`` (the
    recipe's), so that a recipe trains the same model whatever ran before in the process."""
    import xai_bench

    torch.manual_seed(int(seed))
    return xai_bench.get_model(name, **kwargs)


def cached_default_model(name: str, dataset_spec: str = "shapes", recipe: Recipe | None = None,
                         epochs: int | None = None, cache_dir=None, progress: bool = True,
                         log=None, device: str = "cpu", **model_kwargs):
    """``(model, info)``: model ``name`` trained on ``dataset_spec`` with its default recipe
    (or ``recipe``; ``epochs`` overrides its epochs). Trained on first use and saved in the
    cache (file keyed by model, config, data set, recipe and xai_bench version), loaded from
    there afterwards. ``info`` has ``checkpoint``, ``cached`` and the stored metrics. The model
    is returned on the CPU in eval mode."""
    import xai_bench
    from xai_bench.checkpoint import load_checkpoint, load_model_from_checkpoint, \
        save_checkpoint
    from xai_bench.data import get_dataset

    model = xai_bench.get_model(name, **model_kwargs)
    recipe_name, default = default_recipe(model, dataset_spec)
    if recipe is None:
        recipe = default
    else:
        recipe_name = "custom"
    if epochs is not None:
        recipe = recipe.replace(epochs=int(epochs))
    path = cache_path(name, model.config, dataset_spec, recipe, cache_dir)
    if path.exists():
        model = load_model_from_checkpoint(path, name=name)
        return model, {"checkpoint": str(path), "cached": True,
                       **model.checkpoint_info.get("metrics", {})}
    if log:
        log(f"training {name} on {dataset_spec} ({recipe_name}, {recipe.epochs} epochs) on "
            f"{device}; cached at {path} for later runs")
    model = seeded_model(name, recipe.seed, **model_kwargs)  # the key promises one model
    train_set, test_set = get_dataset(dataset_spec, "train"), get_dataset(dataset_spec, "test")
    result = train_model(model, train_set, test_set, recipe, device=device, progress=progress)
    metrics = {"test_accuracy": result.accuracy, "train_time_s": round(result.train_time_s, 2),
               "images_per_s": round(result.images_per_s, 1), "epochs": result.epochs,
               "steps": result.steps}
    save_checkpoint(path, model.cpu().eval(), name, dataset_spec, recipe, metrics,
                    extra={"recipe_name": recipe_name}, classes=getattr(test_set, "classes", None),
                    device=device)
    model.name = name
    model.checkpoint_info = {k: v for k, v in load_checkpoint(path).items() if k != "state_dict"}
    return model, {"checkpoint": str(path), "cached": False, **metrics}
