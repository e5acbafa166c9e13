"""Counter-based random numbers shared by every backend.

Each env copy ``i`` owns a 32-bit key ``key[i]`` (derived from the env's seed and
its index) and a draw counter ``counter[i]`` (int64; an *event* such as a reset or
a stochastic step uses one counter value and may draw several *lanes*). The 32 random
bits of (key, counter, lane) are

    x = mix32((counter mod 2**32) + 0x9E3779B9 * lane)      (all mod 2**32)
    bits = mix32(x ^ key)

with ``mix32`` the "lowbias32" integer hash (C. Wellons, 2018, a bijection on
uint32 with low avalanche bias). ``uniform = (bits >> 8) * 2**-24`` lies in
[0, 1) and is exact in float32, so the torch reference, Numba, C++ (``csrc/rng.h``)
and Triton produce bit-identical uniforms; env kernels that use only comparisons
and IEEE arithmetic on them match the reference exactly.

Keys: ``key[i] = mix32(mix32(seed_lo ^ mix32(seed_hi)) ^ mix32(i + 1))``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from numba import njit

from metarl.kernels._triton import constexpr, lazy_jit

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B
INV_2_24 = 1.0 / 16777216.0


# ----------------------------------------------------------------------------- reference
def _mul32_reference(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 tensors holding uint32 values, without int64 overflow."""
    lo = x & 0xFFFF
    hi = x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & MASK32


def mix32_reference(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 hash of int64 tensors holding uint32 values (returns the same)."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32_reference(x, MUL1)
    x = x ^ (x >> 15)
    x = _mul32_reference(x, MUL2)
    x = x ^ (x >> 16)
    return x


def bits_reference(key: torch.Tensor, counter: torch.Tensor, lane: int) -> torch.Tensor:
    """32 random bits (as int64) per element of ``key``/``counter`` (both int64, same shape)."""
    x = mix32_reference((counter & MASK32) + ((GOLDEN * lane) & MASK32))
    return mix32_reference(x ^ (key & MASK32))


def uniform_reference(key: torch.Tensor, counter: torch.Tensor, lane: int) -> torch.Tensor:
    """Uniform float32 in [0, 1), same shape as ``key``."""
    return (bits_reference(key, counter, lane) >> 8).to(torch.float32) * INV_2_24


def make_keys(seed: int, num_envs: int) -> torch.Tensor:
    """Per-env keys ``[num_envs]`` int64 (values in [0, 2**32)) for a 64-bit seed."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    s = torch.tensor([seed & MASK32, seed >> 32], dtype=torch.int64)
    base = mix32_reference(s[0:1] ^ mix32_reference(s[1:2]))
    idx = torch.arange(1, num_envs + 1, dtype=torch.int64)
    return mix32_reference(base ^ mix32_reference(idx))


# ----------------------------------------------------------------------------- numba
@njit(inline="always", cache=True)
def mix32_nb(x):
    x = np.uint64(x) & np.uint64(MASK32)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(MUL1)) & np.uint64(MASK32)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(MUL2)) & np.uint64(MASK32)
    x ^= x >> np.uint64(16)
    return x


@njit(inline="always", cache=True)
def uniform_nb(key, counter, lane):
    """Uniform float32 in [0, 1) for one (key, counter, lane); see the module docstring."""
    c = np.uint64(counter) & np.uint64(MASK32)
    x = mix32_nb((c + np.uint64((GOLDEN * lane) & MASK32)) & np.uint64(MASK32))
    b = mix32_nb(x ^ (np.uint64(key) & np.uint64(MASK32)))
    return np.float32(b >> np.uint64(8)) * np.float32(INV_2_24)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def mix32_tl(x):
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    x = x ^ (x >> 16)
    return x


@lazy_jit
def uniform_tl(key, counter, lane: constexpr):
    """Uniform float32 in [0, 1); ``key``/``counter`` int64 tensors, ``lane`` an int."""
    c = (counter & 0xFFFFFFFF).to(tl.uint32)
    x = mix32_tl(c + ((0x9E3779B9 * lane) & 0xFFFFFFFF))
    b = mix32_tl(x ^ (key & 0xFFFFFFFF).to(tl.uint32))
    return (b >> 8).to(tl.float32) * (1.0 / 16777216.0)
