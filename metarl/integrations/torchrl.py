"""TorchRL on metarl envs: :class:`MetaRLEnv`, a batched TorchRL ``EnvBase`` over a metarl vector env.

TorchRL's collectors, transforms, replay buffers and losses take it as they take any batched env
(``batch_size = [N]``); each ``step``/``reset`` is one kernel call on the env's own tensors, which go into
the TensorDict as they are (no copy, no per-env Python).

Needs ``torchrl`` and ``tensordict`` (``pip install -e ".[interop]"``).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from metarl.envs.base import TaskVectorEnv, check_seed
from metarl.envs.tasks import Tasks
from metarl.integrations import require

_tensordict = require("tensordict", "tensordict", "metarl.integrations.torchrl")
_envs = require("torchrl.envs", "torchrl", "metarl.integrations.torchrl")
_data = require("torchrl.data", "torchrl", "metarl.integrations.torchrl")


def _box_spec(space: gym.spaces.Box, n: int, device: torch.device):
    """A TorchRL spec for ``n`` copies of a float Box: ``Bounded`` where every bound is finite, else ``Unbounded``."""
    shape = (n, *space.shape)
    if np.isfinite(space.low).all() and np.isfinite(space.high).all():
        low = torch.as_tensor(space.low, dtype=torch.float32).expand(shape)
        high = torch.as_tensor(space.high, dtype=torch.float32).expand(shape)
        return _data.Bounded(low=low.clone(), high=high.clone(), shape=shape, dtype=torch.float32, device=device)
    return _data.Unbounded(shape=shape, dtype=torch.float32, device=device)


class MetaRLEnv(_envs.EnvBase):
    """A batched TorchRL env over a metarl vector env (``metarl.make_vec``), ``batch_size = [N]``.

    Keys and specs (``N`` copies; shapes include the batch dimension):

    - ``"observation"``: float32 ``[N, *obs_shape]`` (``Bounded`` when the space's bounds are finite);
    - ``"action"``: int64 ``[N]`` (``Categorical(n)``, a Discrete space) or float32 ``[N, *act_shape]``
      (``Bounded``, a Box);
    - ``"reward"``: float32 ``[N, 1]``; ``"done"``, ``"terminated"``, ``"truncated"``: bool ``[N, 1]``
      (``done = terminated | truncated``).

    TorchRL resets copies that are done (``"_reset"`` ``[N, 1]`` in the tensordict given to ``reset``, as
    its collectors and ``rollout`` do): the metarl env must therefore not reset them itself, so it is made
    with ``autoreset_mode="disabled"`` (``"next_step"`` works too; ``"same_step"``, which replaces the last
    observation by the next episode's first, is refused).

    Tasks stay the metarl env's: ``set_tasks(tasks, env_ids=None)``, ``sample_tasks(n)`` and ``tasks`` are
    forwarded, and ``reset`` takes ``tasks`` (a task batch of ``N``, or of as many copies as ``"_reset"``
    marks) through the keyword ``options={"tasks": tasks}`` of the metarl env. ``set_seed(s)`` reseeds every
    copy at the next reset (one seed for the whole batch; it returns TorchRL's next seed).

    Example::

        >>> import metarl
        >>> from metarl.integrations.torchrl import MetaRLEnv
        >>> env = MetaRLEnv(metarl.make_vec("CartPole-v1", 8, autoreset_mode="disabled", seed=0))
        >>> td = env.rollout(5)
        >>> td.batch_size, td["next", "reward"].shape
        (torch.Size([8, 5]), torch.Size([8, 5, 1]))
    """

    def __init__(self, env: TaskVectorEnv):
        if not isinstance(env, TaskVectorEnv):
            raise TypeError(f"env must be a metarl vector env (metarl.make_vec(...)), got {type(env).__name__}")
        if env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            raise ValueError("env must use autoreset_mode='disabled' (or 'next_step'): TorchRL resets done copies "
                             "itself, and 'same_step' replaces the last observation of an episode by the next's first")
        super().__init__(device=env.device, batch_size=torch.Size([env.num_envs]))
        self.env = env
        self._next_seed: int | None = None
        n, dev = env.num_envs, env.device
        self.observation_spec = _data.Composite(observation=_box_spec(env.single_observation_space, n, dev),
                                                shape=(n,), device=dev)
        act = env.single_action_space
        if isinstance(act, gym.spaces.Discrete):
            self.action_spec = _data.Categorical(int(act.n), shape=(n,), dtype=torch.int64, device=dev)
        else:
            self.action_spec = _box_spec(act, n, dev)
        self.reward_spec = _data.Unbounded(shape=(n, 1), dtype=torch.float32, device=dev)
        flag = _data.Categorical(2, shape=(n, 1), dtype=torch.bool, device=dev)
        self.done_spec = _data.Composite(done=flag.clone(), terminated=flag.clone(), truncated=flag.clone(),
                                         shape=(n,), device=dev)

    # ------------------------------------------------------------------ EnvBase
    def _reset(self, tensordict=None, **kwargs):
        options = dict(kwargs.pop("options", None) or {})
        kwargs.pop("set_state", None)   # TorchRL forwards it to every env; metarl states are set with set_state()
        if kwargs:
            raise TypeError(f"MetaRLEnv.reset takes a tensordict and options=..., got {sorted(kwargs)}")
        mask = None if tensordict is None else tensordict.get("_reset", None)
        if mask is not None and not bool(mask.all()):
            # the copies TorchRL marks; an all-false mask resets none and gives every copy's current observation
            options["reset_mask"] = mask.reshape(self.env.num_envs).to("cpu")
        obs, _ = self.env.reset(seed=self._next_seed, options=options or None)
        self._next_seed = None
        n, dev = self.env.num_envs, self.env.device
        false = torch.zeros((n, 1), dtype=torch.bool, device=dev)
        return _tensordict.TensorDict({"observation": obs, "done": false, "terminated": false.clone(),
                                       "truncated": false.clone()}, batch_size=self.batch_size, device=dev)

    def _step(self, tensordict):
        obs, reward, terminated, truncated, _ = self.env.step(tensordict.get("action"))
        terminated, truncated = terminated.unsqueeze(-1), truncated.unsqueeze(-1)
        return _tensordict.TensorDict({"observation": obs, "reward": reward.unsqueeze(-1),
                                       "done": terminated | truncated, "terminated": terminated,
                                       "truncated": truncated},
                                      batch_size=self.batch_size, device=self.env.device)

    def _set_seed(self, seed: int | None) -> None:
        self._next_seed = None if seed is None else check_seed(seed)

    # ------------------------------------------------------------------ tasks
    @property
    def tasks(self) -> Tasks:
        """The current task of every copy (a copy of the batch, leading dim N)."""
        return self.env.tasks

    def set_tasks(self, tasks: Tasks, env_ids=None) -> None:
        """``env.set_tasks``: copy ``env_ids[j]`` gets ``tasks[j]`` (every copy when ``env_ids`` is None)."""
        self.env.set_tasks(tasks, env_ids=env_ids)

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> Tasks:
        """``env.sample_tasks``: ``n`` tasks from the family's distribution."""
        return self.env.sample_tasks(n, generator=generator)

    def close(self, *, raise_if_closed: bool = True) -> None:
        self.env.close()
        super().close(raise_if_closed=raise_if_closed)


__all__ = ["MetaRLEnv"]
