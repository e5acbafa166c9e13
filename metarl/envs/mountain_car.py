"""MountainCar-v0 with varied physics (gymnasium ``classic_control.MountainCarEnv``)."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks, log_uniform
from metarl.kernels.envs import mountain_car as kernels


@dataclasses.dataclass
class MountainCarTasks(Tasks):
    """Per-env physics, float32 ``[n]`` each; defaults are gymnasium's constants."""

    force: torch.Tensor
    """engine push per step (velocity units), default 0.001; task range default × log-U[0.75, 1.5]"""
    gravity: torch.Tensor
    """hill pull per step (velocity units), default 0.0025; task range default × log-U[0.75, 1.25]"""


DEFAULTS = dict(force=0.001, gravity=0.0025)


class MountainCarVecEnv(TaskVectorEnv):
    """Batched MountainCar-v0; each copy has its own engine force and gravity.

    Observation ``[N, 2]`` (position, velocity) within gymnasium's box
    ([-1.2, 0.6] × [-0.07, 0.07]); action ``[N]`` in Discrete(3) (push left, none, right).

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("MountainCar-v0", 8, seed=0)
        >>> env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(torch.full((8,), 2))
        >>> obs.shape, reward[0].item()
        (torch.Size([8, 2]), -1.0)
    """

    env_id = "MountainCar-v0"
    kernels = kernels
    task_type = MountainCarTasks
    max_episode_steps = 200

    def _make_spaces(self):
        low = np.array([kernels.MIN_POSITION, -kernels.MAX_SPEED], dtype=np.float32)
        high = np.array([kernels.MAX_POSITION, kernels.MAX_SPEED], dtype=np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32), gym.spaces.Discrete(3)

    def default_tasks(self, n: int) -> MountainCarTasks:
        return MountainCarTasks(*(torch.full((n,), v, dtype=torch.float32) for v in DEFAULTS.values()))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> MountainCarTasks:
        return MountainCarTasks(force=log_uniform(n, DEFAULTS["force"], 0.75, 1.5, generator),
                                gravity=log_uniform(n, DEFAULTS["gravity"], 0.75, 1.25, generator))

    def check_tasks(self, tasks: MountainCarTasks) -> None:
        for name in ("force", "gravity"):
            v = getattr(tasks, name)
            if not bool((v > 0).all()) or not bool(torch.isfinite(v).all()):
                raise ValueError(f"tasks.{name} must be positive and finite")
