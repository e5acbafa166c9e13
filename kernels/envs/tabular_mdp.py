"""TabularMDP-v0: random finite-horizon tabular MDPs (RL^2 §4.2), one MDP per env.

State ``[2, N]`` float32: row 0 the MDP state ``s`` (an integer in ``[0, S)``),
row 1 the step ``t`` within the episode (an integer in ``[0, horizon)``). Params
passed to the kernels: ``mean_reward[N, S, A]``, ``transitions[N, S, A, S]`` (the
task fields) and ``horizon[N]`` int32 (the family's horizon, the same for every
env; appended by the env, not a task field).

Step (one random event per env, lanes 0, 1, 2 of ``uniform(key, counter, lane)``)::

    reward = mean_reward[s, a] + sqrt(-2 log(1 - u0)) cos(2π u1)     # N(mean, 1), Box–Muller
    s'     = min{j : u2 < P[s, a, 0] + ... + P[s, a, j]}, else S - 1  # inverse CDF
    t'     = t + 1;  terminated = t' >= horizon                       # finite horizon

The cumulative sum is taken in float32, sequentially j = 0 .. S-1, in every backend
(so transitions are bit-identical across backends); when rounding leaves u2 at or
above the row's total the next state is the last one, S - 1. Rewards go through
float32 ``log``/``cos``/``sqrt`` whose last bits differ between libm, SLEEF and GPU
math libraries: backends agree with the reference to a few float32 ulps.
Reset: ``s = 0, t = 0`` (no draw; it uses one counter value like every reset).
Observation ``[N, S]``: one-hot of ``s``.

Bytes per env-step (the floor of ``bench/envs.py``), S states: read state 8,
mean_reward[s, a] 4, transitions[s, a, :] 4S, horizon 4, action 8, key 8, counter 8,
elapsed 4, needs_reset 1; write state 8, obs 4S, reward 4, terminated 1, truncated 1,
counter 8, elapsed 4, needs_reset 1 — 72 + 8S bytes, 152 for S = 10.
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
from metarl.kernels.rng import uniform_nb, uniform_reference, uniform_tl

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

STATE_DIM = 2
PARAM_NAMES = ("mean_reward", "transitions", "horizon")
STOCHASTIC = True
TWO_PI = float(np.float32(2 * math.pi))  # the float32 constant every backend multiplies by


def obs_dim(params) -> int:
    """The observation size S (a one-hot state), from ``mean_reward [N, S, A]``."""
    return params[0].shape[1]


def bytes_per_step(num_states: int) -> int:
    """Bytes moved per env-step for ``num_states`` states (see the module docstring)."""
    return 72 + 8 * num_states


BYTES_PER_STEP = bytes_per_step(10)


def episode_length(params) -> torch.Tensor:
    """Steps per episode ``[N]`` int64: the horizon."""
    return params[2].to(torch.int64)


# ----------------------------------------------------------------------------- reference
def normal_reference(key, counter):
    """Standard normal float32 ``[N]`` by Box–Muller from lanes 0 and 1."""
    u0 = uniform_reference(key, counter, 0)
    u1 = uniform_reference(key, counter, 1)
    return torch.sqrt(-2.0 * torch.log(1.0 - u0)) * torch.cos(TWO_PI * u1)


def inverse_cdf_reference(row, u):
    """Index ``[N]`` int64 of the first j with ``u < row[:, 0] + ... + row[:, j]`` (float32,
    summed sequentially), or ``S - 1`` when there is none. ``row`` is ``[N, S]``."""
    num_states = row.shape[1]
    acc = torch.zeros_like(u)
    nxt = torch.full(u.shape, num_states - 1, dtype=torch.int64, device=u.device)
    found = torch.zeros(u.shape, dtype=torch.bool, device=u.device)
    for j in range(num_states):
        acc = acc + row[:, j]
        hit = (u < acc) & ~found
        nxt = torch.where(hit, j, nxt)
        found = found | hit
    return nxt


def dynamics_reference(state, params, action, key, counter):
    """One step: ``state[2, N] -> (new_state, reward[N], terminated[N])``."""
    mean_reward, transitions, horizon = params
    s = state[0].long()
    t = state[1]
    i = torch.arange(s.shape[0], device=s.device)
    reward = mean_reward[i, s, action] + normal_reference(key, counter)
    nxt = inverse_cdf_reference(transitions[i, s, action], uniform_reference(key, counter, 2))
    nt = t + 1.0
    return torch.stack((nxt.to(state.dtype), nt)), reward, nt >= horizon


def reset_reference(state, params, key, counter):
    """Start of an episode: ``s = 0, t = 0``."""
    return torch.zeros_like(state)


def observe_reference(state, params):
    """Observation ``[N, S]``: one-hot of the MDP state."""
    num_states = params[0].shape[1]
    return torch.nn.functional.one_hot(state[0].long(), num_states).to(torch.float32)


# batched step with gymnasium autoreset (see _autoreset.py)
step_reference = make_step_reference(dynamics_reference, reset_reference, observe_reference, STOCHASTIC)


reset_masked_reference_ = make_reset_masked_reference(reset_reference, observe_reference)


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def _dynamics_nb(i, state, params, action, key, counter):
    mean_reward, transitions, horizon = params
    num_states = transitions.shape[1]
    s = int(state[0, i])
    a = action[i]
    k = key[i]
    c = counter[i]
    u0 = uniform_nb(k, c, 0)
    u1 = uniform_nb(k, c, 1)
    u2 = uniform_nb(k, c, 2)
    z = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - u0)) * np.cos(np.float32(TWO_PI) * u1)
    acc = np.float32(0.0)
    nxt = num_states - 1
    for j in range(num_states):
        acc += transitions[i, s, a, j]
        if u2 < acc:
            nxt = j
            break
    nt = state[1, i] + np.float32(1.0)
    return mean_reward[i, s, a] + z, nt >= horizon[i], np.float32(nxt), nt


@njit(inline="always", cache=True)
def _reset_state_nb(i, key, counter):
    return np.float32(0.0), np.float32(0.0)


@njit(inline="always", cache=True)
def _observe_nb(i, state, out):
    for j in range(out.shape[1]):
        out[i, j] = 0.0
    out[i, int(state[0, i])] = 1.0


@njit(parallel=True, cache=True)
def _step_nb(
    # state, updated in place
    state, elapsed, needs_reset, counter,
    # task params [N, ...] each
    mean_reward, transitions, horizon,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    for i in prange(key.shape[0]):
        params = (mean_reward, transitions, horizon)
        step_env_nb(i, _dynamics_nb, _reset_state_nb, _observe_nb, STOCHASTIC, obs.shape[1], state, elapsed,
                    needs_reset, counter, params, action, key, obs, reward, terminated, truncated, final_obs, max_steps,
                    mode)


@njit(parallel=True, cache=True)
def _reset_nb(state, elapsed, needs_reset, counter, key, mask, obs):
    for i in prange(key.shape[0]):
        reset_env_nb(i, _reset_state_nb, _observe_nb, state, elapsed, needs_reset, counter, key, mask, obs)


# ----------------------------------------------------------------------------- triton
def triton_meta(params) -> dict:
    """Constexpr sizes of the Triton kernels: ``S``, ``A`` from ``mean_reward[N, S, A]``."""
    return {"S": params[0].shape[1], "A": params[0].shape[2]}


@lazy_jit
def _observe_tl(out_ptr, row, m, keep, s, S: constexpr):
    """One-hot of the states ``s`` (int32) into the rows ``row`` of ``out [N, S]`` where ``keep``, zeros elsewhere."""
    for j in range(S):
        tl.store(out_ptr + row * S + j, tl.where(keep & (s == j), 1.0, 0.0), mask=m)


@lazy_jit
def _step_tl(
    # state, updated in place (state is [2, N] with row stride N)
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr,
    # params: mean_reward [N, S, A], transitions [N, S, A, S] (row-major), horizon [N] int32
    mean_reward_ptr, transitions_ptr, horizon_ptr,
    # inputs
    action_ptr, key_ptr,
    # outputs ([N, S] row-major for obs and final_obs)
    obs_ptr, reward_ptr, terminated_ptr, truncated_ptr, final_obs_ptr,
    # sizes / modes
    n, max_steps,
    # meta-parameters
    MODE: constexpr, BLOCK: constexpr, S: constexpr, A: constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    row = offs.to(tl.int64)
    s = tl.load(state_ptr + offs, mask=m, other=0.0).to(tl.int32)
    t = tl.load(state_ptr + n + offs, mask=m, other=0.0)
    action = tl.load(action_ptr + offs, mask=m, other=0)
    horizon = tl.load(horizon_ptr + offs, mask=m, other=1)
    key = tl.load(key_ptr + offs, mask=m)
    counter = tl.load(counter_ptr + offs, mask=m)

    sa = (row * S + s) * A + action  # flat index of (env, s, a)
    u0 = uniform_tl(key, counter, 0)
    u1 = uniform_tl(key, counter, 1)
    u2 = uniform_tl(key, counter, 2)
    z = tl.sqrt(-2.0 * tl.log(1.0 - u0)) * tl.cos(6.2831854820251465 * u1)
    reward = tl.load(mean_reward_ptr + sa, mask=m, other=0.0) + z
    acc = tl.zeros((BLOCK,), tl.float32)
    nxt = tl.full((BLOCK,), S - 1, tl.int32)
    found = offs < 0  # all False
    for j in range(S):
        acc = acc + tl.load(transitions_ptr + sa * S + j, mask=m, other=0.0)
        hit = (u2 < acc) & ~found
        nxt = tl.where(hit, j, nxt)
        found = found | hit
    nt = t + 1.0
    term = nt >= horizon.to(tl.float32)

    do_reset, _ = autoreset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr, truncated_ptr,
                               reward, term, counter, offs, m, max_steps, STOCHASTIC=True, MODE=MODE)
    if MODE == 1:  # same_step: the pre-reset observation goes to final_obs
        _observe_tl(final_obs_ptr, row, m, do_reset, nxt, S)
    nxt = tl.where(do_reset, 0, nxt)  # reset: s = 0, t = 0 (no draw)
    nt = tl.where(do_reset, 0.0, nt)
    tl.store(state_ptr + offs, nxt.to(tl.float32), mask=m)
    tl.store(state_ptr + n + offs, nt, mask=m)
    _observe_tl(obs_ptr, row, m, m, nxt, S)


@lazy_jit
def _reset_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, key_ptr, mask_ptr, obs_ptr, n,
              BLOCK: constexpr, S: constexpr, A: constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r, _ = masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m)
    s = tl.where(r, 0.0, tl.load(state_ptr + offs, mask=m, other=0.0))  # every episode starts in state 0
    t = tl.where(r, 0.0, tl.load(state_ptr + n + offs, mask=m, other=0.0))
    tl.store(state_ptr + offs, s, mask=m)
    tl.store(state_ptr + n + offs, t, mask=m)
    _observe_tl(obs_ptr, offs.to(tl.int64), m, m, s.to(tl.int32), S)


# ----------------------------------------------------------------------------- public ops
# step(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode, *, backend=None)
# and reset(state, elapsed, needs_reset, counter, params, key, mask, *, backend=None): see _launch.py
step, reset = _launch.public_ops(__name__)
