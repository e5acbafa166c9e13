"""Bandit-v0: Bernoulli multi-armed bandits, one task (arm probabilities) per env copy."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks
from metarl.kernels.envs import bandit as kernels

DEPENDENT_ATOL = 1e-6


@dataclasses.dataclass
class BanditTasks(Tasks):
    """Per-env arm probabilities."""

    probs: torch.Tensor
    """float32 ``[n, K]``, success probability of each arm, in [0, 1]; default 0.5"""


class BanditVecEnv(TaskVectorEnv):
    """Batched K-armed Bernoulli bandit (RL^2 §4.1; Wang et al. 2016).

    An episode is one pull: every step returns ``terminated=True`` and reward 1.0
    with probability ``probs[arm]``, else 0.0. The observation is the constant 0.0
    (``[N, 1]``); a policy learns the task through its RL^2 inputs. A *trial* of n
    pulls is n episodes on one task. With ``autoreset_mode="next_step"`` (gymnasium's
    default) every other call is a reset step that ignores the action, so bandit
    trials usually run with ``autoreset_mode="same_step"``.

    Args:
        num_envs: N.
        arms: K, the number of arms (default 5; 2 when ``dependent``).
        dependent: tasks as in Wang et al. 2016: 2 arms, ``p1 ~ U[0, 1]``, ``p2 = 1 - p1``
            (``set_tasks`` then checks ``p2 = 1 - p1`` within 1e-6). Default:
            every arm i.i.d. ``U[0, 1]``.
        **kwargs: as :class:`~metarl.envs.base.TaskVectorEnv` (device, seed, ...).

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("Bandit-v0", 8, arms=10, seed=0, autoreset_mode="same_step")
        >>> env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(torch.zeros(8, dtype=torch.int64))
        >>> obs.shape, bool(terminated.all())
        (torch.Size([8, 1]), True)
    """

    env_id = "Bandit-v0"
    kernels = kernels
    task_type = BanditTasks
    max_episode_steps = 0

    def __init__(self, num_envs: int, *, arms: int | None = None, dependent: bool = False, **kwargs):
        if not isinstance(dependent, (bool, np.bool_)):
            raise TypeError(f"dependent must be a bool, got {type(dependent).__name__}")
        if arms is None:
            arms = 2 if dependent else 5
        if not isinstance(arms, (int, np.integer)) or isinstance(arms, bool) or arms < 1:
            raise ValueError(f"arms must be a positive int, got {arms!r}")
        if dependent and arms != 2:
            raise ValueError(f"dependent=True is the 2-armed bandit (p2 = 1 - p1), got arms={arms}")
        self.arms = int(arms)
        self.dependent = bool(dependent)
        super().__init__(num_envs, **kwargs)

    def _make_spaces(self):
        obs = gym.spaces.Box(0.0, 0.0, shape=(1,), dtype=np.float32)
        return obs, gym.spaces.Discrete(self.arms)

    def default_tasks(self, n: int) -> BanditTasks:
        """Every arm 0.5 (the mean of the task distribution)."""
        return BanditTasks(torch.full((n, self.arms), 0.5, dtype=torch.float32))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> BanditTasks:
        """``probs[n, K]`` i.i.d. ``U[0, 1)``; with ``dependent``: ``[p1, 1 - p1]``."""
        if self.dependent:
            p1 = torch.rand(n, generator=generator, dtype=torch.float32)
            return BanditTasks(torch.stack([p1, 1.0 - p1], 1))
        return BanditTasks(torch.rand(n, self.arms, generator=generator, dtype=torch.float32))

    def check_tasks(self, tasks: BanditTasks) -> None:
        p = tasks.probs
        if p.dim() != 2 or p.shape[1] != self.arms:
            raise ValueError(f"tasks.probs must have shape [n, {self.arms}] (arms={self.arms}), got {tuple(p.shape)}")
        if not bool(((p >= 0) & (p <= 1)).all()):  # also rejects NaN
            raise ValueError("tasks.probs must lie in [0, 1] (and be finite)")
        if self.dependent and not bool(((p[:, 0] + p[:, 1] - 1).abs() <= DEPENDENT_ATOL).all()):
            raise ValueError(f"tasks.probs must satisfy p2 = 1 - p1 (within {DEPENDENT_ATOL}) since dependent=True")
