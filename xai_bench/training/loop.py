"""The training loop: :func:`train_model` (returns a :class:`TrainResult`), the losses
(:func:`loss_fn`), the learning-rate schedule (:func:`lr_factor`) and the optimizer
(:func:`make_optimizer`).

Batches come from the in-memory tensors of a data set when it has them, else through a
``DataLoader`` with worker processes (:func:`xai_bench.data.iter_batches`); the test accuracy
is one :func:`xai_bench.compute.inference.predict` pass.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from xai_bench.data import DataError, iter_batches
from xai_bench.data.augment import mosaic_batch, train_augmentation
from xai_bench.errors import ConfigError, TrainingError
from xai_bench.training.recipes import LOSSES, Recipe
from xai_bench.compute.seeding import cpu_generator

__all__ = ["TrainResult", "loss_fn", "lr_factor", "make_optimizer", "train_model"]


@dataclass
class TrainResult:
    accuracy: float
    train_time_s: float
    eval_time_s: float
    images_per_s: float
    epochs: int
    steps: int
    history: list
    train_images: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def loss_fn(kind: str, logits: torch.Tensor, targets: torch.Tensor,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """``bce``: binary cross-entropy of every logit against one-hot targets (mean over batch
    and classes; the B-cos recipe); ``ce``: softmax cross-entropy. ``targets``: class indices
    ``(B,)`` or per-class counts ``(B, C)`` (mosaics: every present class is positive for
    ``bce``; ``ce`` takes the classes' shares as a target distribution)."""
    if kind not in LOSSES:
        raise ConfigError(f"unknown loss '{kind}'; use bce or ce")
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


def make_optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    """Adam or AdamW (``recipe.optimizer``) over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(recipe.optimizer)
    if cls is None:
        raise ConfigError(f"unknown optimizer '{recipe.optimizer}'; use adam or adamw")
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train_model(model, train_set, test_set, recipe: Recipe, device: str = "cpu",
                progress: bool = True, max_steps: int | None = None,
                limit_train: int | None = None) -> TrainResult:
    """Train ``model`` in place with ``recipe`` and return its test accuracy and timings.

    ``limit_train`` uses only the first N training images; ``max_steps`` stops early (the
    schedule is laid out over the shorter run). Augmentation is applied to the float RGB batch
    before ``model.encode``. Deterministic for a given ``recipe.seed`` on CPU. A diverging
    loss raises :class:`~xai_bench.errors.TrainingError` (a ``FloatingPointError``)."""
    from xai_bench.compute.inference import predict

    recipe.validate()
    torch.manual_seed(recipe.seed)
    gen = cpu_generator(recipe.seed)
    model.to(device).train()
    n = len(train_set) if limit_train is None else min(int(limit_train), len(train_set))
    if n < 1:
        raise DataError("the training set is empty")
    batch_size = min(recipe.batch_size, n)
    steps_per_epoch = max(1, n // batch_size)  # the last incomplete batch is dropped
    total = steps_per_epoch * recipe.epochs
    if max_steps is not None:
        total = max(1, min(total, int(max_steps)))
    opt = make_optimizer(model, recipe)
    augment = train_augmentation(model.image_size, recipe.augmentation)
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
                    raise TrainingError(f"training diverged at step {step} (loss "
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
    acc = predict(model, test_set, batch_size=max(256, batch_size), device=device,
                  cache=False).accuracy
    return TrainResult(accuracy=acc, train_time_s=train_time,
                       eval_time_s=time.perf_counter() - t,
                       images_per_s=seen / max(train_time, 1e-9), epochs=len(history),
                       steps=step, history=history, train_images=n)


def _bar(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False,
                disable=not enabled or not sys.stderr.isatty())
