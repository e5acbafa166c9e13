"""Bandit-v0: Bernoulli multi-armed bandit, one pull per episode (RL^2 §4.1).

Step (one random event per env, lane 0)::

    u      = uniform(key, counter, 0)
    reward = 1.0 if u < probs[arm] else 0.0        # Bernoulli(probs[arm])
    terminated = True                              # an episode is one pull

The env has no state (``STATE_DIM = 0``, state tensor ``[0, N]``); the observation
is the constant 0.0 (``[N, 1]``). A reset draws nothing but, like every reset,
uses one counter value (see ``_autoreset.py``). Comparisons only: every backend
equals the reference bit for bit.

Bytes per env-step (the floor of ``bench/envs.py``): read probs[arm] 4, action 8,
key 8, counter 8, elapsed 4, needs_reset 1; write obs 4, reward 4, terminated 1,
truncated 1, counter 8, elapsed 4, needs_reset 1 — 56 bytes.
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
from metarl.kernels.rng import uniform_nb, uniform_reference, uniform_tl

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

STATE_DIM = 0
OBS_DIM = 1
PARAM_NAMES = ("probs",)
STOCHASTIC = True
BYTES_PER_STEP = 56


def episode_length(params) -> torch.Tensor:
    """Steps per episode ``[N]`` int64: one pull."""
    return torch.ones(params[0].shape[0], dtype=torch.int64, device=params[0].device)


# ----------------------------------------------------------------------------- reference
def dynamics_reference(state, params, action, key, counter):
    """One pull per env: ``state[0, N] -> (state, reward[N] in {0, 1}, terminated[N] all True)``."""
    (probs,) = params
    p = probs.gather(1, action.view(-1, 1)).view(-1)
    u = uniform_reference(key, counter, 0)
    reward = (u < p).to(torch.float32)
    return state, reward, torch.ones_like(reward, dtype=torch.bool)


def reset_reference(state, params, key, counter):
    """Nothing to reset: the state is empty."""
    return state


def observe_reference(state, params):
    """Observation ``[N, 1]``: the constant 0.0."""
    return torch.zeros((state.shape[1], OBS_DIM), dtype=torch.float32, device=state.device)


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


reset_masked_reference_ = make_reset_masked_reference(reset_reference, observe_reference)


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    (probs,) = params
    u = uniform_nb(key[i], counter[i], 0)
    return (np.float32(1.0) if u < probs[i, action[i]] else np.float32(0.0)), True


@njit(inline="always", cache=True)
def _reset_state_nb(i, key, counter):
    return ()


@njit(inline="always", cache=True)
def _observe_nb(i, state, out):
    out[i, 0] = 0.0


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    probs,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (probs,)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, OBS_DIM, state, elapsed, needs_reset,
                    counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps, mode)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, key, mask, obs):
    for i in prange(key.shape[0]):
        reset_env_nb(i, _reset_state_nb, _observe_nb, state, elapsed, needs_reset, counter, key, mask, obs)


# ----------------------------------------------------------------------------- triton
def triton_meta(params) -> dict:
    """Constexpr sizes of the Triton kernels: ``K`` (arms) from ``probs[N, K]``."""
    return {"K": params[0].shape[1]}


@lazy_jit
def _step_tl(
    # state, updated in place (state is [0, N]: never read)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # task params: probs [N, K] row-major
    probs_ptr,
    # inputs
    action_ptr, key_ptr,
    # outputs ([N, 1] for obs and final_obs)
    obs_ptr, reward_ptr, terminated_ptr, truncated_ptr, final_obs_ptr,
    # sizes / modes
    n, max_steps,
    # meta-parameters
    MODE: constexpr, BLOCK: constexpr, K: constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    action = tl.load(action_ptr + offs, mask=m, other=0)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)
    p = tl.load(probs_ptr + offs.to(tl.int64) * K + action, mask=m, other=0.0)

    u = uniform_tl(key, counter, 0)
    reward = tl.where(u < p, 1.0, 0.0)
    term = offs >= 0  # all True

    autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr, truncated_ptr,
                 reward, term, counter, offs, m, max_steps, STOCHASTIC=True, MODE=MODE)
    if MODE == 1:  # same_step: every step ends an episode; the final observation is the constant 0
        tl.store(final_obs_ptr + offs, tl.zeros((BLOCK,), tl.float32), mask=m)
    tl.store(obs_ptr + offs, tl.zeros((BLOCK,), tl.float32), mask=m)


@lazy_jit
def _reset_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, key_ptr, mask_ptr, obs_ptr, n,
              BLOCK: constexpr, K: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m)  # a reset draws nothing
    tl.store(obs_ptr + offs, tl.zeros((BLOCK,), tl.float32), mask=m)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
