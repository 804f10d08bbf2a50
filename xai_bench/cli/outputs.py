"""What is drawn from a run directory or a model: ``xai-bench plot`` (figures and summary
tables), ``xai-bench report`` (one self-contained HTML page) and ``xai-bench explain`` (every
applicable method's explanation of a model's images)."""

from __future__ import annotations

from pathlib import Path

import click

from xai_bench.cli.common import UsageError, friendly_errors, parse_key_values
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
    """One self-contained HTML page of a run: the best method per metric and model first,
    the paper's claims when a B-cos model and its twin are both in the run, every metric's
    table with intervals and its figure, the models, example maps, curves, sanity checks and
    the provenance; long parts collapsed (click to open; printing opens all). Opens offline
    (no network request).

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
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="constructor argument of MODEL with --checkpoint (as for `train`), e.g. "
                   "depth=6")
@click.option("--methods", default="default", show_default=True,
              help="names, globs, groups, or 'all' for every installed method, plugins "
                   "included (as for `run`); those that do not apply to MODEL are left out "
                   "with the reason")
@click.option("--method-arg", "method_args", multiple=True, metavar="METHOD.KEY=VALUE",
              help="method parameter, e.g. intgrad.n_steps=20 (as for `run`)")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True,
              help="data set to draw images from when no IMAGES are given")
@click.option("--n-images", type=click.IntRange(1, 32), default=4, show_default=True,
              help="test images drawn from --dataset when no IMAGES are given")
@click.option("--target", type=int, default=None,
              help="class to explain (default: the model's prediction)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write")
@friendly_errors
def explain(model, images, checkpoint, model_args, methods, method_args, dataset, n_images,
            target, device, out):
    """Draw every applicable method's explanation of MODEL for IMAGES (or test images).

    One row per image: the image with its true, predicted and explained class names, for a
    B-cos model the colour image of its weights W(x), then each method's map over the image
    (signed maps: red for the explained class, blue against; maps without sign: brighter is
    more relevant). Installed plugin methods are drawn like built-ins.

    \b
    Examples:
      xai-bench explain bcos_vit_nano --out explanations.png
      xai-bench explain vit_nano --methods 'paper,edge_*' --n-images 2 --out fig.png
      xai-bench explain vit_nano --checkpoint vit.pt cat.jpg dog.jpg --out fig.png
    """
    from types import SimpleNamespace

    import torch

    from xai_bench.cli.common import dotted_params
    from xai_bench.contracts.model import model_attr
    from xai_bench.data import get_dataset, load_batch
    from xai_bench.outputs.explain import (
        explain_batch, load_images, weights_description,
    )
    from xai_bench.outputs.explain_figure import draw_explanation
    from xai_bench.run.resolve import resolve_device, resolve_methods

    params = dotted_params(method_args, "--method-arg", "METHOD", "intgrad.n_steps=20")
    device = resolve_device(device)
    # the method entries `run` builds: classes constructed, functions bound, both checked
    # (an unknown name or parameter fails here, before a model is loaded)
    entries = resolve_methods(SimpleNamespace(methods=methods, method_params=params))
    net, default_info = _explained_model(model, checkpoint, dataset,
                                         parse_key_values(model_args))
    if target is not None and not 0 <= target < net.num_classes:
        raise UsageError(f"--target {target} is not a class of '{model}' "
                         f"(0..{net.num_classes - 1})")
    classes = (getattr(net, "checkpoint_info", {}) or {}).get("classes")
    labels = None
    if images:
        batch = load_images(images, net.image_size)
    else:
        data = get_dataset(dataset, "test", image_size=getattr(net, "image_size", None))
        classes = classes or getattr(data, "classes", None)
        batch, labels = load_batch(data, torch.arange(min(n_images, len(data))))
    targets = None if target is None else torch.full((len(batch),), target, dtype=torch.long)
    result = explain_batch(net, batch, entries, targets, labels, device=device,
                           log=lambda message: click.echo(message, err=True))
    for name, reason in result.skipped:
        click.echo(f"skipped {name}: {reason}", err=True)
    for name, reason in result.failed:
        click.echo(f"failed {name}: {reason}", err=True)
    if not result.maps:
        raise UsageError(f"none of --methods {methods} could be drawn for '{model}' (reasons "
                         f"above); choose methods that apply (`xai-bench list methods`)")
    family = model_attr(net, "family")
    heading = f"{model} ({family}) · {weights_description(net, checkpoint, default_info)}"
    draw_explanation(result, class_names=classes, titles=list(images) or None, heading=heading,
                     out=out)
    click.echo(f"drew {len(result.maps)} method(s): {', '.join(result.methods)}", err=True)
    click.echo(out)
    if result.failed:  # the figure is written, but not everything asked for is in it
        raise SystemExit(1)


def _explained_model(model, checkpoint, dataset, model_args: dict):
    """``(model, info of the default weights or None)``: the checkpoint given (built with
    ``model_args``), else the default model on its data set (shipped, or trained once and
    cached)."""
    if checkpoint is not None:
        from xai_bench.loading import get_model

        return get_model(model, checkpoint=checkpoint, **model_args), None
    if model_args:
        raise UsageError("--model-arg describes the model of a --checkpoint; the default "
                         "models take their stored arguments: pass --checkpoint PATH too")
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
    return net, info
