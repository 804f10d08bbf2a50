"""What every case of the bad-input catalogue asserts (tests/test_bad_input*.py): exit code 2,
exactly one ``Error: ...`` line naming the problem, no traceback, nothing written."""


def files_under(*roots) -> set:
    """``(root, relative path)`` of everything under ``roots``: compared before and after a
    case, to show that it wrote nothing."""
    return {(str(root), str(p.relative_to(root))) for root in roots for p in root.rglob("*")}


def assert_one_line_error(result, fragments=()) -> str:
    """A click result that ended with exit code 2 and one ``Error:`` line containing every
    fragment; returns that line."""
    output = result.output
    assert result.exit_code == 2, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def isolate_caches(monkeypatch, root):
    """Point the model and data caches at ``root`` (outside the user's home)."""
    monkeypatch.setenv("XAI_BENCH_CACHE", str(root))
    monkeypatch.setenv("XAI_BENCH_DATA", str(root / "data"))
