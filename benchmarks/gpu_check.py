"""One command that checks xai-bench on a GPU and measures what the paper's protocol would cost.

Usage::

    python benchmarks/gpu_check.py                              # --device cuda, a few minutes
    python benchmarks/gpu_check.py --precision bf16             # the device run in bf16
    python benchmarks/gpu_check.py --device cpu --n-grids 2 --n-images 2 --sizes nano \\
        --batch-sizes 2 --throughput-models bcos_vit_nano --methods rollout,ixg   # seconds

Five parts, all written to one JSON file (``--out``, default ``gpu_check.json``):

1. **suite**: the quick suite (what ``xai-bench run`` runs by default: the shipped
   bcos_vit_nano and vit_nano on the embedded ``shapes`` data, every method, every metric,
   24 grids, 24 images, batch 32; ``--models``/``--methods``/``--metrics``/``--n-grids``/
   ``--n-images`` narrow it) once on ``--device`` (under ``--precision``/``--compile``) and
   once on the CPU (fp32), in memory. The records are compared value by value per
   (model, method, metric, sample_id, target): the maximum absolute difference, the number
   of records that differ by more than ``--tolerance`` (default 0.01: every metric's values
   lie in [-1, 1] or are areas under curves of confidences in [0, 1], and float32 on a GPU
   differs from the CPU by rounding that the pixel rankings and ViT-CX's clustering can
   amplify; cuDNN convolutions use TF32 by default), per metric, the worst records, the
   records only one run has (a different image selection), status changes, and the test
   accuracies of both runs.
2. **method_cost**: the cost of every method per image in forward passes of the same model
   (``benchmarks/method_cost.py``'s measurement, imported), default ViT-B pair (``--sizes b``)
   at batch 32 (``--batch-sizes``), randomly initialised.
3. **throughput**: forward (no gradients) and inherent-explanation (B-cos, forward and
   backward in explanation mode) images per second of B-cos ViT-{Ti,S,B}-87 at 224² on the
   frozen B-cos DenseNet (``--throughput-models``; the conventional twin's forward too, for
   the estimate), batch ``--throughput-batch``.
4. **protocol_estimate**: the paper's full protocol per B-cos / conventional pair
   (``--protocol-grids`` 250 grids × 4 targets, ``--protocol-images`` 250 images, every method
   of the cost table, every metric, plus the selection pass over ``--dataset-size`` test
   images), estimated per model as ``Σ_methods (explained images × method cost in forwards /
   fp32 forward throughput + the metrics' perturbed copies / forward throughput under
   --precision) + selection pass / forward throughput``. The explained images follow the
   runner: with :mod:`xai_bench.compute.map_cache` the selected images' true-class maps are computed
   once for all image metrics (see :func:`explanations`). The method costs are those of
   part 2 (the zoo ViT of the largest size and batch measured, per family: B-cos or
   conventional), the throughput that of part 3's ViT-87 model and its twin; ViT-CX's cost
   depends on its number of masks, which is that of a random initialisation here. The wall
   time on ``--gpus`` processes (default 8) is ``max(total / gpus, largest part)``, a part
   being one batch (``--batch-size``) of one (model, method) as the runner shares them out.
5. The JSON also holds the configuration, the versions, the device and each part's run time.

Exit status 0 whatever the numbers (it is a measurement); 2 for bad options.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import xai_bench
from xai_bench.compute.precision import PRECISIONS, forward_autocast, forward_model, forward_options

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import (  # noqa: E402
    OneLineParser, at_least, check_output_dir, check_output_path, check_run_options,
    one_line_errors,
)

HERE = Path(__file__).resolve().parent
DEFAULT_THROUGHPUT_MODELS = "bcos_vit_ti_87,bcos_vit_s_87,bcos_vit_b_87"
SUITE_KEY = ["model", "method", "metric", "sample_id", "target"]
DEFAULT_TOLERANCE = 0.01


def load_method_cost():
    """benchmarks/method_cost.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("method_cost", HERE / "method_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# ---- 1. the quick suite on the device and on the CPU ------------------------------------------

def run_suite(args, device: str, precision: str = "fp32", compile_: bool = False):
    """Records (DataFrame) and run info of the quick suite on ``device``."""
    models = args.models.split(",")
    checkpoints = {}
    if args.dataset != "shapes":  # another spec: the shipped weights, not a training run
        from xai_bench.training.shipped import SHIPPED_DIR, read_manifest

        checkpoints = {name: str(SHIPPED_DIR / entry["file"])
                       for name, entry in read_manifest().items() if name in models}
    kwargs = dict(models=models, methods=args.methods, metrics=args.metrics,
                  dataset=args.dataset, checkpoints=checkpoints, out=None, n_grids=args.n_grids, n_images=args.n_images,
                  batch_size=args.batch_size, device=device, seed=0, progress=False)
    # a runner that takes the forward options itself gets them (it would otherwise set its
    # defaults inside); the context covers one that does not
    from xai_bench.api import evaluate  # (xai_bench.evaluate is a lazy (*args, **kwargs) alias)

    accepted = inspect.signature(evaluate).parameters
    if "precision" in accepted:
        kwargs["precision"] = precision
    if "compile" in accepted:
        kwargs["compile"] = compile_
    with forward_options(precision, compile=compile_):
        results = evaluate(**kwargs)
    return results.records, results.info


def with_content(frame):
    """``frame`` with a ``content`` column: what a record was computed on, so that records of
    different samples under the same id are not compared (a changed selection renumbers
    grids: ``grid0003`` may hold other images). Per-image rows: the dataset index (and the
    random class of random_target); grid cells: the dataset indices of the grid's four
    cells; rows without an index (a metric's ``mean`` row): the sorted indices of all the
    cell's samples."""
    frame = frame.copy()
    frame["target"] = frame["target"].fillna(-1).astype(int)
    if "source_index" not in frame:
        frame["content"] = ""
        return frame
    src = frame["source_index"]
    own = src.map(lambda v: "" if v != v or v is None else str(int(v)))
    if "random_target" in frame:
        extra = frame["random_target"].map(lambda v: "" if v != v or v is None else f"~{int(v)}")
        own = own + extra
    content = own.copy()
    grid = frame["sample_id"].astype(str).str.extract(r"^(grid\d+)/cell(\d+)$")
    is_grid = grid[0].notna()
    if is_grid.any():
        cells = frame[is_grid].assign(grid=grid[0][is_grid], cell=grid[1][is_grid].astype(int))
        composition = (cells.sort_values("cell")
                       .groupby(["model", "metric", "grid"])["source_index"]
                       .agg(lambda v: ",".join(str(int(i)) for i in dict.fromkeys(v))))
        content[is_grid] = [composition[(m, mt, g)] for m, mt, g in
                            zip(cells["model"], cells["metric"], cells["grid"])]
    missing = own == ""
    if missing.any():
        groups = frame[~missing].groupby(["model", "method", "metric"])["source_index"]
        digest = groups.agg(lambda v: ",".join(str(int(i)) for i in sorted(set(v))))
        content[missing] = [digest.get((m, me, mt), "") for m, me, mt in
                            zip(frame["model"][missing], frame["method"][missing],
                                frame["metric"][missing])]
    frame["content"] = content
    return frame


def compare_records(device_records, cpu_records, tolerance: float, n_worst: int = 10) -> dict:
    """Value-by-value comparison of two runs' records keyed by :data:`SUITE_KEY` and what
    they were computed on (:func:`with_content`): records whose samples differ between the
    runs count as ``only_on_device`` / ``only_on_cpu``, not as differences."""
    import pandas as pd

    key = SUITE_KEY + ["content"]

    def keyed(frame):
        return with_content(frame).drop_duplicates(key, keep="last").set_index(key)

    dev, cpu = keyed(device_records), keyed(cpu_records)
    both = dev.index.intersection(cpu.index)
    status_changed = int((dev.loc[both, "status"] != cpu.loc[both, "status"]).sum())
    ok = both[(dev.loc[both, "status"] == "ok").to_numpy()
              & (cpu.loc[both, "status"] == "ok").to_numpy()]
    a = pd.to_numeric(dev.loc[ok, "value"], errors="coerce")
    b = pd.to_numeric(cpu.loc[ok, "value"], errors="coerce")
    finite = a.notna() & b.notna()
    nan_mismatch = int((a.isna() != b.isna()).sum())
    diff = (a[finite] - b[finite]).abs()
    over = diff[diff > tolerance]
    per_metric = {}
    for metric, d in diff.groupby(level="metric"):
        per_metric[str(metric)] = dict(n=int(len(d)), max_abs_diff=float(d.max()),
                                       n_over_tolerance=int((d > tolerance).sum()))
    worst = []
    for index in diff.sort_values(ascending=False).head(n_worst).index:
        worst.append(dict(zip(SUITE_KEY, [k if isinstance(k, str) else int(k) for k in index]),
                          device=float(a[index]), cpu=float(b[index]),
                          abs_diff=float(diff[index])))
    return dict(tolerance=tolerance, n_compared=int(len(diff)),
                max_abs_diff=float(diff.max()) if len(diff) else 0.0,
                n_over_tolerance=int(len(over)), nan_mismatch=nan_mismatch,
                status_changed=status_changed,
                only_on_device=int(len(dev.index.difference(cpu.index))),
                only_on_cpu=int(len(cpu.index.difference(dev.index))),
                per_metric=per_metric, worst=worst)


def mean_differences(device_records, cpu_records) -> dict:
    """Per (model, method, metric): the mean of the ok values on each run, and the largest
    absolute difference of those means (the quantity the tables report)."""
    def means(frame):
        ok = frame[frame["status"] == "ok"]
        return ok.groupby(["model", "method", "metric"])["value"].mean()

    dev, cpu = means(device_records), means(cpu_records)
    both = dev.index.intersection(cpu.index)
    diff = (dev[both] - cpu[both]).abs()
    if not len(diff):
        return dict(n=0, max_abs_diff=0.0, worst=None)
    key = diff.idxmax()
    return dict(n=int(len(diff)), max_abs_diff=float(diff.max()),
                worst=dict(model=key[0], method=key[1], metric=key[2],
                           device=float(dev[key]), cpu=float(cpu[key])))


def best_methods(records) -> dict:
    """The method with the highest (lowest, for lower-is-better metrics) mean per
    (model, metric): to see whether a precision change would change the answer."""
    ok = records[records["status"] == "ok"]
    out = {}
    for (model, metric), group in ok.groupby(["model", "metric"]):
        means = group.groupby("method")["value"].mean()
        higher = bool(group["higher_is_better"].iloc[0]) if "higher_is_better" in group else True
        out[f"{model}/{metric}"] = str(means.idxmax() if higher else means.idxmin())
    return out


def selection_changes(device_records, cpu_records) -> dict:
    """Per (model, metric) whose samples differ between the runs (a different selection of
    images or grids): how many of the device run's sample ids the CPU run does not have."""
    def ids(frame):
        ok = frame[(frame["status"] == "ok") & (frame["sample_id"] != "mean")]
        return ok.groupby(["model", "metric"])["sample_id"].agg(lambda s: set(s.astype(str)))

    dev, cpu = ids(device_records), ids(cpu_records)
    out = {}
    for key in dev.index.union(cpu.index):
        a, b = dev.get(key, set()), cpu.get(key, set())
        if a != b:
            out["/".join(key)] = dict(n_device=len(a), n_cpu=len(b), not_on_cpu=len(a - b))
    return out


def prediction_changes(args, models) -> dict:
    """The selection pass itself: per shipped model, the test-set predictions on the device
    under the run's forward options against the CPU in fp32: top-1 changes, the largest logit
    difference, and whether the confidence ranking's top images differ."""
    from xai_bench.data import get_dataset
    from xai_bench.compute.inference import predict
    from xai_bench.metrics.common import confident_order
    from xai_bench.training.shipped import SHIPPED_DIR, read_manifest

    manifest = read_manifest()
    data = get_dataset(args.dataset, "test")
    out = {}
    for name in models:
        if name not in manifest:
            continue
        model = xai_bench.get_model(name, checkpoint=str(SHIPPED_DIR / manifest[name]["file"]))
        cpu = predict(model.eval(), data, device="cpu", batch_size=args.batch_size, cache=False)
        model = model.to(args.device)
        with forward_options(args.precision, compile=args.compile):
            dev = predict(model, data, device=args.device, batch_size=args.batch_size,
                          cache=False)
        k = min(args.n_images, len(data))
        # the perturbation metrics' selection: the k most confident correctly classified
        top_cpu = set(confident_order(cpu.log_confidence, cpu.correct)[:k].tolist())
        top_dev = set(confident_order(dev.log_confidence, dev.correct)[:k].tolist())
        out[name] = dict(n=len(data), argmax_changed=int((dev.predicted != cpu.predicted).sum()),
                         max_abs_logit_diff=float((dev.logits - cpu.logits).abs().max()),
                         accuracy=dict(device=dev.accuracy, cpu=cpu.accuracy),
                         top_confident=k, top_confident_changed=len(top_dev - top_cpu))
        del model
        _empty_cache(torch.device(args.device))
    return out


def suite_part(args) -> dict:
    t0 = time.perf_counter()
    dev_records, dev_info = run_suite(args, args.device, args.precision, args.compile)
    t1 = time.perf_counter()
    cpu_records, cpu_info = run_suite(args, "cpu")
    t2 = time.perf_counter()
    if args.save_records:
        folder = Path(args.save_records)
        folder.mkdir(parents=True, exist_ok=True)
        dev_records.to_csv(folder / "records_device.csv", index=False)
        cpu_records.to_csv(folder / "records_cpu.csv", index=False)
    comparison = compare_records(dev_records, cpu_records, args.tolerance)
    best_dev, best_cpu = best_methods(dev_records), best_methods(cpu_records)
    accuracy = {label: dict(device=dev_info["models"][label].get("test_accuracy"),
                            cpu=cpu_info["models"].get(label, {}).get("test_accuracy"))
                for label in dev_info["models"]}
    return dict(device=args.device, precision=args.precision, compile=args.compile,
                n_records=dict(device=int(len(dev_records)), cpu=int(len(cpu_records))),
                counts=dict(device=dev_info.get("counts", {}), cpu=cpu_info.get("counts", {})),
                comparison=comparison, means=mean_differences(dev_records, cpu_records),
                best_method_changed=sorted(k for k in best_dev if best_dev[k] != best_cpu.get(k)),
                selection_changed=selection_changes(dev_records, cpu_records),
                predictions=prediction_changes(args, args.models.split(",")),
                test_accuracy=accuracy,
                seconds=dict(device=t1 - t0, cpu=t2 - t1))


# ---- 2. the method-cost table -----------------------------------------------------------------

def cost_part(args, device: torch.device) -> dict:
    mc = load_method_cost()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in mc.SIZES]
    if unknown:
        raise SystemExit(f"gpu_check: unknown size(s) {unknown}; choose from "
                         f"{', '.join(mc.SIZES)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    methods = xai_bench.METHODS.resolve(args.cost_methods or args.methods)
    rows = []
    for size in sizes:
        repeats = args.repeats or getattr(mc, "DEFAULT_REPEATS", {}).get(size, 1)
        for model_name in mc.SIZES[size]:
            torch.manual_seed(0)
            model = xai_bench.get_model(model_name).to(device).eval()
            family = "bcos" if getattr(model, "is_dynamic_linear", False) else "conventional"
            for batch_size in batch_sizes:
                for name in [mc.InputGradient.name] + methods:
                    method = mc.InputGradient() if name == mc.InputGradient.name else \
                        xai_bench.get_method(name)
                    if name != mc.InputGradient.name and not method.applies_to(model):
                        continue
                    print(f"  cost {model_name} batch {batch_size} {name} ...", file=sys.stderr,
                          flush=True)
                    r = mc.measure(model, method, batch_size, repeats, device)
                    row = dict(size=size, model=model_name, family=family, batch=batch_size,
                               method=name, forward_ms=r["forward_ms"],
                               method_ms=r["method_ms"], cost=r["cost"],
                               flops=_finite(r["flops"]),
                               target=_finite(mc.target_for(name, method)))
                    if name == "vit_cx":
                        row["num_masks"] = _finite(getattr(method, "last_num_masks", math.nan))
                    rows.append(row)
            del model
            _empty_cache(device)
    return dict(sizes=sizes, batch_sizes=batch_sizes, rows=rows)


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- 3. throughput of the paper's B-cos models ------------------------------------------------

def twin_name(name: str) -> str | None:
    """The conventional twin of a B-cos model name (bcos_vit_b_87 -> vit_b_87)."""
    if name.startswith("bcos_"):
        twin = name[len("bcos_"):]
        return twin if twin in xai_bench.list_models() else None
    return None


def throughput_of(name: str, device: torch.device, batch: int, repeats: int,
                  precision: str, compile_: bool, with_inherent: bool) -> dict:
    """Images per second of ``name`` (random weights): plain fp32 forward, forward under
    the chosen options (when not plain fp32) and, with ``with_inherent``, the inherent
    explanation; median of ``repeats`` timed calls after one warm-up."""
    torch.manual_seed(0)
    model = xai_bench.get_model(name).to(device).eval()
    size = model.image_size if isinstance(model.image_size, (tuple, list)) else \
        (model.image_size, model.image_size)
    g = torch.Generator().manual_seed(0)
    x = model.encode(torch.rand(batch, 3, *size, generator=g)).to(device)
    targets = torch.randint(0, model.num_classes, (batch,), generator=g).to(device)

    def forward_fp32():
        with torch.no_grad():
            model(x)

    def forward_chosen():
        with forward_options(precision, compile=compile_), torch.no_grad(), \
                forward_autocast(device):
            forward_model(model)(x)

    inherent = xai_bench.get_method("inherent")

    def explain():
        inherent(model, x, targets)

    row = dict(model=name, image_size=list(size), batch=batch,
               parameters=int(sum(p.numel() for p in model.parameters())))
    plans = [("forward_fp32", forward_fp32)]
    chosen = precision + ("_compiled" if compile_ else "")
    if chosen != "fp32":
        plans.append((f"forward_{chosen}", forward_chosen))
    if with_inherent and inherent.applies_to(model):
        plans.append(("inherent", explain))
    for label, fn in plans:
        _timed(fn, device)  # warm-up (cuDNN autotuning, allocator)
        times = [_timed(fn, device) for _ in range(repeats)]
        row[f"{label}_images_per_s"] = batch / statistics.median(times)
    if "inherent_images_per_s" in row:
        row["inherent_cost_forwards"] = (row["forward_fp32_images_per_s"]
                                         / row["inherent_images_per_s"])
    return row


def throughput_part(args, device: torch.device) -> dict:
    rows = []
    for name in [n.strip() for n in args.throughput_models.split(",") if n.strip()]:
        for which, with_inherent in ((name, True), (twin_name(name), False)):
            if which is None:
                continue
            print(f"  throughput {which} ...", file=sys.stderr, flush=True)
            row = throughput_of(which, device, args.throughput_batch, args.throughput_repeats,
                                args.precision, args.compile, with_inherent)
            row["role"] = "bcos" if with_inherent else "twin"
            rows.append(row)
            _empty_cache(device)  # the model is gone with throughput_of's frame
    return dict(batch=args.throughput_batch, precision=args.precision, rows=rows)


# ---- 4. the paper's protocol, estimated -------------------------------------------------------

def maps_are_shared() -> bool:
    """Whether the runner explains the selected images once for all metrics of a model
    (:mod:`xai_bench.compute.map_cache`)."""
    return importlib.util.find_spec("xai_bench.compute.map_cache") is not None


def metric_forwards(n_images: int) -> dict:
    """The metrics' own forward passes per method beyond the explanations (the perturbed
    copies), with their defaults and the protocol's image count."""
    return {name: n_images * xai_bench.get_metric(name, n_images=n_images)
            .evaluate_forwards_per_image
            for name in ("pixel_perturbation", "deletion", "insertion")}


def explanations(n_grids: int, n_images: int, *, class_agnostic: bool, shared: bool) -> dict:
    """Images one method explains per model in the protocol (each one image's worth of a
    method call), by what they are for.

    Without map sharing every metric explains its own: every grid for each of its 4 classes,
    the selected images once per image metric, the trained model and ``max_stages``
    randomised copies (parameter randomisation), the true and a random class (random
    target). With sharing (:mod:`xai_bench.compute.map_cache`) the true-class maps of the selected
    images are computed once for mask localisation, the perturbation metrics, random target
    and the trained model of parameter randomisation, and a class-agnostic method explains a
    grid once for its four classes and needs no second map for the random class."""
    stages = xai_bench.get_metric("parameter_randomisation").params.get("max_stages") or 3
    grids = n_grids * (1 if shared and class_agnostic else 4)
    if shared:
        return {"grid_pointing_game": grids,
                "selected images (shared by the image metrics)": n_images,
                "random_target (the random class)": 0 if class_agnostic else n_images,
                "parameter_randomisation (randomised copies)": n_images * stages}
    return {"grid_pointing_game": grids, "mask_localisation": n_images,
            "pixel_perturbation": n_images, "deletion": n_images, "insertion": n_images,
            "parameter_randomisation": n_images * (1 + stages),
            "random_target": 2 * n_images}


def estimate_part(args, cost: dict, throughput: dict) -> dict:
    shared = maps_are_shared()
    forwards = metric_forwards(args.protocol_images)
    rows = cost.get("rows", [])
    if not rows or not throughput.get("rows"):
        return dict(note="needs the method costs and the throughput", pairs=[])
    # per family: the method costs of the largest size and batch measured
    order = {s: i for i, s in enumerate(("nano", "micro", "ti", "s", "b"))}
    costs, measured_on = {}, {}
    for family in ("bcos", "conventional"):
        mine = [r for r in rows if r["family"] == family and r["method"] != "(fwd+bwd)"]
        if not mine:
            continue
        top = max(mine, key=lambda r: (order.get(r["size"], -1), r["batch"]))
        costs[family] = {r["method"]: r["cost"] for r in mine
                         if r["size"] == top["size"] and r["batch"] == top["batch"]}
        measured_on[family] = f"{top['model']} batch {top['batch']}"
    pairs = []
    twins = {r["model"]: r for r in throughput["rows"] if r["role"] == "twin"}
    metric_key = f"forward_{args.precision}{'_compiled' if args.compile else ''}_images_per_s"
    for b_row in (r for r in throughput["rows"] if r["role"] == "bcos"):
        pair = dict(bcos=b_row["model"], models={})
        t_row = twins.get(twin_name(b_row["model"]) or "")
        for family, row in (("bcos", b_row), ("conventional", t_row)):
            if row is None or family not in costs:
                continue
            fwd = row["forward_fp32_images_per_s"]  # the unit of the method costs
            metric_fwd = row.get(metric_key, fwd)  # perturbed copies, selection: --precision
            per_method = {}
            for method, c in costs[family].items():
                agnostic = bool(getattr(xai_bench.METHODS.get(method), "class_agnostic",
                                        False)) if method in xai_bench.METHODS else False
                counts = explanations(args.protocol_grids, args.protocol_images,
                                      class_agnostic=agnostic, shared=shared)
                per_method[method] = dict(
                    explained=sum(counts.values()),
                    seconds=sum(counts.values()) * c / fwd + sum(forwards.values()) / metric_fwd)
            selection = args.dataset_size / metric_fwd
            total = sum(m["seconds"] for m in per_method.values()) + selection
            pair["models"][row["model"]] = dict(
                family=family, forward_images_per_s=fwd, metric_forward_images_per_s=metric_fwd,
                per_method=per_method, selection_seconds=selection, total_hours=total / 3600)
        pair["total_hours"] = sum(m["total_hours"] for m in pair["models"].values())
        # shared out over --gpus processes in parts of one batch (docs/distributed.md): the
        # work divides evenly down to the largest part, one batch of one unit
        n_parts = math.ceil(max(4 * args.protocol_grids, args.protocol_images) / args.batch_size)
        largest = max((m["seconds"] / n_parts for model in pair["models"].values()
                       for m in model["per_method"].values()), default=0.0)
        pair["wall_hours_on_gpus"] = max(pair["total_hours"] / args.gpus, largest / 3600)
        pairs.append(pair)
    return dict(protocol=dict(n_grids=args.protocol_grids, targets_per_grid=4,
                              n_images=args.protocol_images, dataset_size=args.dataset_size,
                              gpus=args.gpus, batch_size=args.batch_size),
                maps_shared=shared,
                explanations_per_method=explanations(args.protocol_grids, args.protocol_images,
                                                     class_agnostic=False, shared=shared),
                forwards_per_method=forwards, method_costs=costs,
                method_costs_measured_on=measured_on, pairs=pairs,
                how=("per model and method: explained images x the method's cost in forward "
                     "passes / fp32 forward images per s, + the metrics' perturbed copies / "
                     "forward images per s under --precision; + the selection pass over the "
                     "test set once per model. The costs come from the method-cost table "
                     "(random-init zoo ViT of the largest size and batch measured; ViT-CX's "
                     "mask count is that of random weights), the throughput from the ViT-87 "
                     "model of the pair; data loading, the statistics and the report are not "
                     "counted"))


# ---- the command ------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    env = dict(python=platform.python_version(), torch=torch.__version__,
               xai_bench=getattr(xai_bench, "__version__", None), device=str(device),
               cpu_threads=torch.get_num_threads(), platform=platform.platform())
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device),
                   cuda=torch.version.cuda,
                   matmul_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                   cudnn_tf32=bool(torch.backends.cudnn.allow_tf32),
                   gpu_memory_bytes=int(torch.cuda.get_device_properties(device).total_memory))
    return env


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="forward precision of the device run and the throughput")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward passes")
    g = p.add_argument_group("1. the quick suite")
    g.add_argument("--models", default="bcos_vit_nano,vit_nano")
    g.add_argument("--dataset", default="shapes",
                   help="data set spec (default: the embedded shapes; e.g. shapes:n=300 for a "
                        "smaller test split, evaluated with the shipped weights)")
    g.add_argument("--methods", default="all")
    g.add_argument("--metrics", default="all")
    g.add_argument("--n-grids", type=at_least(1), default=24)
    g.add_argument("--n-images", type=at_least(1), default=24)
    g.add_argument("--batch-size", type=at_least(1), default=32)
    g.add_argument("--save-records", default=None, metavar="DIR",
                   help="also write both runs' records to DIR/records_{device,cpu}.csv")
    g.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"absolute tolerance per record value (default {DEFAULT_TOLERANCE})")
    g = p.add_argument_group("2. method costs")
    g.add_argument("--sizes", default="b", help="model sizes of method_cost.py (default b)")
    g.add_argument("--batch-sizes", default="32")
    g.add_argument("--cost-methods", default=None, help="default: --methods")
    g.add_argument("--repeats", type=at_least(1), default=None)
    g = p.add_argument_group("3. throughput")
    g.add_argument("--throughput-models", default=DEFAULT_THROUGHPUT_MODELS)
    g.add_argument("--throughput-batch", type=at_least(1), default=32)
    g.add_argument("--throughput-repeats", type=at_least(1), default=3)
    g = p.add_argument_group("4. the paper's protocol")
    g.add_argument("--protocol-grids", type=at_least(1), default=250)
    g.add_argument("--protocol-images", type=at_least(1), default=250)
    g.add_argument("--gpus", type=at_least(1), default=8,
                   help="processes (one GPU each) for the wall-time estimate (default 8)")
    g.add_argument("--dataset-size", type=at_least(1), default=50000,
                   help="test images of the selection pass (ImageNet val: 50000)")
    p.add_argument("--skip", default="", help="parts to skip: suite,cost,throughput")
    return p


def check_arguments(parser, args, skip: set) -> None:
    """Every argument checked before any model is built (one-line errors, exit 2): the
    parts to skip, the suite's run options as `xai-bench run` checks them, the batch sizes and
    the files to write."""
    unknown = skip - {"suite", "cost", "throughput"}
    if unknown:
        parser.error(f"--skip: unknown part(s) {sorted(unknown)}; choose from suite, cost, "
                     f"throughput")
    if "suite" not in skip:
        check_run_options(models=args.models.split(","), methods=args.methods,
                          metrics=args.metrics, dataset=args.dataset, n_grids=args.n_grids,
                          n_images=args.n_images, batch_size=args.batch_size, device="cpu")
    for size in args.batch_sizes.split(","):
        if not size.strip().isdigit() or int(size) < 1:
            parser.error(f"--batch-sizes: {size.strip()!r} is not a positive integer")
    check_output_path(args.out, "--out")
    if args.save_records:
        check_output_dir(args.save_records, "--save-records")


@one_line_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        parser.error(str(e))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available (use --device cpu)")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    check_arguments(parser, args, skip)
    report = dict(config=vars(args), environment=environment(device))
    seconds = {}
    for short, part, run in (("suite", "suite", lambda: suite_part(args)),
                             ("cost", "method_cost", lambda: cost_part(args, device)),
                             ("throughput", "throughput", lambda: throughput_part(args, device))):
        if short in skip:
            report[part] = dict(skipped=True)
            continue
        print(f"gpu_check: {part} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        report[part] = run()
        seconds[part] = time.perf_counter() - t
    report["protocol_estimate"] = estimate_part(args, report["method_cost"],
                                                report["throughput"])
    report["seconds"] = seconds
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n",
                              encoding="utf-8")
    print_summary(report)
    print(f"written: {args.out}")
    return 0


def print_summary(report: dict) -> None:
    suite = report.get("suite", {})
    if "comparison" in suite:
        c, m = suite["comparison"], suite["means"]
        print(f"suite ({suite['device']}, {suite['precision']} vs cpu fp32): {c['n_compared']} "
              f"records compared, max |diff| {c['max_abs_diff']:.3g}, {c['n_over_tolerance']} "
              f"over {c['tolerance']:g}; only on device {c['only_on_device']}, only on cpu "
              f"{c['only_on_cpu']}, status changed {c['status_changed']}; max |diff| of means "
              f"{m['max_abs_diff']:.3g}; best method changed: "
              f"{', '.join(suite['best_method_changed']) or 'none'}; samples differ in "
              f"{len(suite['selection_changed'])} (model, metric) cells")
        for name, p in suite.get("predictions", {}).items():
            print(f"  selection pass of {name}: {p['argmax_changed']}/{p['n']} top-1 changed, "
                  f"max |logit diff| {p['max_abs_logit_diff']:.3g}, "
                  f"{p['top_confident_changed']}/{p['top_confident']} of the most confident "
                  f"images changed")
    cost = report.get("method_cost", {})
    if cost.get("rows"):
        print(f"{'model':16s} {'batch':>5s} {'method':11s} {'fwd ms/img':>10s} "
              f"{'method ms/img':>13s} {'cost (fwd)':>10s}")
        for r in cost["rows"]:
            print(f"{r['model']:16s} {r['batch']:5d} {r['method']:11s} {r['forward_ms']:10.3f} "
                  f"{r['method_ms']:13.3f} {r['cost']:10.2f}")
    for r in report.get("throughput", {}).get("rows", []):
        extra = "".join(f", {k[:-len('_images_per_s')]} {v:.1f} img/s" for k, v in r.items()
                        if k.endswith("_images_per_s"))
        print(f"throughput {r['model']} (batch {r['batch']}){extra}")
    gpus = report.get("protocol_estimate", {}).get("protocol", {}).get("gpus")
    for pair in report.get("protocol_estimate", {}).get("pairs", []) or []:
        parts = ", ".join(f"{name} {m['total_hours']:.2f} h" for name, m in
                          pair["models"].items())
        print(f"paper protocol, pair of {pair['bcos']}: {pair['total_hours']:.2f} h ({parts}); "
              f"on {gpus} GPUs about {pair['wall_hours_on_gpus']:.2f} h")


if __name__ == "__main__":
    sys.exit(main())
