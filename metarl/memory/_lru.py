"""Least-recently-used bookkeeping shared by the memories, vectorised over memories.

Every use of an entry (its add or write, a search hit) is stamped with its own tick of one
clock, in row-major order of the call's rows (and, for a search, of its ``[query, rank]``
hits), so ``last_use`` values are distinct and eviction order is never a tie.
"""
from __future__ import annotations

import torch


def pick_slots(valid: torch.Tensor, last_use: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The slot each masked row goes to: empty slots first (lowest first), then the least recently used.

    ``valid, last_use [B, C]``, ``mask [B, n]`` with at most ``C`` True per row. Returns
    ``[B, n]`` int64 slots, ``-1`` where ``mask`` is False; distinct within a memory. One
    ``topk`` over ``[B, C]``, no loop over memories.
    """
    num_slots = valid.shape[1]
    kk = min(mask.shape[1], num_slots)
    slot = torch.arange(num_slots, device=valid.device)
    prio = torch.where(valid, last_use, slot - num_slots)    # empty: < 0, ordered by slot; used: tick >= 0
    picks = torch.topk(prio, kk, dim=1, largest=False, sorted=True).indices
    rank = (mask.long().cumsum(1) - 1).clamp_(0, kk - 1)      # j-th masked row of a memory -> j-th pick
    return torch.where(mask, picks.gather(1, rank), -1)


def stamp(last_use: torch.Tensor, flat_slots: torch.Tensor, clock: int) -> int:
    """Stamp ``last_use.view(-1)[flat_slots]`` with ticks ``clock, clock + 1, ...`` in order (an entry hit
    twice keeps its later tick). Returns the advanced clock."""
    n = flat_slots.numel()
    if n:
        ticks = torch.arange(clock, clock + n, device=last_use.device, dtype=torch.int64)
        last_use.view(-1).scatter_reduce_(0, flat_slots, ticks, "amax")
    return clock + n
