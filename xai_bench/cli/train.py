"""``xai-bench train`` (a checkpoint of a model on a data set) and ``xai-bench info`` (what a
checkpoint holds)."""

from __future__ import annotations

import time

import click

from xai_bench.cli.common import UsageError, friendly_errors, parse_key_values
from xai_bench.registry import MODELS
from xai_bench.training.defaults import DEFAULT_DATASET

__all__ = ["train", "info"]


def _num_parameters(model) -> int:
    from xai_bench.contracts.model import parameter_count

    return parameter_count(model)


@click.command()
@click.argument("model")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True,
              help="data-set spec (see `xai-bench list datasets`)")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="checkpoint file to write (atomically)")
@click.option("--recipe", default=None, help="a preset: {bcos,conventional}-{quick,paper,"
              "cifar10-cpu,cifar10-gpu} (default: by model family and data set)")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--limit-train", type=click.IntRange(min=1), default=None,
              help="use only the first N training images")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="constructor argument of the model, e.g. position=additive (repeatable)")
@click.option("--backbone-checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="DenseNet-121 state dict for the backbone of a paper model "
              "(bcos_vit_*_{13,38,87}, vit_*_{13,38,87})")
@click.option("--finetune-backbone", is_flag=True,
              help="train the backbone of a paper model too (default: frozen)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@friendly_errors
def train(model, dataset, out, recipe, epochs, batch_size, lr, seed, device, limit_train,
          model_args, quiet, backbone_checkpoint=None, finetune_backbone=False):
    """Train MODEL on a data set and save a checkpoint (weights + metadata).

    The checkpoint restores with ``xai_bench.get_model(MODEL, checkpoint=OUT)`` or
    ``xai-bench run --checkpoint MODEL=OUT``.

    \b
    Examples:
      xai-bench train bcos_vit_nano --dataset shapes --epochs 8 --out bcos.pt
      xai-bench train bcos_vit_nano --model-arg position=additive --out additive.pt
      xai-bench train vit_nano --dataset cifar10:./cifar10-jpeg.tar.gz --out vit.pt
      xai-bench train vit_s_38 --dataset imagefolder:./imagenet --backbone-checkpoint \
        densenet121.pth --out vit_s_38.pt
    """
    from xai_bench.data import get_dataset
    from xai_bench.errors import OutputError
    from xai_bench.run.resolve import resolve_device
    from xai_bench.training import check_output_file, default_recipe, get_recipe, \
        train_and_save

    kwargs = parse_key_values(model_args)
    device = resolve_device(device)
    MODELS.get(model)  # unknown names fail before any data is loaded
    if backbone_checkpoint is not None or finetune_backbone:
        from xai_bench.models.paper import PAPER_MODELS

        if model not in PAPER_MODELS:
            raise UsageError(f"--backbone-checkpoint and --finetune-backbone apply to the "
                             f"DenseNet-121 paper models (bcos_vit_*_{{13,38,87}}, "
                             f"vit_*_{{13,38,87}}), not '{model}'")
        if backbone_checkpoint is not None:
            kwargs["backbone_checkpoint"] = backbone_checkpoint
        if finetune_backbone:
            kwargs["finetune_backbone"] = True
    if recipe is not None:
        rec = get_recipe(recipe)
    try:
        check_output_file(out)  # an unwritable --out fails now, not after training
    except OutputError as e:
        raise UsageError(str(e)) from None
    train_set = get_dataset(dataset, "train")
    test_set = get_dataset(dataset, "test")
    kwargs.setdefault("num_classes", train_set.num_classes)
    kwargs.setdefault("image_size", train_set.image_size[0])
    try:
        from xai_bench.loading import get_model

        net = get_model(model, **kwargs)
    except TypeError as e:
        raise UsageError(f"bad --model-arg for '{model}': {' '.join(str(e).split())}") from None
    if recipe is None:
        recipe, rec = default_recipe(net, dataset)
    rec = rec.replace(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    n_train = len(train_set) if limit_train is None else min(limit_train, len(train_set))
    click.echo(f"training {model} ({_num_parameters(net):,} parameters) on {dataset} "
               f"({n_train} images) with {recipe}: {rec.epochs} epochs, batch "
               f"{rec.batch_size}, lr {rec.lr:g}, {rec.loss.upper()}, device {device}")
    del net
    started = time.perf_counter()
    try:
        trained = train_and_save(model, dataset, out, recipe=rec, recipe_name=recipe,
                                 model_kwargs=kwargs, device=device, progress=not quiet,
                                 limit_train=limit_train, train_set=train_set,
                                 test_set=test_set)
    except FloatingPointError as e:  # TrainingError: the loss diverged
        raise UsageError(str(e)) from None
    except OutputError as e:
        raise UsageError(str(e)) from None
    result = trained.result
    click.echo(f"test accuracy {result.accuracy:.4f}  train time {result.train_time_s:.1f} s "
               f"({result.images_per_s:.0f} img/s)  wall time "
               f"{time.perf_counter() - started:.1f} s  -> {trained.path}")


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--evaluate", "evaluate_on", default=None, metavar="DATASET",
              help="also measure the test accuracy on this data-set spec")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@friendly_errors
def info(checkpoint, evaluate_on, device):
    """Show what a checkpoint holds (model, data set, recipe, metrics, provenance).

    \b
    Examples:
      xai-bench info bcos.pt
      xai-bench info bcos.pt --evaluate shapes
    """
    from xai_bench.loading import load_model_from_checkpoint

    model = load_model_from_checkpoint(checkpoint)
    meta = model.checkpoint_info
    prov = meta.get("provenance") or {}
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if k != "history"}
    config = ", ".join(f"{k}={v}" for k, v in meta["model_config"].items())
    recipe = ", ".join(f"{k}={v}" for k, v in (meta.get("recipe") or {}).items())
    rows = [("model", f"{meta['model']} ({_num_parameters(model):,} parameters)"),
            ("config", config), ("dataset", meta.get("dataset")),
            ("recipe", f"{meta.get('recipe_name') or ''} {recipe}".strip()),
            ("metrics", ", ".join(f"{k}={v}" for k, v in metrics.items())),
            ("trained", f"{prov.get('timestamp_utc')} on {prov.get('device')} "
                        f"({prov.get('device_name')}), xai_bench {prov.get('xai_bench')}, "
                        f"torch {prov.get('torch')}, git {prov.get('git_sha')}")]
    for key, value in rows:
        click.echo(f"{key:9s} {value}")
    if evaluate_on:
        from xai_bench.data import get_dataset
        from xai_bench.compute.inference import predict
        from xai_bench.run.resolve import resolve_device

        device = resolve_device(device)
        # at the model's input size (image data sets are resized and cropped to it)
        data = get_dataset(evaluate_on, "test", image_size=getattr(model, "image_size", None))
        acc = predict(model.to(device), data, device=device).accuracy  # DataError: one line
        click.echo(f"{'accuracy':9s} {acc:.4f} on {evaluate_on} (test split)")
