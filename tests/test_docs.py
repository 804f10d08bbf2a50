"""The documentation is self-contained: no file of the project points to material outside the
repository (the internal design notes or the folder of source texts they were written from),
and docs/definitions.md defines every registered method and metric under a heading
``### `name` ``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import xai_bench

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "docs" / "definitions.md"
SCANNED_DIRS = ("xai_bench", "docs", "tests", "benchmarks")
SCANNED_SUFFIXES = (".py", ".md")

# Built by concatenation so that this file does not match itself.
FORBIDDEN = (
    "DESIGN" + ".md",
    "seeds" + "/",
    "shared" + "/seeds",
    "holistic-bcos-vit" + "-paper",
    "bcos-v2" + "-abstract",
    "vit-cx" + "-abstract",
)


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for name in SCANNED_DIRS:
        folder = ROOT / name
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*")
                            if p.is_file() and p.suffix in SCANNED_SUFFIXES)
    return [p for p in files if p.is_file()]


def test_no_references_outside_the_repository():
    offending = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        lowered = text.lower()
        for needle in FORBIDDEN:
            start = lowered.find(needle.lower())
            while start != -1:
                line = text.count("\n", 0, start) + 1
                offending.append(f"{path.relative_to(ROOT)}:{line}: {needle}")
                start = lowered.find(needle.lower(), start + 1)
    assert not offending, ("files cite material outside the repository; state the fact or "
                           "point to docs/definitions.md instead:\n" + "\n".join(offending))


def _headings() -> set[str]:
    text = DEFINITIONS.read_text(encoding="utf-8")
    return set(re.findall(r"^### `([^`]+)`\s*$", text, flags=re.MULTILINE))


def _builtins(registry) -> list[str]:
    """The names xai-bench itself registers (installed plugins document themselves)."""
    return [n for n in registry.list() if registry.source(n) == "xai-bench"]


@pytest.mark.parametrize("kind, registry", [
    ("method", xai_bench.METHODS),
    ("metric", xai_bench.METRICS),
])
def test_every_builtin_name_is_defined(kind, registry):
    names = _builtins(registry)
    assert names, f"no {kind}s registered"
    missing = sorted(set(names) - _headings())
    assert not missing, (f"docs/definitions.md has no '### `name`' section for the {kind}(s) "
                         f"{', '.join(missing)}")


def test_the_contract_tables_in_the_docs_are_generated_from_the_protocols():
    from xai_bench.contracts.docs import contract_markdown

    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    start, end = text.index("<!-- contract -->\n"), text.index("\n<!-- /contract -->")
    assert text[start + len("<!-- contract -->\n"):end] == contract_markdown(), (
        "docs/models.md is out of date: paste xai_bench.contracts.docs.contract_markdown() "
        "between its contract markers")


def test_the_readme_names_every_member_of_the_model_contract():
    from xai_bench.contracts.model import CAPABILITY_MEMBERS, MODEL_MEMBERS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("The model contract"):readme.index("docs/scales.md")]
    named = set(re.findall(r"`(\w+)(?:\([^`]*\))?`", section))
    members = {m.name for m in MODEL_MEMBERS} | {m.name for ms in CAPABILITY_MEMBERS.values()
                                                  for m in ms}
    assert members <= named, f"README does not name {sorted(members - named)}"


def test_every_training_recipe_is_documented_with_its_values():
    from xai_bench.training import RECIPES

    text = (ROOT / "docs" / "definitions.md").read_text()
    section = text[text.index("## 6. Training recipes"):]
    for name, recipe in RECIPES.items():
        row = next((line for line in section.splitlines() if line.startswith(f"| `{name}` |")),
                   None)
        assert row is not None, f"recipe {name} is not in docs/definitions.md, section 6"
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(recipe.epochs) and cells[2] == str(recipe.batch_size), row
        assert float(cells[3]) == recipe.lr and cells[7] == f"{recipe.mosaic:g}", row
