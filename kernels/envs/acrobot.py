"""Acrobot-v1 with per-env physics (gymnasium ``classic_control/acrobot.py``, ``AcrobotEnv``).

Source: gymnasium 1.x ``AcrobotEnv`` ("book" dynamics of Sutton & Barto, from RLPy),
``torque_noise_max = 0``. State ``s = (θ1, θ2, θ̇1, θ̇2)`` (gymnasium's order), torque
``a = action − 1 ∈ {−1, 0, 1}`` N·m, ``g = 9.8``, both links' moment of inertia
``I = link_moi``::

    d1   = m1 lc1² + m2 (l1² + lc2² + 2 l1 lc2 cos θ2) + 2 I
    d2   = m2 (lc2² + l1 lc2 cos θ2) + I
    φ2   = m2 lc2 g sin(θ1 + θ2)                       (gymnasium: cos(θ1 + θ2 − π/2))
    φ1   = −m2 l1 lc2 θ̇2² sin θ2 − 2 m2 l1 lc2 θ̇2 θ̇1 sin θ2 + (m1 lc1 + m2 l1) g sin θ1 + φ2
    θ̈2   = (a + d2/d1 φ1 − m2 l1 lc2 θ̇1² sin θ2 − φ2) / (m2 lc2² + I − d2²/d1)
    θ̈1   = −(d2 θ̈2 + φ1) / d1

One step is one classical RK4 step of length ``dt`` on ``ds/dt = (θ̇1, θ̇2, θ̈1, θ̈2)``
with the torque held constant (gymnasium appends it to the state with derivative 0):
``s' = s + dt/6 (k1 + 2 k2 + 2 k3 + k4)``, ``k2 = f(s + dt/2 k1)``, ... Then θ1, θ2 are
wrapped into [−π, π] and θ̇1, θ̇2 clipped to ±4π, ±9π. gymnasium's ``wrap`` adds ∓2π
in a loop; here ``x ∓ 2π·k`` with ``k = ⌈(|x| − π)/2π⌉``, then one more −2π if a
rounded k fell one short (the same as the loop for k = 1, within rounding otherwise;
branch-free, and it cannot hang on inf): from states near the velocity bounds one
RK4 step can move an angle by tens of turns.
terminated when ``−cos θ1 − cos(θ2 + θ1) > 1``; reward −1, or 0 on the terminating
step; reset: every state component ``U(−0.1, 0.1)`` (lanes 0..3 of one random event);
observation ``(cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2)``.

As in gymnasium, ``link_length_2`` does not enter the dynamics or the termination
(gymnasium only draws with it); it is a task field but the kernels never read it.

Float32 throughout (gymnasium integrates in float64), so parity is to a tolerance.
One step from a set state vs gymnasium: with |θ̇| within a quarter of the bounds the
observation agrees to 1e-6; anywhere in the state box (where RK4 with dt = 0.2 s
amplifies rounding) cos/sin agree to ~5e-6 and the velocities to ~1.2e-3 absolute
(4e-5 of their bound). ``sin``/``cos`` differ by an ulp or so between backends and
the double pendulum is chaotic, so backends agree to ~2e-5 over 20-step episodes,
not exactly. Reset states, which use only ``+`` and ``×`` on the shared uniforms,
are exact (their cos/sin observations within an ulp).

Bytes per env-step (the floor of ``bench/envs.py``): read state 16, params 28
(seven of the eight fields), action 8, elapsed 4, needs_reset 1; write state 16,
obs 24, reward 4, terminated 1, truncated 1, elapsed 4, needs_reset 1 — 108 bytes.
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

STATE_DIM = 4
OBS_DIM = 6
PARAM_NAMES = ("link_length_1", "link_length_2", "link_mass_1", "link_mass_2",
               "link_com_pos_1", "link_com_pos_2", "link_moi", "dt")
STOCHASTIC = False
BYTES_PER_STEP = 108

# Constants at their float32 values (exactly representable, so the torch reference,
# NumPy and every kernel compute with the same numbers whatever precision they promote to).
_F = np.float32
GRAVITY = float(_F(9.8))
PI = float(_F(math.pi))
TWO_PI = float(_F(2 * math.pi))
MAX_VEL_1 = float(_F(4 * math.pi))
MAX_VEL_2 = float(_F(9 * math.pi))
INV_TWO_PI = float(_F(1 / (2 * math.pi)))
RESET_LOW = float(_F(-0.1))
RESET_SPAN = float(_F(0.2))

_G32, _PI32, _TWO_PI32, _INV_TWO_PI32 = _F(GRAVITY), _F(PI), _F(TWO_PI), _F(INV_TWO_PI)
_MAX_VEL_1_32, _MAX_VEL_2_32 = _F(MAX_VEL_1), _F(MAX_VEL_2)
_LOW32, _SPAN32 = _F(RESET_LOW), _F(RESET_SPAN)
_ONE32, _TWO32, _SIX32 = _F(1.0), _F(2.0), _F(6.0)


# ----------------------------------------------------------------------------- reference
def _dsdt_reference(theta1, theta2, dtheta1, dtheta2, torque, m1, m2, l1, lc1, lc2, moi):
    """Time derivative ``(θ̇1, θ̇2, θ̈1, θ̈2)`` of the state (``[N]`` each), "book" dynamics."""
    cos2 = torch.cos(theta2)
    sin2 = torch.sin(theta2)
    d1 = m1 * lc1 * lc1 + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * cos2) + moi + moi
    d2 = m2 * (lc2 * lc2 + l1 * lc2 * cos2) + moi
    phi2 = m2 * lc2 * GRAVITY * torch.sin(theta1 + theta2)
    phi1 = (-m2 * l1 * lc2 * (dtheta2 * dtheta2) * sin2
            - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * GRAVITY * torch.sin(theta1)
            + phi2)
    ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * sin2 - phi2) / (
        m2 * lc2 * lc2 + moi - d2 * d2 / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


def _wrap_reference(x):
    """gymnasium's ``wrap(x, -π, π)``: ``x ∓ k·2π`` with the k its loop would count."""
    x = torch.where(x > PI, x - TWO_PI * torch.ceil((x - PI) * INV_TWO_PI), x)
    x = torch.where(x < -PI, x + TWO_PI * torch.ceil((-PI - x) * INV_TWO_PI), x)
    return torch.where(x > PI, x - TWO_PI, x)  # a k rounded one short


def dynamics_reference(state, params, action, key, counter):
    """One RK4 step for every env: ``state[4, N] -> (new_state, reward[N], terminated[N])``."""
    l1, _l2, m1, m2, lc1, lc2, moi, dt = params
    torque = (action - 1).to(state.dtype)
    phys = (torque, m1, m2, l1, lc1, lc2, moi)
    y0 = tuple(state)
    dt2 = dt / 2.0
    k1 = _dsdt_reference(*y0, *phys)
    k2 = _dsdt_reference(*(y + dt2 * k for y, k in zip(y0, k1)), *phys)
    k3 = _dsdt_reference(*(y + dt2 * k for y, k in zip(y0, k2)), *phys)
    k4 = _dsdt_reference(*(y + dt * k for y, k in zip(y0, k3)), *phys)
    th1, th2, w1, w2 = (y + dt / 6.0 * (a + 2.0 * b + 2.0 * c + d) for y, a, b, c, d in zip(y0, k1, k2, k3, k4))
    th1 = _wrap_reference(th1)
    th2 = _wrap_reference(th2)
    w1 = w1.clamp(-MAX_VEL_1, MAX_VEL_1)
    w2 = w2.clamp(-MAX_VEL_2, MAX_VEL_2)
    terminated = -torch.cos(th1) - torch.cos(th2 + th1) > 1.0
    reward = torch.where(terminated, 0.0, -1.0).to(state.dtype)
    return torch.stack((th1, th2, w1, w2)), reward, terminated


def reset_reference(state, params, key, counter):
    """Fresh states ``[4, N]``: each component ``-0.1 + 0.2 u`` with u from lanes 0..3."""
    return torch.stack([RESET_LOW + RESET_SPAN * uniform_reference(key, counter, lane)
                        for lane in range(4)]).to(state.dtype)


def observe_reference(state, params):
    """Observation ``[N, 6]``: (cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2)."""
    th1, th2, w1, w2 = state
    return torch.stack((torch.cos(th1), torch.sin(th1), torch.cos(th2), torch.sin(th2), w1, w2), 1)


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


reset_masked_reference_ = make_reset_masked_reference(reset_reference, observe_reference)


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def _dsdt_nb(theta1, theta2, dtheta1, dtheta2, torque, m1, m2, l1, lc1, lc2, moi):
    sin2, cos2 = sincos_nb(theta2)
    d1 = m1 * lc1 * lc1 + m2 * (l1 * l1 + lc2 * lc2 + _TWO32 * l1 * lc2 * cos2) + moi + moi
    d2 = m2 * (lc2 * lc2 + l1 * lc2 * cos2) + moi
    phi2 = m2 * lc2 * _G32 * sincos_nb(theta1 + theta2)[0]
    phi1 = (-m2 * l1 * lc2 * (dtheta2 * dtheta2) * sin2
            - _TWO32 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * _G32 * sincos_nb(theta1)[0]
            + phi2)
    ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * sin2 - phi2) / (
        m2 * lc2 * lc2 + moi - d2 * d2 / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


@njit(inline="always", cache=True)
def _wrap_nb(x):
    if x > _PI32:
        x = x - _TWO_PI32 * np.ceil((x - _PI32) * _INV_TWO_PI32)
    if x < -_PI32:
        x = x + _TWO_PI32 * np.ceil((-_PI32 - x) * _INV_TWO_PI32)
    if x > _PI32:
        x = x - _TWO_PI32
    return x


@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    # link_length_2 is not read, as in gymnasium
    link_length_1, _, link_mass_1, link_mass_2, link_com_pos_1, link_com_pos_2, link_moi, dt = params
    l1 = link_length_1[i]
    m1 = link_mass_1[i]
    m2 = link_mass_2[i]
    lc1 = link_com_pos_1[i]
    lc2 = link_com_pos_2[i]
    moi = link_moi[i]
    h = dt[i]
    h2 = h / _TWO32
    torque = _F(action[i] - 1)
    s0 = state[0, i]
    s1 = state[1, i]
    s2 = state[2, i]
    s3 = state[3, i]
    a0, a1, a2, a3 = _dsdt_nb(s0, s1, s2, s3, torque, m1, m2, l1, lc1, lc2, moi)
    b0, b1, b2, b3 = _dsdt_nb(s0 + h2 * a0, s1 + h2 * a1, s2 + h2 * a2, s3 + h2 * a3,
                              torque, m1, m2, l1, lc1, lc2, moi)
    c0, c1, c2, c3 = _dsdt_nb(s0 + h2 * b0, s1 + h2 * b1, s2 + h2 * b2, s3 + h2 * b3,
                              torque, m1, m2, l1, lc1, lc2, moi)
    d0, d1, d2, d3 = _dsdt_nb(s0 + h * c0, s1 + h * c1, s2 + h * c2, s3 + h * c3,
                              torque, m1, m2, l1, lc1, lc2, moi)
    h6 = h / _SIX32
    th1 = _wrap_nb(s0 + h6 * (a0 + _TWO32 * b0 + _TWO32 * c0 + d0))
    th2 = _wrap_nb(s1 + h6 * (a1 + _TWO32 * b1 + _TWO32 * c1 + d1))
    w1 = min(max(s2 + h6 * (a2 + _TWO32 * b2 + _TWO32 * c2 + d2), -_MAX_VEL_1_32), _MAX_VEL_1_32)
    w2 = min(max(s3 + h6 * (a3 + _TWO32 * b3 + _TWO32 * c3 + d3), -_MAX_VEL_2_32), _MAX_VEL_2_32)
    term = -sincos_nb(th1)[1] - sincos_nb(th2 + th1)[1] > _ONE32
    return (_F(0.0) if term else _F(-1.0)), term, th1, th2, w1, w2


@njit(inline="always", cache=True)
def _reset_state_nb(i, key, counter):
    return (_LOW32 + _SPAN32 * uniform_nb(key, counter, 0), _LOW32 + _SPAN32 * uniform_nb(key, counter, 1),
            _LOW32 + _SPAN32 * uniform_nb(key, counter, 2), _LOW32 + _SPAN32 * uniform_nb(key, counter, 3))


@njit(inline="always", cache=True)
def _observe_nb(i, state, out):
    sin1, cos1 = sincos_nb(state[0, i])
    sin2, cos2 = sincos_nb(state[1, i])
    out[i, 0] = cos1
    out[i, 1] = sin1
    out[i, 2] = cos2
    out[i, 3] = sin2
    out[i, 4] = state[2, i]
    out[i, 5] = state[3, i]


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    link_length_1, link_length_2, link_mass_1, link_mass_2, link_com_pos_1, link_com_pos_2, link_moi, dt,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (link_length_1, link_length_2, link_mass_1, link_mass_2, link_com_pos_1, link_com_pos_2, link_moi, dt)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, OBS_DIM, state, elapsed, needs_reset,
                    counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps, mode)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, key, mask, obs):
    for i in prange(key.shape[0]):
        reset_env_nb(i, _reset_state_nb, _observe_nb, state, elapsed, needs_reset, counter, key, mask, obs)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _dsdt_tl(theta1, theta2, dtheta1, dtheta2, torque, m1, m2, l1, lc1, lc2, moi):
    cos2 = tl.cos(theta2)
    sin2 = tl.sin(theta2)
    d1 = m1 * lc1 * lc1 + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * cos2) + moi + moi
    d2 = m2 * (lc2 * lc2 + l1 * lc2 * cos2) + moi
    phi2 = m2 * lc2 * 9.8 * tl.sin(theta1 + theta2)
    phi1 = (-m2 * l1 * lc2 * (dtheta2 * dtheta2) * sin2
            - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * 9.8 * tl.sin(theta1)
            + phi2)
    ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * sin2 - phi2) / (
        m2 * lc2 * lc2 + moi - d2 * d2 / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


@lazy_jit
def _wrap_tl(x):
    pi = 3.141592653589793
    two_pi = 6.283185307179586
    inv_two_pi = 0.15915494309189535
    x = tl.where(x > pi, x - two_pi * tl.ceil((x - pi) * inv_two_pi), x)
    x = tl.where(x < -pi, x + two_pi * tl.ceil((-pi - x) * inv_two_pi), x)
    return tl.where(x > pi, x - two_pi, x)


@lazy_jit
def _reset_state_tl(key, counter):
    return (-0.1 + 0.2 * uniform_tl(key, counter, 0), -0.1 + 0.2 * uniform_tl(key, counter, 1),
            -0.1 + 0.2 * uniform_tl(key, counter, 2), -0.1 + 0.2 * uniform_tl(key, counter, 3))


@lazy_jit
def _observe_tl(out_ptr, offs, m, keep, th1, th2, w1, w2):
    """(cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2) into the rows ``offs`` of ``out [N, 6]`` where ``keep``,
    zeros elsewhere."""
    tl.store(out_ptr + offs * 6 + 0, tl.where(keep, tl.cos(th1), 0.0), mask=m)
    tl.store(out_ptr + offs * 6 + 1, tl.where(keep, tl.sin(th1), 0.0), mask=m)
    tl.store(out_ptr + offs * 6 + 2, tl.where(keep, tl.cos(th2), 0.0), mask=m)
    tl.store(out_ptr + offs * 6 + 3, tl.where(keep, tl.sin(th2), 0.0), mask=m)
    tl.store(out_ptr + offs * 6 + 4, tl.where(keep, w1, 0.0), mask=m)
    tl.store(out_ptr + offs * 6 + 5, tl.where(keep, w2, 0.0), mask=m)


@lazy_jit
def _step_tl(
    # state, updated in place (state is [4, N] with row stride N)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # task params [N] each (link_length_2 is not read, as in gymnasium)
    l1_ptr, l2_ptr, m1_ptr, m2_ptr, lc1_ptr, lc2_ptr, moi_ptr, dt_ptr,
    # inputs
    action_ptr, key_ptr,
    # outputs ([N, 6] row-major for obs and final_obs)
    obs_ptr, reward_ptr, terminated_ptr, truncated_ptr, final_obs_ptr,
    # sizes / modes
    n, max_steps,
    # meta-parameters
    MODE: constexpr, BLOCK: constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    s0 = tl.load(state_ptr + offs, mask=m)
    s1 = tl.load(state_ptr + n + offs, mask=m)
    s2 = tl.load(state_ptr + 2 * n + offs, mask=m)
    s3 = tl.load(state_ptr + 3 * n + offs, mask=m)
    l1 = tl.load(l1_ptr + offs, mask=m, other=1.0)
    m1 = tl.load(m1_ptr + offs, mask=m, other=1.0)
    m2 = tl.load(m2_ptr + offs, mask=m, other=1.0)
    lc1 = tl.load(lc1_ptr + offs, mask=m, other=1.0)
    lc2 = tl.load(lc2_ptr + offs, mask=m, other=1.0)
    moi = tl.load(moi_ptr + offs, mask=m, other=1.0)
    h = tl.load(dt_ptr + offs, mask=m, other=1.0)
    action = tl.load(action_ptr + offs, mask=m)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)

    torque = (action - 1).to(tl.float32)
    h2 = h / 2.0
    a0, a1, a2, a3 = _dsdt_tl(s0, s1, s2, s3, torque, m1, m2, l1, lc1, lc2, moi)
    b0, b1, b2, b3 = _dsdt_tl(s0 + h2 * a0, s1 + h2 * a1, s2 + h2 * a2, s3 + h2 * a3,
                              torque, m1, m2, l1, lc1, lc2, moi)
    c0, c1, c2, c3 = _dsdt_tl(s0 + h2 * b0, s1 + h2 * b1, s2 + h2 * b2, s3 + h2 * b3,
                              torque, m1, m2, l1, lc1, lc2, moi)
    d0, d1, d2, d3 = _dsdt_tl(s0 + h * c0, s1 + h * c1, s2 + h * c2, s3 + h * c3,
                              torque, m1, m2, l1, lc1, lc2, moi)
    h6 = h / 6.0
    th1 = _wrap_tl(s0 + h6 * (a0 + 2.0 * b0 + 2.0 * c0 + d0))
    th2 = _wrap_tl(s1 + h6 * (a1 + 2.0 * b1 + 2.0 * c1 + d1))
    w1 = tl.minimum(tl.maximum(s2 + h6 * (a2 + 2.0 * b2 + 2.0 * c2 + d2), -12.566370614359172), 12.566370614359172)
    w2 = tl.minimum(tl.maximum(s3 + h6 * (a3 + 2.0 * b3 + 2.0 * c3 + d3), -28.274333882308138), 28.274333882308138)
    term = -tl.cos(th1) - tl.cos(th2 + th1) > 1.0
    reward = tl.where(term, 0.0, -1.0)

    do_reset, reset_counter = autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr,
                                           truncated_ptr, reward, term, counter, offs, m, max_steps,
                                           STOCHASTIC=False, MODE=MODE)
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        _observe_tl(final_obs_ptr, offs, m, do_reset, th1, th2, w1, w2)
    th1_0, th2_0, w1_0, w2_0 = _reset_state_tl(key, reset_counter)
    th1 = tl.where(do_reset, th1_0, th1)
    th2 = tl.where(do_reset, th2_0, th2)
    w1 = tl.where(do_reset, w1_0, w1)
    w2 = tl.where(do_reset, w2_0, w2)
    tl.store(state_ptr + offs, th1, mask=m)
    tl.store(state_ptr + n + offs, th2, mask=m)
    tl.store(state_ptr + 2 * n + offs, w1, mask=m)
    tl.store(state_ptr + 3 * n + offs, w2, mask=m)
    _observe_tl(obs_ptr, offs, m, m, th1, th2, w1, w2)


@lazy_jit
def _reset_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, key_ptr, mask_ptr, obs_ptr, n, BLOCK: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r, counter = masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m)
    th1_0, th2_0, w1_0, w2_0 = _reset_state_tl(tl.load(key_ptr + offs, mask=m), counter)
    th1 = tl.where(r, th1_0, tl.load(state_ptr + offs, mask=m))
    th2 = tl.where(r, th2_0, tl.load(state_ptr + n + offs, mask=m))
    w1 = tl.where(r, w1_0, tl.load(state_ptr + 2 * n + offs, mask=m))
    w2 = tl.where(r, w2_0, tl.load(state_ptr + 3 * n + offs, mask=m))
    tl.store(state_ptr + offs, th1, mask=m)
    tl.store(state_ptr + n + offs, th2, mask=m)
    tl.store(state_ptr + 2 * n + offs, w1, mask=m)
    tl.store(state_ptr + 3 * n + offs, w2, mask=m)
    _observe_tl(obs_ptr, offs, m, m, th1, th2, w1, w2)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
