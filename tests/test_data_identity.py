"""A data set's identity is a digest of the bytes it serves (issue 22).

* folders: every file's content (symbolic links followed, also a linked ``test`` folder), with
  a per-file hash cache a same-size, same-mtime replacement cannot fool;
* ``cifar10:ARCHIVE``: unpacked per archive SHA-256, verified completely (gzip CRC, tar
  structure) into a temporary folder; a corrupt archive is one line naming it, nothing cached;
* 16-bit grey and palette images decode to the right values.

The run-level cases use an untrained ``vit_nano`` on 32x32 bitmaps (uncompressed, so a
replacement has exactly the same size) placed in the class folder the model predicts, so that
the deletion metric has correctly classified images to explain.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.data import DataError, get_dataset
from xai_bench.storage import content_hashes
from xai_bench.storage.identity import dataset_spec_fingerprint

CLASSES = [f"c{i}" for i in range(10)]  # vit_nano has 10 outputs
RUN = dict(models=["vit_nano"], untrained=True, methods=["uniform", "ixg"],
           metrics=["deletion"], n_images=2, plots=False, report=False, device="cpu",
           name="r", metric_params={"deletion": {"n_steps": 4}})


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_BENCH_DATA", str(tmp_path / "data-cache"))
    monkeypatch.setenv("XAI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(content_hashes, "RACY_SECONDS", 0.0)  # cache files written just now


@pytest.fixture(scope="module")
def untrained_nano():
    """The untrained vit_nano a run with seed 0 builds (same seeding as the run)."""
    from xai_bench.compute.seeding import derive_seed
    from xai_bench.registry import MODELS

    torch.manual_seed(derive_seed(0, "model", "vit_nano"))
    return MODELS.get("vit_nano")().eval()


def _images(seed: int, n: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _predicted(model, images: np.ndarray) -> list[int]:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return model(x).argmax(1).tolist()


def _write_split(model, split: Path, seed: int, names=("a.bmp", "b.bmp")) -> dict:
    """Two 32x32 bitmaps in the class folders the model predicts; ``{file name: path}``."""
    from PIL import Image

    images = _images(seed, len(names))
    for c in CLASSES:
        (split / c).mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, image, label in zip(names, images, _predicted(model, images)):
        paths[name] = split / CLASSES[label] / name
        Image.fromarray(image).save(paths[name])
    return paths


def _replace_keeping_size_and_mtime(model, paths: dict, seed: int):
    """Other pixels in the same files (same byte size, same folder), mtimes restored."""
    from PIL import Image

    for k, (name, path) in enumerate(paths.items()):
        st = path.stat()
        for attempt in range(50):  # an image the model puts in the same class
            image = _images(seed + 100 * k + attempt, 1)
            if CLASSES[_predicted(model, image)[0]] == path.parent.name:
                break
        path.unlink()
        Image.fromarray(image[0]).save(path)
        assert path.stat().st_size == st.st_size
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _records(results) -> pd.DataFrame:
    cols = ["model", "method", "metric", "sample_id", "value", "status"]
    return results.records[cols].sort_values(cols[:4]).reset_index(drop=True)


def _run(dataset, out, log=None):
    return xai_bench.evaluate(dataset=dataset, out=out, log=log, **RUN)


def _assert_recomputed_like_fresh(dataset, out, fresh_out, before):
    lines = []
    again = _run(dataset, out, log=lines.append)
    fresh = _run(dataset, fresh_out)
    assert any("stale" in str(line) for line in lines), lines
    pd.testing.assert_frame_equal(_records(again), _records(fresh))
    assert not _records(again)["value"].equals(before["value"])  # other images, other numbers


# ------------------------------------------------------------------------ folders


def test_same_size_same_mtime_replacement_changes_identity_and_recomputes(tmp_path,
                                                                           untrained_nano):
    root = tmp_path / "images"
    paths = _write_split(untrained_nano, root / "test", seed=1)
    spec = f"imagefolder:{root}"
    first_id = dataset_spec_fingerprint(spec)
    before = _records(_run(spec, tmp_path / "out"))
    assert (before["status"] == "ok").all()
    assert dataset_spec_fingerprint(spec) == first_id  # unchanged: same identity (cached)
    _replace_keeping_size_and_mtime(untrained_nano, paths, seed=7)
    assert dataset_spec_fingerprint(spec) != first_id
    _assert_recomputed_like_fresh(spec, tmp_path / "out", tmp_path / "fresh", before)


def test_symlinked_test_folder_is_followed(tmp_path, untrained_nano):
    elsewhere = tmp_path / "elsewhere"
    paths = _write_split(untrained_nano, elsewhere, seed=2)
    root = tmp_path / "images"
    root.mkdir()
    (root / "test").symlink_to(elsewhere, target_is_directory=True)
    spec = f"imagefolder:{root}"
    first_id = dataset_spec_fingerprint(spec)
    before = _records(_run(spec, tmp_path / "out"))
    _replace_keeping_size_and_mtime(untrained_nano, paths, seed=11)
    assert dataset_spec_fingerprint(spec) != first_id
    _assert_recomputed_like_fresh(spec, tmp_path / "out", tmp_path / "fresh", before)


def test_hash_cache_reads_unchanged_files_once(tmp_path, monkeypatch):
    root = tmp_path / "f"
    (root / "x").mkdir(parents=True)
    for i in range(5):
        (root / "x" / f"{i}.bin").write_bytes(bytes([i]) * 100)
    first = dataset_spec_fingerprint(f"imagefolder:{root}")
    assert list(content_hashes.hash_cache_dir().glob("*.json"))
    read = []
    real = content_hashes._sha256_of
    monkeypatch.setattr(content_hashes, "_sha256_of", lambda p: read.append(p) or real(p))
    assert dataset_spec_fingerprint(f"imagefolder:{root}") == first and read == []
    (root / "x" / "3.bin").write_bytes(b"\7" * 100)  # same size; ctime moves
    assert dataset_spec_fingerprint(f"imagefolder:{root}") != first
    assert [Path(p).name for p in read] == ["3.bin"]


def test_recent_files_are_not_cached(tmp_path, monkeypatch):
    """A file changed within the timestamp granularity could change again unseen: hashed
    every time until it is older than RACY_SECONDS."""
    monkeypatch.setattr(content_hashes, "RACY_SECONDS", 3600.0)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a").write_bytes(b"a")
    dataset_spec_fingerprint(f"imagefolder:{tmp_path / 'f'}")
    assert not list(content_hashes.hash_cache_dir().glob("*.json"))


# ------------------------------------------------------------------------ archives


def _archive(path: Path, model, seed: int) -> Path:
    """``cifar10-like/{train,test}/<class>/*.bmp`` as a .tar.gz with fixed metadata."""
    staging = path.parent / f"staging-{seed}"
    for split in ("train", "test"):
        _write_split(model, staging / "cifar10-like" / split, seed=seed + len(split))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(staging.rglob("*")):
            info = tar.gettarinfo(f, arcname=str(f.relative_to(staging)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if f.is_file():
                with open(f, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    path.write_bytes(gzip.compress(buf.getvalue(), compresslevel=0, mtime=0))  # stored: size
    return path                                                          # depends on sizes


def _cache_entries() -> list[str]:
    from xai_bench.data.folders import cache_dir

    extracted = cache_dir() / "extracted"
    return sorted(p.name for p in extracted.iterdir()) if extracted.is_dir() else []


def test_rebuilt_archive_of_same_size_is_recomputed_on_new_content(tmp_path, untrained_nano):
    archive = _archive(tmp_path / "c.tar.gz", untrained_nano, seed=3)
    spec = f"cifar10:{archive}"
    size = archive.stat().st_size
    before = _records(_run(spec, tmp_path / "out"))
    assert (before["status"] == "ok").all()
    _archive(tmp_path / "c.tar.gz", untrained_nano, seed=40)
    assert archive.stat().st_size == size
    _assert_recomputed_like_fresh(spec, tmp_path / "out", tmp_path / "fresh", before)
    assert len(_cache_entries()) == 2  # one unpacked copy per archive content


def _corrupt(archive: Path, how: str):
    data = bytearray(archive.read_bytes())
    if how == "flipped":
        third = len(data) // 3
        data[third:third + 16] = bytes(b ^ 0xFF for b in data[third:third + 16])
    else:
        data = data[: int(len(data) * 0.45)]
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_corrupt_archive_is_one_line_and_caches_nothing(tmp_path, untrained_nano, how):
    archive = _archive(tmp_path / "c.tar.gz", untrained_nano, seed=5)
    archive.write_bytes(gzip.compress(gzip.decompress(archive.read_bytes())))  # compressed
    _corrupt(archive, how)
    with pytest.raises(DataError) as info:
        get_dataset(f"cifar10:{archive}", "test")
    message = str(info.value)
    assert "\n" not in message and str(archive) in message and "corrupt" in message
    assert "download it again" in message
    assert _cache_entries() == []


def test_tar_with_damaged_header_after_first_member_is_refused(tmp_path, untrained_nano):
    """Python's tarfile stops silently at a damaged header after the first member."""
    archive = _archive(tmp_path / "c.tar.gz", untrained_nano, seed=6)
    raw = bytearray(gzip.decompress(archive.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        offset = tar.getmembers()[len(tar.getmembers()) // 2].offset
    raw[offset + 148:offset + 156] = b"9999999\0"  # the header's checksum field
    plain = tmp_path / "c.tar"
    plain.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"c\.tar is corrupt \(damaged tar header"):
        get_dataset(f"cifar10:{plain}", "test")
    plain.write_bytes(bytes(raw[:offset]))  # cut at a header: no end-of-archive block
    with pytest.raises(DataError, match=r"c\.tar is corrupt .*truncated"):
        get_dataset(f"cifar10:{plain}", "test")
    assert _cache_entries() == []


# ------------------------------------------------------------------------ CLI refusals


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_cli_run_with_corrupt_archive_exits_2_with_one_line(tmp_path, untrained_nano, how):
    archive = _archive(tmp_path / "c.tar.gz", untrained_nano, seed=8)
    archive.write_bytes(gzip.compress(gzip.decompress(archive.read_bytes())))
    _corrupt(archive, how)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", "--dataset", f"cifar10:{archive}", "--models", "vit_nano", "--untrained",
        "--methods", "uniform", "--metric", "deletion", "--n-images", "2", "--out", str(out),
        "--no-progress", "--no-plots"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: archive ") and "corrupt" in lines[0]
    assert "Traceback" not in result.output and _cache_entries() == []
    assert not out.exists() or not any(out.rglob("*.csv"))


# ------------------------------------------------------------------------ decoding


def test_16_bit_grey_png_keeps_its_range(tmp_path):
    from PIL import Image

    from xai_bench.data.folders import read_rgb

    grey = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)  # 0 .. 65535
    Image.fromarray(grey).save(tmp_path / "g16.png")
    image = read_rgb(tmp_path / "g16.png")
    expected = torch.from_numpy(np.rint(grey / 65535 * 255).astype(np.uint8))
    assert image.shape == (3, 4, 4) and all(torch.equal(c, expected) for c in image)
    assert (image == 255).float().mean() < 0.1  # not saturated to white


def test_palette_and_alpha_pngs_decode_to_their_colours(tmp_path):
    from PIL import Image

    from xai_bench.data.folders import read_rgb

    palette = Image.new("P", (2, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png")
    image = read_rgb(tmp_path / "p.png")
    assert image[:, 0, 0].tolist() == [255, 0, 0] and image[:, 1, 1].tolist() == [0, 0, 255]
    Image.new("LA", (2, 2), (100, 50)).save(tmp_path / "la.png")
    assert read_rgb(tmp_path / "la.png").unique().tolist() == [100]
    Image.new("RGBA", (2, 2), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert read_rgb(tmp_path / "rgba.png")[:, 0, 0].tolist() == [10, 20, 30]


def test_float_image_outside_unit_range_is_refused(tmp_path):
    from PIL import Image

    from xai_bench.data.folders import read_rgb

    Image.fromarray(np.full((2, 2), 3.5, dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif has floating-point pixels outside \[0, 1\]"):
        read_rgb(tmp_path / "f.tif")
