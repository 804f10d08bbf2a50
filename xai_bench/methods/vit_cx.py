"""ViT-CX (Xie et al. 2023, "ViT-CX: Causal Explanation of Vision Transformers").

Masks come from the patch embeddings, scores from their causal effect on the output:

1. **Features**: the output of the last block's attention-input norm, ``(B, N_tok, D)``
   (B-cos ViT: ``blocks[-1].attn.norm``, the LayerNorm on the query/key input; conventional
   ViT and timm ViTs: ``blocks[-1].norm1``). Each of the D channels is a map on the token
   grid, upsampled to the input size (bilinear, ``align_corners=False``) and min-max
   normalised per map.
2. **Masks**: per image, agglomerative clustering of the D channel maps (complete linkage,
   cosine distance, distance threshold 0.1: two clusters merge while their complete-linkage
   distance is *below* the threshold). A cluster's soft mask ``M_i`` is the sum of its member
   maps, min-max normalised. ``N`` masks per image.
3. **Causal scores**: with Gaussian noise ``ε ~ N(0, σ²)``, σ = 0.1, and ``p`` the
   target-class confidence (``model.confidence``); ``x`` is the encoded model input (not
   re-encoded) with ``perturb_space="model"``, the default, and the RGB image (encoded after
   perturbing) with ``perturb_space="rgb"``::

       s_i = p(x⊙M_i + ε_i⊙(1−M_i)) − p(x + ε_i⊙(1−M_i)) + p(x)

   i.e. the masked image's confidence minus the "delta" ``p(x + ε_i(1−M_i)) − p(x)`` that the
   noise alone causes. The *same* draw ``ε_i`` enters both terms of a mask; for an affine
   confidence the noise then cancels exactly (``s_i = p(x⊙M_i)``).
4. **Saliency**: ``Σ_i s_i M_i / Σ_j M_j / N`` (per-pixel coverage normalisation; 0 where no
   mask covers a pixel).

What the official code (github.com/vaynexie/CausalX-ViT, ``ViT_CX.py`` and
``causal_score.py``) does, and where this implementation deliberately differs:

- Noise: the reference draws an independent ``ε_i`` for every mask (``randn([N, 3, H, W])``)
  and uses that one draw for both perturbed images of the mask, exactly as above. That is the
  default here (``shared_noise=False``); ``shared_noise=True`` uses one draw per image for all
  of its masks. The reference's draws are unseeded; here every draw is seeded by ``seed``, the
  image's own bytes and the mask's index (:mod:`xai_bench.compute.seeding`; drawn on the CPU), so a
  batched call equals the per-image calls and CPU and GPU runs use the same noise.
- Delta correction: identical — ``p_final = p_masked − p_noisy + class_p`` with ``class_p``
  the clean image's probability of the explained class, then ``masks / Σ masks`` and ``/ N``.
- Input space (``perturb_space``): the reference perturbs the *model input* (the
  mean/std-normalised image, so masked-out pixels become the data mean plus noise of σ in
  normalised units). ``"model"`` (the default) does exactly that on the encoded input ``x``:
  ``x⊙M + ε(1−M)`` and ``x + ε(1−M)`` with ``ε`` of shape ``(C_in, H, W)`` (six channels for
  B-cos models, which is what the reference's code does when given a B-cos model's input),
  fed to the model without re-encoding. ``"rgb"`` instead perturbs the decoded RGB image and
  encodes the result (masked-out pixels become black plus noise; a σ of 0.1 in RGB is σ/std in
  model space: 0.2 at std 0.5, about 0.44 at ImageNet's std ≈ 0.225), so that a B-cos model
  and its conventional twin see identical perturbed images. The choice matters: on the
  trained default ``vit_nano`` the two spaces' maps correlate with a median Pearson r of only
  0.03 (8 shapes test images), so the default is the reference's. Perturbed values are not
  clipped in either space (neither does the reference).
- Clustering: the reference uses scikit-learn's ``AgglomerativeClustering`` on a precomputed
  cosine-distance matrix; we use scipy's complete linkage cut strictly below the threshold.
  For an identical float64 distance matrix the labels (up to numbering) are those of
  ``AgglomerativeClustering(linkage="complete", metric="precomputed", distance_threshold=t,
  n_clusters=None)``. Complete linkage depends on the order in which near-equal distances are
  merged, so distances computed in float32 (as the reference does, on the GPU) can round
  differently and give different clusters: identical labels follow from identical distances,
  not from identical maps.
- Degenerate maps: the reference divides by zero for a constant channel map (and for pixels no
  mask covers), producing NaNs; here constant channel maps (all zero after min-max) and
  constant cluster masks are dropped, and uncovered pixels get 0.
- Our models average tokens (no CLS token), so the reference's "drop the CLS token" reshape
  becomes: the last ``prod(token_grid)`` tokens are the patch tokens (which also drops the
  prefix tokens — CLS, distillation, registers — of timm ViTs, which put them first).
- Forward passes: the reference runs 2 clean forwards (prediction, features) + 2N; here one
  clean forward gives both, so ``2N + 1`` per image. All perturbed images of all images in
  the batch are evaluated together in chunks of at most ``chunk_size`` (the reference:
  ``gpu_batch`` per image; fewer when the device's free memory holds fewer, halved after an
  out-of-memory error, see :mod:`xai_bench.compute.chunking`), built chunk by chunk so memory stays
  bounded by the chunk. These masked forwards follow the forward options of
  :mod:`xai_bench.compute.precision` (bf16 autocast, torch.compile; the logits are cast back to
  float32 before the confidence); the clean forward, whose features are clustered, is always
  float32.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xai_bench.compute.chunking import chunk_size, remember_limit, run_chunked
from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import integer, number, one_of
from xai_bench.contracts.model import decode as decode_input
from xai_bench.methods.base import AttributionMethod, is_vit
from xai_bench.compute.modes import eval_mode
from xai_bench.compute.precision import forward_autocast, forward_model, full_precision
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed


def decode(model, x: torch.Tensor) -> torch.Tensor:
    """Back from the model's input encoding to RGB images in (about) [0, 1]: the inverse of
    the encoding the model declares (:func:`xai_bench.contracts.model.decode`)."""
    return decode_input(model, x)


def attention_input_norm(block):
    """The module whose output feeds a block's attention (None if there is none): pre-norm ViTs
    (ours and timm's) use ``block.norm1``; B-cos blocks have none and normalise only the
    query/key input (``block.attn.norm``). ``norm1`` is looked up first because timm's
    attention modules also have an ``attn.norm``, which normalises the attention *output*."""
    norm = getattr(block, "norm1", None)
    if isinstance(norm, torch.nn.Module):
        return norm
    norm = getattr(getattr(block, "attn", None), "norm", None)
    return norm if isinstance(norm, torch.nn.Module) else None


def _minmax(t: torch.Tensor, dims) -> torch.Tensor:
    """Min-max normalise over ``dims``; constant slices become all-zero."""
    lo, hi = t.amin(dims, keepdim=True), t.amax(dims, keepdim=True)
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (t - lo) / safe, torch.zeros_like(t))


def channel_maps(tokens: torch.Tensor, token_grid, size) -> torch.Tensor:
    """One image's tokens ``(N_tok, D)`` -> its D channel maps ``(D, H, W)``: the patch tokens
    (the last ``rows·cols``) on the token grid, upsampled bilinearly (align_corners=False) and
    min-max normalised per map."""
    rows, cols = token_grid
    grid = tokens[-rows * cols:].transpose(0, 1).reshape(1, -1, rows, cols)
    up = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)[0]
    return _minmax(up, (1, 2))


def cluster_labels(maps: torch.Tensor, threshold: float) -> np.ndarray:
    """Agglomerative clustering (complete linkage, cosine distance) of ``(D, H, W)`` maps: a
    label ``0 .. N−1`` per map, ``-1`` for all-zero maps (no cosine distance). Clusters merge
    while their linkage distance is strictly below ``threshold``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    flat = maps.detach().flatten(1).double()
    norms = flat.norm(dim=1)
    keep = (norms > 0).cpu().numpy()
    labels = np.full(len(flat), -1, dtype=np.int64)
    if keep.sum() == 0:
        return labels
    if keep.sum() == 1:
        labels[keep] = 0
        return labels
    unit = flat[torch.from_numpy(keep).to(flat.device)]
    unit = unit / unit.norm(dim=1, keepdim=True)
    dist = (1.0 - unit @ unit.T).clamp_(min=0.0).cpu().numpy()
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2  # exactly symmetric for squareform
    tree = linkage(squareform(dist, checks=False), method="complete")
    # fcluster keeps merges at height <= t; scikit-learn's distance_threshold keeps < t.
    flat_labels = fcluster(tree, t=np.nextafter(float(threshold), -np.inf), criterion="distance")
    # Relabel by first appearance, so the mask order depends only on the maps.
    _, first, inverse = np.unique(flat_labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    labels[keep] = rank[inverse.reshape(-1)]
    return labels


def cluster_masks(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(D, H, W)`` normalised channel maps -> ``(N, H, W)`` soft masks: the sum of each
    cluster's maps, min-max normalised (constant masks are dropped)."""
    labels = cluster_labels(maps, threshold)
    n = int(labels.max()) + 1 if len(labels) else 0
    if n == 0:
        return maps.new_zeros(0, *maps.shape[1:])
    keep = torch.from_numpy(labels >= 0).to(maps.device)
    ids = torch.from_numpy(labels[labels >= 0]).to(maps.device)
    sums = maps.new_zeros(n, *maps.shape[1:]).index_add_(0, ids, maps[keep])
    masks = _minmax(sums, (1, 2))
    return masks[masks.flatten(1).amax(1) > 0]


def mask_noise(image_seed: int, mask_index: int, shape, sd: float, device, dtype,
               shared: bool = False) -> torch.Tensor:
    """The noise ``ε`` of mask ``mask_index`` of an image whose content seed is ``image_seed``
    (``shared``: one draw for all of the image's masks): drawn on the CPU from
    ``cpu_generator(derive_seed(image_seed, mask_index))`` (``"shared"`` instead of the index
    for shared noise), then moved to ``device`` — the same numbers on every device."""
    key = derive_seed(int(image_seed), "shared" if shared else int(mask_index))
    eps = torch.randn(tuple(shape), generator=cpu_generator(key), dtype=dtype) * sd
    return eps.to(device)


@method("vit_cx", kind="perturbation", requires="attention", cost=60.0, place=9,
        colour="#999933", groups=("default",))  # Tol olive
class ViTCX(AttributionMethod):
    """ViT-CX: causal scores of clustered patch-embedding masks."""

    #: where masks and noise are applied: the RGB image before encoding, or the encoded input
    PERTURB_SPACES = ("rgb", "model")
    PARAMETER_CHECKS = {"noise_sd": number(0), "distance_threshold": number(0),
                        "seed": integer(), "chunk_size": integer(1),
                        "perturb_space": one_of(*PERTURB_SPACES)}

    def __init__(self, noise_sd: float = 0.1, distance_threshold: float = 0.1, seed: int = 0,
                 chunk_size: int = 64, shared_noise: bool = False, perturb_space: str = "model"):
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if perturb_space not in self.PERTURB_SPACES:
            raise ValueError(f"perturb_space must be one of {self.PERTURB_SPACES}, "
                             f"got {perturb_space!r}")
        super().__init__(noise_sd=float(noise_sd), distance_threshold=float(distance_threshold),
                         seed=int(seed), chunk_size=int(chunk_size),
                         shared_noise=bool(shared_noise), perturb_space=str(perturb_space))
        #: mean number of masks N per image in the last call (cost: 2N + 1 forward passes)
        self.last_num_masks = float("nan")
        #: mean number of images pushed through the model per explained image, last call
        self.last_forward_passes = float("nan")

    def applies_to(self, model) -> bool:
        return (is_vit(model) and len(model.blocks) > 0
                and attention_input_norm(model.blocks[-1]) is not None)

    # -- steps -----------------------------------------------------------------------------
    def features(self, model, x):
        """One forward: the last block's attention-input norm output (B, N_tok, D) and the
        logits."""
        norm = attention_input_norm(model.blocks[-1])
        if norm is None:
            raise ValueError("ViT-CX needs the last block's attention-input norm "
                             "(block.attn.norm or block.norm1)")
        captured = {}

        def hook(module, inputs, output):
            captured["tokens"] = output.detach()

        handle = norm.register_forward_hook(hook)
        try:
            logits = model(x)
        finally:
            handle.remove()
        return captured["tokens"], logits

    def masks(self, model, tokens, size):
        """Per image: its ``(N_b, H, W)`` soft masks."""
        thr = self.params["distance_threshold"]
        return [cluster_masks(channel_maps(t, model.token_grid, size), thr) for t in tokens]

    @torch.no_grad()
    def attribute(self, model, x, targets):
        bsz, (h, w) = x.shape[0], x.shape[-2:]
        with eval_mode(model):
            tokens, logits = self.features(model, x)
            p_clean = model.confidence(logits).gather(1, targets[:, None])[:, 0]
            masks = self.masks(model, tokens, (h, w))
            counts = [len(m) for m in masks]
            # Seeds come from the encoded input in both spaces, so switching the space changes
            # where the noise goes, not which numbers are drawn.
            seeds = [content_seed(img, self.params["seed"]) for img in x]
            if self.params["perturb_space"] == "model":
                source, encode = x, None
            else:
                source, encode = decode(model, x), model.encode
            scores, n_images = self._scores(model, source, encode, masks, seeds, targets,
                                            p_clean, like=x)
        self.last_num_masks = float(np.mean(counts)) if counts else float("nan")
        self.last_forward_passes = (bsz + n_images) / max(bsz, 1)

        sal = x.new_zeros(bsz, h, w)
        if scores.numel() == 0:
            return sal
        owner = torch.repeat_interleave(torch.arange(bsz, device=x.device),
                                        torch.tensor(counts, device=x.device))
        all_masks = torch.cat(masks).to(x.dtype)
        weighted = sal.index_add(0, owner, scores.to(x.dtype)[:, None, None] * all_masks)
        coverage = sal.index_add(0, owner, all_masks)
        safe = torch.where(coverage > 0, coverage, torch.ones_like(coverage))
        sal = torch.where(coverage > 0, weighted / safe, torch.zeros_like(weighted))
        n = torch.tensor(counts, dtype=x.dtype, device=x.device).clamp(min=1)
        return sal / n[:, None, None]

    def _scores(self, model, source, encode, masks, seeds, targets, p_clean, like=None):
        """Causal scores of all masks of all images (concatenated in image order), from the
        perturbed images evaluated in chunks of at most ``chunk_size`` (fewer when the free
        memory holds fewer, for model inputs shaped like ``like``, default ``source``; halved
        after an out-of-memory error: every item is computed on its own, so the scores do not
        depend on the chunking): per mask, item ``2i`` is
        ``x⊙M + ε(1−M)`` and item ``2i+1`` is ``x + ε(1−M)`` with ``x`` the ``source`` images
        and ``ε`` of their shape ``(C, H, W)``; ``encode`` maps the perturbed images to the
        model input (None: they already are model input)."""
        p = self.params
        counts = [len(m) for m in masks]
        total = sum(counts)
        if total == 0:
            return source.new_zeros(0), 0
        device, dtype = source.device, source.dtype
        like = source if like is None else like
        owner = torch.repeat_interleave(torch.arange(len(masks)), torch.tensor(counts))
        local = torch.cat([torch.arange(c) for c in counts])
        all_masks = torch.cat(masks).to(device=device, dtype=dtype)
        targets = targets.to(device)
        conf = torch.empty(2 * total, dtype=dtype, device=device)
        shape = tuple(source.shape[1:])
        forward = forward_model(model)

        def chunk_scores(start: int, stop: int) -> None:
            items = torch.arange(start, stop)
            m = items // 2
            first = int(m[0])
            eps = torch.stack([
                mask_noise(seeds[int(owner[k])], int(local[k]), shape, p["noise_sd"], device,
                           dtype, shared=p["shared_noise"])
                for k in range(first, int(m[-1]) + 1)])[m - first]
            mask = all_masks[m.to(device)][:, None]
            src = source[owner[m].to(device)]
            masked_item = (items % 2 == 0).to(device)[:, None, None, None]
            kept = torch.where(masked_item, mask, torch.ones_like(mask))
            perturbed = src * kept + eps * (1 - mask)
            model_input = perturbed if encode is None else encode(perturbed)
            with forward_autocast(device):
                logits = forward(model_input)
            out = model.confidence(full_precision(logits))
            conf[start:stop] = out.gather(
                1, targets[owner[m].to(device)][:, None])[:, 0].to(dtype)

        # the chunk holds the model inputs (`like`: one encoded image); chunk_size is the bound
        chunk = chunk_size(model, like, device, with_grad=False,
                           requested=min(p["chunk_size"], 2 * total))
        run_chunked(chunk_scores, 2 * total, chunk, device=device,
                    what="ViT-CX's masked copies",
                    on_oom=lambda c: remember_limit(model, like, with_grad=False, chunk=c))
        p_masked, p_noisy = conf[0::2], conf[1::2]
        return p_masked - p_noisy + p_clean.to(dtype)[owner.to(device)], 2 * total
