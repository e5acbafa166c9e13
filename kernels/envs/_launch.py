"""Host launchers shared by every env family: check nothing (the env validated),
launch the family's kernel for the chosen backend.

Every family's kernels share one argument order::

    state[S, N], elapsed[N] i32, needs_reset[N] bool, counter[N] i64,   # updated in place
    *params ([N, ...] each), action[N, ...], key[N] i64,                 # inputs
    obs[N, O], reward[N] f32, terminated[N], truncated[N], final_obs,   # outputs
    max_steps, mode

Reset kernels: ``state, elapsed, needs_reset, counter, *params, key, mask[N] bool, obs``
(reset the masked envs, write the observation of every env).

Triton kernels end with ``n, max_steps, MODE, BLOCK`` (reset: ``n, BLOCK``) plus
any constexpr sizes the family returns from ``triton_meta(params) -> dict``, and
the launch options in ``TRITON_OPTIONS``.

``final_obs`` is ``[N, O]`` in same-step mode and ``[0, O]`` otherwise.
Numba launchers take NumPy views (made once by the env), Triton and torch take
tensors.
"""
from __future__ import annotations

import numba
import torch

BACKENDS = ("torch", "numba", "triton", "cpp")
TRITON_BLOCK = 1024
# Numba kernels use their thread pool from this many envs on (below, one thread).
NUMBA_PARALLEL_MIN_ENVS = 2048  # crossover measured on 2 cores: 1024 (Pendulum) to 4096 (Bandit)
# No a*b+c -> FMA contraction on the GPU, so kernels round like the float32 reference.
TRITON_OPTIONS = {"enable_fp_fusion": False}


def step_torch(fam, state, elapsed, needs_reset, counter, params, action, key,
               obs, reward, terminated, truncated, final_obs, max_steps, mode):
    o, r, te, tr, fo = fam.step_reference(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode)
    obs.copy_(o)
    reward.copy_(r)
    terminated.copy_(te)
    truncated.copy_(tr)
    if fo is not None and final_obs.shape[0]:
        final_obs.copy_(fo)


def reset_torch(fam, state, elapsed, needs_reset, counter, params, key, mask, obs):
    obs.copy_(fam.reset_masked_reference_(state, elapsed, needs_reset, counter, params, key, mask))


def step_numba(fam, state, elapsed, needs_reset, counter, params, action, key,
               obs, reward, terminated, truncated, final_obs, max_steps, mode):
    if state.shape[1] >= NUMBA_PARALLEL_MIN_ENVS:
        fam._step_nb(state, elapsed, needs_reset, counter, *params, action, key,
                     obs, reward, terminated, truncated, final_obs, max_steps, mode)
        return
    # Small batches on the calling thread only: waking the pool costs more than it saves,
    # and on a busy machine a descheduled worker stalls the whole call for a time slice.
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        fam._step_nb(state, elapsed, needs_reset, counter, *params, action, key,
                     obs, reward, terminated, truncated, final_obs, max_steps, mode)
    finally:
        numba.set_num_threads(threads)


def reset_numba(fam, state, elapsed, needs_reset, counter, params, key, mask, obs):
    fam._reset_nb(state, elapsed, needs_reset, counter, *params, key, mask, obs)


def step_triton(fam, state, elapsed, needs_reset, counter, params, action, key,
                obs, reward, terminated, truncated, final_obs, max_steps, mode):
    n = state.shape[1]
    grid = (triton_cdiv(n, TRITON_BLOCK),)
    fam._step_tl[grid](state, elapsed, needs_reset, counter, *params, action, key,
                       obs, reward, terminated, truncated, final_obs, n, max_steps,
                       MODE=mode, BLOCK=TRITON_BLOCK, **_triton_meta(fam, params))


def reset_triton(fam, state, elapsed, needs_reset, counter, params, key, mask, obs):
    n = state.shape[1]
    grid = (triton_cdiv(n, TRITON_BLOCK),)
    fam._reset_tl[grid](state, elapsed, needs_reset, counter, *params, key, mask, obs, n, BLOCK=TRITON_BLOCK,
                        **_triton_meta(fam, params))


def _triton_meta(fam, params) -> dict:
    """Extra constexpr sizes a family's Triton kernels take (e.g. ``S``, ``A`` of a tabular MDP)."""
    return {**TRITON_OPTIONS, **(fam.triton_meta(params) if hasattr(fam, "triton_meta") else {})}


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def step_cpp(fam, state, elapsed, needs_reset, counter, params, action, key,
             obs, reward, terminated, truncated, final_obs, max_steps, mode):
    fam.step_cpp()(state, elapsed, needs_reset, counter, *params, action, key,
                   obs, reward, terminated, truncated, final_obs, max_steps, mode)


STEP = {"torch": step_torch, "numba": step_numba, "triton": step_triton, "cpp": step_cpp}
# The C++ families reset through Numba: resets are rare and not on the hot path.
RESET = {"torch": reset_torch, "numba": reset_numba, "triton": reset_triton, "cpp": reset_numba}


def to_numpy_args(args):
    """NumPy views of the tensors in ``args`` (tuples recursed); other values pass through."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a.numpy())
        elif isinstance(a, tuple):
            out.append(tuple(t.numpy() for t in a))
        else:
            out.append(a)
    return out
