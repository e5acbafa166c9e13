"""Pendulum-v1: parity with gymnasium's PendulumEnv, determinism, spaces, backends, bad input."""
import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl
from metarl.envs.pendulum import PendulumTasks

N = 37  # odd, not a power of two
# float32 state vs gymnasium's float64: one step agrees to this tolerance
ATOL, RTOL = 1e-5, 1e-5
FIELDS = ("g", "m", "l", "max_speed", "max_torque", "dt")


def _random_states(n, g):
    theta = (torch.rand(n, generator=g) * 2 - 1) * 4.0  # beyond [-π, π]: angle_normalize matters
    theta_dot = (torch.rand(n, generator=g) * 2 - 1) * 9.0
    return torch.stack([theta, theta_dot], 1)


def _random_tasks(env, n, g):
    """Every field varied, so the parity test covers each parameter's role."""
    t = env.sample_tasks(n, generator=g)
    t.g = 5 + 10 * torch.rand(n, generator=g)
    t.max_speed = 4 + 8 * torch.rand(n, generator=g)
    t.max_torque = 1 + 2 * torch.rand(n, generator=g)
    t.dt = 0.02 + 0.08 * torch.rand(n, generator=g)
    return t


def _gym_pendulum(tasks, i, state):
    e = gym.make("Pendulum-v1").unwrapped
    e.reset(seed=0)
    for name in FIELDS:
        setattr(e, name, float(getattr(tasks, name)[i]))
    e.state = state.astype(np.float64)
    return e


def test_step_matches_gymnasium(backend):
    g = torch.Generator().manual_seed(0)
    env = metarl.make_vec("Pendulum-v1", N, seed=0, backend=backend, autoreset_mode="disabled",
                          max_episode_steps=0)
    tasks = _random_tasks(env, N, g)
    env.reset(seed=0, options={"tasks": tasks})
    for _ in range(5):
        state = _random_states(N, g)
        env.set_state(state)
        actions = (torch.rand(N, 1, generator=g) * 2 - 1) * 4.0  # beyond max_torque: clipping matters
        obs, reward, terminated, truncated, _ = env.step(actions)
        for i in range(N):
            e = _gym_pendulum(tasks, i, state[i].double().numpy())
            o, r, te, tr, _ = e.step(actions[i].numpy())
            np.testing.assert_allclose(obs[i].numpy(), o, atol=ATOL, rtol=RTOL)
            np.testing.assert_allclose(reward[i].item(), r, atol=ATOL, rtol=RTOL)
            np.testing.assert_allclose(env.get_state()[i].numpy(), e.state, atol=ATOL, rtol=RTOL)
            assert not terminated[i] and not te
            assert not truncated[i]


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_backends_match_reference(backend, mode):
    """Whole trajectories with autoreset (truncation every 25 steps) equal the torch reference."""
    def run(b):
        env = metarl.make_vec("Pendulum-v1", N, seed=7, backend=b, autoreset_mode=mode, max_episode_steps=25)
        env.reset(seed=7, options={"tasks": env.sample_tasks(N, generator=torch.Generator().manual_seed(1))})
        g = torch.Generator().manual_seed(2)
        out = []
        for _ in range(60):
            o, r, te, tr, info = env.step((torch.rand(N, 1, generator=g) * 2 - 1) * 2.5)
            out.append((o, r, te, tr, info.get("final_obs", o), info.get("_final_obs", tr)))
        return out

    for got, ref in zip(run(backend), run("torch")):
        torch.testing.assert_close(got[0], ref[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[1], ref[1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[4], ref[4], atol=1e-4, rtol=1e-4)
        for a, b in zip(got[2:4] + got[5:], ref[2:4] + ref[5:]):
            assert torch.equal(a, b)


def test_reset_is_exact_across_backends(backend):
    """Reset states are bit-identical; the obs's cos/sin may differ by an ulp or two,
    since each backend has its own libm (torch: SLEEF, Numba: LLVM/libm, interpreter: NumPy)."""
    env = metarl.make_vec("Pendulum-v1", N, seed=11, backend=backend)
    ref = metarl.make_vec("Pendulum-v1", N, seed=11, backend="torch")
    obs, ref_obs = env.reset(seed=3)[0], ref.reset(seed=3)[0]
    assert torch.equal(env.get_state(), ref.get_state())
    assert torch.equal(obs[:, 2], ref_obs[:, 2])
    torch.testing.assert_close(obs, ref_obs, atol=2.5e-7, rtol=0)  # a couple of ulps
    # gymnasium's reset distribution: θ ~ U(-π, π), θ̇ ~ U(-1, 1)
    s = env.get_state()
    assert torch.all(s[:, 0].abs() <= np.pi) and torch.all(s[:, 1].abs() <= 1.0)


def test_determinism_and_seeds():
    def trajectory(seed):
        env = metarl.make_vec("Pendulum-v1", 8, seed=seed)
        obs = [env.reset(seed=seed)[0]]
        for _ in range(40):
            obs.append(env.step(torch.ones(8, 1))[0])
        return torch.stack(obs)

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))


def test_observations_in_space():
    env = metarl.make_vec("Pendulum-v1", 64, seed=0)
    env.set_tasks(env.sample_tasks(64, generator=torch.Generator().manual_seed(0)))
    obs, _ = env.reset(seed=0)
    space = env.single_observation_space
    g = torch.Generator().manual_seed(0)
    for _ in range(210):  # past one truncation
        assert all(space.contains(o) for o in obs.numpy())
        obs, *_ = env.step((torch.rand(64, 1, generator=g) * 2 - 1) * 2.0)


def test_tasks_sampled_in_range():
    env = metarl.make_vec("Pendulum-v1", 4)
    t = env.sample_tasks(10_000, generator=torch.Generator().manual_seed(0))
    assert torch.all((t.m >= 0.5) & (t.m <= 2.0))
    assert torch.all((t.l >= 0.5) & (t.l <= 2.0))
    assert torch.all(t.g == 10.0) and torch.all(t.max_speed == 8.0)
    assert torch.all(t.max_torque == 2.0) and torch.all(t.dt == 0.05)
    # log-uniform: the median sits at the default
    assert abs(t.m.median().item() - 1.0) < 0.05
    assert abs(t.l.median().item() - 1.0) < 0.05


def test_truncates_at_200_never_terminates():
    env = metarl.make_vec("Pendulum-v1", 3, seed=0, autoreset_mode="same_step")
    env.reset(seed=0)
    for t in range(1, 201):
        _, _, te, tr, _ = env.step(torch.full((3, 1), 2.0))
        assert not te.any()
        assert bool(tr.all()) == (t == 200)


def test_bad_input_raises_and_env_stays_usable():
    env = metarl.make_vec("Pendulum-v1", N, seed=0)
    twin = metarl.make_vec("Pendulum-v1", N, seed=0)
    env.reset(seed=0)
    twin.reset(seed=0)
    nan = torch.zeros(N, 1)
    nan[5, 0] = float("nan")
    with pytest.raises(ValueError, match="actions"):
        env.step(nan)
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.zeros(N, 2))
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.zeros(N + 1, 1))
    for name, value in (("m", 0.0), ("l", -1.0), ("dt", 0.0), ("max_torque", -2.0), ("max_speed", 0.0)):
        bad = env.default_tasks(N)
        getattr(bad, name)[3] = value
        with pytest.raises(ValueError, match=f"tasks.{name}"):
            env.set_tasks(bad)
        with pytest.raises(ValueError, match=f"tasks.{name}"):
            env.reset(options={"tasks": bad})
    assert env.tasks.equal(env.default_tasks(N))
    a = torch.full((N, 1), 0.5)
    for _ in range(3):
        got, want = env.step(a), twin.step(a)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_task_dataclass_fields():
    assert PendulumTasks.field_names() == FIELDS
    env = metarl.make_vec("Pendulum-v1", 2)
    assert env.single_action_space.shape == (1,)
    assert env.single_action_space.high[0] == 2.0
