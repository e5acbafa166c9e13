"""Batched task-distribution environments (gymnasium 1.x vector envs on torch tensors).

Names are imported on first use (``metarl.envs.TrialWrapper`` loads ``metarl.envs.trial``), so
``import metarl`` and the ids in :data:`ENV_CLASSES` stay light (no torch) until an env is made.
"""
from __future__ import annotations

import importlib

from metarl.envs.registry import ENV_CLASSES, env_class, make_vec

_LAZY = {
    "TaskVectorEnv": "metarl.envs.base",
    "Tasks": "metarl.envs.tasks",
    "to_numpy": "metarl.envs.numpy_adapter",
    "TrialWrapper": "metarl.envs.trial",
    "SingleEnv": "metarl.envs.single",
    "GymnasiumTaskVecEnv": "metarl.envs.gym_adapter",
    "DelayedRewardVecEnv": "metarl.envs.delayed_reward",
}

__all__ = ["ENV_CLASSES", "env_class", "make_vec", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metarl.envs' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
