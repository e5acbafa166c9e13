"""AntDir-v0: walk in a direction, forward/backward or any angle (MAML, ProMP, PEARL)."""
from __future__ import annotations

import dataclasses
import math

import torch

from metarl.envs.mujoco.base import AntBase
from metarl.envs.tasks import Tasks


@dataclasses.dataclass
class AntDirTasks(Tasks):
    direction: torch.Tensor
    """``[n, 2]`` float32 unit vector in the xy plane: ``(±1, 0)`` (forward/backward, the default
    distribution) or ``(cos θ, sin θ)``, ``θ ~ U[0, 2π)`` (``directions="circle"``)"""


class AntDirVecEnv(AntBase):
    """Ant-v5 rewarded for walking along a per-env direction ``u`` (a unit vector).

    Reward (ProMP ``AntRandDirecEnv`` / ``AntRandDirec2DEnv``, PEARL ``AntDirEnv``; the cost
    coefficients are Ant-v5's own)::

        r = <v_xy, u> + 1.0 * healthy - 0.5 * sum(a^2) - 5e-4 * sum(clip(cfrc_ext, -1, 1)^2)
        v_xy = (xpos_torso_after - xpos_torso_before)[:2] / dt

    i.e. Ant-v5 with its forward term ``v_x`` replaced by ``<v_xy, u>``; observation (105-dim),
    termination (unhealthy: non-finite state or torso z outside [0.2, 1.0]) and dynamics are
    Ant-v5's. Tasks: ``directions="forward_backward"`` (default; MAML, ProMP, and PEARL with
    ``forward_backward=True``) draws ``u = (±1, 0)``; ``directions="circle"`` draws a uniform angle
    (ProMP's 2-D variant, PEARL's default). Where the sources disagree this follows ProMP/PEARL and
    Ant-v5: alive bonus 1.0 only while healthy (ProMP/PEARL pay it every step, MAML 0.05),
    ctrl cost 0.5 (MAML: 0.005 of the rescaled action), termination at z < 0.2 (ProMP: 0.0), and no
    COM or torso orientation in the observation (MAML's 125-dim). Default task: forward.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("AntDir-v0", 2, seed=0, directions="circle", max_episode_steps=200)
        >>> obs, info = env.reset(seed=0, options={"tasks": env.sample_tasks(2)})
        >>> obs.shape, env.tasks.direction.norm(dim=1)
        (torch.Size([2, 105]), tensor([1., 1.]))
    """

    env_id = "AntDir-v0"
    task_type = AntDirTasks
    CTRL_COST = 0.5
    HEALTHY_REWARD = 1.0
    DIRECTIONS = ("forward_backward", "circle")

    def __init__(self, num_envs: int, *, directions: str = "forward_backward", **kwargs):
        if directions not in self.DIRECTIONS:
            raise ValueError(f"directions must be one of {self.DIRECTIONS}, got {directions!r}")
        self.directions = directions
        super().__init__(num_envs, **kwargs)

    def default_tasks(self, n: int) -> AntDirTasks:
        return AntDirTasks(torch.tensor([[1.0, 0.0]]).repeat(n, 1))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> AntDirTasks:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        if self.directions == "forward_backward":
            x = torch.where(u < 0.5, 1.0, -1.0)
            return AntDirTasks(torch.stack((x, torch.zeros_like(x)), 1).to(torch.float32))
        angle = 2 * math.pi * u
        return AntDirTasks(torch.stack((torch.cos(angle), torch.sin(angle)), 1).to(torch.float32))

    def check_tasks(self, tasks: AntDirTasks) -> None:
        norm = tasks.direction.double().norm(dim=1)
        if not bool(torch.isfinite(norm).all()) or not bool(((norm - 1).abs() <= 1e-5).all()):
            raise ValueError("tasks.direction must hold unit vectors [n, 2]")

    def _reward(self, rows, velocity, action, params):
        (direction,) = params
        healthy = self._healthy(rows)
        reward = ((velocity * direction).sum(1) + self.HEALTHY_REWARD * healthy
                  - self.CTRL_COST * action.square().sum(1) - self.CONTACT_COST * self._contact_cost(rows))
        return reward, ~healthy
