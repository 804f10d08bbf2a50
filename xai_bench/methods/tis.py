"""TIS: Transformer Input Sampling (Englebienne et al. 2023).

Like RISE, the saliency is a score-weighted average of random masks; unlike RISE the masks
select *tokens*, and the masked input is the token sequence with the other tokens removed
(positional information stays attached to the kept tokens). Per image (docs/definitions.md,
'tis'):

1. **Activations**: one clean forward; the outputs of every transformer block, concatenated
   along the feature axis, give ``depth·D`` channels, each a vector over the ``N`` patch
   tokens (prefix tokens — CLS, distillation, registers — are dropped): points
   ``X ∈ R^{C×N}``, ``C = depth·D``.
2. **Clustering**: k-means (Euclidean, Lloyd) of the C channel vectors into
   ``K = min(n_masks, C)`` clusters, as the reference's k-means library does it: the initial
   centroids are K distinct channels drawn at random, each iteration assigns every channel
   to the centroid of the largest ``2x·c − |x|² − |c|²`` (the first on ties) and replaces
   every centroid by the mean of its channels (a centroid without channels becomes 0), until the
   summed squared centroid shift is at most :data:`KMEANS_TOL` (that iteration's update is
   kept) or after :data:`KMEANS_MAX_ITER` iterations.
3. **Masks**: each centroid is a raw mask over the tokens; its binary mask keeps the
   ``n_keep = max(1, ⌊tokens_ratio·N⌋)`` tokens with the largest centroid values (ties: the
   lower token index first).
4. **Scores**: for every mask, a forward pass in which the sequence entering the first block
   holds only the prefix tokens and the kept patch tokens (:func:`kept_tokens`); the score
   is the target's confidence (``model.confidence``: softmax, or sigmoid for BCE-trained
   B-cos models).
5. **Saliency** per token: ``Σ_k s_k m_k / Σ_k m_k`` (0 where no mask keeps the token),
   min-max normalised to [0, 1] per image (``normalise=True``; a constant map becomes 0),
   then upsampled bilinearly to the input size.

Token dropping is exact only where the positions are all in the tokens that enter the first
block and the blocks treat the tokens as a set (:func:`token_dropping`): the conventional
ViT, timm ViTs, the B-cos-v2 SimpleViTs and our B-cos ViT with ``position="embedding"`` or
``"none"``; with ``position="additive"`` the attention prior ``P`` is restricted to the kept
tokens (``P[kept, kept]``, exactly attention with the dropped keys masked out). A
multiplicative prior (``softmax(qkᵀ) ⊙ softmax(P) · gain``, our B-cos ViT's default) has no
single restriction (renormalise either factor or neither, keep or rescale the gain), so TIS
does not apply to it; nor to other models, whose position scheme it cannot check.

Cost: one clean forward per image plus K forwards of ``n_keep`` patch tokens, in chunks of at
most ``chunk_size`` masks (the reference's ``batch_size``); each chunk runs the tokeniser once
per image it holds. These forwards follow the bf16 autocast option of
:mod:`xai_bench.compute.precision`, never ``torch.compile`` (the token subset changes from
chunk to chunk); the clean forward, whose activations are clustered, is float32.

Seeding: the initial centroids are drawn from ``content_seed(image, seed)``, so a batched call
equals the per-image calls; each image's activations come from its own batch-of-one forward,
so the clusters do not depend on the other images of the batch either.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from xai_bench.compute.chunking import chunk_size, remember_limit, run_chunked
from xai_bench.compute.modes import eval_mode
from xai_bench.compute.precision import forward_autocast, full_precision
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.contracts.method import method
from xai_bench.contracts.model import model_attr
from xai_bench.contracts.parameters import boolean, integer, number
from xai_bench.methods.base import AttributionMethod, is_vit

__all__ = ["TIS", "token_dropping", "block_activations", "initial_channels", "kmeans",
           "keep_indices", "kept_tokens", "KMEANS_MAX_ITER", "KMEANS_TOL"]

#: the reference k-means library's defaults
KMEANS_MAX_ITER = 100
KMEANS_TOL = 1e-4

#: model classes (module.qualname, or of a base class) whose positional information is all in
#: the tokens entering the first block (an added embedding, or none) and whose blocks treat
#: the tokens as a set: dropping tokens there is exact
_SET_MODELS = ("xai_bench.models.vit.ViT", "xai_bench.models.timm_adapter.TimmViT",
               "xai_bench.models.bcos_v2.vit.SimpleViT",
               "xai_bench.models.bcos_v2.vit.BcosSimpleViT")
#: our B-cos ViT: depends on its ``position``
_BCOS_VIT = "xai_bench.models.bcos_vit.BcosViT"


def _class_names(model) -> set:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__}


def token_dropping(model) -> str | None:
    """How tokens are dropped from ``model``: ``"sequence"`` (the patch tokens entering the
    first block are subset), ``"sequence+prior"`` (also every attention's additive prior,
    restricted to the kept tokens), or None where dropping cannot be done exactly (a
    multiplicative attention prior, an unknown model class, no blocks)."""
    if not is_vit(model) or len(model.blocks) == 0:
        return None
    names = _class_names(model)
    if names.intersection(_SET_MODELS):
        return "sequence"
    if _BCOS_VIT in names:
        position = getattr(model, "position", None)
        if position in ("embedding", "none"):
            return "sequence"
        if position == "additive":
            return "sequence+prior"
    return None


def _prefix(model) -> int:
    return int(model_attr(model, "num_prefix_tokens") or 0)


def block_activations(model, x: torch.Tensor) -> torch.Tensor:
    """One forward of ``x``: the outputs of all blocks concatenated along the features, the
    prefix tokens dropped, transposed: ``(B, depth·D, N)`` (channel vectors over the patch
    tokens, in token-grid order)."""
    outputs = []

    def keep(_module, _inputs, output):
        outputs.append(output.detach())

    handles = [blk.register_forward_hook(keep) for blk in model.blocks]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    feats = torch.cat(outputs, dim=-1)[:, _prefix(model):]
    return feats.transpose(1, 2).float()


def initial_channels(image: torch.Tensor, seed: int, n_channels: int, k: int) -> torch.Tensor:
    """The k distinct channels (CPU long tensor) that start the k-means of ``image``: a
    uniformly random k-subset, drawn from ``content_seed(image, seed)``."""
    key = derive_seed(content_seed(image, seed), "tis-kmeans-init")
    return torch.randperm(int(n_channels), generator=cpu_generator(key))[:int(k)]


def kmeans(points: torch.Tensor, init: torch.Tensor, max_iter: int = KMEANS_MAX_ITER,
           tol: float = KMEANS_TOL, stop_early: bool | None = None) -> torch.Tensor:
    """Lloyd's k-means of ``points`` ``(C, N)`` from the centroids ``points[init]``; returns
    the ``(K, N)`` centroids (see the module docstring, step 2). ``stop_early=False`` (the
    default on CUDA) runs every iteration, a converged centroid set no longer changing, so the
    loop never waits on the device; ``True`` (elsewhere) leaves the loop once converged. The
    result is the same."""
    points = points.float()
    centroids = points[init.to(points.device)]
    ids = torch.arange(centroids.shape[0], device=points.device)
    sq_points = (points ** 2).sum(dim=1)[:, None]
    done = torch.zeros((), dtype=torch.bool, device=points.device)
    if stop_early is None:
        stop_early = points.device.type != "cuda"
    for _ in range(int(max_iter)):
        sim = 2 * points @ centroids.T - sq_points - (centroids ** 2).sum(dim=1)[None, :]
        closest = sim.argmax(dim=1)
        member = (closest[None, :] == ids[:, None]).to(points.dtype)  # (K, C)
        means = member @ points / member.sum(dim=1)[:, None]
        means = means.masked_fill(means.isnan(), 0.0)  # a centroid without channels: 0
        shift = (means - centroids).pow(2).sum()
        centroids = torch.where(done, centroids, means)
        done = done | (shift <= tol)
        if stop_early and bool(done):
            break
    return centroids


def keep_indices(centroids: torch.Tensor, n_keep: int) -> torch.Tensor:
    """``(K, n_keep)`` token indices (ascending) of the largest values of every centroid
    (ties: the lower index first)."""
    order = torch.sort(centroids, dim=1, descending=True, stable=True).indices
    return order[:, :int(n_keep)].sort(dim=1).values


@contextlib.contextmanager
def kept_tokens(model, keep: torch.Tensor, source: torch.Tensor):
    """Forwards inside the context run item ``i`` on the prefix tokens and the patch tokens
    ``keep[i]`` of input row ``source[i]``: a forward of ``U`` images returns ``len(keep)``
    rows of logits. The token sequence is replaced as it enters the first block (positions
    already added); with an additive attention prior every block's prior is restricted to
    the item's kept tokens. ``keep`` ``(n, n_keep)``, ``source`` ``(n,)``: long tensors on
    the model's device."""
    how = token_dropping(model)
    if how is None:
        raise ValueError("TIS cannot drop tokens from this model exactly "
                         "(see xai_bench.methods.tis.token_dropping)")
    prefix = _prefix(model)

    def subset(_module, args):
        t = args[0]
        patches = t[source[:, None], prefix + keep]  # (n, n_keep, D)
        if prefix:
            patches = torch.cat([t[source, :prefix], patches], dim=1)
        return (patches,) + tuple(args[1:])

    handle = model.blocks[0].register_forward_pre_hook(subset)
    swapped = []
    try:
        if how == "sequence+prior":
            for blk in model.blocks:
                attn = blk.attn
                prior = attn.prior
                restricted = prior[:, keep[:, :, None], keep[:, None, :]].transpose(0, 1)
                del attn.prior  # the parameter leaves _parameters for the duration
                swapped.append((attn, prior))
                attn.prior = restricted  # (n, heads, n_keep, n_keep): one prior per item
        yield
    finally:
        handle.remove()
        for attn, prior in swapped:
            del attn.prior
            attn.prior = prior


@method("tis", kind="perturbation", requires="attention", cost=85.0, place=14,
        colour="#DDCC77")  # Tol sand
class TIS(AttributionMethod):
    """Transformer Input Sampling: score-weighted token masks from k-means of the block
    activations, scored with the unkept tokens removed from the sequence."""

    PARAMETER_CHECKS = {"n_masks": integer(1), "tokens_ratio": number(above=0, high=1),
                        "normalise": boolean(),
                        "seed": integer(), "chunk_size": integer(1)}

    def __init__(self, n_masks: int = 1024, tokens_ratio: float = 0.5, normalise: bool = True,
                 seed: int = 0, chunk_size: int = 128):
        super().__init__(n_masks=n_masks, tokens_ratio=tokens_ratio, normalise=normalise,
                         seed=seed, chunk_size=chunk_size)
        self.params.update(n_masks=int(n_masks), tokens_ratio=float(tokens_ratio),
                           seed=int(seed), chunk_size=int(chunk_size))
        #: masks K per image in the last call (cost: 1 + K forward passes of kept tokens)
        self.last_num_masks = float("nan")
        #: tokens kept per mask in the last call
        self.last_tokens_kept = float("nan")

    def applies_to(self, model) -> bool:
        return token_dropping(model) is not None

    # -- steps -----------------------------------------------------------------------------
    def masks(self, model, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, n_keep)`` kept-token indices per image and mask (steps 1-3)."""
        n_tokens = model.token_grid[0] * model.token_grid[1]
        n_keep = max(1, int(self.params["tokens_ratio"] * n_tokens))
        out = []
        for b in range(x.shape[0]):
            points = block_activations(model, x[b:b + 1])[0]
            k = min(self.params["n_masks"], points.shape[0])
            init = initial_channels(x[b], self.params["seed"], points.shape[0], k)
            out.append(keep_indices(kmeans(points, init), n_keep))
        return torch.stack(out)

    def scores(self, model, x: torch.Tensor, keep: torch.Tensor,
               targets: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` target confidences with only each mask's tokens kept (step 4), in
        chunks of at most ``chunk_size`` masks (fewer when the free memory holds fewer;
        halved after an out-of-memory error). Each chunk's forward takes every image of the
        chunk once; the tokens are subset after the tokeniser."""
        bsz, k, n_keep = keep.shape
        total = bsz * k
        device = x.device
        flat = keep.reshape(total, n_keep)
        owner = torch.arange(bsz).repeat_interleave(k)  # CPU bookkeeping: no device sync
        targets = targets.to(device)
        conf = torch.empty(total, dtype=torch.float32, device=device)

        def chunk_scores(start: int, stop: int) -> None:
            images, source = torch.unique(owner[start:stop], return_inverse=True)
            source = source.to(device)
            with kept_tokens(model, flat[start:stop], source), forward_autocast(device):
                logits = model(x[images.to(device)])
            out = model.confidence(full_precision(logits))
            conf[start:stop] = out.gather(1, targets[owner[start:stop].to(device)][:, None])[:, 0]

        chunk = chunk_size(model, x, device, with_grad=False,
                           requested=min(self.params["chunk_size"], total))
        run_chunked(chunk_scores, total, chunk, device=device, what="TIS's token subsets",
                    on_oom=lambda c: remember_limit(model, x, with_grad=False, chunk=c))
        return conf.reshape(bsz, k)

    def saliency(self, model, keep: torch.Tensor, scores: torch.Tensor, size) -> torch.Tensor:
        """Step 5: ``(B, H, W)`` maps from the kept indices and their scores."""
        bsz, k, _ = keep.shape
        n_tokens = model.token_grid[0] * model.token_grid[1]
        masks = scores.new_zeros(bsz, k, n_tokens).scatter_(2, keep, 1.0)
        weighted = (scores[:, :, None] * masks).sum(dim=1)
        coverage = masks.sum(dim=1)
        sal = torch.where(coverage > 0, weighted / coverage.clamp(min=1),
                          torch.zeros_like(weighted))
        if self.params["normalise"]:
            lo, hi = sal.amin(dim=1, keepdim=True), sal.amax(dim=1, keepdim=True)
            span = hi - lo
            sal = torch.where(span > 0, (sal - lo) / torch.where(span > 0, span, 1.0),
                              torch.zeros_like(sal))
        grid = sal.reshape(bsz, 1, *model.token_grid)
        return F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]

    @torch.no_grad()
    def attribute(self, model, x, targets):
        with eval_mode(model):
            keep = self.masks(model, x)
            scores = self.scores(model, x, keep, targets)
        self.last_num_masks = float(keep.shape[1])
        self.last_tokens_kept = float(keep.shape[2])
        return self.saliency(model, keep, scores, x.shape[-2:]).to(x.dtype)
