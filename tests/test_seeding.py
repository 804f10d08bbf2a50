"""xai_bench.compute.seeding: the one seeding scheme (derived seeds, content seeds, CPU generators)."""

import hashlib

import numpy as np
import pytest
import torch

from xai_bench.compute.seeding import SEP, content_seed, cpu_generator, derive_seed, numpy_rng


def test_derive_seed_is_stable_63_bit_and_unambiguous():
    s = derive_seed("shapes", 0, "train")
    expected = int.from_bytes(hashlib.sha256(
        SEP.join(["'shapes'", "0", "'train'"]).encode()).digest()[:8], "little") & (2**63 - 1)
    assert s == expected and 0 <= s < 2**63
    assert derive_seed("shapes", 0, "train") == s  # deterministic
    seeds = {derive_seed(1), derive_seed("1"), derive_seed(1.0), derive_seed(True),
             derive_seed("a", "b"), derive_seed("a\x1fb"), derive_seed("ab"), derive_seed()}
    assert len(seeds) == 8
    # numbers of any library count as the same number
    assert derive_seed(np.int64(3), np.float32(0.5)) == derive_seed(3, 0.5)
    assert derive_seed(torch.tensor(3)) == derive_seed(3)


def test_content_seed_depends_on_bytes_dtype_shape_and_seed_only():
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert content_seed(x[1], 7) == content_seed(x[1].clone(), 7)
    assert content_seed(x[1], 7) == content_seed(x[1:2][0], 7)  # not the position in a batch
    assert content_seed(x[1].mT, 7) == content_seed(x[1].mT.contiguous(), 7)
    assert len({content_seed(x[i], 7) for i in range(4)}) == 4
    assert content_seed(x[1], 7) != content_seed(x[1], 8)
    assert content_seed(x[1], 7) != content_seed(x[1].double(), 7)
    assert content_seed(x[1], 7) != content_seed(x[1].reshape(3, 25), 7)
    assert 0 <= content_seed(x[1].bfloat16(), 0) < 2**63
    assert 0 <= content_seed(torch.zeros(0), 0) < 2**63
    if torch.cuda.is_available():
        assert content_seed(x[1].cuda(), 7) == content_seed(x[1], 7)


def test_generators_are_cpu_and_reproducible():
    g = cpu_generator(derive_seed("x", 1))
    assert g.device.type == "cpu"
    a = torch.rand(10, generator=g)
    assert torch.equal(a, torch.rand(10, generator=cpu_generator(derive_seed("x", 1))))
    assert not torch.equal(a, torch.rand(10, generator=cpu_generator(derive_seed("x", 2))))
    assert torch.equal(torch.rand(3, generator=cpu_generator(-1)),
                       torch.rand(3, generator=cpu_generator(2**64 - 1)))
    r = numpy_rng(5).random(4)
    np.testing.assert_array_equal(r, numpy_rng(5).random(4))
    np.testing.assert_array_equal(r, np.random.default_rng(5).random(4))


def test_synthetic_split_seeds_use_derive_seed_and_differ():
    from xai_bench.data.synthetic import split_seed

    assert split_seed(0, "train") == derive_seed("shapes", 0, "train")
    seeds = {split_seed(s, split) for s in range(5) for split in ("train", "test")}
    assert len(seeds) == 10


def test_seeded_methods_draw_the_same_numbers_on_every_device():
    import xai_bench
    from xai_bench.methods.vit_cx import mask_noise

    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    rnd = xai_bench.get_method("random", seed=4)(None, x, torch.zeros(2, dtype=torch.long))
    for b in range(2):
        g = cpu_generator(content_seed(x[b], 4))
        assert torch.equal(rnd[b], torch.rand((6, 6), generator=g))
    eps = mask_noise(123, 2, (3, 4, 4), 0.5, "cpu", torch.float32)
    expected = torch.randn((3, 4, 4), generator=cpu_generator(derive_seed(123, 2))) * 0.5
    assert torch.equal(eps, expected)
    shared = mask_noise(123, 5, (3, 4, 4), 0.5, "cpu", torch.float32, shared=True)
    g = cpu_generator(derive_seed(123, "shared"))
    assert torch.equal(shared, torch.randn((3, 4, 4), generator=g) * 0.5)
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CPU/GPU equality is checked on a GPU only")
    rnd_gpu = xai_bench.get_method("random", seed=4)(None, x.cuda(),
                                                      torch.zeros(2, dtype=torch.long).cuda())
    assert rnd_gpu.device.type == "cuda" and torch.equal(rnd_gpu.cpu(), rnd)
    eps_gpu = mask_noise(123, 2, (3, 4, 4), 0.5, "cuda", torch.float32)
    assert eps_gpu.device.type == "cuda" and torch.equal(eps_gpu.cpu(), eps)
