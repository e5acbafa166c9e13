"""Pendulum-v1 with varied physics (gymnasium ``classic_control.PendulumEnv``)."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks, log_uniform
from metarl.kernels.envs import pendulum as kernels


@dataclasses.dataclass
class PendulumTasks(Tasks):
    """Per-env physics, float32 ``[n]`` each; defaults are gymnasium's constants."""

    g: torch.Tensor
    """gravity, m/s², default 10.0"""
    m: torch.Tensor
    """mass, kg, default 1.0; task range default × log-U[0.5, 2]"""
    l: torch.Tensor  # noqa: E741 - gymnasium's name
    """length, m, default 1.0; task range default × log-U[0.5, 2]"""
    max_speed: torch.Tensor
    """|θ̇| limit, rad/s, default 8.0"""
    max_torque: torch.Tensor
    """|u| limit the kernel clips actions to, N·m, default 2.0"""
    dt: torch.Tensor
    """s between updates, default 0.05"""


DEFAULTS = dict(g=10.0, m=1.0, l=1.0, max_speed=8.0, max_torque=2.0, dt=0.05)


class PendulumVecEnv(TaskVectorEnv):
    """Batched Pendulum-v1; each copy has its own mass and length (and optionally g, limits, dt).

    Observation ``[N, 3]`` (cos θ, sin θ, θ̇); action ``[N, 1]`` torque. The spaces use
    gymnasium's defaults (|θ̇| ≤ 8, |u| ≤ 2); the kernel clips each action to its env's
    own ``max_torque`` and θ̇ to its own ``max_speed``, so a task with
    ``max_speed > 8`` can leave the declared observation space.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("Pendulum-v1", 8, seed=0)
        >>> env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(torch.zeros(8, 1))
        >>> obs.shape, reward.dtype
        (torch.Size([8, 3]), torch.float32)
    """

    env_id = "Pendulum-v1"
    kernels = kernels
    task_type = PendulumTasks
    max_episode_steps = 200

    def _make_spaces(self):
        high = np.array([1.0, 1.0, DEFAULTS["max_speed"]], dtype=np.float32)
        torque = DEFAULTS["max_torque"]
        return (gym.spaces.Box(-high, high, dtype=np.float32),
                gym.spaces.Box(-torque, torque, shape=(1,), dtype=np.float32))

    def default_tasks(self, n: int) -> PendulumTasks:
        return PendulumTasks(*(torch.full((n,), v, dtype=torch.float32) for v in DEFAULTS.values()))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> PendulumTasks:
        t = self.default_tasks(n)
        for name in ("m", "l"):
            setattr(t, name, log_uniform(n, DEFAULTS[name], 0.5, 2.0, generator))
        return t

    def check_tasks(self, tasks: PendulumTasks) -> None:
        for name in ("m", "l", "max_speed", "max_torque", "dt"):
            v = getattr(tasks, name)
            if not bool((v > 0).all()) or not bool(torch.isfinite(v).all()):
                raise ValueError(f"tasks.{name} must be positive and finite")
        if not bool(torch.isfinite(tasks.g).all()):
            raise ValueError("tasks.g must be finite")
