"""Autoreset semantics, written once for the references of every env family.

gymnasium 1.x defines three modes (``gymnasium.vector.AutoresetMode``):

- ``next_step``: an env that ended at step t is reset *during* step t+1: that call
  ignores its action and returns the reset observation, reward 0, not done.
- ``same_step``: an env that ends at step t is reset within step t: the returned
  observation is the reset one, and the final observation goes to
  ``info["final_obs"]`` (mask ``info["_final_obs"]``).
- ``disabled``: no reset; the caller resets ended envs with ``reset(options=...)``.

Truncation is gymnasium's ``TimeLimit``: ``truncated = elapsed >= max_steps``
(``max_steps <= 0``: never), independent of ``terminated``.

Random-number bookkeeping (identical in every kernel): a stochastic transition uses
the env's current counter value and then increments it; so does a reset. In
``same_step`` mode a step that ends an episode uses two counter values (step, reset).

This state machine is written here once per backend, and each family supplies only
its transition, its reset and its observation:

- torch: :func:`step_with_autoreset_reference` over the family's ``*_reference``
  functions (:func:`make_step_reference` builds its ``step_reference``);
- Numba: :func:`step_env_nb` / :func:`reset_env_nb`, inlined into the family's
  ``_step_nb`` / ``_reset_nb`` loops with its ``_dynamics_nb``, ``_reset_state_nb``
  and ``_observe_nb`` (a kernel per family, so Numba caches each one on disk);
- Triton: :func:`autoreset_tl` / :func:`masked_reset_tl`, device functions the
  family's ``_step_tl`` / ``_reset_tl`` call between its dynamics and its reset.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from numba import njit
from numba.extending import overload

from metarl.kernels._triton import constexpr, lazy_jit

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

NEXT_STEP, SAME_STEP, DISABLED = 0, 1, 2
MODES = {"next_step": NEXT_STEP, "same_step": SAME_STEP, "disabled": DISABLED}


def _where_state(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.unsqueeze(0), a, b)


def step_with_autoreset_reference(
    dynamics: Callable, reset: Callable, observe: Callable, stochastic: bool,
    # state, updated in place
    state: torch.Tensor, elapsed: torch.Tensor, needs_reset: torch.Tensor, counter: torch.Tensor,
    # inputs
    params: tuple, action: torch.Tensor, key: torch.Tensor,
    # sizes / modes
    max_steps: int, mode: int,
):
    """One batched step with autoreset. Returns ``(obs, reward, terminated, truncated, final_obs)``.

    ``dynamics(state, params, action, key, counter) -> (new_state, reward, terminated)``,
    ``reset(state, params, key, counter) -> new_state`` and ``observe(state, params) -> obs``
    are the family's references over the whole batch. ``final_obs`` is ``None``
    unless ``mode == SAME_STEP``.
    """
    new_state, reward, terminated = dynamics(state, params, action, key, counter)
    reward = reward.to(torch.float32)
    step_counter = counter + 1 if stochastic else counter
    new_elapsed = elapsed + 1
    truncated = (new_elapsed >= max_steps) if max_steps > 0 else torch.zeros_like(terminated)
    final_obs = None

    if mode == NEXT_STEP:
        r = needs_reset.clone()
        reset_state = reset(state, params, key, counter)
        new_state = _where_state(r, reset_state, new_state)
        reward = torch.where(r, torch.zeros_like(reward), reward)
        terminated = terminated & ~r
        truncated = truncated & ~r
        new_elapsed = torch.where(r, torch.zeros_like(new_elapsed), new_elapsed)
        counter.copy_(torch.where(r, counter + 1, step_counter))
        needs_reset.copy_(terminated | truncated)
    elif mode == SAME_STEP:
        done = terminated | truncated
        final_obs = observe(new_state, params)
        final_obs = torch.where(done.unsqueeze(1), final_obs, torch.zeros_like(final_obs))
        reset_state = reset(new_state, params, key, step_counter)
        new_state = _where_state(done, reset_state, new_state)
        new_elapsed = torch.where(done, torch.zeros_like(new_elapsed), new_elapsed)
        counter.copy_(torch.where(done, step_counter + 1, step_counter))
        needs_reset.zero_()
    else:
        counter.copy_(step_counter)
        needs_reset.copy_(terminated | truncated)

    state.copy_(new_state)
    elapsed.copy_(new_elapsed)
    return observe(state, params), reward, terminated, truncated, final_obs


def reset_masked_reference(
    reset: Callable, observe: Callable,
    state: torch.Tensor, elapsed: torch.Tensor, needs_reset: torch.Tensor, counter: torch.Tensor,
    params: tuple, key: torch.Tensor, mask: torch.Tensor,
) -> torch.Tensor:
    """Reset the envs where ``mask`` (bool ``[N]``) in place; return the obs of all envs."""
    new_state = reset(state, params, key, counter)
    state.copy_(_where_state(mask, new_state, state))
    counter.add_(mask.to(counter.dtype))
    elapsed.masked_fill_(mask, 0)
    needs_reset.masked_fill_(mask, False)
    return observe(state, params)


def make_step_reference(dynamics: Callable, reset: Callable, observe: Callable, stochastic: bool) -> Callable:
    """A family's ``step_reference(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode)``
    -> ``(obs, reward, terminated, truncated, final_obs)``: its references under
    :func:`step_with_autoreset_reference`."""
    def step_reference(state, elapsed, needs_reset, counter, params, action, key, max_steps, mode):
        return step_with_autoreset_reference(dynamics, reset, observe, stochastic,
                                             state, elapsed, needs_reset, counter, params, action, key,
                                             max_steps, mode)
    step_reference.__doc__ = make_step_reference.__doc__
    return step_reference


def make_reset_masked_reference(reset: Callable, observe: Callable) -> Callable:
    """A family's ``reset_masked_reference_(state, elapsed, needs_reset, counter, params, key, mask)``
    -> obs: its references under :func:`reset_masked_reference`."""
    def reset_masked_reference_(state, elapsed, needs_reset, counter, params, key, mask):
        return reset_masked_reference(reset, observe, state, elapsed, needs_reset, counter, params, key, mask)
    reset_masked_reference_.__doc__ = make_reset_masked_reference.__doc__
    return reset_masked_reference_


# ----------------------------------------------------------------------------- numba
# A family's three per-env functions (``@njit(inline="always")``), for env ``i``:
#   dynamics(i, state, params, action, key, counter) -> (reward, terminated, *new_state):
#       reads ``state[:, i]`` without writing it; reward float32, terminated bool, then the
#       STATE_DIM float32 components of the new state (one flat tuple: a nested one trips
#       Numba's parfor array analysis); a stochastic family draws with ``key[i]`` and
#       ``counter[i]`` (a deterministic one reads neither: fewer bytes per step);
#   reset(i, key, counter) -> a fresh state tuple (drawing with the reset's counter value);
#   observe(i, state, out): writes the observation of ``state[:, i]`` to ``out[i, :]``.
# The family's ``_step_nb`` takes its params unpacked (as every backend's kernel does) and packs
# them into the tuple ``params`` inside its ``prange`` loop: a tuple made outside the loop reaches
# the loop's body through memory, one reload per env (measured 1.5-3x slower on Navigation2D).
# Numba's on-disk cache keys a kernel on its own file only: after editing the functions below,
# delete kernels/envs/__pycache__/*.nbi and *.nbc, or the families' kernels keep the old code.
def _store_state_nb(i, state, s):
    """``state[:, i] = s`` for a state tuple ``s`` (empty for a stateless family); Numba code
    calls it through the overload below, which compiles nothing for an empty tuple."""
    for j in range(len(s)):
        state[j, i] = s[j]


@overload(_store_state_nb, inline="always")
def _store_state_nb_overload(i, state, s):
    if len(s) == 0:
        return lambda i, state, s: None
    return _store_state_nb


@njit(inline="always", cache=True)
def step_env_nb(
    # the family: its per-env functions (see above), whether its transition draws, its observation size
    i, dynamics, reset, observe, stochastic, obs_dim,
    # state, updated in place; params: the family's task tensors (a tuple)
    state, elapsed, needs_reset, counter, params,
    # inputs
    action, key,
    # outputs
    obs, reward, terminated, truncated, final_obs,
    # sizes / modes
    max_steps, mode,
):
    """Env ``i`` of one batched step with autoreset: :func:`step_with_autoreset_reference` for one env."""
    if mode == NEXT_STEP and needs_reset[i]:  # reset instead of stepping
        _reset_one_nb(i, reset, state, counter, key)
        observe(i, state, obs)
        reward[i] = 0.0
        terminated[i] = False
        truncated[i] = False
        elapsed[i] = 0
        needs_reset[i] = False
        return
    res = dynamics(i, state, params, action, key, counter)
    r, term, s = res[0], res[1], res[2:]
    _store_state_nb(i, state, s)
    if stochastic:
        counter[i] += 1  # the transition drew with the env's counter value
    e = elapsed[i] + 1
    trunc = max_steps > 0 and e >= max_steps
    reward[i] = r
    terminated[i] = term
    truncated[i] = trunc
    if mode == SAME_STEP:
        if term or trunc:  # the pre-reset observation goes to final_obs
            observe(i, state, final_obs)
            _reset_one_nb(i, reset, state, counter, key)
            e = 0
        else:
            for j in range(obs_dim):  # a constant where the family's is (no memset call per env)
                final_obs[i, j] = 0.0
    else:
        needs_reset[i] = term or trunc
    elapsed[i] = e
    observe(i, state, obs)


@njit(inline="always", cache=True)
def _reset_one_nb(i, reset, state, counter, key):
    """A fresh state for env ``i``, drawn with its counter value (which the reset then uses up)."""
    c = counter[i]
    _store_state_nb(i, state, reset(i, key[i], c))
    counter[i] = c + 1


@njit(inline="always", cache=True)
def reset_env_nb(i, reset, observe, state, elapsed, needs_reset, counter, key, mask, obs):
    """Env ``i`` of a partial reset: :func:`reset_masked_reference` for one env."""
    if mask[i]:
        _reset_one_nb(i, reset, state, counter, key)
        elapsed[i] = 0
        needs_reset[i] = False
    observe(i, state, obs)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def autoreset_tl(
    # updated in place: the episode clocks, reset flags and counters [N]; outputs reward, terminated, truncated [N]
    elapsed_ptr, needs_reset_ptr, counter_ptr, reward_ptr, terminated_ptr, truncated_ptr,
    # the block's transition: reward (float32), terminated (bool), the counter it drew with (int64)
    reward, term, counter, offs, m, max_steps,
    # meta-parameters
    STOCHASTIC: constexpr, MODE: constexpr,
):
    """The autoreset of a block of envs after the family computed its transition:
    :func:`step_with_autoreset_reference` for the envs ``offs`` (mask ``m``).

    Stores reward, terminated, truncated, the new elapsed, counter and reset flag;
    returns ``(do_reset, reset_counter)``: the envs whose state the caller replaces by a
    fresh one, and the counter value that reset draws with. In ``same_step`` mode
    (``MODE == 1``) the caller writes ``final_obs`` (its observation where ``do_reset``,
    zeros elsewhere) from the state before the reset.
    """
    e = tl.load(elapsed_ptr + offs, mask=m) + 1
    trunc = (e >= max_steps) & (max_steps > 0)
    if STOCHASTIC:
        step_counter = counter + 1
    else:
        step_counter = counter
    if MODE == 0:  # next_step: envs flagged last step are reset instead of stepped
        r = tl.load(needs_reset_ptr + offs, mask=m).to(tl.int1)
        do_reset = r
        term = term & ~r
        trunc = trunc & ~r
        reward = tl.where(r, 0.0, reward)
        tl.store(needs_reset_ptr + offs, term | trunc, mask=m)
        reset_counter = counter
        counter = tl.where(r, counter + 1, step_counter)
    else:
        done = term | trunc
        do_reset = done & (MODE == 1)
        reset_counter = step_counter
        counter = step_counter + do_reset.to(tl.int64)
        if MODE == 2:
            tl.store(needs_reset_ptr + offs, done, mask=m)
    tl.store(counter_ptr + offs, counter, mask=m)
    tl.store(elapsed_ptr + offs, tl.where(do_reset, 0, e), mask=m)
    tl.store(reward_ptr + offs, reward, mask=m)
    tl.store(terminated_ptr + offs, term, mask=m)
    tl.store(truncated_ptr + offs, trunc, mask=m)
    return do_reset, reset_counter


@lazy_jit
def masked_reset_tl(elapsed_ptr, needs_reset_ptr, counter_ptr, mask_ptr, offs, m):
    """The bookkeeping of a partial reset (:func:`reset_masked_reference`) for the envs ``offs``:
    returns ``(r, counter)``, the envs to reset (``mask``) and the counter value their reset
    draws with; the caller replaces their state and writes every env's observation."""
    r = tl.load(mask_ptr + offs, mask=m, other=0).to(tl.int1)
    counter = tl.load(counter_ptr + offs, mask=m)
    tl.store(counter_ptr + offs, counter + r.to(tl.int64), mask=m)
    tl.store(elapsed_ptr + offs, tl.where(r, 0, tl.load(elapsed_ptr + offs, mask=m)), mask=m)
    tl.store(needs_reset_ptr + offs, tl.load(needs_reset_ptr + offs, mask=m).to(tl.int1) & ~r, mask=m)
    return r, counter
