"""GymnasiumTaskVecEnv: a gymnasium env family as a task distribution."""
import numpy as np
import pytest
import torch

import metarl
from metarl.envs import GymnasiumTaskVecEnv, TrialWrapper

N = 5
RANGES = {"masscart": (0.5, 2.0, "log"), "masspole": (0.05, 0.2, "log"), "length": (0.25, 1.0, "log"),
          "force_mag": (5.0, 20.0, "log")}


def _apply(env, task):
    u = env.unwrapped
    for name, value in task.items():
        setattr(u, name, value)
    u.total_mass = u.masspole + u.masscart
    u.polemass_length = u.masspole * u.length


def _adapter(**kw):
    return GymnasiumTaskVecEnv("CartPole-v1", N, task_ranges=RANGES, apply_task=_apply, **kw)


def test_matches_native_family_under_the_same_tasks():
    ours = metarl.make_vec("CartPole-v1", N, seed=0, autoreset_mode="disabled", max_episode_steps=0)
    adapter = _adapter(autoreset_mode="disabled")
    g = torch.Generator().manual_seed(0)
    sampled = adapter.sample_tasks(N, generator=g)
    native = ours.default_tasks(N)
    for name in RANGES:
        setattr(native, name, getattr(sampled, name))
    ours.reset(seed=0, options={"tasks": native})
    adapter.reset(seed=0, options={"tasks": sampled})
    for _ in range(5):
        state = torch.randn(N, 4, generator=g) * torch.tensor([0.5, 0.5, 0.05, 0.5])
        ours.set_state(state)
        for i, e in enumerate(adapter.vec.envs):
            e.unwrapped.state = state[i].double().numpy()
        a = torch.randint(0, 2, (N,), generator=g)
        o1, r1, t1, _, _ = ours.step(a)
        o2, r2, t2, _, _ = adapter.step(a)
        torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
        assert torch.equal(r1, r2) and torch.equal(t1, t2)


def test_tasks_sampling_setting_and_partial_reset():
    env = _adapter()
    tasks = env.sample_tasks(1000, generator=torch.Generator().manual_seed(0))
    assert torch.all((tasks.masscart >= 0.5) & (tasks.masscart <= 2.0))
    env.reset(seed=1, options={"tasks": tasks[:N]})
    assert env.tasks.equal(tasks[:N])
    assert env.vec.envs[2].unwrapped.masscart == pytest.approx(float(tasks.masscart[2]))
    obs0, _ = env.reset()
    obs, _ = env.reset(options={"env_ids": [3], "tasks": tasks[10:11]})
    keep = [0, 1, 2, 4]
    assert torch.equal(obs[keep], obs0[keep])
    assert env.vec.envs[3].unwrapped.masscart == pytest.approx(float(tasks.masscart[10]))


def test_trial_wrapper_over_adapter():
    env = TrialWrapper(_adapter(autoreset_mode="same_step"), episodes_per_trial=2)
    obs, info = env.reset(seed=0)
    assert obs.shape == (N, 4 + 2 + 2) and info["trial_start"].all()
    starts = 0
    for _ in range(120):
        obs, r, te, tr, info = env.step(torch.randint(0, 2, (N,)))
        starts += int(info["trial_start"].sum())
    assert starts > 0


def test_bad_input():
    with pytest.raises(ValueError, match="task_ranges"):
        GymnasiumTaskVecEnv("CartPole-v1", 2, task_ranges={"masscart": (2.0, 1.0)})
    with pytest.raises(ValueError, match="task_ranges"):
        GymnasiumTaskVecEnv("CartPole-v1", 2, task_ranges={"masscart": (0.0, 1.0, "log")})
    env = _adapter()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(N, dtype=torch.int64))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(torch.full((N,), 3))
    with pytest.raises(ValueError, match="leading dim"):
        env.step(np.zeros(N + 1, dtype=np.int64))
    with pytest.raises(TypeError, match="sample_tasks"):
        env.set_tasks({"masscart": 1.0})
    env.step(torch.zeros(N, dtype=torch.int64))


def test_task_split_is_reproducible_and_disjoint():
    env = _adapter()
    train, test = env.sample_task_split(20, 10, seed=4)
    train2, test2 = env.sample_task_split(20, 10, seed=4)
    assert train.equal(train2) and test.equal(test2) and len(train) == 20 and len(test) == 10
    assert not {tuple(r) for r in torch.stack(train.fields(), 1).tolist()} & \
        {tuple(r) for r in torch.stack(test.fields(), 1).tolist()}
