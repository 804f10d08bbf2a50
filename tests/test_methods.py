"""Attribution methods (docs/definitions.md, 'Attribution methods'): the call contract on every model a method
applies to, agreement with captum, exact invariants, known answers on hand-built attention,
and the model-parameter randomisation check of Adebayo et al.

Kept CPU-small: a module-scoped pair of tiny models (the ``bcos_vit_nano`` / ``vit_nano``
builders with embed 32, depth 2) quickly trained on an inline task (the class is the colour
of a square at a random position), batches of 2-3 images at 32×32.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

import xai_bench
from xai_bench.methods.base import MethodNotApplicable
from xai_bench.registry import UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = xai_bench.list_methods()
BASELINES = {"random", "uniform", "centre"}  # model-independent
MINE = ["inherent", "ixg", "intgrad", "finatt", "rollout", "gradsam", "gradcam", "chefer_lrp",
        "plrp", "random", "uniform", "centre"]
FAST = {"intgrad": dict(n_steps=8), "smoothgrad": dict(nt_samples=4),  # the contract checks;
        "vargrad": dict(nt_samples=4), "gradient_shap": dict(n_samples=4),  # the defaults are
        "lime": dict(n_samples=24), "kernel_shap": dict(n_samples=24),      # checked elsewhere
        "rise": dict(n_masks=64), "tis": dict(n_masks=16)}
TINY = dict(num_classes=4, embed_dim=32, depth=2, num_heads=2, stem_channels=(8, 16),
            stem_strides=(2, 2), patch_size=1)  # 8×8 tokens at 32×32
COLOURS = torch.tensor([[0.9, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.25, 0.95],
                        [0.95, 0.85, 0.1]])


def colour_squares(n, seed, size=32, side=10):
    """Grey clutter with one 10×10 square whose colour is the class (4 classes)."""
    g = torch.Generator().manual_seed(seed)
    grey = 0.3 + 0.25 * torch.rand(n, 1, size, size, generator=g)
    labels = torch.randint(0, len(COLOURS), (n,), generator=g)
    top, left = torch.randint(0, size - side + 1, (2, n, 1, 1), generator=g)
    r = torch.arange(size)
    inside = ((r[None, :, None] >= top) & (r[None, :, None] < top + side)
              & (r[None, None, :] >= left) & (r[None, None, :] < left + side))
    images = torch.where(inside[:, None], COLOURS[labels][:, :, None, None], grey)
    return images, labels


def quick_train(name, steps, lr, batch=32):
    torch.manual_seed(0)
    model = xai_bench.get_model(name, **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    images, labels = colour_squares(steps * batch, seed=1)
    for s in range(steps):
        xb, yb = model.encode(images[s * batch:(s + 1) * batch]), labels[s * batch:(s + 1) * batch]
        logits = model(xb)
        if model.training_loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, F.one_hot(yb, 4).to(logits.dtype))
        else:
            loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    """{"bcos": ..., "conv": ...}: quickly trained tiny models (a few seconds each)."""
    models = {"bcos": quick_train("bcos_vit_nano", steps=40, lr=2e-3),
              "conv": quick_train("vit_nano", steps=30, lr=3e-3)}
    images, labels = colour_squares(128, seed=2)
    with torch.no_grad():
        for model in models.values():
            accuracy = (model(model.encode(images)).argmax(1) == labels).float().mean().item()
            assert accuracy > 0.9, f"{model.name} did not learn the toy task ({accuracy:.2f})"
    return models


@pytest.fixture(scope="module")
def trained64(trained):
    return {k: copy.deepcopy(m).double() for k, m in trained.items()}


def batch(model, n=3, seed=0):
    images, _ = colour_squares(n, seed=seed + 10)
    dtype = next(model.parameters()).dtype
    return model.encode(images.to(dtype)), torch.arange(n) % model.num_classes


def assert_maps_close(a, b, rtol=1e-4):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


def method(name, **params):
    return xai_bench.get_method(name, **{**FAST.get(name, {}), **params})


# ----------------------------------------------------------------------------- registry


def test_methods_registered_with_reported_parameters():
    assert set(ALL) >= set(MINE) | {"vit_cx"}
    assert xai_bench.get_method("intgrad").params["n_steps"] == 50
    assert xai_bench.get_method("intgrad").params["method"] == "gausslegendre"
    assert xai_bench.get_method("intgrad", n_steps=8).params["n_steps"] == 8
    auto = xai_bench.get_method("intgrad")  # memory bound: fewer interpolated inputs at 224²
    assert auto.chunk_for(None, torch.zeros(1, 6, 32, 32)) == 64
    assert auto.chunk_for(None, torch.zeros(1, 6, 224, 224)) == 16
    assert auto.chunk_for(None, torch.zeros(40, 6, 224, 224)) == 40  # >= one step of every image
    assert xai_bench.get_method("intgrad", chunk_size=8).chunk_for(None, torch.zeros(1, 6, 32, 32)) == 8
    with pytest.raises(ValueError, match="chunk_size"):
        xai_bench.get_method("intgrad", chunk_size=0)
    assert xai_bench.get_method("rollout").params == {"start_layer": 1}
    assert xai_bench.get_method("chefer_lrp").params == {"start_layer": 1,
                                                          "include_identity": False}
    assert xai_bench.get_method("random", seed=3).params == {"seed": 3}
    assert xai_bench.get_method("centre").params == {"sigma": 0.25}
    for name in MINE:
        m = xai_bench.get_method(name)
        assert m.name == name and isinstance(m.params, dict)
        assert m.kind in ("model-inherent", "attention", "gradient", "lrp", "baseline")
        assert isinstance(m.class_agnostic, bool)
    agnostic = {n for n in MINE if xai_bench.get_method(n).class_agnostic}
    assert agnostic == {"finatt", "rollout", "uniform", "centre"}
    with pytest.raises(UnknownNameError, match="did you mean 'rollout'"):
        xai_bench.get_method("rolout")


def test_applies_to(trained):
    expected = {"inherent": (True, False), "chefer_lrp": (False, True), "plrp": (False, True)}
    for name in MINE:
        on_bcos, on_conv = expected.get(name, (True, True))
        m = xai_bench.get_method(name)
        assert m.applies_to(trained["bcos"]) is on_bcos, name
        assert m.applies_to(trained["conv"]) is on_conv, name
    x, t = batch(trained["conv"])
    with pytest.raises(MethodNotApplicable, match="does not apply"):
        xai_bench.get_method("inherent")(trained["conv"], x, t)
    # attention methods need a ViT
    assert not xai_bench.get_method("rollout").applies_to(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("family", ["bcos", "conv"])
def test_contract_shape_finite_deterministic_batched(name, family, trained, trained64):
    m = method(name)
    model = trained[family]
    if not m.applies_to(model):
        pytest.skip(f"{name} does not apply to {family}")
    # LRP's divisions amplify float32 rounding differences between batched and single-image
    # matmuls (relative ~1e-4..1e-3), so its batch invariance is checked in float64.
    if m.kind == "lrp":
        model = trained64[family]
    x, t = batch(model, n=3)
    maps = m(model, x, t)
    assert maps.shape == (3, 32, 32) and maps.is_floating_point() and maps.device == x.device
    assert torch.isfinite(maps).all()
    assert torch.equal(maps, m(model, x, t)), "not deterministic"
    single = torch.cat([m(model, x[i:i + 1], t[i:i + 1]) for i in range(3)])
    assert_maps_close(maps, single)
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_methods_leave_model_state_alone_and_explain_in_eval_mode(trained):
    for family, model in trained.items():
        model = copy.deepcopy(model)
        x, t = batch(model, n=2)
        reference = {n: method(n)(model, x, t) for n in MINE if method(n).applies_to(model)}
        model.train()
        model.blocks[0].eval()  # a mixed state must come back exactly as it was
        frozen = next(model.parameters())
        frozen.requires_grad_(False)
        training = [mod.training for mod in model.modules()]
        flags = [p.requires_grad for p in model.parameters()]
        for name, expected in reference.items():
            # the conventional stem has batch norm: train-mode statistics would change maps
            torch.testing.assert_close(method(name)(model, x, t), expected, msg=name)
            assert [mod.training for mod in model.modules()] == training, name
            assert [p.requires_grad for p in model.parameters()] == flags, name
            assert all(p.grad is None for p in model.parameters()), name


def test_only_inherent_uses_explanation_mode(trained, monkeypatch):
    model = copy.deepcopy(trained["bcos"])

    def forbidden():
        raise AssertionError("explanation mode used")

    monkeypatch.setattr(model, "explanation_mode", forbidden)
    x, t = batch(model, n=2)
    for name in ("ixg", "intgrad", "finatt", "rollout", "gradsam", "gradcam"):
        method(name)(model, x, t)
    with pytest.raises(AssertionError, match="explanation mode"):
        method("inherent")(model, x, t)


# ----------------------------------------------------------------------------- invariants


def test_inherent_sums_to_logit_minus_bias(trained64):
    model = trained64["bcos"]
    x, _ = batch(model, n=3)
    targets = torch.tensor([0, 2, 3])
    maps = xai_bench.get_method("inherent")(model, x, targets)
    with torch.no_grad():
        logits = model(x).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(maps.sum((1, 2)), logits - model.logit_bias, rtol=1e-6, atol=0)


def test_inherent_on_untrained_default_model_float64():
    model = xai_bench.get_model("bcos_vit_nano").double().eval()
    x, t = batch(model, n=2)
    maps = xai_bench.get_method("inherent")(model, x, t)
    with torch.no_grad():
        logits = model(x).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(maps.sum((1, 2)), logits - model.logit_bias, rtol=1e-6, atol=0)


@pytest.mark.parametrize("family", ["bcos", "conv"])
def test_ixg_and_intgrad_equal_captum(family, trained):
    from captum.attr import InputXGradient, IntegratedGradients

    model = trained[family]
    x, t = batch(model, n=2)
    expected = InputXGradient(model).attribute(x.clone().requires_grad_(), target=t)
    assert_maps_close(xai_bench.get_method("ixg")(model, x, t), expected.detach().sum(1))
    # default 50 Gauss-Legendre steps; a small chunk_size exercises captum's internal batching
    expected = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t,
                                                    n_steps=50, method="gausslegendre")
    ours = xai_bench.get_method("intgrad", chunk_size=30)(model, x, t)
    assert_maps_close(ours, expected.detach().sum(1))


def test_intgrad_is_nearly_ixg_on_the_nearly_homogeneous_bcos_vit():
    """docs/definitions.md ('intgrad'): on the shipped B-cos model the two maps correlate at
    > 0.999; on its conventional twin they do not (a property of the B-cos model)."""
    from pathlib import Path

    from xai_bench.data import SyntheticShapes

    weights = Path(xai_bench.__file__).parent / "weights"
    data = SyntheticShapes("test", n=4, seed=0)
    correlation = {}
    for name in ("bcos_vit_nano", "vit_nano"):
        model = xai_bench.get_model(name, checkpoint=weights / f"{name}-shapes.pt").eval()
        x, t = model.encode(data.images.float() / 255), torch.as_tensor(data.labels)
        a = xai_bench.get_method("ixg")(model, x, t).flatten()
        b = xai_bench.get_method("intgrad", n_steps=20)(model, x, t).flatten()
        correlation[name] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert correlation["bcos_vit_nano"] > 0.999 > correlation["vit_nano"] + 0.05


def test_class_agnostic_and_class_sensitive_methods(trained):
    for family, sensitive in (("bcos", ("inherent", "ixg", "gradsam")),
                              ("conv", ("ixg", "chefer_lrp", "gradsam"))):
        model = trained[family]
        x, _ = batch(model, n=2)
        t1, t2 = torch.tensor([0, 1]), torch.tensor([2, 3])
        for name in ("rollout", "finatt"):
            m = xai_bench.get_method(name)
            assert torch.equal(m(model, x, t1), m(model, x, t2)), name
        for name in sensitive:
            m = xai_bench.get_method(name)
            a, b = m(model, x, t1), m(model, x, t2)
            spread = (a.amax((1, 2)) - a.amin((1, 2))).clamp(min=1e-30)
            diff = (a - b).abs().amax((1, 2)) / spread
            assert (diff > 0.05).all(), (name, diff)


def test_start_layer_is_validated(trained):
    x, t = batch(trained["conv"], n=1)
    for name in ("rollout", "chefer_lrp"):
        xai_bench.get_method(name, start_layer=0)(trained["conv"], x, t)
        with pytest.raises(ValueError, match="0-based"):
            xai_bench.get_method(name, start_layer=2)(trained["conv"], x, t)  # depth 2


# ----------------------------------------------------------------------------- known answers


class FakeViT(torch.nn.Module):
    """A stand-in ViT with 2×2 = 4 tokens on a 2×2 image (so upsampling is the identity).

    Block l's attention is ``attention[l]`` (heads, N, N) for every sample; the logits are
    ``y_c = Σ_l Σ W[c, l] ⊙ A_l``, so ``∂y_c/∂A_l = W[c, l]``; ``relprop(onehot)`` leaves
    ``Σ_c onehot_c · R[c, l]`` as block l's attention relevance."""

    token_grid = (2, 2)
    image_size = (2, 2)

    def __init__(self, attention, weights, relevance=None):
        super().__init__()
        self.attention, self.weights, self.relevance = attention, weights, relevance
        self.num_classes = weights.shape[0]
        self.blocks = torch.nn.ModuleList(torch.nn.Module() for _ in range(len(attention)))
        for blk in self.blocks:
            blk.attn = torch.nn.Module()
        self._record = None

    @contextlib.contextmanager
    def record_attention(self):
        self._record = []
        try:
            yield self._record
        finally:
            self._record = None

    lrp_recording = contextlib.nullcontext

    def forward(self, x):
        one = 1 + 0 * x.sum((1, 2, 3))  # (B,): puts the maps in the graph of x
        maps = [a[None] * one[:, None, None, None] for a in self.attention]
        if self._record is not None:
            self._record[:] = maps
        return torch.einsum("blhij,clhij->bc", torch.stack(maps, 1), self.weights)

    def relprop(self, onehot, alpha=1.0, rules="chefer"):
        for l, blk in enumerate(self.blocks):
            blk.attn.attention_relevance = torch.einsum("bc,chij->bhij", onehot,
                                                        self.relevance[:, l])


def rows(*columns):
    """A 4×4 matrix whose every row is the one-hot of the given column (per row)."""
    m = torch.zeros(4, 4)
    for i, c in enumerate(columns):
        m[i, c] = 1
    return m


def fake_model():
    e3 = rows(3, 3, 3, 3)
    attention = torch.stack([
        torch.stack([e3, e3]),                           # block 0: both heads attend to token 3
        torch.stack([rows(0, 0, 0, 0), rows(1, 1, 1, 1)]),  # block 1: heads → token 0 / token 1
    ])                                                   # (L=2, heads=2, 4, 4)
    w = torch.zeros(2, 2, 2, 4, 4)                       # (C, L, heads, N, N) = ∂y_c/∂A
    w[0, 0] = 1.0
    w[0, 0, :, :2, 3] = -1.0          # block 0: entries (0,3), (1,3) negative in both heads
    w[0, 1, 0, :, 0] = 4.0            # block 1 head 0: column 0 = 4 (mean over entries 1)
    w[0, 1, 1] = -2.0                 # block 1 head 1: -2 everywhere
    w[1, 1, 0] = -1.0
    w[1, 1, 1] = 12.0 * torch.eye(4)  # mean over entries 3
    r = torch.zeros(2, 2, 2, 4, 4)    # (C, L, heads, N, N) = R_A
    r[0, 0] = 1.0
    r[0, 0, 1, 2, 3] = -1.0           # block 0 head 1: (2,3) negative
    r[0, 1, 0] = 1.0
    r[0, 1, 1, :, 2] = 4.0
    r[0, 1, 1, 0, 1] = -8.0
    return FakeViT(attention, w, r)


def explain(name, target, **params):
    model = fake_model()
    maps = xai_bench.get_method(name, **params)(model, torch.zeros(1, 3, 2, 2),
                                                torch.tensor([target]))
    return maps[0].flatten()  # tokens in row-major order


def test_rollout_and_finatt_known_answers():
    # Block 1's mean-head attention M1 has rows 0.5 e0 + 0.5 e1; (M1 + I)/2 has rows
    # .75e0+.25e1, .25e0+.75e1, .25e0+.25e1+.5e2, .25e0+.25e1+.5e3: column means below.
    expected_last = torch.tensor([0.375, 0.375, 0.125, 0.125])
    torch.testing.assert_close(explain("rollout", 0), expected_last)  # start_layer=1 (default)
    torch.testing.assert_close(explain("rollout", 0, start_layer=1), expected_last)
    # With block 0 (rows e3; (M0 + I)/2 has rows .5e_i + .5e3, row 3 = e3) the product
    # (later block on the left) has rows .375e0+.125e1+.5e3, .125e0+.375e1+.5e3,
    # .125e0+.125e1+.25e2+.5e3, .125e0+.125e1+.75e3.
    torch.testing.assert_close(explain("rollout", 0, start_layer=0),
                               torch.tensor([0.1875, 0.1875, 0.0625, 0.5625]))
    torch.testing.assert_close(explain("rollout", 1, start_layer=0),
                               torch.tensor([0.1875, 0.1875, 0.0625, 0.5625]))  # agnostic
    torch.testing.assert_close(explain("finatt", 0), torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_gradsam_known_answer():
    # block 0: A rows e3 ⊙ ReLU(W) (rows 0, 1 zero at column 3) → readout 0.5 e3 in both heads;
    # block 1: head 0 rows e0 ⊙ 4, head 1 ⊙ ReLU(-2) = 0 → mean over heads 2 e0.
    # mean over blocks: (0.5 e3 + 2 e0) / 2.
    torch.testing.assert_close(explain("gradsam", 0), torch.tensor([1.0, 0.0, 0.0, 0.25]))


def test_gradcam_known_answer():
    # last block: a_0 = e0, a_1 = e1; class 0: w_0 = mean(column of 4s) = 1, w_1 = -2
    # → ReLU((1·e0 - 2·e1) / 2); class 1: w_0 = -1, w_1 = mean(12·I) = 3
    # → ReLU((-e0 + 3e1) / 2)
    torch.testing.assert_close(explain("gradcam", 0), torch.tensor([0.5, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(explain("gradcam", 1), torch.tensor([0.0, 1.5, 0.0, 0.0]))


def test_chefer_lrp_and_plrp_known_answers():
    # Ā_1 = mean_h (W ⊙ R)⁺: head 0 column 0 = 4·1, head 1 only (0,1) = (-2)(-8) = 16
    # → rows 2e0 (+ 8e1 in row 0). C = I + Ā_1 has column means (9/4, 9/4, 1/4, 1/4).
    torch.testing.assert_close(explain("chefer_lrp", 0, include_identity=True),
                               torch.tensor([2.25, 2.25, 0.25, 0.25]))
    # I + Ā_0 rows [2,1,1,0], [1,2,1,0], [1,1,2,.5], [1,1,1,2]; (I + Ā_1)(I + Ā_0) rows
    # [14,19,11,0], [5,4,3,0], [5,3,4,.5], [5,3,3,2] (no row normalisation).
    torch.testing.assert_close(explain("chefer_lrp", 0, start_layer=0, include_identity=True),
                               torch.tensor([7.25, 7.25, 5.25, 0.625]))
    # by default the identity's direct path (readout 1/N = 1/4 per token) is left out
    torch.testing.assert_close(explain("chefer_lrp", 0), torch.tensor([2.0, 2.0, 0.0, 0.0]))
    torch.testing.assert_close(explain("chefer_lrp", 0, start_layer=0),
                               torch.tensor([7.0, 7.0, 5.0, 0.375]))
    # pLRP: last block R_A⁺, mean over heads (ones and column 2 = 4) → readout
    torch.testing.assert_close(explain("plrp", 0), torch.tensor([0.5, 0.5, 2.5, 0.5]))


def test_lrp_relevance_is_conserved():
    """α=1, β=0: the one-hot's unit relevance reaches the input tokens (every rule conserves
    where some contribution is positive: true for a random model, while a trained one can have
    units without any, whose relevance α=1, β=0 drops); each block's attention matrix receives
    half of its attention branch's share (≤ 1/2)."""
    from xai_bench.methods.lrp import attention_relevance

    model = xai_bench.get_model("vit_nano").double().eval()
    x, t = batch(model, n=3)
    token_relevance = []
    relprop = model.relprop
    model.relprop = lambda r, alpha=1.0, rules="chefer": token_relevance.append(
        relprop(r, alpha, rules))
    relevances, grads = attention_relevance(model, x, t, with_gradients=False)
    assert all(g is None for g in grads)
    torch.testing.assert_close(token_relevance[0].sum((1, 2)), torch.ones(3, dtype=x.dtype))
    for r in relevances:
        total = r.sum((1, 2, 3))
        assert (total > 0).all() and (total <= 0.5 + 1e-9).all(), total
    assert all(blk.attn.attention_relevance is None for blk in model.blocks)  # not kept
    # the relevance pass may stop below the lowest block asked for: same relevances
    model.relprop = relprop
    for wanted in ([3], [1, 2, 3]):
        partial, _ = attention_relevance(model, x, t, with_gradients=False, blocks=wanted)
        for i in range(4):
            if i in wanted:
                torch.testing.assert_close(partial[i], relevances[i])
            else:
                assert partial[i] is None
    assert "relprop" not in model.blocks[0].__dict__  # the early stop is undone
    # pLRP is the readout of the last block's clamped relevance, under the rules it names
    for rules in ("chefer", "lrp"):
        if rules == "lrp":
            relevances, _ = attention_relevance(model, x, t, with_gradients=False, rules=rules)
        last = relevances[-1].clamp(min=0).mean(1).mean(1).reshape(3, 1, *model.token_grid)
        expected = F.interpolate(last, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        torch.testing.assert_close(xai_bench.get_method("plrp", rules=rules)(model, x, t),
                                   expected)
    assert xai_bench.get_method("plrp").params == {"rules": "lrp"}
    with pytest.raises(ValueError, match="'rules' of method 'plrp' must be one of"):
        xai_bench.get_method("plrp", rules="z")


# ----------------------------------------------------------------------------- baselines


def test_baselines():
    x = torch.rand(4, 6, 16, 24)
    t = torch.zeros(4, dtype=torch.long)
    rnd = xai_bench.get_method("random")(None, x, t)
    assert rnd.shape == (4, 16, 24) and rnd.dtype == x.dtype
    assert 0 <= rnd.min() and rnd.max() < 1 and abs(rnd.mean().item() - 0.5) < 0.05
    assert not torch.equal(rnd[0], rnd[1])
    assert torch.equal(rnd[2:3], xai_bench.get_method("random")(None, x[2:3], t[:1]))
    assert torch.equal(rnd, xai_bench.get_method("random")(None, x.clone(), t))  # deterministic
    assert not torch.equal(rnd, xai_bench.get_method("random", seed=1)(None, x, t))
    x64 = x.double()
    assert xai_bench.get_method("random")(None, x64, t).dtype == torch.float64
    assert torch.equal(xai_bench.get_method("uniform")(None, x, t), torch.ones(4, 16, 24))
    centre = xai_bench.get_method("centre", sigma=0.2)(None, x, t)
    assert torch.equal(centre[0], centre[3])
    assert torch.isclose(centre[0, 7:9, 11:13].min(), centre.max()) and centre.max() < 1
    assert torch.isclose(centre[0, 0, 0], centre.min())
    wide = xai_bench.get_method("centre", sigma=0.5)(None, x, t)
    assert wide[0, 0, 0] > centre[0, 0, 0]


# ----------------------------------------------------------------------------- sanity check


def _rank_correlation(a, b):
    if torch.equal(a, b):
        return 1.0
    if a.min() == a.max() or b.min() == b.max():
        return 0.0  # a constant map has no ranking: uncorrelated
    return float(spearmanr(a.flatten().double().numpy(), b.flatten().double().numpy()).statistic)


#: RISE's reference normalisation (by N·p1) keeps the masks' coverage, which does not depend on
#: the model, in every map: on this toy task the conventional model's maps barely change when
#: its weights are randomised (checked below); normalised by the coverage they do
SANITY = {"rise": dict(normalise="coverage")}


def test_rise_reference_normalisation_keeps_the_model_independent_coverage(trained):
    model = trained["conv"]
    torch.manual_seed(1234)
    reinit = xai_bench.get_model(model.name, **TINY).eval()
    x, t = batch(model, n=3, seed=5)
    rho = {}
    for normalise in ("p1", "coverage"):
        m = method("rise", normalise=normalise)
        before, after = m(model, x, t), m(reinit, x, t)
        rho[normalise] = sum(_rank_correlation(before[i], after[i]) for i in range(3)) / 3
    assert rho["p1"] > 0.9 > rho["coverage"], rho


def test_model_parameter_randomisation(trained):
    """Adebayo et al.: re-initialising the weights must change the maps of every
    model-dependent method (mean Spearman rank correlation < 0.9 between the trained and the
    re-initialised model's maps), and leave the model-independent baselines unchanged."""
    report = []
    for family, model in trained.items():
        torch.manual_seed(1234)
        reinit = xai_bench.get_model(model.name, **TINY).eval()
        x, t = batch(model, n=3, seed=5)
        for name in ALL:
            m = method(name, **SANITY.get(name, {}))
            if not m.applies_to(model):
                continue
            before, after = m(model, x, t), m(reinit, x, t)
            if name in BASELINES:
                assert torch.equal(before, after), name
                continue
            rho = sum(_rank_correlation(before[i], after[i]) for i in range(3)) / 3
            report.append((f"{model.name}/{name}", rho))
    print("\nSpearman rank correlation of maps, trained vs re-initialised weights:")
    for key, rho in report:
        print(f"  {key:28s} {rho:+.3f}")
    failed = [(k, round(r, 3)) for k, r in report if not r < 0.9]
    assert not failed, f"maps barely change when the weights are randomised: {failed}"
