"""The HTML report of a run directory (xai_bench.outputs.report): what a reader of the page needs is
on it, it is self-contained (nothing loads from the web), a bad run directory is a one-line
error that leaves no file, and a real browser renders it."""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import xai_bench

from conftest import headless_browser
from xai_bench.storage import atomic_io
from xai_bench.data import SyntheticShapes
from xai_bench.storage.identity import file_sha256
from xai_bench.methods.base import AttributionMethod
from xai_bench.analysis.claims import load_claims
from xai_bench.outputs.report import REPORT, report_html, write_report
from xai_bench.storage.results import (
    RECORD_COLUMNS, ResultsError, read_arrays, read_examples, read_records, read_run_info,
)

METHODS = ["inherent", "rollout", "ixg", "gradsam", "uniform", "random"]
METRICS = ["grid_pointing_game", "pixel_perturbation", "random_target"]
BOOM = "_report_test_boom"
BOOM_MESSAGE = "this method always fails <on purpose> & says so"
MAX_BYTES = 5 * 1024 * 1024
ORDER = ["answer", "claims", "metrics", "models", "examples", "curves", "sanity",
         "agreement", "provenance"]


class Boom(AttributionMethod):
    """A method that raises inside its call: the run records an error for its cells."""

    name = BOOM

    def attribute(self, model, x, targets):
        raise RuntimeError(BOOM_MESSAGE)


@pytest.fixture(scope="module")
def run_dir(trained_pair, tmp_path_factory):
    """A small real run of the trained tiny pair: every cell of BOOM is an error, inherent
    on the conventional twin is skipped."""
    out = tmp_path_factory.mktemp("report_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    xai_bench.METHODS.add(BOOM, Boom)
    try:
        xai_bench.evaluate(models=list(trained_pair.values()),
                           dataset=SyntheticShapes("test", n=200, seed=0),
                           methods=METHODS + [BOOM], metrics=METRICS, n_grids=3, n_images=4,
                           metric_params={"grid_pointing_game": {"confidence_threshold": 0}},
                           out=out, name="r")
    finally:
        xai_bench.METHODS.unregister(BOOM)
        torch.set_num_threads(threads)
    return out / "r"


@pytest.fixture(scope="module")
def report(run_dir):
    """The report of ``run_dir``, written where the CLI will write it."""
    path = write_report(run_dir)
    return path, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def small_run(pair_checkpoints, tmp_path_factory):
    """One model (by name, from its checkpoint file), one metric, two methods."""
    out = tmp_path_factory.mktemp("report_small")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xai_bench.evaluate(models=["vit_nano"],
                           checkpoints={"vit_nano": pair_checkpoints["vit_nano"]},
                           dataset=SyntheticShapes("test", n=200, seed=0),
                           methods=["rollout", "uniform"], metrics=["grid_pointing_game"],
                           n_grids=2, metric_params={"grid_pointing_game":
                                                     {"confidence_threshold": 0}},
                           out=out, name="one")
    finally:
        torch.set_num_threads(threads)
    return out / "one"


class _Text(HTMLParser):
    """The text a reader sees (entities decoded; no script or style), and the element ids in
    document order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.ids, self._skip = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        ident = dict(attrs).get("id")
        if ident:
            self.ids.append(ident)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def _parse(page: str):
    parser = _Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split()), parser.ids


def _section(page: str, ident: str) -> str:
    """The HTML of ``<section id=ident>`` up to the next top-level section."""
    start = page.index(f'<section id="{ident}">')
    following = [page.find(f'<section id="{o}">', start + 1) for o in ORDER if o != ident]
    ends = [i for i in following if i > start]
    return page[start:min(ends) if ends else len(page)]


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(REPORT, ".lock"))
    return dst


def _set_examples(run: Path, keep_gallery: bool, extra: dict | None = None) -> None:
    """Rewrite examples.npz without the gallery arrays (as an older run has it), plus
    ``extra`` arrays (``model/method/metric/name`` keys)."""
    arrays = {k: v for k, v in read_arrays(run / "examples.npz").items()
              if keep_gallery or "/gallery_" not in k}
    atomic_io.write_arrays(run / "examples.npz", {**arrays, **(extra or {})})


# ------------------------------------------------------------------------------ content

def test_report_shows_the_answer_every_metric_every_model_and_what_failed(report, run_dir):
    path, page = report
    assert path == run_dir / REPORT and path.is_file()
    assert path.stat().st_size < MAX_BYTES, f"{path.stat().st_size / 2**20:.1f} MB"
    # self-contained: nothing on the page points to (or loads from) the web
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    text, ids = _parse(page)
    # the sections, in the order a reader expects them
    positions = [ids.index(i) for i in ORDER]
    assert positions == sorted(positions)
    # the answer first: the best method(s) per (metric, model), with the interval and n
    best = _section(page, "answer")
    assert "Best method per model and metric" in best
    for model in ("bcos_vit_nano", "vit_nano"):
        for metric in METRICS:
            assert re.search(rf"<td>{metric} [↑↓]</td><td>{model}</td><td>[^<]+</td>"
                             r"<td>-?[\d.]+ \[-?[\d.]+, -?[\d.]+\]</td>"
                             r'<td( class="small" title="[^"]+")?>\d+( ⚠)?</td>'
                             r'<td title="[^"]+">[^<]+</td>', best), (model, metric)
    # ... then, as the run has a B-cos model and its twin, the claims with coloured outcomes
    claims = _section(page, "claims")
    for claim in load_claims():
        assert claim.text in _parse(claims)[0]
    assert len(re.findall(r'<td class="outcome (holds|fails|inconclusive)">', claims)) == 4
    assert "Checked on bcos_vit_nano and its twin vit_nano." in _parse(claims)[0]
    # every metric has its section: what it measures, its direction, the table of means
    for metric in METRICS:
        section = page[page.index(f'id="metric-{metric}"'):]
        section = section[:section.index("</section>")]
        words, _ = _parse(section)
        assert xai_bench.METRICS.description(metric).split(":")[0].lower() in words.lower()
        assert ("Lower is better" if metric == "random_target" else "Higher is better") in words
        assert '<table class="sortable">' in section and 'class="best"' in section
        assert re.search(r'\] <span class="grp" title="rank group">a</span>', section)
    # every model, with what the run recorded about it
    models = _parse(_section(page, "models"))[0]
    for name, model in xai_bench.storage.results.read_run_info(run_dir)["models"].items():
        assert name in models and f"{model['test_accuracy']:.4f}" in models
    # skipped and errored cells with their messages (escaped: the '<' is text, not a tag)
    failed = _parse(_section(page, "provenance"))[0]
    assert f"RuntimeError: {BOOM_MESSAGE}" in failed
    assert "<on purpose>" not in page and "&lt;on purpose&gt;" in page
    assert "method 'inherent' does not apply to conventional model 'vit_nano'" in failed
    for model in ("bcos_vit_nano", "vit_nano"):
        for metric in METRICS:
            assert re.search(rf"{model} {BOOM} {metric} error 0 1 RuntimeError", failed)
    # the command that reproduces the run, from its configuration
    assert "--metric-arg grid_pointing_game.confidence_threshold=0" in failed
    assert "--n-grids 3" in failed and "--n-images 4" in failed and "--name r" in failed
    # the figures are embedded (Fig. 6, curves, agreement, one Fig. 7 per model)
    assert page.count('src="data:image/png;base64,') >= 5


def test_report_shows_a_gallery_for_every_cell_the_run_kept_one_for(report, run_dir):
    _, page = report
    kept = [(mo, me) for (mo, me, mt), arrays in read_examples(run_dir).items()
            if mt == "grid_pointing_game" and "gallery_scores" in arrays]
    assert kept, "the runner keeps a gallery per grid pointing game cell"
    text = _parse(_section(page, "examples"))[0]
    for model, method in kept:
        arrays = read_examples(run_dir)[model, method, "grid_pointing_game"]
        first = arrays["gallery_scores"][arrays["gallery_best"] == 1][0]
        assert f"{model} · {method} — best: {first:.3f}" in text


def test_report_of_one_model_and_one_metric(small_run, pair_checkpoints):
    page = report_html(small_run)
    text, ids = _parse(page)
    assert "metric-grid_pointing_game" in ids and "vit_nano" in text
    assert "metric-pixel_perturbation" not in ids
    # what is missing is said, not drawn empty: agreement needs two metrics
    assert "Needs at least two metrics" in _parse(_section(page, "agreement"))[0]
    assert "Every cell was scored." in text
    # the weights are identified: run.json records the checkpoint's path, the page its hash
    checkpoint = pair_checkpoints["vit_nano"]
    models = _parse(_section(page, "models"))[0]
    assert checkpoint in models and file_sha256(checkpoint) in models
    assert f"--checkpoint vit_nano={checkpoint}" in text and "model objects" not in text


def test_a_bad_run_directory_is_one_line_and_writes_nothing(report, run_dir, tmp_path):
    _, page = report
    broken = _copy_run(run_dir, tmp_path / "broken")
    (broken / "run.json").unlink()
    with pytest.raises(ResultsError) as e:
        write_report(broken)
    assert "run.json not found" in str(e.value) and "\n" not in str(e.value)
    assert not (broken / REPORT).exists()
    with pytest.raises(ResultsError):
        write_report(tmp_path / "nowhere", out=tmp_path / "elsewhere.html")
    assert not (tmp_path / "elsewhere.html").exists()
    # an older report survives a failed rewrite intact, and no temporary file is left
    (broken / REPORT).write_text(page, encoding="utf-8")
    (broken / "summary.csv").write_text("not,a\nstatistics table\n", encoding="utf-8")
    shutil.copy(run_dir / "run.json", broken / "run.json")
    with pytest.raises(ResultsError, match="summary.csv"):
        write_report(broken)
    assert (broken / REPORT).read_text(encoding="utf-8") == page
    assert not [p for p in broken.iterdir() if p.name.startswith(".")]


def test_gallery_arrays_are_shown_and_their_absence_is_said(small_run, tmp_path):
    old = _copy_run(small_run, tmp_path / "old")
    _set_examples(old, keep_gallery=False)
    examples = _section(report_html(old), "examples")
    assert "No per-sample gallery" in examples and 'class="gallery"' not in examples

    injected = _copy_run(small_run, tmp_path / "injected")
    rng = np.random.default_rng(0)
    prefix = "vit_nano/rollout/grid_pointing_game/"
    fake = {"gallery_images": rng.random((4, 3, 32, 32)).astype(np.float16),
            "gallery_maps": rng.normal(size=(4, 32, 32)).astype(np.float16),
            "gallery_scores": np.array([0.987654, 0.876543, 0.012345, 0.023456]),
            "gallery_targets": np.array([3, 1, 4, 1]), "gallery_grids": np.array([0, 1, 1, 0]),
            "gallery_cells": np.array([0, 1, 2, 3]),
            "gallery_best": np.array([1, 1, 0, 0], np.uint8)}
    _set_examples(injected, keep_gallery=False, extra={prefix + k: v for k, v in fake.items()})
    examples = _section(report_html(injected), "examples")
    classes = SyntheticShapes("test", n=8, seed=0).classes
    text = _parse(examples)[0]
    assert (f"vit_nano · rollout — best: 0.988 ({classes[3]}), 0.877 ({classes[1]}); "
            f"worst: 0.012 ({classes[4]}), 0.023 ({classes[1]})") in text
    assert examples.count('class="gallery"') == 1 and "vit_nano · uniform" not in text
    assert "No per-sample gallery" not in examples


# ------------------------------------------------------------------------------ one summary

#: a metric of a category the harness has never seen, declared only in run.json (as the
#: runner records a plugin's card): no registry entry, no name-keyed table anywhere
PLUGIN_METRIC = "xb_texture"
PLUGIN_CARD = dict(category="texture", higher_is_better=False, label="texture\nscore",
                   unit="patches", description="texture score: how much of the map is texture")


def synthetic_run(root: Path) -> Path:
    """A run directory written by hand (no model): two models, three methods, the grid
    pointing game and ``PLUGIN_METRIC``. On ``sharp`` the methods are far apart (a method is
    significantly best), on ``blurry`` two of them are alike (a tie)."""
    from xai_bench.analysis.tables import write_statistics

    rng = np.random.default_rng(0)
    levels = {"sharp": {"ixg": 0.8, "rollout": 0.5, "uniform": 0.2},
              "blurry": {"ixg": 0.5, "rollout": 0.5, "uniform": 0.45}}
    rows = []
    for metric, category, hib in (("grid_pointing_game", "localisation", True),
                                  (PLUGIN_METRIC, "texture", False)):
        for model, methods in levels.items():
            for method, level in methods.items():
                for i in range(12):
                    noise = 0.01 if model == "sharp" else 0.2
                    rows.append(dict(model=model, method=method, metric=metric,
                                     sample_id=f"s{i:02d}", target=i % 4,
                                     value=level + noise * rng.standard_normal(), status="ok",
                                     message="", category=category, higher_is_better=hib,
                                     replicate=0))
    records = pd.DataFrame(rows)[RECORD_COLUMNS]
    root.mkdir(parents=True)
    atomic_io.write_csv(root / "records.csv", records)
    declarations = {"metrics": {PLUGIN_METRIC: dict(PLUGIN_CARD, name=PLUGIN_METRIC)}}
    atomic_io.write_json(root / "run.json", dict(
        config=dict(models=list(levels), methods=["ixg", "rollout", "uniform"],
                    metrics=["grid_pointing_game", PLUGIN_METRIC], seed=0, name=root.name),
        seeds=dict(seed=0), dataset=dict(name="shapes", classes=list("abcdefghij")),
        models={m: dict(family="conventional", test_accuracy=0.9) for m in levels},
        declarations=declarations))
    write_statistics(records, root, seed=0, claims=True, n_resamples=200,
                     declarations=declarations)
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("summary") / "run")


def _outputs(run: Path) -> dict:
    """summary.md, the report's text (figures left out: they are not what is compared) and
    both terminal summaries of one run."""
    from xai_bench.analysis.tables import read_statistics
    from xai_bench.outputs.markdown import summary_markdown
    from xai_bench.outputs.terminal import compact_summary, full_summary

    records, info = read_records(run), read_run_info(run)
    tables = read_statistics(run, records, info)
    return dict(markdown=summary_markdown(records, info, tables),
                report=_parse(report_html(run, figures=[]))[0],
                compact=compact_summary(tables, info, records),
                full=full_summary(tables, info, records))


def test_summary_md_the_report_and_the_terminal_say_the_same_verdicts(synthetic):
    from xai_bench.analysis.tables import read_statistics
    from xai_bench.outputs.summary import build_summary, verdict_text

    records, info = read_records(synthetic), read_run_info(synthetic)
    summary = build_summary(read_statistics(synthetic, records, info), records, info)
    kinds = {(v.model, v.metric): v.kind for v in summary.verdicts}
    assert len(kinds) == 4 and kinds["sharp", "grid_pointing_game"] == "best"
    assert kinds["blurry", "grid_pointing_game"] == "tie"
    assert verdict_text("best", "ixg", "rollout") == "ixg (significantly ahead of rollout)"
    outputs = _outputs(synthetic)
    for v in summary.verdicts:
        for name, text in outputs.items():
            assert " ".join(v.text.split()) in " ".join(text.split()), (name, v)
    # one wording: the tie is never called "significantly ahead of" anywhere
    tie = next(v for v in summary.verdicts if v.kind == "tie")
    assert "significantly ahead of" not in tie.text and tie.text.startswith("tie between ")
    assert f"- best on {tie.model}: {tie.text}" in outputs["markdown"]


def test_a_metric_of_a_new_category_gets_its_section_from_its_declaration(synthetic):
    outputs = _outputs(synthetic)
    # summary.md: its own section, with the declared category, direction and unit
    md = outputs["markdown"]
    assert f"## {PLUGIN_METRIC} (texture; lower is better)" in md
    assert "n = 12 patches" in md and "lowest mean" in md
    # not a sanity metric: the sanity section says the run has none
    assert "This run has no sanity metric" in md.split("## Sanity checks")[1]
    # the report: a section like any built-in metric's, with what its card declares
    page = report_html(synthetic, figures=[])
    section = page[page.index(f'id="metric-{PLUGIN_METRIC}"'):]
    section = section[:section.index("</section>")]
    words = _parse(section)[0]
    assert '<span class="cat">texture</span>' in section
    assert "Texture score: how much of the map is texture. Lower is better." in words
    assert "In the figures: texture score." in words
    assert '<table class="sortable">' in section and 'class="best"' in section
    ids = _parse(page)[1]
    assert ids.index("metric-grid_pointing_game") < ids.index(f"metric-{PLUGIN_METRIC}")
    # the terminal: its direction
    assert any(line.startswith(f"{PLUGIN_METRIC} ↓") for line in outputs["compact"].splitlines())
    assert f"{PLUGIN_METRIC} (lower is better; mean [95% CI])" in outputs["full"]


# ------------------------------------------------------------------------------ browser

def _chromium(browser, tmp_path, *args):
    """Chromium headless with its own profile (a shared one can block a second instance);
    stderr is noise (D-Bus, GPU) and ignored unless it fails."""
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_a_headless_browser_renders_the_report(report, tmp_path):
    from PIL import Image

    browser = headless_browser()
    path, _ = report
    png = tmp_path / "report.png"
    _chromium(browser, tmp_path, "--window-size=1280,2400", f"--screenshot={png}",
              "file://" + str(path))
    assert png.is_file()
    if os.environ.get("XAI_BENCH_KEEP_SCREENSHOT"):
        shutil.copy(png, "/tmp/report_screenshot.png")
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 20, "the screenshot is blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # text, tables and figures
    dom = _chromium(browser, tmp_path, "--dump-dom", "file://" + str(path))
    text, ids = _parse(dom)
    assert "The paper's claims" in text and 'class="outcome' in dom
    for metric in METRICS:
        assert f"metric-{metric}" in ids
    for model in ("bcos_vit_nano", "vit_nano"):
        assert model in text


def test_clicking_a_column_head_sorts_the_table(report, tmp_path):
    """The inline script sorts by the clicked column: by the number a cell starts with,
    cells without one ("—") last."""
    browser = headless_browser()
    _, page = report
    click = ("<script>document.querySelector('#metric-pixel_perturbation table.sortable "
             "thead th:nth-child(3)').click();</script></body>")
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.replace("</body>", click), encoding="utf-8")
    dom = _chromium(browser, tmp_path, "--dump-dom", "file://" + str(clicked))
    section = dom[dom.index('id="metric-pixel_perturbation"'):]
    table = section[section.index("<tbody>"):section.index("</tbody>")]
    column = [_parse(row.split("</td>")[2])[0]
              for row in table.split("<tr>")[1:]]  # the vit_nano column
    numbers = [float(c.split()[0]) for c in column if c != "—"]
    assert numbers == sorted(numbers) and len(numbers) == len(METHODS) - 1
    assert column[-1] == "—"  # inherent does not apply to vit_nano: last
    assert 'aria-sort="ascending"' in section
