"""MFEC: the table update and the kNN estimate by hand, the returns written after an episode, LRU,
learning on CartPole well above random, exact resume through the run harness, bad configs (the CLI:
tests/test_cli.py; every field's range: tests/test_config.py)."""
import math

import pytest
import torch

from metarl import checkpoint
from metarl.algos import harness, mfec
from metarl.algos.episodic import epsilon_greedy, steps_to_reach
from metarl.algos.mfec import MFECAgent, MFECConfig, MFECLearner, load_model, report, train


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one intra-op thread (conftest's one_thread)."""


def raw_agent(k=3, capacity=1000, actions=2):
    """No projection: the keys are the observations, so distances can be worked out by hand."""
    return MFECAgent(obs_dim=2, num_actions=actions, projection_dim=0, k=k, capacity=capacity)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_table_update_keeps_the_max_return_of_a_key():
    agent = raw_agent()
    a0 = torch.tensor([0, 0])
    agent.write(t([0, 0], [1, 0]), a0, torch.tensor([3.0, 7.0]))
    agent.write(t([0, 0], [1, 0]), a0, torch.tensor([5.0, 2.0]))    # (0,0): 3 -> 5; (1,0): stays 7
    assert agent.sizes == [2, 0]                                     # updated in place, nothing added
    q = agent.estimate(t([0, 0], [1, 0]))
    assert q[:, 0].tolist() == [5.0, 7.0]
    # the same key twice in one write counts once, with its larger return; other actions are separate tables
    agent.write(t([2, 0], [2, 0], [2, 0]), torch.tensor([0, 0, 1]), torch.tensor([4.0, 9.0, 1.0]))
    assert agent.sizes == [3, 1]
    assert agent.estimate(t([2, 0]))[0].tolist() == [9.0, 1.0]


def test_knn_estimate_for_new_keys_is_the_mean_of_the_k_nearest():
    agent = raw_agent(k=3)
    keys = t([0, 0], [1, 0], [0, 2], [5, 5], [9, 9])
    agent.write(keys, torch.zeros(5, dtype=torch.int64), torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]))
    q = agent.estimate(t([0.4, 0.1], [6, 6], [0, 0]))
    assert q[0, 0].item() == pytest.approx((1 + 2 + 4) / 3)       # nearest three: (0,0) (1,0) (0,2)
    assert q[1, 0].item() == pytest.approx((8 + 16 + 4) / 3)      # (5,5) (9,9), then (0,2) at 52 < (1,0) at 61
    assert q[2, 0].item() == 1.0                                  # an exact key answers its own value
    assert math.isinf(q[0, 1].item()) and q[0, 1] > 0             # empty table: +inf, tried first
    # fewer than k entries: the mean of those there are
    small = raw_agent(k=11)
    small.write(t([0, 0], [3, 0]), torch.zeros(2, dtype=torch.int64), torch.tensor([2.0, 6.0]))
    assert small.estimate(t([1, 1]))[0, 0].item() == pytest.approx(4.0)


def test_an_action_with_an_empty_table_is_tried_first():
    q = torch.tensor([[3.0, math.inf, 1.0]] * 50)
    g = torch.Generator().manual_seed(0)
    assert (epsilon_greedy(q, 0.0, g) == 1).all()
    ties = epsilon_greedy(torch.zeros(2000, 3), 0.0, g)
    assert (torch.bincount(ties, minlength=3) > 550).all()      # ties broken uniformly


@pytest.mark.parametrize("read_b", [False, True])
def test_least_recently_used_key_is_evicted_at_capacity(read_b):
    """Uses are adds, estimate reads and the nearest-key probe of a write (it checks for an exact key).
    A=(0,0) B=(10,0) C=(-10,0): writing C probes A, so B is the least recently used, unless B was
    read since; writing D=(0,30) then evicts B, or C when B was read."""
    agent = raw_agent(k=1, capacity=3)
    a0 = torch.zeros(1, dtype=torch.int64)
    for key, ret in (([0, 0], 1.0), ([10, 0], 2.0), ([-10, 0], 3.0)):
        agent.write(t(key), a0, torch.tensor([ret]))
    if read_b:
        agent.estimate(t([9, 0]))
    agent.write(t([0, 30]), a0, torch.tensor([4.0]))
    assert agent.sizes == [3, 0]
    q = agent.estimate(t([10, 0], [-10, 0]))[:, 0].tolist()
    assert q == ([2.0, 1.0] if read_b else [1.0, 3.0])     # the evicted key answers its nearest, A


def test_random_projection_is_gaussian_fixed_and_64_wide():
    a = MFECAgent(obs_dim=4, num_actions=2, seed=3)
    b = MFECAgent(obs_dim=4, num_actions=2, seed=3)
    assert a.projection.shape == (4, 64) and torch.equal(a.projection, b.projection)
    assert a.projection.std().item() == pytest.approx(1 / 8, rel=0.2)      # N(0, 1/64)
    assert a.keys(torch.ones(3, 4)).shape == (3, 64)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_an_episode_writes_its_discounted_returns(gamma):
    """CartPole pays 1 per step: after an episode of length L the table holds R_t = sum_{k < L-t} gamma^k."""
    learner = MFECLearner(MFECConfig(num_envs=1, gamma=gamma, epsilon_decay_steps=0, epsilon_end=1.0))
    while not learner.stats.returns:
        learner.vector_step()
    length = int(learner.stats.returns[0])
    assert learner.stats.end_steps == [length]
    values = torch.cat([v[:m.ntotal] for v, m in zip(learner.agent.values, learner.agent.memories)])
    expected = [sum(gamma ** k for k in range(length - s)) for s in range(length)]
    assert sorted(values.tolist()) == pytest.approx(sorted(expected))
    assert int(learner.pos[0]) == 0


@pytest.mark.parametrize("gamma", [1.0, 0.5])
@pytest.mark.parametrize("bootstrap", [True, False])
def test_an_episode_cut_by_the_time_limit_is_completed_with_the_final_estimate(gamma, bootstrap, monkeypatch):
    """A 5-step limit truncates the episode: R_t = sum_{k<5-t} gamma^k + gamma^(5-t) V, V = max_a Q(final obs) = 7
    (0 with bootstrap_truncated=False: the paper's Monte-Carlo return)."""
    learner = MFECLearner(MFECConfig(num_envs=1, gamma=gamma, epsilon_decay_steps=0, epsilon_end=1.0,
                                     bootstrap_truncated=bootstrap))
    learner.env.max_episode_steps = 5
    monkeypatch.setattr(learner.agent, "q_values", lambda obs: torch.tensor([[7.0, -3.0]]).expand(len(obs), 2))
    while not learner.stats.returns:
        learner.vector_step()
    assert learner.stats.returns == [5.0]
    values = torch.cat([v[:m.ntotal] for v, m in zip(learner.agent.values, learner.agent.memories)])
    v = 7.0 if bootstrap else 0.0
    expected = [sum(gamma ** k for k in range(5 - s)) + gamma ** (5 - s) * v for s in range(5)]
    assert sorted(values.tolist()) == pytest.approx(sorted(expected))


@pytest.mark.slow
def test_a_short_run_beats_random_clearly():
    """CartPole: random play scores ~22; MFEC reaches a mean of 150 within ~4-8k env steps (bench/episodic.py)."""
    summary = train(MFECConfig(total_env_steps=6_000, eval_episodes=30, seed=1), progress=False)
    mean, se = summary["eval"]["mfec"]
    rnd, rnd_se = summary["eval"]["random"]
    assert rnd < 35
    assert mean > 100 and mean > rnd + 5 * (se + rnd_se), summary["eval"]
    assert summary["env_steps"] == 6_000 and len(summary["episode_returns"]) == summary["episodes"]
    assert steps_to_reach(summary["episode_end_steps"], summary["episode_returns"], 60) is not None


def test_an_iteration_is_log_every_env_steps():
    """One harness iteration = log_every // num_envs vector steps, and one progress row."""
    learner = MFECLearner(MFECConfig(num_envs=3, log_every=100, total_env_steps=1_000))
    assert (learner.steps_per_iteration, learner.iterations) == (33, 10)
    row = learner.step()
    assert learner.env_steps == 99 and set(row) == {"episode_return", "episodes", "epsilon", "memory_size"}
    assert row["memory_size"] == sum(learner.agent.sizes) > 0 and row["episodes"] == len(learner.stats.returns)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = MFECConfig(total_env_steps=1_200, log_every=200, eval_episodes=5, num_envs=2)
    whole = train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, max_iterations=2)
    assert harness.load_checkpoint(tmp_path / "split", "mfec")["iteration"] == 2
    split = train(cfg, tmp_path / "split", resume=True, progress=False)
    assert whole["episode_returns"] == split["episode_returns"]
    assert whole["eval"] == split["eval"]
    a = (tmp_path / "whole" / "progress.csv").read_text().splitlines()
    b = (tmp_path / "split" / "progress.csv").read_text().splitlines()
    assert [r.split(",")[:6] for r in a] == [r.split(",")[:6] for r in b]
    ck_a = harness.load_checkpoint(tmp_path / "whole", "mfec")["learner"]
    ck_b = harness.load_checkpoint(tmp_path / "split", "mfec")["learner"]
    for name in ("memories", "values"):
        assert all(torch.equal(x, y) for x, y in zip(ck_a["agent"][name], ck_b["agent"][name])), name
    agent, loaded_cfg = load_model(tmp_path / "split")
    assert loaded_cfg == cfg and checkpoint.read_kind(tmp_path / "split" / "checkpoint.pt") == "mfec"
    assert report(agent, cfg, 5)["mfec"] == whole["eval"]["mfec"]


def test_acrobot_runs_with_three_tables():
    summary = train(MFECConfig(env="Acrobot-v1", total_env_steps=1_000, log_every=500, eval_episodes=2),
                    progress=False)
    assert summary["env_steps"] == 1_000 and set(summary["eval"]) == {"mfec", "random"}


@pytest.mark.parametrize("kwargs,match", [
    (dict(env="Pendulum-v1"), "Discrete"),
    (dict(env="NoSuchEnv-v0"), "env must be one of"),
    (dict(k=0), "k must be a positive int"),
    (dict(capacity=-5), "capacity must be a positive int"),
    (dict(projection_dim=-1), "projection_dim"),
    (dict(gamma=1.5), r"gamma must be a finite number in \[0, 1\]"),
    (dict(epsilon_start=float("nan")), "epsilon_start"),
    (dict(epsilon_end=-0.1), "epsilon_end"),
    (dict(num_envs=0), "num_envs must be a positive int"),
    (dict(epsilon_decay_steps=-1), "epsilon_decay_steps"),
])
def test_bad_configs_are_refused_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MFECConfig(**kwargs)


def test_resume_needs_a_matching_checkpoint(tmp_path):
    cfg = MFECConfig(total_env_steps=400, log_every=200, eval_episodes=2)
    train(cfg, tmp_path, progress=False, max_iterations=1)
    with pytest.raises(ValueError, match="config differs"):
        train(MFECConfig(total_env_steps=400, log_every=200, eval_episodes=2, k=5), tmp_path, resume=True,
              progress=False)
    with pytest.raises(ValueError, match="a 'mfec' file, expected 'nec'"):
        checkpoint.load(tmp_path / "checkpoint.pt", kind="nec")


def test_docstring_examples():
    import doctest

    result = doctest.testmod(mfec, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
