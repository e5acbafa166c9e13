"""Pendulum-v1 with per-env physics (gymnasium ``classic_control/pendulum.py``).

Dynamics (semi-implicit Euler, as gymnasium's ``PendulumEnv.step``)::

    u      = clip(a, −max_torque, max_torque)
    cost   = angle_normalize(θ)² + 0.1 θ̇² + 0.001 u²        (pre-step θ, θ̇)
    θ̇'     = clip(θ̇ + (3g/(2l) sin θ + 3/(m l²) u) dt, −max_speed, max_speed)
    θ'     = θ + θ̇' dt
    reward = −cost;  obs = (cos θ', sin θ', θ̇')

with ``angle_normalize(x) = ((x + π) mod 2π) − π`` (computed as
``y − floor(y / 2π) 2π − π``, ``y = x + π``, identically in every backend). Never
terminates (the time limit, 200 steps, truncates). Reset: θ = −π + 2π u₀,
θ̇ = −1 + 2 u₁ (lanes 0, 1 of one random event), i.e. gymnasium's U(−π, π), U(−1, 1).
θ is not wrapped in the state, as in gymnasium. Float32 throughout (gymnasium
keeps float64 state): parity is to float32 tolerance.

Bytes per env-step (the floor of ``bench/envs.py``): read state 8, params 24,
action 4, elapsed 4, needs_reset 1; write state 8, obs 12, reward 4,
terminated 1, truncated 1, elapsed 4, needs_reset 1 — 72 bytes.
"""
from __future__ import annotations

import math
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
OBS_DIM = 3
PARAM_NAMES = ("g", "m", "l", "max_speed", "max_torque", "dt")
STOCHASTIC = False
BYTES_PER_STEP = 72
PI = math.pi
TWO_PI = 2 * math.pi


# ----------------------------------------------------------------------------- reference
def angle_normalize_reference(x):
    """``((x + π) mod 2π) − π`` of a float32 tensor, in [−π, π]."""
    y = x + PI
    return y - torch.floor(y / TWO_PI) * TWO_PI - PI


def dynamics_reference(state, params, action, key, counter):
    """One step for every env: ``state[2, N], action[N, 1] -> (new_state, reward[N], terminated[N])``."""
    g, m, l, max_speed, max_torque, dt = params  # noqa: E741 - gymnasium's name
    th, thdot = state
    u = torch.minimum(torch.maximum(action[:, 0], -max_torque), max_torque)
    an = angle_normalize_reference(th)
    costs = an * an + 0.1 * (thdot * thdot) + 0.001 * (u * u)
    newthdot = thdot + (3.0 * g / (2.0 * l) * torch.sin(th) + 3.0 / (m * (l * l)) * u) * dt
    newthdot = torch.minimum(torch.maximum(newthdot, -max_speed), max_speed)
    newth = th + newthdot * dt
    return torch.stack((newth, newthdot)), -costs, torch.zeros_like(th, dtype=torch.bool)


def reset_reference(state, params, key, counter):
    """Fresh states ``[2, N]``: θ = −π + 2π u₀, θ̇ = −1 + 2 u₁."""
    th = -PI + TWO_PI * uniform_reference(key, counter, 0)
    thdot = -1.0 + 2.0 * uniform_reference(key, counter, 1)
    return torch.stack((th, thdot)).to(state.dtype)


def observe_reference(state, params):
    """Observation ``[N, 3]`` (cos θ, sin θ, θ̇)."""
    th, thdot = state
    return torch.stack((torch.cos(th), torch.sin(th), thdot), 1)


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


reset_masked_reference_ = make_reset_masked_reference(reset_reference, observe_reference)


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    g, m, l, max_speed, max_torque, dt = params  # noqa: E741 - gymnasium's name
    th = state[0, i]
    thdot = state[1, i]
    u = min(max(action[i, 0], -max_torque[i]), max_torque[i])
    y = th + np.float32(PI)
    an = y - np.floor(y / np.float32(TWO_PI)) * np.float32(TWO_PI) - np.float32(PI)
    costs = an * an + np.float32(0.1) * (thdot * thdot) + np.float32(0.001) * (u * u)
    li = l[i]
    newthdot = thdot + (np.float32(3.0) * g[i] / (np.float32(2.0) * li) * sincos_nb(th)[0]
                        + np.float32(3.0) / (m[i] * (li * li)) * u) * dt[i]
    newthdot = min(max(newthdot, -max_speed[i]), max_speed[i])
    return -costs, False, th + newthdot * dt[i], newthdot


@njit(inline="always", cache=True)
def _reset_state_nb(i, key, counter):
    return (np.float32(-PI) + np.float32(TWO_PI) * uniform_nb(key, counter, 0),
            np.float32(-1.0) + np.float32(2.0) * uniform_nb(key, counter, 1))


@njit(inline="always", cache=True)
def _observe_nb(i, state, out):
    sin, cos = sincos_nb(state[0, i])
    out[i, 0] = cos
    out[i, 1] = sin
    out[i, 2] = state[1, i]


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    g, m, l, max_speed, max_torque, dt,  # noqa: E741 - gymnasium's name
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (g, m, l, max_speed, max_torque, dt)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, OBS_DIM, state, elapsed, needs_reset,
                    counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps, mode)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, key, mask, obs):
    for i in prange(key.shape[0]):
        reset_env_nb(i, _reset_state_nb, _observe_nb, state, elapsed, needs_reset, counter, key, mask, obs)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _reset_state_tl(key, counter):
    th = -3.141592653589793 + 6.283185307179586 * uniform_tl(key, counter, 0)
    thdot = -1.0 + 2.0 * uniform_tl(key, counter, 1)
    return th, thdot


@lazy_jit
def _observe_tl(out_ptr, offs, m, keep, th, thdot):
    """(cos θ, sin θ, θ̇) into the rows ``offs`` of ``out [N, 3]`` where ``keep``, zeros elsewhere."""
    tl.store(out_ptr + offs * 3 + 0, tl.where(keep, tl.cos(th), 0.0), mask=m)
    tl.store(out_ptr + offs * 3 + 1, tl.where(keep, tl.sin(th), 0.0), mask=m)
    tl.store(out_ptr + offs * 3 + 2, tl.where(keep, thdot, 0.0), mask=m)


@lazy_jit
def _step_tl(
    # state, updated in place (state is [2, N] with row stride N)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # task params [N] each
    g_ptr, m_ptr, l_ptr, max_speed_ptr, max_torque_ptr, dt_ptr,
    # inputs (action [N, 1] float32, contiguous)
    action_ptr, key_ptr,
    # outputs ([N, 3] row-major for obs and final_obs)
    obs_ptr, reward_ptr, terminated_ptr, truncated_ptr, final_obs_ptr,
    # sizes / modes
    n, max_steps,
    # meta-parameters
    MODE: constexpr, BLOCK: constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    th = tl.load(state_ptr + offs, mask=m)
    thdot = tl.load(state_ptr + n + offs, mask=m)
    g = tl.load(g_ptr + offs, mask=m)
    mass = tl.load(m_ptr + offs, mask=m, other=1.0)
    length = tl.load(l_ptr + offs, mask=m, other=1.0)
    max_speed = tl.load(max_speed_ptr + offs, mask=m)
    max_torque = tl.load(max_torque_ptr + offs, mask=m)
    dt = tl.load(dt_ptr + offs, mask=m)
    action = tl.load(action_ptr + offs, mask=m)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)

    u = tl.minimum(tl.maximum(action, -max_torque), max_torque)
    y = th + 3.141592653589793
    an = y - tl.floor(y / 6.283185307179586) * 6.283185307179586 - 3.141592653589793
    costs = an * an + 0.1 * (thdot * thdot) + 0.001 * (u * u)
    newthdot = thdot + (3.0 * g / (2.0 * length) * tl.sin(th) + 3.0 / (mass * (length * length)) * u) * dt
    newthdot = tl.minimum(tl.maximum(newthdot, -max_speed), max_speed)
    newth = th + newthdot * dt
    term = tl.full((BLOCK,), 0, tl.int1)  # never terminates

    do_reset, reset_counter = autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr,
                                           truncated_ptr, -costs, term, counter, offs, m, max_steps,
                                           STOCHASTIC=False, MODE=MODE)
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        _observe_tl(final_obs_ptr, offs, m, do_reset, newth, newthdot)
    th0, thdot0 = _reset_state_tl(key, reset_counter)
    newth = tl.where(do_reset, th0, newth)
    newthdot = tl.where(do_reset, thdot0, newthdot)
    tl.store(state_ptr + offs, newth, mask=m)
    tl.store(state_ptr + n + offs, newthdot, mask=m)
    _observe_tl(obs_ptr, offs, m, m, newth, newthdot)


@lazy_jit
def _reset_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, key_ptr, mask_ptr, obs_ptr, n, BLOCK: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r, counter = masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m)
    th0, thdot0 = _reset_state_tl(tl.load(key_ptr + offs, mask=m), counter)
    th = tl.where(r, th0, tl.load(state_ptr + offs, mask=m))
    thdot = tl.where(r, thdot0, tl.load(state_ptr + n + offs, mask=m))
    tl.store(state_ptr + offs, th, mask=m)
    tl.store(state_ptr + n + offs, thdot, mask=m)
    _observe_tl(obs_ptr, offs, m, m, th, thdot)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
