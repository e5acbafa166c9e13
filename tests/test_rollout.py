"""metarl.rollout.collect: the general path (env kernel + fused policy step in a loop) and the
fused path (env + policy for all T steps in one kernel launch), which must agree."""
import gymnasium as gym
import pytest
import torch

import metarl
from metarl.envs import TrialWrapper
from metarl.nn import RecurrentActorCritic
from metarl.rollout import collect, fused_backend, fused_reason

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
    noise = policy.sample_noise((T, N), generator=g)   # collect draws all T steps' noise first
    for t in range(T):
        torch.testing.assert_close(ro.obs[t], obs)
        assert torch.equal(ro.resets[t], reset)
        action, log_prob, value, state = policy.step(obs, state, reset, noise=noise[t])
        assert torch.equal(ro.actions[t], action)
        torch.testing.assert_close(ro.log_probs[t], log_prob, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ro.values[t], value, atol=1e-5, rtol=1e-5)
        obs, reward, te, tr, info = env2.step(action)
        assert torch.equal(ro.rewards[t], reward) and torch.equal(ro.terminated[t], te)
        reset = info["trial_start"]
    torch.testing.assert_close(ro.carry.obs, obs)
    assert torch.equal(ro.carry.reset, reset)


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


# ----------------------------------------------------------------------------- the fused path
# (env factory, T): odd N so a Triton block is partly masked; T crosses several episode and trial ends
FUSED_CASES = {
    "cartpole": (lambda b: metarl.make_vec("CartPole-v1", 19, autoreset_mode="same_step", backend=b,
                                           max_episode_steps=6), 13),
    "bandit-trials": (lambda b: TrialWrapper(metarl.make_vec("Bandit-v0", 5, arms=3, autoreset_mode="same_step",
                                                             backend=b), 4), 11),
    "tabular-trials": (lambda b: TrialWrapper(metarl.make_vec("TabularMDP-v0", 5, num_states=4, num_actions=3,
                                                              horizon=3, autoreset_mode="same_step", backend=b), 2),
                       14),
    "navigation2d (Gaussian)": (lambda b: metarl.make_vec("Navigation2D-v0", 6, autoreset_mode="same_step",
                                                          max_episode_steps=5, backend=b), 12),
    "tabular (episodes)": (lambda b: metarl.make_vec("TabularMDP-v0", 3, num_states=5, num_actions=2, horizon=4,
                                                     autoreset_mode="same_step", backend=b), 9),
}
FIELDS = ("obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated", "resets")


def _collect(make, backend, steps, fused, hidden=20, carry=None, env=None, policy=None, g=None,
             precision="fp32"):
    env = make(backend) if env is None else env
    if policy is None:
        torch.manual_seed(0)
        policy = RecurrentActorCritic(env.single_observation_space.shape[0], env.single_action_space, hidden,
                                      backend=backend, precision=precision)
    g = torch.Generator().manual_seed(7) if g is None else g
    return collect(env, policy, steps, seed=None if carry else 3, carry=carry, generator=g, fused=fused), env, policy


def _assert_same(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if x.dtype in (torch.bool, torch.int64):
            assert torch.equal(x, y), f
        else:
            torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-5, msg=f)
    torch.testing.assert_close(a.carry.obs, b.carry.obs, atol=2e-5, rtol=1e-5)
    assert torch.equal(a.carry.reset, b.carry.reset)
    for s, t in zip(a.carry.state, b.carry.state):
        torch.testing.assert_close(s, t, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_rollout_equals_the_loop(case, backend):
    """Same random numbers -> same trajectories (actions, resets, dones exact; floats to rounding)."""
    make, steps = FUSED_CASES[case]
    loop, _, _ = _collect(make, "numba", steps, fused=False)
    fused, env, policy = _collect(make, backend, steps, fused=True)
    assert fused_backend(env, policy) == backend
    _assert_same(loop, fused)
    # the kernel wrote every row: the recurrent state was reset exactly where resets says
    assert fused.resets[0].all()


@pytest.mark.parametrize("case", ["cartpole", "navigation2d (Gaussian)"])
def test_fused_rollout_equals_the_loop_in_bf16(case, backend):
    """bf16 weights: the fused kernel and the per-step kernel of the same backend agree."""
    make, steps = FUSED_CASES[case]
    loop, _, _ = _collect(make, backend, steps, fused=False, precision="bf16")
    fused, env, policy = _collect(make, backend, steps, fused=True, precision="bf16")
    assert policy.packed().precision == "bf16"
    _assert_same(loop, fused)


@pytest.mark.parametrize("case", ["cartpole", "bandit-trials"])
def test_fused_rollout_continues_from_its_carry(case):
    """Two fused collections chained by ``carry`` equal one of twice the length."""
    make, steps = FUSED_CASES[case]
    whole, _, _ = _collect(make, "numba", 2 * steps, fused=True)
    g = torch.Generator().manual_seed(7)
    first, env, policy = _collect(make, "numba", steps, fused=True, g=g)
    second, _, _ = _collect(make, "numba", steps, fused=True, carry=first.carry, env=env, policy=policy, g=g)
    for f in ("actions", "rewards", "resets", "terminated"):
        assert torch.equal(torch.cat([getattr(first, f), getattr(second, f)]), getattr(whole, f)), f
    torch.testing.assert_close(torch.cat([first.values, second.values]), whole.values)


def test_fused_path_falls_back_where_it_does_not_apply():
    # CartPole trials end by termination, so their length in steps is not known up front
    env = TrialWrapper(metarl.make_vec("CartPole-v1", 4, autoreset_mode="same_step"), 2)
    policy = RecurrentActorCritic(env.single_observation_space.shape[0], env.single_action_space, 8)
    assert fused_backend(env, policy) is None and "fixed length" in fused_reason(env, policy)
    with pytest.raises(ValueError, match="fused path does not apply"):
        collect(env, policy, 3, seed=0, fused=True)
    assert collect(env, policy, 3, seed=0).actions.shape == (3, 4)   # the general path
    # a family with no fused kernel
    env = metarl.make_vec("Pendulum-v1", 3, autoreset_mode="same_step")
    policy = RecurrentActorCritic(3, env.single_action_space, 8)
    assert fused_backend(env, policy) is None and "no fused kernel" in fused_reason(env, policy)
