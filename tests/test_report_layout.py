"""The report answers the run's question first: the best method per metric and model is the
first section; a run without a B-cos model and its twin shows no claims (report, summary.md,
terminal); the long parts (baseline and further galleries, per-cell timings, the skipped
cells) are closed on load and open on a click and for printing (checked in a real browser);
small samples and the classes of the explained images are stated."""

import html
import json
import re
import subprocess

import pandas as pd
import pytest
from conftest import headless_browser

import xai_bench
from xai_bench.data import SyntheticShapes
from xai_bench.outputs.report import write_report
from xai_bench.outputs.summary.caveats import class_counts
from xai_bench.storage.results import read_records, read_run_info

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMAGES = 3  # below the small-sample threshold on purpose


@pytest.fixture(scope="module")
def run_dir(trained_pair, tmp_path_factory):
    """One conventional model (no B-cos twin), two methods that run and one that does not
    apply (inherent on a conventional model: a skipped cell), the grid pointing game (it
    keeps galleries) and the pixel perturbation on three images."""
    out = tmp_path_factory.mktemp("layout")
    xai_bench.evaluate(models=[trained_pair["vit_nano"]],
                       dataset=SyntheticShapes("test", n=200, seed=0),
                       methods=["ixg", "uniform", "inherent"],
                       metrics=["grid_pointing_game", "pixel_perturbation"], n_grids=2,
                       n_images=N_IMAGES,
                       metric_params={"grid_pointing_game": {"confidence_threshold": 0}},
                       out=out, name="solo")
    return out / "solo"


def _outputs(run):
    from xai_bench.analysis.tables import read_statistics
    from xai_bench.outputs.markdown import summary_markdown
    from xai_bench.outputs.terminal import compact_summary

    records, info = read_records(run), read_run_info(run)
    tables = read_statistics(run, records, info)
    return summary_markdown(records, info, tables), compact_summary(tables, info, records)


def test_no_claims_without_a_pair_and_small_samples_and_classes_are_said(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    main = page[page.index("<main>"):]
    # the first section is the answer: the best-method table
    first = re.search(r'<section id="([^"]+)">', main)
    assert first.group(1) == "answer"
    answer = main[:main.index("</section>")]
    assert '<table class="sortable answer">' in answer
    assert re.search(r"<td>pixel_perturbation ↑</td><td>[^<]+</td><td>[^<]+</td>"
                     r"<td>-?[\d.]+ \[-?[\d.]+, -?[\d.]+\]</td>"
                     rf'<td class="small" title="n = {N_IMAGES} — below 10: intervals and '
                     rf'tests unreliable">{N_IMAGES} ⚠</td>', answer)
    assert "Small samples: n below 10" in answer and f"n = {N_IMAGES} for" in answer
    # no B-cos model and twin: no claims anywhere
    assert 'id="claims"' not in page and "paper's claims" not in page.lower()
    assert "no B-cos model" not in page
    markdown, terminal = _outputs(run_dir)
    assert "claims" not in markdown.lower() and "claims:" not in terminal
    # ... but the small samples are flagged in summary.md and on the terminal too
    assert "**Small samples** (n below 10" in markdown
    assert "small samples (n below 10):" in terminal
    assert re.search(rf"pixel_perturbation ↑ +vit_nano +.+ {N_IMAGES} \(small\)", terminal)
    # the classes of the explained images, per model, from the records
    records = read_records(run_dir)
    pp = records[(records["metric"] == "pixel_perturbation") & (records["status"] == "ok")
                 & (records["target"] >= 0)].drop_duplicates("sample_id")
    assert len(pp) == N_IMAGES
    names = read_run_info(run_dir)["dataset"]["classes"]
    counts = pp["target"].value_counts()
    for label, k in counts.items():
        assert f"{names[label]} {k}" in markdown
        assert f"{names[label]} {k}" in page[page.index('id="classes"'):]
    assert "## Classes of the explained images" in markdown


def test_class_counts_read_the_label_column_when_the_records_have_it():
    """The true label (a ``label`` column) wins over the explained class; mean-curve rows
    (target -1), other categories and not-ok rows are no images; an image scored by several
    metrics counts once."""
    rows = []
    for metric, category in (("deletion", "perturbation"), ("random_target", "sanity"),
                             ("grid_pointing_game", "localisation")):
        for i, (target, label) in enumerate([(1, 1), (1, 1), (2, 2), (5, 3)]):
            rows.append(dict(model="m", method="ixg", metric=metric, sample_id=f"img{i:05d}",
                             source_index=i, target=target, label=label, status="ok",
                             category=category, replicate=0))
        rows.append(dict(model="m", method="ixg", metric=metric, sample_id="mean",
                         source_index=None, target=-1, label=-1, status="ok",
                         category=category, replicate=0))
    rows.append(dict(model="m", method="ixg", metric="deletion", sample_id="img00009",
                     source_index=9, target=7, label=7, status="error", category="perturbation",
                     replicate=0))
    frame = pd.DataFrame(rows)
    counts = class_counts(frame)
    assert len(counts) == 1 and counts.iloc[0]["images"] == 4
    assert counts.iloc[0]["counts"] == {1: 2, 2: 1, 3: 1}
    assert set(counts.iloc[0]["metrics"]) == {"deletion", "random_target"}
    # without a label column, the explained class
    assert class_counts(frame.drop(columns="label")).iloc[0]["counts"] == {1: 2, 2: 1, 5: 1}


# ------------------------------------------------------------------------------ browser

#: run in the page after load: the state of the collapsed parts on load, after a click on
#: one summary, after the print handler and after printing; written into the DOM as JSON
PROBE = """<script>
window.addEventListener("load", function () {
  function state() {
    var out = {};
    document.querySelectorAll("details").forEach(function (d, i) {
      var key = d.className || ("details" + i);
      // what the <details> adds to the page below its summary line
      var summary = d.querySelector("summary");
      var extra = d.getBoundingClientRect().height - summary.getBoundingClientRect().height;
      out[key + "#" + i] = {open: d.open, height: Math.round(extra),
                            text: summary.textContent};
    });
    return out;
  }
  var result = {first: document.querySelector("main > section").id,
                firstTable: document.querySelector("main > section table").className,
                ids: Array.prototype.map.call(document.querySelectorAll("main > section"),
                                              function (s) { return s.id; }),
                drawn: document.querySelectorAll(".gallery:not(.closed) figure img").length,
                onload: state()};
  var timings = document.querySelector("details.timings");
  timings.querySelector("summary").click();
  result.clicked = {open: timings.open,
                    height: Math.round(timings.getBoundingClientRect().height
                                       - timings.querySelector("summary")
                                         .getBoundingClientRect().height)};
  timings.open = false;
  window.dispatchEvent(new Event("beforeprint"));
  result.printing = state();
  window.dispatchEvent(new Event("afterprint"));
  result.printed = state();
  document.documentElement.setAttribute("data-probe", JSON.stringify(result));
});
</script></body>"""


def test_collapsed_parts_are_closed_on_load_and_open_on_click_and_for_print(run_dir,
                                                                          tmp_path):
    browser = headless_browser()
    page = write_report(run_dir).read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, "the probe did not run"
    state = json.loads(html.unescape(found.group(1)))
    # the answer first; no claims section in the browser either
    assert state["first"] == "answer" and "answer" in state["firstTable"]
    assert "claims" not in state["ids"]
    onload = state["onload"]
    kinds = {key.split("#")[0] for key in onload}
    # per-cell timings, the skipped ("does not apply") cells and the galleries that are not
    # drawn (the uniform baseline's) are each behind a closed <details>: a summary line only
    assert {"timings", "skipped"} <= kinds
    assert any("vit_nano · uniform" in d["text"] and "baseline" in d["text"]
               for d in onload.values())
    assert all(not d["open"] and d["height"] == 0 for d in onload.values()), onload
    assert state["drawn"] == 1  # the one gallery drawn: ixg's, not the baseline's
    # a click opens one; the print handler opens them all and printing closes them again
    assert state["clicked"]["open"] and state["clicked"]["height"] > 50
    assert all(d["open"] and d["height"] > 10 for d in state["printing"].values()), \
        state["printing"]
    assert all(not d["open"] for d in state["printed"].values())
