"""AntGoal-v0: walk to a goal position in a disk of radius 3 (ProMP, PEARL)."""
from __future__ import annotations

import dataclasses
import math

import torch

from metarl.envs.mujoco.base import AntBase
from metarl.envs.tasks import Tasks


@dataclasses.dataclass
class AntGoalTasks(Tasks):
    goal: torch.Tensor
    """``[n, 2]`` float32 goal position (m); default distribution uniform in the disk of radius 3
    (angle ``U[0, 2π)``, radius ``3·sqrt(U[0, 1])``)"""


class AntGoalVecEnv(AntBase):
    """Ant-v5 rewarded for approaching a per-env goal ``g`` in the plane.

    Reward (ProMP ``AntRandGoalEnv``, PEARL ``AntGoalEnv``)::

        r = -||xpos_torso[:2] - g||_1 - 0.1 * sum(a^2) - 5e-4 * sum(clip(cfrc_ext, -1, 1)^2)

    with the torso position after the step as ``get_body_com("torso")`` reads it (``xpos``), no
    alive bonus and **no termination** (both sources: with a reward that is always negative,
    Ant-v5's unhealthy termination would pay the agent for falling over). The observation is
    Ant-v5's with the torso's x, y kept (gymnasium's ``exclude_current_positions_from_observation=
    False``: 107-dim), since the goal is absolute — the sources observe them too (113-dim with the
    world body's zero contact forces). Dynamics and reset are Ant-v5's. MAML samples the square
    [-3, 3]² with an offset +4 and a 0.05 alive bonus; ProMP/PEARL are followed. Default task: the origin.
    Family option ``radius`` (default 3.0).

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("AntGoal-v0", 2, seed=0)
        >>> obs, info = env.reset(seed=0, options={"tasks": env.sample_tasks(2)})
        >>> obs.shape, bool((env.tasks.goal.norm(dim=1) <= 3).all())
        (torch.Size([2, 107]), True)
    """

    env_id = "AntGoal-v0"
    task_type = AntGoalTasks
    skipped_qpos = 0
    CTRL_COST = 0.1

    def __init__(self, num_envs: int, *, radius: float = 3.0, **kwargs):
        if not isinstance(radius, (int, float)) or not 0 < radius < math.inf:
            raise ValueError(f"radius must be a positive number, got {radius!r}")
        self.radius = float(radius)
        super().__init__(num_envs, **kwargs)

    def default_tasks(self, n: int) -> AntGoalTasks:
        return AntGoalTasks(torch.zeros(n, 2, dtype=torch.float32))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> AntGoalTasks:
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        angle, r = 2 * math.pi * u[:, 0], self.radius * u[:, 1].sqrt()
        return AntGoalTasks(torch.stack((r * torch.cos(angle), r * torch.sin(angle)), 1).to(torch.float32))

    def check_tasks(self, tasks: AntGoalTasks) -> None:
        if not bool(torch.isfinite(tasks.goal).all()):
            raise ValueError("tasks.goal must be finite")

    def _reward(self, rows, velocity, action, params):
        (goal,) = params
        xy = rows[:, self.layout.extras:self.layout.extras + 2]
        reward = (-(xy - goal).abs().sum(1) - self.CTRL_COST * action.square().sum(1)
                  - self.CONTACT_COST * self._contact_cost(rows))
        return reward, torch.zeros_like(reward, dtype=torch.bool)
