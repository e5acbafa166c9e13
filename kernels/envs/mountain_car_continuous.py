"""MountainCarContinuous-v0 with per-env power (gymnasium ``classic_control/continuous_mountain_car.py``).

Dynamics (as gymnasium's ``Continuous_MountainCarEnv.step``), action a ∈ ℝ::

    f  = clip(a, −1, 1)
    v' = clip(v + (f · power − 0.0025 cos(3 p)), −0.07, 0.07)
    p' = clip(p + v', −1.2, 0.6)
    v' = 0  if p' == −1.2 and v' < 0

terminated when p' ≥ 0.45 and v' ≥ 0; reward ``100 · terminated − 0.1 a²`` (the
*unclipped* action, as gymnasium); reset: p = −0.6 + 0.2 u₀ (lane 0 of one random
event, gymnasium's U(−0.6, −0.4)), v = 0, and the observation (p, v): MountainCar-v0's,
whose reset and observation code this module reuses. The bounds are the float32 values of
gymnasium's constants. Float32 throughout: parity with gymnasium is to float32
tolerance (gymnasium itself rounds its state to float32 after every step).

Bytes per env-step (the floor of ``bench/envs.py``): read state 8, params 4,
action 4, elapsed 4, needs_reset 1; write state 8, obs 8, reward 4,
terminated 1, truncated 1, elapsed 4, needs_reset 1 — 48 bytes.
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
    make_step_reference,
    step_env_nb,
)
from metarl.kernels.envs._math import sincos_nb
from metarl.kernels.envs.mountain_car import (  # noqa: F401 - MountainCar-v0's reset and observation, re-exported
    _observe_nb,
    _observe_tl,
    _reset_nb,
    _reset_state_nb,
    _reset_state_tl,
    _reset_tl,
    observe_reference,
    reset_masked_reference_,
    reset_reference,
)

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

STATE_DIM = 2
OBS_DIM = 2
PARAM_NAMES = ("power",)
STOCHASTIC = False
BYTES_PER_STEP = 48
# gymnasium's constants, rounded to float32 (exact Python floats, so every backend compares alike)
MIN_ACTION = -1.0
MAX_ACTION = 1.0
MIN_POSITION = float(np.float32(-1.2))
MAX_POSITION = float(np.float32(0.6))
MAX_SPEED = float(np.float32(0.07))
GOAL_POSITION = float(np.float32(0.45))
GOAL_VELOCITY = 0.0
GRAVITY = 0.0025  # hard-coded in gymnasium's step (not a task field)


# ----------------------------------------------------------------------------- reference
def dynamics_reference(state, params, action, key, counter):
    """One step for every env: ``state[2, N], action[N, 1] -> (new_state, reward[N], terminated[N])``."""
    (power,) = params
    position, velocity = state
    a = action[:, 0]
    force = a.clamp(MIN_ACTION, MAX_ACTION)
    velocity = velocity + (force * power - GRAVITY * torch.cos(3.0 * position))
    velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED)
    position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION)
    velocity = torch.where((position == MIN_POSITION) & (velocity < 0), torch.zeros_like(velocity), velocity)
    terminated = (position >= GOAL_POSITION) & (velocity >= GOAL_VELOCITY)
    reward = torch.where(terminated, 100.0, 0.0) - (a * a) * 0.1
    return torch.stack((position, velocity)), reward, terminated


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


# ----------------------------------------------------------------------------- numba
_MIN_POSITION32 = np.float32(MIN_POSITION)
_MAX_POSITION32 = np.float32(MAX_POSITION)
_MAX_SPEED32 = np.float32(MAX_SPEED)


@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    (power,) = params
    position = state[0, i]
    velocity = state[1, i]
    a = action[i, 0]
    force = min(max(a, np.float32(MIN_ACTION)), np.float32(MAX_ACTION))
    velocity = velocity + (force * power[i] - np.float32(GRAVITY) * sincos_nb(np.float32(3.0) * position)[1])
    velocity = min(max(velocity, -_MAX_SPEED32), _MAX_SPEED32)
    position = min(max(position + velocity, _MIN_POSITION32), _MAX_POSITION32)
    if position == _MIN_POSITION32 and velocity < 0:
        velocity = np.float32(0.0)
    term = position >= GOAL_POSITION and velocity >= GOAL_VELOCITY
    reward = (np.float32(100.0) if term else np.float32(0.0)) - (a * a) * np.float32(0.1)
    return reward, term, position, velocity


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    power,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (power,)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, OBS_DIM, state, elapsed, needs_reset,
                    counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps, mode)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _step_tl(
    # state, updated in place (state is [2, N] with row stride N)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # task params [N]
    power_ptr,
    # inputs (action [N, 1] float32, contiguous)
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
    power = tl.load(power_ptr + offs, mask=m)
    a = tl.load(action_ptr + offs, mask=m)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)

    # bounds: float32 of -1.2, 0.6, 0.07, 0.45 (MIN_POSITION, MAX_POSITION, MAX_SPEED, GOAL_POSITION)
    force = tl.minimum(tl.maximum(a, -1.0), 1.0)
    nv = velocity + (force * power - 0.0025 * tl.cos(3.0 * position))
    nv = tl.minimum(tl.maximum(nv, -0.07000000029802322), 0.07000000029802322)
    np_ = tl.minimum(tl.maximum(position + nv, -1.2000000476837158), 0.6000000238418579)
    nv = tl.where((np_ == -1.2000000476837158) & (nv < 0.0), 0.0, nv)
    term = (np_ >= 0.44999998807907104) & (nv >= 0.0)
    reward = tl.where(term, 100.0, 0.0) - (a * a) * 0.1

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


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
