"""One env copy as a plain ``gymnasium.Env`` with NumPy in and out.

For code that wants a single env (gymnasium's ``check_env``, single-env SB3
scripts): ``gymnasium.make("metarl/CartPole-v1")`` builds one. It runs the same
kernels on a batch of one.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from metarl.envs.registry import make_vec


class SingleEnv(gym.Env):
    """A single metarl env (``num_envs=1``, autoreset disabled), NumPy in and out.

    ``options={"task": tasks}`` in ``reset`` sets the task (a task batch of length 1).

    Example::

        >>> import gymnasium as gym, metarl
        >>> env = gym.make("metarl/Pendulum-v1")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (3,)
    """

    def __init__(self, env_id: str, *, seed: int | None = None, backend: str | None = None, **family_kwargs):
        self.vec = make_vec(env_id, 1, seed=seed, autoreset_mode="disabled", backend=backend, **family_kwargs)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.metadata = {"render_modes": []}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        task = options.pop("task", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected 'task'")
        obs, _ = self.vec.reset(seed=seed, options=None if task is None else {"tasks": task})
        return obs[0].numpy().reshape(self.observation_space.shape), {}

    def step(self, action):
        obs, reward, terminated, truncated, _ = self.vec.step(np.asarray(action)[None])
        return (obs[0].numpy().reshape(self.observation_space.shape), float(reward[0]),
                bool(terminated[0]), bool(truncated[0]), {})
