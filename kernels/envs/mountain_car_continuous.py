"""MountainCarContinuous-v0 with per-env power (gymnasium ``classic_control/continuous_mountain_car.py``).

Dynamics (as gymnasium's ``Continuous_MountainCarEnv.step``), action a ∈ ℝ::

    f  = clip(a, −1, 1)
    v' = clip(v + (f · power − 0.0025 cos(3 p)), −0.07, 0.07)
    p' = clip(p + v', −1.2, 0.6)
    v' = 0  if p' == −1.2 and v' < 0

terminated when p' ≥ 0.45 and v' ≥ 0; reward ``100 · terminated − 0.1 a²`` (the
*unclipped* action, as gymnasium); reset: p = −0.6 + 0.2 u₀ (lane 0 of one random
event, gymnasium's U(−0.6, −0.4)), v = 0. The bounds are the float32 values of
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
    NEXT_STEP,
    SAME_STEP,
    make_reset_masked_reference,
    make_step_reference,
)
from metarl.kernels.envs._math import sincos_nb
from metarl.kernels.rng import uniform_nb, uniform_reference, uniform_tl

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
@njit(inline="always", cache=True)
def _reset_one_nb(i, state, key, counter):
    state[0, i] = np.float32(-0.6) + np.float32(0.2) * uniform_nb(key[i], counter[i], 0)
    state[1, i] = 0.0
    counter[i] += 1


@njit(inline="always", cache=True)
def _observe_one_nb(i, state, out):
    out[i, 0] = state[0, i]
    out[i, 1] = state[1, i]


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N]
    power,
    # inputs (action [N, 1] float32)
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    n = state.shape[1]
    lo_p, hi_p, max_v = np.float32(MIN_POSITION), np.float32(MAX_POSITION), np.float32(MAX_SPEED)
    for i in prange(n):
        if mode == NEXT_STEP and needs_reset[i]:
            _reset_one_nb(i, state, key, counter)
            _observe_one_nb(i, state, obs)
            reward[i] = 0.0
            terminated[i] = False
            truncated[i] = False
            elapsed[i] = 0
            needs_reset[i] = False
            continue
        position = state[0, i]
        velocity = state[1, i]
        a = action[i, 0]
        force = min(max(a, np.float32(MIN_ACTION)), np.float32(MAX_ACTION))
        velocity = velocity + (force * power[i] - np.float32(GRAVITY) * sincos_nb(np.float32(3.0) * position)[1])
        velocity = min(max(velocity, -max_v), max_v)
        position = min(max(position + velocity, lo_p), hi_p)
        if position == lo_p and velocity < 0:
            velocity = np.float32(0.0)
        state[0, i] = position
        state[1, i] = velocity
        term = position >= GOAL_POSITION and velocity >= GOAL_VELOCITY
        e = elapsed[i] + 1
        trunc = max_steps > 0 and e >= max_steps
        reward[i] = (np.float32(100.0) if term else np.float32(0.0)) - (a * a) * np.float32(0.1)
        terminated[i] = term
        truncated[i] = trunc
        if mode == SAME_STEP:
            if term or trunc:
                _observe_one_nb(i, state, final_obs)
                _reset_one_nb(i, state, key, counter)
                e = 0
            else:
                final_obs[i, 0] = 0.0
                final_obs[i, 1] = 0.0
        else:
            needs_reset[i] = term or trunc
        elapsed[i] = e
        _observe_one_nb(i, state, obs)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, power, key, mask, obs):
    for i in prange(state.shape[1]):
        if mask[i]:
            _reset_one_nb(i, state, key, counter)
            elapsed[i] = 0
            needs_reset[i] = False
        _observe_one_nb(i, state, obs)


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
    elapsed = tl.load(elapsed_ptr + offs, mask=m)

    # bounds: float32 of -1.2, 0.6, 0.07, 0.45 (MIN_POSITION, MAX_POSITION, MAX_SPEED, GOAL_POSITION)
    force = tl.minimum(tl.maximum(a, -1.0), 1.0)
    nv = velocity + (force * power - 0.0025 * tl.cos(3.0 * position))
    nv = tl.minimum(tl.maximum(nv, -0.07000000029802322), 0.07000000029802322)
    np_ = tl.minimum(tl.maximum(position + nv, -1.2000000476837158), 0.6000000238418579)
    nv = tl.where((np_ == -1.2000000476837158) & (nv < 0.0), 0.0, nv)
    term = (np_ >= 0.44999998807907104) & (nv >= 0.0)
    e = elapsed + 1
    trunc = (e >= max_steps) & (max_steps > 0)
    reward = tl.where(term, 100.0, 0.0) - (a * a) * 0.1

    if MODE == 0:  # next_step: envs flagged last step are reset instead of stepped
        r = tl.load(needs_reset_ptr + offs, mask=m).to(tl.int1)
        do_reset = r
        term = term & ~r
        trunc = trunc & ~r
        reward = tl.where(r, 0.0, reward)
        tl.store(needs_reset_ptr + offs, term | trunc, mask=m)
        reset_counter = counter
        counter = counter + r.to(tl.int64)
    else:
        done = term | trunc
        do_reset = done & (MODE == 1)
        reset_counter = counter
        counter = counter + do_reset.to(tl.int64)
        if MODE == 2:
            tl.store(needs_reset_ptr + offs, done, mask=m)
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        tl.store(final_obs_ptr + offs * 2 + 0, tl.where(do_reset, np_, 0.0), mask=m)
        tl.store(final_obs_ptr + offs * 2 + 1, tl.where(do_reset, nv, 0.0), mask=m)
    np_ = tl.where(do_reset, -0.6 + 0.2 * uniform_tl(key, reset_counter, 0), np_)
    nv = tl.where(do_reset, 0.0, nv)
    e = tl.where(do_reset, 0, e)

    tl.store(state_ptr + offs, np_, mask=m)
    tl.store(state_ptr + n + offs, nv, mask=m)
    tl.store(obs_ptr + offs * 2 + 0, np_, mask=m)
    tl.store(obs_ptr + offs * 2 + 1, nv, mask=m)
    tl.store(counter_ptr + offs, counter, mask=m)
    tl.store(elapsed_ptr + offs, e, mask=m)
    tl.store(reward_ptr + offs, reward, mask=m)
    tl.store(terminated_ptr + offs, term, mask=m)
    tl.store(truncated_ptr + offs, trunc, mask=m)


@lazy_jit
def _reset_tl(
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    power_ptr,  # unused: reset ignores physics
    key_ptr, mask_ptr, obs_ptr, n, BLOCK: constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r = tl.load(mask_ptr + offs, mask=m, other=0).to(tl.int1)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)
    position = tl.load(state_ptr + offs, mask=m)
    velocity = tl.load(state_ptr + n + offs, mask=m)
    position = tl.where(r, -0.6 + 0.2 * uniform_tl(key, counter, 0), position)
    velocity = tl.where(r, 0.0, velocity)
    tl.store(state_ptr + offs, position, mask=m)
    tl.store(state_ptr + n + offs, velocity, mask=m)
    tl.store(obs_ptr + offs * 2 + 0, position, mask=m)
    tl.store(obs_ptr + offs * 2 + 1, velocity, mask=m)
    tl.store(counter_ptr + offs, counter + r.to(tl.int64), mask=m)
    tl.store(elapsed_ptr + offs, tl.where(r, 0, tl.load(elapsed_ptr + offs, mask=m)), mask=m)
    tl.store(needs_reset_ptr + offs, tl.load(needs_reset_ptr + offs, mask=m).to(tl.int1) & ~r, mask=m)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
