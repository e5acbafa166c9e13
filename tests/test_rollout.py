"""metarl.rollout.collect: the general path (env kernel + fused policy step in a loop)."""
import gymnasium as gym
import pytest
import torch

import metarl
from metarl.envs import TrialWrapper
from metarl.nn import RecurrentActorCritic
from metarl.rollout import collect

N, T, ARMS, EPISODES = 7, 23, 5, 4   # T not a multiple of the trial length


def _setup(seed=0):
    env = TrialWrapper(metarl.make_vec("Bandit-v0", N, arms=ARMS, seed=seed, autoreset_mode="same_step"),
                       episodes_per_trial=EPISODES)
    torch.manual_seed(seed)
    policy = RecurrentActorCritic(env.single_observation_space.shape[0], gym.spaces.Discrete(ARMS), 16)
    return env, policy


def test_collect_equals_a_hand_written_loop():
    env, policy = _setup()
    ro = collect(env, policy, T, seed=3, generator=torch.Generator().manual_seed(5))

    env2, _ = _setup()
    g = torch.Generator().manual_seed(5)
    obs, info = env2.reset(seed=3)
    reset, state = info["trial_start"], policy.initial_state(N)
    for t in range(T):
        assert torch.equal(ro.obs[t], obs) and torch.equal(ro.resets[t], reset)
        action, log_prob, value, state = policy.step(obs, state, reset, generator=g)
        assert torch.equal(ro.actions[t], action)
        torch.testing.assert_close(ro.log_probs[t], log_prob)
        torch.testing.assert_close(ro.values[t], value)
        obs, reward, te, tr, info = env2.step(action)
        assert torch.equal(ro.rewards[t], reward) and torch.equal(ro.terminated[t], te)
        reset = info["trial_start"]
    assert torch.equal(ro.carry.obs, obs) and torch.equal(ro.carry.reset, reset)


def test_trial_starts_every_n_episodes_and_evaluate_replays_the_steps():
    env, policy = _setup()
    ro = collect(env, policy, T, seed=0, generator=torch.Generator().manual_seed(0))
    # bandit: one pull per episode, so trials start every EPISODES steps
    expect = torch.zeros(T, dtype=torch.bool)
    expect[::EPISODES] = True
    assert torch.equal(ro.resets, expect[:, None].expand(T, N))
    log_prob, entropy, value = policy.evaluate(ro.obs, ro.actions, ro.state0, ro.resets)
    torch.testing.assert_close(log_prob, ro.log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(value, ro.values, atol=1e-5, rtol=1e-5)


def test_continuing_from_carry_equals_one_long_collection():
    env, policy = _setup()
    g = torch.Generator().manual_seed(1)
    whole = collect(env, policy, 2 * T, seed=2, generator=g)
    env, _ = _setup()
    g = torch.Generator().manual_seed(1)
    first = collect(env, policy, T, seed=2, generator=g)
    second = collect(env, policy, T, carry=first.carry, generator=g)
    assert torch.equal(torch.cat([first.actions, second.actions]), whole.actions)
    assert torch.equal(torch.cat([first.rewards, second.rewards]), whole.rewards)


def test_bad_arguments():
    env, policy = _setup()
    with pytest.raises(ValueError, match="num_steps"):
        collect(env, policy, 0)
    with pytest.raises(ValueError, match="same_step"):
        collect(metarl.make_vec("Bandit-v0", N, arms=ARMS), policy, 3)
