"""Make, or check, the default models shipped inside the package (xai_bench/weights).

    python benchmarks/shipped_models.py --write     # train them with `xai-bench train`, register
    python benchmarks/shipped_models.py             # retrain from the recorded recipe, compare

``--write`` trains each default model (``bcos_vit_nano``, ``vit_nano``) on the embedded data
with its default recipe through the project's own ``xai-bench train`` command, moves the
checkpoint into ``xai_bench/weights/`` and writes ``manifest.json`` (file, sha256, data set,
model configuration, recipe with its seed, test accuracy, training time, git sha).

Without ``--write`` it retrains each shipped model from the recipe its manifest records (the
same command, into a temporary directory) and reports how close the retrained model comes:
the test accuracy of both, the largest weight difference, and the quick suite
(``xai-bench run`` with both pairs as ``--checkpoint``) — each claim's outcome and each
(model, metric)'s best method for the shipped and the retrained pair. Training runs
with one intra-op thread (as the shipped files were trained), so on the machine that trained
them the two can agree exactly; elsewhere they differ by float32 summation order. Prints a table and writes
``--json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from xai_bench.training import DEFAULT_DATASET, DEFAULT_MODELS  # noqa: E402
from xai_bench.training.shipped import MANIFEST, SHIPPED_DIR, manifest_entry, read_manifest  # noqa: E402,E501

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import OneLineParser, check_output_path, one_line_errors  # noqa: E402

#: intra-op threads of the training runs (the shipped files were trained with 1)
TRAIN_THREADS = 1


def cli(*args, threads=None) -> str:
    """Run ``xai-bench ARGS`` (this checkout's) and return its stdout."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    done = subprocess.run([sys.executable, "-m", "xai_bench", *map(str, args)], cwd=ROOT,
                          text=True, capture_output=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"xai-bench {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def train(name: str, out: Path, seed=None) -> float:
    started = time.perf_counter()
    # one intra-op thread: float32 sums then run in one order, so retraining on the same
    # machine can reproduce the shipped weights bit for bit
    cli("train", name, "--dataset", DEFAULT_DATASET, "--out", out, "--quiet", "--device",
        "cpu", *(() if seed is None else ("--seed", seed)), threads=TRAIN_THREADS)
    return time.perf_counter() - started


def write() -> None:
    SHIPPED_DIR.mkdir(exist_ok=True)
    entries = {}
    for name in DEFAULT_MODELS:
        path = SHIPPED_DIR / f"{name}-{DEFAULT_DATASET}.pt"
        wall = train(name, path)
        entries[name] = manifest_entry(path)
        print(f"{name}: test accuracy {entries[name]['test_accuracy']:.4f}, "
              f"{path.stat().st_size / 1e6:.2f} MB, trained in {wall / 60:.1f} min -> {path}")
    MANIFEST.write_text(json.dumps({"models": entries}, indent=1) + "\n")
    print(f"wrote {MANIFEST}")


def quick_suite(checkpoints: dict, out: Path) -> dict:
    args = ["run", "--out", out.parent, "--name", out.name, "-q", "--no-plots"]
    for name, path in checkpoints.items():
        args += ["--checkpoint", f"{name}={path}"]
    cli(*args)
    claims = pd.read_csv(out / "claims.csv")
    best = pd.read_csv(out / "best.csv")
    return dict(claims={str(r.claim): r.outcome for r in claims.itertuples()
                        if int(r.replicate) == 0},
                best={f"{r.model} / {r.metric}": f"{r.best} ({r.verdict})"
                      for r in best.itertuples() if int(r.replicate) == 0})


def compare(json_out: Path) -> None:
    shipped = read_manifest()
    if not shipped:
        raise SystemExit("nothing is shipped: run with --write first")
    tmp = Path(tempfile.mkdtemp(prefix="xai-bench-retrain-"))
    rows, retrained = [], {}
    for name, entry in shipped.items():
        path = tmp / entry["file"]
        wall = train(name, path, seed=entry["recipe"]["seed"])
        retrained[name] = path
        new = torch.load(path, map_location="cpu", weights_only=True)
        old = torch.load(SHIPPED_DIR / entry["file"], map_location="cpu", weights_only=True)
        diff = max(float((old["state_dict"][k].float() - v.float()).abs().max())
                   for k, v in new["state_dict"].items())
        rows.append(dict(model=name, shipped_accuracy=entry["test_accuracy"],
                         retrained_accuracy=new["metrics"]["test_accuracy"],
                         max_weight_difference=diff, retrain_minutes=round(wall / 60, 2)))
    suites = {which: quick_suite(ckpts, tmp / f"suite-{which}")
              for which, ckpts in (("shipped", {n: SHIPPED_DIR / e["file"]
                                                for n, e in shipped.items()}),
                                   ("retrained", retrained))}
    print(pd.DataFrame(rows).to_string(index=False))
    for part in ("claims", "best"):
        keys = sorted(set(suites["shipped"][part]) | set(suites["retrained"][part]))
        table = pd.DataFrame([dict(what=k, shipped=suites["shipped"][part].get(k, "—"),
                                   retrained=suites["retrained"][part].get(k, "—")) for k in keys])
        table["same"] = table["shipped"] == table["retrained"]
        print(f"\nquick suite, {part}:\n{table.to_string(index=False)}")
    json_out.write_text(json.dumps(dict(models=rows, quick_suite=suites), indent=1))
    print(f"\nwrote {json_out}")
    shutil.rmtree(tmp, ignore_errors=True)


@one_line_errors
def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="train and register the shipped models")
    p.add_argument("--json", default="shipped_models.json", help="where the comparison goes")
    args = p.parse_args(argv)
    if not args.write:
        check_output_path(args.json, "--json")
    write() if args.write else compare(Path(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
