"""HalfCheetahVel-v0: run at a target forward velocity (MAML, ProMP, PEARL)."""
from __future__ import annotations

import dataclasses

import torch

from metarl.envs.mujoco.base import HalfCheetahBase
from metarl.envs.tasks import Tasks


@dataclasses.dataclass
class HalfCheetahVelTasks(Tasks):
    goal_velocity: torch.Tensor
    """target forward velocity ``[n]`` float32, m/s; default distribution U[0, 3]"""


class HalfCheetahVelVecEnv(HalfCheetahBase):
    """HalfCheetah-v5 rewarded for running at a per-env target velocity ``v*``.

    Reward (ProMP ``HalfCheetahRandVelEnv``, PEARL ``HalfCheetahVelEnv``, MAML
    ``HalfCheetahEnvRand``)::

        r = -|v_x - v*| - 0.05 * sum(a^2),    v_x = (qpos[0]_after - qpos[0]_before) / dt

    with ``dt = 0.05`` (frame_skip 5), no alive bonus, no termination; observation and dynamics
    are HalfCheetah-v5's (17-dim obs, as ProMP; MAML and PEARL append the torso COM).
    Tasks: ``v* ~ U[0, 3]`` as ProMP and PEARL's code (MAML samples U[0, 2]:
    ``velocity_range=(0.0, 2.0)``); the default task is the range's midpoint.
    Where the sources disagree, ProMP/PEARL are followed: ``v_x`` is the root's finite difference
    (HalfCheetah-v5's ``x_velocity``), not MAML's torso COM velocity in rllab's own model.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("HalfCheetahVel-v0", 4, seed=0, max_episode_steps=200)
        >>> obs, info = env.reset(seed=0, options={"tasks": env.sample_tasks(4)})
        >>> obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 6))
        >>> obs.shape, reward.dtype
        (torch.Size([4, 17]), torch.float32)
    """

    env_id = "HalfCheetahVel-v0"
    task_type = HalfCheetahVelTasks

    def __init__(self, num_envs: int, *, velocity_range: tuple[float, float] = (0.0, 3.0), **kwargs):
        low, high = (float(v) for v in velocity_range)
        if not low <= high:
            raise ValueError(f"velocity_range must be (low, high) with low <= high, got {velocity_range!r}")
        self.velocity_range = (low, high)
        super().__init__(num_envs, **kwargs)

    def default_tasks(self, n: int) -> HalfCheetahVelTasks:
        return HalfCheetahVelTasks(torch.full((n,), sum(self.velocity_range) / 2, dtype=torch.float32))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> HalfCheetahVelTasks:
        low, high = self.velocity_range
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return HalfCheetahVelTasks((low + (high - low) * u).to(torch.float32))

    def check_tasks(self, tasks: HalfCheetahVelTasks) -> None:
        if not bool(torch.isfinite(tasks.goal_velocity).all()):
            raise ValueError("tasks.goal_velocity must be finite")

    def _reward(self, rows, velocity, action, params):
        (goal_velocity,) = params
        reward = -(velocity[:, 0] - goal_velocity).abs() - self.CTRL_COST * action.square().sum(1)
        return reward, torch.zeros_like(reward, dtype=torch.bool)
