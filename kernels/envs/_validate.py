"""Cheap action checks at the env boundary: one compiled pass on the CPU, one
reduction (and a sync) on the GPU. Both return the first offending index or -1."""
from __future__ import annotations

import numpy as np
import torch
from numba import njit


@njit(cache=True)
def _first_invalid_discrete_nb(a, n):
    # a branch-free count first (vectorizes); the index is searched only on failure
    bad = 0
    for i in range(a.shape[0]):
        bad += (a[i] < 0) | (a[i] >= n)
    if bad == 0:
        return -1
    for i in range(a.shape[0]):
        if a[i] < 0 or a[i] >= n:
            return i
    return -1


@njit(cache=True)
def _first_nonfinite_nb(a):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if not np.isfinite(a[i, j]):
                return i
    return -1


def first_invalid_discrete(actions: torch.Tensor, n: int) -> int:
    """First index of ``actions`` (int64 ``[N]``) outside ``[0, n)``, or -1."""
    if actions.device.type == "cpu":
        return int(_first_invalid_discrete_nb(actions.numpy(), n))
    bad = ((actions < 0) | (actions >= n)).nonzero()
    return int(bad[0, 0]) if bad.numel() else -1


def first_nonfinite(actions: torch.Tensor) -> int:
    """First row of ``actions`` (float32 ``[N, d]``) holding NaN or inf, or -1."""
    if actions.device.type == "cpu":
        return int(_first_nonfinite_nb(actions.reshape(actions.shape[0], -1).numpy()))
    bad = (~torch.isfinite(actions.reshape(actions.shape[0], -1))).any(1).nonzero()
    return int(bad[0, 0]) if bad.numel() else -1
