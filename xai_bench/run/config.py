"""The run's configuration: :class:`RunConfig`, whose fields are the run options.

Each field says once how it is given everywhere: its name is the keyword of
:func:`xai_bench.evaluate`; its :class:`Option` (the field's metadata) holds the flag of
``xai-bench run``, the help text, the kind of value, the choices or the minimum, and the
command-line default where it differs from Python's (``--out results`` against ``out=None``:
kept in memory). The command line's options (:mod:`xai_bench.cli.run`), the normalisation of
``evaluate``'s keywords (:meth:`RunConfig.from_options`) and the command that reproduces a run
from its ``run.json`` (:func:`reproduce_command`) are generated from these fields, so a new
option is one field here.

The value grammar of ``--method-arg``/``--metric-arg``/``--model-arg`` lives here too, both
ways: :func:`parse_value` reads a value, :func:`format_value` writes one that reads back.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import MISSING, dataclass, field, fields

from xai_bench.contracts.model_args import normalise_model_params
from xai_bench.errors import ConfigError
from xai_bench.storage.identity import digest
from xai_bench.training.defaults import DEFAULT_DATASET, DEFAULT_MODELS

__all__ = ["RunConfig", "RunError", "Option", "run_options", "label_of", "parse_value",
           "format_value", "reproduce_command"]

#: an Option's ``cli_default`` when the command line's default is the field's
_SAME = object()

#: the kinds of value an option takes (how it is parsed, normalised and written back)
KINDS = ("text", "names", "int", "choice", "flag", "directory", "pairs", "dotted")


class RunError(ConfigError):
    """A run cannot start (bad configuration); the message says what to fix."""


@dataclass(frozen=True)
class Option:
    """How one :class:`RunConfig` field is given on the command line.

    ``kind``: ``text``; ``names`` (comma-separated names, or a list of names and objects in
    Python); ``int`` (at least ``minimum``); ``choice`` (one of ``choices``); ``flag``;
    ``directory``; ``pairs`` (repeatable ``KEY=VALUE``, a dict of strings); ``dotted``
    (repeatable ``OWNER.KEY=VALUE``, ``{owner: {key: value}}``, values read by
    :func:`parse_value`). ``cli_default``: the command line's default where it differs from
    the field's."""

    flags: tuple
    kind: str = "text"
    help: str | None = None
    minimum: int | None = None
    choices: tuple = ()
    metavar: str | None = None
    example: str | None = None       # a dotted option's example, for its error message
    cli_default: object = _SAME

    @property
    def flag(self) -> str:
        """The option's main flag (the one the reproduce command writes)."""
        return self.flags[0]

    def normalise(self, value):
        """A keyword of :func:`xai_bench.evaluate` in the form the configuration holds."""
        if self.kind == "names":
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                return [value]
            return list(value)
        if self.kind in ("pairs", "dotted"):
            return dict(value or {})
        if self.kind == "directory":
            return None if value is None else str(value)
        return value

    def command_args(self, value, caveats: list) -> list:
        """The command-line groups (``[flag, value]``) that give ``value`` (as run.json
        records it); what cannot be given is added to ``caveats``."""
        if value is None or value is False or value == "" or value == [] or value == {}:
            return []
        if self.kind == "flag":
            return [[self.flag]]
        if self.kind == "names" and isinstance(value, (list, tuple)):
            return [[self.flag, ",".join(map(str, value))]]
        if self.kind == "pairs":
            return [[self.flag, f"{key}={path}"] for key, path in value.items()]
        if self.kind == "dotted":
            out = []
            for owner, params in value.items():
                for key, v in (params or {}).items():
                    if isinstance(v, dict):
                        caveats.append(f"{self.flag} {owner}.{key}: a nested value cannot be "
                                       f"given on the command line")
                    out.append([self.flag, f"{owner}.{key}={format_value(v)}"])
            return out
        return [[self.flag, str(value)]]


def option(*flags, default=MISSING, factory=MISSING, **how):
    """A :class:`RunConfig` field given on the command line by ``flags`` (see :class:`Option`)."""
    if how.get("kind", "text") not in KINDS:
        raise ValueError(f"unknown option kind {how['kind']!r}")
    return field(default=default, default_factory=factory,
                 metadata={"option": Option(tuple(flags), **how)})


@dataclass
class RunConfig:
    """What to run. ``models``/``methods``/``metrics`` hold names, globs, ``all``, metric
    categories or (through :func:`xai_bench.evaluate`) objects; ``dataset`` a spec or a data
    set object. The fields are in the order of ``xai-bench run --help``."""

    models: list = option("--models", factory=lambda: list(DEFAULT_MODELS), kind="names",
                          help="names, globs or 'all', comma-separated")
    methods: list = option("--methods", factory=lambda: ["default"], kind="names",
                           help="names, globs, 'all' or groups (default: the paper's methods, "
                           "ViT-CX and the baselines; paper, gradient, attention, lrp, "
                           "perturbation, captum, baseline), comma-separated")
    metrics: list = option("--metric", "--metrics", factory=lambda: ["default"],
                           kind="names",
                           help="names, globs, 'all', a category (localisation, perturbation, "
                           "sanity, ...) or a group (default: the paper's seven metrics)")
    dataset: object = option("--dataset", default=DEFAULT_DATASET)
    checkpoints: dict = option(
        "--checkpoint", factory=dict, kind="pairs", metavar="MODEL[@R]=PATH",
        help="checkpoint of a model (default models on shapes are trained and cached); "
        "MODEL@R=PATH for replicate R, or MODEL='GLOB' for one file per replicate")
    replicates: int = option("--replicates", default=1, kind="int", minimum=1,
                             help="independently initialised copies of each model (default "
                             "models: recipe seed + replicate index)")
    n_grids: int = option("--n-grids", default=24, kind="int", minimum=1,
                          help="2x2 grids for the grid pointing game (paper: 250)")
    n_images: int = option("--n-images", default=24, kind="int", minimum=1,
                           help="images for the perturbation metrics (paper: 250)")
    #: which correctly classified images the image-selecting metrics explain
    #: (xai_bench.metrics.common.select_confident); a metric parameter, so part of their cells
    selection: str = option("--selection", default="stratified", kind="choice",
                            choices=("stratified", "global"),
                            help="images the perturbation and sanity metrics explain: the "
                            "most confident of each class in turn (stratified) or overall "
                            "(global)")
    batch_size: int = option("--batch-size", default=32, kind="int", minimum=1,
                             help="explained images per method call and chunk of perturbed "
                             "forwards / 8")
    device: str = option("--device", default="auto", help="auto, cpu or cuda")
    seed: int = option("--seed", default=0, kind="int")
    #: ``None``: the run stays in memory (Python's default); the command line writes results/
    out: str | None = option("--out", default=None, kind="directory", cli_default="results",
                             help="results root; one sub-directory per run")
    name: str | None = option("--name", default=None,
                              help="run sub-directory name (default: from the config)")
    method_params: dict = option("--method-arg", factory=dict, kind="dotted",
                                 metavar="METHOD.KEY=VALUE", example="intgrad.n_steps=20",
                                 help="method parameter, e.g. intgrad.n_steps=20")
    metric_params: dict = option(
        "--metric-arg", factory=dict, kind="dotted", metavar="METRIC.KEY=VALUE",
        example="grid_pointing_game.confidence_threshold=0",
        help="metric parameter, e.g. grid_pointing_game.confidence_threshold=0")
    #: constructor arguments of the models (xai_bench.contracts.model_args): part of each
    #: model's cell identity; "*" for every model of the run
    model_params: dict = option(
        "--model-arg", factory=dict, kind="dotted", metavar="MODEL.KEY=VALUE",
        example="timm:vit_tiny_patch16_224.img_size=32",
        help="constructor argument of a model, e.g. timm:vit_tiny_patch16_224.num_classes=4; "
        "*.KEY=VALUE for every model of the run (a model's own value wins)")
    #: the statistics only (not the cells): a result computed once serves every threshold
    min_effect: str | None = option(
        "--min-effect", default=None, metavar="VALUE",
        help="smallest difference worth reporting: a number in each metric's units (0.01), a "
        "standardised size (0.2sd), or METRIC=VALUE, comma-separated; smaller significant "
        "differences count as ties (one rank group)")
    untrained: bool = option("--untrained", default=False, kind="flag",
                             help="give models without a checkpoint seeded random weights. Meant "
                             "for --metric sanity: parameter_randomisation, random_target and "
                             "smooth_mprt then explain the images the model is most confident "
                             "about, correct or not; efficient_mprt is not run (it needs trained "
                             "weights); every other metric uses only correctly classified "
                             "images, which random weights rarely give")
    train_epochs: int | None = option("--epochs", default=None, kind="int", minimum=1,
                                      help="epochs when a default model must be trained first")
    #: forward-only work (perturbed copies, the selection pass, ViT-CX's masked forwards) in
    #: "fp32" or "bf16" autocast, optionally through torch.compile (xai_bench.compute.precision);
    #: explanations always run in float32
    precision: str = option("--precision", default="fp32", kind="choice",
                            choices=("fp32", "bf16"),
                            help="precision of the forward-only work (perturbed copies, "
                            "selection, ViT-CX masks); explanations stay float32 (docs/gpu.md)")
    compile: bool = option("--compile", default=False, kind="flag",
                           help="torch.compile the forward-only model calls (pays off on "
                           "paper-scale runs on a GPU; docs/gpu.md)")
    #: an extra output (meta.csv), not part of the cells or the run's name
    meta: bool = option("--meta", default=False, kind="flag",
                        help="also meta-evaluate every metric (meta.csv: resilience and "
                        "reactivity under model and input perturbations, gap to the random "
                        "baseline); costs (1 + 4k) = 13x the metric evaluations, printed first")

    @classmethod
    def from_options(cls, **options) -> "RunConfig":
        """The configuration of :func:`xai_bench.evaluate`'s keywords (each field by its
        name; names as a string or a list, mappings as ``None`` or a dict, ``out`` as a
        path)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown run option(s): {', '.join(unknown)}")
        return cls(**{name: known[name].metadata["option"].normalise(value)
                      for name, value in options.items()})

    @classmethod
    def option_names(cls) -> tuple:
        """The fields' names: the run options' keywords of :func:`xai_bench.evaluate`."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def flag(cls, name: str) -> str:
        """The command-line flag of field ``name``."""
        return next(f.metadata["option"].flag for f in fields(cls) if f.name == name)

    def spec(self) -> dict:
        """The configuration as plain JSON (objects by name): what names the run directory."""
        return {"models": [label_of(m) for m in self.models],
                "methods": [label_of(m) for m in self.methods],
                "metrics": [label_of(m) for m in self.metrics],
                "dataset": label_of(self.dataset), "checkpoints": dict(self.checkpoints),
                "n_grids": self.n_grids, "n_images": self.n_images, "seed": self.seed,
                "untrained": self.untrained, "train_epochs": self.train_epochs,
                "method_params": self.method_params,
                **({"replicates": self.replicates} if self.replicates != 1 else {}),
                **({"metric_params": self.metric_params} if self.metric_params else {}),
                **({"model_params": normalise_model_params(self.model_params)}
                   if self.model_params else {}),
                **({"selection": self.selection} if self.selection != "stratified" else {}),
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


def run_options() -> list:
    """``[(field name, its Option, its default on the command line)]`` in field order."""
    out = []
    for f in fields(RunConfig):
        how = f.metadata["option"]
        default = f.default if f.default_factory is MISSING else f.default_factory()
        out.append((f.name, how, default if how.cli_default is _SAME else how.cli_default))
    return out


def label_of(obj) -> str:
    """How a model, method, metric or data set given by name or as an object is named."""
    if isinstance(obj, str):
        return obj
    return str(getattr(obj, "name", None) or getattr(obj, "__name__", None)
               or type(obj).__name__)


# ------------------------------------------------------------------------ value grammar
def parse_value(text: str):
    """int, float, bool (true/false), None (none/null), a tuple for comma lists
    (``stem_channels=16,32``), else the string."""
    if "," in text:
        return tuple(parse_value(part.strip()) for part in text.split(",") if part.strip())
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


def format_value(value) -> str:
    """A parameter value as :func:`parse_value` reads it back: true/false, none, comma
    lists (a dict is shown as JSON: it cannot be given on the command line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


# ------------------------------------------------------------------------ reproducing a run
def reproduce_command(info: dict) -> tuple[str, list]:
    """``(command, caveats)``: the ``xai-bench run`` command line that reproduces the run of
    ``info`` (run.json), rebuilt from its configuration (``info["command"]`` where the run
    recorded its own), and what it cannot reproduce."""
    if info.get("command"):
        command = info["command"]
        return (shlex.join(map(str, command)) if isinstance(command, (list, tuple))
                else str(command)), []
    cfg = info.get("config") or {}
    caveats: list = []
    args = [["xai-bench", "run"]]
    for name, how, _ in run_options():
        args += how.command_args(cfg.get(name), caveats)
    objects = [label for label, m in (info.get("models") or {}).items()
               if isinstance(m, dict) and m.get("object")]
    if objects:
        caveats.append(f"{', '.join(objects)} were passed to xai_bench.evaluate as model "
                       f"objects: this command loads the registered models of those names "
                       f"instead (give their checkpoints with --checkpoint MODEL=PATH)")
    local = [name for name, p in (info.get("plugins") or {}).items()
             if isinstance(p, dict) and not p.get("distribution")]
    if local:
        caveats.append(f"{', '.join(local)} came from code that is not an installed plugin "
                       f"(a script or notebook): the command finds them only where they are "
                       f"registered")
    # "all", a glob or a category resolves to what is installed when the command runs: name
    # what it resolved to in this run, so that a reader can pin it
    for key, resolved in (("methods", "method_params"), ("metrics", "metric_params")):
        given = [str(v) for v in (cfg.get(key) or [])]
        names = list(info.get(resolved) or {})
        if names and sorted(given) != sorted(names):
            caveats.append(f"{RunConfig.flag(key)} {','.join(given)} resolved to "
                           f"{','.join(names)} in this run")
    if cfg.get("out") is None:
        caveats.append("the run was kept in memory (out=None): add --out to write it")
    text = " \\\n  ".join(" ".join(shlex.quote(a) for a in group) for group in args)
    return text, caveats
