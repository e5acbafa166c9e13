"""SemicircleGoal-v0: a point with a sparse reward near a goal on a semicircle.

Source: Gupta et al. 2018, "Meta-Reinforcement Learning of Structured Exploration
Strategies" (MAESN) §5: goals on a semicircle of radius 2, reward only within 0.8 of
the goal. MAESN moves a wheeled robot or an ant; this is the point-mass version of
``/work/shared/specs/envs.md`` (same moves as Navigation2D-v0).

Dynamics, per env (state ``pos = (x, y)``, params ``goal = (gx, gy)``)::

    a      = clip(action, -0.1, 0.1)                    (per component)
    pos   += a
    reward = 1 if sqrt((x - gx)² + (y - gy)²) < 0.8 else 0     (after the move)
    terminated = never (episodes end by the time limit, 200 steps)

reset: ``pos = (0, 0)``, as :mod:`.navigation2d` (whose move, reset and observation
code this module reuses). Observation: ``pos``. Only IEEE ``+ - * sqrt`` and comparisons on float32
(constants at their float32 values), so every backend equals the torch reference bit
for bit (Triton: ``sqrt_rn``, launched with ``enable_fp_fusion=False``).

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
    make_step_reference,
    step_env_nb,
)
from metarl.kernels.envs.navigation2d import (  # noqa: F401 - the shared move, reset and observation, re-exported
    MAX_ACTION,
    _clip_nb,
    _finish_step_tl,
    _move_tl,
    _observe_nb,
    _reset_nb,
    _reset_state_nb,
    _reset_tl,
    distance_reference,
    move_reference,
    observe_reference,
    reset_masked_reference_,
    reset_reference,
)

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

STATE_DIM = 2
OBS_DIM = 2
PARAM_NAMES = ("goal",)
STOCHASTIC = False
BYTES_PER_STEP = 56
RADIUS = 2.0
GOAL_RADIUS = float(np.float32(0.8))    # reward when closer than this (its float32 value)

_GOAL_RADIUS32 = np.float32(0.8)


# ----------------------------------------------------------------------------- reference
def dynamics_reference(state, params, action, key, counter):
    """One move for every env: ``state[2, N] -> (new_state, reward[N], terminated[N])``."""
    (goal,) = params
    new_state = move_reference(state, action)
    _, _, dist = distance_reference(new_state, goal)
    reward = (dist < GOAL_RADIUS).to(torch.float32)
    return new_state, reward, torch.zeros_like(reward, dtype=torch.bool)


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    (goal,) = params
    x = state[0, i] + _clip_nb(action[i, 0])
    y = state[1, i] + _clip_nb(action[i, 1])
    dx = x - goal[i, 0]
    dy = y - goal[i, 1]
    return (np.float32(1.0) if np.sqrt(dx * dx + dy * dy) < _GOAL_RADIUS32 else np.float32(0.0)), False, x, y


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


# ----------------------------------------------------------------------------- triton
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
    reward = tl.where(tl.sqrt_rn(dx * dx + dy * dy) < 0.8, 1.0, 0.0)
    term = tl.zeros((BLOCK,), tl.int1)  # never terminates
    do_reset, _ = autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr, truncated_ptr,
                               reward, term, tl.load(counter_ptr + offs, mask=m), offs, m, max_steps,
                               STOCHASTIC=False, MODE=MODE)
    _finish_step_tl(state_ptr, obs_ptr, final_obs_ptr, do_reset, nx, ny, offs, m, n, MODE)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
