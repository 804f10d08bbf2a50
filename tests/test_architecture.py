"""The package's shape, checked by reading its code: no module imports another module's
private name, no import cycle, no source file over 500 lines, and a cell's source identity
holds only the code that computes it (editing a figure or the report recomputes nothing;
editing a metric recomputes only that metric's cells)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xai_bench"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _owner(name: str) -> str | None:
    """The module that defines ``name`` (a module, or an attribute of one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path):
    """``(imported module, imported name or None)`` of every xai_bench import in ``path``,
    inside functions too (a lazy import is still a dependency)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "xai_bench":
                    yield _owner(alias.name), None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "xai_bench":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    yield full, None
                else:
                    yield _owner(base), alias.name


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_attribute_uses(module: str, path: Path):
    """``m._name`` where ``m`` is another xai_bench module bound by an import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xai_bench"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    bound[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("xai_bench") and alias.asname:
                    bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in bound and _private(node.attr) and \
                bound[node.value.id] != module:
            yield bound[node.value.id], node.attr


def test_no_module_imports_a_private_name_of_another():
    found = [f"{module} imports {target}.{name}"
             for module, path in MODULES.items()
             for target, name in _imports(module, path)
             if name and _private(name) and target != module]
    found += [f"{module} uses {target}.{name}"
              for module, path in MODULES.items()
              for target, name in _private_attribute_uses(module, path)]
    assert not found, "\n".join(found)


def _graph() -> dict:
    return {module: {t for t, _ in _imports(module, path) if t and t != module}
            for module, path in MODULES.items()}


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_source_file_is_longer_than_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


COMPUTING = ("xai_bench.models", "xai_bench.methods", "xai_bench.metrics")
NOT_IN_A_CELL = ("outputs/", "run/", "analysis/", "cli", "registry.py", "api.py",
                 "storage/identity.py", "storage/atomic_io.py")


def test_a_cells_source_closure_holds_only_computing_code():
    from xai_bench.storage.identity import module_closure

    for module in MODULES:
        if not module.startswith(COMPUTING) or module in COMPUTING:
            continue
        closure = module_closure(module)
        stray = [f for f in closure if f.startswith(NOT_IN_A_CELL)]
        assert not stray, f"{module}'s source identity includes {stray}"


def _run(cwd: Path, out: Path) -> str:
    """A tiny run of the copy of the package in ``cwd``; its terminal output."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "XAI_BENCH_CACHE": str(out / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "xai_bench", "run", "--models", "vit_nano", "--untrained",
         "--methods", "uniform,ixg", "--metric", "pixel_perturbation,grid_pointing_game",
         "--metric-arg", "grid_pointing_game.confidence_threshold=0", "--n-grids", "1",
         "--n-images", "2", "--batch-size", "8", "--out", str(out), "--name", "r",
         "--no-plots", "--no-progress"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    return result.stdout + result.stderr


def _touch(path: Path):
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited by a test\n",
                    encoding="utf-8")


@pytest.mark.slow
def test_editing_figures_or_report_recomputes_no_cell_and_a_metric_only_its_own(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "xai_bench",
                    ignore=shutil.ignore_patterns("__pycache__", "weights"))
    out = tmp_path / "out"
    first = _run(copy, out)
    assert "(0/4 cells already done)" in first, first
    for name in ("explain.py", "plots.py", "presentation.py"):
        _touch(copy / "xai_bench" / "outputs" / name)
    for path in (copy / "xai_bench" / "outputs").rglob("report*.py"):
        _touch(path)
    _touch(copy / "xai_bench" / "registry.py")
    again = _run(copy, out)
    assert "(4/4 cells already done)" in again, again
    _touch(copy / "xai_bench" / "metrics" / "perturbation.py")
    third = _run(copy, out)
    assert "(2/4 cells already done)" in third, third
    assert "2 cells stale: pixel_perturbation source changed" in third, third
