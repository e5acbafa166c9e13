"""Delayed rewards: a wrapper that holds back the rewards of any metarl vector env and pays them in
sums, so credit assignment gets harder while every episode's return stays the same (the
delayed-reward task of :mod:`metarl.algos.metagrad`)."""
from __future__ import annotations

import gymnasium as gym
import torch


class DelayedRewardVecEnv(gym.vector.VectorWrapper):
    """Delayed rewards: each env's rewards are summed and paid every ``delay`` steps of its episode
    and at the episode's end (terminated or truncated), 0 in between. An episode's return is
    unchanged; only the credit assignment gets harder. Needs ``autoreset_mode="same_step"``.

    Example::

        >>> import metarl, torch
        >>> env = DelayedRewardVecEnv(metarl.make_vec("CartPole-v1", 2, seed=0, autoreset_mode="same_step"), 3)
        >>> _ = env.reset(seed=0)
        >>> [float(env.step(torch.zeros(2, dtype=torch.int64))[1][0]) for _ in range(3)]
        [0.0, 0.0, 3.0]
    """

    def __init__(self, env, delay: int):
        super().__init__(env)
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 1:
            raise ValueError(f"delay must be a positive int, got {delay!r}")
        if env.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError("DelayedRewardVecEnv needs an env with autoreset_mode='same_step'")
        self.delay = delay
        self.base = env
        self._acc = torch.zeros(env.num_envs, device=env.device)
        self._t = torch.zeros(env.num_envs, dtype=torch.int64, device=env.device)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        ids = (options or {}).get("env_ids", (options or {}).get("reset_mask"))
        if ids is None:
            self._acc.zero_()
            self._t.zero_()
        else:
            self._acc[ids] = 0.0
            self._t[ids] = 0
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._acc += reward
        self._t += 1
        done = terminated | truncated
        pay = done | (self._t % self.delay == 0)
        out = torch.where(pay, self._acc, torch.zeros_like(self._acc))
        self._acc[pay] = 0.0
        self._t[done] = 0
        return obs, out, terminated, truncated, info

    def state_dict(self) -> dict:
        return {"env": self.base.state_dict(), "acc": self._acc.cpu().clone(), "t": self._t.cpu().clone()}

    def load_state_dict(self, sd: dict) -> None:
        self.base.load_state_dict(sd["env"])
        self._acc.copy_(sd["acc"])
        self._t.copy_(sd["t"])


__all__ = ["DelayedRewardVecEnv"]
