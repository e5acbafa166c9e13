"""The RL^2 input op: Numba equals the torch reference; outputs fully written."""
import pytest
import torch

from metarl.kernels.rl2_inputs import rl2_inputs, rl2_inputs_reference


# N: 1, odd, past the parallel threshold
@pytest.mark.parametrize("n", [1, 37, 2049])
@pytest.mark.parametrize("discrete", [True, False])
def test_numba_matches_reference(n, discrete):
    g = torch.Generator().manual_seed(n)
    obs = torch.randn(n, 3, generator=g)
    actions = torch.randint(0, 4, (n,), generator=g) if discrete else torch.randn(n, 4, generator=g)
    reward, done = torch.randn(n, generator=g), torch.rand(n, generator=g) < 0.5
    start = torch.rand(n, generator=g) < 0.3
    got = rl2_inputs(obs, actions, reward, done, start, 4, discrete)
    ref = rl2_inputs_reference(obs, actions, reward, done, start, 4, discrete)
    assert got.shape == (n, 3 + 4 + 2) and torch.equal(got, ref)
    assert torch.all(got[start, 3:] == 0)
