"""The README's plugin package (a captum method and a metric on precomputed maps), taken from
the README itself and installed as a distribution (a dist-info with its entry points on
sys.path, which is what `pip install` leaves): listed, scored by `xai-bench run` and by
`evaluate`. A README edit that breaks the example fails here."""

import importlib
import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.storage.results import read_records

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```(\w+)\n# (my-xai/\S+?)(?::[^\n]*)?\n(.*?)```", re.S)
PATCH = 8  # the README's run sets patch_ablation.patch=8


def readme_package() -> dict:
    """``{relative path: text}`` of the README's fenced blocks headed ``# my-xai/<path>``."""
    found = {path: body for _, path, body in BLOCK.findall(README.read_text(encoding="utf-8"))}
    assert {"my-xai/pyproject.toml", "my-xai/my_xai/methods.py",
            "my-xai/my_xai/metrics.py"} <= set(found), sorted(found)
    return found


def install(files: dict, site: Path) -> list:
    """Write the package's modules under ``site`` and a dist-info whose entry points are the
    pyproject's; returns the registered names."""
    project = tomllib.loads(files["my-xai/pyproject.toml"])["project"]
    for path, body in files.items():
        if path.endswith(".py"):
            target = site / path.removeprefix("my-xai/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body, encoding="utf-8")
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n", encoding="utf-8")
    lines, names = [], []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
        names += list(entries)
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return names


@pytest.fixture
def readme_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    names = install(readme_package(), site)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    for registry in (xai_bench.METHODS, xai_bench.METRICS):
        registry.refresh()
    yield names
    monkeypatch.undo()
    for module in [m for m in sys.modules if m.startswith("my_xai")]:
        sys.modules.pop(module)
    for registry in (xai_bench.METHODS, xai_bench.METRICS):
        registry.refresh()


def test_the_readme_plugin_package_installs_and_runs(tmp_path, readme_plugin):
    assert sorted(readme_plugin) == ["patch_ablation", "top_share"]
    listing = CliRunner().invoke(main, ["list", "methods", "patch_ablation"])
    assert listing.exit_code == 0 and "[plugin: my-xai" in listing.output, listing.output

    result = CliRunner().invoke(main, [
        "run", "--models", "vit_nano", "--methods", "patch_ablation,uniform",
        "--metric", "top_share,grid_pointing_game", "--method-arg",
        f"patch_ablation.patch={PATCH}", "--n-images", "3", "--n-grids", "2",
        "--out", str(tmp_path / "out"), "--name", "r", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = read_records(tmp_path / "out" / "r")
    mine = records[records["method"] == "patch_ablation"]
    assert set(mine["metric"]) == {"top_share", "grid_pointing_game"}
    assert (mine["status"] == "ok").all(), mine[["metric", "status"]]
    shares = mine[mine["metric"] == "top_share"]["value"]
    assert len(shares) == 3 and shares.between(0, 1).all()
    uniform = records[(records["method"] == "uniform") & (records["metric"] == "top_share")]
    assert uniform["value"].sub(int(0.1 * 32 * 32) / (32 * 32)).abs().max() < 1e-9


def test_the_readme_method_gives_one_value_per_patch_and_the_metric_scores_it(readme_plugin):
    """What the method computes, checked from the outside: constant over each patch, and the
    drop in the target logit when that patch is zeroed."""
    model = xai_bench.get_model("vit_nano").eval()
    x = model.encode(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    targets = torch.tensor([1, 4])
    maps = xai_bench.get_method("patch_ablation", patch=PATCH)(model, x, targets)
    assert maps.shape == (2, 32, 32)
    tiles = maps.unfold(1, PATCH, PATCH).unfold(2, PATCH, PATCH)  # (2, 4, 4, P, P)
    assert torch.equal(tiles, tiles[..., :1, :1].expand_as(tiles))
    with torch.no_grad():
        clean = model(x).gather(1, targets[:, None])[:, 0]
        dropped = x.clone()
        dropped[:, :, :PATCH, PATCH:2 * PATCH] = 0
        ablated = model(dropped).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(maps[:, 0, PATCH], x.shape[1] * (clean - ablated),
                               rtol=1e-4, atol=1e-5)
    scores = xai_bench.METRICS.get("top_share")(model, x, targets, maps)  # the function itself
    assert scores.shape == (2,) and bool(((scores > 0) & (scores <= 1)).all())
