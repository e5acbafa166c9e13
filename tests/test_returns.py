"""GAE and λ-returns (``metarl.kernels.returns``): every backend equals a plain Python double
loop and the torch reference; gradients (values, rewards, last_value, γ, λ) equal the
reference's autograd; gradcheck in float64; bad inputs raise naming the argument.

Tolerances (float32): kernels vs reference, forward: exact in practice (same operation order,
no FMA), checked to ``atol = rtol = 1e-6``; vs the float64 Python loop ``1e-5``; gradients
``1e-5`` (the γ and λ gradients are sums over T, accumulated in another order than autograd's).
"""
import pytest
import torch
from conftest import CPU_BACKENDS

from metarl.kernels import returns as R
from metarl.kernels.returns import gae, gae_reference, lambda_returns

KERNEL_BACKENDS = [b for b in CPU_BACKENDS if b != "torch"]
FWD_TOL = {"atol": 1e-6, "rtol": 1e-6}
LOOP_TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-5}

# T: 1 (only the bootstrap step), 7 (odd), 33 (odd, past a power of two)
STEPS = [1, 7, 33]
# N: 1 (one env), 5 (odd, under a Triton block of 128), 130 (two Triton blocks, the second partial)
ENVS = [1, 5, 130]


def python_gae(rewards, values, dones, last_value, gamma, lam):
    """The recursion as a plain Python double loop in float64 (the ground truth)."""
    t_len, n = len(rewards), len(rewards[0])
    adv = [[0.0] * n for _ in range(t_len)]
    for i in range(n):
        a, v_next = 0.0, last_value[i]
        for t in reversed(range(t_len)):
            nd = 0.0 if dones[t][i] else 1.0
            a = rewards[t][i] + gamma[i] * v_next * nd - values[t][i] + gamma[i] * lam[i] * nd * a
            adv[t][i] = a
            v_next = values[t][i]
    ret = [[adv[t][i] + values[t][i] for i in range(n)] for t in range(t_len)]
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


def rollout(t_len, n, p_done=0.3, seed=0, dtype=torch.float32):
    """Random rollout; dones at the first and last step of some envs, whatever p_done."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(t_len, n, generator=g, dtype=dtype)
    values = torch.randn(t_len, n, generator=g, dtype=dtype)
    dones = torch.rand(t_len, n, generator=g) < p_done
    dones[0, ::3] = True
    dones[-1, 1::3] = True
    last_value = torch.randn(n, generator=g, dtype=dtype)
    return rewards, values, dones, last_value


def coef(kind, n, value, seed):
    """γ or λ as a python float, a 0-dim tensor, or a per-env tensor in [0, 1]."""
    if kind == "float":
        return value
    if kind == "scalar":
        return torch.tensor(value)
    return torch.rand(n, generator=torch.Generator().manual_seed(seed))


def per_env(x, n):
    return [float(x)] * n if not isinstance(x, torch.Tensor) else x.expand(n).tolist()


def check_against_loop_and_reference(backend, rewards, values, dones, last_value, gamma, lam):
    n = rewards.shape[1]
    adv, ret = gae(rewards, values, dones, last_value, gamma, lam, backend=backend)
    assert adv.dtype == ret.dtype == torch.float32 and adv.shape == ret.shape == rewards.shape
    ref_adv, ref_ret = gae_reference(rewards, values, dones, last_value, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, **FWD_TOL)
    torch.testing.assert_close(ret, ref_ret, **FWD_TOL)
    loop_adv, loop_ret = python_gae(rewards.tolist(), values.tolist(), dones.tolist(), last_value.tolist(),
                                    per_env(gamma, n), per_env(lam, n))
    torch.testing.assert_close(adv.double(), loop_adv, **LOOP_TOL)
    torch.testing.assert_close(ret.double(), loop_ret, **LOOP_TOL)
    torch.testing.assert_close(lambda_returns(rewards, values, dones, last_value, gamma, lam, backend=backend), ret,
                               atol=0, rtol=0)


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("t_len", STEPS)
@pytest.mark.parametrize("n", ENVS)
@pytest.mark.parametrize("kind", ["float", "scalar", "per_env"])
def test_matches_loop_and_reference(backend, t_len, n, kind):
    data = rollout(t_len, n, seed=t_len * 1000 + n)
    check_against_loop_and_reference(backend, *data, coef(kind, n, 0.97, 1), coef(kind, n, 0.9, 2))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dones_at_every_position(backend):
    """Env i < T has its one done at step i; env T has none; env T + 1 is done at every step."""
    t_len = 7
    n = t_len + 2
    rewards, values, _, last_value = rollout(t_len, n, seed=3)
    dones = torch.zeros(t_len, n, dtype=torch.bool)
    for i in range(t_len):
        dones[i, i] = True
    dones[:, t_len + 1] = True
    check_against_loop_and_reference(backend, rewards, values, dones, last_value, 0.9, 0.8)
    adv, _ = gae(rewards, values, dones, last_value, 0.9, 0.8, backend=backend)
    # all-done env: A_t = r_t - V_t (no bootstrapping at all)
    torch.testing.assert_close(adv[:, t_len + 1], rewards[:, t_len + 1] - values[:, t_len + 1], atol=0, rtol=0)


# (γ, λ): one-step TD errors' limits and Monte-Carlo: γ = 0 (A = r - V), λ = 0 (TD(0)), λ = 1 (MC),
# both 1, both 0
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("gamma,lam", [(0.0, 0.95), (0.99, 0.0), (0.99, 1.0), (1.0, 1.0), (0.0, 0.0)])
def test_edge_coefficients(backend, gamma, lam):
    rewards, values, dones, last_value = rollout(33, 5, seed=4)
    check_against_loop_and_reference(backend, rewards, values, dones, last_value, gamma, lam)
    adv, ret = gae(rewards, values, dones, last_value, gamma, lam, backend=backend)
    if gamma == 0.0:
        torch.testing.assert_close(adv, rewards - values, atol=0, rtol=0)
    if lam == 0.0:   # TD(0): delta_t
        v_next = torch.cat([values[1:], last_value[None]]) * (~dones)
        torch.testing.assert_close(adv, rewards + gamma * v_next - values, **FWD_TOL)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_outputs_fully_written(backend):
    """The launchers write every element of outputs poisoned with NaN (forward and backward)."""
    t_len, n = 7, 130
    rewards, values, dones, last_value = rollout(t_len, n, seed=5)
    gamma, lam = torch.rand(n), torch.rand(n)
    adv, ret = torch.full_like(rewards, float("nan")), torch.full_like(rewards, float("nan"))
    R._FORWARD[backend](adv, ret, rewards, values, dones, last_value, gamma, lam)
    ref_adv, ref_ret = gae_reference(rewards, values, dones, last_value, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, **FWD_TOL)
    torch.testing.assert_close(ret, ref_ret, **FWD_TOL)
    grads = (torch.full_like(rewards, float("nan")), torch.full_like(rewards, float("nan")),
             *(torch.full((n,), float("nan")) for _ in range(3)))
    R._BACKWARD[backend](grads, torch.randn(t_len, n), torch.randn(t_len, n), values, dones, last_value, gamma,
                         lam, adv)
    assert all(torch.isfinite(g).all() for g in grads)


def test_numba_parallel_path_and_non_contiguous():
    """N past the one-thread threshold (several 256-env blocks, the last partial), inputs
    given as transposed (non-contiguous) views."""
    t_len, n = 5, 2049
    rewards, values, dones, last_value = (t.T.contiguous().T if t.dim() == 2 else t
                                          for t in rollout(t_len, n, seed=6))
    assert not rewards.is_contiguous()
    gamma = torch.rand(n)
    adv, ret = gae(rewards, values, dones, last_value, gamma, 0.95, backend="numba")
    ref = gae_reference(rewards, values, dones, last_value, gamma, 0.95)
    torch.testing.assert_close(adv, ref[0], **FWD_TOL)
    torch.testing.assert_close(ret, ref[1], **FWD_TOL)


def test_default_backend_on_cpu_is_numba(monkeypatch):
    used = []
    monkeypatch.setitem(R._FORWARD, "numba", lambda *a: (used.append("numba"), R._forward_numba(*a)))
    rewards, values, dones, last_value = rollout(3, 4)
    gae(rewards, values, dones, last_value, 0.9, 0.9)
    assert used == ["numba"]


def test_docstring_example():
    import doctest

    result = doctest.testmod(R)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- gradients
def grads_of(backend, rewards, values, dones, last_value, gamma, lam, g_adv, g_ret):
    leaves = [x.detach().clone().requires_grad_() for x in (rewards, values, last_value, gamma, lam)]
    r, v, lv, g, lm = leaves
    adv, ret = gae(r, v, dones, lv, g, lm, backend=backend)
    loss = (adv * g_adv).sum() if g_ret is None else (adv * g_adv + ret * g_ret).sum()
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("t_len,n", [(1, 1), (7, 5), (33, 130)])
@pytest.mark.parametrize("kind", ["scalar", "per_env"])
def test_grads_match_reference(backend, t_len, n, kind):
    data = rollout(t_len, n, seed=7 + n)
    gamma = coef(kind, n, 0.97, 8).clamp(0.05, 0.99)
    lam = coef(kind, n, 0.9, 9)
    gen = torch.Generator().manual_seed(10)
    g_adv, g_ret = torch.randn(t_len, n, generator=gen), torch.randn(t_len, n, generator=gen)
    got = grads_of(backend, *data, gamma, lam, g_adv, g_ret)
    want = grads_of("torch", *data, gamma, lam, g_adv, g_ret)
    for name, a, b in zip(("rewards", "values", "last_value", "gamma", "lam"), got, want):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, **GRAD_TOL, msg=lambda m, name=name: f"d/d{name}: {m}")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_grads_through_one_output(backend):
    """Only the advantages used (the returns' upstream gradient is None), and λ-returns alone."""
    t_len, n = 7, 5
    data = rollout(t_len, n, seed=11)
    gamma, lam = torch.rand(n) * 0.9 + 0.05, torch.rand(n)
    g_adv = torch.randn(t_len, n)
    got = grads_of(backend, *data, gamma, lam, g_adv, None)
    for a, b in zip(got, grads_of("torch", *data, gamma, lam, g_adv, None)):
        torch.testing.assert_close(a, b, **GRAD_TOL)
    g = gamma.clone().requires_grad_()
    lambda_returns(*data, g, 0.9, backend=backend).sum().backward()
    g_ref = gamma.clone().requires_grad_()
    lambda_returns(*data, g_ref, 0.9, backend="torch").sum().backward()
    torch.testing.assert_close(g.grad, g_ref.grad, **GRAD_TOL)


@pytest.mark.parametrize("backend", ["torch", "numba"])   # the float64 paths (Triton is float32 only)
def test_gradcheck_float64(backend):
    t_len, n = 6, 4
    rewards, values, dones, last_value = rollout(t_len, n, seed=12, dtype=torch.float64)
    gamma = (torch.rand(n, dtype=torch.float64) * 0.8 + 0.1)
    lam = (torch.rand(n, dtype=torch.float64) * 0.8 + 0.1)
    inputs = [x.clone().requires_grad_() for x in (rewards, values, last_value, gamma, lam)]

    def fn(r, v, lv, g, lm):
        return gae(r, v, dones, lv, g, lm, backend=backend)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_meta_gradient_through_an_inner_update(backend):
    """The meta-gradient use (Xu et al. 2018): λ-returns G(γ, λ) as the targets of an inner
    update θ' = θ − α ∇θ (G − V_θ)², then dJ(θ')/d(γ, λ). Needs only the first-order backward."""
    t_len, n, feats = 7, 5, 3
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(t_len, n, feats, generator=gen)
    rewards, _, dones, last_value = rollout(t_len, n, seed=14)
    theta0 = torch.randn(feats, generator=gen)

    def meta_grads(b):
        theta = theta0.clone().requires_grad_()
        gamma = torch.full((n,), 0.9, requires_grad=True)
        lam = torch.tensor(0.8, requires_grad=True)
        values = x @ theta
        targets = lambda_returns(rewards, values.detach(), dones, last_value, gamma, lam, backend=b)
        (g_theta,) = torch.autograd.grad(((targets - values) ** 2).mean(), theta, create_graph=True)
        theta_new = theta - 0.1 * g_theta
        outer = ((x @ theta_new - rewards) ** 2).mean()
        return torch.autograd.grad(outer, (gamma, lam))

    for a, b in zip(meta_grads(backend), meta_grads("torch")):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, **GRAD_TOL)


def test_kernel_backward_is_first_order_only():
    """Double backward through a kernel backend raises (use backend='torch' for that)."""
    rewards, values, dones, last_value = rollout(3, 2)
    g = torch.full((2,), 0.9, requires_grad=True)
    adv, _ = gae(rewards, values, dones, last_value, g, 0.9, backend="numba")
    (dg,) = torch.autograd.grad(adv.sum(), g, create_graph=True)
    with pytest.raises(RuntimeError):
        dg.sum().backward()


# ----------------------------------------------------------------------------- bad inputs
def _bad_cases():
    t_len, n = 4, 3
    r, v, d, lv = rollout(t_len, n)
    nan = r.clone()
    nan[1, 2] = float("nan")
    ok = {"rewards": r, "values": v, "dones": d, "last_value": lv, "gamma": 0.9, "lam": 0.95}
    cases = [
        ({"rewards": r[0]}, ValueError, "rewards must be \\[T, N\\]"),
        ({"rewards": r[:0]}, ValueError, "T >= 1"),
        ({"rewards": r.double()}, TypeError, "values must be torch.float64"),
        ({"rewards": r.long()}, TypeError, "rewards must be float32"),
        ({"values": v[:, :2]}, ValueError, "values must have shape"),
        ({"dones": d.float()}, TypeError, "dones must be torch.bool"),
        ({"last_value": lv[:2]}, ValueError, "last_value must have shape"),
        ({"gamma": 1.5}, ValueError, "gamma must be in \\[0, 1\\]"),
        ({"lam": -0.1}, ValueError, "lam must be in \\[0, 1\\]"),
        ({"gamma": float("nan")}, ValueError, "gamma must be in"),
        ({"gamma": torch.tensor([0.5, 1.01, 0.3])}, ValueError, "gamma must be in \\[0, 1\\]"),
        ({"lam": torch.tensor([0.5, float("nan"), 0.3])}, ValueError, "lam must be in \\[0, 1\\]"),
        ({"lam": torch.full((2,), 0.5)}, ValueError, "lam must be a float or a tensor of shape"),
        ({"gamma": torch.full((3,), 0.5, dtype=torch.float64)}, TypeError, "gamma must be torch.float32"),
        ({"gamma": "0.9"}, TypeError, "gamma must be a float"),
        ({"gamma": True}, TypeError, "gamma must be a float"),
        ({"rewards": nan}, ValueError, "rewards contains NaN"),
        ({"values": nan}, ValueError, "values contains NaN"),
        ({"last_value": torch.tensor([0.0, float("nan"), 0.0])}, ValueError, "last_value contains NaN"),
        ({"backend": "cuda-magic"}, ValueError, "backend must be one of"),
        ({"rewards": r.double(), "values": v.double(), "last_value": lv.double(), "backend": "triton"},
         TypeError, "backend='triton' needs float32"),
    ]
    return [({**ok, **change}, exc, match) for change, exc, match in cases]


@pytest.mark.parametrize("kwargs,exc,match", _bad_cases())
def test_bad_inputs_raise(kwargs, exc, match):
    kwargs = dict(kwargs)
    backend = kwargs.pop("backend", None)
    with pytest.raises(exc, match=match):
        gae(**kwargs, backend=backend)


def test_float64_on_the_torch_and_numba_backends():
    rewards, values, dones, last_value = rollout(7, 5, dtype=torch.float64)
    gamma = torch.rand(5, dtype=torch.float64)
    want = python_gae(rewards.tolist(), values.tolist(), dones.tolist(), last_value.tolist(), gamma.tolist(),
                      [0.9] * 5)
    for backend in ("torch", "numba", None):
        adv, ret = gae(rewards, values, dones, last_value, gamma, 0.9, backend=backend)
        assert adv.dtype == torch.float64
        torch.testing.assert_close(adv, want[0], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(ret, want[1], atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_triton_cuda_matches_reference():
    t_len, n = 128, 65536
    rewards, values, dones, last_value = (x.cuda() for x in rollout(t_len, n, p_done=0.02, seed=13))
    gamma = (torch.rand(n) * 0.9 + 0.05).cuda()
    lam = torch.rand(n).cuda()
    adv, ret = gae(rewards, values, dones, last_value, gamma, lam)   # default: Triton on CUDA
    ref_adv, ref_ret = gae_reference(rewards, values, dones, last_value, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, ref_ret, atol=1e-5, rtol=1e-5)
    g_adv, g_ret = torch.randn_like(rewards), torch.randn_like(rewards)
    got = grads_of("triton", rewards, values, dones, last_value, gamma, lam, g_adv, g_ret)
    want = grads_of("torch", rewards, values, dones, last_value, gamma, lam, g_adv, g_ret)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
