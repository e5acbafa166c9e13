"""Point-mass goal reaching: Navigation2D-v0 (MAML) and SemicircleGoal-v0 (MAESN).

Both move a point from the origin by clipped steps ``pos += clip(a, -0.1, 0.1)``
towards a hidden per-env goal; the observation is the position only, so the
goal must be inferred from rewards. They differ in the goal layout and the reward:

- ``Navigation2D-v0``: goals ``U[-0.5, 0.5]²``, dense reward ``-‖pos - goal‖₂``,
  terminated within 0.01 of the goal on both axes, 100 steps. As the MAML authors'
  code (clipped actions, goals in ``[-0.5, 0.5]``; their code uses inner lr 0.5 for
  this env, the paper text says 0.1 and unclipped).
- ``SemicircleGoal-v0``: goals ``2·(cos φ, sin φ)``, ``φ ~ U[0, π]``, sparse reward
  1 within 0.8 of the goal, never terminated, 200 steps (MAESN's goal layout).
"""
from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks
from metarl.kernels.envs import navigation2d as nav_kernels
from metarl.kernels.envs import semicircle_goal as semicircle_kernels


@dataclasses.dataclass
class GoalTasks(Tasks):
    """Per-env goal positions (shared by both point families)."""

    goal: torch.Tensor
    """float32 ``[n, 2]``: the goal ``(gx, gy)`` in the plane (hidden from the agent)"""


class _PointGoalVecEnv(TaskVectorEnv):
    """Shared spaces and task checks of the point-mass goal families."""

    task_type = GoalTasks

    def _make_spaces(self):
        obs = gym.spaces.Box(-np.inf, np.inf, (2,), dtype=np.float32)
        act = gym.spaces.Box(-nav_kernels.MAX_ACTION, nav_kernels.MAX_ACTION, (2,), dtype=np.float32)
        return obs, act

    def check_tasks(self, tasks: GoalTasks) -> None:
        if not bool(torch.isfinite(tasks.goal).all()):
            raise ValueError("tasks.goal must be finite (no NaN or inf)")


class Navigation2DVecEnv(_PointGoalVecEnv):
    """Batched Navigation2D-v0: each copy walks to its own goal in ``[-0.5, 0.5]²``.

    Observation ``[N, 2]`` (position), action ``[N, 2]`` float in ``[-0.1, 0.1]``
    (clipped), reward ``-‖pos - goal‖₂`` after the move, terminated within 0.01 of
    the goal on both axes, truncated after 100 steps.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("Navigation2D-v0", 8, seed=0)
        >>> obs, info = env.reset(options={"tasks": env.sample_tasks(8)})
        >>> obs, reward, terminated, truncated, info = env.step(torch.full((8, 2), 0.1))
        >>> obs[0].tolist(), reward.shape
        ([0.10000000149011612, 0.10000000149011612], torch.Size([8]))
    """

    env_id = "Navigation2D-v0"
    kernels = nav_kernels
    max_episode_steps = 100

    def default_tasks(self, n: int) -> GoalTasks:
        """Goal at the origin (the source env's default before a task is set)."""
        return GoalTasks(torch.zeros((n, 2), dtype=torch.float32))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> GoalTasks:
        """Goals ``U[-0.5, 0.5]²``, float32 ``[n, 2]``."""
        u = torch.rand((n, 2), generator=generator, dtype=torch.float64)
        return GoalTasks((u - 0.5).to(torch.float32))


class SemicircleGoalVecEnv(_PointGoalVecEnv):
    """Batched SemicircleGoal-v0: sparse reward near a goal on the upper semicircle of radius 2.

    Observation ``[N, 2]`` (position), action ``[N, 2]`` float in ``[-0.1, 0.1]``
    (clipped), reward 1 when ``‖pos - goal‖₂ < 0.8`` else 0, never terminated,
    truncated after 200 steps.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("SemicircleGoal-v0", 4, seed=0)
        >>> tasks = env.sample_tasks(4, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(tasks.goal.norm(dim=1), torch.full((4,), 2.0)))
        True
    """

    env_id = "SemicircleGoal-v0"
    kernels = semicircle_kernels
    max_episode_steps = 200

    def default_tasks(self, n: int) -> GoalTasks:
        """Goal straight ahead at ``(0, 2)`` (angle π/2)."""
        goal = torch.zeros((n, 2), dtype=torch.float32)
        goal[:, 1] = semicircle_kernels.RADIUS
        return GoalTasks(goal)

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> GoalTasks:
        """Goals ``2·(cos φ, sin φ)`` with ``φ ~ U[0, π]``, float32 ``[n, 2]``."""
        phi = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        goal = semicircle_kernels.RADIUS * torch.stack((torch.cos(phi), torch.sin(phi)), 1)
        return GoalTasks(goal.to(torch.float32))
