"""Regression tests for the env-side defects of issue 18: a CUDA device on a machine without
CUDA (an ``AssertionError`` from torch instead of a clear ``ValueError``), Box actions that
require grad (a ``RuntimeError`` from ``.numpy()`` on the CPU backends), and negative or too
large seeds (accepted where gymnasium refuses them). Each bad call must also leave the object
as it was.
"""
import gymnasium as gym
import pytest
import torch
from conftest import CPU_BACKENDS

import metarl
from metarl.envs import TrialWrapper
from metarl.nn import LSTM, LSTMCell, RecurrentActorCritic

# every family with a Box action space (the CPU kernels read actions through .numpy())
BOX_FAMILIES = ["Pendulum-v1", "MountainCarContinuous-v0", "Navigation2D-v0", "SemicircleGoal-v0"]
N = 5


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA (torch's own check, which the code under test asks)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ----------------------------------------------------------------------------- CUDA without CUDA
@pytest.mark.parametrize("make", [
    lambda: metarl.make_vec("CartPole-v1", 4, device="cuda"),
    lambda: metarl.make_vec("Bandit-v0", 4, device="cuda:0", arms=3),
    lambda: metarl.envs.GymnasiumTaskVecEnv("CartPole-v1", 2, task_ranges={"length": (0.5, 1.0)}, device="cuda"),
    lambda: RecurrentActorCritic(3, gym.spaces.Discrete(2), 8, device="cuda"),
    lambda: LSTM(3, 8, device="cuda"),
    lambda: LSTMCell(3, 8, device=torch.device("cuda")),
], ids=["make_vec", "make_vec_index", "gym_adapter", "actor_critic", "lstm", "lstm_cell"])
def test_cuda_device_without_cuda_is_a_value_error(no_cuda, make):
    with pytest.raises(ValueError, match="CUDA is not available"):
        make()


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3.5])
def test_unparsable_device_is_a_value_error(device):
    with pytest.raises((ValueError, TypeError), match="device"):
        metarl.make_vec("CartPole-v1", 4, device=device)


def test_env_refuses_a_device_its_kernels_cannot_run_on():
    with pytest.raises(ValueError, match="device"):
        metarl.make_vec("CartPole-v1", 4, device="meta")


# ----------------------------------------------------------------------------- actions that require grad
def _pair(env_id, backend):
    envs = [metarl.make_vec(env_id, N, seed=3, backend=backend, autoreset_mode="same_step") for _ in range(2)]
    tasks = envs[0].sample_tasks(N, generator=torch.Generator().manual_seed(0))
    for e in envs:
        e.reset(seed=3, options={"tasks": tasks})
    return envs


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("env_id", BOX_FAMILIES)
def test_box_actions_that_require_grad_are_data(env_id, backend):
    """An action tensor straight out of a policy (requires grad) steps the env as its values do."""
    graded, plain = _pair(env_id, backend)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        a = torch.randn((N, *graded.single_action_space.shape), generator=g)
        out = graded.step((a * 1.0).requires_grad_())
        ref = plain.step(a)
        for x, y in zip(out[:4], ref[:4]):
            assert not x.requires_grad
            assert torch.equal(x, y)
        assert torch.equal(out[4]["final_obs"], ref[4]["final_obs"])


@pytest.mark.parametrize("env_id", BOX_FAMILIES)
def test_box_actions_that_require_grad_under_trial_wrapper(env_id):
    """The RL^2 input built from those actions is data too (no graph into the rollout storage)."""
    env = TrialWrapper(metarl.make_vec(env_id, N, seed=0, backend="numba", autoreset_mode="same_step"), 2)
    env.reset(seed=0)
    a = torch.zeros((N, *env.single_action_space.shape), requires_grad=True)
    obs, reward, *_ = env.step(a * 1.0)
    assert not obs.requires_grad and not reward.requires_grad


def test_box_actions_that_require_grad_gym_adapter():
    env = metarl.envs.GymnasiumTaskVecEnv("Pendulum-v1", 2, task_ranges={"g": (9.0, 11.0)})
    env.reset(seed=0)
    obs, *_ = env.step(torch.zeros((2, 1), requires_grad=True))
    assert obs.shape == (2, 3)


# ----------------------------------------------------------------------------- seeds
BAD_SEEDS = [(-1, ValueError), (-(2**63), ValueError), (2**64, ValueError), (1.5, TypeError), (True, TypeError),
             ("0", TypeError)]


@pytest.mark.parametrize("seed, exc", BAD_SEEDS)
def test_make_vec_refuses_bad_seeds(seed, exc):
    with pytest.raises(exc, match="seed"):
        metarl.make_vec("CartPole-v1", 4, seed=seed)


@pytest.mark.parametrize("seed, exc", BAD_SEEDS)
def test_reset_refuses_bad_seeds_and_changes_nothing(seed, exc):
    env = metarl.make_vec("CartPole-v1", 4, seed=0, backend="numba")
    env.reset(seed=0)
    before = env.state_dict()
    new_tasks = env.sample_tasks(4, generator=torch.Generator().manual_seed(5))
    with pytest.raises(exc, match="seed"):
        env.reset(seed=seed, options={"tasks": new_tasks})
    after = env.state_dict()
    for k, v in before.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, after[k]), k
    assert all(torch.equal(a, b) for a, b in zip(before["params"], after["params"]))


@pytest.mark.parametrize("seed, exc", BAD_SEEDS)
def test_sample_task_split_refuses_bad_seeds(seed, exc):
    env = metarl.make_vec("CartPole-v1", 4)
    with pytest.raises(exc, match="seed"):
        env.sample_task_split(3, 2, seed=seed)


@pytest.mark.parametrize("seed, exc", BAD_SEEDS)
def test_trial_wrapper_refuses_bad_seeds_and_changes_nothing(seed, exc):
    env = TrialWrapper(metarl.make_vec("Bandit-v0", 4, arms=3, seed=0, autoreset_mode="same_step"), 2)
    env.reset(seed=0)
    before = env.state_dict()
    with pytest.raises(exc, match="seed"):
        env.reset(seed=seed)
    after = env.state_dict()
    assert torch.equal(before["generator"], after["generator"])
    assert torch.equal(before["base"]["key"], after["base"]["key"])


@pytest.mark.parametrize("seed, exc", BAD_SEEDS)
def test_gym_adapter_refuses_bad_seeds(seed, exc):
    with pytest.raises(exc, match="seed"):
        metarl.envs.GymnasiumTaskVecEnv("CartPole-v1", 2, task_ranges={"length": (0.5, 1.0)}, seed=seed)
    env = metarl.envs.GymnasiumTaskVecEnv("CartPole-v1", 2, task_ranges={"length": (0.5, 1.0)})
    with pytest.raises(exc, match="seed"):
        env.reset(seed=seed)


@pytest.mark.parametrize("seed", [0, 2**64 - 1, 2**32])
def test_the_largest_seeds_are_distinct_and_accepted(seed):
    """Seeds fill 64 bits: the ends of the range are accepted and give their own streams."""
    a = metarl.make_vec("CartPole-v1", 4, seed=seed).reset(seed=seed)[0]
    b = metarl.make_vec("CartPole-v1", 4).reset(seed=(seed + 1) % 2**64)[0]
    assert not torch.equal(a, b)
