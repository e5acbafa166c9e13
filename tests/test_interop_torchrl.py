"""metarl.integrations.torchrl.MetaRLEnv under TorchRL's own code: check_env_specs on every kernel family,
rollouts with partial resets, tasks and seeding, bad input, and TorchRL's collector + GAE + ClipPPOLoss
training on it.

Threshold measured on this 2-core machine: the first-episode return of the stochastic MLP policy on 64
CartPoles is ~22 untrained and 150-250 after 16 collector batches of 2,048 frames (2 s of training).
"""
import inspect

import pytest
import torch

import metarl
from metarl.threads import limit_threads

pytest.importorskip("torchrl")
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

from metarl.integrations.torchrl import MetaRLEnv  # noqa: E402

# the kernel families (the MuJoCo and Meta-World ones need their extras: tests/test_interop_gymnasium.py)
FAMILIES = ["Bandit-v0", "TabularMDP-v0", "Navigation2D-v0", "SemicircleGoal-v0", "CartPole-v1", "Pendulum-v1",
            "MountainCar-v0", "MountainCarContinuous-v0", "Acrobot-v1"]


@pytest.mark.parametrize("env_id", FAMILIES)
def test_check_env_specs(env_id):
    """TorchRL's own check: reset and a rollout produce exactly the keys, shapes, dtypes and domains of the
    specs (check_env_specs raises otherwise)."""
    env = MetaRLEnv(metarl.make_vec(env_id, 3, autoreset_mode="disabled", seed=0))
    check_env_specs(env, seed=0)
    td = env.rollout(4, break_when_any_done=False)
    assert td.batch_size == (3, 4) and td["next", "reward"].shape == (3, 4, 1)
    assert all(env.observation_spec["observation"].is_in(td["next", "observation"][:, t]) for t in range(4))


def test_rollout_matches_the_metarl_env():
    """A rollout with TorchRL's partial resets is the metarl env's own trajectory: rewards and flags as the
    env gives them, a done copy reset by TorchRL ('_reset') while the others go on."""
    n, steps = 8, 120
    env = MetaRLEnv(metarl.make_vec("CartPole-v1", n, autoreset_mode="disabled", seed=0))
    twin = metarl.make_vec("CartPole-v1", n, autoreset_mode="disabled", seed=0)
    env.set_seed(5)
    push_towards_lean = TensorDictModule(lambda obs: (obs[:, 2] > 0).long(), in_keys=["observation"],
                                         out_keys=["action"])
    td = env.rollout(steps, policy=push_towards_lean, break_when_any_done=False)
    obs, _ = twin.reset(seed=5)
    done_total = 0
    for t in range(steps):
        torch.testing.assert_close(td["observation"][:, t], obs, rtol=0, atol=0)
        obs, reward, terminated, truncated, _ = twin.step(td["action"][:, t])
        torch.testing.assert_close(td["next", "observation"][:, t], obs, rtol=0, atol=0)
        torch.testing.assert_close(td["next", "reward"][:, t, 0], reward)
        assert torch.equal(td["next", "terminated"][:, t, 0], terminated)
        assert torch.equal(td["next", "truncated"][:, t, 0], truncated)
        done = terminated | truncated
        done_total += int(done.sum())
        if done.any():
            obs, _ = twin.reset(options={"reset_mask": done})
    assert 0 < done_total < n * steps   # some copies ended and were reset mid-rollout, others went on


def test_tasks_and_seeding():
    env = MetaRLEnv(metarl.make_vec("Bandit-v0", 4, arms=3, autoreset_mode="disabled"))
    tasks = env.sample_tasks(4, generator=torch.Generator().manual_seed(0))
    env.set_tasks(tasks)
    assert env.tasks.equal(tasks)
    one = env.sample_tasks(1, generator=torch.Generator().manual_seed(1))
    env.set_tasks(one, env_ids=[2])
    assert env.tasks[2].equal(one) and env.tasks[1].equal(tasks[1])
    env.reset(options={"tasks": tasks})
    assert env.tasks.equal(tasks)

    def rewards(seed):
        env.set_seed(seed)
        first_arm = TensorDictModule(lambda obs: torch.zeros(4, dtype=torch.int64), in_keys=["observation"],
                                     out_keys=["action"])
        return env.rollout(50, policy=first_arm, break_when_any_done=False)["next", "reward"]

    assert torch.equal(rewards(3), rewards(3)) and not torch.equal(rewards(3), rewards(4))


def test_bad_input():
    with pytest.raises(TypeError, match="metarl vector env"):
        MetaRLEnv("CartPole-v1")
    with pytest.raises(ValueError, match="autoreset_mode='disabled'"):
        MetaRLEnv(metarl.make_vec("CartPole-v1", 2, autoreset_mode="same_step"))
    env = MetaRLEnv(metarl.make_vec("CartPole-v1", 2, autoreset_mode="disabled"))
    td = env.reset()
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(td.set("action", torch.tensor([0, 5])))
    with pytest.raises(TypeError, match="options="):
        env.reset(unknown=1)
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"nope": 1})


def test_collector_and_clip_ppo_loss_learn_cartpole():
    """TorchRL's collector, GAE and ClipPPOLoss (the PPO tutorial's pieces) train an MLP policy on 64 metarl
    CartPoles: the first-episode return of the stochastic policy rises from ~22 to above 100."""
    import torchrl.collectors
    from torch import nn
    from torchrl.envs import ExplorationType, set_exploration_type
    from torchrl.modules import ProbabilisticActor, ValueOperator
    from torchrl.objectives import ClipPPOLoss
    from torchrl.objectives.value import GAE

    # torchrl 0.14 renamed SyncDataCollector to Collector
    collector_cls = getattr(torchrl.collectors, "SyncDataCollector", None) or torchrl.collectors.Collector
    n, frames, batches = 64, 64 * 32, 16
    env = MetaRLEnv(metarl.make_vec("CartPole-v1", n, autoreset_mode="disabled", seed=0))
    evaluation = MetaRLEnv(metarl.make_vec("CartPole-v1", n, autoreset_mode="disabled", seed=1))
    limit_threads(1)   # after the envs: starting Numba's pool resets torch's thread count
    torch.manual_seed(0)

    def mlp(out):
        return nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out))

    actor = ProbabilisticActor(TensorDictModule(mlp(2), in_keys=["observation"], out_keys=["logits"]),
                               in_keys=["logits"], distribution_class=torch.distributions.Categorical,
                               return_log_prob=True, spec=env.action_spec)
    critic = ValueOperator(mlp(1), in_keys=["observation"])
    advantage = GAE(gamma=0.99, lmbda=0.95, value_network=critic, average_gae=True)
    loss_module = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coeff=0.0, critic_coeff=0.5)
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=1e-3)

    def first_episode_return():
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
            td = evaluation.rollout(500, policy=actor, break_when_any_done=False)
        done = td["next", "done"].squeeze(-1)
        before_first_end = (done.cumsum(1) - done.int()) == 0
        return float((td["next", "reward"].squeeze(-1) * before_first_end).sum(1).mean())

    before = first_episode_return()
    kwargs = {"frames_per_batch": frames, "total_frames": frames * batches}
    if "auto_register_policy_transforms" in inspect.signature(collector_cls.__init__).parameters:
        kwargs["auto_register_policy_transforms"] = False   # an MLP policy needs no InitTracker
    for batch in collector_cls(env, actor, **kwargs):
        with torch.no_grad():
            advantage(batch)
        flat = batch.reshape(-1)
        for _ in range(4):
            for idx in torch.randperm(flat.numel()).split(512):
                out = loss_module(flat[idx])
                loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(loss_module.parameters(), 0.5)
                optimizer.step()
    after = first_episode_return()
    assert before < 40 and after > 100, (before, after)


def test_docstring_example():
    import doctest

    import metarl.integrations.torchrl as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
