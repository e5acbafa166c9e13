"""Collecting experience: a recurrent policy acting in a batched env for T steps.

:func:`collect` fills preallocated ``[T, N, ...]`` storage by one of two paths:

* **fused** — for the in-kernel families (Bandit, TabularMDP, Navigation2D, CartPole) with a
  :class:`~metarl.nn.RecurrentActorCritic`: env step + policy step for all T steps in one
  kernel launch (:mod:`metarl.kernels.rollout`: Triton on a GPU, one Numba call with BLAS on
  the CPU). Under a :class:`~metarl.envs.TrialWrapper` the kernel runs in segments that end
  where trials end (new tasks are drawn on the host), which needs episodes of a fixed length
  (Bandit, TabularMDP); CartPole and Navigation2D trials take the general path.
* **general** — any metarl vector env: the env's step and the policy's fused step alternate
  in a Python loop.

Both consume the same random numbers (the policy's noise for all T steps is drawn up front
with ``generator``; the envs draw from their own counter-based streams), so they give the
same trajectories up to float32 rounding of the gate GEMM (different BLAS summation orders).
"""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode

from metarl.kernels import rollout as rollout_kernels
from metarl.kernels.actor_critic import resolve_backend as policy_backend


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


def fused_backend(env, policy) -> str | None:
    """The backend the fused path would use for ``env`` and ``policy``, or ``None`` when it
    does not apply (then :func:`collect` takes the general path); :func:`fused_reason` says why."""
    return _fused_plan(env, policy)[0]


def fused_reason(env, policy) -> str:
    """Why the fused path does not apply (empty when it does)."""
    return _fused_plan(env, policy)[1]


def _fused_plan(env, policy) -> tuple[str | None, str]:
    from metarl.envs import TaskVectorEnv, TrialWrapper
    from metarl.nn import RecurrentActorCritic

    trial = isinstance(env, TrialWrapper)
    base = env.env if trial else env
    if not isinstance(base, TaskVectorEnv):
        return None, f"the env is not a metarl TaskVectorEnv (directly or under TrialWrapper): {type(base).__name__}"
    if base.kernels not in rollout_kernels.FAMILIES:
        return None, f"no fused kernel for {base.kernels.__name__.rsplit('.', 1)[-1]}"
    if type(policy) is not RecurrentActorCritic:
        return None, f"the policy is not a RecurrentActorCritic: {type(policy).__name__}"
    if policy.device != base.device:
        return None, f"the policy is on {policy.device}, the env on {base.device}"
    if trial and base.episode_lengths() is None:
        return None, "trials of this family have no fixed length in steps (episodes end by termination)"
    env_b = base.backend
    pol_b = policy_backend(policy.backend, policy.device)
    if "torch" in (env_b, pol_b):
        return "torch", ""
    if env_b == "triton" or pol_b == "triton":
        if env_b != pol_b and base.device.type == "cpu":
            return None, f"env backend {env_b!r} and policy backend {pol_b!r} differ"
        return "triton", ""
    return "numba", ""


def _collect_fused(env, policy, backend, num_steps, obs, reset, state, noise) -> Rollout:
    from metarl.envs import TrialWrapper

    trial = isinstance(env, TrialWrapper)
    base = env.env if trial else env
    n, dev = base.num_envs, base.device
    buf = _storage(num_steps, env, policy)
    x = obs.shape[1]
    inp = torch.empty((num_steps + 1, n, x), dtype=torch.float32, device=dev)
    resets = torch.empty((num_steps + 1, n), dtype=torch.bool, device=dev)
    inp[0] = obs
    resets[0] = reset
    h, c = state[0].clone(), state[1].clone()
    state0 = (state[0].clone(), state[1].clone())
    packed = policy.packed()
    out_names = ("actions", "log_probs", "values", "rewards", "terminated", "truncated")
    *buffers, key = base.kernel_buffers()   # (state, elapsed, needs_reset, counter, params), key
    elapsed = buffers[1]
    length = base.episode_lengths() if trial else None
    t = 0
    while t < num_steps:
        seg = num_steps - t
        if trial:   # run up to the first trial end: its new task is drawn here, on the host
            left = (env.episodes_per_trial - env.episodes - 1) * length + (length - elapsed.long())
            seg = min(seg, int(left.min()))
        out = tuple(buf[name][t:t + seg] for name in out_names)
        rollout_kernels.fused_rollout(
            base.kernels, tuple(buffers), key, base.max_episode_steps, packed, inp[t:t + seg + 1],
            resets[t:t + seg + 1], h, c, noise[t:t + seg], out, episodes=env.episodes if trial else None,
            episodes_per_trial=env.episodes_per_trial if trial else 0, backend=backend)
        t += seg
        if trial:
            new_obs = env.start_trials(resets[t])
            if new_obs is not None:
                ids = resets[t]
                inp[t, ids] = 0.0
                inp[t, ids, :base.obs_dim] = new_obs[ids].reshape(-1, base.obs_dim)
    buf["obs"] = inp[:num_steps]
    buf["resets"] = resets[:num_steps]
    return Rollout(**buf, state0=state0, carry=Carry(inp[num_steps], resets[num_steps], (h, c)))


@torch.no_grad()
def collect(env, policy, num_steps: int, *, carry: Carry | None = None, seed: int | None = None,
            generator: torch.Generator | None = None, fused: bool | None = None,
            shard: tuple[int, int] = (0, 1)) -> Rollout:
    """Run ``policy`` in ``env`` for ``num_steps`` steps of all ``N`` envs.

    Args:
        env: a metarl vector env with ``autoreset_mode="same_step"`` (every step is a
            transition), usually wrapped in :class:`~metarl.envs.TrialWrapper`.
        policy: a :class:`~metarl.nn.RecurrentActorCritic` (anything with its ``step``).
        num_steps: T.
        carry: the previous rollout's ``carry`` to continue from; ``None`` resets the env
            (with ``seed``) and starts every policy state at zero.
        generator: the torch generator the policy samples with (reproducible rollouts).
        fused: ``None`` (default) takes the fused path where it applies (:func:`fused_backend`),
            ``True`` requires it (``ValueError`` saying why when it does not apply), ``False``
            forces the general Python loop.
        shard: ``(index, count)``: ``env`` holds rows ``[index·N, (index+1)·N)`` of a batch of
            ``count·N`` copies (one data-parallel rank's, :mod:`metarl.distributed`): the noise is drawn
            for the whole batch and those rows kept, as a one-process run over the batch draws it.

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
    index, count = shard
    noise = policy.sample_noise((num_steps, env.num_envs * count), generator=generator)
    if count > 1:
        noise = noise[:, index * env.num_envs:(index + 1) * env.num_envs].contiguous()
    if fused is not False:
        backend, why = _fused_plan(env, policy)
        if backend is not None:
            return _collect_fused(env, policy, backend, num_steps, obs, reset, state, noise)
        if fused:
            raise ValueError(f"collect(fused=True): the fused path does not apply: {why}")
    buf = _storage(num_steps, env, policy)
    state0 = (state[0].clone(), state[1].clone())
    for t in range(num_steps):
        # act
        buf["obs"][t] = obs
        buf["resets"][t] = reset
        action, log_prob, value, state = policy.step(obs, state, reset, noise=noise[t])
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
