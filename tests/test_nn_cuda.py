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


# reduced precision: tf32 products carry ~1e-3 relative error, bf16 operands ~4e-3; through one
# LSTM step with |z| ~ 1 that is ~1e-2 absolute at most
LOW_TOL = {"tf32": {"atol": 1e-2, "rtol": 1e-2}, "bf16": {"atol": 3e-2, "rtol": 3e-2}}


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("batch", [7, 4099])
def test_actor_critic_step_reduced_precision(precision, batch):
    """tf32 / bf16 tensor-core gate GEMM against the fp32 reference of the same (rounded) weights;
    with bf16-exact inputs and weights the bf16 products are exact, so that case is tight."""
    torch.manual_seed(0)
    policy = metarl.nn.RecurrentActorCritic(16, gym.spaces.Discrete(4), 256, precision=precision).cuda()
    packed = policy.packed()
    obs = torch.randn(batch, 16, device="cuda")
    h, c = torch.randn(batch, 256, device="cuda"), torch.randn(batch, 256, device="cuda")
    reset = torch.rand(batch, device="cuda") < 0.3
    noise = torch.rand(batch, 4, device="cuda")
    from metarl.kernels.actor_critic import actor_critic_step, actor_critic_step_reference
    got = actor_critic_step(obs, h, c, reset, packed, noise, backend="triton")
    want = actor_critic_step_reference(obs, h, c, reset, *packed.params[:8], noise)
    same = got[0] == want[0]   # rounding flips the Gumbel-max on near-ties: log_prob of another action
    assert same.float().mean() > 0.99
    torch.testing.assert_close(got[1][same], want[1][same], **LOW_TOL[precision])
    for g, w in zip(got[2:], want[2:]):
        torch.testing.assert_close(g, w, **LOW_TOL[precision])
    if precision == "bf16":
        assert packed.w_dot.dtype == torch.bfloat16
        o16, h16 = obs.bfloat16().float(), h.bfloat16().float()
        got = actor_critic_step(o16, h16, c, reset, packed, noise, backend="triton")
        want = actor_critic_step_reference(o16, h16, c, reset, *packed.params[:8], noise)
        assert torch.equal(got[0], want[0])
        for g, w in zip(got[1:], want[1:]):
            torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_actor_critic_split_kernel_on_gpu(precision):
    """The split kernels (hidden units across programs; the last program of a row block sums the
    heads' partials) at the benchmark's size, against the reference, over many launches: the
    cross-program hand-off must give the same bits every time and leave its counters zero."""
    from metarl.kernels import actor_critic as ac
    torch.manual_seed(0)
    policy = metarl.nn.RecurrentActorCritic(16, gym.spaces.Discrete(4), 256, precision=precision).cuda()
    packed = policy.packed()
    bsz = 4099
    obs = torch.randn(bsz, 16, device="cuda")
    h, c = torch.randn(bsz, 256, device="cuda"), torch.randn(bsz, 256, device="cuda")
    reset = torch.rand(bsz, device="cuda") < 0.3
    noise = torch.rand(bsz, 4, device="cuda")
    want = ac.actor_critic_step_reference(obs, h, c, reset, *packed.params[:8], noise)
    tol = TOL if precision == "fp32" else LOW_TOL[precision]
    for tiles in (ac.Tiles("split", 64, 64, 32, 4, 2), ac.Tiles("split", 128, 32, 64, 8, 3),
                  ac.Tiles("split_cat", 64, 64, 32, 4, 3), ac.Tiles("split_cat", 128, 32, 32, 8, 2)):
        out = [torch.empty_like(t) for t in want]
        ac._launch_triton(obs, h, c, reset, packed, noise, out, tiles=tiles)
        first = [t.clone() for t in out]
        same = out[0] == want[0]
        assert same.float().mean() > 0.99
        torch.testing.assert_close(out[1][same], want[1][same], **tol)
        for g, w in zip(out[2:], want[2:]):
            torch.testing.assert_close(g, w, **tol)
        for _ in range(50):
            ac._launch_triton(obs, h, c, reset, packed, noise, out, tiles=tiles)
        torch.cuda.synchronize()
        assert all(torch.equal(x, y) for x, y in zip(first, out))
    assert all(int(count.abs().sum()) == 0 for _, count in ac._WORKSPACE.values())


def test_lstm_bf16_weights_on_gpu():
    """bf16 weights with fp32 accumulation: equal to torch's LSTM on the bf16-rounded weights
    and inputs (products exact, only the summation order differs)."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(24, 96).cuda()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.bfloat16().float())
    mine = metarl.nn.LSTM(24, 96).cuda()
    mine.load_state_dict(ref.state_dict())
    mine = mine.to(torch.bfloat16)
    x = torch.randn(9, 70, 24, device="cuda").bfloat16().float()
    with torch.no_grad():
        out_r, (h_r, c_r) = ref(x)
        out_m, (h_m, c_m) = mine(x.bfloat16())
    # h is re-rounded to bf16 as the next step's tl.dot operand: bf16-level agreement
    torch.testing.assert_close(out_m.float(), out_r, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(c_m.float(), c_r, atol=3e-2, rtol=3e-2)
