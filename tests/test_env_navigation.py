"""Navigation2D-v0 and SemicircleGoal-v0: the spec as a NumPy oracle, exact parity of
every backend with the torch reference, resets, spaces, task sampling, bad input.

There is no gymnasium version of these envs; the oracle below is written from
``/work/shared/specs/envs.md`` (clip, move, reward after the move, termination).
The envs use only IEEE ``+ - * sqrt`` and comparisons, so the checks are exact.
"""
import math

import numpy as np
import pytest
import torch

import metarl

N = 37  # odd, not a power of two
IDS = ("Navigation2D-v0", "SemicircleGoal-v0")
F = np.float32


def oracle_step(env_id, pos, goal, action):
    """The spec in NumPy float32: ``(new_pos [n, 2], reward [n], terminated [n])``."""
    a = np.clip(action.astype(F), F(-0.1), F(0.1))
    pos = (pos + a).astype(F)
    d = pos - goal
    dist = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
    if env_id == "Navigation2D-v0":
        return pos, -dist, (np.abs(d[:, 0]) < F(0.01)) & (np.abs(d[:, 1]) < F(0.01))
    return pos, (dist < F(0.8)).astype(F), np.zeros(len(pos), dtype=bool)


def _make(env_id, backend="numba", n=N, **kw):
    env = metarl.make_vec(env_id, n, seed=0, backend=backend, **kw)
    tasks = env.sample_tasks(n, generator=torch.Generator().manual_seed(1))
    env.reset(seed=0, options={"tasks": tasks})
    return env, tasks


@pytest.mark.parametrize("env_id", IDS)
def test_step_matches_numpy_oracle(backend, env_id):
    env, tasks = _make(env_id, backend, autoreset_mode="disabled", max_episode_steps=0)
    goal = tasks.goal.numpy()
    g = torch.Generator().manual_seed(2)
    # start anywhere (semicircle: some within 0.8 of the goal), actions beyond the bounds
    state = (goal + np.random.default_rng(0).uniform(-1.0, 1.0, goal.shape)).astype(F)
    env.set_state(torch.from_numpy(state))
    pos = state
    for _ in range(25):
        actions = torch.rand(N, 2, generator=g) * 0.5 - 0.25
        obs, reward, terminated, truncated, _ = env.step(actions)
        pos, r, te = oracle_step(env_id, pos, goal, actions.numpy())
        np.testing.assert_array_equal(obs.numpy(), pos)
        np.testing.assert_array_equal(reward.numpy(), r)
        np.testing.assert_array_equal(terminated.numpy(), te)
        assert not truncated.any()
        if te.any():  # disabled autoreset: restart the ended envs where they are
            env.set_state(torch.from_numpy(pos))
    if env_id == "SemicircleGoal-v0":
        assert 0 < r.sum() < N  # both reward values occurred


def test_reaching_the_goal_terminates(backend):
    """Walk straight to the goal: terminated on the step that lands within 0.01 on both axes."""
    env = metarl.make_vec("Navigation2D-v0", 2, seed=0, backend=backend, autoreset_mode="same_step")
    goal = np.array([[0.33, -0.27], [-0.45, 0.5]], dtype=F)
    obs, _ = env.reset(options={"tasks": type(env.tasks)(torch.from_numpy(goal))})
    pos = np.zeros((2, 2), dtype=F)
    ended = np.zeros(2, dtype=bool)
    for t in range(1, 8):
        actions = goal - obs.numpy()  # clipped to ±0.1 by the env
        obs, reward, terminated, truncated, info = env.step(torch.from_numpy(actions))
        pos, r, te = oracle_step("Navigation2D-v0", pos, goal, actions)
        live = ~ended
        np.testing.assert_array_equal(reward.numpy()[live], r[live])
        np.testing.assert_array_equal(terminated.numpy()[live], te[live])
        np.testing.assert_array_equal(info["final_obs"].numpy()[te & live], pos[te & live])
        assert torch.all(obs[torch.from_numpy(te)] == 0)  # reset to the origin in the same step
        ended |= te
        pos[te] = 0
        if t == 4:
            assert terminated.tolist() == [True, False]  # 0.3 + 0.03 / -0.1 -0.1 -0.07
        if t == 5:
            assert terminated.tolist() == [False, True]  # 5 steps of 0.1 in x and y
    assert ended.all()
    assert not truncated.any()


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
@pytest.mark.parametrize("env_id", IDS)
def test_backends_match_reference(backend, env_id, mode):
    """Whole trajectories (ends by reaching the goal and by the time limit) equal the reference exactly."""
    def run(b):
        env, tasks = _make(env_id, b, autoreset_mode=mode, max_episode_steps=15)
        goal = tasks.goal
        g = torch.Generator().manual_seed(3)
        greedy = torch.arange(N) % 2 == 0  # half the envs head for the goal
        obs, out = env.reset(seed=5)[0], []
        for _ in range(40):
            noise = torch.rand(N, 2, generator=g) * 0.4 - 0.2
            actions = torch.where(greedy[:, None], goal - obs, noise)
            obs, r, te, tr, info = env.step(actions)
            out.append((obs, r, te, tr, env._counter.clone(), *info.get("final_obs", torch.zeros(0)).unsqueeze(0)))
        return out

    got, ref = run(backend), run("torch")
    if env_id == "Navigation2D-v0":
        assert any(step[2].any() for step in ref), "no episode reached its goal"
    else:
        assert any(step[1].any() for step in ref), "no step was rewarded"
    assert any(step[3].any() for step in ref)
    for a_step, r_step in zip(got, ref):
        for a, b in zip(a_step, r_step):
            assert torch.equal(a, b)


@pytest.mark.parametrize("env_id", IDS)
def test_reset_is_exact_across_backends(backend, env_id):
    env, _ = _make(env_id, backend)
    ref, _ = _make(env_id, "torch")
    for e in (env, ref):
        e.step(torch.full((N, 2), 0.05))
    ids = [0, 3, 36]
    o1, o2 = env.reset(options={"env_ids": ids})[0], ref.reset(options={"env_ids": ids})[0]
    assert torch.equal(o1, o2)
    assert torch.equal(o1[ids], torch.zeros(3, 2))
    assert torch.all(o1[[1, 2]] == 0.05)
    assert torch.equal(env._counter, ref._counter)


@pytest.mark.parametrize("env_id", IDS)
def test_determinism_and_seeds(env_id):
    def trajectory(seed):
        env = metarl.make_vec(env_id, 8, seed=seed)
        env.reset(seed=seed, options={"tasks": env.sample_tasks(8, generator=torch.Generator().manual_seed(seed))})
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(30):
            obs, r, *_ = env.step(torch.rand(8, 2, generator=g) * 0.2 - 0.1)
            out.append(torch.cat([obs, r[:, None]], 1))
        return torch.stack(out)

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))  # other tasks and actions


@pytest.mark.parametrize("env_id", IDS)
def test_observations_in_space(env_id):
    env, _ = _make(env_id, n=64)
    assert env.single_action_space.shape == (2,) and env.single_action_space.dtype == np.float32
    assert np.all(env.single_action_space.high == F(0.1)) and np.all(env.single_action_space.low == F(-0.1))
    obs, _ = env.reset()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        assert obs.dtype == torch.float32 and obs.shape == (64, 2)
        assert all(env.single_observation_space.contains(o) for o in obs.numpy())
        obs, *_ = env.step(torch.rand(64, 2, generator=g) * 0.2 - 0.1)


def test_tasks_sampled_in_range():
    nav = metarl.make_vec("Navigation2D-v0", 2)
    t = nav.sample_tasks(10_000, generator=torch.Generator().manual_seed(0)).goal
    assert t.shape == (10_000, 2) and t.dtype == torch.float32
    assert torch.all((t >= -0.5) & (t <= 0.5))
    assert t.min() < -0.49 and t.max() > 0.49
    assert torch.all(nav.tasks.goal == 0)

    semi = metarl.make_vec("SemicircleGoal-v0", 2)
    t = semi.sample_tasks(10_000, generator=torch.Generator().manual_seed(0)).goal
    assert t.shape == (10_000, 2) and t.dtype == torch.float32
    torch.testing.assert_close(t.norm(dim=1), torch.full((10_000,), 2.0), atol=1e-6, rtol=0)
    assert torch.all(t[:, 1] >= 0)
    angle = torch.atan2(t[:, 1], t[:, 0])
    assert angle.min() < 0.01 and angle.max() > math.pi - 0.01
    assert abs(angle.mean().item() - math.pi / 2) < 0.05  # uniform in angle
    # the same seed gives the same tasks; train/test splits are disjoint draws
    train, test = semi.sample_task_split(5, 5, seed=0)
    assert not torch.equal(train.goal, test.goal)


@pytest.mark.parametrize("env_id,horizon", [("Navigation2D-v0", 100), ("SemicircleGoal-v0", 200)])
def test_truncates_at_horizon(env_id, horizon):
    env = metarl.make_vec(env_id, 2, seed=0, autoreset_mode="same_step")
    goal = torch.tensor([[0.3, 0.3], [-2.0, 0.0]])
    env.reset(options={"tasks": type(env.tasks)(goal)})
    for t in range(1, horizon + 1):
        _, _, te, tr, _ = env.step(torch.zeros(2, 2))
        assert not te.any()
        assert bool(tr.all()) == (t == horizon)


@pytest.mark.parametrize("env_id", IDS)
def test_bad_input(backend, env_id):
    env, tasks = _make(env_id, backend)
    env.step(torch.full((N, 2), 0.01))
    before = env.get_state()
    bad = torch.zeros(N, 2)
    bad[5, 1] = float("nan")
    with pytest.raises(ValueError, match="actions"):
        env.step(bad)
    bad[5, 1] = float("inf")
    with pytest.raises(ValueError, match="actions"):
        env.step(bad)
    for shape in [(N,), (N, 3), (N + 1, 2), (N, 2, 1)]:
        with pytest.raises(ValueError, match="actions"):
            env.step(torch.zeros(shape))
    with pytest.raises(TypeError, match="actions"):
        env.step(torch.zeros(N, 2, dtype=torch.int64))
    assert torch.equal(env.get_state(), before)  # nothing was stepped

    goal = tasks.goal.clone()
    goal[3, 0] = float("nan")
    with pytest.raises(ValueError, match="goal"):
        env.set_tasks(type(tasks)(goal))
    goal[3, 0] = float("inf")
    with pytest.raises(ValueError, match="goal"):
        env.reset(options={"tasks": type(tasks)(goal)})
    with pytest.raises(ValueError, match="goal"):
        env.set_tasks(type(tasks)(torch.zeros(N, 3)))
    with pytest.raises(TypeError, match="goal"):
        env.set_tasks(type(tasks)(torch.zeros(N, 2, dtype=torch.float64)))
    assert env.tasks.equal(tasks)  # nothing was set

    # still usable: the next step continues from where it was
    obs, reward, *_ = env.step(torch.full((N, 2), 0.01))
    pos, r, _ = oracle_step(env_id, before.numpy(), tasks.goal.numpy(), np.full((N, 2), 0.01, dtype=F))
    np.testing.assert_array_equal(obs.numpy(), pos)
    np.testing.assert_array_equal(reward.numpy(), r)
