"""The paper's study replicated on real images (CIFAR-10), and the positional-prior ablation.

    python benchmarks/replicate.py --data cifar10:PATH --replicates 3 --methods all \\
        --metrics grid_pointing_game,pixel_perturbation,deletion,insertion,random_target,\\
    sparseness,complexity,infidelity,efficient_mprt --n-grids 8 --n-images 8 \\
        --method-arg rise.n_masks=500 --ablation --ablation-data cifar10 \\
        --ablation-replicates 2 --ablation-epochs 2          # docs/replication.md, 2 CPU cores
    python benchmarks/replicate.py --data cifar10 --recipe gpu --device cuda --replicates 3 \\
        --n-grids 250 --n-images 250                      # the paper's protocol on a GPU
    python benchmarks/replicate.py --ablation-only --ablation-data shapes --replicates 2

Steps (each result is cached on disk, so a rerun, or a run after an interruption, redoes only
what is missing or changed):

1. **Train** the small pair (``bcos_vit_nano``, ``vit_nano``) on the training split with the
   ``<family>-cifar10-<recipe>`` recipes (:mod:`xai_bench.training.recipes`; the CPU recipes
   give both families the same 12 epochs), replicate by replicate (seed = the recipe's seed +
   the replicate index) under ``OUT/checkpoints/``. A checkpoint is reused only when its
   metadata records the same model, data, recipe and training-set size.
2. **Run the protocol**: every method × every metric through :func:`xai_bench.evaluate` on
   every replicate (cells cached in ``OUT/protocol``); ``--meta`` adds the meta-evaluation of
   the metrics on replicate 0.
3. **Ablate the positional prior** (``--ablation``): the B-cos model with
   ``position=multiplicative|additive|embedding|none``, per replicate, on ``--ablation-data``
   (``shapes`` and/or the CIFAR-10 spec); test accuracy and the grid pointing game of the
   inherent explanation with 95% bootstrap intervals, and each prior's paired difference
   from the multiplicative prior (benchmarks/replication_tables.py).
4. **Write** ``--docs`` (default ``docs/replication.md``, benchmarks/replication_page.py): the
   models per replicate, each claim per replicate and how often it holds, which method leads
   each metric how often, which metrics tell the methods from random, the ablation, the run's
   tables, the figures (copied into ``<docs stem>/``) and the command, with the data set
   written as ``cifar10:PATH`` and no path of this machine.

The paper's statements the claims are compared with are those of the holistic B-cos ViT paper
(Böhle et al. 2023) on ImageNet: B-cos ViTs' inherent explanations localise best and best by a
wide margin over the conventional ViTs' post-hoc methods, and perform well under pixel
perturbation.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import xai_bench  # noqa: E402
from xai_bench.data import get_dataset  # noqa: E402
from xai_bench.compute.inference import predict  # noqa: E402
from xai_bench.metrics.base import MetricNotApplicable  # noqa: E402
from xai_bench.analysis.statistics import bootstrap_interval, format_interval  # noqa: E402
from xai_bench.training import get_recipe, train_and_save  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import (  # noqa: E402
    OneLineParser, at_least, check_output_dir, check_output_path, check_run_options,
    one_line_errors,
)
from replication_page import absolute_paths, write_page  # noqa: E402, F401

PAIR = ("bcos_vit_nano", "vit_nano")
POSITIONS = ("multiplicative", "additive", "embedding", "none")

#: what the paper reports for each of xai_bench's claims (claims_paper.json ids)
PAPER_SAYS = {
    "a": "holds: the inherent explanation localises best on every B-cos ViT (Fig. 6, grid "
         "pointing game)",
    "b": "holds for most B-cos ViTs: the inherent explanation is among the best under pixel "
         "perturbation, though not first everywhere",
    "c": "holds by a wide margin: B-cos inherent localisation is far above the conventional "
         "ViTs' best post-hoc method",
    "d": "holds: the B-cos ViTs' best localisation exceeds the conventional ViTs'",
}


def family(name: str) -> str:
    return "bcos" if name.startswith("bcos_") else "conventional"


def log(*parts):
    print(*parts, flush=True)


# ------------------------------------------------------------------------------ training

def train_one(name, spec, recipe, path: Path, *, replicate: int, model_kwargs=None,
              device="cpu", limit_train=None, splits=None) -> dict:
    """Train (or reuse) one checkpoint; returns its metadata. A checkpoint is reused only when
    it records the same model, data, recipe, model arguments and training-set size."""
    wanted = dict(model=name, dataset=spec, recipe=recipe.to_dict(),
                  model_kwargs=dict(model_kwargs or {}), limit_train=limit_train)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("wanted") == wanted:
            log(f"reusing {path.name} (test accuracy {meta['test_accuracy']:.4f})")
            return meta
    log(f"training {name} {model_kwargs or ''} replicate {replicate} on {spec} "
        f"({recipe.epochs} epochs, seed {recipe.seed}) ...")
    train_set, test_set = splits
    trained = train_and_save(name, spec, path, recipe=recipe, recipe_name=None,
                             model_kwargs=model_kwargs, device=device, progress=False,
                             limit_train=limit_train, train_set=train_set, test_set=test_set)
    meta = dict(wanted=wanted, path=str(path), replicate=replicate,
                test_accuracy=trained.metrics["test_accuracy"],
                train_time_s=trained.metrics["train_time_s"],
                images_per_s=trained.metrics["images_per_s"], epochs=trained.metrics["epochs"],
                train_images=trained.metrics["train_images"])
    meta_path.write_text(json.dumps(meta, indent=1))
    meta = dict(meta, trained_now=True)
    log(f"  test accuracy {meta['test_accuracy']:.4f} in {meta['train_time_s'] / 60:.1f} min "
        f"({meta['images_per_s']:.0f} images/s)")
    return meta


def recipe_for(name: str, kind: str, replicate: int, epochs=None):
    recipe = get_recipe(f"{family(name)}-cifar10-{kind}")
    return recipe.replace(seed=recipe.seed + replicate, epochs=epochs)


# ------------------------------------------------------------------------------ ablation

def evaluated(path: Path, spec: str, settings: dict, compute) -> dict:
    """``compute()`` (a JSON-able dict) for the checkpoint ``path``, cached beside it in
    ``PATH.eval.json`` and reused only for the same checkpoint bytes, data set, settings and
    xai_bench version (a rerun after an interruption does not evaluate a model twice)."""
    from xai_bench.storage.identity import file_sha256
    from xai_bench.version import VERSION

    identity = dict(checkpoint=file_sha256(path), dataset=spec, settings=settings,
                    xai_bench=VERSION)
    cache = path.with_suffix(".eval.json")
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("identity") == identity:
            return stored["result"]
    result = compute()
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(identity=identity, result=result)))
    tmp.replace(cache)
    return result


def _test_predictions(name: str, path: Path, test_set) -> dict:
    model = xai_bench.get_model(name, checkpoint=str(path)).eval()
    return dict(correct=predict(model, test_set, device="cpu").correct.int().tolist())


def _ablation_scores(path: Path, test_set, metric, method) -> dict:
    """Per test image: correct or not; per grid cell: the inherent grid pointing game."""
    model = xai_bench.get_model("bcos_vit_nano", checkpoint=str(path)).eval()
    out = dict(correct=predict(model, test_set, device="cpu").correct.int().tolist(),
               scores=[], note="")
    try:
        prepared = metric.prepare(model, test_set)
        out["scores"] = [rec["value"] for rec in
                         metric.evaluate(model, method, prepared).records]
    except MetricNotApplicable as e:
        out["note"] = str(e)
    return out



def ablation(spec: str, kind: str, replicates: int, out: Path, *, device, n_grids: int,
             threshold: float, epochs=None, limit_train=None) -> tuple[pd.DataFrame, list]:
    """Accuracy and inherent grid pointing game of the B-cos model per positional prior:
    the table (one row per prior and replicate) and the per-model results (``correct`` per
    test image, ``scores`` per grid cell) the paired differences need."""
    shapes = spec.split(":")[0] in ("shapes", "synthetic")
    splits = (get_dataset(spec, "train"), get_dataset(spec, "test"))
    rows, per_model = [], []
    metric = xai_bench.get_metric("grid_pointing_game", n_grids=n_grids,
                                  confidence_threshold=threshold)
    inherent = xai_bench.get_method("inherent")
    for r in range(replicates):  # replicate-major: an interrupted study has whole replicates
        for position in POSITIONS:
            if shapes:
                recipe = get_recipe("bcos-quick")
                recipe = recipe.replace(seed=recipe.seed + r, epochs=epochs)
            else:
                recipe = recipe_for("bcos_vit_nano", kind, r, epochs)
            tag = "shapes" if shapes else f"cifar10-{kind}"
            path = out / "checkpoints" / f"ablation-{tag}-{position}@{r}.pt"
            meta = train_one("bcos_vit_nano", spec, recipe, path, replicate=r,
                             model_kwargs={"position": position}, device=device,
                             limit_train=limit_train, splits=splits)
            found = evaluated(path, spec, dict(n_grids=n_grids, threshold=threshold),
                              lambda: _ablation_scores(path, splits[1], metric, inherent))
            correct, scores = np.asarray(found["correct"], float), np.asarray(found["scores"])
            acc, acc_lo, acc_hi = bootstrap_interval(correct, seed=r)
            row = dict(data=tag, position=position, replicate=r, n_test=len(correct),
                       confidence_threshold=threshold, epochs=meta["epochs"],
                       accuracy=acc, accuracy_low=acc_lo, accuracy_high=acc_hi,
                       train_time_s=meta["train_time_s"])
            if len(scores):
                loc, lo, hi = bootstrap_interval(scores, seed=r)
                row.update(n_cells=len(scores), localisation=loc, localisation_low=lo,
                           localisation_high=hi)
            else:
                row.update(n_cells=0, note=found["note"])
            rows.append(row)
            per_model.append(dict(position=position, replicate=r, correct=correct,
                                  scores=scores))
            log(f"  {tag} {position}@{r}: accuracy {format_interval(acc, acc_lo, acc_hi)}, "
                f"localisation "
                f"{format_interval(row.get('localisation', float('nan')), row.get('localisation_low', float('nan')), row.get('localisation_high', float('nan')))}")  # noqa: E501
    return pd.DataFrame(rows), per_model


# ------------------------------------------------------------------------------ the report

def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def shareable_command(argv: list) -> list:
    """``argv`` without the paths of this machine: an absolute path (also after a ``name:``
    prefix, as in ``cifar10:/data/x.tar.gz``) becomes its path relative to the repository
    when it lies inside it, else its file name; the page records the command, not our disks."""
    root = Path(__file__).resolve().parents[1]

    def one(arg: str) -> str:
        prefix, sep, rest = arg.rpartition(":") if ":/" in arg else ("", "", arg)
        if not rest.startswith("/"):
            return arg
        path = Path(rest)
        try:
            short = str(path.resolve().relative_to(root))
        except ValueError:
            short = path.name
        return f"{prefix}{sep}{short}"

    return [one(a) for a in argv]


def _placeholders(args) -> dict:
    """Every path of this machine the page could mention, with what the page writes instead."""
    out = {}
    prefix, _, rest = args.data.partition(":")
    if rest:
        out[rest] = "PATH"
        out[str(Path(rest).resolve())] = "PATH"
    for path, name in ((args.out, "OUT"), (str(ROOT), ".")):
        out[str(Path(path).resolve())] = name
    return out


def shareable_data(spec: str) -> str:
    """The data set as the page writes it: ``cifar10:PATH`` for ``cifar10:/any/where``."""
    prefix, sep, rest = spec.partition(":")
    return f"{prefix}:PATH" if sep and rest else spec


def write_report(docs: Path, args, pair_meta: list, results, meta_frame, ablations: list,
                 wall: dict) -> None:
    argv = list(args.argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--data":
            argv[i + 1] = shareable_data(argv[i + 1])
    commands = ["python benchmarks/replicate.py " + shlex.join(shareable_command(argv))]
    title = ("The positional-prior ablation" if args.ablation_only
             else f"The study replicated on {args.data_label}")
    provenance = ("Written by `benchmarks/replicate.py` (do not edit by hand; rerun it). "
                  f"git `{_git_sha()}`, torch {torch.__version__}, "
                  f"{platform.processor() or platform.machine()}, device `{args.device}`, "
                  f"{args.threads or torch.get_num_threads()} thread(s) per process, "
                  f"{time.strftime('%Y-%m-%d')}.")
    threads = args.train_note or ""
    from xai_bench.run.meta import meta_summary

    write_page(Path(docs), title=title, provenance=provenance, commands=commands,
               note=args.note, pair_meta=pair_meta, recipe_kind=args.recipe, threads=threads,
               results=results, replicates=args.replicates, paper_says=PAPER_SAYS,
               meta_summary=meta_summary(meta_frame) if meta_frame is not None else None,
               ablations=ablations, wall=wall, placeholders=_placeholders(args), log=log)


# ------------------------------------------------------------------------------ main

def parse(argv):
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="cifar10", help="CIFAR-10 spec: cifar10 (torchvision) or "
                   "cifar10:PATH (ImageFolder layout or .tar.gz)")
    p.add_argument("--recipe", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--epochs", type=at_least(1), default=None, help="override the recipe's epochs")
    p.add_argument("--limit-train", type=at_least(1), default=None, help="first N training images")
    p.add_argument("--replicates", type=at_least(1), default=1)
    p.add_argument("--n-grids", type=at_least(1), default=60)
    p.add_argument("--n-images", type=at_least(1), default=60)
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="grid pointing game: confidence an image needs to enter a grid "
                   "(the reference's 0.5; 0 keeps every correct image)")
    p.add_argument("--methods", default="all")
    p.add_argument("--metrics", default="all")
    p.add_argument("--method-arg", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method's parameter for the protocol, e.g. rise.n_masks=500 "
                   "(repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/replication")
    p.add_argument("--docs", default=str(ROOT / "docs" / "replication.md"))
    p.add_argument("--ablation", action="store_true", help="also ablate the positional prior")
    p.add_argument("--ablation-only", action="store_true", help="only the ablation")
    p.add_argument("--ablation-data", default="shapes", help="comma-separated: shapes and/or "
                   "the CIFAR-10 spec (cifar10 = --data)")
    p.add_argument("--ablation-replicates", type=at_least(1), default=None,
                   help="replicates per positional prior (default: --replicates)")
    p.add_argument("--ablation-epochs", type=at_least(1), default=None)
    p.add_argument("--ablation-limit-train", type=at_least(1), default=None)
    p.add_argument("--ablation-grids", type=at_least(1), default=60)
    p.add_argument("--ablation-confidence-threshold", type=float, default=None,
                   help="the ablation's grid pointing game threshold (default: "
                   "--confidence-threshold; a short ablation budget gives less confident "
                   "models)")
    p.add_argument("--meta", action="store_true", help="also meta-evaluate the metrics "
                   "(resilience and reactivity, docs/meta_evaluation.md) on replicate 0 with "
                   "--meta-methods and --meta-images: costly, about 13x its cells")
    p.add_argument("--meta-methods", default="paper,random")
    p.add_argument("--meta-images", type=at_least(1), default=8)
    p.add_argument("--threads", type=at_least(1), default=None,
                   help="torch threads of this process (default: torch's)")
    p.add_argument("--note", default="", help="a paragraph for the page, e.g. what else "
                   "shared the machine while the models trained")
    p.add_argument("--train-note", default="", help="how the models were trained (threads, "
                   "what ran beside them), for the page's models section")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.argv = list(argv)
    from xai_bench.cli.common import dotted_params

    try:
        args.method_params = dotted_params(args.method_arg, "--method-arg", "METHOD",
                                           "rise.n_masks=500")
    except Exception as e:  # click's UsageError: the parser's one-line error, exit 2
        p.error(str(getattr(e, "message", e)))
    args.data_label = "CIFAR-10" if args.data.split(":")[0] == "cifar10" else args.data
    return args


def _metric_params(args) -> dict:
    """The grid pointing game's threshold where the run includes it (else nothing to set)."""
    from xai_bench.run.runner import resolve_metrics

    chosen = resolve_metrics([m.strip() for m in args.metrics.split(",")])
    if "grid_pointing_game" not in chosen:
        return {}
    return {"grid_pointing_game": {"confidence_threshold": args.confidence_threshold}}


def check_arguments(args) -> None:
    """Everything the run will need, checked before any training (one-line errors): the run
    options as `xai-bench run` checks them, every ablation data set, the output locations."""
    if not args.ablation_only:
        check_run_options(models=list(PAIR), methods=args.methods, metrics=args.metrics,
                          dataset=args.data, n_grids=args.n_grids, n_images=args.n_images,
                          replicates=args.replicates, device=args.device,
                          method_params=args.method_params,
                          metric_params=_metric_params(args))
    if args.ablation or args.ablation_only:
        for spec in [s.strip() for s in args.ablation_data.split(",") if s.strip()]:
            get_dataset(args.data if spec == "cifar10" else spec, "test")
    check_output_dir(args.out, "--out")
    check_output_path(args.docs, "--docs")


def train_pair(args, out: Path) -> tuple[list, dict]:
    """Every replicate of the pair, replicate by replicate (an interrupted study keeps whole
    replicates), each with its test predictions for the accuracy interval."""
    splits = (get_dataset(args.data, "train"), get_dataset(args.data, "test"))
    pair_meta, checkpoints = [], {}
    for r in range(args.replicates):
        for name in PAIR:
            path = out / "checkpoints" / f"{name}-cifar10-{args.recipe}@{r}.pt"
            meta = train_one(name, args.data, recipe_for(name, args.recipe, r, args.epochs),
                             path, replicate=r, device=args.device,
                             limit_train=args.limit_train, splits=splits)
            found = evaluated(path, args.data, {},
                              lambda: _test_predictions(name, path, splits[1]))
            meta = dict(meta, correct=np.asarray(found["correct"], float))
            pair_meta.append(meta)
            checkpoints[f"{name}@{r}"] = str(path)
    return pair_meta, checkpoints


def run_protocol(args, out: Path, checkpoints: dict):
    """Every method × metric on every replicate (cells cached: a rerun redoes what changed)."""
    from xai_bench.outputs.plots import plot_run

    results = xai_bench.evaluate(models=list(PAIR), methods=args.methods, metrics=args.metrics,
                                 dataset=args.data, out=out, checkpoints=checkpoints,
                                 replicates=args.replicates, n_grids=args.n_grids,
                                 n_images=args.n_images, metric_params=_metric_params(args),
                                 method_params=args.method_params, device=args.device,
                                 name="protocol",
                                 progress=not args.quiet, log=log)
    plot_run(results.run_dir)  # figures and summary.md, as `xai-bench run` writes them
    return results


def claims_among_paper_methods(results):
    """The claims again with only the paper's methods (the ``default`` group: its methods,
    ViT-CX and the baselines), the comparison the paper made; None when the run has no other
    method."""
    from xai_bench.analysis.statistics import analyse

    paper = set(xai_bench.METHODS.groups()["default"])
    records = results.records
    if set(records["method"].astype(str)) <= paper:
        return None
    subset = records[records["method"].astype(str).isin(paper)]
    return analyse(subset, seed=results.info.get("config", {}).get("seed", 0), claims=True,
                   declarations=results.info.get("declarations"))["claims"]


def run_meta(args, out: Path, checkpoints: dict):
    """The meta-evaluation on replicate 0 (its own run directory): the frame of meta.csv."""
    first = {k: v for k, v in checkpoints.items() if k.endswith("@0")}
    results = xai_bench.evaluate(models=list(PAIR), methods=args.meta_methods,
                                 metrics=args.metrics, dataset=args.data, out=out,
                                 checkpoints=first, replicates=1, n_grids=args.meta_images,
                                 n_images=args.meta_images, metric_params=_metric_params(args),
                                 method_params=args.method_params, device=args.device,
                                 name="meta", meta=True, plots=False,
                                 report=False, progress=not args.quiet, log=log)
    from xai_bench.run.meta import META_FILE

    return pd.read_csv(Path(results.run_dir) / META_FILE)


@one_line_errors
def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    wall, pair_meta, results, meta_frame, ablations = {}, [], None, None, []
    if not args.ablation_only:
        pair_meta, checkpoints = train_pair(args, out)
        wall["training the pair (every replicate's recorded training time)"] = sum(
            m["train_time_s"] for m in pair_meta)
        t = time.perf_counter()
        results = run_protocol(args, out, checkpoints)
        results.paper_claims = claims_among_paper_methods(results)
        recorded = (results.info.get("timings") or {}).get("cells_total_s")
        if recorded:
            wall["the protocol: every cell's recorded compute time"] = float(recorded)
        wall["the protocol: this run (cached cells are read, not recomputed)"] = \
            time.perf_counter() - t
        if args.meta:
            t = time.perf_counter()
            meta_frame = run_meta(args, out, checkpoints)
            wall["the meta-evaluation"] = time.perf_counter() - t
    if args.ablation or args.ablation_only:
        for spec in [s.strip() for s in args.ablation_data.split(",") if s.strip()]:
            spec = args.data if spec == "cifar10" else spec
            t = time.perf_counter()
            frame, per_model = ablation(spec, args.recipe,
                                        args.ablation_replicates or args.replicates, out,
                                        device=args.device, n_grids=args.ablation_grids,
                                        threshold=args.confidence_threshold
                                        if args.ablation_confidence_threshold is None
                                        else args.ablation_confidence_threshold,
                                        epochs=args.ablation_epochs,
                                        limit_train=args.ablation_limit_train)
            ablations.append((frame, per_model))
            frame.to_csv(out / f"ablation-{frame['data'].iloc[0]}.csv", index=False)
            wall[f"positional ablation on {frame['data'].iloc[0]}: training (recorded)"] = \
                float(frame["train_time_s"].sum())
            wall[f"positional ablation on {frame['data'].iloc[0]}: this run"] = \
                time.perf_counter() - t
    write_report(Path(args.docs), args, pair_meta, results, meta_frame, ablations, wall)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
