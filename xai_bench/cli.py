"""Command line: ``xai-bench list|train|info|run|plot|report|explain``.

Anticipated errors (unknown names, missing data or checkpoints, bad sizes) become a one-line
``Error: ...`` on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import fnmatch
import functools
import sys
import time
from pathlib import Path

import click

import xai_bench

EXIT_USAGE = 2


class UsageError(click.ClickException):
    exit_code = EXIT_USAGE


def friendly_errors(fn):
    """The project's own errors (:class:`~xai_bench.errors.XaiBenchError`) become a one-line
    usage error (exit 2); an interrupted run ends with its one line and 128 + the signal
    number. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from xai_bench.errors import Interrupted, XaiBenchError
        from xai_bench.run.interrupts import SIGNAL_EXIT_CODES, Terminated, terminate_as_interrupt

        try:
            with terminate_as_interrupt():
                return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Interrupted as e:
            click.echo(str(e), err=True)
            sys.exit(SIGNAL_EXIT_CODES.get(getattr(e, "signal_name", "SIGINT"), 130))
        except XaiBenchError as e:
            raise UsageError(str(e)) from None
        except KeyboardInterrupt as e:
            click.echo("interrupted", err=True)
            sys.exit(SIGNAL_EXIT_CODES["SIGTERM" if isinstance(e, Terminated) else "SIGINT"])

    return wrapper


def parse_key_values(items, what="--model-arg", parse: bool = True) -> dict:
    """``key=value`` strings -> dict with int/float/bool/None/tuple/str values (strings only
    with ``parse=False``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} expects key=value, got '{item}'")
        out[key.strip()] = _parse_value(value.strip()) if parse else value.strip()
    return out


def _dotted_params(items, option: str, owner: str, example: str) -> dict:
    """``OWNER.KEY=VALUE`` strings -> ``{owner: {key: value}}`` (values as :func:`_parse_value`)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not name or not param:
            raise UsageError(f"{option} expects {owner}.KEY=VALUE (e.g. {example}), got '{item}'")
        out.setdefault(name, {})[param.strip()] = _parse_value(value.strip())
    return out


def _parse_value(text: str):
    """int, float, bool (true/false), None (none/null), a tuple for comma lists
    (``stem_channels=16,32``), else the string."""
    if "," in text:
        return tuple(_parse_value(part.strip()) for part in text.split(",") if part.strip())
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(xai_bench.__version__, prog_name="xai-bench")
def main():
    """xai-bench: explainability benchmark harness for (B-cos) vision transformers.

    \b
    Examples:
      xai-bench run                               # the quick suite on the embedded data
      xai-bench list models 'bcos_*'
      xai-bench train bcos_vit_nano --dataset shapes --out bcos.pt
      xai-bench plot results/
    """


@main.command("list")
@click.argument("what", type=click.Choice(["models", "methods", "metrics", "datasets"]))
@click.argument("pattern", default="*")
@friendly_errors
def list_cmd(what, pattern):
    """List models, methods or metrics (glob PATTERN) with one sentence each, or data-set
    specs; plugins that fail to load are listed with their distribution and the reason.

    \b
    Example:
      xai-bench list models 'bcos_vit_*'
    """
    if what == "datasets":
        from xai_bench.data import list_datasets

        specs = {s: d for s, d in list_datasets().items() if fnmatch.fnmatchcase(s, pattern)}
        for spec, desc in specs.items():
            click.echo(f"{spec:18s} {desc}")
        if not specs:
            raise UsageError(f"no data-set spec matches '{pattern}'")
        return
    registry = {"models": xai_bench.MODELS, "methods": xai_bench.METHODS,
                "metrics": xai_bench.METRICS}[what]
    names = registry.list(pattern)
    failed = []
    for name in names:
        desc = registry.description(name)
        if name in registry.failures:
            failed.append(name)
            continue
        tags = ", ".join(f"{k}={v}" for k, v in _tags(registry, name).items())
        source = registry.source(name)
        origin = "" if source == "xai-bench" else f" [plugin: {source}]"
        click.echo(f"{name:22s} {tags:40s} {desc}{origin}".rstrip())
    prefixes = {p: d for p, d in registry.prefixes().items()
                if fnmatch.fnmatchcase(f"{p}:", pattern) or pattern in ("*", f"{p}:*")}
    for prefix, desc in prefixes.items():  # resolved on demand, so not listed one by one
        click.echo(f"{prefix + ':<name>':22s} {'(prefix)':40s} {desc}".rstrip())
    if failed:
        click.echo(f"\n{len(failed)} {what[:-1]} plugin(s) failed to load:")
        for name in failed:
            click.echo(f"  {name:20s} {registry.failures[name]}")
    for problem in registry.problems:
        if not any(problem == registry.failures.get(n) for n in failed):
            click.echo(f"warning: {problem}", err=True)
    if not names and not prefixes:
        raise UsageError(f"no {what} match '{pattern}'")


def _tags(registry, name) -> dict:
    """What ``xai-bench list`` shows of an entry besides its description: a method's kind, a
    metric's category and direction (from their declarations), a model's registered facts."""
    if registry.kind == "method":
        card = registry.card(name)
        return {"kind": card.kind, **({"class_agnostic": True} if card.class_agnostic else {})}
    if registry.kind == "metric":
        card = registry.card(name)
        return {"category": card.category, "higher_is_better": card.higher_is_better}
    return {k: v for k, v in registry.meta(name).items()
            if k not in ("description", "source", "paper", "parameters")}


def _num_parameters(model) -> int:
    from xai_bench.contracts.model import parameter_count

    return parameter_count(model)


@main.command()
@click.argument("model")
@click.option("--dataset", default="shapes", show_default=True,
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
    from xai_bench.run.runner import resolve_device
    from xai_bench.training import check_output_file, default_recipe, get_recipe, \
        train_and_save

    kwargs = parse_key_values(model_args)
    device = resolve_device(device)
    xai_bench.MODELS.get(model)  # unknown names fail before any data is loaded
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
        net = xai_bench.get_model(model, **kwargs)
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


@main.command()
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
    from xai_bench.storage.checkpoint import load_model_from_checkpoint

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
        from xai_bench.run.runner import resolve_device

        device = resolve_device(device)
        # at the model's input size (image data sets are resized and cropped to it)
        data = get_dataset(evaluate_on, "test", image_size=getattr(model, "image_size", None))
        acc = predict(model.to(device), data, device=device).accuracy  # DataError: one line
        click.echo(f"{'accuracy':9s} {acc:.4f} on {evaluate_on} (test split)")


@main.command()
@click.option("--models", default=",".join(("bcos_vit_nano", "vit_nano")), show_default=True,
              help="names, globs or 'all', comma-separated")
@click.option("--methods", default="all", show_default=True,
              help="names, globs or 'all', comma-separated")
@click.option("--metric", "--metrics", "metrics", default="all", show_default=True,
              help="names, globs, 'all' or a category (localisation, perturbation, sanity)")
@click.option("--dataset", default="shapes", show_default=True)
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="MODEL[@R]=PATH",
              help="checkpoint of a model (default models on shapes are trained and cached); "
              "MODEL@R=PATH for replicate R, or MODEL='GLOB' for one file per replicate")
@click.option("--replicates", type=click.IntRange(min=1), default=1, show_default=True,
              help="independently initialised copies of each model (default models: recipe "
              "seed + replicate index)")
@click.option("--n-grids", type=click.IntRange(min=1), default=24, show_default=True,
              help="2x2 grids for the grid pointing game (paper: 250)")
@click.option("--n-images", type=click.IntRange(min=1), default=24, show_default=True,
              help="images for the perturbation metrics (paper: 250)")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="explained images per method call and chunk of perturbed forwards / 8")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False),
              help="results root; one sub-directory per run")
@click.option("--name", default=None, help="run sub-directory name (default: from the config)")
@click.option("--method-arg", "method_args", multiple=True, metavar="METHOD.KEY=VALUE",
              help="method parameter, e.g. intgrad.n_steps=20")
@click.option("--metric-arg", "metric_args", multiple=True, metavar="METRIC.KEY=VALUE",
              help="metric parameter, e.g. grid_pointing_game.confidence_threshold=0")
@click.option("--untrained", is_flag=True, help="allow models without checkpoints (random "
              "weights: sanity checks only)")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="epochs when a default model must be trained first")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="precision of the forward-only work (perturbed copies, "
              "selection, ViT-CX masks); explanations stay float32 (docs/gpu.md)")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the forward-only "
              "model calls (pays off on paper-scale runs on a GPU; docs/gpu.md)")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="share the work out over this many local processes of one thread each "
              "(torchrun --nproc-per-node; docs/distributed.md)")
@click.option("--no-plots", is_flag=True, help="do not write the figures and the report")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@click.option("-q", "--quiet", is_flag=True, help="print only the paths written (and errors)")
@click.option("-v", "--verbose", is_flag=True, help="end with every method's mean and interval "
              "per metric and model, not only the best")
@friendly_errors
def run(models, methods, metrics, dataset, checkpoints, replicates, n_grids, n_images,
        batch_size, device, seed, out, name, method_args, metric_args, untrained, epochs,
        precision, compile_, processes, no_plots, no_progress, quiet, verbose):
    """Benchmark models x attribution methods x metrics; resumable.

    Writes records.csv, curves.csv, the statistics tables and run.json under OUT/<run name>/,
    the figures under OUT/<run name>/plots/ and the report OUT/<run name>/report.html (one
    self-contained page). Rerunning the same command skips finished cells.

    \b
    Examples:
      xai-bench run                                   # quick suite on the embedded data
      xai-bench run --metric localisation --methods inherent,rollout,ixg
      xai-bench run --models vit_nano --checkpoint vit_nano=vit.pt --dataset shapes
    """
    import xai_bench.api

    def start_processes(runner):
        """--processes N: once the configuration is checked (usage errors exit 2 here, once),
        run the command again as N workers of one thread each and end with their exit code."""
        if processes == 1 or runner.ranks.distributed:  # 1, or already a worker
            return
        from xai_bench.run.distributed import launch_local

        if Path(sys.argv[0]).name not in ("xai-bench", "__main__.py"):
            raise click.UsageError("--processes starts the xai-bench command again; from "
                                   "Python, start your script with torchrun instead")
        sys.exit(launch_local(processes, sys.argv[1:]))

    method_params = _dotted_params(method_args, "--method-arg", "METHOD",
                                   "intgrad.n_steps=20")
    metric_params = _dotted_params(metric_args, "--metric-arg", "METRIC",
                                   "grid_pointing_game.confidence_threshold=0")
    checkpoint_paths = parse_key_values(checkpoints, "--checkpoint", parse=False)
    results = xai_bench.api.evaluate(
        models=[models], methods=[methods], metrics=[metrics], dataset=dataset, out=out,
        checkpoints=checkpoint_paths, n_grids=n_grids, n_images=n_images,
        batch_size=batch_size, device=device, seed=seed, name=name, untrained=untrained,
        train_epochs=epochs, method_params=method_params, replicates=replicates,
        metric_params=metric_params, precision=precision, compile=compile_,
        progress=not (quiet or no_progress), before_run=start_processes,
        log=None if quiet else click.echo)
    if results is None:  # torchrun: a process other than rank 0, which writes the results
        return
    info = results.info
    say = (lambda *a, **k: None) if quiet else click.echo
    say("")
    for label, m in info["models"].items():
        source = " (shipped with xai-bench)" if m.get("shipped") else ""
        say(f"{label}: test accuracy {m.get('test_accuracy', float('nan')):.4f}{source}")
    from xai_bench.outputs.terminal import compact_summary, full_summary

    say(full_summary(results.tables) if verbose else compact_summary(results.tables))
    say("")
    run_dir = results.run_dir
    if not no_plots:
        from xai_bench.outputs.plots import plot_run
        from xai_bench.outputs.report import write_report

        figures = plot_run(run_dir)
        click.echo(f"report:  {write_report(run_dir, figures=figures)}")
        click.echo(f"plots:   {run_dir / 'plots'}")
    click.echo(f"tables:  {run_dir / 'summary.csv'}, {run_dir / 'records.csv'}")
    errors = info["counts"].get("error", 0)
    if errors:
        click.echo(f"{errors} record(s) are errors; see the message column of records.csv",
                   err=True)
        sys.exit(1)


@main.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="output directory (default: RESULTS/<run>/plots)")
@friendly_errors
def plot(results, out):
    """Figures and summary tables from a run directory (or each run under RESULTS).

    \b
    Example:
      xai-bench plot results/run-1a2b3c4d5e --out figures/
    """
    from xai_bench.outputs.plots import plot_run
    from xai_bench.storage.results import ResultsError, find_run_dirs

    runs = find_run_dirs(results)
    if not runs:
        raise ResultsError(f"no xai-bench run found in {results} (no run.json); run "
                           f"`xai-bench run` first")
    for run_dir in runs:
        target = Path(out) / run_dir.name if out and len(runs) > 1 else out
        for path in plot_run(run_dir, target):
            click.echo(str(path))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write (default: RUN_DIR/report.html)")
@friendly_errors
def report(run_dir, out):
    """One self-contained HTML page of a run: the claims and the best methods first, every
    metric's table with intervals and its figure, the models, example maps, curves, sanity
    checks and the provenance. Opens offline (no network request).

    \b
    Example:
      xai-bench report results/run-1a2b3c4d5e --out report.html
    """
    from xai_bench.outputs.report import write_report
    from xai_bench.storage.results import ResultsError, find_run_dirs

    runs = find_run_dirs(run_dir)
    if len(runs) != 1 or runs[0] != Path(run_dir):
        raise ResultsError(f"{run_dir} is not a run directory (no run.json); pass one of "
                           f"its runs, e.g. {runs[-1] if runs else 'results/<run>'}")
    click.echo(str(write_report(run_dir, out)))


@main.command()
@click.argument("model")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="checkpoint of MODEL (default models on shapes: the cached default)")
@click.option("--methods", default="all", show_default=True,
              help="names, globs or 'all'; inapplicable ones are left out")
@click.option("--dataset", default="shapes", show_default=True,
              help="data set to draw images from when no IMAGES are given")
@click.option("--n-images", type=click.IntRange(1, 32), default=4, show_default=True,
              help="test images drawn from --dataset when no IMAGES are given")
@click.option("--target", type=int, default=None,
              help="class to explain (default: the model's prediction)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write")
@friendly_errors
def explain(model, images, checkpoint, methods, dataset, n_images, target, out):
    """Draw every applicable method's explanation of MODEL for IMAGES (or test images).

    \b
    Examples:
      xai-bench explain bcos_vit_nano --out explanations.png
      xai-bench explain vit_nano --checkpoint vit.pt cat.jpg dog.jpg --out fig.png
    """
    import torch

    from xai_bench.data import get_dataset, load_batch
    from xai_bench.registry import METHODS
    from xai_bench.outputs.explain import explanation_figure, load_images

    if checkpoint is not None:
        net = xai_bench.get_model(model, checkpoint=checkpoint)
    else:
        from xai_bench.training import DEFAULT_DATASET, cached_default_model, is_default_model

        xai_bench.MODELS.get(model)  # an unknown name: did-you-mean, before anything else
        if not is_default_model(model, dataset):
            on = "" if dataset == DEFAULT_DATASET else f" --dataset {dataset}"
            raise UsageError(f"no checkpoint for '{model}' on {dataset}: pass --checkpoint "
                             f"PATH (train one with `xai-bench train {model}{on} --out PATH`)")
        net, info = cached_default_model(model, dataset, log=lambda m: click.echo(m, err=True))
        state = "cached" if info.get("cached") else "just trained"
        click.echo(f"no --checkpoint: using the default {model} on {dataset} ({state}, "
                   f"{info['checkpoint']})", err=True)
    net = net.eval()
    classes = (getattr(net, "checkpoint_info", {}) or {}).get("classes")
    if images:
        batch = load_images(images, net.image_size)
        titles = [str(p) for p in images]
    else:
        data = get_dataset(dataset, "test", image_size=getattr(net, "image_size", None))
        classes = classes or getattr(data, "classes", None)
        batch, _ = load_batch(data, torch.arange(min(n_images, len(data))))
        titles = None
    with torch.no_grad():
        predicted = net(net.encode(batch)).argmax(1)
    targets = predicted if target is None else torch.full_like(predicted, target)
    if target is not None and not 0 <= target < net.num_classes:
        raise UsageError(f"--target {target} is not a class of '{model}' (0..{net.num_classes - 1})")
    chosen = [METHODS.get(name)() for name in METHODS.resolve(methods)]
    explanation_figure(net, batch, targets, chosen, class_names=classes, out=out, titles=titles)
    click.echo(out)


if __name__ == "__main__":  # pragma: no cover
    main()
