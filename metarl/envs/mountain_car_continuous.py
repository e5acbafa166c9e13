"""MountainCarContinuous-v0 with varied engine power (gymnasium ``classic_control.Continuous_MountainCarEnv``)."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks, log_uniform
from metarl.kernels.envs import mountain_car_continuous as kernels


@dataclasses.dataclass
class MountainCarContinuousTasks(Tasks):
    """Per-env physics, float32 ``[n]``; the default is gymnasium's constant."""

    power: torch.Tensor
    """velocity gained per step per unit action, default 0.0015; task range default × log-U[0.75, 1.5]"""


DEFAULTS = dict(power=0.0015)


class MountainCarContinuousVecEnv(TaskVectorEnv):
    """Batched MountainCarContinuous-v0; each copy has its own engine power.

    Observation ``[N, 2]`` (position, velocity) within gymnasium's box
    ([-1.2, 0.6] × [-0.07, 0.07]); action ``[N, 1]`` in [-1, 1] (the kernel clips the
    force; the reward's ``-0.1 a²`` uses the action as given, as gymnasium does).

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("MountainCarContinuous-v0", 8, seed=0)
        >>> env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(torch.ones(8, 1))
        >>> obs.shape, round(reward[0].item(), 4)
        (torch.Size([8, 2]), -0.1)
    """

    env_id = "MountainCarContinuous-v0"
    kernels = kernels
    task_type = MountainCarContinuousTasks
    max_episode_steps = 999

    def _make_spaces(self):
        low = np.array([kernels.MIN_POSITION, -kernels.MAX_SPEED], dtype=np.float32)
        high = np.array([kernels.MAX_POSITION, kernels.MAX_SPEED], dtype=np.float32)
        return (gym.spaces.Box(low, high, dtype=np.float32),
                gym.spaces.Box(kernels.MIN_ACTION, kernels.MAX_ACTION, shape=(1,), dtype=np.float32))

    def default_tasks(self, n: int) -> MountainCarContinuousTasks:
        return MountainCarContinuousTasks(power=torch.full((n,), DEFAULTS["power"], dtype=torch.float32))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> MountainCarContinuousTasks:
        return MountainCarContinuousTasks(power=log_uniform(n, DEFAULTS["power"], 0.75, 1.5, generator))

    def check_tasks(self, tasks: MountainCarContinuousTasks) -> None:
        v = tasks.power
        if not bool((v > 0).all()) or not bool(torch.isfinite(v).all()):
            raise ValueError("tasks.power must be positive and finite")
