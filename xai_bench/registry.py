"""Name -> object registries for models, attribution methods and metrics.

Entries come from two places:

* builtins: the modules listed in ``builtin_modules`` (and their submodules) are imported
  lazily, the first time the registry is listed or queried, so that ``import xai_bench``
  stays cheap (no torch); every object there declared with ``@xai_bench.method`` /
  ``@xai_bench.metric`` (or registered with ``@REGISTRY.register()``) becomes an entry, and
  so does every declaration that the registry's ``declarations`` hook lists (models: builders
  declared with :func:`xai_bench.models.declare.declare_model`, with their metadata). A
  model, method or metric module therefore never imports this registry, and editing the
  registry changes no cell's source identity;
* third-party plugins, declared as entry points of ``group`` in their distribution's
  metadata, e.g. in a plugin's ``pyproject.toml``::

      [project.entry-points."xai_bench.methods"]
      my_method = "my_pkg.methods:MyMethod"

  Listing uses only the entry point names; a plugin is imported when it is first asked
  for. A plugin that fails to load is reported (``RegistryError`` from ``get``, or a line
  in ``problems`` from ``load_all``), never fatal for the rest of the registry.

* dynamic prefixes (``add_prefix``): names ``"<prefix>:<rest>"``, e.g.
  ``timm:vit_small_patch16_224``, resolved on demand by a resolver function (imported on
  first use, so an optional dependency loads only when such a name is asked for). They are
  not listed (a prefix may stand for thousands of names); ``prefixes()`` lists the prefixes.

This module must not import anything heavy: it is imported by ``xai_bench/__init__.py``.
"""

from __future__ import annotations

import difflib
import re
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys

from xai_bench.contracts.members import DECLARED
from xai_bench.errors import RegistryError, UnknownNameError

__all__ = ["Registry", "RegistryError", "UnknownNameError", "MODELS", "METHODS", "METRICS",
           "register_method", "register_metric"]


_GLOB_CHARS = "*?["
# Characters that would make a name ambiguous in `resolve` specs ("a,b", globs).
_FORBIDDEN_CHARS = _GLOB_CHARS + "], \t\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not the one of "et al." or "e.g.")."""
    text = _one_line(text)
    match = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.(?:\s|$)", text)
    return text[:match.start()] + "." if match else text


def _distribution(ep) -> str:
    """``name version`` of the distribution that declares entry point ``ep``."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown distribution"
    try:
        return f"{dist.metadata['Name']} {dist.version}"
    except Exception:
        return "an unknown distribution"


def _quote_list(names) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


class Registry:
    """A named collection of builders (classes or callables) of one kind."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...] = (),
                 declarations: str | None = None, walk: bool = False):
        self.kind = kind
        #: import every module of the builtin packages (methods, metrics: one file an entry)
        self.walk = walk
        self.group = group
        self.builtin_modules = tuple(builtin_modules)
        # "module:function" returning [(name, object, metadata)], read after the builtin
        # modules are imported (imported by name, so this module depends on no builtin code)
        self.declarations = declarations
        self.problems: list[str] = []  # human-readable warnings / plugin load failures
        self.failures: dict[str, str] = {}  # plugin name -> why it failed to load
        self._builtins: dict[str, object] = {}
        self._meta: dict[str, dict] = {}
        self._plugins = None  # name -> EntryPoint; None until discovered
        self._loaded: dict[str, object] = {}  # plugin name -> loaded object
        self._prefixes: dict[str, tuple] = {}  # prefix -> (resolver or "module:attr", description)
        # Set *before* importing: the builtin modules call `register` and may list/query
        # this registry while they are being imported; that must not recurse.
        self._builtins_started = False

    # ------------------------------------------------------------------ registration
    def register(self, name=None, **meta):
        """Decorator: ``@REG.register()``, ``@REG.register("name", key=value)`` or ``@REG.register``."""
        if callable(name) and not isinstance(name, str):  # used bare, without parentheses
            obj = name
            self.add(obj.__name__, obj)
            return obj

        def decorator(obj):
            self.add(obj.__name__ if name is None else name, obj, **meta)
            return obj

        return decorator

    def add(self, name: str, obj, **meta):
        """Register `obj` under `name` with optional metadata. Does not import the builtins."""
        self._check_name(name)
        if name in self._builtins:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._builtins[name] = obj
        self._meta[name] = dict(meta)
        if self._plugins is not None and name in self._plugins:
            self._report_clash(name)
        return obj

    def unregister(self, name: str):
        """Remove a builtin entry (e.g. one added interactively or by a test)."""
        self._builtins.pop(name)
        self._meta.pop(name, None)

    def _check_name(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name == "all" or any(c in name for c in _FORBIDDEN_CHARS):
            raise ValueError(
                f"invalid {self.kind} name {name!r}: 'all', commas, spaces and glob characters are reserved"
            )

    def _problem(self, message: str):
        if message not in self.problems:
            self.problems.append(message)

    def _report_clash(self, name):
        ep = self._plugins[name]
        self._problem(f"{self.kind} plugin '{name}' ({ep.value}) clashes with a builtin {self.kind}; "
                      "the builtin is used")

    # ------------------------------------------------------------------ dynamic prefixes
    def add_prefix(self, prefix: str, resolver, description: str = ""):
        """Resolve names ``"<prefix>:<rest>"`` on demand with ``resolver(rest)``, which returns
        the builder (called with the keyword arguments of e.g. ``get_model``) or raises
        :class:`RegistryError` (:class:`UnknownNameError`, with suggestions, for a name it
        does not know). ``resolver`` is a callable or an import string ``"module:function"``,
        imported when such a name is first asked for. Registered names (builtins, plugins)
        take precedence over a prefix."""
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise ValueError(f"{self.kind} prefix must be an identifier, got {prefix!r}")
        if prefix in self._prefixes:
            raise ValueError(f"{self.kind} prefix '{prefix}:' is already registered")
        if not (callable(resolver) or (isinstance(resolver, str) and ":" in resolver)):
            raise ValueError(f"resolver of {self.kind} prefix '{prefix}:' must be a callable or "
                             f"a 'module:function' string, got {resolver!r}")
        self._prefixes[prefix] = (resolver, str(description))

    def prefixes(self) -> dict:
        """Registered dynamic prefixes (``"timm"``, ...) and their descriptions."""
        return {p: desc for p, (_, desc) in sorted(self._prefixes.items())}

    def _prefix_of(self, name):
        """``(prefix, rest)`` when ``name`` is ``"<registered prefix>:<rest>"``, else None."""
        if isinstance(name, str) and ":" in name:
            prefix, _, rest = name.partition(":")
            if prefix in self._prefixes:
                return prefix, rest
        return None

    def _resolve_prefixed(self, name: str):
        prefix, rest = self._prefix_of(name)
        resolver, _ = self._prefixes[prefix]
        if isinstance(resolver, str):
            module, _, attr = resolver.partition(":")
            try:
                resolver = getattr(importlib.import_module(module), attr)
            except Exception as e:
                raise RegistryError(f"{self.kind} prefix '{prefix}:' ({module}:{attr}) failed to "
                                    f"load: {type(e).__name__}: {_one_line(e)}") from e
        if not rest.strip():
            raise UnknownNameError(f"'{name}' names no {self.kind}: write {prefix}:<name>")
        return resolver(rest)

    # ------------------------------------------------------------------ discovery
    def _ensure_builtins(self):
        if self._builtins_started:
            return
        self._builtins_started = True
        for module in self.builtin_modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                # A builtin module that does not exist (yet) is fine; a *dependency* of it
                # that is missing is a real error and must surface.
                if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
                    raise
            if self.walk:
                self._import_submodules(module)
        self._collect_declared()

    @staticmethod
    def _import_submodules(package: str):
        """Import every module of a built-in package, so that a new built-in method or metric
        is one file: nothing else has to import it."""
        import pkgutil

        spec = importlib.util.find_spec(package)
        for info in pkgutil.iter_modules(spec.submodule_search_locations or []):
            importlib.import_module(f"{package}.{info.name}")

    def _collect_declared(self):
        """Register every object of the builtin modules declared for this registry's kind
        (its own ``__xai_bench_entry__`` marker, not an inherited one), in module order."""
        for name, module in sorted(sys.modules.items()):
            if module is None or not any(name == b or name.startswith(b + ".")
                                         for b in self.builtin_modules):
                continue
            for obj in list(vars(module).values()):
                own = getattr(obj, "__dict__", {})
                if own.get(DECLARED) == self.kind and obj.__module__ == name and \
                        obj.name not in self._builtins:
                    self.add(obj.name, obj)
        if self.declarations:
            module, _, attr = self.declarations.partition(":")
            for name, obj, meta in getattr(importlib.import_module(module), attr)():
                if name not in self._builtins:
                    self.add(name, obj, **meta)

    def _entry_points(self) -> dict:
        if self._plugins is None:
            plugins = {}
            for ep in importlib.metadata.entry_points(group=self.group):
                if ep.name in plugins:
                    # The same distribution seen twice on sys.path is harmless; two different
                    # targets for one name are not.
                    if plugins[ep.name].value != ep.value:
                        self._problem(f"{self.kind} plugin '{ep.name}' is declared twice "
                                      f"({plugins[ep.name].value} and {ep.value}); using the first")
                    continue
                try:
                    self._check_name(ep.name)
                except ValueError as e:
                    self._problem(f"{self.kind} plugin ({ep.value}) skipped: {e}")
                    continue
                plugins[ep.name] = ep
            self._plugins = plugins
            for name in plugins:
                if name in self._builtins:
                    self._report_clash(name)
        return self._plugins

    def refresh(self):
        """Forget discovered and loaded plugins (and their load failures), e.g. after
        installing or upgrading one; they are found and imported again on next use."""
        from xai_bench.storage.identity import forget_distributions

        self._plugins = None
        self._loaded.clear()
        forget_distributions()
        failed = set(self.failures.values())
        self.problems = [p for p in self.problems if p not in failed]
        self.failures.clear()

    def _all_names(self) -> set:
        self._ensure_builtins()
        return set(self._builtins) | set(self._entry_points())

    # ------------------------------------------------------------------ queries
    def list(self, pattern="*") -> list:
        """Sorted names matching a glob, or any of a list/tuple of globs (case-sensitive)."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern or ["*"])
        return sorted(n for n in self._all_names() if any(fnmatch.fnmatchcase(n, p) for p in patterns))

    def names(self) -> list:
        return self.list("*")

    def get(self, name: str):
        """The object registered as `name`, loading a plugin on first use."""
        self._ensure_builtins()
        plugins = self._entry_points()  # discovered even for builtins, so clashes get reported
        if name in self._builtins:
            return self._builtins[name]
        if name not in plugins:
            if self._prefix_of(name):
                return self._resolve_prefixed(name)
            raise UnknownNameError(self.unknown_message(name))
        if name not in self._loaded:
            ep = plugins[name]
            try:
                self._loaded[name] = ep.load()
            except Exception as e:  # any failure inside third-party code is reported, not fatal
                message = (f"{self.kind} plugin '{name}' ({ep.value}, from {_distribution(ep)}) "
                           f"failed to load: {type(e).__name__}: {_one_line(e)}")
                self.failures[name] = message
                self._problem(message)
                raise RegistryError(message) from e
        return self._loaded[name]

    def unknown_message(self, name) -> str:
        hint = ""
        if self._prefixes and ":" in str(name):
            hint = f" (name prefixes: {', '.join(p + ':' for p in sorted(self._prefixes))})"
        words = sorted(self._all_names()) + (sorted(self.groups()) if ":" not in str(name)
                                             else [])
        close = difflib.get_close_matches(str(name), words, n=3)
        if close:
            return f"unknown {self.kind} '{name}' — did you mean {_quote_list(close)}?{hint}"
        return (f"unknown {self.kind} '{name}'; run `xai-bench list {self.kind}s` to see the "
                f"available names{hint}")

    def meta(self, name: str) -> dict:
        """Metadata given at registration (a copy; ``{}`` for plugins)."""
        if name in self._builtins or name in self:
            return dict(self._meta.get(name, {}))
        raise UnknownNameError(self.unknown_message(name))

    def card(self, name: str):
        """What entry ``name`` declares about itself (a method's or metric's card,
        :mod:`xai_bench.contracts`): the same for built-ins and plugins (a plugin is loaded
        for this). A plugin that fails to load raises :class:`RegistryError`."""
        obj = self.get(name)
        if self.kind == "method":
            from xai_bench.contracts.method import method_card

            return method_card(obj, name)
        if self.kind == "metric":
            from xai_bench.contracts.metric import metric_card

            return metric_card(obj, name)
        raise TypeError(f"{self.kind} entries declare no card")

    def description(self, name: str) -> str:
        """One sentence about entry ``name``: its registered description, else its declared
        one, else the first sentence of its docstring (plugins are loaded for this); for a
        plugin that fails to load, why."""
        meta = self.meta(name)
        if meta.get("description"):
            return _first_sentence(meta["description"])
        try:
            obj = self.get(name)
        except RegistryError as e:
            return f"FAILED TO LOAD: {e}"
        declared = getattr(obj, "description", None)
        if isinstance(declared, str) and declared:
            return _first_sentence(declared)
        doc = inspect.getdoc(obj) or ""
        if not doc and not inspect.isclass(obj) and not inspect.isfunction(obj):
            doc = inspect.getdoc(type(obj)) or ""
        return _first_sentence(doc) or "(no description)"

    def source(self, name: str) -> str:
        """Where entry ``name`` comes from: ``xai-bench`` or the plugin's distribution."""
        if name in self._builtins:
            return "xai-bench"
        ep = self._entry_points().get(name)
        return _distribution(ep) if ep is not None else "xai-bench"

    def load_all(self) -> list:
        """Import every plugin; failures are recorded in ``problems`` (and returned), not raised."""
        for name in self.list():
            if name not in self._builtins:
                try:
                    self.get(name)
                except RegistryError:
                    pass  # already recorded in self.problems
        return list(self.problems)

    def resolve(self, spec) -> list:
        """Expand "a,b*,all" and group words (:meth:`groups`), or a list of such strings, to
        names, in first-appearance order."""
        items = [spec] if isinstance(spec, str) else list(spec)
        result: dict[str, None] = {}  # an ordered set
        groups = None  # read from the cards once, and only when a word is not a name
        for item in items:
            for part in str(item).split(","):
                part = part.strip()
                if not part:
                    continue
                if part == "all":
                    matches = self.list()
                elif any(c in part for c in _GLOB_CHARS):
                    matches = self.list(part)
                    if not matches:
                        raise UnknownNameError(f"no {self.kind} matches '{part}'")
                elif part in self._all_names():
                    matches = [part]
                elif self._prefix_of(part):
                    self.get(part)  # the resolver's own error (e.g. suggestions) if unknown
                    matches = [part]
                elif part in (groups := self.groups() if groups is None else groups):
                    matches = groups[part]
                else:
                    raise UnknownNameError(self.unknown_message(part))
                result.update(dict.fromkeys(matches))
        return list(result)

    def groups(self) -> dict:
        """``{word: [names]}``: the words that select several entries at once — a method's
        kind and declared groups (``gradient``, ``paper``), a metric's category and declared
        groups (``localisation``, ``default``) — from the entries' cards; entries that fail to load are left
        out. Models have none."""
        if self.kind not in ("method", "metric"):
            return {}
        out: dict = {}
        for name in self.list():
            try:
                card = self.card(name)
            except RegistryError:
                continue
            words = ((card.kind, *card.groups) if self.kind == "method"
                     else (card.category, *card.groups))
            for word in words:
                out.setdefault(word, []).append(name)
        return out

    # ------------------------------------------------------------------ container protocol
    def __contains__(self, name) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._all_names():
            return True
        if self._prefix_of(name):
            try:
                self.get(name)
            except RegistryError:
                return False
            return True
        return False

    def __iter__(self):
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._all_names())

    def __repr__(self):
        return f"Registry({self.kind!r}, group={self.group!r})"


MODELS = Registry("model", "xai_bench.models", ("xai_bench.models",),
                  declarations="xai_bench.models.declare:declared_models")
MODELS.add_prefix("timm", "xai_bench.models.timm_adapter:resolve_timm_model",
                  "any timm VisionTransformer, e.g. timm:vit_small_patch16_224 (pip install "
                  "\"xai-bench[timm]\")")
METHODS = Registry("method", "xai_bench.methods", ("xai_bench.methods",), walk=True)
METHODS.add_prefix("captum", "xai_bench.methods.captum_adapter:resolve_captum_method",
                   "any captum.attr attribution, e.g. captum:Saliency, captum:Occlusion, "
                   "captum:NoiseTunnel(Saliency)")
METRICS = Registry("metric", "xai_bench.metrics", ("xai_bench.metrics",), walk=True)
METRICS.add_prefix("quantus", "xai_bench.metrics.quantus_adapter:resolve_quantus_metric",
                   "any Quantus metric, e.g. quantus:Sparseness (pip install "
                   "\"xai-bench[quantus]\")")


def register_method(obj):
    """Decorator: register a method (class or declared function) under its ``name`` in
    :data:`METHODS` now (built-in modules need not: the registry finds their declarations)."""
    METHODS.add(obj.name if isinstance(getattr(obj, "name", None), str) else obj.__name__, obj)
    return obj


def register_metric(obj):
    """Decorator: register a metric (class or declared function) under its ``name`` in
    :data:`METRICS` now."""
    METRICS.add(obj.name if isinstance(getattr(obj, "name", None), str) else obj.__name__, obj)
    return obj
