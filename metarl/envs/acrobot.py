"""Acrobot-v1 with varied physics (gymnasium ``classic_control.AcrobotEnv``)."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks, log_uniform
from metarl.kernels.envs import acrobot as kernels


@dataclasses.dataclass
class AcrobotTasks(Tasks):
    """Per-env physics, float32 ``[n]`` each; defaults are gymnasium's constants."""

    link_length_1: torch.Tensor
    """m, default 1.0; task range default × log-U[0.5, 2]"""
    link_length_2: torch.Tensor
    """m, default 1.0; task range default × log-U[0.5, 2]. As in gymnasium it does not
    enter the dynamics or the termination (gymnasium only draws with it)."""
    link_mass_1: torch.Tensor
    """kg, default 1.0; task range default × log-U[0.5, 2]"""
    link_mass_2: torch.Tensor
    """kg, default 1.0; task range default × log-U[0.5, 2]"""
    link_com_pos_1: torch.Tensor
    """m from the fixed joint to link 1's centre of mass, default 0.5"""
    link_com_pos_2: torch.Tensor
    """m from the middle joint to link 2's centre of mass, default 0.5"""
    link_moi: torch.Tensor
    """kg·m², moment of inertia of each link, default 1.0"""
    dt: torch.Tensor
    """s, the RK4 step per env step, default 0.2"""


DEFAULTS = dict(link_length_1=1.0, link_length_2=1.0, link_mass_1=1.0, link_mass_2=1.0,
                link_com_pos_1=0.5, link_com_pos_2=0.5, link_moi=1.0, dt=0.2)
SAMPLED = ("link_length_1", "link_length_2", "link_mass_1", "link_mass_2")
POSITIVE = ("link_length_1", "link_length_2", "link_mass_1", "link_mass_2", "link_moi", "dt")
NON_NEGATIVE = ("link_com_pos_1", "link_com_pos_2")


class AcrobotVecEnv(TaskVectorEnv):
    """Batched Acrobot-v1; each copy has its own link masses and lengths.

    Observation ``[N, 6]`` (cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2), action ``[N]`` in
    ``{0, 1, 2}`` (torque −1, 0, +1), reward −1 per step (0 on the terminating one),
    truncated after 500 steps. ``get_state``/``set_state`` use gymnasium's order
    ``(θ1, θ2, θ̇1, θ̇2)``.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("Acrobot-v1", 8, seed=0)
        >>> env.set_tasks(env.sample_tasks(8, generator=torch.Generator().manual_seed(0)))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(torch.full((8,), 2))
        >>> obs.shape, reward[0].item()
        (torch.Size([8, 6]), -1.0)
    """

    env_id = "Acrobot-v1"
    kernels = kernels
    task_type = AcrobotTasks
    max_episode_steps = 500

    def _make_spaces(self):
        high = np.array([1.0, 1.0, 1.0, 1.0, kernels.MAX_VEL_1, kernels.MAX_VEL_2], dtype=np.float32)
        return gym.spaces.Box(-high, high, dtype=np.float32), gym.spaces.Discrete(3)

    def default_tasks(self, n: int) -> AcrobotTasks:
        return AcrobotTasks(*(torch.full((n,), v, dtype=torch.float32) for v in DEFAULTS.values()))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> AcrobotTasks:
        """Link masses and lengths ``default × log-U[0.5, 2]``; the other fields at their defaults."""
        t = self.default_tasks(n)
        for name in SAMPLED:
            setattr(t, name, log_uniform(n, DEFAULTS[name], 0.5, 2.0, generator))
        return t

    def check_tasks(self, tasks: AcrobotTasks) -> None:
        for name in POSITIVE:
            v = getattr(tasks, name)
            if not bool((v > 0).all()) or not bool(torch.isfinite(v).all()):
                raise ValueError(f"tasks.{name} must be positive and finite")
        for name in NON_NEGATIVE:
            v = getattr(tasks, name)
            if not bool((v >= 0).all()) or not bool(torch.isfinite(v).all()):
                raise ValueError(f"tasks.{name} must be non-negative and finite")
