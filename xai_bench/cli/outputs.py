"""What is drawn from a run directory or a model: ``xai-bench plot`` (figures and summary
tables), ``xai-bench report`` (one self-contained HTML page) and ``xai-bench explain`` (every
applicable method's explanation of a model's images)."""

from __future__ import annotations

from pathlib import Path

import click

from xai_bench.cli.common import UsageError, friendly_errors
from xai_bench.registry import MODELS
from xai_bench.training.defaults import DEFAULT_DATASET

__all__ = ["plot", "report", "explain"]


@click.command()
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


@click.command()
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


@click.command()
@click.argument("model")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="checkpoint of MODEL (default models on shapes: the cached default)")
@click.option("--methods", default="all", show_default=True,
              help="names, globs or 'all'; inapplicable ones are left out")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True,
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
        from xai_bench.loading import get_model

        net = get_model(model, checkpoint=checkpoint)
    else:
        from xai_bench.run.models import weights_source
        from xai_bench.training import cached_default_model

        MODELS.get(model)  # an unknown name: did-you-mean, before anything else
        if weights_source(model, dataset) != "default":
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
        raise UsageError(f"--target {target} is not a class of '{model}' "
                         f"(0..{net.num_classes - 1})")
    chosen = [METHODS.get(name)() for name in METHODS.resolve(methods)]
    explanation_figure(net, batch, targets, chosen, class_names=classes, out=out, titles=titles)
    click.echo(out)
