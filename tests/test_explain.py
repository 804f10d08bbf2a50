"""``xai-bench explain`` for a person: every installed method is drawn (built-ins, a plain
``@xai_bench.method`` function and an ``AttributionMethod`` class installed as plugins), one
that does not apply is left out with its reason, the image is under each map, the titles name
classes and the weights' file (never its directory), and a B-cos model gets its colour image."""

import importlib
import shutil
import sys
import textwrap

import matplotlib.image
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.data.synthetic import CLASSES
from xai_bench.outputs import explain_figure
from xai_bench.outputs.explain_figure import COLOUR_PANEL_TITLE, SIGNED_NOTE, UNSIGNED_NOTE

pytestmark = pytest.mark.usefixtures("one_thread")

PLUGIN = textwrap.dedent('''
    """An explain-test plugin: a function method, a class method that needs LRP, a broken one."""
    import torch

    import xai_bench
    from xai_bench.methods.base import AttributionMethod


    @xai_bench.method(kind="edge", label="signed edges", colour="#123456")
    def xbx_edges(model, x, targets, *, scale=1.0):
        """Signed horizontal differences of the input, times ``scale``."""
        return scale * x.diff(dim=-1, append=x[..., -1:]).sum(1)


    class XbxLrpNorm(AttributionMethod):
        """The norm of the input, for models that can propagate LRP relevance."""
        name = "xbx_lrp_norm"
        kind = "lrp"
        requires = ("lrp",)

        def attribute(self, model, x, targets):
            return x.norm(dim=1)


    def broken_xbx(model, x, targets):
        raise RuntimeError("this plugin always fails")
''')
ENTRY_POINTS = """[xai_bench.methods]
xbx_edges = xb_explain_plugin:xbx_edges
xbx_lrp_norm = xb_explain_plugin:XbxLrpNorm
broken_xbx = xb_explain_plugin:broken_xbx
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plugin installed as a package would be: a module and its dist-info on sys.path."""
    root = tmp_path / "site"
    info = root / "xb_explain_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xb-explain-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (root / "xb_explain_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    xai_bench.METHODS.refresh()
    yield
    monkeypatch.undo()
    sys.modules.pop("xb_explain_plugin", None)
    xai_bench.METHODS.refresh()


@pytest.fixture
def figures(monkeypatch):
    """The figures the command draws (it saves and closes them; their axes stay readable)."""
    drawn = []
    original = explain_figure.draw_explanation

    def keep(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(explain_figure, "draw_explanation", keep)
    return drawn


def explain(*args):
    return CliRunner().invoke(main, ["explain", *map(str, args)])


def titles(fig) -> list:
    return [ax.get_title() for ax in fig.axes]


def assert_real_png(path, min_side=400):
    image = matplotlib.image.imread(path)
    assert min(image.shape[:2]) >= min_side
    # drawn panels, not a blank page: many distinct colours
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 1000


def test_a_bcos_model_is_explained_by_every_method_plugins_included(plugin, figures, tmp_path):
    out = tmp_path / "bcos.png"
    result = explain("bcos_vit_nano", "--methods", "inherent,rollout,xbx_*", "--n-images", 2,
                     "--out", out)
    assert result.exit_code == 0, result.output
    assert "drew 3 method(s): inherent, rollout, xbx_edges" in result.stderr
    # the class plugin needs LRP, which the B-cos ViT has not: one line saying so
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert skipped == [line for line in skipped if "xbx_lrp_norm" in line] and len(skipped) == 1
    assert "needs the lrp capability" in skipped[0] and "bcos_vit_nano" in skipped[0]
    assert "Traceback" not in result.output and out.stat().st_size > 30_000
    assert_real_png(out)

    fig = figures[-1]
    shown = titles(fig)
    for label in ("inherent", "rollout†", "signed edges"):  # declared labels, from the cards
        assert shown.count(label) == 2, (label, shown)
    assert shown.count(COLOUR_PANEL_TITLE) == 2
    image_titles = [t for t in shown if t.startswith("image ")]
    assert len(image_titles) == 2
    for text in image_titles:  # class names, not indices
        true = text.split("true: ")[1].split("\n")[0]
        predicted = text.split("predicted: ")[1].split("\n")[0].rstrip(" ✗")
        assert true in CLASSES and predicted in CLASSES
    heading = fig.get_suptitle()
    assert "bcos_vit_nano" in heading and "bcos_vit_nano-shapes.pt" in heading
    assert "/" not in heading and "shipped" in heading
    legend = " ".join(" ".join(ax.get_title().split()) for ax in fig.axes)
    assert " ".join(SIGNED_NOTE.split()) in legend  # inherent is signed
    assert " ".join(UNSIGNED_NOTE.split()) in legend  # rollout is not
    # the plugin's panels are framed in its declared colour
    edges = [ax for ax in fig.axes if ax.get_title() == "signed edges"]
    assert all(np.allclose(ax.spines["top"].get_edgecolor()[:3],
                           (0x12 / 255, 0x34 / 255, 0x56 / 255)) for ax in edges)


def test_a_conventional_model_gets_no_colour_panel_and_checkpoint_names_only_its_file(
        plugin, figures, tmp_path):
    folder = tmp_path / "deep" / "private" / "folder"
    folder.mkdir(parents=True)
    checkpoint = folder / "my_vit.pt"
    shutil.copy(xai_bench.__path__[0] + "/weights/vit_nano-shapes.pt", checkpoint)
    images = []
    for i, colour in enumerate(((0.9, 0.1, 0.1), (0.1, 0.2, 0.9))):
        path = folder / f"photo_{i}.png"
        array = np.full((40, 48, 3), 0.5)
        array[10:30, 12:36] = colour
        matplotlib.image.imsave(path, array)
        images.append(path)
    out = tmp_path / "vit.png"
    # --model-arg reaches get_model: the stored value is accepted, another is a one-line error
    wrong = explain("vit_nano", "--checkpoint", checkpoint, "--model-arg", "depth=5", *images,
                    "--methods", "ixg", "--out", out)
    assert wrong.exit_code == 2 and "depth" in wrong.output and not out.exists(), wrong.output
    result = explain("vit_nano", "--checkpoint", checkpoint, "--model-arg", "num_classes=10",
                     *images, "--methods", "inherent,ixg,xbx_edges,xbx_lrp_norm", "--out", out)
    assert result.exit_code == 0, result.output
    assert "skipped inherent: needs the dynamic_linear capability" in result.stderr
    fig = figures[-1]
    shown = titles(fig)
    assert COLOUR_PANEL_TITLE not in shown
    for label in ("ixg", "signed edges", "xbx_lrp_norm"):
        assert shown.count(label) == 2, (label, shown)
    heading = fig.get_suptitle()
    assert "my_vit.pt" in heading and str(folder) not in heading and "/" not in heading
    image_titles = [t for t in shown if t.startswith("photo_")]
    assert len(image_titles) == 2 and not any(str(folder) in t for t in shown)
    # no true class for a user's file; the prediction by name, from the checkpoint's classes
    assert all("true:" not in t and t.split("predicted: ")[1] in CLASSES for t in image_titles)
    assert_real_png(out, min_side=300)


def test_a_method_parameter_reaches_a_plugin_function_as_in_run(plugin):
    from types import SimpleNamespace

    from xai_bench.outputs.explain import explain_batch
    from xai_bench.run.resolve import resolve_methods

    model = xai_bench.get_model("vit_nano")
    images = torch.rand(2, 3, *model.image_size, generator=torch.Generator().manual_seed(0))
    maps = {}
    for scale in (1.0, 3.0):
        entries = resolve_methods(SimpleNamespace(
            methods="xbx_edges", method_params={"xbx_edges": {"scale": scale}}))
        maps[scale] = explain_batch(model, images, entries).maps["xbx_edges"]
    assert torch.allclose(maps[3.0], 3 * maps[1.0]) and maps[1.0].abs().sum() > 0
    bad = explain("vit_nano", "--methods", "xbx_edges", "--method-arg", "xbx_edges.scal=2",
                  "--out", "unused.png")
    assert bad.exit_code == 2 and "unknown parameter 'scal'" in bad.output
    assert "did you mean 'scale'" in bad.output and "Traceback" not in bad.output


def test_a_failing_method_is_named_and_the_others_are_still_drawn(plugin, figures, tmp_path):
    out = tmp_path / "fig.png"
    result = explain("vit_nano", "--methods", "ixg,broken_xbx", "--n-images", 1, "--out", out)
    assert result.exit_code == 1, result.output
    assert "failed broken_xbx: RuntimeError: this plugin always fails" in result.stderr
    assert "Traceback" not in result.output and out.exists()
    assert titles(figures[-1]).count("ixg") == 1 and "broken_xbx" not in titles(figures[-1])


def test_no_applicable_method_is_a_one_line_usage_error(tmp_path):
    out = tmp_path / "fig.png"
    alone = explain("vit_nano", "--model-arg", "depth=2", "--out", out)
    assert alone.exit_code == 2 and "pass --checkpoint PATH too" in alone.output
    result = explain("vit_nano", "--methods", "inherent", "--n-images", 1, "--out", out)
    assert result.exit_code == 2 and "none of --methods inherent could be drawn" in result.output
    assert "needs the dynamic_linear capability" in result.output and not out.exists()


def test_an_explained_class_other_than_the_prediction_is_named(figures, tmp_path):
    out = tmp_path / "fig.png"
    result = explain("vit_nano", "--methods", "ixg", "--n-images", 1, "--target", 3,
                     "--out", out)
    assert result.exit_code == 0, result.output
    (image_title,) = [t for t in titles(figures[-1]) if t.startswith("image ")]
    # the first test image is a blue square, predicted as such by the shipped model
    assert "predicted: blue_square" in image_title
    assert f"explained: {CLASSES[3]}" in image_title
