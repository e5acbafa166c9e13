"""Bandit-v0: backends vs the reference, reward statistics, seeds, spaces, tasks."""
import math

import pytest
import torch

import metarl

N = 37  # odd, not a power of two
K = 5
MODES = ("next_step", "same_step", "disabled")
# chi-square critical values at p = 0.001 (5 and 50 degrees of freedom)
CHI2_5_P001 = 20.515
CHI2_50_P001 = 86.661


def _trajectory(backend, mode, steps=24, arms=K):
    env = metarl.make_vec("Bandit-v0", N, arms=arms, seed=7, backend=backend, autoreset_mode=mode)
    obs, _ = env.reset(seed=7, options={"tasks": env.sample_tasks(N, generator=torch.Generator().manual_seed(1))})
    g = torch.Generator().manual_seed(2)
    out = [obs]
    for _ in range(steps):
        if mode == "disabled":
            ended = env._needs_reset.clone()
            if ended.any():
                out.append(env.reset(options={"reset_mask": ended})[0])
        o, r, te, tr, info = env.step(torch.randint(0, arms, (N,), generator=g))
        out += [o, r, te, tr]
        if mode == "same_step":
            out += [info["final_obs"], info["_final_obs"]]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_backends_match_reference(backend, mode):
    """Every output of every step equals the torch reference bit for bit."""
    got, ref = _trajectory(backend, mode), _trajectory("torch", mode)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_every_step_is_an_episode():
    env = metarl.make_vec("Bandit-v0", N, seed=0, autoreset_mode="same_step")
    env.reset(seed=0)
    for _ in range(5):
        _, _, te, tr, info = env.step(torch.zeros(N, dtype=torch.int64))
        assert te.all() and not tr.any() and info["_final_obs"].all()
    # next_step (gymnasium's default): each pull is followed by a reset step
    env = metarl.make_vec("Bandit-v0", N, seed=0)
    env.reset(seed=0)
    for t in range(6):
        _, r, te, tr, _ = env.step(torch.zeros(N, dtype=torch.int64))
        assert bool(te.all()) == (t % 2 == 0) and not tr.any()
        if t % 2:
            assert torch.equal(r, torch.zeros(N))


def test_reward_is_per_env_and_per_arm(backend):
    """probs one-hot at arm i % K in env i: reward 1 exactly when that arm is pulled."""
    i = torch.arange(N)
    probs = torch.nn.functional.one_hot(i % K, K).to(torch.float32)
    env = metarl.make_vec("Bandit-v0", N, seed=0, backend=backend, autoreset_mode="same_step")
    env.reset(seed=0, options={"tasks": env.task_type(probs)})
    for t in range(K):
        a = (i + t) % K
        _, r, *_ = env.step(a)
        assert torch.equal(r, (a == i % K).to(torch.float32))


def test_reward_statistics():
    """Success counts match the probabilities (fixed seed, z-tests at p = 0.001).

    Counts are sums of independent Bernoulli(p) draws with known p: per arm (pooled
    over envs) and per env (pooled over arms), z = (count - sum p) / sqrt(sum p(1-p))
    is about N(0, 1), and the sum of z^2 about chi-square.
    """
    n, steps = 50, 400
    env = metarl.make_vec("Bandit-v0", n, seed=123, autoreset_mode="same_step")
    tasks = env.sample_tasks(n, generator=torch.Generator().manual_seed(5))
    env.reset(seed=123, options={"tasks": tasks})
    i = torch.arange(n)
    success, mean, var = (torch.zeros(n, K, dtype=torch.float64) for _ in range(3))
    for t in range(steps):
        a = (i + t) % K
        _, r, *_ = env.step(a)
        p = tasks.probs[i, a].double()
        success[i, a] += r.double()
        mean[i, a] += p
        var[i, a] += p * (1 - p)
    z_arm = (success.sum(0) - mean.sum(0)) / var.sum(0).sqrt()
    assert z_arm.abs().max() < 4, z_arm
    assert (z_arm ** 2).sum() < CHI2_5_P001, z_arm
    z_env = (success.sum(1) - mean.sum(1)) / var.sum(1).sqrt()
    assert (z_env ** 2).sum() < CHI2_50_P001, z_env


def test_extreme_probabilities():
    env = metarl.make_vec("Bandit-v0", N, arms=2, seed=0, autoreset_mode="same_step")
    probs = torch.tensor([0.0, 1.0]).repeat(N, 1)
    env.reset(seed=0, options={"tasks": env.task_type(probs)})
    for _ in range(50):
        assert torch.equal(env.step(torch.zeros(N, dtype=torch.int64))[1], torch.zeros(N))
        assert torch.equal(env.step(torch.ones(N, dtype=torch.int64))[1], torch.ones(N))


def test_determinism_and_seeds():
    def rewards(seed):
        env = metarl.make_vec("Bandit-v0", 16, seed=seed, autoreset_mode="same_step")
        env.reset(seed=seed)  # default tasks: every arm 0.5
        return torch.stack([env.step(torch.full((16,), t % K))[1] for t in range(40)])

    assert torch.equal(rewards(1), rewards(1))
    assert not torch.equal(rewards(1), rewards(2))


def test_observations_in_space():
    env = metarl.make_vec("Bandit-v0", N, arms=10, seed=0)
    assert env.single_action_space.n == 10
    obs, _ = env.reset(seed=0)
    space = env.single_observation_space
    assert obs.shape == (N, 1) and obs.dtype == torch.float32
    for _ in range(6):
        assert all(space.contains(o) for o in obs.numpy())
        obs, *_ = env.step(torch.randint(0, 10, (N,)))


def test_tasks_sampled_in_range():
    env = metarl.make_vec("Bandit-v0", 4, arms=10)
    t = env.sample_tasks(10_000, generator=torch.Generator().manual_seed(0))
    assert t.probs.shape == (10_000, 10) and t.probs.dtype == torch.float32
    assert torch.all((t.probs >= 0) & (t.probs <= 1))
    # U[0, 1]: mean 1/2, variance 1/12 (10^5 draws: 5-sigma bounds)
    assert abs(t.probs.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / 1e5)
    assert abs(t.probs.var().item() - 1 / 12) < 0.002
    again = env.sample_tasks(10_000, generator=torch.Generator().manual_seed(0))
    assert t.equal(again)


def test_dependent_arms():
    env = metarl.make_vec("Bandit-v0", 8, dependent=True, seed=0)
    assert env.single_action_space.n == 2
    t = env.sample_tasks(1000, generator=torch.Generator().manual_seed(0))
    assert t.probs.shape == (1000, 2)
    assert torch.equal(t.probs[:, 1], 1 - t.probs[:, 0])
    env.set_tasks(t[:8])
    with pytest.raises(ValueError, match="probs"):
        env.set_tasks(env.task_type(torch.tensor([[0.3, 0.6]]).repeat(8, 1)))
    with pytest.raises(ValueError, match="arms"):
        metarl.make_vec("Bandit-v0", 8, dependent=True, arms=5)


def test_family_kwargs():
    assert metarl.make_vec("Bandit-v0", 8).single_action_space.n == 5
    assert metarl.make_vec("Bandit-v0", 8, arms=10).single_action_space.n == 10
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="arms"):
            metarl.make_vec("Bandit-v0", 8, arms=bad)


@pytest.mark.parametrize("probs, exc", [
    (torch.full((N, K), 1.5), ValueError),
    (torch.full((N, K), -0.1), ValueError),
    (torch.full((N, K), float("nan")), ValueError),
    (torch.full((N, K + 1), 0.5), ValueError),  # wrong number of arms
    (torch.full((N - 1, K), 0.5), ValueError),  # wrong number of envs
    (torch.full((N,), 0.5), ValueError),
    (torch.full((N, K), 0.5, dtype=torch.float64), TypeError),
])
def test_bad_tasks_raise_and_env_stays_usable(probs, exc):
    env = metarl.make_vec("Bandit-v0", N, seed=0, autoreset_mode="same_step")
    good = env.sample_tasks(N, generator=torch.Generator().manual_seed(0))
    env.reset(seed=0, options={"tasks": good})
    with pytest.raises(exc, match="probs"):
        env.set_tasks(env.task_type(probs))
    with pytest.raises(exc, match="probs"):
        env.reset(options={"tasks": env.task_type(probs)})
    assert env.tasks.equal(good)
    _, r, te, *_ = env.step(torch.zeros(N, dtype=torch.int64))
    assert te.all() and set(r.tolist()) <= {0.0, 1.0}
    with pytest.raises(TypeError):
        env.set_tasks({"probs": good.probs})
