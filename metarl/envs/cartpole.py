"""CartPole-v1 with varied physics (gymnasium ``classic_control.CartPoleEnv``)."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks, log_uniform
from metarl.kernels.envs import cartpole as kernels


@dataclasses.dataclass
class CartPoleTasks(Tasks):
    """Per-env physics, float32 ``[n]`` each; defaults are gymnasium's constants."""

    gravity: torch.Tensor
    """m/s², default 9.8"""
    masscart: torch.Tensor
    """kg, default 1.0; task range default × log-U[0.5, 2]"""
    masspole: torch.Tensor
    """kg, default 0.1; task range default × log-U[0.5, 2]"""
    length: torch.Tensor
    """half the pole's length, m, default 0.5; task range default × log-U[0.5, 2]"""
    force_mag: torch.Tensor
    """N, default 10.0; task range default × log-U[0.5, 2]"""
    tau: torch.Tensor
    """s between updates, default 0.02"""


DEFAULTS = dict(gravity=9.8, masscart=1.0, masspole=0.1, length=0.5, force_mag=10.0, tau=0.02)


class CartPoleVecEnv(TaskVectorEnv):
    """Batched CartPole-v1; each copy has its own masses, pole length and force.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("CartPole-v1", 8, seed=0)
        >>> env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(torch.ones(8, dtype=torch.int64))
        >>> obs.shape, reward.dtype
        (torch.Size([8, 4]), torch.float32)
    """

    env_id = "CartPole-v1"
    kernels = kernels
    task_type = CartPoleTasks
    max_episode_steps = 500

    def _make_spaces(self):
        high = np.array([kernels.X_THRESHOLD * 2, np.inf, kernels.THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        return gym.spaces.Box(-high, high, dtype=np.float32), gym.spaces.Discrete(2)

    def default_tasks(self, n: int) -> CartPoleTasks:
        return CartPoleTasks(*(torch.full((n,), v, dtype=torch.float32) for v in DEFAULTS.values()))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> CartPoleTasks:
        t = self.default_tasks(n)
        for name in ("masscart", "masspole", "length", "force_mag"):
            setattr(t, name, log_uniform(n, DEFAULTS[name], 0.5, 2.0, generator))
        return t

    def check_tasks(self, tasks: CartPoleTasks) -> None:
        for name in ("masscart", "masspole", "length", "force_mag", "tau"):
            v = getattr(tasks, name)
            if not bool((v > 0).all()) or not bool(torch.isfinite(v).all()):
                raise ValueError(f"tasks.{name} must be positive and finite")
        if not bool(torch.isfinite(tasks.gravity).all()):
            raise ValueError("tasks.gravity must be finite")
