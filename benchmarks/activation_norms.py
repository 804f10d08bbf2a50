"""Activation RMS through a randomly initialised B-cos ViT: the measurement behind the scale
constants (docs/scales.md). Usage: python benchmarks/activation_norms.py [MODEL ...]"""

import sys

import torch

import xai_bench

SMALL_INPUT = dict(image_size=64, stem_strides=(2, 2), patch_size=2)  # 16x16 tokens, fast


def rms(t):
    return t.pow(2).mean().sqrt().item()


def measure(name, **overrides):
    torch.manual_seed(0)
    model = xai_bench.get_model(name, **overrides).eval()
    size = model.image_size
    x = model.encode(torch.rand(16, 3, *size))
    rows = [("input (6-channel encoding)", rms(x))]
    with torch.no_grad():
        h = x
        for i, layer in enumerate(model.tokeniser.stem):
            h = layer(h)
            rows.append((f"stem conv {i}", rms(h)))
        t = model.tokens(x)
        rows.append(("tokens", rms(t)))
        for i, blk in enumerate(model.blocks):
            a = blk.attn(t)
            t = t + blk.branch_gain * a
            m = blk.mlp(t)
            t = t + blk.branch_gain * m
            rows.append((f"block {i}: attn branch / mlp branch / stream",
                         f"{rms(a):.3f} / {rms(m):.3f} / {rms(t):.3f}"))
        logits = model(x)
    rows.append(("logits - logit_bias", rms(logits - model.logit_bias)))
    print(f"\n{name} {overrides or ''}")
    for label, value in rows:
        print(f"  {label:48s} {value if isinstance(value, str) else f'{value:.3f}'}")


if __name__ == "__main__":
    names = sys.argv[1:] or ["bcos_vit_nano", "bcos_vit_ti"]
    unknown = [n for n in names if n not in xai_bench.MODELS]
    if unknown:  # before any model is built: one line, exit 2, like the CLI
        print(f"Error: unknown model(s) {', '.join(unknown)}; run `xai-bench list models`",
              file=sys.stderr)
        sys.exit(2)
    for n in names:
        measure(n, **({} if n.endswith(("nano", "micro")) else SMALL_INPUT))
