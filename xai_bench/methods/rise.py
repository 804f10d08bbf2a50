"""RISE (Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of
Black-box Models").

The saliency of a pixel is the expected target score of randomly masked copies of the image,
given that the pixel is kept::

    map = Σ_i f_t(perturb(x, M_i)) · M_i / (N · p1)

1. **Masks** (as the reference code, ``explanations.py``, ``generate_masks``): ``N`` binary
   grids of ``s × s`` cells (``s = grid``), each cell kept (1) with probability ``p1``
   (``uniform[0, 1) < p1``). With ``cell = ceil(H / s)`` (per axis), each grid is upsampled
   *linearly* to ``(s + 1) · cell`` pixels per axis and cropped to ``H × W`` at a random offset
   ``(dy, dx)``, ``dy ∈ {0 … cell_h − 1}``, ``dx ∈ {0 … cell_w − 1}``, so the masks are smooth
   and their cell borders fall anywhere. The upsampling is the reference's
   ``skimage.transform.resize(grid, up, order=1, mode="reflect", anti_aliasing=False)``:
   pixel-centre alignment (output pixel ``r`` samples the grid at ``(r + ½)·s/up − ½``,
   ``align_corners=False``) and, where that falls outside the grid, reflection about the
   first/last cell *without* repeating it (``c b | a b c | b a``; scipy's ``"mirror"``).
   It is separable, so a mask is ``U_y G U_xᵀ`` with ``U`` the ``(H, s)`` interpolation rows
   of its shift (:func:`interpolation_rows`), computed in float64.
2. **Draws**: from a CPU ``torch.Generator`` (:mod:`xai_bench.compute.seeding`): first the
   ``N·s·s`` uniforms of the grids (float64, ``rand(N, s, s)``), then the ``N`` row offsets,
   then the ``N`` column offsets (``randint``). ``shared_masks=True`` (default, as the
   reference, which draws one mask set and explains every image with it): one set per call,
   seeded by ``seed`` alone (``derive_seed(seed, "rise")``), so every image of every batch
   sees the same masks. ``shared_masks=False``: one set per image, seeded by the image's
   content and ``seed`` (``content_seed``). Either way a batched call equals the per-image
   calls, and CPU and GPU draw the same masks.
3. **Perturbation** (``perturb_space``): ``"rgb"`` (default) masks the RGB image (the
   model's :func:`~xai_bench.contracts.model.decode` of ``x``) towards ``baseline``
   (default 0, black), ``img ⊙ M + baseline · (1 − M)``, and encodes the result with
   ``model.encode`` (a B-cos model and its conventional twin then see the same images);
   ``"model"`` does the same to the encoded input ``x`` itself, which with ``baseline=0`` is
   the reference's ``x ⊙ M`` (for a mean/std model, masked pixels become the data mean colour).
4. **Score** ``f_t`` (``score``): ``"probability"`` (default): ``model.confidence`` of the
   target class (softmax for models trained with cross-entropy, as the reference's softmax;
   sigmoid for BCE-trained models, e.g. the B-cos ones); ``"softmax"``: the softmax whatever
   the model's training loss (the reference literally); ``"logit"``: the target logit.
5. **Saliency** (``normalise``): ``"p1"`` (default): ``Σ_i f_t,i M_i / N / p1``, the
   reference's normalisation by the expected mask value; ``"coverage"``:
   ``Σ_i f_t,i M_i / Σ_i M_i``, by each pixel's realised coverage (0 where no mask covers
   it): the mean score of the masks weighted by how much they keep the pixel. The two
   estimate the same expectation; the coverage-normalised one does not carry the sampling
   noise of the coverage itself into the map (a score that ignores the image gives a
   constant map), so maps from different seeds agree better.

Cost: ``N`` forward passes per image (no clean forward). All masked copies of all images of
the batch go through the model in chunks of at most ``chunk_size`` copies (``"auto"``, the
default: :data:`AUTO_CHUNK`, 32 on the CPU, 1024 on a GPU; fewer when the
device's free memory holds fewer, halved after an out-of-memory error: see
:mod:`xai_bench.compute.chunking`); masks are rebuilt per chunk from the grids and offsets, so
memory stays bounded by the chunk, not by ``N``. The forwards follow the forward options of
:mod:`xai_bench.compute.precision` (bf16 autocast, torch.compile; logits are cast back to
float32 before the score). The scores are written per copy and summed with the masks
afterwards in fixed blocks, so the chunking does not change the map.
"""

from __future__ import annotations

import math

import torch

from xai_bench.compute.chunking import chunk_size, remember_limit, run_chunked
from xai_bench.compute.modes import eval_mode
from xai_bench.compute.precision import forward_autocast, forward_model, full_precision
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.contracts.method import method
from xai_bench.contracts.model import decode
from xai_bench.contracts.parameters import boolean, integer, number, one_of, or_literal
from xai_bench.methods.base import AttributionMethod

__all__ = ["RISE", "interpolation_rows", "draw_masks", "build_masks"]

#: elements (float64) of the masks built at once when summing the saliency
_SUM_BLOCK_ELEMENTS = 1 << 22
#: ``chunk_size="auto"``: masked copies per forward by device type (then bounded by the free
#: memory). CPU: 32, the fastest per copy on the nano models with one thread (per copy, in
#: units of a batch-32 forward: 1.04-1.06 at 32, 1.08-1.34 at 64, 1.6 at 128: larger
#: chunks fall out of cache); other devices (GPU): 1024, where small chunks are
#: launch-bound (not measured here).
AUTO_CHUNK = {"cpu": 32, "other": 1024}


def _mirror(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices reflected into ``0 … size − 1`` about the first and last element without
    repeating them (``c b | a b c | b a``)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.abs() % period
    return torch.where(index > size - 1, period - index, index)


def interpolation_rows(cells: int, length: int, device=None) -> torch.Tensor:
    """``(cell, length, cells)`` float64: for every offset ``d`` in ``0 … cell − 1``
    (``cell = ceil(length / cells)``) the linear-interpolation weights of output pixels
    ``d … d + length − 1`` of a line of ``cells`` values upsampled to ``(cells + 1) · cell``
    pixels (pixel-centre alignment, mirror reflection beyond the ends)."""
    cell = math.ceil(length / cells)
    up = (cells + 1) * cell
    r = torch.arange(up, dtype=torch.float64)
    coord = (r + 0.5) * (cells / up) - 0.5
    low = torch.floor(coord)
    frac = coord - low
    low = low.long()
    full = torch.zeros(up, cells, dtype=torch.float64)
    rows = torch.arange(up)
    full.index_put_((rows, _mirror(low, cells)), 1.0 - frac, accumulate=True)
    full.index_put_((rows, _mirror(low + 1, cells)), frac, accumulate=True)
    window = torch.arange(cell)[:, None] + torch.arange(length)[None, :]
    return full[window].to(device)


def draw_masks(generator: torch.Generator, n_masks: int, grid: int, p1: float, size):
    """The random part of ``n_masks`` masks for ``(H, W) = size``, drawn from ``generator``
    (CPU) in this order: grids ``rand(N, s, s) < p1`` (float64 uniforms), then the row
    offsets ``randint(0, cell_h, (N,))``, then the column offsets ``randint(0, cell_w,
    (N,))``. Returns ``(grids (N, s, s) float64 of 0/1, offsets (N, 2) long)``."""
    h, w = size
    grids = (torch.rand(n_masks, grid, grid, generator=generator, dtype=torch.float64)
             < p1).to(torch.float64)
    dy = torch.randint(0, math.ceil(h / grid), (n_masks,), generator=generator)
    dx = torch.randint(0, math.ceil(w / grid), (n_masks,), generator=generator)
    return grids, torch.stack([dy, dx], dim=1)


def build_masks(grids: torch.Tensor, offsets: torch.Tensor, rows_y: torch.Tensor,
                rows_x: torch.Tensor) -> torch.Tensor:
    """``(K, H, W)`` float64 smooth masks from ``(K, s, s)`` grids and ``(K, 2)`` offsets,
    with ``rows_y``/``rows_x`` from :func:`interpolation_rows` (all on one device):
    ``U_y[dy] · G · U_x[dx]ᵀ``."""
    uy = rows_y[offsets[:, 0]]  # (K, H, s)
    ux = rows_x[offsets[:, 1]]  # (K, W, s)
    return torch.matmul(torch.matmul(uy, grids), ux.transpose(1, 2))


def _score_function(model, score: str):
    if score == "probability":
        return model.confidence
    if score == "softmax":
        return lambda logits: logits.softmax(-1)
    return lambda logits: logits


@method("rise", kind="perturbation", cost=2100.0, place=13, colour="#88CCEE")  # Tol cyan
class RISE(AttributionMethod):
    """RISE: the target score of randomly masked copies, averaged over the masks."""

    #: where the masks are applied: the RGB image before encoding, or the encoded input
    PERTURB_SPACES = ("rgb", "model")
    #: what is averaged: ``model.confidence``, the softmax, or the logit of the target
    SCORES = ("probability", "softmax", "logit")
    #: the denominator: ``N · p1`` (the reference) or each pixel's coverage ``Σ_i M_i``
    NORMALISATIONS = ("p1", "coverage")
    PARAMETER_CHECKS = {"n_masks": integer(1), "grid": integer(1),
                        "p1": number(above=0, high=1), "seed": integer(),
                        "chunk_size": or_literal(integer(1), "auto"),
                        "score": one_of(*SCORES), "normalise": one_of(*NORMALISATIONS),
                        "perturb_space": one_of(*PERTURB_SPACES), "baseline": number(),
                        "shared_masks": boolean()}

    def __init__(self, n_masks: int = 2000, grid: int = 8, p1: float = 0.5, seed: int = 0,
                 chunk_size: int | str = "auto", score: str = "probability",
                 perturb_space: str = "rgb", baseline: float = 0.0,
                 shared_masks: bool = True, normalise: str = "p1"):
        super().__init__(n_masks=n_masks, grid=grid, p1=p1, seed=seed, chunk_size=chunk_size,
                         score=score, perturb_space=perturb_space, baseline=baseline,
                         shared_masks=shared_masks, normalise=normalise)
        # the checks above passed: store the values in their canonical types
        self.params.update(n_masks=int(n_masks), grid=int(grid), p1=float(p1), seed=int(seed),
                           chunk_size=chunk_size if chunk_size == "auto" else int(chunk_size),
                           baseline=float(baseline),
                           shared_masks=bool(shared_masks))
        #: forward passes per explained image in the last call (N)
        self.last_forward_passes = float("nan")

    # -- masks -----------------------------------------------------------------------------
    def mask_generator(self, image: torch.Tensor | None = None) -> torch.Generator:
        """The CPU generator of the shared mask set (``image=None``) or of one image's set."""
        seed = self.params["seed"]
        if image is None:
            return cpu_generator(derive_seed(seed, "rise"))
        return cpu_generator(derive_seed(content_seed(image, seed), "rise"))

    def draws(self, x: torch.Tensor):
        """``(grids, offsets)`` on ``x``'s device: ``(N, s, s)`` and ``(N, 2)`` when the
        masks are shared, ``(B, N, s, s)`` and ``(B, N, 2)`` otherwise."""
        p, size = self.params, tuple(x.shape[-2:])
        args = (p["n_masks"], p["grid"], p["p1"], size)
        if p["shared_masks"]:
            grids, offsets = draw_masks(self.mask_generator(), *args)
        else:
            drawn = [draw_masks(self.mask_generator(img), *args) for img in x]
            grids = torch.stack([g for g, _ in drawn])
            offsets = torch.stack([o for _, o in drawn])
        return grids.to(x.device), offsets.to(x.device)

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """All masks (float64, on ``x``'s device): ``(N, H, W)`` shared, ``(B, N, H, W)``
        per image. For inspection and tests; :meth:`attribute` builds them chunk by chunk."""
        grids, offsets = self.draws(x)
        rows_y, rows_x = self._rows(x)
        if grids.dim() == 3:
            return build_masks(grids, offsets, rows_y, rows_x)
        return torch.stack([build_masks(g, o, rows_y, rows_x) for g, o in zip(grids, offsets)])

    def _rows(self, x):
        s, (h, w) = self.params["grid"], x.shape[-2:]
        return (interpolation_rows(s, h, x.device), interpolation_rows(s, w, x.device))

    # -- attribution -----------------------------------------------------------------------
    @torch.no_grad()
    def attribute(self, model, x, targets):
        p = self.params
        bsz, (h, w) = x.shape[0], tuple(x.shape[-2:])
        n = p["n_masks"]
        self.last_forward_passes = float(n)
        if bsz == 0:
            return x.new_zeros(0, h, w)
        device, dtype = x.device, x.dtype
        grids, offsets = self.draws(x)
        rows_y, rows_x = self._rows(x)
        shared = grids.dim() == 3
        targets = targets.to(device)
        with eval_mode(model):
            if p["perturb_space"] == "rgb":
                source, encode = decode(model, x), model.encode
            else:
                source, encode = x, None
            scores = self._scores(model, source, encode, x, grids, offsets, rows_y, rows_x,
                                  targets)
        # scores (N, B): item k of the forward pass is mask k // B of image k % B
        scores = scores.view(n, bsz)
        sal = x.new_zeros(bsz, h * w)
        coverage = x.new_zeros(bsz if not shared else 1, h * w)  # Σ_i M_i
        block = max(1, _SUM_BLOCK_ELEMENTS // (h * w))
        for start in range(0, n, block):
            stop = min(start + block, n)
            if shared:
                m = build_masks(grids[start:stop], offsets[start:stop], rows_y, rows_x)
                m = m.to(dtype).view(stop - start, h * w)
                sal += scores[start:stop].T @ m
                coverage += m.sum(0)
            else:
                for b in range(bsz):
                    m = build_masks(grids[b, start:stop], offsets[b, start:stop], rows_y,
                                    rows_x).to(dtype).view(stop - start, h * w)
                    sal[b] += scores[start:stop, b] @ m
                    coverage[b] += m.sum(0)
        if p["normalise"] == "p1":
            return (sal / n / p["p1"]).view(bsz, h, w)
        safe = torch.where(coverage > 0, coverage, torch.ones_like(coverage))
        sal = torch.where(coverage > 0, sal / safe, torch.zeros_like(sal))
        return sal.view(bsz, h, w)

    def _scores(self, model, source, encode, x, grids, offsets, rows_y, rows_x, targets):
        """``(N·B,)`` target scores of the masked copies, item ``k`` = mask ``k // B`` of image
        ``k % B``, each computed on its own (so the chunking does not change them)."""
        p = self.params
        bsz, n = x.shape[0], p["n_masks"]
        total = n * bsz
        device, dtype = x.device, x.dtype
        shared = grids.dim() == 3
        baseline = p["baseline"]
        score_of = _score_function(model, p["score"])
        forward = forward_model(model)
        out = torch.empty(total, dtype=dtype, device=device)

        def chunk_scores(start: int, stop: int) -> None:
            items = torch.arange(start, stop, device=device)
            mask_index, image = items // bsz, items % bsz
            if shared:
                first, last = start // bsz, (stop - 1) // bsz + 1
                built = build_masks(grids[first:last], offsets[first:last], rows_y, rows_x)
                masks = built[mask_index - first]
            else:
                masks = build_masks(grids[image, mask_index], offsets[image, mask_index],
                                    rows_y, rows_x)
            masks = masks.to(dtype)[:, None]
            perturbed = source[image] * masks + baseline * (1 - masks)
            model_input = perturbed if encode is None else encode(perturbed)
            with forward_autocast(device):
                logits = forward(model_input)
            values = score_of(full_precision(logits))
            out[start:stop] = values.gather(1, targets[image][:, None])[:, 0].to(dtype)

        requested = p["chunk_size"]
        if requested == "auto":
            requested = AUTO_CHUNK.get(device.type, AUTO_CHUNK["other"])
        chunk = chunk_size(model, x, device, with_grad=False, requested=min(requested, total))
        run_chunked(chunk_scores, total, chunk, device=device, what="RISE's masked copies",
                    on_oom=lambda c: remember_limit(model, x, with_grad=False, chunk=c))
        return out
