"""TabularMDP-v0: random finite-horizon tabular MDPs, one MDP (task) per env copy."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks
from metarl.kernels.envs import tabular_mdp as kernels

ROW_SUM_ATOL = 1e-4


@dataclasses.dataclass
class TabularMDPTasks(Tasks):
    """Per-env MDP parameters (S states, A actions), float32."""

    mean_reward: torch.Tensor
    """``[n, S, A]``, mean of the reward for taking action a in state s (the reward is
    ``N(mean, 1)``); task distribution ``N(1, 1)``; default 1.0"""
    transitions: torch.Tensor
    """``[n, S, A, S]``, ``P(s' | s, a)``: non-negative rows summing to 1; task
    distribution ``Dirichlet(1, ..., 1)``; default uniform ``1/S``"""


def _is_int_arg(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class TabularMDPVecEnv(TaskVectorEnv):
    """Batched random tabular MDP (RL^2 §4.2), a finite-horizon MDP per env copy.

    Every episode starts in state 0 and lasts exactly ``horizon`` steps: the
    ``horizon``-th step returns ``terminated=True`` (the horizon is part of the MDP,
    not a time limit, so nothing is truncated unless ``max_episode_steps`` is set).
    Each step gives reward ``N(mean_reward[s, a], 1)`` and moves to
    ``s' ~ transitions[s, a, :]``. The observation is the one-hot state ``[N, S]``.
    The state (``get_state``/``set_state``) is ``[N, 2]`` float32: the MDP state and
    the step within the episode, t in ``[0, horizon]`` (integers held as floats;
    ``t == horizon`` after the last step until the env is reset).

    Args:
        num_envs: N.
        num_states: S (default 10).
        num_actions: A (default 5).
        horizon: T, steps per episode (default 10).
        **kwargs: as :class:`~metarl.envs.base.TaskVectorEnv` (device, seed, ...).

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("TabularMDP-v0", 8, seed=0)
        >>> env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, env.optimal_value().shape
        (torch.Size([8, 10]), torch.Size([8]))
    """

    env_id = "TabularMDP-v0"
    kernels = kernels
    task_type = TabularMDPTasks
    max_episode_steps = 0

    def __init__(self, num_envs: int, *, num_states: int = 10, num_actions: int = 5, horizon: int = 10, **kwargs):
        for name, v in (("num_states", num_states), ("num_actions", num_actions), ("horizon", horizon)):
            if not _is_int_arg(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if horizon >= 2 ** 24:
            raise ValueError(f"horizon must be below 2**24 (the step is held as float32), got {horizon}")
        self.num_states = int(num_states)
        self.num_actions = int(num_actions)
        self.horizon = int(horizon)
        super().__init__(num_envs, **kwargs)

    def _kernel_params(self):
        # The kernels take the horizon as a third param, horizon[N] int32, after the task fields.
        horizon = torch.full((self.num_envs,), self.horizon, dtype=torch.int32, device=self.device)
        return self._params + (horizon,)

    def _make_spaces(self):
        obs = gym.spaces.Box(0.0, 1.0, shape=(self.num_states,), dtype=np.float32)
        return obs, gym.spaces.Discrete(self.num_actions)

    def default_tasks(self, n: int) -> TabularMDPTasks:
        """The task distribution's mean: mean reward 1.0, uniform transitions ``1/S``."""
        s, a = self.num_states, self.num_actions
        return TabularMDPTasks(torch.ones((n, s, a), dtype=torch.float32),
                               torch.full((n, s, a, s), 1.0 / s, dtype=torch.float32))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> TabularMDPTasks:
        """``mean_reward ~ N(1, 1)``; ``transitions[s, a] ~ Dirichlet(1, ..., 1)`` (normalised
        ``Exp(1)`` draws, ``-log(1 - u)``, in float64). Reproducible from ``generator``."""
        s, a = self.num_states, self.num_actions
        mean_reward = 1.0 + torch.randn((n, s, a), generator=generator, dtype=torch.float32)
        u = torch.rand((n, s, a, s), generator=generator, dtype=torch.float64)
        e = -torch.log1p(-u)
        transitions = (e / e.sum(-1, keepdim=True)).to(torch.float32)
        return TabularMDPTasks(mean_reward, transitions)

    def check_tasks(self, tasks: TabularMDPTasks) -> None:
        s, a = self.num_states, self.num_actions
        mr, p = tasks.mean_reward, tasks.transitions
        if tuple(mr.shape[1:]) != (s, a):
            raise ValueError(f"tasks.mean_reward must have shape [n, {s}, {a}], got {tuple(mr.shape)}")
        if tuple(p.shape[1:]) != (s, a, s):
            raise ValueError(f"tasks.transitions must have shape [n, {s}, {a}, {s}], got {tuple(p.shape)}")
        if not bool(torch.isfinite(mr).all()):
            raise ValueError("tasks.mean_reward must be finite")
        if not bool(torch.isfinite(p).all()):
            raise ValueError("tasks.transitions must be finite")
        if not bool((p >= 0).all()):
            raise ValueError("tasks.transitions must be non-negative")
        if not bool(((p.sum(-1, dtype=torch.float64) - 1).abs() <= ROW_SUM_ATOL).all()):
            raise ValueError(f"tasks.transitions rows (over the last axis) must sum to 1 within {ROW_SUM_ATOL}")

    def check_state(self, state: torch.Tensor) -> None:
        s, t = state[:, 0], state[:, 1]
        if not bool(((s == s.round()) & (s >= 0) & (s < self.num_states)).all()):
            raise ValueError(f"state[:, 0] (the MDP state) must be an integer in [0, {self.num_states})")
        # t == horizon is an ended episode (what get_state shows before the reset): accepted
        # so that get_state/set_state round-trip; stepping it terminates at once.
        if not bool(((t == t.round()) & (t >= 0) & (t <= self.horizon)).all()):
            raise ValueError(f"state[:, 1] (the step in the episode) must be an integer in [0, {self.horizon}]")

    def optimal_value(self) -> torch.Tensor:
        """Expected return ``[N]`` float32 of an optimal policy over one episode from state 0.

        Finite-horizon value iteration with the known task parameters, in float64:
        ``V_T = 0``, ``V_t(s) = max_a (mean_reward[s, a] + sum_s' P(s'|s, a) V_{t+1}(s'))``;
        returns ``V_0(0)``. The RL^2 paper reports about 21.8 on average over tasks
        for S = 10, A = 5, T = 10.
        """
        mean_reward, transitions = (p.to(torch.float64) for p in self._params)
        v = torch.zeros(mean_reward.shape[:2], dtype=torch.float64, device=self.device)
        for _ in range(self.horizon):
            q = mean_reward + torch.einsum("nsaj,nj->nsa", transitions, v)
            v = q.amax(-1)
        return v[:, 0].to(torch.float32)
