"""Bad input that would change the measurement (issue 22): conflicting checkpoints, metric and
method parameters out of their declared range or contradicting a run option, data with
non-finite pixels, labels out of range, more classes than the model has logits.

The catalogue's format (as in tests/test_bad_input.py): every ``run`` case ends with exit code
2 and exactly one ``Error: ...`` line that names the problem, no traceback, and nothing
written; every ``evaluate`` case raises one :class:`~xai_bench.errors.XaiBenchError` with a
one-line message and writes nothing. Nothing is trained: untrained tiny models only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.errors import XaiBenchError
from xai_bench.storage.checkpoint import save_checkpoint
from xai_bench.training import RECIPES
from catalogue import assert_one_line_error, files_under, isolate_caches

#: a tiny conventional ViT (untrained): fast to build, load and run
NANO = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=(8, 16))
RUN_NAME = "r"
QUICK = ["--n-grids", "2", "--n-images", "2", "--methods", "uniform",
         "--metric", "mask_localisation", "--no-progress", "--no-plots"]


def _nano(seed=0):
    torch.manual_seed(seed)
    return xai_bench.get_model("vit_nano", **NANO)


def _png(path: Path, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Two different checkpoints, a byte copy of the first, one whose name holds glob
    characters, and an image folder of 11 classes (created once)."""
    root = tmp_path_factory.mktemp("assets")
    recipe = RECIPES["conventional-quick"]
    a = save_checkpoint(root / "a.pt", _nano(0), "vit_nano", "shapes", recipe, {})
    b = save_checkpoint(root / "b.pt", _nano(1), "vit_nano", "shapes", recipe, {})
    shutil.copy(a, root / "a_copy.pt")
    shutil.copy(b, root / "m[1].pt")
    for c in range(11):
        _png(root / "eleven" / f"class{c:02d}" / "0.png", (20 * c, 30, 200 - 10 * c))
    return SimpleNamespace(root=root, a=a, b=b, a_copy=root / "a_copy.pt",
                           glob_name=root / "m[1].pt", eleven=root / "eleven")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """Caches outside the user's home; training or the default-model cache fail the test."""
    cache = tmp_path_factory.mktemp("cache")
    isolate_caches(monkeypatch, cache)
    import xai_bench.training as training
    import xai_bench.training.loop as loop

    def reached(*args, **kwargs):
        raise AssertionError("training or the default-model cache was reached")

    monkeypatch.setattr(training, "cached_default_model", reached)
    monkeypatch.setattr(loop, "train_model", reached)





def run_args(*extra, untrained=True):
    """``run`` of vit_nano with the quick options; ``extra`` (strings or ``ctx -> value``)
    last, so that it overrides."""
    def build(ctx):
        return ["run", "--models", "vit_nano", *(["--untrained"] if untrained else []), *QUICK,
                "--out", ctx.out, "--name", RUN_NAME,
                *(str(e(ctx)) if callable(e) else str(e) for e in extra)]
    return build


def ckpt(key, attr):
    return lambda ctx: f"{key}={getattr(ctx.assets, attr)}"


def grid_args(*extra):
    return run_args("--metric", "grid_pointing_game", *extra)


RUN_CASES = [
    # ---- checkpoints -----------------------------------------------------------------------
    pytest.param(run_args("--checkpoint", ckpt("vit_nano", "a"), "--checkpoint",
                          ckpt("vit_nano", "b"), untrained=False),
                 ("--checkpoint vit_nano given twice", "a.pt", "b.pt"),
                 id="run-checkpoint-twice-for-one-model"),
    pytest.param(run_args("--checkpoint", ckpt("vit_nano@0", "a"), "--checkpoint",
                          ckpt("vit_nano", "b"), untrained=False),
                 ("two checkpoints for vit_nano", "a.pt", "b.pt"),
                 id="run-checkpoint-replicate-0-and-plain-name"),
    pytest.param(run_args("--replicates", "2", "--checkpoint", ckpt("vit_nano@0", "a"),
                          "--checkpoint", ckpt("vit_nano@1", "a"), untrained=False),
                 ("vit_nano and vit_nano@1 have the same checkpoint", "independently trained"),
                 id="run-checkpoint-same-file-for-two-replicates"),
    pytest.param(run_args("--replicates", "2", "--checkpoint", ckpt("vit_nano@0", "a"),
                          "--checkpoint", ckpt("vit_nano@1", "a_copy"), untrained=False),
                 ("have the same checkpoint", "a_copy.pt"),
                 id="run-checkpoint-copies-for-two-replicates"),
    pytest.param(run_args("--replicates", "2", "--checkpoint", ckpt("vit_nano@0", "a"),
                          "--checkpoint", ckpt("vit_nano@²", "b"), untrained=False),
                 ("vit_nano@²", "digits 0-9"), id="run-checkpoint-replicate-superscript-digit"),
    pytest.param(run_args("--replicates", "2", "--checkpoint", ckpt("vit_nano@0", "a"),
                          "--checkpoint", ckpt("vit_nano@١", "b"), untrained=False),
                 ("vit_nano@١", "digits 0-9"), id="run-checkpoint-replicate-arabic-digit"),
    # ---- --min-effect ---------------------------------------------------------------------
    pytest.param(run_args("--min-effect", "small"),
                 ("--min-effect 'small'", "0.2sd", "METRIC=VALUE"), id="run-min-effect-word"),
    pytest.param(run_args("--min-effect", "mask_localisaton=0.01"),
                 ("--min-effect names 'mask_localisaton'", "did you mean 'mask_localisation'"),
                 id="run-min-effect-unknown-metric"),
    # ---- metric parameters out of their declared range --------------------------------------
    pytest.param(run_args("--metric", "pixel_perturbation", "--metric-arg",
                          "pixel_perturbation.fractions=0,nan"),
                 ("'fractions'", "pixel_perturbation", "finite", "nan"),
                 id="run-metric-arg-fractions-nan"),
    pytest.param(run_args("--metric", "pixel_perturbation", "--metric-arg",
                          "pixel_perturbation.fractions=0,0.5,0.25"),
                 ("'fractions'", "increases strictly"), id="run-metric-arg-fractions-unsorted"),
    pytest.param(run_args("--metric", "insertion", "--metric-arg",
                          "insertion.blur_kernel=100001"),
                 ("'blur_kernel'", "odd integer in 1..255", "100001"),
                 id="run-metric-arg-blur-kernel-huge"),
    pytest.param(run_args("--metric", "insertion", "--metric-arg", "insertion.blur_kernel=4"),
                 ("'blur_kernel'", "odd integer"), id="run-metric-arg-blur-kernel-even"),
    pytest.param(run_args("--metric", "insertion", "--metric-arg", "insertion.blur_sigma=0"),
                 ("'blur_sigma'", "> 0"), id="run-metric-arg-blur-sigma-0"),
    pytest.param(run_args("--metric", "deletion", "--metric-arg", "deletion.n_steps=0"),
                 ("'n_steps'", "deletion", "1..1024"), id="run-metric-arg-n-steps-0"),
    pytest.param(run_args("--metric", "parameter_randomisation", "--metric-arg",
                          "parameter_randomisation.max_stages=0"),
                 ("'max_stages'", "or none"), id="run-metric-arg-max-stages-0"),
    # ---- metric parameters that contradict a run option -------------------------------------
    pytest.param(run_args("--metric-arg", "mask_localisation.n_images=3"),
                 ("mask_localisation.n_images=3 contradicts --n-images 2", "use --n-images 3"),
                 id="run-metric-arg-contradicts-n-images"),
    pytest.param(grid_args("--metric-arg", "grid_pointing_game.n_grids=3"),
                 ("contradicts --n-grids 2", "use --n-grids 3"),
                 id="run-metric-arg-contradicts-n-grids"),
    pytest.param(grid_args("--metric-arg", "grid_pointing_game.seed=5"),
                 ("contradicts --seed 0", "use --seed 5"), id="run-metric-arg-contradicts-seed"),
    pytest.param(grid_args("--metric-arg", "grid_pointing_game.confidence_threshold=0",
                           "--metric-arg", "grid_pointing_game.confidence_threshold=0.5"),
                 ("grid_pointing_game.confidence_threshold given twice",),
                 id="run-metric-arg-given-twice"),
    # ---- method parameters out of their declared range --------------------------------------
    pytest.param(run_args("--methods", "intgrad", "--method-arg", "intgrad.method=simpson"),
                 ("'method'", "intgrad", "riemann_trapezoid", "simpson"),
                 id="run-method-arg-intgrad-unknown-rule"),
    pytest.param(run_args("--methods", "intgrad", "--method-arg", "intgrad.n_steps=0"),
                 ("'n_steps'", "intgrad", ">= 1"), id="run-method-arg-intgrad-n-steps-0"),
    pytest.param(run_args("--methods", "rollout", "--method-arg", "rollout.start_layer=-1"),
                 ("'start_layer'", "rollout", ">= 0"), id="run-method-arg-start-layer-negative"),
    pytest.param(run_args("--methods", "centre", "--method-arg", "centre.sigma=0"),
                 ("'sigma'", "centre", "> 0"), id="run-method-arg-centre-sigma-0"),
    pytest.param(run_args("--methods", "vit_cx", "--method-arg", "vit_cx.chunk_size=0"),
                 ("'chunk_size'", "vit_cx", ">= 1"), id="run-method-arg-vit-cx-chunk-size-0"),
    pytest.param(run_args("--methods", "vit_cx", "--method-arg", "vit_cx.noise_sd=inf"),
                 ("'noise_sd'", "finite"), id="run-method-arg-vit-cx-noise-inf"),
    # ---- data ---------------------------------------------------------------------------------
    pytest.param(run_args("--dataset", lambda c: f"imagefolder:{c.assets.eleven}"),
                 ("has 11 classes", "'vit_nano' has 10 logits"),
                 id="run-dataset-more-classes-than-the-model"),
]


@pytest.mark.parametrize("build, fragments", RUN_CASES)
def test_bad_run_input_is_one_line_and_writes_nothing(build, fragments, assets, tmp_path):
    ctx = SimpleNamespace(tmp=tmp_path, out=tmp_path / "results", assets=assets)
    args = [str(a) for a in build(ctx)]
    before = files_under(tmp_path, assets.root)
    result = CliRunner().invoke(main, args)
    after = files_under(tmp_path, assets.root)
    assert_one_line_error(result, fragments)
    assert not after - before, f"created: {sorted(p for _, p in after - before)}"
    assert not ctx.out.exists()


# ---- evaluate with objects ---------------------------------------------------------------------

class TensorData(torch.utils.data.Dataset):
    """A user's in-memory data set: float images in [0, 1] and integer labels."""

    def __init__(self, images, labels, num_classes=10):
        self.images, self.labels = images, torch.as_tensor(labels)
        self.num_classes, self.classes = num_classes, [f"c{i}" for i in range(num_classes)]
        self.image_size, self.name, self.has_masks = tuple(images.shape[-2:]), "mine", False

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def _images(bad=None):
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    if bad is not None:
        images[2, 1, 5, 7] = bad
    return images


def _named_nano():
    model = _nano()
    model.name = "nano"
    return model


def _five_logits():
    """A model that declares 10 classes but returns 5 logits."""
    model = _named_nano()
    forward = model.forward
    model.forward = lambda x: forward(x)[:, :5]
    return model


EVALUATE_CASES = [
    pytest.param(lambda a: dict(dataset=TensorData(_images(float("nan")), [0, 1, 2, 3])),
                 ("non-finite", "index 2"), id="evaluate-nan-pixels"),
    pytest.param(lambda a: dict(dataset=TensorData(_images(float("inf")), [0, 1, 2, 3])),
                 ("non-finite", "1 image(s)"), id="evaluate-inf-pixels"),
    pytest.param(lambda a: dict(dataset=TensorData(_images(), [0, 1, 12, 3])),
                 ("labels in 0..12", "10 classes", "index 2"), id="evaluate-label-above-range"),
    pytest.param(lambda a: dict(dataset=TensorData(_images(), [0, -1, 2, 3])),
                 ("labels in -1..3", "index 1"), id="evaluate-negative-label"),
    pytest.param(lambda a: dict(dataset=TensorData(_images(), [0, 1, 2, 3], num_classes=11)),
                 ("has 11 classes", "'nano' has 10 logits"),
                 id="evaluate-more-classes-than-the-model"),
    pytest.param(lambda a: dict(models=[_five_logits()]),
                 ("'nano' returns 5 logits", "num_classes=10"),
                 id="evaluate-model-returns-fewer-logits"),
    pytest.param(lambda a: dict(metrics=["pixel_perturbation"], metric_params={
                     "pixel_perturbation": {"fractions": (0.0, 0.5, float("nan"))}}),
                 ("'fractions'", "finite"), id="evaluate-metric-params-fractions-nan"),
    pytest.param(lambda a: dict(models=["vit_nano"], untrained=False, dataset="shapes",
                                checkpoints={"vit_nano@0": str(a.a), "vit_nano": str(a.b)}),
                 ("two checkpoints for vit_nano",), id="evaluate-conflicting-checkpoints"),
]


@pytest.mark.parametrize("options, fragments", EVALUATE_CASES)
def test_bad_evaluate_input_is_one_line_and_writes_nothing(options, fragments, assets,
                                                          tmp_path):
    out = tmp_path / "results"
    given = dict(models=[_named_nano()], methods=["uniform"], metrics=["deletion"],
                 dataset=TensorData(_images(), [0, 1, 2, 3]), n_images=2, batch_size=2,
                 out=out, name=RUN_NAME, plots=False, report=False, progress=False, log=None)
    given.update(options(assets))
    before = files_under(tmp_path, assets.root)
    with pytest.raises(XaiBenchError) as raised:
        xai_bench.evaluate(**given)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not files_under(tmp_path, assets.root) - before
    assert not out.exists()


def test_catalogue_size():
    assert len(RUN_CASES) + len(EVALUATE_CASES) >= 15


# ---- what must still be accepted ---------------------------------------------------------------

def test_a_checkpoint_path_with_glob_characters_that_exists_is_taken_literally(assets, tmp_path):
    """``m[1].pt`` exists: it is that file, not a glob matching ``m1.pt``; a metric argument
    that repeats the run option's value is no contradiction."""
    result = CliRunner().invoke(main, [
        "run", "--models", "vit_nano", "--checkpoint", f"vit_nano={assets.glob_name}", *QUICK,
        "--metric-arg", "mask_localisation.n_images=2", "--out", str(tmp_path / "out"),
        "--name", RUN_NAME])
    assert result.exit_code == 0, result.output
    import json

    info = json.loads((tmp_path / "out" / RUN_NAME / "run.json").read_text())
    assert str(assets.glob_name) in json.dumps(info["models"])


def test_the_same_checkpoint_value_given_twice_is_accepted(assets):
    from xai_bench.cli.common import parse_key_values

    value = f"vit_nano={assets.a}"
    assert parse_key_values([value, value], "--checkpoint", parse=False) == {
        "vit_nano": str(assets.a)}


def test_declared_checks_also_hold_for_objects_built_directly():
    with pytest.raises(XaiBenchError, match="blur_kernel"):
        xai_bench.get_metric("insertion", blur_kernel=100001)
    with pytest.raises(XaiBenchError, match="fractions"):
        xai_bench.get_metric("pixel_perturbation", fractions=(0.0, float("nan")))
    from xai_bench.contracts.parameters import check_parameter_values
    from xai_bench.registry import METHODS

    with pytest.raises(XaiBenchError, match="'rules' of method 'plrp' must be one of"):
        check_parameter_values("method", "plrp", METHODS.get("plrp"), {"rules": "nope"})
