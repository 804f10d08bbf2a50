"""The benchmark runner: crosses models × methods × metrics, batched, resumable.

Layout of a run directory (see :mod:`xai_bench.results`): every finished
(model, method, metric) cell is committed atomically to ``cells/``; a rerun of the same
command finds the same directory (its name is derived from the resolved configuration),
skips finished cells and rebuilds ``records.csv`` / ``curves.csv`` / ``run.json`` from the cell
files, so an interrupted run loses at most the cell in progress.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from xai_bench.errors import ConfigError
from xai_bench.registry import METHODS, METRICS, MODELS, RegistryError
from xai_bench.results import (
    atomic_write_arrays, atomic_write_csv, atomic_write_json, curves_frame, file_safe,
    read_arrays, read_records, records_frame,
)

#: The embedded default: the small B-cos ViT and its conventional twin on synthetic shapes.
DEFAULT_MODELS = ("bcos_vit_nano", "vit_nano")
DEFAULT_DATASET = "shapes"


class RunError(ConfigError):
    """A run cannot start (bad configuration); the message says what to fix."""


@dataclass
class RunConfig:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    methods: list[str] = field(default_factory=lambda: ["all"])
    metrics: list[str] = field(default_factory=lambda: ["all"])
    dataset: str = DEFAULT_DATASET
    checkpoints: dict = field(default_factory=dict)
    n_grids: int = 24
    n_images: int = 24
    batch_size: int = 32
    device: str = "auto"
    seed: int = 0
    out: str = "results"
    name: str | None = None
    untrained: bool = False
    train_epochs: int | None = None
    method_params: dict = field(default_factory=dict)

    def resolved(self) -> "RunConfig":
        """Names, globs, ``all`` and metric categories expanded to registered names."""
        models = MODELS.resolve(self.models)
        if not self.untrained and "all" in _parts(self.models):
            # `all` means every model that can run here: those given a checkpoint, and the
            # default pair on the embedded data (trained on first use). Named models still
            # fail loudly without a checkpoint.
            models = [m for m in models if m in self.checkpoints or
                      (m in DEFAULT_MODELS and self.dataset == DEFAULT_DATASET)]
            if not models:
                raise RegistryError(f"--models all found no model to run on '{self.dataset}': "
                                    f"pass --checkpoint NAME=PATH for the models to "
                                    f"benchmark, or --untrained")
        methods = METHODS.resolve(self.methods)
        metrics = resolve_metrics(self.metrics)
        return RunConfig(**{**asdict(self), "models": models, "methods": methods,
                            "metrics": metrics, "device": resolve_device(self.device)})

    def identity(self) -> dict:
        """What determines the results (not where they go or on which device)."""
        d = asdict(self)
        for key in ("out", "name", "device", "batch_size"):
            d.pop(key)
        return d

    def run_name(self) -> str:
        if self.name:
            return self.name
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode())
        return f"run-{digest.hexdigest()[:10]}"


def _parts(spec) -> list[str]:
    items = [spec] if isinstance(spec, str) else list(spec)
    return [p.strip() for item in items for p in str(item).split(",")]


def resolve_metrics(spec) -> list[str]:
    """Metric names, globs, ``all``, or a category (e.g. ``localisation``)."""
    items = [p for p in _parts(spec) if p]
    categories = {METRICS.meta(n).get("category") for n in METRICS.list()}
    out: list[str] = []
    for item in items:
        if item in categories:
            names = [n for n in METRICS.list() if METRICS.meta(n).get("category") == item]
        else:
            names = METRICS.resolve([item])
        out += [n for n in names if n not in out]
    return out


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda requested but no CUDA device is available; "
                       "use --device cpu or auto")
    if not (device == "cpu" or device.startswith("cuda")):
        raise RunError(f"unknown device '{device}'; use auto, cpu or cuda")
    return device


def cell_key(model: str, method: str, metric: str) -> str:
    return f"{model}__{method}__{metric}"


def cell_seed(seed: int, key: str) -> int:
    """Per-cell seed: a cell's results do not depend on which cells ran before it."""
    return (seed * 1_000_003 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)) % 2**31


class FiniteCheck:
    """Wraps a method so that non-finite maps become an error for that cell."""

    def __init__(self, method):
        self.method = method
        self.name, self.params = method.name, method.params

    def applies_to(self, model):
        return self.method.applies_to(model)

    def __call__(self, model, x, targets):
        maps = self.method(model, x, targets)
        if not torch.isfinite(maps).all():
            raise FloatingPointError(f"method '{self.name}' returned non-finite maps")
        return maps

    def __getattr__(self, item):
        return getattr(self.method, item)


class Runner:
    def __init__(self, config: RunConfig, progress: bool = True, log=print):
        try:
            self.config = config.resolved()
        except RegistryError as e:
            raise RunError(str(e)) from None
        self.progress, self.log = progress, log
        self.run_dir = Path(config.out) / self.config.run_name()
        self.cells_dir = self.run_dir / "cells"
        self._datasets: dict = {}

    # ---- helpers -----------------------------------------------------------------------
    def _cell_path(self, key: str) -> Path:
        return self.cells_dir / f"{file_safe(key)}.json"

    def _examples_path(self, key: str) -> Path:
        return self.cells_dir / f"{file_safe(key)}.npz"

    def _model_info_path(self, model: str) -> Path:
        return self.cells_dir / f"model__{file_safe(model)}.json"

    def dataset(self, image_size=None):
        """The test split, at ``image_size`` (a model's input size) where the data set can be
        resized (ImageNet/ImageFolder: resize + centre crop; shapes: drawn at that size), else
        at its native size; one instance per size."""
        key = None if image_size is None else tuple(image_size)
        if key not in self._datasets:
            from xai_bench.data import get_dataset

            self._datasets[key] = get_dataset(self.config.dataset, split="test",
                                              image_size=key)
        return self._datasets[key]

    def load_model(self, name: str):
        cfg = self.config
        ckpt = cfg.checkpoints.get(name)
        if ckpt is not None:
            import xai_bench

            model = xai_bench.get_model(name, checkpoint=ckpt)
            info = {"checkpoint": str(ckpt), **getattr(model, "checkpoint_info", {}).get(
                "metrics", {})}
        elif name in DEFAULT_MODELS and cfg.dataset == DEFAULT_DATASET and not cfg.untrained:
            from xai_bench.train import cached_default_model

            model, info = cached_default_model(name, DEFAULT_DATASET, epochs=cfg.train_epochs,
                                               progress=self.progress, log=self.log,
                                               device=cfg.device)
        elif cfg.untrained:
            # seeded, so that a resumed run explains the same random model
            torch.manual_seed(cell_seed(cfg.seed, f"model__{name}"))
            model, info = MODELS.get(name)(), {"checkpoint": None, "untrained": True}
        else:
            raise RunError(f"model '{name}' has no checkpoint for dataset '{cfg.dataset}': pass "
                           f"--checkpoint {name}=PATH (train one with `xai-bench train "
                           f"{name} --dataset {cfg.dataset} --out PATH`) or --untrained")
        model.name = name
        return model.to(cfg.device).eval(), info

    # ---- the run -----------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.config
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        todo = [(mo, me, mt) for mo in cfg.models for mt in cfg.metrics for me in cfg.methods]
        done = sum(self._cell_path(cell_key(*t)).exists() for t in todo)
        self.log(f"run directory: {self.run_dir} ({done}/{len(todo)} cells already done)")
        bar = _progress(total=len(todo), initial=done, enabled=self.progress)
        for model_name in cfg.models:
            pending = [(me, mt) for mt in cfg.metrics for me in cfg.methods
                       if not self._cell_path(cell_key(model_name, me, mt)).exists()]
            if not pending and self._model_info_path(model_name).exists():
                continue
            model, info = self.load_model(model_name)
            if not self._model_info_path(model_name).exists():
                info = {**info, **self._model_summary(model)}
                atomic_write_json(self._model_info_path(model_name), info)
            for metric_name in cfg.metrics:
                methods = [me for me, mt in pending if mt == metric_name]
                if methods:
                    self._run_metric(model, model_name, metric_name, methods, bar)
        bar.close()
        return self.finish(time.time() - started)

    def _model_summary(self, model) -> dict:
        from xai_bench.train import evaluate

        t = time.time()
        acc = evaluate(model, self.dataset(model.image_size),
                       batch_size=max(self.config.batch_size, 128), device=self.config.device)
        return {"family": model.family, "parameters": model.num_parameters(),
                "test_accuracy": acc, "eval_time_s": round(time.time() - t, 3),
                "config": getattr(model, "config", {})}

    def _run_metric(self, model, model_name, metric_name, methods, bar):
        cfg = self.config
        metric = METRICS.get(metric_name)(**self._metric_params(metric_name))
        prepared, prepare_error, prepare_time = None, None, 0.0
        t = time.time()
        try:
            prepared = metric.prepare(model, self.dataset(model.image_size), device=cfg.device,
                                      batch_size=cfg.batch_size, seed=cfg.seed)
        except Exception as e:  # recorded per cell: skipped if not applicable, else error
            prepare_error = e
        prepare_time = time.time() - t
        for method_name in methods:
            key = cell_key(model_name, method_name, metric_name)
            bar.set_description(key)
            method = METHODS.get(method_name)(**cfg.method_params.get(method_name, {}))
            base = dict(model=model_name, method=method_name, metric=metric_name,
                        category=metric.category, higher_is_better=metric.higher_is_better)
            t = time.time()
            curves, examples = [], {}
            if prepare_error is not None:
                status = "skipped" if _not_applicable(prepare_error) else "error"
                records = [dict(base, sample_id="-", target=-1, value=math.nan, status=status,
                                message=_one_line(prepare_error))]
            elif not method.applies_to(model):
                records = [dict(base, sample_id="-", target=-1, value=math.nan,
                                status="skipped",
                                message=f"method '{method_name}' does not apply to "
                                        f"{model.family} model '{model_name}'")]
            else:
                torch.manual_seed(cell_seed(cfg.seed, key))
                try:
                    result = metric.evaluate(model, FiniteCheck(method), prepared,
                                             device=cfg.device, batch_size=cfg.batch_size)
                    records = [dict(base, **r, status="ok", message="") for r in result.records]
                    curves = [dict(model=model_name, method=method_name, metric=metric_name,
                                   **c) for c in result.curves]
                    examples = result.examples
                except Exception as e:
                    records = [dict(base, sample_id="-", target=-1, value=math.nan,
                                    status="error", message=_one_line(e))]
            if examples:  # written before the cell file, whose existence marks completion
                atomic_write_arrays(self._examples_path(key), examples)
            cell = dict(key=key, records=records, curves=curves,
                        method_params=dict(method.params), metric_params=dict(metric.params),
                        time_s=round(time.time() - t, 4),
                        prepare_time_s=round(prepare_time, 4))
            atomic_write_json(self._cell_path(key), cell)
            bar.update(1)

    def _metric_params(self, metric_name: str) -> dict:
        cls = METRICS.get(metric_name)
        import inspect

        sig = inspect.signature(cls.__init__)
        params = {}
        for key in ("n_grids", "n_images"):
            if key in sig.parameters:
                params[key] = getattr(self.config, key)
        if "seed" in sig.parameters:
            params["seed"] = self.config.seed
        return params

    def finish(self, wall_s: float) -> dict:
        """Assemble the tables and run.json from the cell files of this configuration."""
        from xai_bench.provenance import collect_provenance

        cfg = self.config
        rows, curves, timings, examples = [], [], {}, {}
        for mo in cfg.models:
            for mt in cfg.metrics:
                for me in cfg.methods:
                    key = cell_key(mo, me, mt)
                    cell = json.loads(self._cell_path(key).read_text(encoding="utf-8"))
                    rows += cell["records"]
                    if self._examples_path(key).exists():
                        for name, value in read_arrays(self._examples_path(key)).items():
                            examples[f"{mo}/{me}/{mt}/{name}"] = value
                    curves += cell["curves"]
                    timings[key] = {"time_s": cell["time_s"],
                                    "prepare_time_s": cell["prepare_time_s"],
                                    "method_params": cell["method_params"],
                                    "metric_params": cell["metric_params"]}
        models = {mo: json.loads(self._model_info_path(mo).read_text(encoding="utf-8"))
                  for mo in cfg.models}
        records = records_frame(rows)
        atomic_write_csv(self.run_dir / "records.csv", records)
        atomic_write_csv(self.run_dir / "curves.csv", curves_frame(curves))
        if examples:
            atomic_write_arrays(self.run_dir / "examples.npz", examples)
        dataset = self.dataset()
        info = dict(config=asdict(cfg), seeds={"seed": cfg.seed}, models=models,
                    dataset=dict(name=cfg.dataset, classes=list(dataset.classes),
                                 image_size=list(dataset.image_size)),
                    timings=dict(last_invocation_wall_s=round(wall_s, 3),
                                 cells_total_s=round(sum(t["time_s"] for t in timings.values()),
                                                     3),
                                 cells=timings),
                    provenance=collect_provenance(cfg.device),
                    counts=records["status"].value_counts().to_dict())
        atomic_write_json(self.run_dir / "run.json", info)
        return info


def summary_table(run_dir) -> "object":
    """Mean value per (metric, model, method) of the ok records: a pandas pivot table."""
    frame = read_records(run_dir)
    ok = frame[frame["status"] == "ok"]
    if "statistic" in ok:  # perturbation metrics: report the paper's mean-curve quantity
        ok = ok[(ok["statistic"].isna()) | (ok["statistic"] != "per_image")]
    return ok.pivot_table(index=["metric", "model"], columns="method", values="value",
                          aggfunc="mean")


def _not_applicable(error: Exception) -> bool:
    return type(error).__name__ in ("MetricNotApplicable", "MethodNotApplicable")


def _one_line(error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:500]


class _NoBar:
    def update(self, n=1):
        pass

    def set_description(self, text):
        pass

    def close(self):
        pass


def _progress(total, initial, enabled):
    import sys

    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="cell", dynamic_ncols=True)
