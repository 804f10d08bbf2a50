"""The CIFAR-10 recipes and benchmarks/replicate.py, end to end on a few hundred images of a
CIFAR-10-like ImageFolder written here (the shapes data as JPEGs: no download, no ../shared)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

import xai_bench
from xai_bench.data import get_dataset
from xai_bench.data.synthetic import SyntheticShapes
from xai_bench.training import RECIPES, get_recipe, train_model

from conftest import load_benchmark

CIFAR_RECIPES = sorted(n for n in RECIPES if "cifar10" in n)


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory) -> str:
    """``train/<class>/*.jpg`` (200) and ``test/<class>/*.jpg`` (60), 10 classes, 32×32."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fake-cifar")
    for split, n in (("train", 200), ("test", 60)):
        data = SyntheticShapes(split, n=n, seed=3)
        for i in range(n):
            image, label = data[i]
            folder = root / split / f"class{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            array = (image.permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
            Image.fromarray(array).save(folder / f"{i:04d}.jpg", quality=95)
    return f"cifar10:{root}"


def test_cifar_recipes_exist_for_both_families_and_both_budgets():
    assert CIFAR_RECIPES == ["bcos-cifar10-cpu", "bcos-cifar10-gpu",
                             "conventional-cifar10-cpu", "conventional-cifar10-gpu"]
    for name in CIFAR_RECIPES:
        recipe = get_recipe(name)
        assert recipe.loss == ("bce" if name.startswith("bcos") else "ce")
        assert get_recipe(name.replace("cpu", "gpu")).epochs > get_recipe(
            name.replace("gpu", "cpu")).epochs


@pytest.mark.parametrize("recipe_name", CIFAR_RECIPES)
def test_cifar_recipes_train_end_to_end(fake_cifar, recipe_name, one_thread):
    train, test = get_dataset(fake_cifar, "train"), get_dataset(fake_cifar, "test")
    name = "bcos_vit_nano" if recipe_name.startswith("bcos") else "vit_nano"
    torch.manual_seed(0)
    model = xai_bench.get_model(name)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_model(model, train, test, get_recipe(recipe_name), progress=False,
                         max_steps=1, limit_train=64)
    assert result.steps == 1 and 0.0 <= result.accuracy <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _script():
    return load_benchmark("replicate")


def test_replicate_script_replicates_ablates_resumes_and_writes_a_page_without_paths(
        fake_cifar, tmp_path, capsys, one_thread, monkeypatch):
    script = _script()
    docs = tmp_path / "docs" / "replication.md"
    argv = ["--data", fake_cifar, "--epochs", "1", "--limit-train", "64", "--replicates", "2",
            "--n-grids", "2", "--n-images", "2", "--methods", "inherent,ixg,saliency,random",
            "--metrics", "grid_pointing_game,pixel_perturbation", "--confidence-threshold",
            "0", "--out", str(tmp_path / "out"), "--docs", str(docs), "--ablation",
            "--ablation-data", "cifar10", "--ablation-epochs", "1", "--ablation-limit-train",
            "32", "--ablation-grids", "2", "--quiet"]
    # interrupted after the first replicate's pair: the study stops there ...
    trained, real = [], script.train_and_save

    def stop_after_two(*args, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(script, "train_and_save", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        script.main(argv)
    assert trained == ["bcos_vit_nano", "vit_nano"] and not docs.exists()
    monkeypatch.setattr(script, "train_and_save", real)
    capsys.readouterr()
    # ... and a rerun continues from the finished checkpoints
    assert script.main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("reusing ") == 2 and log.count("training ") == 2 + 8
    text = docs.read_text()
    for heading in ("## The models", "## The paper's claims, replicate by replicate",
                    "## Which method leads each metric, and how often",
                    "## Which metrics tell the methods from random",
                    "## Positional prior ablation on cifar10-cpu",
                    "### Each prior against the multiplicative prior",
                    "### Among the paper's methods", "### Among every method of the run",
                    "## Every result with its interval", "## Wall time"):
        assert heading in text, heading
    assert "bcos-cifar10-cpu" in text and "conventional-cifar10-cpu" in text
    assert "of 2 |" in text  # holds in k of 2 replicates
    for position in script.POSITIONS:
        assert f"| {position} | 0 |" in text and f"| {position} | 1 |" in text
    assert "**The paper's preference for the multiplicative prior on CIFAR-10:**" in text
    # the page names no path of this machine: the data set is written as cifar10:PATH
    assert "--data cifar10:PATH " in text
    assert str(tmp_path) not in text and not script.absolute_paths(text)
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("*.pt"))
    assert "bcos_vit_nano-cifar10-cpu@1.pt" in checkpoints and len(checkpoints) == 4 + 8
    meta = xai_bench.storage.checkpoint.load_checkpoint(tmp_path / "out" / "checkpoints" /
                                                "vit_nano-cifar10-cpu@1.pt")
    assert meta["recipe"]["augmentation"] == "crop-flip" and meta["recipe"]["epochs"] == 1
    assert meta["recipe"]["seed"] == get_recipe("conventional-cifar10-cpu").seed + 1
    ablated = xai_bench.get_model("bcos_vit_nano", checkpoint=str(
        tmp_path / "out" / "checkpoints" / "ablation-cifar10-cpu-none@1.pt"))
    assert ablated.config["position"] == "none"
    records = pd.read_csv(tmp_path / "out" / "protocol" / "records.csv")
    assert set(records["metric"]) == {"grid_pointing_game", "pixel_perturbation"}
    assert set(records["replicate"]) == {0, 1}
    # a rerun reuses every checkpoint and every cell
    assert script.main(argv) == 0
    log = capsys.readouterr().out
    assert "training " not in log and log.count("reusing ") == 4 + 8
    done, total = map(int, re.search(r"\((\d+)/(\d+) cells already done\)", log).groups())
    assert done == total > 0


def test_the_recorded_command_carries_no_path_of_this_machine():
    replicate = load_benchmark("replicate")
    root = Path(replicate.__file__).resolve().parents[1]
    argv = ["--data", "cifar10:/srv/data/cifar10-jpeg.tar.gz", "--out", "/tmp/rep/out",
            "--docs", str(root / "docs" / "replication.md"), "--note", "a note", "--seed", "0"]
    assert replicate.shareable_command(argv) == [
        "--data", "cifar10:cifar10-jpeg.tar.gz", "--out", "out", "--docs",
        "docs/replication.md", "--note", "a note", "--seed", "0"]
    assert replicate.shareable_data("cifar10:/srv/data/cifar10-jpeg.tar.gz") == "cifar10:PATH"
    assert replicate.shareable_data("cifar10") == "cifar10"


def test_absolute_paths_are_found_and_relative_ones_are_not():
    page = load_benchmark("replication_page")
    assert page.absolute_paths("data set cifar10:/srv/data/x.tar.gz\nok") == [
        "data set cifar10:/srv/data/x.tar.gz"]
    assert page.absolute_paths("run in `/home/me/xai`") and page.absolute_paths("C:\\Users")
    assert not page.absolute_paths("![a](replication/a.png) 10 images/s, 1/4, out/protocol")


def _table_row(text: str, first_cell: str) -> dict:
    """The row of the first markdown table in ``text`` whose first cell is ``first_cell``,
    as {column: cell}."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            start = i
            while lines[start - 1].startswith("|"):
                start -= 1
            header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
            return dict(zip(header, cells))
    raise AssertionError(f"no table row for {first_cell}")


def test_the_recipes_table_reports_the_accuracy_the_replication_page_reports():
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "replication.md").read_text()
    definitions = (root / "docs" / "definitions.md").read_text()
    section = definitions[definitions.index("## 6. Training recipes"):]
    for name in ("bcos-cifar10-cpu", "conventional-cifar10-cpu"):
        reported = _table_row(page, name)
        documented = _table_row(section, f"`{name}`")
        assert reported["epochs"] == documented["epochs"] == str(get_recipe(name).epochs)
        assert reported["mean test accuracy"] in documented["test accuracy reached"], name
        assert reported["replicates"] == "3", name
        assert float(reported["mean test accuracy"].rstrip("%")) >= 70.0, name
