"""NumPy in and out, for consumers such as Stable-Baselines3 or CleanRL scripts."""
from __future__ import annotations

import numpy as np
import torch
from gymnasium.wrappers.vector import ArrayConversion


def to_numpy(env):
    """Wrap a metarl vector env so actions go in and results come out as NumPy arrays.

    This is gymnasium's own ``ArrayConversion`` wrapper (torch -> numpy), so
    ``info`` dicts and ``final_obs`` are converted too.

    Example::

        >>> import metarl, numpy as np
        >>> env = metarl.envs.to_numpy(metarl.make_vec("CartPole-v1", 4, seed=0))
        >>> obs, info = env.reset(seed=0)
        >>> type(obs).__name__, obs.dtype
        ('ndarray', dtype('float32'))
        >>> obs, r, te, tr, info = env.step(np.zeros(4, dtype=np.int64))
    """
    return ArrayConversion(env, env_xp=torch, target_xp=np, env_device=env.device)
