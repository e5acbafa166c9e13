"""The vectorizable float32 sin/cos used by the CPU env kernels."""
import numpy as np
import pytest
import torch
from numba import njit

from metarl.kernels.envs._math import sincos_nb


@njit
def _sincos_batch(x, s, c):
    for i in range(x.shape[0]):
        s[i], c[i] = sincos_nb(x[i])


@pytest.mark.parametrize("lim", [np.pi / 4, 4.0, 100.0, 8192.0])
def test_sincos_close_to_float64(lim):
    x = np.linspace(-lim, lim, 200_001, dtype=np.float32)
    s = np.full_like(x, np.nan)
    c = np.full_like(x, np.nan)
    _sincos_batch(x, s, c)
    xd = x.astype(np.float64)
    # about one float32 ulp of a value in [-1, 1]
    assert np.abs(s - np.sin(xd)).max() < 1.2e-7
    assert np.abs(c - np.cos(xd)).max() < 1.2e-7


def test_sincos_matches_torch_to_an_ulp():
    x = torch.randn(100_000) * 3
    s = np.empty(100_000, np.float32)
    c = np.empty(100_000, np.float32)
    _sincos_batch(x.numpy(), s, c)
    torch.testing.assert_close(torch.from_numpy(s), torch.sin(x), atol=2.4e-7, rtol=0)
    torch.testing.assert_close(torch.from_numpy(c), torch.cos(x), atol=2.4e-7, rtol=0)
