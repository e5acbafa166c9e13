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
"""
from __future__ import annotations

from collections.abc import Callable

import torch

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
