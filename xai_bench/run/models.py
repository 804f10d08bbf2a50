"""The run's models: which ones (``--models``, ``--replicates``), where each one's weights come
from (:func:`weights_source`, the one statement of the default-model rule), their checkpoints
(``--checkpoint``), and loading them once each onto the run's device (:class:`RunModels`)
with their identities."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import torch

from xai_bench.compute.seeding import derive_seed
from xai_bench.contracts.model_args import model_params_for
from xai_bench.contracts.parameters import entry_parameters
from xai_bench.errors import ContractError
from xai_bench.loading import get_model
from xai_bench.registry import MODELS
from xai_bench.run.config import RunError, label_of
from xai_bench.run.names import names_or_objects, split_names
from xai_bench.storage.identity import code_identity, file_sha256, weights_digest
from xai_bench.training.defaults import DEFAULT_DATASET, is_default_model

__all__ = ["ModelSpec", "RunModels", "replicate_label", "weights_source", "resolve_models",
           "resolve_checkpoints", "check_weights", "check_classes_fit", "check_logit_count",
           "declared_num_classes"]


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


def weights_source(name: str, dataset, *, checkpoint: bool = False, untrained: bool = False,
                   obj: bool = False) -> str | None:
    """Where a model's weights come from: ``"object"`` (given as an object),
    ``"checkpoint"`` (``--checkpoint``), ``"untrained"`` (seeded random weights:
    ``--untrained``), ``"default"`` (a default model on the default data set: shipped, or
    trained on first use and cached), or ``None``: nowhere (it needs a checkpoint or
    ``--untrained``)."""
    if obj:
        return "object"
    if checkpoint:
        return "checkpoint"
    if untrained:
        return "untrained"
    if isinstance(dataset, str) and is_default_model(name, dataset):
        return "default"
    return None


def resolve_models(config) -> list:
    """``[(name, object or None)]`` of ``--models``; ``all`` means every model that can run
    here (those given a checkpoint, the default pair on the embedded data, or every one with
    ``--untrained``)."""
    names = names_or_objects("model", MODELS, config.models)
    if "all" in [p for p in split_names(config.models) if isinstance(p, str)]:
        given = {key.partition("@")[0] for key in config.checkpoints}
        names = [m for m in names if not isinstance(m, str) or weights_source(
            m, config.dataset, checkpoint=m in given, untrained=config.untrained)]
        if not names:
            raise RunError(f"--models all found no model to run on "
                           f"'{label_of(config.dataset)}': pass --checkpoint NAME=PATH for the "
                           f"models to benchmark, or --untrained")
    return [(m, None) if isinstance(m, str) else (label_of(m), m) for m in names]


def resolve_checkpoints(config, model_names) -> dict:
    """``{replicate label: path}`` from ``--checkpoint NAME[@R]=PATH`` (a glob gives one
    file per replicate, in sorted order; a path that exists is taken literally even when it
    holds glob characters such as ``[1]``). Two different files for one replicate, or one file
    for two replicates, are refused."""
    replicates = config.replicates
    out: dict = {}
    given: dict = {}  # replicate label -> the --checkpoint KEY=VALUE that gave it
    for key, value in config.checkpoints.items():
        name, at, rep = str(key).partition("@")
        if name not in model_names:
            raise RunError(f"--checkpoint given for {name}, which this run does not "
                           f"benchmark (models: {', '.join(model_names)}); add it to "
                           f"--models or drop the checkpoint")
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
        if at and not (rep.isascii() and rep.isdigit() and int(rep) < replicates):
            raise RunError(f"--checkpoint {key}: the replicate must be 0..."
                           f"{replicates - 1} written with the digits 0-9 "
                           f"(--replicates {replicates})")
        for label, path in _checkpoint_files(name, at, rep, value, replicates):
            _add_checkpoint(out, given, label, path, f"{key}={value}")
    _check_every_replicate(out, replicates)
    _refuse_shared_files(out)
    return out


def _checkpoint_files(name, at, rep, value, replicates) -> list:
    """``[(replicate label, path)]`` of one ``--checkpoint`` value."""
    text = str(Path(value).expanduser())
    p = Path(text)
    if not at and not p.exists() and any(c in text for c in "*?["):
        files = sorted(glob.glob(text))
        if len(files) != replicates:
            raise RunError(f"--checkpoint {name}={value} matches {len(files)} file(s); "
                           f"--replicates {replicates} needs exactly {replicates}")
        return [(replicate_label(name, r), f) for r, f in enumerate(files)]
    key = f"{name}@{rep}" if at else name
    if not p.exists():
        raise RunError(f"checkpoint {p} (for {key}) does not exist; check the path or "
                       f"train one with `xai-bench train {name} --out {p}`")
    if not p.is_file():
        raise RunError(f"checkpoint {p} (for {key}) is not a file")
    return [(replicate_label(name, int(rep) if at else 0), str(p))]


def _add_checkpoint(out: dict, given: dict, label: str, path: str, option: str) -> None:
    """Record ``path`` for ``label``; a second, different file for it is refused (which one
    would be measured would depend on the order of the options)."""
    if label in out and not _same_file(out[label], path):
        raise RunError(f"two checkpoints for {label}: --checkpoint {given[label]} and "
                       f"--checkpoint {option}; pass one file per model and replicate")
    out.setdefault(label, path)
    given.setdefault(label, option)


def _check_every_replicate(out: dict, replicates: int) -> None:
    for name in {k.partition("@")[0] for k in out}:
        missing = [r for r in range(replicates) if replicate_label(name, r) not in out]
        if missing:
            raise RunError(f"model {name} has no checkpoint for replicate(s) "
                           f"{', '.join(map(str, missing))} of --replicates "
                           f"{replicates}: pass --checkpoint {name}@R=PATH for each, or "
                           f"a glob (train them with `xai-bench train {name} --seed R`)")


def _refuse_shared_files(out: dict) -> None:
    """One file (or two copies of it) for two replicates is refused: replicates stand for
    independently trained models, and a repeated one makes their spread, and so the run's
    intervals, look smaller than it is."""
    labels = sorted(out)
    for i, first in enumerate(labels):
        for second in labels[i + 1:]:
            same_model = first.partition("@")[0] == second.partition("@")[0]
            if same_model and _same_content(out[first], out[second]):
                raise RunError(f"{first} and {second} have the same checkpoint "
                               f"({out[first]}, {out[second]}): replicates must be "
                               f"independently trained models; pass a different file for "
                               f"each (`xai-bench train {first.partition('@')[0]} --seed R`) or "
                               f"lower --replicates")


def _same_file(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _same_content(a, b) -> bool:
    """Same file, or the same bytes (hashed only when the sizes agree)."""
    if _same_file(a, b):
        return True
    return Path(a).stat().st_size == Path(b).stat().st_size and file_sha256(a) == file_sha256(b)


def check_weights(config, specs, checkpoints) -> None:
    """Every model given by name has weights to run with (else one line saying how)."""
    for spec in specs:
        if spec.obj is None and weights_source(spec.name, config.dataset,
                                               checkpoint=spec.label in checkpoints,
                                               untrained=config.untrained) is None:
            data = label_of(config.dataset)
            raise RunError(f"model '{spec.name}' needs weights to be benchmarked on '{data}': "
                           f"pass --checkpoint {spec.name}=PATH (train one with `xai-bench "
                           f"train {spec.name} --dataset {data} --out PATH`) or --untrained")


def declared_num_classes(spec, args: dict | None = None) -> int | None:
    """A model's class count known before its weights exist: an object's ``num_classes``,
    its ``num_classes`` model argument (``args``), the ``num_classes`` default of a registered
    model's builder, or the ``num_classes`` of the model built on the meta device (no memory,
    no random numbers drawn; any size builds in milliseconds). None: not known (a builder
    that cannot build on the meta device)."""
    args = dict(args or {})
    if spec.obj is not None:
        n = getattr(spec.obj, "num_classes", None)
    elif "num_classes" in args:
        n = args["num_classes"]
    else:
        builder = MODELS.get(spec.name)
        n = None if args else entry_parameters(builder, "model").get("num_classes")
        if n is None:
            try:
                with torch.random.fork_rng(devices=[]), torch.device("meta"):
                    n = getattr(builder(**args), "num_classes", None)
            except Exception:  # noqa: BLE001 - only a probe; the loaded model is checked too
                n = None
    return int(n) if isinstance(n, int) and not isinstance(n, bool) else None


def check_classes_fit(label: str, num_classes, data_classes, data_name: str) -> None:
    """A data set with more classes than the model has logits cannot be scored (its labels
    index past the logits); fewer is fine (a subset of the model's classes)."""
    if num_classes is not None and data_classes is not None and data_classes > num_classes:
        raise ContractError(f"data set '{data_name}' has {data_classes} classes but model "
                            f"'{label}' has {num_classes} logits; benchmark it on a data set "
                            f"with at most {num_classes} classes, or give the model "
                            f"num_classes={data_classes} (train it on this data set)")


def check_logit_count(model, label: str) -> None:
    """One forward pass of a blank image: the model returns ``num_classes`` logits per image
    (a model that returns fewer would be scored on the wrong classes, or fail in a metric).
    A model that cannot even run this probe is left to its cells, which record why."""
    n = getattr(model, "num_classes", None)
    size = getattr(model, "image_size", None)
    if not isinstance(n, int) or not callable(getattr(model, "encode", None)) or size is None:
        return
    from xai_bench.compute.modes import eval_mode

    h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
    params = model.parameters() if isinstance(model, torch.nn.Module) else iter(())
    device = next(params, torch.empty(0)).device
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(model.encode(torch.zeros(1, 3, int(h), int(w), device=device)))
    except Exception:  # noqa: BLE001 - a probe only; the cells report the model's failure
        return
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[-1] != n:
        raise ContractError(f"model '{label}' returns {out.shape[-1]} logits per image but "
                            f"declares num_classes={n}; make forward return one logit per "
                            f"class (or set num_classes={out.shape[-1]})")


class RunModels:
    """The run's models, each loaded once onto the run's device, and their identities."""

    def __init__(self, config, checkpoints: dict, device: str, progress=True, log=print):
        self.config, self.checkpoints, self.device = config, checkpoints, device
        self.progress, self.log = progress, log
        self._loaded: dict = {}

    def args(self, spec) -> dict:
        """The constructor arguments of ``spec``'s model (``--model-arg``; none for objects)."""
        if spec.obj is not None:
            return {}
        return model_params_for(self.config.model_params, spec.name)

    def source(self, spec) -> str | None:
        """:func:`weights_source` of ``spec`` in this run."""
        return weights_source(spec.name, self.config.dataset,
                              checkpoint=spec.label in self.checkpoints,
                              untrained=self.config.untrained, obj=spec.obj is not None)

    def load(self, spec):
        """``(model, info)`` of a :class:`ModelSpec`: from its checkpoint, the default-model
        cache (trained on first use; replicate r with the recipe's seed + r) or, with
        ``untrained``, seeded random weights; on the run's device."""
        if spec.label in self._loaded:
            return self._loaded[spec.label]
        cfg, name, source, args = self.config, spec.name, self.source(spec), self.args(spec)
        if source == "object":
            model, info = spec.obj, {"checkpoint": None, "object": type(spec.obj).__qualname__}
        elif source == "checkpoint":
            model = get_model(name, checkpoint=self.checkpoints[spec.label], **args)
            info = {"checkpoint": str(self.checkpoints[spec.label]),
                    **(getattr(model, "checkpoint_info", None) or {}).get("metrics", {})}
        elif source == "default":
            # looked up at call time: the test suite replaces it to keep the cache untouched
            import xai_bench.training as training

            model, info = training.cached_default_model(
                name, DEFAULT_DATASET, epochs=cfg.train_epochs, progress=self.progress,
                log=self.log, device=self.device, replicate=spec.replicate, **args)
        else:
            # seeded, so that a resumed run explains the same random model
            parts = (cfg.seed, "model", name) + ((spec.replicate,) if spec.replicate else ())
            torch.manual_seed(derive_seed(*parts))
            model, info = get_model(name, **args), {"checkpoint": None, "untrained": True}
        if source != "object":  # objects are probed in resolution, before any work
            check_logit_count(model, spec.label)
        info = {k: v for k, v in info.items() if k != "history"}
        info.update(checkpoint_facts(model, info.get("checkpoint")))
        info["replicate"] = spec.replicate
        if args:
            info["model_args"] = args
        try:
            model.name = name
        except (AttributeError, TypeError):
            pass
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self._loaded[spec.label] = (model, info)
        return self._loaded[spec.label]

    def identity(self, spec) -> dict:
        """What determines a model's numbers: its name and code, and its weights (a
        checkpoint's sha256, an object's weights digest, or an untrained model's seed)."""
        source = self.source(spec)
        if source == "object":
            return {"name": spec.name, "weights": weights_digest(spec.obj),
                    "code": code_identity(spec.obj)}
        ident = {"name": spec.name, "code": code_identity(MODELS.get(spec.name))}
        if spec.replicate:
            ident["replicate"] = spec.replicate
        args = self.args(spec)
        if args:  # only when given: the cells of a run without --model-arg keep their identity
            ident["args"] = args
        if source == "checkpoint":
            ident["checkpoint_sha256"] = file_sha256(self.checkpoints[spec.label])
        elif source == "untrained":
            ident["untrained_seed"] = self.config.seed
        else:  # the cached default model: trained on first use, then identified by its file
            _, info = self.load(spec)
            ident["checkpoint_sha256"] = file_sha256(info["checkpoint"])
        return ident

    def recorded_accuracy(self, spec, info):
        """The test accuracy a default model's checkpoint recorded on the run's data set, so
        that the run does not measure it again (None: measure it). Only for the default models
        on the embedded data, whose test split is fixed by the code the checkpoint was trained
        with (the shipped files are checked against it by the test suite); a user's checkpoint
        names its data set by a spec whose content may have changed, so it is measured."""
        recorded = info.get("test_accuracy")
        if self.source(spec) == "default" and info.get("trained_on") == DEFAULT_DATASET \
                and isinstance(recorded, float):
            return recorded
        return None


def checkpoint_facts(model, checkpoint) -> dict:
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
