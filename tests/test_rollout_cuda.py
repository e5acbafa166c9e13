"""The fused rollout (one Triton launch for all T steps) on a CUDA GPU against the general
loop on the same device (the env's Triton step kernel + the policy's Triton step, alternating).
Skipped without a GPU. Both consume the same random numbers; categorical actions must agree
except on near-ties of the Gumbel-max (fp32 summation orders differ), which the fixed seeds avoid.
"""
import pytest
import torch

import metarl
from metarl.envs import TrialWrapper
from metarl.nn import RecurrentActorCritic
from metarl.rollout import collect, fused_backend

pytestmark = pytest.mark.cuda

CASES = {
    "cartpole": lambda: metarl.make_vec("CartPole-v1", 4099, autoreset_mode="same_step", device="cuda"),
    "bandit-trials": lambda: TrialWrapper(metarl.make_vec("Bandit-v0", 1031, arms=5, autoreset_mode="same_step",
                                                          device="cuda"), 10),
    "tabular-trials": lambda: TrialWrapper(metarl.make_vec("TabularMDP-v0", 517, autoreset_mode="same_step",
                                                           device="cuda"), 2),
    "navigation2d": lambda: metarl.make_vec("Navigation2D-v0", 2053, autoreset_mode="same_step",
                                            max_episode_steps=20, device="cuda"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_rollout_on_gpu_equals_the_loop(case):
    results = []
    for fused in (False, True):
        env = CASES[case]()
        torch.manual_seed(0)
        policy = RecurrentActorCritic(env.single_observation_space.shape[0], env.single_action_space, 64,
                                      device="cuda")
        if fused:
            assert fused_backend(env, policy) == "triton"
        g = torch.Generator(device="cuda").manual_seed(3)
        results.append(collect(env, policy, 40, seed=1, generator=g, fused=fused))
    loop, fused = results
    if loop.actions.dtype == torch.int64:
        # an env whose Gumbel-max hit a near-tie takes another path from then on: compare the rest
        same = (loop.actions == fused.actions).all(0)
        assert same.float().mean() > 0.99
    else:
        same = torch.ones(loop.actions.shape[1], dtype=torch.bool, device="cuda")
        torch.testing.assert_close(fused.actions, loop.actions, atol=1e-4, rtol=1e-4)
    assert torch.equal(loop.resets[:, same], fused.resets[:, same])
    assert torch.equal(loop.terminated[:, same], fused.terminated[:, same])
    for name in ("values", "log_probs", "obs", "rewards"):
        torch.testing.assert_close(getattr(fused, name)[:, same], getattr(loop, name)[:, same], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_fused_rollout_on_gpu_reduced_precision(precision):
    """tf32 / bf16 gate GEMMs: the fused kernel and the per-step kernel run the same device
    function on the same weights, so they agree as the fp32 pair does."""
    results = []
    for fused in (False, True):
        env = CASES["bandit-trials"]()
        torch.manual_seed(0)
        policy = RecurrentActorCritic(env.single_observation_space.shape[0], env.single_action_space, 256,
                                      device="cuda", precision=precision)
        g = torch.Generator(device="cuda").manual_seed(3)
        results.append(collect(env, policy, 40, seed=1, generator=g, fused=fused))
    loop, fused = results
    same = (loop.actions == fused.actions).all(0)
    assert same.float().mean() > 0.99
    for name in ("values", "log_probs", "rewards"):
        torch.testing.assert_close(getattr(fused, name)[:, same], getattr(loop, name)[:, same], atol=1e-4, rtol=1e-4)
