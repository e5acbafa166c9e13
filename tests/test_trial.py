"""TrialWrapper: trials of n episodes per task, RL^2 inputs, trial_start marks."""
import pytest
import torch

import metarl
from metarl.envs import TrialWrapper

N, EPISODES = 5, 3


def _env(**kw):
    return TrialWrapper(metarl.make_vec("CartPole-v1", N, seed=0, autoreset_mode="same_step"),
                        episodes_per_trial=EPISODES, **kw)


def test_trials_count_episodes_and_change_tasks_only_at_starts():
    env = _env()
    obs, info = env.reset(seed=1)
    assert info["trial_start"].all() and obs.shape == (N, 4 + 2 + 2)
    assert torch.all(obs[:, 4:] == 0)
    episodes = torch.zeros(N, dtype=torch.int64)
    tasks = env.base.tasks
    starts = 0
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        a = torch.randint(0, 2, (N,), generator=g)
        obs, r, te, tr, info = env.step(a)
        done = te | tr
        episodes += done
        start = info["trial_start"]
        # a trial starts exactly when the n-th episode of the previous one ends
        assert torch.equal(start, episodes == EPISODES)
        new_tasks = env.base.tasks
        changed = torch.stack([x != y for x, y in zip(new_tasks.fields(), tasks.fields())]).any(0)
        assert not (changed & ~start).any()
        assert changed[start].all()
        # RL^2 inputs: one-hot previous action, reward, done; zeros at a trial start
        expect = torch.cat([torch.nn.functional.one_hot(a, 2).float(), r[:, None], done[:, None].float()], 1)
        expect[start] = 0
        assert torch.equal(obs[:, 4:], expect)
        episodes[start] = 0
        starts += int(start.sum())
        tasks = new_tasks
    assert starts >= N


def test_tasks_drawn_from_given_set():
    base = metarl.make_vec("CartPole-v1", N, seed=0, autoreset_mode="same_step")
    train, test = base.sample_task_split(4, 3, seed=0)
    env = TrialWrapper(base, episodes_per_trial=1, tasks=test)
    env.reset(seed=0)
    allowed = {tuple(r) for r in torch.stack(test.fields(), 1).tolist()}
    for _ in range(100):
        env.step(torch.zeros(N, dtype=torch.int64))
        for row in torch.stack(env.base.tasks.fields(), 1).tolist():
            assert tuple(row) in allowed


def test_same_seed_same_trials():
    def run():
        env = _env()
        obs = [env.reset(seed=3)[0]]
        for _ in range(50):
            obs.append(env.step(torch.ones(N, dtype=torch.int64))[0])
        return torch.stack(obs), env.base.tasks
    (a, ta), (b, tb) = run(), run()
    assert torch.equal(a, b) and ta.equal(tb)


def test_needs_same_step_mode():
    with pytest.raises(ValueError, match="same_step"):
        TrialWrapper(metarl.make_vec("CartPole-v1", 2), episodes_per_trial=2)
    with pytest.raises(ValueError, match="episodes_per_trial"):
        TrialWrapper(metarl.make_vec("CartPole-v1", 2, autoreset_mode="same_step"), episodes_per_trial=0)


def test_reset_with_given_tasks_and_state_dict_round_trip():
    env = TrialWrapper(metarl.make_vec("Bandit-v0", 6, arms=3, autoreset_mode="same_step"), 2)
    _, held_out = env.base.sample_task_split(1, 6, seed=4)
    env.reset(seed=0, options={"tasks": held_out})
    assert torch.equal(env.base.tasks.probs, held_out.probs)      # env i starts on task i
    with pytest.raises(ValueError, match="only the option 'tasks'"):
        env.reset(options={"env_ids": [0]})
    sd = env.state_dict()
    a = [env.step(torch.zeros(6, dtype=torch.int64))[1] for _ in range(5)]
    env.load_state_dict(sd)
    b = [env.step(torch.zeros(6, dtype=torch.int64))[1] for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))            # same rewards, same new tasks
    with pytest.raises(ValueError, match="not a TrialWrapper state dict"):
        env.load_state_dict({"base": sd["base"]})
