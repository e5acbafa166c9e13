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


# N: one env; odd, one chunk and one thread; three chunks on one thread; one past the threaded size
# (a 1-env chunk); none a multiple of the 8-env words the reset pass scans
@pytest.mark.parametrize("n", [1, 37, 6003, 8193])
@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_cpp_and_numba_are_bit_identical(n, mode):
    """Same float32 operations in the same order (csrc/simd_math.h = kernels/envs/_math.py), and the
    C++ kernel's separate reset pass draws what the Numba kernel's per-env branch draws."""
    envs = [metarl.make_vec("CartPole-v1", n, seed=4, backend=b, autoreset_mode=mode, max_episode_steps=40)
            for b in ("cpp", "numba")]
    tasks = envs[0].sample_tasks(n, generator=torch.Generator().manual_seed(0))
    for e in envs:
        e.reset(seed=4, options={"tasks": tasks})
    g = torch.Generator().manual_seed(0)
    ended = 0
    for _ in range(100):
        a = torch.randint(0, 2, (n,), generator=g)
        (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) = (e.step(a) for e in envs)
        assert torch.equal(o1, o2) and torch.equal(r1, r2) and torch.equal(te1, te2) and torch.equal(tr1, tr2)
        if mode == "same_step":
            assert torch.equal(i1["final_obs"], i2["final_obs"])
        ended += int((te1 | tr1).sum())
    assert ended > n  # the resets ran (terminations, and truncations at 40 steps)
    for name in ("state", "elapsed", "needs_reset", "counter"):
        assert torch.equal(envs[0].state_dict()[name], envs[1].state_dict()[name]), name


def test_cpp_disabled_mode_matches_numba():
    """No autoreset (the dynamics pass alone): ended envs keep needs_reset until a masked reset."""
    n = 8195  # threaded (4 chunks, the last of 3 envs)
    envs = [metarl.make_vec("CartPole-v1", n, seed=5, backend=b, autoreset_mode="disabled", max_episode_steps=0)
            for b in ("cpp", "numba")]
    for e in envs:
        e.reset(seed=5)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        ended = envs[0].state_dict()["needs_reset"]
        assert torch.equal(ended, envs[1].state_dict()["needs_reset"])
        if ended.any():
            for e in envs:
                e.reset(options={"reset_mask": ended})
        a = torch.randint(0, 2, (n,), generator=g)
        (o1, r1, te1, tr1, _), (o2, r2, te2, tr2, _) = (e.step(a) for e in envs)
        assert torch.equal(o1, o2) and torch.equal(r1, r2) and torch.equal(te1, te2) and torch.equal(tr1, tr2)
    assert torch.equal(envs[0].state_dict()["counter"], envs[1].state_dict()["counter"])
    assert int(envs[0].state_dict()["counter"].sum()) > 2 * n  # episodes ended and were reset


def test_cpp_threads():
    """One thread below 8192 envs; from there at most one per 2048 envs and no more than OpenMP allows."""
    from metarl import _C
    from metarl.kernels.envs import cartpole

    assert [cartpole.cpp_threads(n) for n in (1, 37, 4096, 8191)] == [1, 1, 1, 1]
    assert 1 <= cartpole.cpp_threads(8192) <= min(4, _C.openmp_threads())
    assert cartpole.cpp_threads(1 << 20) == _C.openmp_threads()
