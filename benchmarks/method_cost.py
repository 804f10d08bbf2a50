"""Cost of every attribution method, per image, in units of one forward pass of the same model.

Usage::

    python benchmarks/method_cost.py                       # nano pair, batch 1 and 32
    python benchmarks/method_cost.py --sizes nano,b        # also the ViT-B pair at 224² (slow)
    python benchmarks/method_cost.py --batch-sizes 32 --repeats 3 --methods rollout,ixg

Timing: CPU by default (``--device``); the models are randomly initialised (the costs do not
depend on training, except ViT-CX's number of masks N); ``torch.set_num_threads`` is left at
torch's default unless ``--threads`` is given. One warm-up call of each, then ``--repeats``
rounds of the plain forward pass (under ``torch.no_grad()``, i.e. inference cost) and the
method on the same batch, and one more forward at the end, so that timed forwards bracket
every method call; the cost is median(method) / median(forward), both per batch of the same
size, so it is also the cost per image. Interleaving the two keeps the ratio honest on a
machine whose speed drifts (e.g. shared cores). Every timed forward comes right after an
untimed one: a forward straight after a heavy method runs cold (its caches and the allocator's
memory left as the method left them: on the nano ViT at batch 1, 3.5 ms straight after
``intgrad`` against 2.4 ms warm), which would under-report that method's cost.

The first row per model and batch, ``(fwd+bwd)``, is a reference: one plain forward and
backward to the input, the floor for gradient methods.

``flops (fwd)`` counts work instead of time: the floating-point operations of the method's
matrix products and convolutions (counted with torch's FLOP formulas during the untimed
warm-up calls) over those of one forward. A method cannot run below it unless its products run faster per
operation than the forward's, so a target under it is out of reach of an exact implementation
(``ok`` then says ``floor``).

Targets (forward passes per image): rollout, finatt 1.1; ixg, inherent, gradsam, gradcam 2.5;
plrp 3; chefer_lrp 4; intgrad 2.5 per step (125 for the default 50); vit_cx 1.1 × (2N + 2)
with N the mean number of masks per image of the last call (``method.last_num_masks``).
"""

from __future__ import annotations

from pathlib import Path
import math
import statistics
import sys
import time

import torch

import xai_bench

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared helpers
from bench_args import OneLineParser, at_least, one_line_errors  # noqa: E402

TARGETS = {"rollout": 1.1, "finatt": 1.1, "ixg": 2.5, "inherent": 2.5, "gradsam": 2.5,
           "gradcam": 2.5, "plrp": 3.0, "chefer_lrp": 4.0}
SIZES = {"nano": ("bcos_vit_nano", "vit_nano"), "micro": ("bcos_vit_micro", "vit_micro"),
         "ti": ("bcos_vit_ti", "vit_ti"), "s": ("bcos_vit_s", "vit_s"),
         "b": ("bcos_vit_b", "vit_b")}
DEFAULT_REPEATS = {"nano": 7, "micro": 5, "ti": 3, "s": 2, "b": 1}


def target_for(name: str, method) -> float:
    if name == "intgrad":
        return 2.5 * method.params["n_steps"]
    if name == "vit_cx":
        n = getattr(method, "last_num_masks", float("nan"))
        return 1.1 * (2 * n + 2)
    return TARGETS.get(name, float("nan"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn, device, clock=time.perf_counter) -> float:
    _sync(device)
    start = clock()
    fn()
    _sync(device)
    return clock() - start


class InputGradient:
    """Reference row: one plain forward and backward to the input (what a gradient method
    cannot undercut)."""

    name = "(fwd+bwd)"

    def __call__(self, model, x, targets):
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)


class FlopCount:
    """A block that counts the floating-point operations of the matrix products and
    convolutions run inside it, forward and backward (``total`` afterwards): every operator
    call is looked up in torch's table of FLOP formulas (``torch.utils.flop_counter``, the one
    its ``FlopCounterMode`` uses; that class itself cannot follow ``autograd.grad`` to
    non-leaf tensors, which the attention methods need). ``total`` is NaN where this torch
    lacks the table."""

    def __enter__(self):
        self.total, self._mode = float("nan"), None
        try:
            from torch.utils._python_dispatch import TorchDispatchMode
            from torch.utils.flop_counter import flop_registry
        except ImportError:
            return self
        count = self

        class Counting(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    count.total += formula(*args, **kwargs, out_val=out)
                return out

        self.total, self._mode = 0.0, Counting()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc) if self._mode is not None else None


def measure(model, method, batch_size: int, repeats: int, device, seed: int = 0,
            clock=time.perf_counter) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, *model.image_size, generator=g)
    x = model.encode(images).to(device)
    targets = torch.randint(0, model.num_classes, (batch_size,), generator=g).to(device)

    def forward():
        with torch.no_grad():
            model(x)

    def explain():
        method(model, x, targets)

    def warm_forward():
        timed(forward, device)  # untimed: warms up after whatever ran before
        return timed(forward, device, clock)

    with FlopCount() as forward_flops:  # warm-up, untimed: counted instead
        timed(forward, device)
    with FlopCount() as method_flops:
        timed(explain, device)
    fwd, meth = [], []
    for _ in range(repeats):
        fwd.append(warm_forward())
        meth.append(timed(explain, device, clock))
    fwd.append(warm_forward())  # the forwards bracket every method call
    f, m = statistics.median(fwd), statistics.median(meth)
    flops = method_flops.total / forward_flops.total if forward_flops.total else float("nan")
    return dict(forward_ms=1e3 * f / batch_size, method_ms=1e3 * m / batch_size, cost=m / f,
                flops=flops)


@one_line_errors
def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="nano",
                        help=f"comma-separated model sizes ({', '.join(SIZES)}); default nano")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated; default 1,32")
    parser.add_argument("--repeats", type=at_least(1), default=None,
                        help="timed rounds per method (default: " + ", ".join(
                            f"{k} {v}" for k, v in DEFAULT_REPEATS.items()) + ")")
    parser.add_argument("--methods", default="all", help="comma-separated names or globs")
    parser.add_argument("--threads", type=at_least(1), default=None,
                        help="torch.set_num_threads (default: left at torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time (default) or process CPU time, steadier on shared "
                             "cores (use it with --threads 1: idle threads spin)")
    args = parser.parse_args(argv)

    if any(not b.strip().isdigit() or int(b) < 1 for b in args.batch_sizes.split(",")):
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give positive integers, e.g. 1,32")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        parser.error(f"--device: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = xai_bench.METHODS.resolve(args.methods)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")

    clock = CLOCKS[args.clock]
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{args.clock} clock; cost = method time / forward time (forward under "
          f"torch.no_grad()), per image")
    header = (f"{'model':16s} {'batch':>5s} {'method':11s} {'fwd ms/img':>10s} "
              f"{'method ms/img':>13s} {'cost (fwd)':>10s} {'flops (fwd)':>11s} "
              f"{'target':>7s}  ok")
    print(header)
    print("-" * len(header))
    misses = []
    for size in sizes:
        repeats = args.repeats or DEFAULT_REPEATS[size]
        for model_name in SIZES[size]:
            torch.manual_seed(0)
            model = xai_bench.get_model(model_name).to(device).eval()
            for batch_size in batch_sizes:
                for name in [InputGradient.name] + methods:
                    method = InputGradient() if name == InputGradient.name else \
                        xai_bench.get_method(name)
                    if name != InputGradient.name and not method.applies_to(model):
                        continue
                    print(f"  timing {model_name} batch {batch_size} {name} ...",
                          file=sys.stderr, flush=True)
                    r = measure(model, method, batch_size, repeats, device, clock=clock)
                    target = target_for(name, method)
                    if math.isnan(target):
                        ok, shown = "", "-"
                    else:
                        ok, shown = ("yes" if r["cost"] <= target else "MISS"), f"{target:.1f}"
                        if ok == "MISS":
                            floor = r["flops"] > target  # the products alone exceed it
                            ok += " (floor)" if floor else ""
                            misses.append(f"{model_name}/b{batch_size}/{name}"
                                          + (" (below its FLOP floor)" if floor else ""))
                    extra = ""
                    if name == "vit_cx":
                        extra = f"  (N = {getattr(method, 'last_num_masks', float('nan')):.1f})"
                    print(f"{model_name:16s} {batch_size:5d} {name:11s} {r['forward_ms']:10.3f} "
                          f"{r['method_ms']:13.3f} {r['cost']:10.2f} {r['flops']:11.2f} "
                          f"{shown:>7s}  {ok}{extra}",
                          flush=True)
    if misses:
        print(f"# missed targets: {', '.join(misses)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
