"""Walker2dRandParams-v0: Walker2d-v5 with randomised body masses, inertias, damping and friction (PEARL)."""
from __future__ import annotations

import torch

from metarl.envs.mujoco.base import RandParamsBase, RandParamsTasks


class Walker2dRandParamsTasks(RandParamsTasks):
    """Walker2d-v5's model fields per env: ``body_mass [n, 8]``, ``body_inertia [n, 8, 3]``,
    ``dof_damping [n, 9]``, ``geom_friction [n, 8, 3]`` (float64)."""


class Walker2dRandParamsVecEnv(RandParamsBase):
    """Walker2d-v5 with per-env physics (rand_param_envs ``Walker2DRandParamsEnv``, as PEARL uses it).

    Reward (gymnasium v5 and rand_param_envs alike)::

        r = (qpos[0]_after - qpos[0]_before) / dt + 1.0 * healthy - 1e-3 * sum(a^2)

    healthy: height ``0.8 < qpos[1] < 2.0`` and angle ``-1 < qpos[2] < 1``; terminated when not.
    Observation ``qpos[1:] (8) + clip(qvel, ±10) (9)``; model ``walker2d_v5.xml``. See
    :class:`~metarl.envs.mujoco.base.RandParamsBase` for the task distribution and where the sources
    disagree.

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("Walker2dRandParams-v0", 2, seed=0, num_threads=1)
        >>> obs, info = env.reset(seed=0, options={"tasks": env.sample_tasks(2)})
        >>> obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 6))
        >>> obs.shape, env.tasks.dof_damping.shape
        (torch.Size([2, 17]), torch.Size([2, 9]))
    """

    env_id = "Walker2dRandParams-v0"
    task_type = Walker2dRandParamsTasks
    xml_file = "walker2d_v5.xml"

    def _healthy(self, rows: torch.Tensor) -> torch.Tensor:
        qpos = self._qpos(rows)
        z, angle = qpos[:, 1], qpos[:, 2]
        return (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
