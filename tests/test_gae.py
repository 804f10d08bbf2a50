"""GAE (Chefer, Gur & Wolf 2021b; docs/definitions.md, 'gae'): agreement with an independent
mirror of the reference algorithm (a loop over blocks, ``grad * cam`` clamped and averaged over
heads, ``R += cam @ R``, CLS-row readout ``R[0, 1:]``, bilinear upsampling) on identical
weights, a known answer on hand-built attention, batch invariance and the parameters.

CPU-small: untrained tiny models (the ``vit_nano`` / ``bcos_vit_nano`` builders with embed 32,
depth 2, and a 2-block timm ViT with a CLS token), 32×32 images, batches of 2-3."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

import xai_bench
from xai_bench.contracts.method import method_card
from xai_bench.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(num_classes=4, embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16))
TIMM_TINY = dict(img_size=32, patch_size=8, embed_dim=48, num_heads=3, depth=2, num_classes=10)


@pytest.fixture(scope="module")
def ours():
    """{"bcos": ..., "conv": ...}: untrained tiny mean-pooling ViTs (no CLS token)."""
    torch.manual_seed(0)
    return {"bcos": xai_bench.get_model("bcos_vit_nano", **TINY).eval(),
            "conv": xai_bench.get_model("vit_nano", **TINY).eval()}


@pytest.fixture(scope="module")
def timm_vit():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    return xai_bench.get_model("timm:vit_tiny_patch16_224", pretrained=False,
                               **TIMM_TINY).eval()


def images(n, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def inputs(model, n=3, seed=1):
    dtype = next(model.parameters()).dtype
    return model.encode(images(n, seed).to(dtype)), torch.arange(n) % model.num_classes


# ----------------------------------------------------------------------------- the mirror


def avg_heads(cam, grad):
    """Rule 5 of the reference: mean over heads of the clamped product."""
    cam = cam.reshape(-1, cam.shape[-2], cam.shape[-1])
    grad = grad.reshape(-1, grad.shape[-2], grad.shape[-1])
    return (grad * cam).clamp(min=0).mean(dim=0)


def mirror_relevance(cams, grads):
    """Rule 6 of the reference, literally: R = I, then R += cam @ R block after block."""
    n = cams[0].shape[-1]
    R = torch.eye(n, dtype=cams[0].dtype)
    for cam, grad in zip(cams, grads):
        R += avg_heads(cam, grad) @ R
    return R


def mirror_upsample(tokens, grid, image_size):
    """The reference's visualisation: reshape to the grid, bilinear upsampling by the patch
    size (``scale_factor``, align_corners=False)."""
    scale = image_size[0] // grid[0]
    return F.interpolate(tokens.reshape(1, 1, *grid), scale_factor=scale, mode="bilinear")[0, 0]


def mirror_timm(net, x, index, grid):
    """One image through a plain timm ViT whose attention (the output of ``attn_drop``, i.e.
    the softmax in eval mode) is captured by hooks of this test's own: ``R[0, 1:]``."""
    cams = []
    handles = [blk.attn.attn_drop.register_forward_hook(lambda m, i, o: cams.append(o))
               for blk in net.blocks]
    try:
        output = net(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(output[0, index], cams)
    R = mirror_relevance([c.detach() for c in cams], grads)
    return mirror_upsample(R[0, 1:], grid, (x.shape[-2], x.shape[-1]))


def mirror_ours(model, x, index, identity):
    """One image through one of our models (attention from ``record_attention``); the readout
    documented for mean pooling: the mean over query rows of ``R - I`` (or of ``R``)."""
    with model.record_attention() as recorded:
        output = model(x.requires_grad_(True))
        cams = list(recorded)
    grads = torch.autograd.grad(output[0, index], cams)
    R = mirror_relevance([c.detach() for c in cams], grads)
    if not identity:
        R = R - torch.eye(R.shape[-1], dtype=R.dtype)
    return mirror_upsample(R.mean(0), model.token_grid, model.image_size)


def test_equals_the_reference_mirror_on_a_timm_vit_with_cls_token(timm_vit):
    timm = pytest.importorskip("timm")
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TIMM_TINY).eval()
    net.load_state_dict(timm_vit.model.state_dict())
    for blk in net.blocks:
        blk.attn.fused_attn = False
    x, t = inputs(timm_vit, n=3)
    t = torch.tensor([0, 7, 3])
    expected = torch.stack([mirror_timm(net, x[i:i + 1].clone(), int(t[i]), timm_vit.token_grid)
                            for i in range(3)])
    for identity in (False, True):  # the identity lies in the dropped CLS column
        maps = xai_bench.get_method("gae", include_identity=identity)(timm_vit, x, t)
        assert maps.shape == (3, 32, 32)
        scale = expected.abs().max()
        assert scale > 0
        torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6 * scale)
    assert all(p.grad is None for p in timm_vit.parameters())


@pytest.mark.parametrize("family", ["bcos", "conv"])
def test_equals_the_reference_mirror_on_mean_pooled_models(family, ours):
    model = copy.deepcopy(ours[family]).double()  # float64: R - I without rounding
    x, t = inputs(model, n=2)
    for identity in (False, True):
        expected = torch.stack([mirror_ours(model, x[i:i + 1].clone(), int(t[i]), identity)
                                for i in range(2)])
        maps = xai_bench.get_method("gae", include_identity=identity)(model, x, t)
        scale = expected.abs().max()
        assert scale > 0
        torch.testing.assert_close(maps, expected, rtol=1e-9, atol=1e-12 * scale)
    # the identity adds 1/N to every token of the mean readout, nothing else
    literal = xai_bench.get_method("gae", include_identity=True)(model, x, t)
    default = xai_bench.get_method("gae")(model, x, t)
    torch.testing.assert_close(literal - default, torch.full_like(default, 1 / 64))


# ----------------------------------------------------------------------------- known answer


class HandBuiltViT(torch.nn.Module):
    """Block l's attention is ``attention[l]`` (heads, N, N) for every sample and
    ``y_c = Σ_l Σ W[c, l] ⊙ A_l``, so ``∂y_c/∂A_l = W[c, l]``. ``cls=True``: the first of the
    four tokens is a CLS token (pooling "cls") and the patch tokens lie on a 1×3 grid."""

    def __init__(self, attention, weights, cls=False):
        super().__init__()
        self.attention, self.weights = attention, weights
        self.num_classes = weights.shape[0]
        self.token_grid, self.image_size = ((1, 3), (1, 3)) if cls else ((2, 2), (2, 2))
        self.pooling, self.num_prefix_tokens = ("cls", 1) if cls else ("mean", 0)
        self.blocks = torch.nn.ModuleList(torch.nn.Module() for _ in attention)
        for blk in self.blocks:
            blk.attn = torch.nn.Module()
        self._maps = None

    @contextlib.contextmanager
    def record_attention(self):
        self._maps = []
        try:
            yield self._maps
        finally:
            self._maps = None

    def forward(self, x):
        one = 1 + 0 * x.sum((1, 2, 3))  # (B,): the maps depend on x
        maps = [a[None] * one[:, None, None, None] for a in self.attention]
        if self._maps is not None:
            self._maps[:] = maps
        return torch.einsum("blhij,clhij->bc", torch.stack(maps, 1), self.weights)


def rows(*columns):
    m = torch.zeros(4, 4)
    for i, c in enumerate(columns):
        m[i, c] = 1
    return m


def hand_built(cls=False):
    e3 = rows(3, 3, 3, 3)
    attention = torch.stack([torch.stack([e3, e3]),                               # block 0
                             torch.stack([rows(0, 0, 0, 0), rows(1, 1, 1, 1)])])  # block 1
    w = torch.zeros(2, 2, 2, 4, 4)  # (C, L, heads, N, N) = ∂y_c/∂A
    w[0, 0, 0] = 1.0                # block 0: heads +1 / -1 on the same entries: ReLU per
    w[0, 0, 1] = -1.0               #   head, then the mean → 0.5 e3 rows (not 0)
    w[0, 1, 0] = 2.0                # block 1 head 0: 2·e0 rows → mean over heads e0
    w[0, 1, 1] = 4.0                # block 1 head 1: 4·e1 rows → 2 e1 ...
    w[0, 1, 1, 3] = -4.0            #   ... but row 3 negative → clamped to 0
    w[1, 1, 1] = 2.0                # class 1: only block 1 head 1 → Ā_1 rows e1, Ā_0 = 0
    return HandBuiltViT(attention, w, cls=cls)


def explain(target, cls=False, **params):
    maps = xai_bench.get_method("gae", **params)(hand_built(cls), torch.zeros(1, 3, *(
        (1, 3) if cls else (2, 2))), torch.tensor([target]))
    return maps[0].flatten()


def test_known_answer_on_hand_built_attention():
    # Ā_0 rows 0.5 e3; Ā_1 rows e0 + 2 e1 (row 3: e0). R - I = Ā_1 + Ā_0 + Ā_1 Ā_0, where
    # Ā_1 Ā_0 has rows (row sum of Ā_1) · 0.5 e3: rows [1, 2, 0, 2] ×3 and [1, 0, 0, 1].
    torch.testing.assert_close(explain(0), torch.tensor([1.0, 1.5, 0.0, 1.75]))
    torch.testing.assert_close(explain(0, include_identity=True),
                               torch.tensor([1.25, 1.75, 0.25, 2.0]))  # + 1/N
    # the blocks in the other order would give Ā_0 Ā_1 (rows 0.5 e0): not this
    # class 1: R - I = Ā_1 = rows e1
    torch.testing.assert_close(explain(1), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    # CLS readout: row 0 of R without column 0, whatever include_identity says
    for identity in (False, True):
        torch.testing.assert_close(explain(0, cls=True, include_identity=identity),
                                   torch.tensor([2.0, 0.0, 2.0]))
        torch.testing.assert_close(explain(1, cls=True, include_identity=identity),
                                   torch.tensor([1.0, 0.0, 0.0]))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("family", ["bcos", "conv", "timm"])
def test_batched_equals_per_image_shapes_finite(family, ours, timm_vit):
    model = timm_vit if family == "timm" else ours[family]
    method = xai_bench.get_method("gae")
    assert method.applies_to(model)
    x, t = inputs(model, n=3)
    maps = method(model, x, t)
    assert maps.shape == (3, 32, 32) and maps.dtype == x.dtype and torch.isfinite(maps).all()
    assert torch.equal(maps, method(model, x, t)), "not deterministic"
    single = torch.cat([method(model, x[i:i + 1], t[i:i + 1]) for i in range(3)])
    scale = maps.abs().max()
    torch.testing.assert_close(maps, single, rtol=1e-4, atol=1e-4 * scale)
    assert (maps >= 0).all()  # sums of products of non-negative matrices
    other = method(model, x, (t + 1) % model.num_classes)
    assert not torch.allclose(other, maps), "the map ignores the target class"
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_registration_and_parameters():
    method = xai_bench.get_method("gae")
    assert method.params == {"include_identity": False}
    assert xai_bench.get_method("gae", include_identity=True).params == {
        "include_identity": True}
    card = method_card(method)
    assert (card.name, card.kind, card.class_agnostic, card.requires) == \
        ("gae", "attention", False, ("attention",))
    with pytest.raises(ConfigError, match="include_identity"):
        xai_bench.get_method("gae", include_identity="yes")
    with pytest.raises(ConfigError, match="unknown parameter 'start_layer'"):  # none in the reference
        xai_bench.get_method("gae", start_layer=1)
    assert not method.applies_to(torch.nn.Linear(2, 2))
