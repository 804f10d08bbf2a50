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


@pytest.mark.parametrize("kind, names", [
    ("method", xai_bench.list_methods()),
    ("metric", xai_bench.list_metrics()),
])
def test_every_registered_name_is_defined(kind, names):
    assert names, f"no {kind}s registered"
    missing = sorted(set(names) - _headings())
    assert not missing, (f"docs/definitions.md has no '### `name`' section for the {kind}(s) "
                         f"{', '.join(missing)}")
