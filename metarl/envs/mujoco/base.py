"""The base of the MuJoCo task families: gymnasium's v5 robots stepped in batch by MuJoCo's thread pool.

:class:`MujocoTaskVecEnv` is a :class:`~metarl.envs.TaskVectorEnv`: the task API, validation,
seeding and gymnasium's three autoreset modes are the base class's, and the autoreset itself is
``kernels/envs/_autoreset.py``'s (the torch state machine every family's reference uses), with
this module's physics step, reset and observation plugged in. Physics is
:mod:`metarl.kernels.envs.mujoco_batch` (MuJoCo's ``mjBatch`` over one float64 state row per env);
rewards, terminations, observations and reset noise are batched torch on those rows.

Dynamics, observations, termination, reset noise and the 1000-step limit are gymnasium's
``HalfCheetah-v5``, ``Ant-v5``, ``Hopper-v5`` and ``Walker2d-v5`` (same XML assets, same
``frame_skip``); each family changes the reward or the model parameters as its docstring says.
Parity with gymnasium's own env is exact for the physics (same MuJoCo calls, warm start
included) and to float32 rounding for observations and rewards.
"""
from __future__ import annotations

import dataclasses
import os

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks
from metarl.kernels.envs._autoreset import NEXT_STEP, reset_masked_reference, step_with_autoreset_reference
from metarl.kernels.envs.mujoco_batch import MujocoBatch, default_row, make_layout, require_mujoco
from metarl.kernels.envs.mujoco_gpu import WarpBatch
from metarl.kernels.rng import uniform_reference

TWO_PI = 2.0 * np.pi
BACKENDS = ("mujoco", "warp")


def gymnasium_asset(xml_file: str) -> str:
    """Path of one of gymnasium's MuJoCo XML assets (the v5 envs' models)."""
    return os.path.join(os.path.dirname(gym.__file__), "envs", "mujoco", "assets", xml_file)


class MujocoTaskVecEnv(TaskVectorEnv):
    """N copies of a gymnasium v5 MuJoCo robot, each with its own task, stepped by one batch call.

    Observations ``[N, obs_dim]`` and rewards ``[N]`` are float32 torch tensors on ``env.device``;
    actions ``[N, nu]`` float (the actuators' control range, as gymnasium's action space;
    MuJoCo clamps out-of-range controls and the control cost sees them unclamped, as in gymnasium).
    ``get_state``/``set_state`` read and write ``(qpos, qvel)`` ``[N, nq + nv]`` float64
    (gymnasium's ``state_vector()`` and ``set_state(qpos, qvel)``); ``state_dict`` holds the whole
    row (time, solver warm start, the Ant's last torso position and contact forces) for exact resume.

    Backends: ``"mujoco"`` (the CPU default: MuJoCo's thread pool, exact against gymnasium) and
    ``"warp"`` (the CUDA default: MuJoCo Warp, float32, all worlds in one launch per substep; on the
    CPU only for tests). The torch autoreset, rewards and resets run on the env's device either way.

    Family options (keyword arguments of ``metarl.make_vec``):
        max_episode_steps: the time limit (default 1000, gymnasium's; the meta-RL papers use 200).
        num_threads: MuJoCo threads stepping the batch, the caller's included (default
            ``torch.get_num_threads()``): bound it when several jobs share a host.
        exclude_current_positions_from_observation: gymnasium's option (default: the family's).

    Subclasses set the robot (``xml_file``, ``frame_skip``, ``reset_noise_scale``, ``qvel_noise``,
    ``skipped_qpos``, ``clip_qvel``, ``tracked_body``, ``contact_forces``) and implement
    ``default_tasks``, ``sample_tasks``, ``check_tasks`` and ``_reward``.
    """

    xml_file: str = ""
    frame_skip: int = 5
    reset_noise_scale: float = 0.1
    qvel_noise: str = "normal"
    """``"normal"``: qvel += scale·N(0, 1) (HalfCheetah, Ant); ``"uniform"``: += U(±scale) (Hopper, Walker2d)"""
    skipped_qpos: int = 1
    """leading qpos entries left out of the observation by default (x; x and y for the Ant)"""
    clip_qvel: float = 0.0
    """observed qvel clipped to ±clip_qvel (Hopper, Walker2d: 10); 0: not clipped"""
    tracked_body: int = -1
    """body whose ``xpos`` xy gives the velocity (Ant-v5: the torso); -1: ``qpos[0]`` gives it"""
    contact_forces: bool = False
    """keep ``cfrc_ext`` after each step (Ant-v5 observes and penalises it)"""
    model_fields: tuple[str, ...] = ()
    """model fields that tasks set per env (the randomised-physics families)"""
    max_episode_steps = 1000

    def __init__(self, num_envs: int, *, device="cpu", seed: int | None = None, autoreset_mode="next_step",
                 backend: str | None = None, max_episode_steps: int | None = None, num_threads: int | None = None,
                 exclude_current_positions_from_observation: bool | None = None):
        mujoco = require_mujoco()
        if num_threads is None:
            num_threads = torch.get_num_threads()
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        self.num_threads = num_threads
        self.model_path = gymnasium_asset(self.xml_file)
        self.model = mujoco.MjModel.from_xml_path(self.model_path)
        self.layout = make_layout(self.model, self.tracked_body, self.contact_forces)
        self.kernels = self.layout  # STATE_DIM etc. for the generic env API
        self.dt = float(self.model.opt.timestep * self.frame_skip)
        if exclude_current_positions_from_observation is not None:
            self.skipped_qpos = (2 if self.tracked_body >= 0 else 1) if exclude_current_positions_from_observation \
                else 0
        super().__init__(num_envs, device=device, seed=seed, autoreset_mode=autoreset_mode, backend=backend,
                         max_episode_steps=max_episode_steps)

    # ------------------------------------------------------------------ TaskVectorEnv hooks
    def _resolve_backend(self, backend: str | None) -> str:
        if backend not in (None, "cpu", *BACKENDS):
            raise ValueError(f"backend must be one of {BACKENDS} (or None) for a MuJoCo family, got {backend!r}")
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"the MuJoCo families run on the CPU or a CUDA GPU, got device={self.device}")
        if self.device.type == "cuda":
            if backend not in (None, "warp"):
                raise ValueError(f"backend={backend!r} runs on the CPU; on {self.device} use 'warp'")
            return "warp"
        return "warp" if backend == "warp" else "mujoco"

    def _make_spaces(self):
        lay = self.layout
        obs_dim = lay.nq - self.skipped_qpos + lay.nv + (lay.ncfrc - 6 if lay.ncfrc else 0)
        low, high = self.model.actuator_ctrlrange.astype(np.float32).T
        return (gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                gym.spaces.Box(low.copy(), high.copy(), dtype=np.float32))

    def _new_state(self) -> torch.Tensor:
        """The rows ``[N, S]`` float64 (see ``mujoco_batch``), seen as the ``[S, N]`` state of the autoreset."""
        self._default_row = torch.from_numpy(default_row(self.model, self.layout)).to(self.device)
        self._rows = self._default_row.repeat(self.num_envs, 1)
        return self._rows.t()

    def _init_kernels(self) -> None:
        if self.backend == "warp":
            self._batch = WarpBatch(self.model, self._rows, self.layout, self.frame_skip, self.model_fields)
        else:
            self._batch = MujocoBatch(self.model, self._rows.numpy(), self.layout, self.frame_skip, self.num_threads)
        self._push_tasks()

    def _step_kernel(self, a: torch.Tensor, same_step: bool):
        obs, reward, terminated, truncated, final_obs = step_with_autoreset_reference(
            self._dynamics, self._autoreset_state, self._observe, False,
            self._state, self._elapsed, self._needs_reset, self._counter, self._params, a, self._key,
            self.max_episode_steps, self._mode)
        return obs, reward, terminated, truncated, self._empty_final if final_obs is None else final_obs

    def _reset_kernel(self, mask: torch.Tensor) -> torch.Tensor:
        return reset_masked_reference(self._reset_state, self._observe, self._state, self._elapsed,
                                      self._needs_reset, self._counter, self._params, self._key, mask)

    # ------------------------------------------------------------------ tasks and state
    def _push_tasks(self) -> None:
        """Copy the task fields that are model parameters into the batch's per-env model fields."""
        for name, t in zip(self.task_type.field_names(), self._params):
            if name in self.model_fields:
                self._batch.expand(name, tuple(t.shape[1:])).copy_(t)

    def set_tasks(self, tasks: Tasks, env_ids=None) -> None:
        super().set_tasks(tasks, env_ids)
        self._push_tasks()

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        self._push_tasks()

    def get_state(self) -> torch.Tensor:
        """``(qpos, qvel)`` of every env ``[N, nq + nv]`` float64 (gymnasium's ``state_vector()``; a copy)."""
        lay = self.layout
        return torch.cat((self._rows[:, lay.qpos:lay.qpos + lay.nq], self._rows[:, lay.qvel:lay.qvel + lay.nv]), 1)

    def _write_state(self, state: torch.Tensor, ids: torch.Tensor | None) -> None:
        """gymnasium's ``set_state(qpos, qvel)``: time, warm start and controls are kept; the Ant's tracked
        position becomes the new qpos's (``mj_forward`` sets ``xpos`` so)."""
        lay = self.layout
        rows = self._rows if ids is None else self._rows[ids]
        state = state.to(torch.float64)
        rows[:, lay.qpos:lay.qpos + lay.nq] = state[:, :lay.nq]
        rows[:, lay.qvel:lay.qvel + lay.nv] = state[:, lay.nq:]
        if self.tracked_body >= 0:
            rows[:, lay.extras:lay.extras + 2] = state[:, :2]
        if ids is not None:
            self._rows[ids] = rows

    # ------------------------------------------------------------------ the three autoreset pieces
    def _dynamics(self, state, params, action, key, counter):
        """One env step of every env (``state`` is ``self._state``, updated in place): the physics in
        one batch call, then ``self._reward``. In ``next_step`` mode the envs about to be reset are
        not stepped (their transition would be dropped)."""
        lay, rows = self.layout, self._rows
        before = self._position().clone()
        rows[:, lay.ctrl:lay.ctrl + lay.nu] = action
        ids = None
        if self._mode == NEXT_STEP and bool(self._needs_reset.any()):
            ids = (~self._needs_reset).nonzero().flatten().to(torch.int32).cpu().numpy()
        if ids is None or len(ids):
            self._batch.step(ids)
        velocity = (self._position() - before) / self.dt
        reward, terminated = self._reward(rows, velocity, action, params)
        # whether the autoreset will select a fresh state for any env in this step
        if self._mode == NEXT_STEP:
            self._resets_due = ids is not None
        else:
            limit = self.max_episode_steps
            ended = terminated | (self._elapsed + 1 >= limit) if limit > 0 else terminated
            self._resets_due = bool(ended.any())
        return state, reward, terminated

    def _autoreset_state(self, state, params, key, counter):
        """``_reset_state`` for the autoreset, skipped when no env is reset in this step: the rows come
        back unchanged and the autoreset selects them for no env (the reset costs ~50 small torch ops)."""
        return self._reset_state(state, params, key, counter) if self._resets_due else state

    def _position(self) -> torch.Tensor:
        """``[N, 2]`` xy of the tracked body (Ant-v5's ``xpos``), or ``[N, 1]`` ``qpos[0]``."""
        lay = self.layout
        if self.tracked_body >= 0:
            return self._rows[:, lay.extras:lay.extras + 2]
        return self._rows[:, lay.qpos:lay.qpos + 1]

    def _reset_state(self, state, params, key, counter):
        """Fresh states ``[S, N]`` as gymnasium's ``reset_model``: ``qpos0 + U(±scale)``, and
        ``qvel + scale·N(0, 1)`` (Box–Muller) or ``+ U(±scale)``; lanes ``0 .. nq + nv (+ nv)`` of
        the reset's random event. Everything else is ``mj_resetData``'s (time, warm start 0)."""
        lay, s = self.layout, self.reset_noise_scale
        normal = self.qvel_noise == "normal"
        lanes = torch.arange(lay.nq + lay.nv * (2 if normal else 1), device=key.device)
        u = uniform_reference(key[:, None], counter[:, None], lanes).to(torch.float64)
        rows = self._default_row.repeat(key.shape[0], 1)
        rows[:, lay.qpos:lay.qpos + lay.nq] += -s + 2.0 * s * u[:, :lay.nq]
        if normal:
            u1, u2 = u[:, lay.nq:lay.nq + lay.nv], u[:, lay.nq + lay.nv:]
            rows[:, lay.qvel:lay.qvel + lay.nv] += s * torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(TWO_PI * u2)
        else:
            rows[:, lay.qvel:lay.qvel + lay.nv] += -s + 2.0 * s * u[:, lay.nq:]
        if self.tracked_body >= 0:  # the free joint's position is the body's xpos
            rows[:, lay.extras:lay.extras + 2] = rows[:, lay.qpos:lay.qpos + 2]
        return rows.t()

    def _observe(self, state, params) -> torch.Tensor:
        """gymnasium's ``_get_obs`` on ``state`` ``[S, N]``: ``[N, obs_dim]`` float32."""
        lay, rows = self.layout, state.t()
        qvel = rows[:, lay.qvel:lay.qvel + lay.nv]
        if self.clip_qvel:
            qvel = qvel.clamp(-self.clip_qvel, self.clip_qvel)
        parts = [rows[:, lay.qpos + self.skipped_qpos:lay.qpos + lay.nq], qvel]
        if lay.ncfrc:  # Ant-v5: cfrc_ext of every body but the world, clipped to the contact force range
            parts.append(rows[:, lay.extras + 8:lay.extras + 2 + lay.ncfrc].clamp(-1.0, 1.0))
        return torch.cat(parts, 1).to(torch.float32)

    def _reward(self, rows: torch.Tensor, velocity: torch.Tensor, action: torch.Tensor, params: tuple):
        """``(reward [N] float, terminated [N] bool)`` after a step, from the new ``rows``, the
        tracked ``velocity`` ([N, 2] or [N, 1], m/s), the float32 ``action`` and the task tensors."""
        raise NotImplementedError

    # ------------------------------------------------------------------ pieces the families share
    def _qpos(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, self.layout.qpos:self.layout.qpos + self.layout.nq]

    def _qvel(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, self.layout.qvel:self.layout.qvel + self.layout.nv]

    def _contact_cost(self, rows: torch.Tensor) -> torch.Tensor:
        """Ant-v5's ``sum(clip(cfrc_ext, -1, 1)^2)`` over every body (the world's row is zero)."""
        lay = self.layout
        return rows[:, lay.extras + 2:lay.extras + 2 + lay.ncfrc].clamp(-1.0, 1.0).square().sum(1)

    def close_extras(self, **kwargs):
        if getattr(self, "_batch", None) is not None:
            self._batch.close()


# ----------------------------------------------------------------------------- the four robots
class HalfCheetahBase(MujocoTaskVecEnv):
    """gymnasium's HalfCheetah-v5: obs ``qpos[1:] (8) + qvel (9)`` = 17, never terminates."""

    xml_file, frame_skip, reset_noise_scale, qvel_noise, skipped_qpos = "half_cheetah.xml", 5, 0.1, "normal", 1
    CTRL_COST = 0.05
    """MAML / ProMP / PEARL: ``0.5 * 0.1 * sum(a^2)`` (HalfCheetah-v5's default is 0.1)"""


class AntBase(MujocoTaskVecEnv):
    """gymnasium's Ant-v5: obs ``qpos[2:] (13) + qvel (14) + clip(cfrc_ext[1:], -1, 1) (78)`` = 105;
    the velocity is the torso's ``xpos`` finite difference over ``dt``; healthy while every state
    entry is finite and ``0.2 <= z <= 1.0``."""

    xml_file, frame_skip, reset_noise_scale, qvel_noise, skipped_qpos = "ant.xml", 5, 0.1, "normal", 2
    tracked_body, contact_forces = 1, True  # body 1 is the torso, whose free joint is qpos[0:7]
    CONTACT_COST = 5e-4

    def _healthy(self, rows: torch.Tensor) -> torch.Tensor:
        qpos, qvel = self._qpos(rows), self._qvel(rows)
        finite = torch.isfinite(qpos).all(1) & torch.isfinite(qvel).all(1)
        return finite & (qpos[:, 2] >= 0.2) & (qpos[:, 2] <= 1.0)


@dataclasses.dataclass
class RandParamsTasks(Tasks):
    """Per-env model parameters, float64 in the compiled model's units. The default task is the
    compiled model (gymnasium's XML); the default distribution scales every element of it by
    ``1.5^U[-3, 3]`` (``dof_damping``: ``1.3^U[-3, 3]``), as rand_param_envs' ``RandomEnv``."""

    body_mass: torch.Tensor
    """``[n, nbody]`` kg (the world body's 0 stays 0)"""
    body_inertia: torch.Tensor
    """``[n, nbody, 3]`` principal inertias, kg m²"""
    dof_damping: torch.Tensor
    """``[n, nv]`` joint damping (0 on the root dofs, which stays 0)"""
    geom_friction: torch.Tensor
    """``[n, ngeom, 3]`` sliding, torsional, rolling friction"""

    LOG_BASE = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}


class RandParamsBase(MujocoTaskVecEnv):
    """Hopper-v5 / Walker2d-v5 with per-env ``body_mass``, ``body_inertia``, ``dof_damping`` and
    ``geom_friction`` (PEARL's HopperRandParams / WalkerRandParams, from rand_param_envs).

    Reward ``dx/dt + healthy·1.0 - 1e-3·sum(a^2)`` and termination are gymnasium's v5 (rand_param_envs'
    formula is the same; it pays the alive bonus every step, v5 only while healthy, the last step
    before termination being the only difference). Tasks overwrite the model fields, as
    rand_param_envs does: no ``mj_setConst``, so derived constants (subtree masses, ``dof_invweight0``)
    stay the compiled model's.

    Where the sources disagree, this follows gymnasium v5: timestep 0.002 and frame_skip 4
    (dt 0.008); rand_param_envs bundles gym 0.7.4 XMLs with timestep 0.004 (dt 0.016), and its
    Walker2d's feet have friction 0.9 / 1.9 where walker2d_v5.xml has 1.9 / 1.9.

    Family option ``log_scale_limit`` (default 3.0): the multipliers are ``base^U[-limit, limit]``.
    """

    frame_skip, reset_noise_scale, qvel_noise, skipped_qpos, clip_qvel = 4, 5e-3, "uniform", 1, 10.0
    model_fields = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
    CTRL_COST = 1e-3
    HEALTHY_REWARD = 1.0

    def __init__(self, num_envs: int, *, log_scale_limit: float = 3.0, **kwargs):
        if not isinstance(log_scale_limit, (int, float)) or not 0 <= log_scale_limit < 50:
            raise ValueError(f"log_scale_limit must be a number in [0, 50), got {log_scale_limit!r}")
        self.log_scale_limit = float(log_scale_limit)
        super().__init__(num_envs, **kwargs)

    def default_tasks(self, n: int):
        fields = (torch.from_numpy(getattr(self.model, name).copy()) for name in self.model_fields)
        return self.task_type(*(f.expand(n, *f.shape).clone() for f in fields))

    def sample_tasks(self, n: int, generator: torch.Generator | None = None):
        tasks = self.default_tasks(n)
        lim = self.log_scale_limit
        for name, t in zip(self.task_type.field_names(), tasks.fields()):
            u = torch.rand(t.shape, generator=generator, dtype=torch.float64)
            t.mul_(RandParamsTasks.LOG_BASE[name] ** (-lim + 2.0 * lim * u))
        return tasks

    def check_tasks(self, tasks) -> None:
        for name, t in zip(self.task_type.field_names(), tasks.fields()):
            if not bool(torch.isfinite(t).all()) or not bool((t >= 0).all()):
                raise ValueError(f"tasks.{name} must be finite and non-negative")

    def _healthy(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _reward(self, rows, velocity, action, params):
        healthy = self._healthy(rows)
        reward = velocity[:, 0] + self.HEALTHY_REWARD * healthy - self.CTRL_COST * action.square().sum(1)
        return reward, ~healthy
