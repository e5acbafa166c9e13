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

reset: ``pos = (0, 0)``, as :mod:`.navigation2d` (whose reset kernels this module
reuses). Observation: ``pos``. Only IEEE ``+ - * sqrt`` and comparisons on float32
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
from metarl.kernels.envs._autoreset import NEXT_STEP, SAME_STEP, make_step_reference
from metarl.kernels.envs.navigation2d import (  # noqa: F401 - the shared reset, re-exported
    MAX_ACTION,
    _clip_nb,
    _reset_nb,
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
@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params: goal [N, 2]
    goal,
    # inputs: action [N, 2] float32
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    n = state.shape[1]
    for i in prange(n):
        if mode == NEXT_STEP and needs_reset[i]:
            state[0, i] = 0.0
            state[1, i] = 0.0
            counter[i] += 1
            obs[i, 0] = 0.0
            obs[i, 1] = 0.0
            reward[i] = 0.0
            terminated[i] = False
            truncated[i] = False
            elapsed[i] = 0
            needs_reset[i] = False
            continue
        x = state[0, i] + _clip_nb(action[i, 0])
        y = state[1, i] + _clip_nb(action[i, 1])
        dx = x - goal[i, 0]
        dy = y - goal[i, 1]
        e = elapsed[i] + 1
        trunc = max_steps > 0 and e >= max_steps
        reward[i] = 1.0 if np.sqrt(dx * dx + dy * dy) < _GOAL_RADIUS32 else 0.0
        terminated[i] = False
        truncated[i] = trunc
        if mode == SAME_STEP:
            if trunc:
                final_obs[i, 0] = x
                final_obs[i, 1] = y
                x = np.float32(0.0)
                y = np.float32(0.0)
                counter[i] += 1
                e = 0
            else:
                final_obs[i, 0] = 0.0
                final_obs[i, 1] = 0.0
        else:
            needs_reset[i] = trunc
        state[0, i] = x
        state[1, i] = y
        elapsed[i] = e
        obs[i, 0] = x
        obs[i, 1] = y


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
    x = tl.load(state_ptr + offs, mask=m)
    y = tl.load(state_ptr + n + offs, mask=m)
    gx = tl.load(goal_ptr + offs * 2, mask=m)
    gy = tl.load(goal_ptr + offs * 2 + 1, mask=m)
    ax = tl.load(action_ptr + offs * 2, mask=m)
    ay = tl.load(action_ptr + offs * 2 + 1, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)
    elapsed = tl.load(elapsed_ptr + offs, mask=m)

    nx = x + tl.minimum(tl.maximum(ax, -0.1), 0.1)
    ny = y + tl.minimum(tl.maximum(ay, -0.1), 0.1)
    dx = nx - gx
    dy = ny - gy
    reward = tl.where(tl.sqrt_rn(dx * dx + dy * dy) < 0.8, 1.0, 0.0)
    term = tl.zeros((BLOCK,), tl.int1)
    e = elapsed + 1
    trunc = (e >= max_steps) & (max_steps > 0)

    if MODE == 0:  # next_step: envs flagged last step are reset instead of stepped
        r = tl.load(needs_reset_ptr + offs, mask=m).to(tl.int1)
        do_reset = r
        trunc = trunc & ~r
        reward = tl.where(r, 0.0, reward)
        tl.store(needs_reset_ptr + offs, trunc, mask=m)
    else:
        do_reset = trunc & (MODE == 1)
        if MODE == 2:
            tl.store(needs_reset_ptr + offs, trunc, mask=m)
    counter = counter + do_reset.to(tl.int64)
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        tl.store(final_obs_ptr + offs * 2 + 0, tl.where(do_reset, nx, 0.0), mask=m)
        tl.store(final_obs_ptr + offs * 2 + 1, tl.where(do_reset, ny, 0.0), mask=m)
    nx = tl.where(do_reset, 0.0, nx)
    ny = tl.where(do_reset, 0.0, ny)
    e = tl.where(do_reset, 0, e)

    tl.store(state_ptr + offs, nx, mask=m)
    tl.store(state_ptr + n + offs, ny, mask=m)
    tl.store(obs_ptr + offs * 2 + 0, nx, mask=m)
    tl.store(obs_ptr + offs * 2 + 1, ny, mask=m)
    tl.store(counter_ptr + offs, counter, mask=m)
    tl.store(elapsed_ptr + offs, e, mask=m)
    tl.store(reward_ptr + offs, reward, mask=m)
    tl.store(terminated_ptr + offs, term, mask=m)
    tl.store(truncated_ptr + offs, trunc, mask=m)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
