"""The recurrent-policy kernels on a CUDA GPU (Triton, compiled) against the torch
reference on the same device. Skipped without a GPU.

Tolerances: tl.dot in fp32 may use a different summation order than cuBLAS, so outputs
agree to float32 tolerance; categorical actions (Gumbel-max on the same uniforms) must agree
exactly except on near-ties, which the fixed seed avoids.
"""
import gymnasium as gym
import pytest
import torch

import metarl.nn
from metarl.kernels import lstm as K

pytestmark = pytest.mark.cuda
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batch,hidden", [(1, 13), (64, 128), (1031, 256)])
def test_lstm_cell_triton_matches_reference(batch, hidden):
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    isz = 19
    x, h, c = (torch.randn(batch, d, device=dev, generator=g) for d in (isz, hidden, hidden))
    w_ih = torch.randn(4 * hidden, isz, device=dev, generator=g) * 0.2
    w_hh = torch.randn(4 * hidden, hidden, device=dev, generator=g) * 0.2
    b_ih, b_hh = (torch.randn(4 * hidden, device=dev, generator=g) for _ in range(2))
    reset = torch.rand(batch, device=dev, generator=g) < 0.3
    ref = K.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, reset, backend="torch")
    got = K.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, reset, backend="triton")
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **TOL)


def test_lstm_module_on_gpu_matches_torch():
    ref = torch.nn.LSTM(16, 64, 2).cuda()
    mine = metarl.nn.LSTM(16, 64, 2).cuda()
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(12, 33, 16, device="cuda")
    with torch.no_grad():
        out_r, (h_r, c_r) = ref(x)
        out_m, (h_m, c_m) = mine(x)
    torch.testing.assert_close(out_m, out_r, **TOL)
    torch.testing.assert_close(h_m, h_r, **TOL)


@pytest.mark.parametrize("batch", [1, 64, 4099])
def test_actor_critic_step_triton_matches_reference(batch):
    torch.manual_seed(0)
    policy = metarl.nn.RecurrentActorCritic(16, gym.spaces.Discrete(4), 128).cuda()
    obs = torch.randn(batch, 16, device="cuda")
    state = (torch.randn(batch, 128, device="cuda"), torch.randn(batch, 128, device="cuda"))
    reset = torch.rand(batch, device="cuda") < 0.3
    outs = {}
    for backend in ("torch", "triton"):
        policy.backend = backend
        g = torch.Generator(device="cuda").manual_seed(1)
        outs[backend] = policy.step(obs, state, reset, generator=g)
    (a_r, lp_r, v_r, (h_r, c_r)), (a_t, lp_t, v_t, (h_t, c_t)) = outs["torch"], outs["triton"]
    assert (a_r == a_t).float().mean() > 0.999
    same = a_r == a_t
    torch.testing.assert_close(lp_t[same], lp_r[same], **TOL)
    torch.testing.assert_close(v_t, v_r, **TOL)
    torch.testing.assert_close(h_t, h_r, **TOL)
    torch.testing.assert_close(c_t, c_r, **TOL)
