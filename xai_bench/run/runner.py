"""The benchmark runner: crosses models × methods × metrics, batched, resumable, and never
reuses a stale result.

A **cell** is one (model, method, metric). Its **identity** is everything that determines its
numbers: the model (checkpoint SHA-256, or the weights' digest for a model object, or the seed
of an untrained one, and the source of its code), the method and the metric (registered name,
implementing class, parameters *after defaults*, the source digest of their xai-bench modules
or, for plugins, their distribution and version and module file), the data set, the seed, the
sample counts, the batch size, the device type and the versions of xai-bench and torch. Each
finished cell is committed with its identity and a checksum (:mod:`xai_bench.run.store`). A
rerun reuses exactly the cells whose stored identity equals the new one and recomputes the
rest, saying why in one line per reason (``3 cells stale: intgrad parameters changed (n_steps
50 → 20)``). Cells that ended in ``error`` are retried; garbled cell files are recomputed.

Everything a run needs is checked before any file is created or any model is loaded or
trained (:meth:`Runner.__init__`): unknown names, ``--method-arg`` keys and types, checkpoint
paths, the run name. A plugin that fails to load or construct becomes ``error`` records for its
own cells; a method that raises or violates its contract (shape, dtype, NaN) likewise.

The run directory is locked while a process works in it; SIGINT/SIGTERM end the run with one
line, keeping every committed cell.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xai_bench.storage import atomic_io
from xai_bench.run.distributed import claim, clear_claims, ranks
from xai_bench.errors import (
    ConfigError, ContractError, Interrupted, NotApplicable, XaiBenchError, one_line,
)
from xai_bench.storage.identity import (
    source_digest, code_identity, dataset_spec_fingerprint, differences, digest, file_sha256,
    module_closure, python_identity, weights_digest,
)
from xai_bench.contracts.method import DEFAULT_METHOD_COST, check_method
from xai_bench.contracts.metric import check_metric, is_metric_function
from xai_bench.contracts.model import check_model
from xai_bench.run.interrupts import terminate_as_interrupt
from xai_bench.contracts.parameters import build_entry, entry_parameters, resolve_parameters
from xai_bench.registry import METHODS, METRICS, MODELS, RegistryError
from xai_bench.storage.results import curves_frame, file_safe, records_frame
from xai_bench.run.store import MemoryStore, RunStore
from xai_bench.compute.seeding import derive_seed

#: The embedded default: the small B-cos ViT and its conventional twin on synthetic shapes.
DEFAULT_MODELS = ("bcos_vit_nano", "vit_nano")
DEFAULT_DATASET = "shapes"
#: where the parts of a cell computed in parts wait for the rest (docs/distributed.md)
PARTS_FOLDER = "parts"
#: options the runner passes to metric constructors that take them
METRIC_RUN_OPTIONS = ("n_grids", "n_images", "seed")


class RunError(ConfigError):
    """A run cannot start (bad configuration); the message says what to fix."""


@dataclass
class RunConfig:
    """What to run. ``models``/``methods``/``metrics`` hold names, globs, ``all``, metric
    categories or (through :func:`xai_bench.evaluate`) objects; ``dataset`` a spec or a data
    set object."""

    models: list = field(default_factory=lambda: list(DEFAULT_MODELS))
    methods: list = field(default_factory=lambda: ["all"])
    metrics: list = field(default_factory=lambda: ["all"])
    dataset: object = DEFAULT_DATASET
    checkpoints: dict = field(default_factory=dict)
    n_grids: int = 24
    n_images: int = 24
    batch_size: int = 32
    device: str = "auto"
    seed: int = 0
    out: str | None = "results"
    name: str | None = None
    untrained: bool = False
    train_epochs: int | None = None
    method_params: dict = field(default_factory=dict)
    replicates: int = 1
    metric_params: dict = field(default_factory=dict)
    #: forward-only work (perturbed copies, the selection pass, ViT-CX's masked forwards) in
    #: "fp32" or "bf16" autocast, optionally through torch.compile (xai_bench.compute.precision);
    #: explanations always run in float32
    precision: str = "fp32"
    compile: bool = False

    def spec(self) -> dict:
        """The configuration as plain JSON (objects by name): what names the run directory."""
        return {"models": [_label(m) for m in self.models],
                "methods": [_label(m) for m in self.methods],
                "metrics": [_label(m) for m in self.metrics],
                "dataset": _label(self.dataset), "checkpoints": dict(self.checkpoints),
                "n_grids": self.n_grids, "n_images": self.n_images, "seed": self.seed,
                "untrained": self.untrained, "train_epochs": self.train_epochs,
                "method_params": self.method_params,
                **({"replicates": self.replicates} if self.replicates != 1 else {}),
                **({"metric_params": self.metric_params} if self.metric_params else {}),
                **self.forward_spec()}

    def forward_spec(self) -> dict:
        """The forward options where they differ from the default (fp32, not compiled), so
        that the default configuration keeps its run name and cell identities."""
        return {**({"precision": self.precision} if self.precision != "fp32" else {}),
                **({"compile": True} if self.compile else {})}

    def run_name(self) -> str:
        if self.name:
            return self.name
        return f"run-{digest(self.spec())[:10]}"


def _label(obj) -> str:
    if isinstance(obj, str):
        return obj
    return str(getattr(obj, "name", None) or getattr(obj, "__name__", None)
               or type(obj).__name__)


def _parts(spec) -> list:
    """Comma-separated strings split; objects kept."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        if isinstance(item, str):
            out += [p.strip() for p in item.split(",")]
        else:
            out.append(item)
    return out


def _names_or_objects(kind: str, registry, spec) -> list:
    parts = _parts(spec)
    if not [p for p in parts if not isinstance(p, str) or p]:
        raise RunError(f"no {kind}s given; pass names, globs or 'all' "
                       f"(`xai-bench list {kind}s`)")
    out: list = []
    for part in parts:
        if isinstance(part, str):
            if part:
                out += [n for n in registry.resolve([part]) if n not in out]
        else:
            out.append(part)
    return out


def _categories() -> dict:
    """metric name -> its declared category (plugins that fail to load are left out)."""
    out = {}
    for name in METRICS.list():
        try:
            out[name] = METRICS.card(name).category
        except RegistryError:
            pass
    return out


def resolve_metrics(spec) -> list:
    """Metric names, globs, ``all``, a category (e.g. ``localisation``) or metric objects."""
    parts = _parts(spec)
    categories = _categories() if any(isinstance(p, str) and p not in METRICS
                                      for p in parts) else {}
    expanded: list = []
    for part in parts:
        if isinstance(part, str) and part in set(categories.values()):
            expanded += [n for n, c in categories.items() if c == part]
        else:
            expanded.append(part)
    return _names_or_objects("metric", METRICS, expanded)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device.startswith("cuda")):
        raise RunError(f"unknown device '{device}'; use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda requested but no CUDA device is available; "
                       "use --device cpu or auto")
    return device


def cell_key(model: str, method: str, metric: str) -> str:
    return f"{model}__{method}__{metric}"


def check_run_name(name: str) -> str:
    """A run name is one path component inside ``--out``."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith(".")
            or file_safe(name) != name or name != name.strip()):
        raise RunError(f"run name {name!r} is not a plain directory name; use letters, digits, "
                       f"'-' and '_' (the run directory stays inside --out)")
    return name


# ------------------------------------------------------------------------ resolved parts
def replicate_label(name: str, replicate: int) -> str:
    """How a replicate is named in cell keys and run.json: ``name`` for replicate 0,
    ``name@r`` otherwise (the records keep ``model`` and ``replicate`` apart)."""
    return name if not replicate else f"{name}@{replicate}"


@dataclass
class ModelSpec:
    label: str                     # cell-key name: "vit_nano" or "vit_nano@1"
    name: str                      # registered name (the records' `model`)
    obj: object = None             # a model object given through xai_bench.evaluate
    replicate: int = 0


@dataclass
class MethodEntry:
    name: str
    method: object = None          # a CheckedMethod, or None when it failed to load
    params: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)
    error: str | None = None       # why it could not be loaded or constructed


@dataclass
class MetricEntry:
    name: str
    metric: object
    params: dict
    identity: dict


def _plugin(identity: dict) -> dict | None:
    code = identity.get("code") or {}
    if code.get("package") == "xai-bench" or not code:
        return None
    return {"distribution": code.get("distribution"), "version": code.get("version"),
            "class": code.get("class")}


class Runner:
    """Validates a :class:`RunConfig` at construction (nothing is written or loaded), then
    :meth:`run` computes the cells that are missing or stale."""

    def __init__(self, config: RunConfig, progress: bool = True, log=print):
        self.config = config
        self.progress, self.log = progress, log
        self._datasets: dict = {}
        self._models: dict = {}
        self._total = self._kept = 0
        self.computed: list = []
        self.reasons: Counter = Counter()
        #: images not explained again thanks to the shared maps (:mod:`xai_bench.compute.map_cache`)
        self.maps_saved = 0
        #: perturbed copies not forwarded again thanks to the shared forwards (same module)
        self.copies_saved = 0
        self.cells_wall_s = 0.0
        #: model label -> (its prepared selections, its perturbed copies' confidences)
        self._model_scopes: dict = {}
        try:
            self._resolve()
        except RegistryError as e:
            raise RunError(str(e)) from None
        self.run_name = check_run_name(config.run_name())
        # torchrun's environment: this process's rank (one process without it)
        self.ranks = ranks(self.device)
        self.device = self.ranks.device(self.device)
        if not self.ranks.is_main:
            self.log = lambda *_: None  # rank 0 speaks for the job
        if self.ranks.distributed and config.out is None:
            raise RunError("a multi-process run (torchrun) shares its cells through the run "
                           "directory: give --out on a file system every process sees")
        if config.out is None:
            self.store, self.run_dir = MemoryStore(), None
            self.parts = MemoryStore()
        else:
            out = Path(config.out)
            if out.exists() and not out.is_dir():
                raise RunError(f"--out {out} is a file; give a directory for the results")
            self.run_dir = out / self.run_name
            self.store = RunStore(self.run_dir)
            #: the parts of cells computed in parts, until their cell is committed
            self.parts = RunStore(self.run_dir, folder=PARTS_FOLDER)

    # ---- validation ----------------------------------------------------------------------
    def _resolve(self):
        cfg = self.config
        for key in ("n_grids", "n_images", "batch_size"):
            value = getattr(cfg, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RunError(f"{key} must be a positive integer, got {value!r}")
        self.device = resolve_device(cfg.device)
        from xai_bench.compute.precision import PRECISIONS

        if cfg.precision not in PRECISIONS:
            raise RunError(f"unknown precision {cfg.precision!r}; use one of "
                           f"{', '.join(PRECISIONS)}")
        if not isinstance(cfg.replicates, int) or isinstance(cfg.replicates, bool) or \
                cfg.replicates < 1:
            raise RunError(f"replicates must be a positive integer, got {cfg.replicates!r}")
        models = self._resolve_models()
        model_names = [name for name, _ in models]
        if len(set(model_names)) != len(model_names):
            raise RunError(f"two models share a name in {model_names}; give each a distinct "
                           f"`name` attribute")
        if cfg.replicates > 1 and any(obj is not None for _, obj in models):
            raise RunError("--replicates needs models given by name (objects are one replicate "
                           "each); pass the copies as separate models instead")
        self.checkpoints = self._resolve_checkpoints(model_names)
        self.model_specs = [ModelSpec(replicate_label(name, r), name, obj, r)
                            for name, obj in models for r in range(cfg.replicates)]
        for label, path in self.checkpoints.items():
            # a corrupt, foreign or wrong-architecture checkpoint fails now, before any work
            # (CheckpointError, one line); the model is loaded again when its cells run
            import xai_bench

            xai_bench.get_model(label.partition("@")[0], checkpoint=path)
        self.dataset()  # an unknown spec or a missing path fails here, before any work
        self.methods = self._resolve_methods()
        self.metrics = self._resolve_metrics()
        for spec in self.model_specs:
            if spec.obj is None:
                self._check_model_source(spec)

    def _resolve_models(self) -> list:
        cfg = self.config
        parts = _parts(cfg.models)
        names = _names_or_objects("model", MODELS, parts)
        if not cfg.untrained and "all" in [p for p in parts if isinstance(p, str)]:
            # `all` means every model that can run here: those given a checkpoint, and the
            # default pair on the embedded data (trained on first use).
            given = {key.partition("@")[0] for key in cfg.checkpoints}
            names = [m for m in names if not isinstance(m, str) or m in given or
                     (m in DEFAULT_MODELS and cfg.dataset == DEFAULT_DATASET)]
            if not names:
                raise RunError(f"--models all found no model to run on '{_label(cfg.dataset)}': "
                               f"pass --checkpoint NAME=PATH for the models to benchmark, or "
                               f"--untrained")
        return [(m, None) if isinstance(m, str) else (_label(m), m) for m in names]

    def _resolve_checkpoints(self, model_names) -> dict:
        """``{replicate label: path}`` from ``--checkpoint NAME[@R]=PATH`` (a glob gives one
        file per replicate, in sorted order)."""
        import glob as globbing

        cfg = self.config
        out: dict = {}
        for key, value in cfg.checkpoints.items():
            name, at, rep = str(key).partition("@")
            if name not in model_names:
                raise RunError(f"--checkpoint given for {name}, which this run does not "
                               f"benchmark (models: {', '.join(model_names)}); add it to "
                               f"--models or drop the checkpoint")
            if at and not (rep.isdigit() and int(rep) < cfg.replicates):
                raise RunError(f"--checkpoint {key}: the replicate must be 0..."
                               f"{cfg.replicates - 1} (--replicates {cfg.replicates})")
            text = str(Path(value).expanduser())
            if any(c in text for c in "*?[") and not at:
                files = sorted(globbing.glob(text))
                if len(files) != cfg.replicates:
                    raise RunError(f"--checkpoint {name}={value} matches {len(files)} file(s); "
                                   f"--replicates {cfg.replicates} needs exactly "
                                   f"{cfg.replicates}")
                out.update({replicate_label(name, r): f for r, f in enumerate(files)})
                continue
            p = Path(text)
            if not p.exists():
                raise RunError(f"checkpoint {p} (for {key}) does not exist; check the path or "
                               f"train one with `xai-bench train {name} --out {p}`")
            if not p.is_file():
                raise RunError(f"checkpoint {p} (for {key}) is not a file")
            out[replicate_label(name, int(rep) if at else 0)] = str(p)
        for name in {k.partition("@")[0] for k in out}:
            missing = [r for r in range(cfg.replicates) if replicate_label(name, r) not in out]
            if missing:
                raise RunError(f"model {name} has no checkpoint for replicate(s) "
                               f"{', '.join(map(str, missing))} of --replicates "
                               f"{cfg.replicates}: pass --checkpoint {name}@R=PATH for each, or "
                               f"a glob (train them with `xai-bench train {name} --seed R`)")
        return out

    def _check_model_source(self, spec):
        cfg, name = self.config, spec.name
        if spec.label in self.checkpoints or cfg.untrained:
            return
        if name in DEFAULT_MODELS and cfg.dataset == DEFAULT_DATASET:
            return
        data = _label(cfg.dataset)
        raise RunError(f"model '{name}' needs weights to be benchmarked on '{data}': pass "
                       f"--checkpoint {name}=PATH (train one with `xai-bench train {name} "
                       f"--dataset {data} --out PATH`) or --untrained")

    def _resolve_methods(self) -> list:
        cfg = self.config
        chosen = _names_or_objects("method", METHODS, cfg.methods)
        _check_params_targets(cfg.method_params, chosen, METHODS, "method", "--methods")
        entries = []
        for item in chosen:
            if not isinstance(item, str):
                checked = check_method(item)
                entries.append(MethodEntry(checked.name, checked, dict(checked.params),
                                           {"name": checked.name, "params": checked.params,
                                            "code": code_identity(checked.method)}))
                continue
            given = cfg.method_params.get(item, {})
            try:
                entry = METHODS.get(item)
            except RegistryError as e:  # a plugin that fails to import: its own cells fail
                entries.append(MethodEntry(item, error=str(e),
                                           identity={"name": item, "load_error": str(e)}))
                continue
            resolve_parameters("method", item, entry, given)  # usage errors before any work
            try:
                obj, params = build_entry("method", item, entry, given)
                checked = check_method(obj, name=item)
            except XaiBenchError as e:
                if isinstance(e, ConfigError):
                    raise
                entries.append(MethodEntry(item, error=one_line(e),
                                           identity={"name": item, "load_error": one_line(e)}))
                continue
            except Exception as e:  # a plugin whose constructor raises
                message = f"method '{item}' failed to construct: {type(e).__name__}: {one_line(e)}"
                entries.append(MethodEntry(item, error=message,
                                           identity={"name": item, "load_error": message}))
                continue
            checked.params = params
            entries.append(MethodEntry(item, checked, params,
                                       {"name": item, "params": params,
                                        "code": code_identity(entry)}))
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise RunError(f"two methods share a name in {names}; give each a distinct `name`")
        return entries

    def _resolve_metrics(self) -> list:
        cfg = self.config
        entries = []
        chosen = resolve_metrics(cfg.metrics)
        _check_params_targets(cfg.metric_params, chosen, METRICS, "metric", "--metric")
        for item in chosen:
            if isinstance(item, str):
                cls = METRICS.get(item)
                known = entry_parameters(cls, "metric")
                given = {k: getattr(cfg, k) for k in METRIC_RUN_OPTIONS if k in known}
                given.update(cfg.metric_params.get(item, {}))  # explicit values win
                resolve_parameters("metric", item, cls, given)  # usage errors before any work
                try:
                    if is_metric_function(cls):  # a plain function scored on the maps
                        from xai_bench.metrics.function import FunctionMetric

                        params = resolve_parameters("metric", item, cls, given)
                        metric = FunctionMetric(cls, item, **params)
                    else:
                        metric, params = build_entry("metric", item, cls, given)
                except (TypeError, ValueError) as e:  # the constructor's own validation
                    if isinstance(e, XaiBenchError):
                        raise
                    raise ConfigError(f"metric '{item}': {one_line(e)}") from None
                name, code = item, cls
            else:
                metric, name = item, _label(item)
                if is_metric_function(item):
                    from xai_bench.metrics.function import FunctionMetric

                    metric = FunctionMetric(item, name, n_images=cfg.n_images)
                params = dict(getattr(metric, "params", {}) or {})
                code = item
            checked = check_metric(metric, name)
            entries.append(MetricEntry(name, checked, params,
                                       {"name": name, "params": params,
                                        "code": code_identity(code)}))
        return entries

    # ---- data and models -----------------------------------------------------------------
    def dataset(self, image_size=None):
        """The test split at ``image_size`` (a model's input size) where the data set can be
        resized; one instance per size. A data set object is used as it is."""
        spec = self.config.dataset
        if not isinstance(spec, str):
            return spec
        key = None if image_size is None else tuple(image_size)
        if key not in self._datasets:
            from xai_bench.data import get_dataset

            self._datasets[key] = get_dataset(spec, split="test", image_size=key)
        return self._datasets[key]

    def _data_identity(self) -> dict:
        spec = self.config.dataset
        if isinstance(spec, str):
            return {"spec": spec, "content": dataset_spec_fingerprint(spec),
                    "code": source_digest(module_closure("xai_bench.data"))}
        images = getattr(spec, "images", None)
        if isinstance(images, torch.Tensor):
            labels = getattr(spec, "labels", None)
            h = digest([weights_digest(_TensorBag(images=images, labels=labels))])
            return {"object": type(spec).__qualname__, "tensors": h}
        return {"object": type(spec).__qualname__, "length": len(spec), "repr": repr(spec)[:200]}

    def _model_identity(self, spec) -> dict:
        cfg = self.config
        if spec.obj is not None:
            return {"name": spec.name, "weights": weights_digest(spec.obj),
                    "code": code_identity(spec.obj)}
        ident = {"name": spec.name, "code": code_identity(MODELS.get(spec.name))}
        if spec.replicate:
            ident["replicate"] = spec.replicate
        if spec.label in self.checkpoints:
            ident["checkpoint_sha256"] = file_sha256(self.checkpoints[spec.label])
        elif cfg.untrained:
            ident["untrained_seed"] = cfg.seed
        else:  # the cached default model: trained on first use, then identified by its file
            _, info = self.load_model(spec)
            ident["checkpoint_sha256"] = file_sha256(info["checkpoint"])
        return ident

    def load_model(self, spec):
        """``(model, info)`` of a :class:`ModelSpec` (or a model name: replicate 0): from its
        checkpoint, the default-model cache (trained on first use; replicate r with the
        recipe's seed + r) or, with ``untrained``, seeded random weights; on the run's
        device."""
        if isinstance(spec, str):
            spec = next(s for s in self.model_specs if s.label == spec)
        if spec.label in self._models:
            return self._models[spec.label]
        cfg, name = self.config, spec.name
        if spec.obj is not None:
            model, info = spec.obj, {"checkpoint": None, "object": type(spec.obj).__qualname__}
        elif spec.label in self.checkpoints:
            import xai_bench

            model = xai_bench.get_model(name, checkpoint=self.checkpoints[spec.label])
            info = {"checkpoint": str(self.checkpoints[spec.label]),
                    **(getattr(model, "checkpoint_info", None) or {}).get("metrics", {})}
        elif name in DEFAULT_MODELS and cfg.dataset == DEFAULT_DATASET and not cfg.untrained:
            from xai_bench.training import cached_default_model

            model, info = cached_default_model(name, DEFAULT_DATASET, epochs=cfg.train_epochs,
                                               progress=self.progress, log=self.log,
                                               device=self.device, replicate=spec.replicate)
        else:
            # seeded, so that a resumed run explains the same random model
            parts = (cfg.seed, "model", name) + ((spec.replicate,) if spec.replicate else ())
            torch.manual_seed(derive_seed(*parts))
            model, info = MODELS.get(name)(), {"checkpoint": None, "untrained": True}
        info = {k: v for k, v in info.items() if k != "history"}
        info.update(_checkpoint_facts(model, info.get("checkpoint")))
        info["replicate"] = spec.replicate
        try:
            model.name = name
        except (AttributeError, TypeError):
            pass
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self._models[spec.label] = (model, info)
        return self._models[spec.label]

    # ---- identities ----------------------------------------------------------------------
    def _run_identity(self) -> dict:
        import xai_bench

        return {"seed": self.config.seed, "batch_size": self.config.batch_size,
                "device": torch.device(self.device).type, "xai_bench": xai_bench.__version__,
                **python_identity(), **self.config.forward_spec(),
                "harness": source_digest(sorted(set(module_closure("xai_bench.compute.seeding")) |
                                                 set(module_closure("xai_bench.compute.inference"))))}

    # ---- the run -------------------------------------------------------------------------
    def run(self) -> dict | None:
        """Compute what is missing or stale, then assemble the tables; returns run.json's
        content (``None`` in the processes other than rank 0 of a multi-process run, which
        assembles nothing). Raises :class:`~xai_bench.errors.Interrupted` on SIGINT/SIGTERM."""
        started = time.time()
        # in a multi-process run rank 0 holds the lock for the job; the others wait for it
        # at the first broadcast, so nobody writes into a directory another job uses
        from xai_bench.compute.precision import forward_options

        lock = self.store.lock() if self.ranks.is_main else contextlib.nullcontext()
        cfg = self.config
        with lock, terminate_as_interrupt(), forward_options(cfg.precision, cfg.compile):
            try:
                self._run_cells()
                if not self.ranks.is_main:
                    return None
                return self.finish(time.time() - started)
            except KeyboardInterrupt as e:
                if self.ranks.is_main:
                    self.store.discard_if_empty()
                stop = Interrupted(f"interrupted: {self._kept}/{self._total} cells kept; rerun "
                                   f"the same command to resume")
                stop.signal_name = getattr(e, "signal_name", "SIGINT")
                raise stop from None
            except BaseException:
                if self.ranks.is_main:
                    self.store.discard_if_empty()  # failed before any work: leave nothing
                raise

    def _plan(self, run_ident, data_ident) -> list:
        """Per model ``(spec, model identity, pending cells)``; stored cells whose identity is
        the new one are kept in ``self._cells``."""
        plan = []
        for spec in self.model_specs:
            model_ident = self._model_identity(spec)
            pending = []
            for metric in self.metrics:
                for method in self.methods:
                    key = cell_key(spec.label, method.name, metric.name)
                    ident = _as_json({"model": model_ident, "method": method.identity,
                                      "metric": metric.identity, "data": data_ident,
                                      "run": run_ident})
                    entry, problem = self.store.read(key)
                    why = self._stale_reason(entry, problem, ident, spec.label, method.name,
                                             metric.name)
                    if why is None:
                        self._cells[key] = entry
                        self._kept += 1
                    else:
                        if why:
                            self.reasons[why] += 1
                        pending.append((method, metric, key, ident))
            plan.append((spec, model_ident, pending))
        return plan

    def _run_cells(self):
        from xai_bench.run.distributed import invocation_name

        r = self.ranks
        self._total, self._kept = 0, 0
        #: keys of the cells computed by this invocation, and why they were (not reused)
        self.computed, self.reasons = [], Counter()
        run_ident, data_ident = self._run_identity(), self._data_identity()
        self._total = len(self.model_specs) * len(self.metrics) * len(self.methods)
        self._cells: dict = {}
        if r.is_main and self.run_dir is not None:
            # claims of an earlier, killed invocation: rank 0 holds the lock, so they are stale
            clear_claims(self.run_dir)
        if r.distributed and r.is_main:
            for spec in self.model_specs:  # train (or load) every default model once, here
                self._model_identity(spec)
        # rank 0 draws the invocation's name once its models are ready: the others wait here
        invocation = self._invocation = invocation_name(r) if r.distributed else None
        # stamps the parts this invocation commits (a part that failed is reused only by it)
        self._stamp = invocation or uuid.uuid4().hex[:12]
        plan = self._plan(run_ident, data_ident)
        where = self.run_dir if self.run_dir is not None else "(in memory)"
        self.log(f"run directory: {where} ({self._kept}/{self._total} cells already done)")
        for why, n in self.reasons.items():
            self.log(f"{n} cell{'s' if n > 1 else ''} {why}")
        if r.distributed:
            self.log(f"{r.world} processes share the work")
        from tqdm.auto import tqdm

        import sys

        bar = tqdm(total=self._total, initial=self._kept, unit="cell", dynamic_ncols=True,
                   disable=not (self.progress and sys.stderr.isatty() and r.is_main))
        started = time.time()
        try:
            ready = {}
            if r.is_main:  # the model cards and accuracies: rank 0, before the cells
                for spec, model_ident, pending in plan:
                    ready[spec.label] = self._model_ready(spec, model_ident, data_ident,
                                                          run_ident, pending, bar)
            r.barrier()
            work = self._work(plan)
            if r.distributed:  # the expensive pieces first, the cheap ones fill the gaps
                work.sort(key=lambda item: -item.cost)
            for item in work:
                spec, method = item.spec, item.method
                if r.distributed and not claim(self.run_dir, invocation, item.name):
                    continue
                found = ready.get(spec.label) or self._model_ready(
                    spec, None, data_ident, run_ident, [], bar)
                ready[spec.label] = found
                if found is None:  # the model broke its contract: its cells are errors
                    continue
                model, card = found
                self._run_unit(model, spec.name, card, method, item.cells, bar,
                               *self._model_scope(spec.label), item.part)
            r.barrier()  # every process has committed its cells
            self.maps_saved = r.total(self.maps_saved)  # the images of every process
            self.copies_saved = r.total(self.copies_saved)
            #: wall time from the first model card to the last process's last cell
            self.cells_wall_s = time.time() - started
            if r.distributed and r.is_main:
                clear_claims(self.run_dir, invocation)
                self._collect(plan)
            if r.is_main:
                self.parts.remove_folder_if_empty()
            self._log_shortfalls(plan)
        finally:
            bar.close()

    def _model_scope(self, label) -> tuple[dict, dict]:
        """The metrics' prepared selections of one model and the confidences of its perturbed
        copies (shared by all its units: :mod:`xai_bench.compute.map_cache`), kept for two models at a
        time (a multi-process run's units come in cost order, not model by model)."""
        if label not in self._model_scopes:
            while len(self._model_scopes) >= 2:
                self._model_scopes.pop(next(iter(self._model_scopes)))
            self._model_scopes[label] = ({}, {})
        return self._model_scopes[label]

    def _collect(self, plan):
        """Rank 0 of a multi-process run: every pending cell, as committed by whichever
        process computed it (rank 0 wrote the model cards itself)."""
        for _, _, pending in plan:
            for _, _, key, _ in pending:
                entry, problem = self.store.read(key)
                if entry is None:
                    raise RunError(f"cell {key} was not committed by any process "
                                   f"({problem or 'missing'}); rerun the same command to "
                                   f"compute it")
                self._cells[key] = entry

    def _stale_reason(self, entry, problem, ident, model, method, metric):
        """None to reuse the stored cell, else why it is recomputed ('' for a new cell)."""
        if problem:
            return f"recomputed: {problem}"
        if entry is None:
            return ""
        if entry["identity"] != ident:
            return "stale: " + "; ".join(_describe(d, model, method, metric)
                                         for d in differences(entry["identity"], ident)[:3])
        if any(r.get("status") == "error" for r in entry.get("records", [])):
            return "retried: ended in an error last time"
        return None

    def _model_ready(self, spec, model_ident, data_ident, run_ident, pending, bar):
        """``(model, card)`` of a model with its info cell (card, accuracy) committed, or
        None when the model breaks its contract (then its pending cells are committed as
        errors). ``model_ident=None``: only load it (another process wrote the info cell)."""
        name = spec.name
        info_key = f"model__{spec.label}"
        if model_ident is None:
            entry, _ = self.store.read(info_key)
            if entry is not None and "error" in entry.get("info", {}):
                return None
            model, _ = self.load_model(spec)
            return model, check_model(model, name)
        info_ident = _as_json({"model": model_ident, "data": data_ident, "run": run_ident})
        entry, _ = self.store.read(info_key)
        if not pending and entry is not None and entry["identity"] == info_ident:
            self._cells[info_key] = entry
            return None
        try:
            model, info = self.load_model(spec)
            card = check_model(model, name)
        except ContractError as e:  # every cell of this model is an error
            for method, metric, key, ident in pending:
                self._commit(key, ident, self._failed(name, method.name, metric, "error",
                                                      str(e)), [], {}, 0.0, 0.0)
                bar.update(1)
            self._cells[info_key] = self.store.write(info_key, {"identity": info_ident,
                                                                "info": {"error": str(e)}})
            pending.clear()
            return None
        if entry is not None and entry["identity"] == info_ident:
            self._cells[info_key] = entry
        else:
            from xai_bench.compute.inference import predict

            t = time.time()
            recorded = self._recorded_accuracy(spec, info)
            if recorded is None:
                accuracy = predict(model, self.dataset(card["image_size"]), device=self.device,
                                   batch_size=self.config.batch_size).accuracy
            summary = {**info, **card,
                       "test_accuracy": accuracy if recorded is None else recorded,
                       "accuracy_from": "this run" if recorded is None else "checkpoint",
                       "eval_time_s": round(time.time() - t, 3)}
            self._cells[info_key] = self.store.write(info_key, {"identity": info_ident,
                                                                "info": summary})
        return model, card

    @staticmethod
    def _units(pending) -> list:
        """The pending cells of one model grouped by method, in method order: a **unit** is
        one (model, method) with its pending metrics. A unit is explained once (its maps are
        shared by its metrics)."""
        units: dict = {}
        for method, metric, key, ident in pending:
            units.setdefault(method.name, (method, []))[1].append((metric, key, ident))
        return list(units.values())

    def _n_parts(self, metric) -> int:
        """How many parts a cell of ``metric`` is computed in: one per batch of the samples
        its parameters ask for (a metric that cannot be split, or that asks for one batch or
        less, is computed whole: 1). Fixed by the configuration alone, never by the number of
        processes, so that a cell is computed the same way whoever computes it."""
        requested = metric.metric.requested_samples()
        if not requested:
            return 1
        return max(1, math.ceil(int(requested) / self.config.batch_size))

    def _work(self, plan) -> list:
        """What the processes share out: part ``k`` of every unit, for ``k`` up to its cells'
        largest number of parts. Part 0 also holds the cells computed whole."""
        work = []
        for spec, _, pending in plan:
            for method, cells in self._units(pending):
                n_parts = [self._n_parts(metric) for metric, _, _ in cells]
                for part in range(max(n_parts)):
                    share = sum(1 / n for n in n_parts if part < n)
                    name = cell_key(spec.label, method.name, "unit")
                    if max(n_parts) > 1:
                        name = self._part_key(name, part)
                    work.append(WorkItem(spec, method, cells, part, name,
                                         _unit_cost(method, share)))
        return work

    def _run_unit(self, model, model_name, card, method, cells, bar, prepared, confidences,
                  part=0):
        """Run part ``part`` of one unit: ``method``'s pending ``cells``
        (``[(metric, key, identity), ...]``) on one model, sharing its maps. A cell of one
        part is computed whole at part 0; a cell of several gets its part ``part`` computed
        (:meth:`_run_cell_part`). ``prepared``: metric name -> (prepared, error, seconds) of
        this model, filled on first use; ``confidences``: the perturbed copies' confidences of
        this model."""
        from xai_bench.compute.map_cache import sharing_maps

        # one cache per (model, method): the maps of one method are held at a time
        with sharing_maps(model, confidences=confidences) as cache:
            for metric, key, ident in cells:
                n_parts = self._n_parts(metric)
                if part >= n_parts:
                    continue
                if metric.name not in prepared:
                    prepared[metric.name] = self._prepare(model, card, metric)
                if n_parts > 1 and self._splits(model, method, metric, prepared[metric.name]):
                    self._run_cell_part(model, model_name, method, metric, key, ident,
                                        prepared[metric.name], bar, part, n_parts)
                elif part == 0:
                    self._run_cell(model, model_name, card, method, metric, key, ident,
                                   prepared[metric.name], bar)
        self.maps_saved += cache.saved
        self.copies_saved += cache.copies_saved

    @staticmethod
    def _splits(model, method, metric, prepared) -> bool:
        """Whether the cell is computed in parts (else whole, at part 0: also every cell that
        ends as an error or is skipped before anything is computed)."""
        found, prepare_error, _ = prepared
        return (method.error is None and prepare_error is None
                and method.method.applies_to(model)
                and metric.metric.samples(found) is not None)

    @staticmethod
    def _part_key(key: str, part: int) -> str:
        return f"{key}__part{part:04d}"

    def _run_cell_part(self, model, model_name, method, metric, key, ident, prepared, bar,
                       part, n_parts):
        """Compute part ``part`` of a cell (samples ``part·B`` to ``(part+1)·B`` of the
        prepared selection, ``B`` = batch size) and commit it, unless a part with the cell's
        identity is already committed; then, if every part is there, the cell itself."""
        found, _, _ = prepared
        part_key = self._part_key(key, part)
        entry, _ = self.parts.read(part_key)
        if not self._part_matches(entry, ident, n_parts, self._stamp):
            size = self.config.batch_size
            start, stop = part * size, min((part + 1) * size, metric.metric.samples(found))
            bar.set_description(f"{key} part {part + 1}/{n_parts}")
            t = time.time()
            arrays, error = {}, None
            if start < stop:  # fewer samples than requested leave the last parts empty
                torch.manual_seed(derive_seed(self.config.seed, key, part))
                values, error = _attempt(lambda: metric.metric.evaluate_part(
                    model, method.method, found, start, stop, device=self.device,
                    batch_size=size))
                if error is None:
                    arrays = {name: v.detach().cpu().numpy() for name, v in values.items()}
            self.parts.write(part_key, {"identity": ident, "part": part, "n_parts": n_parts,
                                        "samples": [start, stop], "error": error,
                                        "invocation": self._stamp,
                                        "time_s": round(time.time() - t, 4)}, arrays)
        self._commit_parts_if_complete(model, model_name, method, metric, key, ident,
                                       prepared, bar, n_parts)

    @staticmethod
    def _part_matches(entry, ident, n_parts, stamp) -> bool:
        """Whether a committed part can be used: the cell's identity and cut, and no error
        unless this invocation made it (a cell that failed is retried by the next run, as a
        whole cell is)."""
        return entry is not None and entry["identity"] == ident and \
            entry["n_parts"] == n_parts and \
            (not entry.get("error") or entry.get("invocation") == stamp)

    def _commit_parts_if_complete(self, model, model_name, method, metric, key, ident,
                                  prepared, bar, n_parts):
        """Join the parts of a cell and commit it once all are there. Every process checks
        after committing a part, so the last one to finish sees them all; in a multi-process
        run a claim makes exactly one of those that see them all do it. The last part is
        looked at first: parts come in order, so until the end one look says "not yet"."""
        entries = []
        for part in reversed(range(n_parts)):
            entry, _ = self.parts.read(self._part_key(key, part))
            if not self._part_matches(entry, ident, n_parts, self._stamp):
                return
            entries.insert(0, entry)
        if self.ranks.distributed and not claim(self.run_dir, self._invocation,
                                                f"{key}__join"):
            return
        found, _, prepare_time = prepared
        t = time.time()
        error = next((e["error"] for e in entries if e.get("error")), None)
        if error is not None:
            rows = self._failed(model_name, method.name, metric, "error", error), [], {}, {}
        else:
            from xai_bench.metrics.base import join_parts

            joined = join_parts([{name: torch.from_numpy(v) for name, v in
                                  self.parts.read_arrays(self._part_key(key, part)).items()}
                                 for part in range(n_parts)])
            rows = self._scored(model_name, method, metric, lambda: metric.metric.reduce(
                model, found, joined, device=self.device))
        records, curves, examples, notes = rows
        self._commit(key, ident, records, curves, examples,
                     sum(e["time_s"] for e in entries) + time.time() - t, prepare_time, notes)
        bar.update(1)
        for part in range(n_parts):  # the cell holds it all now
            self.parts.remove(self._part_key(key, part))

    def _log_shortfalls(self, plan):
        """One line per (model, metric) whose computed cells used fewer samples than asked."""
        for spec, _, pending in plan:
            found: dict = {}
            for _, metric, key, _ in pending:
                for what, pair in (self._cells.get(key, {}).get("notes") or {}).items():
                    found[(metric.name, what)] = tuple(pair)
            for (metric_name, what), (n, requested) in found.items():
                self.log(f"{metric_name} on {spec.name}: {n} of the {requested} requested "
                         f"{what} could be used (the test set has too few correctly "
                         f"classified images that pass the selection; see the records' "
                         f"selection columns)")

    def _prepare(self, model, card, metric):
        """``(prepared, error, seconds)`` of one metric on one model (method-independent)."""
        t = time.time()
        try:
            prepared = metric.metric.prepare(model, self.dataset(card["image_size"]),
                                             device=self.device,
                                             batch_size=self.config.batch_size,
                                             seed=self.config.seed)
            return prepared, None, time.time() - t
        except XaiBenchError:
            raise
        except Exception as e:  # recorded per cell: skipped if not applicable, else error
            return None, e, time.time() - t

    def _recorded_accuracy(self, spec, info):
        """The test accuracy a default model's checkpoint recorded on the run's data set, so
        that the run does not measure it again (None: measure it). Only for the default models
        on the embedded data, whose test split is fixed by the code the checkpoint was trained
        with (the shipped files are checked against it by the test suite); a user's checkpoint
        names its data set by a spec whose content may have changed, so it is measured."""
        if spec.label in self.checkpoints or spec.obj is not None or self.config.untrained:
            return None
        recorded = info.get("test_accuracy")
        if spec.name in DEFAULT_MODELS and self.config.dataset == DEFAULT_DATASET \
                and info.get("trained_on") == DEFAULT_DATASET and isinstance(recorded, float):
            return recorded
        return None

    def _failed(self, model, method, metric, status, message):
        return [dict(model=model, method=method, metric=metric.name,
                     category=metric.metric.category,
                     higher_is_better=metric.metric.higher_is_better, sample_id="-",
                     target=-1, value=math.nan, status=status, message=message)]

    def _run_cell(self, model, model_name, card, method, metric, key, ident, prepared, bar):
        cfg = self.config
        prepared, prepare_error, prepare_time = prepared
        bar.set_description(key)
        t = time.time()
        curves, examples, notes = [], {}, {}
        if method.error is not None:
            records = self._failed(model_name, method.name, metric, "error", method.error)
        elif prepare_error is not None:
            status = "skipped" if _not_applicable(prepare_error) else "error"
            records = self._failed(model_name, method.name, metric, status,
                                   _one_line(prepare_error))
        elif not method.method.applies_to(model):
            records = self._failed(model_name, method.name, metric, "skipped",
                                   f"method '{method.name}' does not apply to "
                                   f"{card['family']} model '{model_name}'")
        else:
            torch.manual_seed(derive_seed(cfg.seed, key))
            records, curves, examples, notes = self._scored(
                model_name, method, metric, lambda: metric.metric.evaluate(
                    model, method.method, prepared, device=self.device,
                    batch_size=cfg.batch_size))
        self._commit(key, ident, records, curves, examples, time.time() - t, prepare_time,
                     notes)
        bar.update(1)

    def _scored(self, model_name, method, metric, compute):
        """``(records, curves, examples, notes)`` of the cell whose :class:`MetricResult`
        ``compute()`` returns (an error cell if it fails)."""
        result, error = _attempt(compute)
        if error is not None:
            return self._failed(model_name, method.name, metric, "error", error), [], {}, {}
        base = dict(model=model_name, method=method.name, metric=metric.name,
                    category=metric.metric.category,
                    higher_is_better=metric.metric.higher_is_better)
        records = [dict(base, **r, status="ok", message="") for r in result.records]
        curves = [dict(model=model_name, method=method.name, metric=metric.name, **c)
                  for c in result.curves]
        return records, curves, result.examples, _shortfall(result.summary)

    def _commit(self, key, ident, records, curves, examples, time_s, prepare_time_s,
                notes=None):
        entry = {"identity": ident, "key": key, "records": records, "curves": curves,
                 "time_s": round(time_s, 4), "prepare_time_s": round(prepare_time_s, 4),
                 "notes": notes or {}}
        self._cells[key] = self.store.write(key, entry, examples)
        self._kept += 1
        self.computed.append(key)

    # ---- assembling ----------------------------------------------------------------------
    def declarations(self) -> dict:
        """What every method and metric of the run declares about itself (their cards), so
        that figures, tables and the report draw a plugin exactly like a built-in."""
        from xai_bench.contracts.method import MethodCard

        return {"methods": {m.name: (m.method.card if m.method is not None
                                     else MethodCard(m.name)).as_dict() for m in self.methods},
                "metrics": {m.name: m.metric.card.as_dict() for m in self.metrics}}

    def finish(self, wall_s: float) -> dict:
        """Assemble records, curves, examples and run.json from this run's cells."""
        from xai_bench.storage.provenance import collect_provenance

        cfg = self.config
        rows, curves, timings, examples = [], [], {}, {}
        for spec in self.model_specs:
            which = dict(model=spec.name, replicate=spec.replicate)
            for mt in self.metrics:
                for me in self.methods:
                    key = cell_key(spec.label, me.name, mt.name)
                    cell = self._cells[key]
                    rows += [dict(r, **which) for r in cell["records"]]
                    curves += [dict(c, **which) for c in cell["curves"]]
                    if cell.get("arrays_sha256") or isinstance(self.store, MemoryStore):
                        for name, value in self.store.read_arrays(key).items():
                            examples[f"{spec.label}/{me.name}/{mt.name}/{name}"] = value
                    timings[key] = {"time_s": cell["time_s"],
                                    "prepare_time_s": cell["prepare_time_s"],
                                    "method_params": cell["identity"]["method"].get("params"),
                                    "metric_params": cell["identity"]["metric"].get("params")}
        models = {s.label: self._cells[f"model__{s.label}"]["info"] for s in self.model_specs}
        records = records_frame(rows)
        curves_table = curves_frame(curves)
        dataset = self.dataset()
        plugins = {}
        for entry in list(self.methods) + list(self.metrics):
            found = _plugin(entry.identity)
            if found:
                plugins[entry.name] = found
        info = dict(config={**cfg.spec(), "batch_size": cfg.batch_size, "device": self.device,
                            "out": None if cfg.out is None else str(cfg.out),
                            "name": self.run_name},
                    method_params={m.name: m.params for m in self.methods},
                    metric_params={m.name: m.params for m in self.metrics},
                    plugins=plugins, declarations=self.declarations(),
                    seeds={"seed": cfg.seed}, models=models,
                    dataset=dict(name=_label(cfg.dataset),
                                 classes=list(getattr(dataset, "classes", []) or []),
                                 image_size=list(getattr(dataset, "image_size", []) or [])),
                    timings=dict(last_invocation_wall_s=round(wall_s, 3),
                                 cells_wall_s=round(self.cells_wall_s, 3),
                                 maps_reused_images=self.maps_saved,
                                 copies_reused=self.copies_saved,
                                 cells_total_s=round(sum(t["time_s"] for t in timings.values()),
                                                     3),
                                 cells=timings),
                    provenance={**collect_provenance(self.device),
                                "processes": self.ranks.world},
                    counts={str(k): int(v) for k, v in
                            records["status"].value_counts().to_dict().items()})
        self.records, self.curves, self.examples, self.info = records, curves_table, examples, info
        from xai_bench.analysis.statistics import analyse, write_statistics

        t = time.time()
        # intervals, paired comparisons, rank groups, claims: seeded, so a rerun writes the
        # same tables
        self.tables = analyse(records, seed=cfg.seed, claims=True)
        info["timings"]["statistics_s"] = round(time.time() - t, 3)
        if self.run_dir is not None:
            write_statistics(records, self.run_dir, tables=self.tables)
            atomic_io.write_csv(self.run_dir / "records.csv", records)
            atomic_io.write_csv(self.run_dir / "curves.csv", curves_table)
            if examples:
                atomic_io.write_arrays(self.run_dir / "examples.npz", examples)
            atomic_io.write_json(self.run_dir / "run.json", info)
        return info


@dataclass
class WorkItem:
    """Part ``part`` of a unit (one model, one method, its pending cells): what one process
    claims by ``name``. ``cost``: its estimated share of the work (:func:`_unit_cost`)."""

    spec: ModelSpec
    method: MethodEntry
    cells: list
    part: int
    name: str
    cost: float


def _attempt(compute):
    """``(value, None)``, or ``(None, one-line error)`` when ``compute()`` fails the cell:
    an interrupt and the harness's own errors (other than a broken contract) propagate."""
    try:
        return compute(), None
    except (KeyboardInterrupt, XaiBenchError) as e:
        if not isinstance(e, ContractError):
            raise
        return None, _one_line(e)
    except Exception as e:
        return None, _one_line(e)


def _checkpoint_facts(model, checkpoint) -> dict:
    """What the report says of a model's checkpoint: its sha256, the data set it was trained
    on and its recipe (from the metadata that travels with the weights)."""
    if not checkpoint:
        return {}
    meta = getattr(model, "checkpoint_info", None) or {}
    facts = {"checkpoint_sha256": file_sha256(checkpoint)}
    for key, name in (("dataset", "trained_on"), ("recipe_name", "recipe_name"),
                      ("recipe", "recipe")):
        if meta.get(key) is not None:
            facts[name] = meta[key]
    return facts


class _TensorBag(torch.nn.Module):
    """Named tensors, for :func:`weights_digest` of a data set's tensors."""

    def __init__(self, **tensors):
        super().__init__()
        for k, v in tensors.items():
            if isinstance(v, torch.Tensor):
                self.register_buffer(k, v)


def _as_json(obj):
    """``obj`` as it reads back from a JSON file (tuples become lists, keys strings), so a
    stored identity compares equal to a freshly computed one."""
    return json.loads(json.dumps(obj, default=repr))


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                           for c in value):
        return value[:10]  # a sha256
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(diff, model, method, metric) -> str:
    """One phrase for one changed identity leaf."""
    path, old, new = diff
    head = path[0]
    who = {"model": f"model {model}", "method": method, "metric": metric}.get(head, head)
    leaf = path[-1]
    change = f"({_short(old)} → {_short(new)})"
    if head in ("method", "metric") and len(path) > 2 and path[1] == "params":
        return f"{who} parameters changed ({'.'.join(map(str, path[2:]))} {_short(old)} → " \
               f"{_short(new)})"
    if head == "model" and leaf == "checkpoint_sha256":
        return f"checkpoint of {model} changed (sha256 {_short(old)} → {_short(new)})"
    if head == "model" and leaf == "weights":
        return f"weights of {model} changed"
    if len(path) > 1 and path[1] == "code":
        if leaf == "version":
            return f"{who} version changed {change}"
        if leaf == "source":
            return f"{who} source changed"
        return f"{who} implementation changed ({leaf} {_short(old)} → {_short(new)})"
    if head == "method" and leaf == "load_error":
        return f"{method} plugin load state changed"
    if head == "data":
        return "data set changed"
    if head == "run":
        if leaf == "harness":
            return "xai-bench's seeding/inference code changed"
        return f"{leaf.replace('_', ' ')} changed {change}"
    return f"{'.'.join(map(str, path))} changed {change}"


def _check_params_targets(params: dict, chosen: list, registry, kind: str, option: str):
    """Every key of ``params`` (``--{kind}-arg`` values) names a {kind} of this run."""
    names = [m for m in chosen if isinstance(m, str)]
    for target in params:
        if target not in names:
            if target in registry:
                raise RunError(f"--{kind}-arg for '{target}', which this run does not use "
                               f"({kind}s: {', '.join(names)}); add it to {option}")
            raise RunError(f"--{kind}-arg: {registry.unknown_message(target)}")


def _shortfall(summary: dict) -> dict:
    """``{what: [used, requested]}`` where a metric used fewer samples than requested."""
    out = {}
    for what in ("grids", "images"):
        n, requested = summary.get(f"n_{what}"), summary.get(f"n_{what}_requested")
        if isinstance(n, int) and isinstance(requested, int) and n < requested:
            out[what] = [n, requested]
    return out


def _unit_cost(method, n_cells: float) -> float:
    """A unit's estimated share of the work: its method's declared cost (forward passes per
    explained image) times its cells, so that a multi-process run hands out the expensive
    units first and the cheap ones fill the gaps. A method that failed to load costs the
    default."""
    cost = method.method.card.cost if method.method is not None else DEFAULT_METHOD_COST
    return cost * n_cells


def _not_applicable(error: Exception) -> bool:
    return isinstance(error, NotApplicable)


def _one_line(error: Exception) -> str:
    return one_line(f"{type(error).__name__}: {error}")[:500]


def summary_table(source) -> "object":
    """Mean value per (metric, model, method) of the ok records (a run directory or a
    records DataFrame): a pandas pivot table."""
    from xai_bench.storage.results import mean_table, read_records

    frame = source if hasattr(source, "columns") else read_records(source)
    means = mean_table(frame)
    if means.empty:
        return means
    return means.pivot_table(index=["metric", "model"], columns="method", values="value")
