"""MountainCarContinuous-v0: parity with gymnasium's Continuous_MountainCarEnv, determinism,
spaces, backends, bad input."""
import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl
from metarl.envs.mountain_car_continuous import MountainCarContinuousTasks

N = 37  # odd, not a power of two
# float32 here vs gymnasium's mixed float64/float32 arithmetic: one step agrees to this tolerance
ATOL, RTOL = 1e-6, 1e-5


def _random_states(n, g):
    """A third at the left wall moving left, a third near the goal, the rest anywhere."""
    p = -1.2 + 1.8 * torch.rand(n, generator=g)
    v = (torch.rand(n, generator=g) * 2 - 1) * 0.07
    k = n // 3
    p[:k] = -1.2 + 0.05 * torch.rand(k, generator=g)
    p[:3] = -1.2  # exactly at the wall (float32)
    v[:k] = -0.07 * torch.rand(k, generator=g)
    p[k:2 * k] = 0.35 + 0.25 * torch.rand(k, generator=g)
    v[k:2 * k] = -0.01 + 0.08 * torch.rand(k, generator=g)
    return torch.stack([p, v], 1)


def _gym_mountain_car(tasks, i, state):
    e = gym.make("MountainCarContinuous-v0").unwrapped
    e.reset(seed=0)
    e.power = float(tasks.power[i])
    e.state = state.astype(np.float64)
    return e


def test_step_matches_gymnasium(backend):
    g = torch.Generator().manual_seed(0)
    env = metarl.make_vec("MountainCarContinuous-v0", N, seed=0, backend=backend, autoreset_mode="disabled",
                          max_episode_steps=0)
    tasks = env.sample_tasks(N, generator=g)
    env.reset(seed=0, options={"tasks": tasks})
    n_term = n_wall = 0
    for _ in range(5):
        state = _random_states(N, g)
        env.set_state(state)
        actions = (torch.rand(N, 1, generator=g) * 2 - 1) * 2.0  # beyond [-1, 1]: clipping and reward matter
        obs, reward, terminated, truncated, _ = env.step(actions)
        for i in range(N):
            e = _gym_mountain_car(tasks, i, state[i].double().numpy())
            o, r, te, tr, _ = e.step(actions[i].numpy())
            np.testing.assert_allclose(obs[i].numpy(), o, atol=ATOL, rtol=RTOL)
            np.testing.assert_allclose(reward[i].item(), r, atol=ATOL, rtol=RTOL)
            assert bool(terminated[i]) == te
            assert not truncated[i]
            n_term += te
            n_wall += o[0] == np.float32(-1.2)
    assert n_term > 5 and n_wall > 5  # the edge cases were exercised


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_backends_match_reference(backend, mode):
    """Whole trajectories with autoreset (terminations and truncation at 30) equal the torch reference."""
    def run(b):
        env = metarl.make_vec("MountainCarContinuous-v0", N, seed=7, backend=b, autoreset_mode=mode,
                              max_episode_steps=30)
        env.reset(seed=7, options={"tasks": env.sample_tasks(N, generator=torch.Generator().manual_seed(1))})
        ids = torch.arange(0, N, 3)
        env.set_state(torch.tensor([[0.40, 0.03]]).expand(len(ids), 2) + 0.001 * torch.arange(len(ids))[:, None],
                      env_ids=ids)  # some envs start next to the goal, so episodes terminate
        g = torch.Generator().manual_seed(2)
        out = []
        for _ in range(60):
            o, r, te, tr, info = env.step((torch.rand(N, 1, generator=g) * 2 - 1) * 1.5)
            out.append((o, r, te, tr, info.get("final_obs", o), info.get("_final_obs", tr)))
        return out

    got_all, ref_all = run(backend), run("torch")
    assert sum(int(r[2].sum()) for r in ref_all) > 5  # terminations happened
    for got, ref in zip(got_all, ref_all):
        torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[4], ref[4], atol=1e-5, rtol=1e-5)
        for a, b in zip(got[1:4] + got[5:], ref[1:4] + ref[5:]):
            assert torch.equal(a, b)


def test_reset_is_exact_across_backends(backend):
    env = metarl.make_vec("MountainCarContinuous-v0", N, seed=11, backend=backend)
    ref = metarl.make_vec("MountainCarContinuous-v0", N, seed=11, backend="torch")
    obs = env.reset(seed=3)[0]
    assert torch.equal(obs, ref.reset(seed=3)[0])
    # gymnasium's reset distribution: position ~ U(-0.6, -0.4), velocity 0
    assert torch.all((obs[:, 0] >= -0.6) & (obs[:, 0] <= -0.4)) and torch.all(obs[:, 1] == 0)


def test_determinism_and_seeds():
    def trajectory(seed):
        env = metarl.make_vec("MountainCarContinuous-v0", 8, seed=seed)
        obs = [env.reset(seed=seed)[0]]
        for _ in range(40):
            obs.append(env.step(torch.ones(8, 1))[0])
        return torch.stack(obs)

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))


def test_observations_in_space():
    env = metarl.make_vec("MountainCarContinuous-v0", 64, seed=0, max_episode_steps=150)
    env.set_tasks(env.sample_tasks(64, generator=torch.Generator().manual_seed(0)))
    obs, _ = env.reset(seed=0)
    space = env.single_observation_space
    g = torch.Generator().manual_seed(0)
    for _ in range(200):  # past one truncation
        assert all(space.contains(o) for o in obs.numpy())
        obs, *_ = env.step((torch.rand(64, 1, generator=g) * 2 - 1) * 1.5)


def test_tasks_sampled_in_range():
    env = metarl.make_vec("MountainCarContinuous-v0", 4)
    t = env.sample_tasks(10_000, generator=torch.Generator().manual_seed(0))
    assert torch.all((t.power >= 0.0015 * 0.75) & (t.power <= 0.0015 * 1.5))
    # log-uniform: log of the value is uniform, so the median is the geometric mean of the ends
    assert abs(t.power.median().item() - 0.0015 * np.sqrt(0.75 * 1.5)) < 3e-5


def test_energy_pumping_reaches_goal_and_truncates_at_999():
    """Push along the velocity: every car reaches the goal (reward 100 - 0.1); idling truncates at 999."""
    env = metarl.make_vec("MountainCarContinuous-v0", 8, seed=0, autoreset_mode="same_step")
    env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
    obs, _ = env.reset(seed=0)
    done_at = torch.zeros(8, dtype=torch.int64)
    for t in range(1, 400):
        obs, r, te, tr, info = env.step(torch.where(obs[:, 1:] >= 0, 1.0, -1.0))
        assert not tr.any()
        torch.testing.assert_close(r, torch.where(te, 99.9, -0.1))
        assert torch.all(info["final_obs"][te, 0] >= 0.45)
        done_at[(done_at == 0) & te] = t
        if bool((done_at > 0).all()):
            break
    assert bool((done_at > 0).all())

    env = metarl.make_vec("MountainCarContinuous-v0", 2, seed=0, autoreset_mode="same_step")
    env.reset(seed=0)
    for t in range(1, 1000):
        _, r, te, tr, _ = env.step(torch.zeros(2, 1))
        assert not te.any() and torch.all(r == 0)
        assert bool(tr.all()) == (t == 999)


def test_bad_input_raises_and_env_stays_usable():
    env = metarl.make_vec("MountainCarContinuous-v0", N, seed=0)
    twin = metarl.make_vec("MountainCarContinuous-v0", N, seed=0)
    env.reset(seed=0)
    twin.reset(seed=0)
    for v in (float("nan"), float("inf")):
        bad = torch.zeros(N, 1)
        bad[N - 1, 0] = v
        with pytest.raises(ValueError, match="actions"):
            env.step(bad)
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.zeros(N, 2))
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.zeros(N - 1, 1))
    for value in (0.0, -0.0015, float("nan")):
        bad = env.default_tasks(N)
        bad.power[3] = value
        with pytest.raises(ValueError, match="tasks.power"):
            env.set_tasks(bad)
        with pytest.raises(ValueError, match="tasks.power"):
            env.reset(options={"tasks": bad})
    assert env.tasks.equal(env.default_tasks(N))
    a = torch.full((N, 1), 0.5)
    for _ in range(3):
        got, want = env.step(a), twin.step(a)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_task_dataclass_fields():
    assert MountainCarContinuousTasks.field_names() == ("power",)
    env = metarl.make_vec("MountainCarContinuous-v0", 2)
    assert env.single_action_space.shape == (1,)
