"""Collecting experience: a recurrent policy acting in a batched env for T steps.

:func:`collect` runs the general path — the env's step kernel and the policy's fused
step alternate in a Python loop — and fills preallocated ``[T, N, ...]`` storage.
(The fused path that runs env + policy for all T steps in one launch, for the in-kernel
families, is not written yet: issue 4.)
"""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode


@dataclasses.dataclass
class Carry:
    """Where a collection stopped, to continue from: the next policy input ``obs [N, ...]``,
    whether the policy resets before it (``reset [N]`` bool) and its recurrent ``state``."""

    obs: torch.Tensor
    reset: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass
class Rollout:
    """One collection of ``T`` steps from ``N`` envs; row ``t`` is one policy step.

    ``resets[t]`` says the policy's state was zeroed before step t (a trial start under
    :class:`~metarl.envs.TrialWrapper`, else an episode start), so
    ``policy.evaluate(obs, actions, state0, resets)`` replays exactly what ``step`` saw.
    """

    obs: torch.Tensor          # [T, N, obs_dim] float32, the policy inputs
    actions: torch.Tensor      # [T, N] int64 (Discrete) or [T, N, d] float32 (Box)
    log_probs: torch.Tensor    # [T, N]
    values: torch.Tensor       # [T, N]
    rewards: torch.Tensor      # [T, N]
    terminated: torch.Tensor   # [T, N] bool
    truncated: torch.Tensor    # [T, N] bool
    resets: torch.Tensor       # [T, N] bool
    state0: tuple[torch.Tensor, torch.Tensor]  # (h, c) before step 0, each [N, H]
    carry: Carry               # where to continue; carry.reset marks trial (or episode) ends


def _storage(num_steps: int, env, policy) -> dict:
    n, dev = env.num_envs, env.device
    obs_dim = env.single_observation_space.shape[0]
    discrete = isinstance(env.single_action_space, gym.spaces.Discrete)
    act_shape = (num_steps, n) if discrete else (num_steps, n, *env.single_action_space.shape)
    return dict(
        obs=torch.zeros((num_steps, n, obs_dim), dtype=torch.float32, device=dev),
        actions=torch.zeros(act_shape, dtype=torch.int64 if discrete else torch.float32, device=dev),
        log_probs=torch.zeros((num_steps, n), dtype=torch.float32, device=dev),
        values=torch.zeros((num_steps, n), dtype=torch.float32, device=dev),
        rewards=torch.zeros((num_steps, n), dtype=torch.float32, device=dev),
        terminated=torch.zeros((num_steps, n), dtype=torch.bool, device=dev),
        truncated=torch.zeros((num_steps, n), dtype=torch.bool, device=dev),
        resets=torch.zeros((num_steps, n), dtype=torch.bool, device=dev),
    )


@torch.no_grad()
def collect(env, policy, num_steps: int, *, carry: Carry | None = None, seed: int | None = None,
            generator: torch.Generator | None = None) -> Rollout:
    """Run ``policy`` in ``env`` for ``num_steps`` steps of all ``N`` envs.

    Args:
        env: a metarl vector env with ``autoreset_mode="same_step"`` (every step is a
            transition), usually wrapped in :class:`~metarl.envs.TrialWrapper`.
        policy: a :class:`~metarl.nn.RecurrentActorCritic` (anything with its ``step``).
        num_steps: T.
        carry: the previous rollout's ``carry`` to continue from; ``None`` resets the env
            (with ``seed``) and starts every policy state at zero.
        generator: the torch generator the policy samples with (reproducible rollouts).

    Returns a :class:`Rollout` of ``[T, N, ...]`` tensors.

    Example::

        >>> import gymnasium as gym, metarl, torch
        >>> from metarl.envs import TrialWrapper
        >>> from metarl.nn import RecurrentActorCritic
        >>> from metarl.rollout import collect
        >>> env = TrialWrapper(metarl.make_vec("Bandit-v0", 16, arms=5, autoreset_mode="same_step"), 10)
        >>> policy = RecurrentActorCritic(env.single_observation_space.shape[0], gym.spaces.Discrete(5), 32)
        >>> ro = collect(env, policy, 20, seed=0, generator=torch.Generator().manual_seed(0))
        >>> ro.obs.shape, ro.actions.shape, bool(ro.resets[0].all())
        (torch.Size([20, 16, 8]), torch.Size([20, 16]), True)
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    if base.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
        raise ValueError("collect needs an env with autoreset_mode='same_step' (so every step is a transition)")
    if carry is None:
        obs, info = env.reset(seed=seed)
        reset = info.get("trial_start", torch.ones(env.num_envs, dtype=torch.bool, device=env.device))
        state = policy.initial_state(env.num_envs)
    else:
        obs, reset, state = carry.obs, carry.reset, carry.state
    buf = _storage(num_steps, env, policy)
    state0 = (state[0].clone(), state[1].clone())
    for t in range(num_steps):
        # act
        buf["obs"][t] = obs
        buf["resets"][t] = reset
        action, log_prob, value, state = policy.step(obs, state, reset, generator=generator)
        buf["actions"][t] = action
        buf["log_probs"][t] = log_prob
        buf["values"][t] = value
        # step the envs (same_step: obs is already the next episode's where one ended)
        obs, reward, terminated, truncated, info = env.step(action)
        buf["rewards"][t] = reward
        buf["terminated"][t] = terminated
        buf["truncated"][t] = truncated
        reset = info["trial_start"] if "trial_start" in info else terminated | truncated
    return Rollout(**buf, state0=state0, carry=Carry(obs, reset, state))
