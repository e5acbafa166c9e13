"""HalfCheetahDir-v0: run forward or backward (MAML, ProMP, PEARL)."""
from __future__ import annotations

import dataclasses

import torch

from metarl.envs.mujoco.base import HalfCheetahBase
from metarl.envs.tasks import Tasks


@dataclasses.dataclass
class HalfCheetahDirTasks(Tasks):
    direction: torch.Tensor
    """``[n]`` float32, -1 (backward) or +1 (forward), each with probability 1/2"""


class HalfCheetahDirVecEnv(HalfCheetahBase):
    """HalfCheetah-v5 rewarded for running in a per-env direction ``d``.

    Reward (ProMP ``HalfCheetahRandDirecEnv``, PEARL ``HalfCheetahDirEnv``, MAML
    ``HalfCheetahEnvRandDirec``)::

        r = d * v_x - 0.05 * sum(a^2),    v_x = (qpos[0]_after - qpos[0]_before) / dt,  d in {-1, +1}

    i.e. HalfCheetah-v5 with ``forward_reward_weight=d, ctrl_cost_weight=0.05``; no termination.
    Where the sources disagree (MAML measures the torso COM velocity in rllab's model and observes
    the COM), ProMP/PEARL and HalfCheetah-v5's 17-dim observation are followed. Default task: +1.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("HalfCheetahDir-v0", 4, seed=0)
        >>> env.sample_tasks(4, generator=torch.Generator().manual_seed(0)).direction
        tensor([-1., -1.,  1., -1.])
    """

    env_id = "HalfCheetahDir-v0"
    task_type = HalfCheetahDirTasks

    def default_tasks(self, n: int) -> HalfCheetahDirTasks:
        return HalfCheetahDirTasks(torch.ones(n, dtype=torch.float32))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> HalfCheetahDirTasks:
        forward = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
        return HalfCheetahDirTasks(torch.where(forward, 1.0, -1.0).to(torch.float32))

    def check_tasks(self, tasks: HalfCheetahDirTasks) -> None:
        if not bool(((tasks.direction == 1) | (tasks.direction == -1)).all()):
            raise ValueError("tasks.direction must be -1 or +1")

    def _reward(self, rows, velocity, action, params):
        (direction,) = params
        reward = direction * velocity[:, 0] - self.CTRL_COST * action.square().sum(1)
        return reward, torch.zeros_like(reward, dtype=torch.bool)
