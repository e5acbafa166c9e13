"""HopperRandParams-v0: Hopper-v5 with randomised body masses, inertias, damping and friction (PEARL)."""
from __future__ import annotations

import torch

from metarl.envs.mujoco.base import RandParamsBase, RandParamsTasks


class HopperRandParamsTasks(RandParamsTasks):
    """Hopper-v5's model fields per env: ``body_mass [n, 5]``, ``body_inertia [n, 5, 3]``,
    ``dof_damping [n, 6]``, ``geom_friction [n, 5, 3]`` (float64)."""


class HopperRandParamsVecEnv(RandParamsBase):
    """Hopper-v5 with per-env physics (rand_param_envs ``HopperRandParamsEnv``, as PEARL uses it).

    Reward (gymnasium v5 and rand_param_envs alike)::

        r = (qpos[0]_after - qpos[0]_before) / dt + 1.0 * healthy - 1e-3 * sum(a^2)

    healthy: every entry of ``(qpos[2:], qvel)`` inside (-100, 100), height ``qpos[1] > 0.7``,
    angle ``|qpos[2]| < 0.2``; terminated when not. Observation ``qpos[1:] (5) + clip(qvel, ±10) (6)``.
    See :class:`~metarl.envs.mujoco.base.RandParamsBase` for the task distribution and where the
    sources disagree.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("HopperRandParams-v0", 4, seed=0)
        >>> tasks = env.sample_tasks(4, generator=torch.Generator().manual_seed(0))
        >>> tasks.body_mass.shape, tasks.geom_friction.shape
        (torch.Size([4, 5]), torch.Size([4, 5, 3]))
    """

    env_id = "HopperRandParams-v0"
    task_type = HopperRandParamsTasks
    xml_file = "hopper.xml"

    def _healthy(self, rows: torch.Tensor) -> torch.Tensor:
        qpos, qvel = self._qpos(rows), self._qvel(rows)
        state = torch.cat((qpos[:, 2:], qvel), 1)
        z, angle = qpos[:, 1], qpos[:, 2]
        return (((state > -100.0) & (state < 100.0)).all(1) & (z > 0.7) & (z < float("inf"))
                & (angle > -0.2) & (angle < 0.2))
