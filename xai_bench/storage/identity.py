"""Content identities: what determines a result, as plain JSON, and how two of them differ.

A cell of a run (one model × method × metric) is identified by everything that determines its
numbers (see :mod:`xai_bench.run.identities`): resolved parameters, implementing classes, code,
weights, data and run options. This module supplies the pieces:

- :func:`code_identity` — for an object defined in xai-bench: the package version and a digest
  of the source of the module that defines it *and every xai-bench module it imports*
  (transitively, found by parsing the import statements), so editing
  ``methods/gradient.py`` changes the identity of ``intgrad`` but not of ``rollout``; for a
  plugin: its distribution's name and version and a digest of its defining module's file;
- :func:`file_sha256` — a file's SHA-256 (cached in memory per path, size, mtime, ctime and
  inode); :func:`path_fingerprint` — a file's or a whole folder's content digest;
- :func:`weights_digest` — a digest of a module's parameters and buffers (models given as
  objects);
- :func:`digest` — SHA-256 of a canonical JSON encoding;
- :func:`differences` — the leaves that changed between two identities, for the
  one-line-per-reason staleness report.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import sys
from pathlib import Path

from xai_bench.storage.content_hashes import file_content_sha256, tree_digest
from xai_bench.version import VERSION

PACKAGE = "xai_bench"
PACKAGE_DIR = Path(__file__).resolve().parent.parent

__all__ = ["digest", "file_sha256", "code_identity", "module_closure", "weights_digest",
           "differences", "distribution_of", "canonical"]


def canonical(obj) -> str:
    """Sorted-key, compact JSON; non-JSON values are written with ``repr``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)


def digest(obj) -> str:
    return hashlib.sha256(canonical(obj).encode("utf-8")).hexdigest()


_FILE_HASHES: dict = {}


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, cached in memory per path, size, mtime, ctime and inode (a
    replacement with the same size and restored mtime still has a new ctime)."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


# ---------------------------------------------------------------- package source closure
def _module_file(module: str) -> Path | None:
    rel = module.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*rel)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str, path: Path) -> set[str]:
    """xai_bench modules imported anywhere in ``path`` (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                # `from xai_bench.x import y`: y may be a submodule or an attribute
                while name and _module_file(name) is None:
                    name = name.rpartition(".")[0]
                if name and name != PACKAGE:
                    found.add(name)
    return found


@functools.lru_cache(maxsize=None)
def _closure_files(module: str, stamp: tuple) -> tuple:
    seen, todo = set(), [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is not None:
            todo.extend(_imports(mod, path) - seen)
    return tuple(sorted(str(_module_file(m).relative_to(PACKAGE_DIR)) for m in seen
                        if _module_file(m) is not None))


def _package_stamp() -> tuple:
    """Changes whenever a source file of the package is edited (so cached closures and
    digests are recomputed in a long-lived process)."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                        for p in PACKAGE_DIR.rglob("*.py")))


def module_closure(module: str) -> list[str]:
    """Source files (relative to the package) of ``module`` and every xai-bench module it
    imports, transitively."""
    return list(_closure_files(module, _package_stamp()))


def source_digest(files) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update(file_sha256(PACKAGE_DIR / rel).encode() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _distributions() -> dict:
    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # very old metadata backends
        return {}


def forget_distributions():
    """Drop the cached module -> distribution map (after installing or upgrading a plugin)."""
    _distributions.cache_clear()


def distribution_of(module: str) -> tuple[str | None, str | None]:
    """``(distribution name, version)`` that provides top-level package of ``module``."""
    top = module.split(".")[0]
    for dist in _distributions().get(top, []):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def _defining(obj):
    target = obj
    if isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isclass(target) or inspect.isfunction(target) or inspect.ismethod(target)):
        target = type(target)
    return target


def qualified_name(obj) -> str:
    target = _defining(obj)
    return f"{target.__module__}.{target.__qualname__}"


def code_identity(obj) -> dict:
    """What identifies the code of ``obj`` (a class, function or instance)."""
    target = _defining(obj)
    module = target.__module__
    if module == PACKAGE or module.startswith(PACKAGE + "."):
        return {"class": qualified_name(obj), "package": "xai-bench",
                "version": VERSION,
                "source": source_digest(module_closure(module))}
    dist, version = distribution_of(module)
    out = {"class": qualified_name(obj), "distribution": dist, "version": version}
    try:
        source_file = inspect.getsourcefile(target)
    except (TypeError, OSError):
        source_file = None
    if source_file and os.path.isfile(source_file):
        out["source"] = file_sha256(source_file)
    else:  # defined interactively: its source text if available
        try:
            out["source"] = hashlib.sha256(inspect.getsource(target).encode()).hexdigest()
        except (TypeError, OSError):
            out["source"] = None
    return out


def weights_digest(module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's state dict."""
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def differences(old, new, path: tuple = ()) -> list[tuple[tuple, object, object]]:
    """``[(path, old value, new value)]`` for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key, _ABSENT), new.get(key, _ABSENT), path + (key,))
        return out
    if old == new:
        return []
    return [(path, old, new)]


class _Absent:
    def __repr__(self):
        return "(none)"

    def __eq__(self, other):
        return isinstance(other, _Absent)

    def __hash__(self):
        return 0


_ABSENT = _Absent()


def python_identity() -> dict:
    """The libraries whose versions change numbers."""
    import torch

    return {"torch": str(torch.__version__), "python": sys.version.split()[0]}


def path_fingerprint(path) -> str | None:
    """A file's SHA-256, or for a directory a digest of every file's relative path and content
    SHA-256 (symbolic links followed; per-file digests cached on disk under a key a same-size,
    same-mtime replacement cannot match: see :mod:`xai_bench.storage.content_hashes`); None if
    it does not exist."""
    path = Path(path).expanduser()
    if path.is_file():
        return file_content_sha256(path)
    if not path.is_dir():
        return None
    return tree_digest(path)


def dataset_spec_fingerprint(spec: str) -> str | None:
    """The content fingerprint of the files a data-set spec reads (``kind:PATH`` specs);
    None for generated data (``shapes``), which the spec and the code determine."""
    kind, _, rest = str(spec).partition(":")
    if kind.strip().lower() in ("cifar10", "imagefolder", "imagenet") and rest:
        return path_fingerprint(rest)
    return None
