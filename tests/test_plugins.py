"""A third-party method and metric, one file each in an installed package
(tests/plugin_package: plain functions with @xai_bench.method / @xai_bench.metric, declared
as entry points), of kinds the harness has never seen: scored by `xai-bench run` and by
`evaluate(out=...)`, drawn and reported from their own declarations like built-ins."""

import importlib
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.outputs.presentation import PALETTE, Presentation
from xai_bench.storage.results import read_records, read_run_info

PLUGIN_PACKAGE = Path(__file__).with_name("plugin_package")
CONFIG = dict(models="vit_nano", methods="edge_energy,uniform", metrics="concentration",
              n_images=4, n_grids=1)


@pytest.fixture
def plugin_installed(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_PACKAGE))
    importlib.invalidate_caches()
    for registry in (xai_bench.METHODS, xai_bench.METRICS):
        registry.refresh()
    yield
    monkeypatch.undo()
    for module in [m for m in sys.modules if m.startswith("xb_novel_plugin")]:
        sys.modules.pop(module)
    for registry in (xai_bench.METHODS, xai_bench.METRICS):
        registry.refresh()


def _cli(out):
    return ["run", "--models", CONFIG["models"], "--untrained", "--methods", CONFIG["methods"],
            "--metric", CONFIG["metrics"], "--n-images", "4", "--n-grids", "1",
            "--out", str(out), "--name", "p", "--no-progress"]


def test_a_plugin_method_and_metric_of_new_kinds_run_and_are_drawn_from_their_declarations(
        tmp_path, plugin_installed):
    assert "edge_energy" in xai_bench.list_methods() and "top_share" in xai_bench.list_metrics()
    listing = CliRunner().invoke(main, ["list", "metrics"])
    assert "category=concentration" in listing.output and "[plugin: xb-novel-plugin" in \
        listing.output
    result = CliRunner().invoke(main, _cli(tmp_path / "cli"))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "cli" / "p"
    records = read_records(run_dir)
    scored = records[records["method"] == "edge_energy"]
    assert set(scored["metric"]) == {"top_share"} and (scored["status"] == "ok").all()
    assert len(scored) == 4 and scored["value"].between(0, 1).all()
    uniform = records[records["method"] == "uniform"]["value"]  # known answer: k/N of |map|
    assert uniform.sub(int(0.1 * 32 * 32) / (32 * 32)).abs().max() < 1e-9

    info = read_run_info(run_dir)
    shown = Presentation.of_run(info)
    assert shown.metric_label("top_share") == "share of |attribution|\nin the top pixels"
    assert shown.category("top_share") == "concentration" and shown.higher_is_better("top_share")
    assert shown.is_class_agnostic("edge_energy") and not shown.is_baseline("edge_energy")
    colour = shown.method_colour("edge_energy")
    assert colour in PALETTE and colour == Presentation().method_colour("edge_energy")
    assert shown.order_methods(["uniform", "edge_energy"]) == ["edge_energy", "uniform"]
    assert (run_dir / "plots" / "fig6.png").stat().st_size > 0
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "top_share" in html and "concentration" in html and "edge_energy†" in html

    # the same configuration through Python writes the same files and records
    results = xai_bench.evaluate(models=[CONFIG["models"]], methods=CONFIG["methods"],
                                 metrics=CONFIG["metrics"], untrained=True, n_images=4,
                                 n_grids=1, out=tmp_path / "api", name="p")
    api_dir = tmp_path / "api" / "p"
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    api_files = sorted(str(p.relative_to(api_dir)) for p in api_dir.rglob("*") if p.is_file())
    assert files == api_files
    api_records = read_records(api_dir)
    assert list(api_records.columns) == list(records.columns) and len(results.records) == len(
        records)
    for column in ("model", "method", "metric", "sample_id", "status", "value"):
        assert api_records[column].tolist() == records[column].tolist(), column
