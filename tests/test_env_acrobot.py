"""Acrobot-v1: parity with gymnasium's AcrobotEnv, backends vs the reference, resets,
determinism, spaces, task sampling, bad input.

Tolerances (float32 RK4 here, float64 in gymnasium; one step from a set state):
from states with |θ̇| within a quarter of the velocity bounds the observation
agrees to 1e-6 (asserted: 1e-5); from anywhere in the state box, where one RK4
step of 0.2 s can move an angle by tens of turns and amplifies rounding, the
trigonometric components agree to ~5e-6 and the velocities to ~1.2e-3 absolute
(≤ 4e-5 of their bound) (asserted: 2e-5 and 3e-3). Backends differ from each other
by ulps of sin/cos, which grow along a trajectory (the double pendulum is chaotic):
over 20-step episodes started with |θ̇| within a quarter of the bounds, < 2e-5
(asserted: atol = rtol = 1e-4) with identical rewards and flags; started anywhere in
the box the difference reaches ~5e-4 within 25 steps (not asserted).
"""
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.acrobot import wrap as gym_wrap

import metarl
from metarl.kernels.envs import acrobot as kernels

N = 37  # odd, not a power of two
FIELDS = ("link_length_1", "link_length_2", "link_mass_1", "link_mass_2",
          "link_com_pos_1", "link_com_pos_2", "link_moi", "dt")
BOUNDS = torch.tensor([math.pi, math.pi, 4 * math.pi, 9 * math.pi])


def _random_states(n, g, velocity_scale):
    s = (torch.rand(n, 4, generator=g) * 2 - 1) * BOUNDS
    s[:, 2:] *= velocity_scale
    return s


def _gym_acrobot(tasks, i, state):
    e = gym.make("Acrobot-v1").unwrapped
    e.reset(seed=0)
    for name in FIELDS:
        setattr(e, "dt" if name == "dt" else name.upper(), float(getattr(tasks, name)[i]))
    e.state = state.astype(np.float64)
    return e


def _height(state):
    """The termination test's left side, ``-cos θ1 - cos(θ2 + θ1)`` (float64)."""
    s = np.asarray(state, dtype=np.float64)
    return -np.cos(s[..., 0]) - np.cos(s[..., 1] + s[..., 0])


@pytest.mark.parametrize("velocity_scale,atol_trig,atol_vel", [(0.25, 1e-5, 1e-5), (1.0, 2e-5, 3e-3)])
def test_step_matches_gymnasium(backend, velocity_scale, atol_trig, atol_vel):
    g = torch.Generator().manual_seed(0)
    env = metarl.make_vec("Acrobot-v1", N, seed=0, backend=backend, autoreset_mode="disabled", max_episode_steps=0)
    tasks = env.sample_tasks(N, generator=g)
    env.reset(seed=0, options={"tasks": tasks})
    for _ in range(3):
        state = _random_states(N, g, velocity_scale)
        env.set_state(state)
        actions = torch.randint(0, 3, (N,), generator=g)
        obs, reward, terminated, truncated, _ = env.step(actions)
        for i in range(N):
            e = _gym_acrobot(tasks, i, state[i].double().numpy())
            o, r, te, tr, _ = e.step(int(actions[i]))
            np.testing.assert_allclose(obs[i, :4].numpy(), o[:4], atol=atol_trig, rtol=0)
            np.testing.assert_allclose(obs[i, 4:].numpy(), o[4:], atol=atol_vel, rtol=0)
            assert abs(e.state[0]) <= math.pi and abs(e.state[1]) <= math.pi
            if abs(_height(e.state) - 1.0) > 1e-4:  # a flip right at the threshold is rounding
                assert bool(terminated[i]) == te
                assert reward[i].item() == r
            assert not truncated[i]
    st = env.get_state()
    assert torch.all(st[:, :2].abs() <= kernels.PI)


def test_wrap_matches_gymnasium():
    special = torch.tensor([kernels.PI, -kernels.PI, 3 * math.pi, -5 * math.pi])
    x = torch.cat([torch.linspace(-300, 300, 20_001), special])
    got = kernels._wrap_reference(x.float()).double().numpy()
    ref = np.array([gym_wrap(v, -math.pi, math.pi) for v in x.float().double().numpy()])
    assert np.all(np.abs(got) <= kernels.PI)
    diff = np.abs(got - ref)
    diff = np.minimum(diff, np.abs(diff - 2 * math.pi))  # ±π are the same angle
    assert diff.max() < 1e-4  # float32 rounding of |x| ≤ 300
    assert kernels._wrap_reference(torch.tensor([kernels.PI]))[0] == kernels.PI  # π stays π, as in gymnasium


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_backends_match_reference(backend, mode):
    """Whole trajectories (terminations, truncations, autoresets) equal the torch reference."""
    def run(b):
        env = metarl.make_vec("Acrobot-v1", N, seed=7, backend=b, autoreset_mode=mode, max_episode_steps=20)
        env.reset(seed=7, options={"tasks": env.sample_tasks(N, generator=torch.Generator().manual_seed(1))})
        g = torch.Generator().manual_seed(2)
        env.set_state(_random_states(N, g, 0.25))  # some start above the line: episodes end early
        out = []
        for _ in range(40):
            o, r, te, tr, info = env.step(torch.randint(0, 3, (N,), generator=g))
            out.append((o, info.get("final_obs", o), r, te, tr, env._counter.clone()))
        return out

    got, ref = run(backend), run("torch")
    assert sum(int(step[3].sum()) for step in ref) > 10 and any(step[4].any() for step in ref)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a[0], b[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a[1], b[1], atol=1e-4, rtol=1e-4)
        for x, y in zip(a[2:], b[2:]):
            assert torch.equal(x, y)


def test_reset_is_exact_across_backends(backend):
    """Reset states are bit-identical; observations are their cos/sin (within an ulp)."""
    env = metarl.make_vec("Acrobot-v1", N, seed=11, backend=backend)
    ref = metarl.make_vec("Acrobot-v1", N, seed=11, backend="torch")
    o1, o2 = env.reset(seed=3)[0], ref.reset(seed=3)[0]
    assert torch.equal(env.get_state(), ref.get_state())
    torch.testing.assert_close(o1, o2, atol=1e-7, rtol=0)
    assert torch.equal(o1[:, 4:], o2[:, 4:])
    s = env.get_state()
    assert torch.all(s.abs() <= 0.1)
    ids = [1, 36]
    env.reset(options={"env_ids": ids})
    ref.reset(options={"env_ids": ids})
    assert torch.equal(env.get_state(), ref.get_state())
    assert torch.equal(env.get_state()[0], s[0]) and not torch.equal(env.get_state()[1], s[1])


def test_determinism_and_seeds():
    def trajectory(seed):
        env = metarl.make_vec("Acrobot-v1", 8, seed=seed)
        obs = [env.reset(seed=seed)[0]]
        for _ in range(40):
            obs.append(env.step(torch.full((8,), 2))[0])
        return torch.stack(obs)

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))


def test_observations_in_space():
    env = metarl.make_vec("Acrobot-v1", 64, seed=0)
    env.set_tasks(env.sample_tasks(64, generator=torch.Generator().manual_seed(0)))
    obs, _ = env.reset(seed=0)
    space = env.single_observation_space
    assert space.shape == (6,) and env.single_action_space == gym.spaces.Discrete(3)
    g = torch.Generator().manual_seed(0)
    env.set_state(_random_states(64, g, 1.0))  # velocities hit the clip bounds
    for _ in range(150):
        assert all(space.contains(o) for o in obs.numpy())
        obs, *_ = env.step(torch.randint(0, 3, (64,), generator=g))
    s = env.get_state()
    assert torch.all(s[:, :2].abs() <= kernels.PI)


def test_tasks_sampled_in_range():
    env = metarl.make_vec("Acrobot-v1", 4)
    t = env.sample_tasks(10_000, generator=torch.Generator().manual_seed(0))
    for name in ("link_length_1", "link_length_2", "link_mass_1", "link_mass_2"):
        v = getattr(t, name)
        assert torch.all((v >= 0.5) & (v <= 2.0)), name
        assert abs(v.median().item() - 1.0) < 0.05, name  # log-uniform: the median is the default
    assert torch.all(t.link_com_pos_1 == 0.5) and torch.all(t.link_com_pos_2 == 0.5)
    assert torch.all(t.link_moi == 1.0) and torch.all(t.dt == np.float32(0.2))
    d = env.tasks
    assert [getattr(d, f)[0].item() for f in FIELDS] == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 1, 0.2])


def test_terminates_upright_and_truncates_at_500():
    env = metarl.make_vec("Acrobot-v1", 2, seed=0, autoreset_mode="same_step")
    env.reset(seed=0)
    env.set_state(torch.tensor([[math.pi, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    _, reward, te, tr, info = env.step(torch.tensor([1, 1]))
    assert te.tolist() == [True, False] and reward.tolist() == [0.0, -1.0]
    assert info["final_obs"][0, 0] < -0.99  # cos θ1 of the upright state
    env.set_state(torch.zeros(2, 4))  # hanging at rest, no torque: stays down
    for t in range(1, 501):
        _, reward, te, tr, _ = env.step(torch.tensor([1, 1]))
        assert not te.any() and torch.all(reward == -1.0)
        assert bool(tr.all()) == (t == 500)


def test_bad_input(backend):
    env = metarl.make_vec("Acrobot-v1", N, seed=0, backend=backend)
    tasks = env.sample_tasks(N, generator=torch.Generator().manual_seed(0))
    env.reset(seed=0, options={"tasks": tasks})
    before = env.get_state()
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.full((N,), 3))
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.full((N,), -1))
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.ones(N + 1, dtype=torch.int64))
    with pytest.raises(TypeError, match="actions"):
        env.step(torch.full((N,), float("nan")))
    assert torch.equal(env.get_state(), before)
    for name, value in [("link_mass_1", 0.0), ("link_mass_2", -1.0), ("link_length_1", 0.0),
                        ("link_length_2", float("nan")), ("link_moi", 0.0), ("dt", float("inf")),
                        ("link_com_pos_2", -0.5)]:
        bad = tasks.clone()
        getattr(bad, name)[4] = value
        with pytest.raises(ValueError, match=name):
            env.set_tasks(bad)
    with pytest.raises(ValueError, match="link_length_1 must have shape"):
        env.set_tasks(type(tasks)(*(t[:3] for t in tasks.fields())), env_ids=[0, 1])
    assert env.tasks.equal(tasks)
    obs, reward, *_ = env.step(torch.ones(N, dtype=torch.int64))  # still usable
    assert torch.isfinite(obs).all() and reward.shape == (N,)
