"""Policy-gradient pieces every learner shares (one copy each): summary statistics, the Gaussian
policy and its log-probability and KL, the linear feature baseline, and the conjugate-gradient
TRPO step."""
from __future__ import annotations

import math

import torch


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    """``(mean, standard error of the mean)`` of a tensor of per-task or per-episode results (the
    standard error is NaN for a single value)."""
    x = x.detach().double().flatten()
    return float(x.mean()), float(x.std() / math.sqrt(max(1, x.numel())))
