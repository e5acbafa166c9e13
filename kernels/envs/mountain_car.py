"""MountainCar-v0 with per-env physics (gymnasium ``classic_control/mountain_car.py``).

Dynamics (as gymnasium's ``MountainCarEnv.step``), action a ∈ {0, 1, 2}::

    v' = clip(v + ((a − 1) force + cos(3 p) (−gravity)), −0.07, 0.07)
    p' = clip(p + v', −1.2, 0.6)
    v' = 0  if p' == −1.2 and v' < 0

terminated when p' ≥ 0.5 and v' ≥ 0; reward −1 per step; reset: p = −0.6 + 0.2 u₀
(lane 0 of one random event, gymnasium's U(−0.6, −0.4)), v = 0. The bounds are the
float32 values of gymnasium's constants. Float32 throughout (gymnasium keeps float64
state): parity is to float32 tolerance.

Bytes per env-step (the floor of ``bench/envs.py``): read state 8, params 8,
action 8, elapsed 4, needs_reset 1; write state 8, obs 8, reward 4,
terminated 1, truncated 1, elapsed 4, needs_reset 1 — 56 bytes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from numba import njit, prange

from metarl.kernels._triton import constexpr, lazy_jit
from metarl.kernels.envs import _launch
from metarl.kernels.envs._autoreset import (
    autoreset_tl,
    make_reset_masked_reference,
    make_step_reference,
    masked_reset_tl,
    reset_env_nb,
    step_env_nb,
)
from metarl.kernels.envs._math import sincos_nb
from metarl.kernels.rng import uniform_nb, uniform_reference, uniform_tl

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

STATE_DIM = 2
OBS_DIM = 2
PARAM_NAMES = ("force", "gravity")
STOCHASTIC = False
BYTES_PER_STEP = 56
# gymnasium's constants, rounded to float32 (exact Python floats, so every backend compares alike)
MIN_POSITION = float(np.float32(-1.2))
MAX_POSITION = float(np.float32(0.6))
MAX_SPEED = float(np.float32(0.07))
GOAL_POSITION = float(np.float32(0.5))
GOAL_VELOCITY = 0.0


# ----------------------------------------------------------------------------- reference
def dynamics_reference(state, params, action, key, counter):
    """One step for every env: ``state[2, N], action[N] int64 -> (new_state, reward[N], terminated[N])``."""
    force, gravity = params
    position, velocity = state
    velocity = velocity + ((action - 1).to(torch.float32) * force + torch.cos(3.0 * position) * (-gravity))
    velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED)
    position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION)
    velocity = torch.where((position == MIN_POSITION) & (velocity < 0), torch.zeros_like(velocity), velocity)
    terminated = (position >= GOAL_POSITION) & (velocity >= GOAL_VELOCITY)
    return torch.stack((position, velocity)), -torch.ones_like(position), terminated


def reset_reference(state, params, key, counter):
    """Fresh states ``[2, N]``: p = −0.6 + 0.2 u₀, v = 0."""
    position = -0.6 + 0.2 * uniform_reference(key, counter, 0)
    return torch.stack((position, torch.zeros_like(position))).to(state.dtype)


def observe_reference(state, params):
    """Observation ``[N, 2]`` (position, velocity)."""
    return state.t().contiguous()


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


reset_masked_reference_ = make_reset_masked_reference(reset_reference, observe_reference)


# ----------------------------------------------------------------------------- numba
_MIN_POSITION32 = np.float32(MIN_POSITION)
_MAX_POSITION32 = np.float32(MAX_POSITION)
_MAX_SPEED32 = np.float32(MAX_SPEED)


@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    force, gravity = params
    position = state[0, i]
    velocity = state[1, i]
    velocity = velocity + (np.float32(action[i] - 1) * force[i]
                           + sincos_nb(np.float32(3.0) * position)[1] * (-gravity[i]))
    velocity = min(max(velocity, -_MAX_SPEED32), _MAX_SPEED32)
    position = min(max(position + velocity, _MIN_POSITION32), _MAX_POSITION32)
    if position == _MIN_POSITION32 and velocity < 0:
        velocity = np.float32(0.0)
    term = position >= GOAL_POSITION and velocity >= GOAL_VELOCITY
    return np.float32(-1.0), term, position, velocity


@njit(inline="always", cache=True)
def _reset_state_nb(i, key, counter):
    return np.float32(-0.6) + np.float32(0.2) * uniform_nb(key, counter, 0), np.float32(0.0)


@njit(inline="always", cache=True)
def _observe_nb(i, state, out):
    out[i, 0] = state[0, i]
    out[i, 1] = state[1, i]


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    force, gravity,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (force, gravity)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, OBS_DIM, state, elapsed, needs_reset,
                    counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps, mode)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, key, mask, obs):
    for i in prange(key.shape[0]):
        reset_env_nb(i, _reset_state_nb, _observe_nb, state, elapsed, needs_reset, counter, key, mask, obs)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _reset_state_tl(key, counter):
    position = -0.6 + 0.2 * uniform_tl(key, counter, 0)
    return position, tl.zeros_like(position)


@lazy_jit
def _observe_tl(out_ptr, offs, m, keep, position, velocity):
    """(position, velocity) into the rows ``offs`` of ``out [N, 2]`` where ``keep``, zeros elsewhere."""
    tl.store(out_ptr + offs * 2 + 0, tl.where(keep, position, 0.0), mask=m)
    tl.store(out_ptr + offs * 2 + 1, tl.where(keep, velocity, 0.0), mask=m)


@lazy_jit
def _step_tl(
    # state, updated in place (state is [2, N] with row stride N)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # task params [N] each
    force_ptr, gravity_ptr,
    # inputs (action [N] int64)
    action_ptr, key_ptr,
    # outputs ([N, 2] row-major for obs and final_obs)
    obs_ptr, reward_ptr, terminated_ptr, truncated_ptr, final_obs_ptr,
    # sizes / modes
    n, max_steps,
    # meta-parameters
    MODE: constexpr, BLOCK: constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    position = tl.load(state_ptr + offs, mask=m)
    velocity = tl.load(state_ptr + n + offs, mask=m)
    force = tl.load(force_ptr + offs, mask=m)
    gravity = tl.load(gravity_ptr + offs, mask=m)
    action = tl.load(action_ptr + offs, mask=m)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)

    # bounds: float32 of -1.2, 0.6, 0.07, 0.5 (MIN_POSITION, MAX_POSITION, MAX_SPEED, GOAL_POSITION)
    nv = velocity + ((action - 1).to(tl.float32) * force + tl.cos(3.0 * position) * (-gravity))
    nv = tl.minimum(tl.maximum(nv, -0.07000000029802322), 0.07000000029802322)
    np_ = tl.minimum(tl.maximum(position + nv, -1.2000000476837158), 0.6000000238418579)
    nv = tl.where((np_ == -1.2000000476837158) & (nv < 0.0), 0.0, nv)
    term = (np_ >= 0.5) & (nv >= 0.0)
    reward = tl.full((BLOCK,), -1.0, tl.float32)

    do_reset, reset_counter = autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr,
                                           truncated_ptr, reward, term, counter, offs, m, max_steps,
                                           STOCHASTIC=False, MODE=MODE)
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        _observe_tl(final_obs_ptr, offs, m, do_reset, np_, nv)
    p0, v0 = _reset_state_tl(key, reset_counter)
    np_ = tl.where(do_reset, p0, np_)
    nv = tl.where(do_reset, v0, nv)
    tl.store(state_ptr + offs, np_, mask=m)
    tl.store(state_ptr + n + offs, nv, mask=m)
    _observe_tl(obs_ptr, offs, m, m, np_, nv)


@lazy_jit
def _reset_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, key_ptr, mask_ptr, obs_ptr, n, BLOCK: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r, counter = masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m)
    p0, v0 = _reset_state_tl(tl.load(key_ptr + offs, mask=m), counter)
    position = tl.where(r, p0, tl.load(state_ptr + offs, mask=m))
    velocity = tl.where(r, v0, tl.load(state_ptr + n + offs, mask=m))
    tl.store(state_ptr + offs, position, mask=m)
    tl.store(state_ptr + n + offs, velocity, mask=m)
    _observe_tl(obs_ptr, offs, m, m, position, velocity)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
