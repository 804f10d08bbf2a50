"""Training recipes (no pretrained weights are reachable offline).

As in the paper: B-cos models train with binary cross-entropy on one-hot targets (sigmoid
outputs) and Adam, conventional ones with softmax cross-entropy and AdamW; RandAugment for
natural images. The quick recipes train the default small pair on the embedded ``shapes``
data in minutes on two CPU cores.
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
from xai_bench.data.augment import train_augmentation


@dataclass
class Recipe:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"        # adam | adamw
    loss: str = "bce"              # bce (one-hot targets, sigmoid) | ce (softmax)
    schedule: str = "cosine"       # cosine (linear warm-up) | step | constant
    warmup_epochs: float = 1.0
    milestones: list = field(default_factory=lambda: [0.6])  # step: fractions of training
    augmentation: str = "shapes"   # shapes | randaugment | none
    grad_clip: float | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown recipe fields: {', '.join(sorted(unknown))}")
        return cls(**d)


RECIPES = {
    "bcos-quick": Recipe(),
    "conventional-quick": Recipe(optimizer="adamw", weight_decay=1e-4, loss="ce"),
    "bcos-paper": Recipe(epochs=100, batch_size=256, schedule="step", milestones=[0.6],
                         warmup_epochs=0, augmentation="randaugment"),
    "conventional-paper": Recipe(epochs=100, batch_size=1024, optimizer="adamw",
                                 weight_decay=1e-4, loss="ce", schedule="step",
                                 milestones=[0.6], warmup_epochs=0, augmentation="randaugment"),
}


def default_recipe(model, dataset_spec: str) -> tuple[str, Recipe]:
    """Quick recipes on the embedded shapes data, paper-style ones elsewhere."""
    family = "bcos" if model.training_loss == "bce" else "conventional"
    speed = "quick" if dataset_spec.split(":")[0] in ("shapes", "synthetic") else "paper"
    name = f"{family}-{speed}"
    return name, Recipe.from_dict(RECIPES[name].to_dict())


@dataclass
class TrainResult:
    accuracy: float
    train_time_s: float
    eval_time_s: float
    images_per_s: float
    epochs: int
    steps: int
    history: list


def loss_fn(kind: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if kind == "bce":
        onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, onehot)
    if kind == "ce":
        return F.cross_entropy(logits, targets)
    raise ValueError(f"unknown loss '{kind}'; use bce or ce")


def lr_factor(recipe: Recipe, step: int, total: int, steps_per_epoch: int) -> float:
    warm = int(recipe.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if recipe.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if recipe.schedule == "step":
        return 0.1 ** sum(step >= m * total for m in recipe.milestones)
    return 1.0


def _optimizer(model, recipe: Recipe):
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer '{recipe.optimizer}'; use adam or adamw")


def train_model(model, train_set, test_set, recipe: Recipe, device: str = "cpu",
                progress: bool = True, limit_train: int | None = None,
                max_steps: int | None = None) -> TrainResult:
    """Train ``model`` in place and return its test accuracy and timings."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    model.to(device).train()
    n = len(train_set) if limit_train is None else min(limit_train, len(train_set))
    steps_per_epoch = max(1, n // recipe.batch_size)
    total = steps_per_epoch * recipe.epochs if max_steps is None else max_steps
    opt = _optimizer(model, recipe)
    augment = train_augmentation(recipe.augmentation)
    history, step, seen = [], 0, 0
    bar = _bar(total, progress)
    start = time.time()
    while step < total:
        epoch_start, losses = time.time(), []
        order = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            images, labels = load_batch(train_set, idx)
            images = augment(images.to(device), generator=gen)
            logits = model(model.encode(images))
            loss = loss_fn(recipe.loss, logits, labels.to(device))
            for group in opt.param_groups:
                group["lr"] = recipe.lr * lr_factor(recipe, step, total, steps_per_epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            step, seen = step + 1, seen + len(idx)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            img_s=f"{seen / (time.time() - start):.0f}")
        history.append(dict(epoch=len(history) + 1, loss=sum(losses) / max(1, len(losses)),
                            lr=opt.param_groups[0]["lr"], time_s=time.time() - epoch_start))
    bar.close()
    train_time = time.time() - start
    t = time.time()
    acc = evaluate(model, test_set, device=device)
    return TrainResult(accuracy=acc, train_time_s=train_time, eval_time_s=time.time() - t,
                       images_per_s=seen / max(train_time, 1e-9), epochs=len(history),
                       steps=step, history=history)


@torch.no_grad()
def predict(model, dataset, batch_size: int = 256, device: str = "cpu"):
    """Logits of the whole data set (eval mode), batched; returns (logits, labels) on CPU."""
    was_training = model.training
    model.eval()
    out, labels = [], []
    for start in range(0, len(dataset), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(dataset)))
        images, y = load_batch(dataset, idx)
        out.append(model(model.encode(images.to(device))).float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(out), torch.cat(labels)


def evaluate(model, dataset, batch_size: int = 256, device: str = "cpu") -> float:
    """Top-1 accuracy on ``dataset``."""
    logits, labels = predict(model, dataset, batch_size, device)
    return (logits.argmax(1) == labels).float().mean().item()


def _bar(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False,
                disable=not enabled or not sys.stderr.isatty())


# ---- the default-model cache ----------------------------------------------------------------

def model_cache_dir(cache_dir=None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("XAI_BENCH_CACHE",
                               Path.home() / ".cache" / "xai_bench")) / "models"


def cache_key(name: str, config: dict, dataset_spec: str, recipe: Recipe) -> str:
    import xai_bench

    payload = json.dumps(dict(model=name, config=config, dataset=dataset_spec,
                              recipe=recipe.to_dict(), version=xai_bench.__version__),
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cached_default_model(name: str, dataset_spec: str = "shapes", recipe: Recipe | None = None,
                         epochs: int | None = None, cache_dir=None, progress: bool = True,
                         log=None):
    """The model ``name`` trained on ``dataset_spec`` with its default recipe: trained on first
    use, then loaded from the cache (keyed by model, config, data set, recipe and version)."""
    import xai_bench
    from xai_bench.checkpoint import load_model_from_checkpoint, save_checkpoint
    from xai_bench.data import get_dataset

    model = xai_bench.get_model(name)
    recipe_name, default = default_recipe(model, dataset_spec)
    recipe = recipe or default
    if epochs is not None:
        recipe = Recipe.from_dict({**recipe.to_dict(), "epochs": int(epochs)})
    path = model_cache_dir(cache_dir) / f"{name}-{dataset_spec.replace(':', '_').replace('/', '_')}" \
        f"-{cache_key(name, model.config, dataset_spec, recipe)}.pt"
    if path.exists():
        model = load_model_from_checkpoint(path, name=name)
        return model, {"checkpoint": str(path), "cached": True,
                       **model.checkpoint_info.get("metrics", {})}
    if log:
        log(f"training {name} on {dataset_spec} ({recipe_name}, {recipe.epochs} epochs); "
            f"cached at {path} for later runs")
    train_set, test_set = get_dataset(dataset_spec, "train"), get_dataset(dataset_spec, "test")
    result = train_model(model, train_set, test_set, recipe, progress=progress)
    metrics = {"test_accuracy": result.accuracy, "train_time_s": round(result.train_time_s, 2),
               "images_per_s": round(result.images_per_s, 1)}
    save_checkpoint(path, model.cpu().eval(), name, dataset_spec, recipe, metrics,
                    classes=getattr(test_set, "classes", None))
    model.checkpoint_info = {"metrics": metrics}
    return model, {"checkpoint": str(path), "cached": False, **metrics}
