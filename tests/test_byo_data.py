"""Your own data and masks: an image folder with a ``masks/`` tree, and a data set object of
your own (the ``Dataset`` contract of ``xai_bench.evaluate``), each scoring mask_localisation.

The folder holds two classes of 48x48 PNGs: a red (apple, class 0) or blue (sky, class 1) object in the
top half of the image on a grey background, its mask the top half. A TinyLinear model with
hand-set weights (red against blue) classifies every image correctly at its input size of 32,
so the folder is resized 48 -> 32 and the masks with it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import xai_bench
from xai_bench.cli import main
from xai_bench.data import DataError, get_dataset
from xai_bench.run.dataset import RunDataset
from xai_bench.storage.identity import dataset_spec_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 48
N_PER_CLASS = 3


def _image(cls: int, k: int) -> np.ndarray:
    """A grey image with a coloured object in its top half (brightness varies with ``k``, so
    the confidences differ)."""
    a = np.full((SIDE, SIDE, 3), 128, dtype=np.uint8)
    a[: SIDE // 2, :, :] = 0
    a[: SIDE // 2, :, 0 if cls == 0 else 2] = 255 - 40 * k
    return a


def _mask() -> np.ndarray:
    m = np.zeros((SIDE, SIDE), dtype=np.uint8)
    m[: SIDE // 2] = 255
    return m


def make_folder(root, masks: bool = True, skip_mask: str | None = None):
    """``root/test/<class>/img<k>.png`` and, with ``masks``, ``root/masks/test/...``."""
    for cls, name in enumerate(("apple", "sky")):
        (root / "test" / name).mkdir(parents=True)
        if masks:
            (root / "masks" / "test" / name).mkdir(parents=True)
        for k in range(N_PER_CLASS):
            Image.fromarray(_image(cls, k)).save(root / "test" / name / f"img{k}.png")
            if masks and f"{name}/img{k}" != skip_mask:
                Image.fromarray(_mask()).save(root / "masks" / "test" / name / f"img{k}.png")
    return root


def red_blue_model(tiny_model_name: str, image_size: int = 32):
    """The registered TinyLinear with 2 classes, weights that tell red from blue."""
    model = xai_bench.get_model(tiny_model_name, num_classes=2, image_size=image_size)
    with torch.no_grad():
        w = torch.zeros(2, 3, 8, 8)
        w[0, 0], w[0, 2] = 1.0, -1.0
        w[1, 0], w[1, 2] = -1.0, 1.0
        model.linear.weight.copy_(w.flatten(1))
        model.linear.bias.zero_()
    return model.eval()


def object_map(model, x, targets):
    """A method whose map is 1 on the coloured object and 0 on the grey background (encoded
    grey is about 0): every positive attribution is on the object."""
    return (x.abs().sum(1) > 3.0).float()


def mask_rows(records):
    rows = records[(records.metric == "mask_localisation")]
    assert (rows.status == "ok").all(), rows[["method", "status", "message"]]
    return rows


def test_an_image_folder_with_masks_has_masks_resized_like_its_images(tmp_path):
    root = make_folder(tmp_path / "data")
    split = get_dataset(f"imagefolder:{root}", image_size=32)
    assert split.classes == ["apple", "sky"] and len(split) == 6  # masks/ is not a class
    assert split.has_masks
    from xai_bench.metrics.common import has_masks, load_masks

    assert has_masks(split)
    masks = load_masks(split, [0, 5])
    assert masks.shape == (2, 32, 32) and masks.dtype == torch.bool
    assert masks[:, :16].all() and not masks[:, 16:].any()  # the top half, at 32
    # the same folder without masks/ has none, as before
    plain = get_dataset(f"imagefolder:{make_folder(tmp_path / 'plain', masks=False)}")
    assert not plain.has_masks and not has_masks(plain)


def test_some_masks_missing_is_one_error_naming_them_and_the_fix(tmp_path):
    root = make_folder(tmp_path / "data", skip_mask="apple/img1")
    with pytest.raises(DataError) as e:
        get_dataset(f"imagefolder:{root}")
    message = str(e.value)
    assert "1 of the 6 images" in message and "img1.png" in message
    assert "masks" in message and "add the missing masks" in message and "\n" not in message


def test_masks_mirroring_the_classes_but_not_the_split_are_refused(tmp_path):
    root = make_folder(tmp_path / "data", masks=False)
    (root / "masks" / "apple").mkdir(parents=True)
    with pytest.raises(DataError, match=r"move them to .*masks/test/<class>/"):
        get_dataset(f"imagefolder:{root}")


def test_a_changed_mask_changes_the_data_set_fingerprint(tmp_path):
    root = make_folder(tmp_path / "data")
    before = dataset_spec_fingerprint(f"imagefolder:{root}")
    m = _mask()
    m[0, 0] = 0
    Image.fromarray(m).save(root / "masks" / "test" / "apple" / "img0.png")
    assert dataset_spec_fingerprint(f"imagefolder:{root}") != before


def test_image_folder_masks_score_through_evaluate_and_the_cli(tiny_model, tmp_path):
    from xai_bench.storage.checkpoint import save_checkpoint

    root = make_folder(tmp_path / "data")
    model = red_blue_model(tiny_model)
    spec = f"imagefolder:{root}"
    results = xai_bench.evaluate(models=[model], methods=["uniform", object_map],
                                 metrics="mask_localisation", dataset=spec, n_images=6,
                                 report=False, plots=False, device="cpu")
    rows = mask_rows(results.records)
    assert len(rows) == 12 and set(rows.target) == {0, 1}
    # uniform: the mask's share of the image (the top half); the object map: all inside
    assert np.allclose(rows[rows.method == "uniform"].value, 0.5)
    assert np.allclose(rows[rows.method == "object_map"].value, 1.0)

    checkpoint = save_checkpoint(tmp_path / "rb.pt", model, tiny_model, spec,
                                 {"name": "hand-set"}, {"test_accuracy": 1.0})
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", "--models", tiny_model, "--checkpoint", f"{tiny_model}={checkpoint}",
        "--dataset", spec, "--methods", "uniform", "--metric", "mask_localisation",
        "--n-images", "6", "--device", "cpu", "--out", str(out), "--name", "r",
        "--no-plots", "--no-progress"])
    assert result.exit_code == 0, result.output
    import pandas as pd

    cli_rows = mask_rows(pd.read_csv(out / "r" / "records.csv"))
    assert len(cli_rows) == 6 and np.allclose(cli_rows.value, 0.5)


# ----------------------------------------------------------------- the Dataset contract
class MyData(torch.utils.data.Dataset):
    """A user's data set: items ``(float image (3, H, W) in [0, 1], int label)``, ``classes``
    and, optionally, masks through ``mask(i)``."""

    def __init__(self, with_masks: bool):
        self.items = [(torch.from_numpy(_image(c, k)[::3, ::3].copy()).permute(2, 0, 1)
                       .float() / 255, c) for c in (0, 1) for k in range(N_PER_CLASS)]
        self.classes = ["apple", "sky"]
        self.name = "mine"
        if with_masks:
            self.mask = lambda i: torch.from_numpy(_mask()[::3, ::3] > 0)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_a_dataset_object_with_masks_scores_mask_localisation(tiny_model):
    model = red_blue_model(tiny_model, image_size=16)
    results = xai_bench.evaluate(models=[model], methods=["uniform", object_map],
                                 metrics="mask_localisation", dataset=MyData(True),
                                 n_images=6, report=False, plots=False, device="cpu")
    rows = mask_rows(results.records)
    assert len(rows) == 12
    assert np.allclose(rows[rows.method == "uniform"].value, 0.5)
    assert np.allclose(rows[rows.method == "object_map"].value, 1.0)


def test_a_masks_tensor_is_enough_without_has_masks(tiny_model):
    """One attribute, not two: ``masks`` alone gives masks; ``has_masks = False`` hides them."""
    from xai_bench.metrics.common import has_masks, load_masks

    data = MyData(False)
    data.masks = torch.from_numpy(_mask()[::3, ::3] > 0).expand(6, 16, 16)
    assert has_masks(data) and load_masks(data, [1, 2]).shape == (2, 16, 16)
    data.has_masks = False
    assert not has_masks(data)


def test_a_dataset_object_without_masks_says_why_mask_localisation_does_not_apply(tiny_model):
    model = red_blue_model(tiny_model, image_size=16)
    results = xai_bench.evaluate(models=[model], methods=["uniform"],
                                 metrics="mask_localisation", dataset=MyData(False),
                                 n_images=6, report=False, plots=False, device="cpu")
    rows = results.records[results.records.metric == "mask_localisation"]
    assert len(rows) and (rows.status == "skipped").all()
    assert rows.message.str.contains("has no object masks").all()
    assert rows.message.str.contains("mask\\(i\\) method or a masks attribute").all()


def test_masks_of_the_wrong_size_are_one_error(tiny_model):
    from xai_bench.metrics.common import select_confident

    data = MyData(False)
    data.mask = lambda i: torch.ones(8, 8, dtype=torch.bool)
    with pytest.raises(DataError, match="give each mask its image's size"):
        select_confident(red_blue_model(tiny_model, image_size=16), data, 2,
                         with_masks=True)


# ----------------------------------------------------------------- the resize note
def test_a_resized_image_folder_is_stated_once_per_size(tmp_path):
    root = make_folder(tmp_path / "data", masks=False)
    said = []
    data = RunDataset(f"imagefolder:{root}", log=said.append)
    data.test_split()  # the check before any work: no note
    for _ in range(2):
        data.test_split((32, 32), "timm:tiny")
    data.test_split((64, 64), "other")
    assert len(said) == 2, said
    assert said[0] == (f"imagefolder:{root}: images resized to 32×32 (the input size of "
                       f"timm:tiny; shorter side resized, centre crop; the first image is "
                       f"48×48)")
    assert "64×64" in said[1] and "other" in said[1]
    data.test_split((48, 48), "native")  # the images' own size: no "resized"
    assert said[2] == (f"imagefolder:{root}: images used at 48×48 (the input size of native; "
                       f"the first image has it)")
    quiet = []
    RunDataset("shapes", log=quiet.append).test_split((32, 32), "m")
    assert quiet == []
