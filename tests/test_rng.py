"""The counter-based RNG: bit-identical across torch, Numba, C++ and Triton; uniform."""
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from numba import njit
from scipy import stats

from metarl.kernels import rng

# sizes: 1, odd, just past a Triton block
SIZES = [1, 37, 1025]


def _inputs(n):
    g = torch.Generator().manual_seed(n)
    key = rng.make_keys(1234, n)
    counter = torch.randint(0, 2**40, (n,), generator=g)
    return key, counter


@njit
def _uniform_nb_batch(key, counter, lane, out):
    for i in range(key.shape[0]):
        out[i] = rng.uniform_nb(key[i], counter[i], lane)


def test_mix32_matches_python_ints():
    xs = [0, 1, 2**31, 2**32 - 1, 123456789]

    def mix(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    got = rng.mix32_reference(torch.tensor(xs)).tolist()
    assert got == [mix(x) for x in xs]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("lane", [0, 3])
def test_numba_cpp_triton_equal_reference(n, lane):
    key, counter = _inputs(n)
    ref = rng.uniform_reference(key, counter, lane)
    out = np.full(n, np.nan, dtype=np.float32)
    _uniform_nb_batch(key.numpy(), counter.numpy(), lane, out)
    np.testing.assert_array_equal(out, ref.numpy())

    from metarl import _C
    out_c = np.full(n, np.nan, dtype=np.float32)
    _C.uniform_into(key.numpy(), counter.numpy(), lane, out_c)
    np.testing.assert_array_equal(out_c, ref.numpy())

    pytest.importorskip("triton")
    out_t = torch.full((n,), float("nan"))
    _uniform_kernel[(triton_cdiv(n, 64),)](out_t, key, counter, n, LANE=lane, BLOCK=64)
    assert torch.equal(out_t, ref)


def triton_cdiv(a, b):
    return (a + b - 1) // b


from metarl.kernels._triton import constexpr, lazy_jit  # noqa: E402
from metarl.kernels.rng import uniform_tl  # noqa: E402

if TYPE_CHECKING:
    import triton.language as tl


@lazy_jit
def _uniform_kernel(out_ptr, key_ptr, counter_ptr, n, LANE: constexpr, BLOCK: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    u = uniform_tl(tl.load(key_ptr + offs, mask=m), tl.load(counter_ptr + offs, mask=m), LANE)
    tl.store(out_ptr + offs, u, mask=m)


def test_uniformity_and_independence():
    key = rng.make_keys(7, 20_000)
    counter = torch.zeros(20_000, dtype=torch.int64)
    u0 = rng.uniform_reference(key, counter, 0).double().numpy()
    u1 = rng.uniform_reference(key, counter + 1, 0).double().numpy()
    u2 = rng.uniform_reference(key, counter, 1).double().numpy()
    for u in (u0, u1, u2):
        assert stats.kstest(u, "uniform").pvalue > 1e-3
        assert u.min() >= 0 and u.max() < 1
    # across counters and lanes the streams are uncorrelated
    assert abs(np.corrcoef(u0, u1)[0, 1]) < 0.03
    assert abs(np.corrcoef(u0, u2)[0, 1]) < 0.03
    # a different seed gives different keys
    assert not torch.equal(rng.make_keys(7, 10), rng.make_keys(8, 10))
