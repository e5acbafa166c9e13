"""Navigation2D-v0: a point moves towards a hidden goal (MAML §5.3, the authors' code).

Source: Finn et al. 2017 (MAML) "2D navigation". The dynamics follow the authors'
code (cbfinn/maml_rl ``maml_examples/point_env_randgoal.py``; the clip as in its
port tristandeleu/pytorch-maml-rl ``maml_rl/envs/navigation.py``), not the paper
text: clipped actions, goals ``U[-0.5, 0.5]²``.

Dynamics, per env (state ``pos = (x, y)``, params ``goal = (gx, gy)``)::

    a      = clip(action, -0.1, 0.1)                    (per component)
    pos   += a
    reward = -sqrt((x - gx)² + (y - gy)²)               (after the move)
    terminated = |x - gx| < 0.01 and |y - gy| < 0.01

reset: ``pos = (0, 0)`` (deterministic; a reset still uses one counter value, as
every family's does, see :mod:`._autoreset`). Observation: ``pos``. Only IEEE
``+ - * sqrt`` and comparisons on float32, with the float32 values of the constants
0.1 and 0.01, so every backend equals the torch reference bit for bit: the square
root is the correctly rounded one everywhere (the reference rounds a float64 sqrt,
since torch's vectorised float32 sqrt is off by an ulp on some CPUs; Triton uses
``sqrt_rn``), and the Triton kernels are launched with ``enable_fp_fusion=False``
so a GPU does not contract ``dx*dx + dy*dy`` into an FMA.

Bytes per env-step (the floor of ``bench/envs.py``): read state 8, goal 8,
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

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

STATE_DIM = 2
OBS_DIM = 2
PARAM_NAMES = ("goal",)
STOCHASTIC = False
BYTES_PER_STEP = 56
MAX_ACTION = float(np.float32(0.1))     # the float32 value of 0.1, exact in every backend
GOAL_TOLERANCE = float(np.float32(0.01))

_MAX_ACTION32 = np.float32(0.1)
_GOAL_TOLERANCE32 = np.float32(0.01)


# ----------------------------------------------------------------------------- reference
def move_reference(state, action):
    """``state[2, N]`` positions, ``action[N, 2]`` -> new positions ``[2, N]`` (action clipped)."""
    a = action.clamp(-MAX_ACTION, MAX_ACTION).t()
    return state + a


def distance_reference(pos, goal):
    """``(dx[N], dy[N], ‖pos - goal‖₂[N])`` for positions ``[2, N]`` and goals ``[N, 2]``."""
    dx = pos[0] - goal[:, 0]
    dy = pos[1] - goal[:, 1]
    # torch's vectorised float32 sqrt is not correctly rounded on every CPU (AVX-512 builds
    # differ by an ulp); the float64 sqrt rounded to float32 is (53 >= 2*24 + 2 bits).
    return dx, dy, torch.sqrt((dx * dx + dy * dy).double()).to(torch.float32)


def dynamics_reference(state, params, action, key, counter):
    """One move for every env: ``state[2, N] -> (new_state, reward[N], terminated[N])``."""
    (goal,) = params
    new_state = move_reference(state, action)
    dx, dy, dist = distance_reference(new_state, goal)
    terminated = (dx.abs() < GOAL_TOLERANCE) & (dy.abs() < GOAL_TOLERANCE)
    return new_state, -dist, terminated


def reset_reference(state, params, key, counter):
    """Fresh states ``[2, N]``: the origin."""
    return torch.zeros_like(state)


def observe_reference(state, params):
    """Observation ``[N, 2]``: the position."""
    return state.t().contiguous()


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


reset_masked_reference_ = make_reset_masked_reference(reset_reference, observe_reference)


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def _clip_nb(a):
    return min(max(a, -_MAX_ACTION32), _MAX_ACTION32)


@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    (goal,) = params
    x = state[0, i] + _clip_nb(action[i, 0])
    y = state[1, i] + _clip_nb(action[i, 1])
    dx = x - goal[i, 0]
    dy = y - goal[i, 1]
    term = abs(dx) < _GOAL_TOLERANCE32 and abs(dy) < _GOAL_TOLERANCE32
    return -np.sqrt(dx * dx + dy * dy), term, x, y


@njit(inline="always", cache=True)
def _reset_state_nb(i, key, counter):
    return np.float32(0.0), np.float32(0.0)


@njit(inline="always", cache=True)
def _observe_nb(i, state, out):
    out[i, 0] = state[0, i]
    out[i, 1] = state[1, i]


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    goal,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (goal,)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, OBS_DIM, state, elapsed, needs_reset,
                    counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps, mode)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, key, mask, obs):
    for i in prange(key.shape[0]):
        reset_env_nb(i, _reset_state_nb, _observe_nb, state, elapsed, needs_reset, counter, key, mask, obs)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _observe_tl(out_ptr, offs, m, keep, x, y):
    """The position into the rows ``offs`` of ``out [N, 2]`` where ``keep``, zeros elsewhere."""
    tl.store(out_ptr + offs * 2 + 0, tl.where(keep, x, 0.0), mask=m)
    tl.store(out_ptr + offs * 2 + 1, tl.where(keep, y, 0.0), mask=m)


@lazy_jit
def _move_tl(state_ptr, goal_ptr, action_ptr, offs, m, n):
    """The clipped move of the envs ``offs``: the new position ``(x, y)`` and its offset from the goal ``(dx, dy)``."""
    ax = tl.minimum(tl.maximum(tl.load(action_ptr + offs * 2, mask=m), -0.1), 0.1)
    ay = tl.minimum(tl.maximum(tl.load(action_ptr + offs * 2 + 1, mask=m), -0.1), 0.1)
    x = tl.load(state_ptr + offs, mask=m) + ax
    y = tl.load(state_ptr + n + offs, mask=m) + ay
    return x, y, x - tl.load(goal_ptr + offs * 2, mask=m), y - tl.load(goal_ptr + offs * 2 + 1, mask=m)


@lazy_jit
def _finish_step_tl(state_ptr, obs_ptr, final_obs_ptr, do_reset, nx, ny, offs, m, n, MODE: constexpr):
    """After the autoreset: final_obs (same_step), the reset to the origin, the state and obs stores."""
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        _observe_tl(final_obs_ptr, offs, m, do_reset, nx, ny)
    nx = tl.where(do_reset, 0.0, nx)
    ny = tl.where(do_reset, 0.0, ny)
    tl.store(state_ptr + offs, nx, mask=m)
    tl.store(state_ptr + n + offs, ny, mask=m)
    _observe_tl(obs_ptr, offs, m, m, nx, ny)


@lazy_jit
def _step_tl(
    # state, updated in place (state is [2, N] with row stride N)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # task params: goal [N, 2] row-major
    goal_ptr,
    # inputs: action [N, 2] float32 row-major
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
    nx, ny, dx, dy = _move_tl(state_ptr, goal_ptr, action_ptr, offs, m, n)
    reward = -tl.sqrt_rn(dx * dx + dy * dy)
    term = (tl.abs(dx) < 0.01) & (tl.abs(dy) < 0.01)
    do_reset, _ = autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr, truncated_ptr,
                               reward, term, tl.load(counter_ptr + offs, mask=m), offs, m, max_steps,
                               STOCHASTIC=False, MODE=MODE)
    _finish_step_tl(state_ptr, obs_ptr, final_obs_ptr, do_reset, nx, ny, offs, m, n, MODE)


@lazy_jit
def _reset_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, key_ptr, mask_ptr, obs_ptr, n, BLOCK: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r, _ = masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m)
    x = tl.where(r, 0.0, tl.load(state_ptr + offs, mask=m))  # reset: the origin
    y = tl.where(r, 0.0, tl.load(state_ptr + n + offs, mask=m))
    tl.store(state_ptr + offs, x, mask=m)
    tl.store(state_ptr + n + offs, y, mask=m)
    _observe_tl(obs_ptr, offs, m, m, x, y)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
