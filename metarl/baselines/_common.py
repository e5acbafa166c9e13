"""Helpers shared by the bandit and tabular baselines: validation, RNG, tie-breaking, summary."""
from __future__ import annotations

import math

import numpy as np
import torch


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` (bools are rejected)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_name(name, table: dict, what: str) -> None:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"name must be one of {sorted(table)} ({what}), got {name!r}")


def check_prob(name: str, value) -> float:
    """A probability in [0, 1] (e.g. epsilon), or ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_nonneg(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def make_generator(seed: int, device: torch.device, stream: int) -> torch.Generator:
    """The strategy's own random stream, separate from the env's (which ``seed`` also seeds)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + 7919 * stream) % (2 ** 63))
    return g


def argmax_random_ties(score: torch.Tensor, generator: torch.Generator, atol: float = 0.0) -> torch.Tensor:
    """``argmax`` over the last axis, ties (within ``atol``) broken uniformly at random. ``[..., A] -> [...]``."""
    best = score.amax(-1, keepdim=True)
    tied = score >= best - atol
    u = torch.rand(score.shape, generator=generator, device=score.device, dtype=torch.float32)
    return torch.where(tied, u + 1.0, torch.zeros_like(u)).argmax(-1)


def sample_gamma(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``Gamma(alpha, 1)`` draws from ``generator`` (so results are reproducible from the seed)."""
    return torch._standard_gamma(alpha, generator=generator)


def summary(values) -> tuple[float, float]:
    """``(mean, standard error of the mean)`` of per-task totals (``[N]`` tensor or sequence).

    The standard error is ``std / sqrt(N)`` with the unbiased (N - 1) std; 0.0 for N = 1.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("values must not be empty")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("values must be finite")
    n = v.numel()
    se = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0
    return float(v.mean()), se
