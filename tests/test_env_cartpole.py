"""CartPole-v1: parity with gymnasium's CartPoleEnv, determinism, spaces, backends."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import CPU_BACKENDS

import metarl

# CartPole also has a C++ kernel (metarl._C)
BACKENDS = CPU_BACKENDS + ["cpp"]
N = 37  # odd, not a power of two, spans more than one Triton block row
# float32 state vs gymnasium's float64: one step agrees to this tolerance
ATOL, RTOL = 1e-5, 1e-5


def _random_states(n, g):
    x = (torch.rand(n, generator=g) * 2 - 1) * 2.3
    theta = (torch.rand(n, generator=g) * 2 - 1) * 0.2
    vel = torch.randn(n, 2, generator=g)
    return torch.stack([x, vel[:, 0], theta, vel[:, 1]], 1)


def _gym_cartpole(tasks, i, state):
    e = gym.make("CartPole-v1").unwrapped
    e.reset(seed=0)
    for name in ("gravity", "masscart", "masspole", "length", "force_mag", "tau"):
        setattr(e, name, float(getattr(tasks, name)[i]))
    e.total_mass = e.masspole + e.masscart
    e.polemass_length = e.masspole * e.length
    e.state = state.astype(np.float64)
    return e


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_matches_gymnasium(backend):
    g = torch.Generator().manual_seed(0)
    env = metarl.make_vec("CartPole-v1", N, seed=0, backend=backend, autoreset_mode="disabled",
                          max_episode_steps=0)
    tasks = env.sample_tasks(N, generator=g)
    env.reset(seed=0, options={"tasks": tasks})
    for _ in range(5):
        state = _random_states(N, g)
        env.set_state(state)
        actions = torch.randint(0, 2, (N,), generator=g)
        obs, reward, terminated, truncated, _ = env.step(actions)
        for i in range(N):
            e = _gym_cartpole(tasks, i, state[i].double().numpy())
            o, r, te, tr, _ = e.step(int(actions[i]))
            np.testing.assert_allclose(obs[i].numpy(), o, atol=ATOL, rtol=RTOL)
            assert reward[i].item() == r
            assert bool(terminated[i]) == te
            assert not truncated[i]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_match_reference(backend):
    """Whole trajectories with same-step autoreset equal the torch reference."""
    def run(b):
        env = metarl.make_vec("CartPole-v1", N, seed=7, backend=b, autoreset_mode="same_step")
        env.reset(seed=7, options={"tasks": env.sample_tasks(N, generator=torch.Generator().manual_seed(1))})
        g = torch.Generator().manual_seed(2)
        out = []
        for _ in range(60):
            o, r, te, tr, info = env.step(torch.randint(0, 2, (N,), generator=g))
            out.append((o, r, te, tr, info["final_obs"], info["_final_obs"]))
        return out

    for got, ref in zip(run(backend), run("torch")):
        torch.testing.assert_close(got[0], ref[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[4], ref[4], atol=1e-4, rtol=1e-4)
        for a, b in zip(got[1:4] + got[5:], ref[1:4] + ref[5:]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_is_exact_across_backends(backend):
    env = metarl.make_vec("CartPole-v1", N, seed=11, backend=backend)
    ref = metarl.make_vec("CartPole-v1", N, seed=11, backend="torch")
    assert torch.equal(env.reset(seed=3)[0], ref.reset(seed=3)[0])


def test_determinism_and_seeds():
    def trajectory(seed):
        env = metarl.make_vec("CartPole-v1", 8, seed=seed)
        obs = [env.reset(seed=seed)[0]]
        for _ in range(40):
            obs.append(env.step(torch.ones(8, dtype=torch.int64))[0])
        return torch.stack(obs)

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))


def test_observations_in_space():
    env = metarl.make_vec("CartPole-v1", 64, seed=0)
    env.set_tasks(env.sample_tasks(64, generator=torch.Generator().manual_seed(0)))
    obs, _ = env.reset(seed=0)
    space = env.single_observation_space
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        assert all(space.contains(o) for o in obs.numpy())
        obs, *_ = env.step(torch.randint(0, 2, (64,), generator=g))


def test_tasks_sampled_in_range():
    env = metarl.make_vec("CartPole-v1", 4)
    t = env.sample_tasks(10_000, generator=torch.Generator().manual_seed(0))
    assert torch.all((t.masscart >= 0.5) & (t.masscart <= 2.0))
    assert torch.all((t.masspole >= 0.05) & (t.masspole <= 0.2))
    assert torch.all((t.length >= 0.25) & (t.length <= 1.0))
    assert torch.all((t.force_mag >= 5.0) & (t.force_mag <= 20.0))
    assert torch.all(t.gravity == 9.8) and torch.all(t.tau == 0.02)
    # log-uniform: the median sits at the default
    assert abs(t.masscart.median().item() - 1.0) < 0.05


def test_truncates_at_500():
    env = metarl.make_vec("CartPole-v1", 2, seed=0, autoreset_mode="same_step")
    env.reset(seed=0)
    env.set_state(torch.zeros(2, 4))
    truncated_at = None
    for t in range(1, 501):
        # keep the pole up: push towards the side it leans
        state = env.get_state()
        a = (state[:, 2] + 0.5 * state[:, 3] > 0).long()
        _, _, te, tr, _ = env.step(a)
        assert not te.any()
        if tr.any():
            truncated_at = t
            break
    assert truncated_at == 500


def test_cpp_and_numba_are_bit_identical():
    """Same float32 operations in the same order (csrc/simd_math.h = kernels/envs/_math.py)."""
    envs = [metarl.make_vec("CartPole-v1", 3001, seed=4, backend=b, autoreset_mode="same_step")
            for b in ("cpp", "numba")]
    tasks = envs[0].sample_tasks(3001, generator=torch.Generator().manual_seed(0))
    for e in envs:
        e.reset(seed=4, options={"tasks": tasks})
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        a = torch.randint(0, 2, (3001,), generator=g)
        (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) = (e.step(a) for e in envs)
        assert torch.equal(o1, o2) and torch.equal(te1, te2) and torch.equal(tr1, tr2)
        assert torch.equal(i1["final_obs"], i2["final_obs"])
