"""The figures and summary of a run directory (xai_bench.outputs.plots)."""

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import xai_bench
from xai_bench.storage import atomic_io
from xai_bench.analysis.tables import read_statistics
from xai_bench.outputs.fig7 import map_note
from xai_bench.outputs.plots import AGREEMENT, CURVES, FIG6, SUMMARY, plot_run
from xai_bench.outputs.presentation import Presentation
from xai_bench.storage.results import RECORD_COLUMNS, ResultsError, read_records, read_run_info
from xai_bench.analysis.statistics import write_statistics

TINY = dict(embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16))
FIGURES = (FIG6, CURVES, AGREEMENT)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A real run: untrained tiny B-cos ViT and twin (the registered models at a tiny size,
    on a small test split, so that this takes seconds); their grids are skipped (too few
    correctly classified classes), which the plots must survive."""
    from xai_bench.data import SyntheticShapes

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("evaluated")
    models = [xai_bench.get_model("bcos_vit_nano", **TINY), xai_bench.get_model("vit_nano", **TINY)]
    xai_bench.evaluate(models=models, dataset=SyntheticShapes("test", n=100, seed=0),
                       methods=["inherent", "rollout", "gradsam", "uniform", "random"],
                       metrics=["grid_pointing_game", "pixel_perturbation", "mask_localisation"],
                       n_grids=2, n_images=4, out=out, name="r")
    return out / "r"


# ---- a synthetic run directory: every metric, two replicates, known numbers --------------

METRICS = {  # name: (category, higher_is_better)
    "grid_pointing_game": ("localisation", True),
    "mask_localisation": ("localisation", True),
    "pixel_perturbation": ("perturbation", True),
    "deletion": ("perturbation", False),
    "parameter_randomisation": ("sanity", False),
    "random_target": ("sanity", False),
}
LEVEL = {"inherent": 0.7, "ixg": 0.5, "rollout": 0.4, "gradsam": 0.45, "random": 0.25,
         "uniform": 0.25}


def synthetic_run(root, *, models=("bcos_vit_nano", "vit_nano"), metrics=tuple(METRICS),
                  replicates=2, statistics=True, status="ok"):
    rng = np.random.default_rng(0)
    rows, curves = [], []
    for replicate in range(replicates):
        for model in models:
            for method, level in LEVEL.items():
                for metric in metrics:
                    category, hib = METRICS[metric]
                    base = dict(model=model, method=method, metric=metric, category=category,
                                higher_is_better=hib, replicate=replicate, message="")
                    if status != "ok" or (method == "inherent" and not model.startswith("bcos")):
                        rows.append(dict(base, sample_id="all", target=-1, value=np.nan,
                                         status=status if status != "ok" else "skipped",
                                         message="method 'inherent' does not apply"))
                        continue
                    n = 8 if metric == "grid_pointing_game" else 6
                    for i in range(n):
                        value = 0.25 if method == "uniform" and metric == "grid_pointing_game" \
                            else level + 0.1 * rng.standard_normal() + 0.05 * replicate
                        row = dict(base, sample_id=f"s{i:03d}", target=i % 4, value=value,
                                   status="ok")
                        if metric == "pixel_perturbation":
                            row.update(statistic="per_image", clean_confidence=0.5 + 0.05 * i)
                        rows.append(row)
                    if metric == "pixel_perturbation":
                        rows.append(dict(base, sample_id="mean_curve", target=-1, value=level,
                                         status="ok", statistic="mean_curve"))
                        for order, sign in (("most_first", -1), ("least_first", 1)):
                            for f in np.linspace(0, 0.25, 9):
                                curves.append(dict(model=model, method=method, metric=metric,
                                                   order=order, fraction=f, replicate=replicate,
                                                   value=1 + sign * level * f * 2,
                                                   statistic="mean_curve"))
    records = pd.DataFrame(rows)
    records = records[RECORD_COLUMNS + [c for c in records if c not in RECORD_COLUMNS]]
    root.mkdir(parents=True, exist_ok=True)
    atomic_io.write_csv(root / "records.csv", records)
    if curves:
        atomic_io.write_csv(root / "curves.csv", pd.DataFrame(curves))
    if status == "ok" and "grid_pointing_game" in metrics:
        arrays = {}
        for model in models:
            for method in LEVEL:
                if method == "inherent" and not model.startswith("bcos"):
                    continue
                maps = {"uniform": np.ones((4, 32, 32)), "random": rng.random((4, 32, 32))}.get(
                    method, rng.standard_normal((4, 32, 32)))
                key = f"{model}/{method}/grid_pointing_game"
                arrays.update({f"{key}/image": rng.random((3, 32, 32)).astype(np.float32),
                               f"{key}/maps": maps.astype(np.float32),
                               f"{key}/targets": np.arange(4)})
        atomic_io.write_arrays(root / "examples.npz", arrays)
    atomic_io.write_json(root / "run.json", dict(
        config=dict(models=list(models), methods=list(LEVEL), metrics=list(metrics), seed=0,
                    name=root.name, n_grids=2, n_images=6),
        seeds=dict(seed=0), dataset=dict(name="shapes", classes=list("abcdefghij")),
        models={m: dict(family="bcos" if m.startswith("bcos") else "conventional",
                        test_accuracy=0.9) for m in models}))
    if statistics:
        write_statistics(records, root, seed=0, claims=True, n_resamples=200)
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("synthetic") / "run")


def written_names(paths):
    return {p.name for p in paths}


# ---- tests ------------------------------------------------------------------------------

def test_a_real_run_writes_every_file_non_empty(evaluated, tmp_path):
    paths = plot_run(evaluated, tmp_path / "fig")
    assert set(FIGURES) | {SUMMARY} <= written_names(paths)
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0, path
        assert path.parent == tmp_path / "fig"
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(written_names(paths))
    text = (tmp_path / "fig" / SUMMARY).read_text()
    records = read_records(evaluated)
    for metric in set(records.loc[records["status"] == "ok", "metric"]):
        assert f"## {metric} (" in text
    assert re.search(r"\d\.\d+ \[-?\d\.\d+, -?\d\.\d+\]", text)  # intervals, bracketed
    assert "## The paper's claims" in text and "## Metric agreement" in text
    assert "## Sanity checks" in text and "n = 4 images" in text


def test_method_colours_are_fixed_distinct_and_baselines_grey():
    shown = Presentation()
    method_colour, is_baseline = shown.method_colour, shown.is_baseline
    methods = xai_bench.list_methods()
    colours = {m: method_colour(m) for m in methods}
    assert colours == {m: method_colour(m) for m in reversed(methods)}  # same in every call
    real = [m for m in methods if not is_baseline(m)]
    assert len({colours[m] for m in real}) == len(real)  # distinct across the methods
    assert {"random", "uniform", "centre"} <= {m for m in methods if is_baseline(m)}
    for m in methods:
        r, g, b = (int(colours[m][i:i + 2], 16) for i in (1, 3, 5))
        assert (r == g == b) == is_baseline(m), m  # grey exactly for the baselines
        assert re.fullmatch(r"#[0-9A-Fa-f]{6}", colours[m])
    assert method_colour("my_plugin") == method_colour("my_plugin")
    assert method_colour("my_plugin") not in {colours[m] for m in methods if is_baseline(m)}


def test_synthetic_run_summary_has_every_section(synthetic, tmp_path):
    paths = plot_run(synthetic, tmp_path)
    names = written_names(paths)
    assert {FIG6, CURVES, AGREEMENT, SUMMARY, "fig7_grid_bcos_vit_nano.png",
            "fig7_grid_vit_nano.png"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    text = (tmp_path / SUMMARY).read_text()
    for metric in METRICS:
        assert f"## {metric} (" in text
    assert "(perturbation; higher is better)" in text and "(sanity; lower is better)" in text
    summary = read_statistics(synthetic, read_records(synthetic), read_run_info(synthetic))
    assert summary["computed"] is False
    s = summary["summary"]
    row = s[(s["model"] == "bcos_vit_nano") & (s["method"] == "inherent")
            & (s["metric"] == "pixel_perturbation") & (s["replicate"] == 0)].iloc[0]
    from xai_bench.analysis.statistics import format_interval

    # the raw ABC with its interval, bold as the best, with its rank group
    assert f"**{format_interval(row['mean'], row['ci_low'], row['ci_high'])}** a" in text
    assert "best on bcos_vit_nano: inherent (significantly ahead of ixg)" in text
    assert "n = 8 grid cells" in text and "n = 6 images" in text
    for section in ("## The paper's claims", "## Metric agreement", "## Sanity checks",
                    "## Replicates", "## Not scored"):
        assert section in text, section
    claims = text.split("## The paper's claims")[1].split("## Metric agreement")[0]
    assert "bcos_vit_nano vs vit_nano" in claims and "**holds**" in claims
    assert "A high value" in text  # what a high sanity value means
    assert "vit_nano | inherent | skipped" in text  # left out, and said why


def test_statistics_are_computed_for_an_older_run(tmp_path):
    run = synthetic_run(tmp_path / "old", replicates=1, statistics=False,
                        metrics=("grid_pointing_game", "pixel_perturbation", "deletion"))
    assert not (run / "summary.csv").exists()
    paths = plot_run(run)
    assert {FIG6, CURVES, AGREEMENT, SUMMARY} <= written_names(paths)
    assert all(p.parent == run / "plots" for p in paths)  # the default output folder
    text = (run / "plots" / SUMMARY).read_text()
    assert "computed now from records.csv" in text and "## The paper's claims" in text
    assert "## Replicates" not in text


def test_one_model_and_one_metric_still_plots(tmp_path):
    run = synthetic_run(tmp_path / "one", models=("vit_nano",),
                        metrics=("grid_pointing_game",), replicates=1)
    paths = plot_run(run)
    assert {FIG6, CURVES, AGREEMENT, SUMMARY, "fig7_grid_vit_nano.png"} <= written_names(paths)
    assert all(p.stat().st_size > 0 for p in paths)
    text = (run / "plots" / SUMMARY).read_text()
    assert "## grid_pointing_game (localisation; higher is better)" in text
    assert "## The paper's claims" not in text and "inconclusive" not in text  # no pair


@pytest.mark.parametrize("status", ["skipped", "error"])
def test_a_run_without_a_single_ok_record_plots(tmp_path, status):
    run = synthetic_run(tmp_path / status, status=status, replicates=1)
    paths = plot_run(run)
    assert {FIG6, CURVES, AGREEMENT, SUMMARY} <= written_names(paths)
    assert all(p.stat().st_size > 0 for p in paths)
    text = (run / "plots" / SUMMARY).read_text()
    assert "No scored results" in text and f"{status} " in text


def test_a_garbled_statistics_table_is_a_one_line_results_error(tmp_path):
    run = synthetic_run(tmp_path / "bad", replicates=1, metrics=("mask_localisation",))
    (run / "best.csv").write_text("not,the\nbest,table\n")
    with pytest.raises(ResultsError) as info:
        plot_run(run)
    assert "best.csv" in str(info.value) and "\n" not in str(info.value)
    assert not (run / "plots").exists()  # every input is checked before any output


def test_fig7_panels_say_when_a_map_is_no_explanation():
    shown = Presentation()
    assert map_note("uniform", np.ones((8, 8)), shown) == "constant map"
    assert map_note("rollout", np.full((8, 8), 0.3), shown) == "constant map"
    assert map_note("random", np.random.default_rng(0).random((8, 8)), shown) \
        .startswith("random")
    assert map_note("ixg", np.arange(64.0).reshape(8, 8), shown) == ""


# ---- drawn from declarations alone ------------------------------------------------------

#: run.json's ``declarations`` of a method and a metric the harness has never seen
NOVEL = {"methods": {"novel_spot": {"kind": "saliency", "colour": "#123456", "place": 0.5},
                     "novel_plain": {"kind": "other", "class_agnostic": True}},
         "metrics": {"novel_score": {"category": "concentration", "higher_is_better": False,
                                     "label": "novel axis\nlabel", "unit": "patches",
                                     "chance": 0.4}}}


def novel_summary():
    rows = [dict(model=model, method=method, metric="novel_score", replicate=0, n=5,
                 mean=mean, ci_low=mean - 0.05, ci_high=mean + 0.05, higher_is_better=True,
                 category="recorded-but-not-used", statistic="mean", estimator="mean")
            for model in ("vit_nano", "bcos_vit_nano")
            for method, mean in (("novel_spot", 0.3), ("novel_plain", 0.6), ("uniform", 0.5))]
    return pd.DataFrame(rows)


def _hex(colour):
    from matplotlib.colors import to_hex

    return to_hex(colour, keep_alpha=False).lower()


def test_a_novel_method_and_metric_are_drawn_from_their_declarations(tmp_path):
    from xai_bench.outputs.figures import fig6_figure, plot_fig6
    from xai_bench.outputs.presentation import PALETTE

    shown = Presentation.of_run({"declarations": NOVEL})
    fig = fig6_figure(novel_summary(), presentation=shown, models=["vit_nano", "bcos_vit_nano"])
    ax = fig.axes[0]
    assert ax.get_ylabel() == "novel axis\nlabel"  # the declared label, not "mean"
    assert "concentration" in ax.get_title() and "lower is better" in ax.get_title()
    chance = [line for line in ax.lines if list(line.get_ydata()) == [0.4, 0.4]]
    assert chance, "the declared chance level is drawn"
    heads = [t.get_text() for t in ax.child_axes[0].get_xticklabels()]
    assert heads == ["vit_nano\nn = 5 patches", "bcos_vit_nano\nn = 5 patches"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    # declared place (0.5) first, the undeclared after it, the baseline last; † declared
    assert ticks == ["novel_spot", "novel_plain†", "uniform†"] * 2
    colours = [_hex(bar.get_facecolor()) for bar in ax.patches if bar.get_height() > 0]
    plain = shown.method_colour("novel_plain")
    assert plain in PALETTE  # no colour declared: one by a checksum of the name
    assert colours.count("#123456") == 2 and colours.count(plain.lower()) == 2
    # the same colour in another run, and in a figure drawn anew
    again = Presentation.of_run({"declarations": {"methods": {}}})
    assert again.method_colour("novel_plain") == plain
    second = fig6_figure(novel_summary(), presentation=Presentation.of_run(
        {"declarations": NOVEL}))
    assert colours == [_hex(b.get_facecolor()) for b in second.axes[0].patches
                       if b.get_height() > 0]
    path = plot_fig6(novel_summary(), tmp_path, presentation=shown)
    assert path.stat().st_size > 0


def test_a_novel_metric_with_both_removal_orders_gets_curves(tmp_path):
    from xai_bench.outputs.figures import curves_figure

    curves = pd.DataFrame([dict(model="vit_nano", method=method, metric="novel_score",
                                order=order, fraction=f, replicate=0, statistic="mean_curve",
                                value=1 + sign * f)
                           for method in ("novel_spot", "novel_plain")
                           for order, sign in (("most_first", -1), ("least_first", 1))
                           for f in (0.0, 0.1, 0.2)])
    shown = Presentation.of_run({"declarations": NOVEL})
    fig = curves_figure(curves, novel_summary(), presentation=shown)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles[0].startswith("vit_nano · novel_spot\nABC 0.3")
    assert titles[1].startswith("vit_nano · novel_plain†")
    assert _hex(fig.axes[0].lines[0].get_color()) == "#123456"


#: the built-in names no output module may key anything by (the entries declare what the
#: outputs need); common English words among them count only as a whole literal
BUILT_IN_METHODS = ("inherent", "ixg", "intgrad", "rollout", "finatt", "gradsam", "gradcam",
                    "chefer_lrp", "plrp", "vit_cx", "random", "uniform", "centre")
BUILT_IN_METRICS = ("grid_pointing_game", "mask_localisation", "pixel_perturbation",
                    "deletion", "insertion", "parameter_randomisation", "random_target")
ENGLISH = {"inherent", "random", "uniform", "centre", "deletion", "insertion"}


def _docstrings(tree) -> set:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def test_no_output_module_names_a_built_in_method_or_metric():
    import xai_bench.outputs

    found = []
    for path in sorted(Path(xai_bench.outputs.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) \
                    or id(node) in docs:
                continue
            for name in BUILT_IN_METHODS + BUILT_IN_METRICS:
                if node.value == name if name in ENGLISH else \
                        re.search(rf"(?<!\w){name}(?!\w)", node.value):
                    found.append(f"{path.name}:{node.lineno}: {name}")
    assert not found, found
