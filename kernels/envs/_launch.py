"""Host launchers shared by every env family: check nothing (the env validated),
launch the family's kernel for the chosen backend.

Every family's kernels share one argument order::

    state[S, N], elapsed[N] i32, needs_reset[N] bool, counter[N] i64,   # updated in place
    *params ([N, ...] each), action[N, ...], key[N] i64,                 # inputs
    obs[N, O], reward[N] f32, terminated[N], truncated[N], final_obs,   # outputs
    max_steps, mode

The autoreset inside them is written once, in :mod:`._autoreset`.

Reset kernels: ``state, elapsed, needs_reset, counter, key, mask[N] bool, obs`` (reset the
masked envs, write the observation of every env; a reset does not read the task). The
launchers take ``params`` all the same, for the Triton sizes and one argument order.

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

from metarl.kernels import _checks

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


def call_numba(kernel, num_envs: int, *args):
    """Call a ``parallel=True`` Numba kernel, on the calling thread alone below
    ``NUMBA_PARALLEL_MIN_ENVS``: for small batches waking the pool costs more than it saves,
    and on a busy machine a descheduled worker stalls the whole call for a time slice."""
    if num_envs >= NUMBA_PARALLEL_MIN_ENVS:
        return kernel(*args)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)


def step_numba(fam, state, elapsed, needs_reset, counter, params, action, key,
               obs, reward, terminated, truncated, final_obs, max_steps, mode):
    call_numba(fam._step_nb, state.shape[1], state, elapsed, needs_reset, counter, *params, action, key,
               obs, reward, terminated, truncated, final_obs, max_steps, mode)


def reset_numba(fam, state, elapsed, needs_reset, counter, params, key, mask, obs):
    fam._reset_nb(state, elapsed, needs_reset, counter, key, mask, obs)


def step_triton(fam, state, elapsed, needs_reset, counter, params, action, key,
                obs, reward, terminated, truncated, final_obs, max_steps, mode):
    n = state.shape[1]
    grid = (triton_cdiv(n, TRITON_BLOCK),)
    fam._step_tl[grid](state, elapsed, needs_reset, counter, *params, action, key,
                       obs, reward, terminated, truncated, final_obs, n, max_steps,
                       MODE=mode, BLOCK=TRITON_BLOCK, **triton_launch_meta(fam, params))


def reset_triton(fam, state, elapsed, needs_reset, counter, params, key, mask, obs):
    n = state.shape[1]
    grid = (triton_cdiv(n, TRITON_BLOCK),)
    fam._reset_tl[grid](state, elapsed, needs_reset, counter, key, mask, obs, n, BLOCK=TRITON_BLOCK,
                        **triton_launch_meta(fam, params))


def triton_launch_meta(fam, params) -> dict:
    """The launch options and extra constexpr sizes a family's Triton kernels take (e.g. ``S``, ``A``
    of a tabular MDP)."""
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


# ----------------------------------------------------------------------------- public ops
def resolve_backend(backend: str | None, device: torch.device, fam=None) -> str:
    """The env-kernel backend for ``device`` (family module ``fam``) unless forced: Triton on
    CUDA; on the CPU the C++ kernel in ``metarl._C`` where the family has one (CartPole-v1,
    measured faster), else Numba. ``"cpu"`` is an alias of ``"numba"``. The envs choose with it.
    """
    has_cpp = fam is not None and hasattr(fam, "step_cpp")
    default = "triton" if device.type == "cuda" else "cpp" if has_cpp and _checks.cpp_available() else "numba"
    if backend == "cpp" and fam is not None and not has_cpp:
        raise ValueError(f"backend='cpp' has no kernel for {fam.__name__.rsplit('.', 1)[-1]}; use 'numba'")
    return _checks.resolve_backend(backend, device, BACKENDS, default=default)


def obs_dim(fam, params) -> int:
    """The observation size: ``fam.OBS_DIM``, or ``fam.obs_dim(params)`` where it depends on the task shapes."""
    return fam.obs_dim(params) if hasattr(fam, "obs_dim") else fam.OBS_DIM


def episode_length(fam, params, max_steps: int) -> torch.Tensor | None:
    """Steps per episode, ``[N]`` int64, for families whose episodes last a fixed number of steps
    (``fam.episode_length(params)``: a Bandit pull is one episode, a TabularMDP episode lasts its
    horizon), capped by ``max_steps`` (> 0); ``None`` where episodes end by termination."""
    if not hasattr(fam, "episode_length"):
        return None
    length = fam.episode_length(params)
    return length.clamp(max=max_steps) if max_steps > 0 else length


def step(fam, state, elapsed, needs_reset, counter, params, action, key, max_steps: int, mode: int,
         *, backend: str | None = None):
    """One batched step of family ``fam`` with autoreset, on torch tensors (updated in place:
    ``state [S, N]``, ``elapsed``, ``needs_reset``, ``counter``); ``backend`` forces one.

    Returns ``(obs [N, O], reward [N], terminated [N], truncated [N], final_obs)`` with
    ``final_obs [N, O]`` in same-step mode (``mode == 1``) and ``None`` otherwise. Inputs are
    assumed valid (the env checks them); this is the op the env calls, usable on its own.
    """
    backend = resolve_backend(backend, state.device, fam)
    n, dev = state.shape[1], state.device
    o = obs_dim(fam, params)
    obs = torch.empty((n, o), dtype=torch.float32, device=dev)
    reward = torch.empty(n, dtype=torch.float32, device=dev)
    terminated = torch.empty(n, dtype=torch.bool, device=dev)
    truncated = torch.empty(n, dtype=torch.bool, device=dev)
    final_obs = torch.empty((n if mode == 1 else 0, o), dtype=torch.float32, device=dev)
    args = (state, elapsed, needs_reset, counter, params, action, key, obs, reward, terminated, truncated,
            final_obs)
    if backend in ("numba", "cpp"):
        args = to_numpy_args(args)
    STEP[backend](fam, *args, max_steps, mode)
    return obs, reward, terminated, truncated, (final_obs if mode == 1 else None)


def reset(fam, state, elapsed, needs_reset, counter, params, key, mask, *, backend: str | None = None):
    """Reset the envs where ``mask [N]`` (bool) in place; return the observation ``[N, O]`` of every env."""
    backend = resolve_backend(backend, state.device, fam)
    obs = torch.empty((state.shape[1], obs_dim(fam, params)), dtype=torch.float32, device=state.device)
    args = (state, elapsed, needs_reset, counter, params, key, mask, obs)
    if backend in ("numba", "cpp"):
        args = to_numpy_args(args)
    RESET[backend](fam, *args)
    return obs


def public_ops(module_name: str):
    """``(step, reset)`` bound to the family module ``module_name`` (each family exports them)."""
    import functools
    import sys

    fam = sys.modules[module_name]
    bound_step = functools.partial(step, fam)
    bound_reset = functools.partial(reset, fam)
    functools.update_wrapper(bound_step, step)
    functools.update_wrapper(bound_reset, reset)
    return bound_step, bound_reset
