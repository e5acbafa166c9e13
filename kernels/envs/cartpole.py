"""CartPole-v1 with per-env physics (gymnasium ``classic_control/cartpole.py``).

Dynamics (Euler, as gymnasium's default ``kinematics_integrator="euler"``)::

    f      = force_mag if a == 1 else -force_mag
    temp   = (f + m_p l θ̇² sin θ) / (m_c + m_p)
    θ̈      = (g sin θ − cos θ · temp) / (l (4/3 − m_p cos² θ / (m_c + m_p)))
    ẍ      = temp − m_p l θ̈ cos θ / (m_c + m_p)
    x += τ ẋ;  ẋ += τ ẍ;  θ += τ θ̇;  θ̇ += τ θ̈

terminated when |x| > 2.4 or |θ| > 12°; reward 1 per step; reset: every state
component ~ U(−0.05, 0.05) (lanes 0..3 of one random event). Float32 throughout
(gymnasium keeps float64 state): parity is to float32 tolerance.

Bytes per env-step (the floor of ``bench/envs.py``): read state 16, params 24,
action 8, elapsed 4, needs_reset 1; write state 16, obs 16, reward 4,
terminated 1, truncated 1, elapsed 4, needs_reset 1 — 96 bytes. (A reset adds its
key and counter, 16 bytes read and 8 written, for the envs that reset only: the C++
kernel resets in a separate pass over those.)

No ``fastmath`` in the Numba kernels: they are bit-identical to the C++ kernel
(built with ``-ffp-contract=off``) and round as the float32 reference does, which the
parity tests check exactly. Of Numba's fastmath flags only ``contract`` (a*b+c fused to
an FMA) speeds ``_step_nb`` up (4096 envs, one thread: 50 -> 37 us; ``nnan``, ``ninf``,
``nsz``, ``reassoc``, ``arcp``, ``afn`` gain nothing), and it changes the rounding.
"""
from __future__ import annotations

import functools
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
OBS_DIM = 4
PARAM_NAMES = ("gravity", "masscart", "masspole", "length", "force_mag", "tau")
STOCHASTIC = False
BYTES_PER_STEP = 96
# float32, so every backend compares in float32 as the torch reference does
X_THRESHOLD = np.float32(2.4)
THETA_THRESHOLD = np.float32(12 * 2 * math.pi / 360)


# ----------------------------------------------------------------------------- reference
def dynamics_reference(state, params, action, key, counter):
    """One Euler step for every env: ``state[4, N] -> (new_state, reward[N], terminated[N])``."""
    gravity, masscart, masspole, length, force_mag, tau = params
    x, x_dot, theta, theta_dot = state
    force = torch.where(action == 1, force_mag, -force_mag)
    costheta = torch.cos(theta)
    sintheta = torch.sin(theta)
    total_mass = masspole + masscart
    polemass_length = masspole * length
    temp = (force + polemass_length * theta_dot * theta_dot * sintheta) / total_mass
    thetaacc = (gravity * sintheta - costheta * temp) / (
        length * (4.0 / 3.0 - masspole * costheta * costheta / total_mass))
    xacc = temp - polemass_length * thetaacc * costheta / total_mass
    new_state = torch.stack((x + tau * x_dot, x_dot + tau * xacc, theta + tau * theta_dot, theta_dot + tau * thetaacc))
    nx, nth = new_state[0], new_state[2]
    terminated = (nx < -X_THRESHOLD) | (nx > X_THRESHOLD) | (nth < -THETA_THRESHOLD) | (nth > THETA_THRESHOLD)
    return new_state, torch.ones_like(x), terminated


def reset_reference(state, params, key, counter):
    """Fresh states ``[4, N]``: each component ``-0.05 + 0.1 u`` with u from lanes 0..3."""
    return torch.stack([-0.05 + 0.1 * uniform_reference(key, counter, lane) for lane in range(4)]).to(state.dtype)


def observe_reference(state, params):
    """Observation ``[N, 4]`` (x, x_dot, theta, theta_dot)."""
    return state.t().contiguous()


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


reset_masked_reference_ = make_reset_masked_reference(reset_reference, observe_reference)


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    # the same float32 operations in the same order as csrc/cartpole.cpp (bit-identical)
    gravity, masscart, masspole, length, force_mag, tau = params
    x = state[0, i]
    x_dot = state[1, i]
    theta = state[2, i]
    theta_dot = state[3, i]
    f = force_mag[i] if action[i] == 1 else -force_mag[i]
    sintheta, costheta = sincos_nb(theta)
    total_mass = masspole[i] + masscart[i]
    polemass_length = masspole[i] * length[i]
    temp = (f + polemass_length * theta_dot * theta_dot * sintheta) / total_mass
    thetaacc = (gravity[i] * sintheta - costheta * temp) / (
        length[i] * (np.float32(4.0 / 3.0) - masspole[i] * costheta * costheta / total_mass))
    xacc = temp - polemass_length * thetaacc * costheta / total_mass
    x = x + tau[i] * x_dot
    x_dot = x_dot + tau[i] * xacc
    theta = theta + tau[i] * theta_dot
    theta_dot = theta_dot + tau[i] * thetaacc
    term = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
    return np.float32(1.0), term, x, x_dot, theta, theta_dot


@njit(inline="always", cache=True)
def _reset_state_nb(i, key, counter):
    return (np.float32(-0.05) + np.float32(0.1) * uniform_nb(key, counter, 0),
            np.float32(-0.05) + np.float32(0.1) * uniform_nb(key, counter, 1),
            np.float32(-0.05) + np.float32(0.1) * uniform_nb(key, counter, 2),
            np.float32(-0.05) + np.float32(0.1) * uniform_nb(key, counter, 3))


@njit(inline="always", cache=True)
def _observe_nb(i, state, out):
    for j in range(4):
        out[i, j] = state[j, i]


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    gravity, masscart, masspole, length, force_mag, tau,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (gravity, masscart, masspole, length, force_mag, tau)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, OBS_DIM, state, elapsed, needs_reset,
                    counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps, mode)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, key, mask, obs):
    for i in prange(key.shape[0]):
        reset_env_nb(i, _reset_state_nb, _observe_nb, state, elapsed, needs_reset, counter, key, mask, obs)


# ----------------------------------------------------------------------------- C++
@functools.cache
def step_cpp():
    """The C++/OpenMP step (``csrc/cartpole.cpp``): ``_step_nb``'s arguments with the params unpacked
    (looked up once: the env calls this every step)."""
    from metarl import _C

    return _C.cartpole_step


def cpp_threads(n: int) -> int:
    """Threads the C++ step runs ``n`` envs on: 1 below 8192 envs (there an OpenMP fork/join saves a few
    microseconds on idle cores and costs a scheduler time slice on busy ones), else the OpenMP thread
    count of the calling thread, at most one per 2048 envs."""
    from metarl import _C

    return _C.cartpole_threads(n)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _reset_state_tl(key, counter):
    return (-0.05 + 0.1 * uniform_tl(key, counter, 0), -0.05 + 0.1 * uniform_tl(key, counter, 1),
            -0.05 + 0.1 * uniform_tl(key, counter, 2), -0.05 + 0.1 * uniform_tl(key, counter, 3))


@lazy_jit
def _observe_tl(out_ptr, offs, m, keep, x, x_dot, theta, theta_dot):
    """The state into the rows ``offs`` of ``out [N, 4]`` where ``keep``, zeros elsewhere."""
    tl.store(out_ptr + offs * 4 + 0, tl.where(keep, x, 0.0), mask=m)
    tl.store(out_ptr + offs * 4 + 1, tl.where(keep, x_dot, 0.0), mask=m)
    tl.store(out_ptr + offs * 4 + 2, tl.where(keep, theta, 0.0), mask=m)
    tl.store(out_ptr + offs * 4 + 3, tl.where(keep, theta_dot, 0.0), mask=m)


@lazy_jit
def _step_tl(
    # state, updated in place (state is [4, N] with row stride N)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # task params [N] each
    gravity_ptr, masscart_ptr, masspole_ptr, length_ptr, force_mag_ptr, tau_ptr,
    # inputs
    action_ptr, key_ptr,
    # outputs ([N, 4] row-major for obs and final_obs)
    obs_ptr, reward_ptr, terminated_ptr, truncated_ptr, final_obs_ptr,
    # sizes / modes
    n, max_steps,
    # meta-parameters
    MODE: constexpr, BLOCK: constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(state_ptr + offs, mask=m)
    x_dot = tl.load(state_ptr + n + offs, mask=m)
    theta = tl.load(state_ptr + 2 * n + offs, mask=m)
    theta_dot = tl.load(state_ptr + 3 * n + offs, mask=m)
    gravity = tl.load(gravity_ptr + offs, mask=m, other=1.0)
    masscart = tl.load(masscart_ptr + offs, mask=m, other=1.0)
    masspole = tl.load(masspole_ptr + offs, mask=m, other=1.0)
    length = tl.load(length_ptr + offs, mask=m, other=1.0)
    force_mag = tl.load(force_mag_ptr + offs, mask=m)
    tau = tl.load(tau_ptr + offs, mask=m)
    action = tl.load(action_ptr + offs, mask=m)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)

    f = tl.where(action == 1, force_mag, -force_mag)
    costheta = tl.cos(theta)
    sintheta = tl.sin(theta)
    total_mass = masspole + masscart
    polemass_length = masspole * length
    temp = (f + polemass_length * theta_dot * theta_dot * sintheta) / total_mass
    thetaacc = (gravity * sintheta - costheta * temp) / (
        length * (4.0 / 3.0 - masspole * costheta * costheta / total_mass))
    xacc = temp - polemass_length * thetaacc * costheta / total_mass
    nx = x + tau * x_dot
    nx_dot = x_dot + tau * xacc
    nth = theta + tau * theta_dot
    nth_dot = theta_dot + tau * thetaacc
    term = (nx < -2.4) | (nx > 2.4) | (nth < -0.20943951023931953) | (nth > 0.20943951023931953)
    reward = tl.full((BLOCK,), 1.0, tl.float32)

    do_reset, reset_counter = autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr,
                                           truncated_ptr, reward, term, counter, offs, m, max_steps,
                                           STOCHASTIC=False, MODE=MODE)
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        _observe_tl(final_obs_ptr, offs, m, do_reset, nx, nx_dot, nth, nth_dot)
    x0, x_dot0, th0, th_dot0 = _reset_state_tl(key, reset_counter)
    nx = tl.where(do_reset, x0, nx)
    nx_dot = tl.where(do_reset, x_dot0, nx_dot)
    nth = tl.where(do_reset, th0, nth)
    nth_dot = tl.where(do_reset, th_dot0, nth_dot)
    tl.store(state_ptr + offs, nx, mask=m)
    tl.store(state_ptr + n + offs, nx_dot, mask=m)
    tl.store(state_ptr + 2 * n + offs, nth, mask=m)
    tl.store(state_ptr + 3 * n + offs, nth_dot, mask=m)
    _observe_tl(obs_ptr, offs, m, m, nx, nx_dot, nth, nth_dot)


@lazy_jit
def _reset_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, key_ptr, mask_ptr, obs_ptr, n, BLOCK: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r, counter = masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m)
    x0, x_dot0, th0, th_dot0 = _reset_state_tl(tl.load(key_ptr + offs, mask=m), counter)
    x = tl.where(r, x0, tl.load(state_ptr + offs, mask=m))
    x_dot = tl.where(r, x_dot0, tl.load(state_ptr + n + offs, mask=m))
    theta = tl.where(r, th0, tl.load(state_ptr + 2 * n + offs, mask=m))
    theta_dot = tl.where(r, th_dot0, tl.load(state_ptr + 3 * n + offs, mask=m))
    tl.store(state_ptr + offs, x, mask=m)
    tl.store(state_ptr + n + offs, x_dot, mask=m)
    tl.store(state_ptr + 2 * n + offs, theta, mask=m)
    tl.store(state_ptr + 3 * n + offs, theta_dot, mask=m)
    _observe_tl(obs_ptr, offs, m, m, x, x_dot, theta, theta_dot)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
