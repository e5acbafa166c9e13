"""Any gymnasium env family as a task distribution (the slow, general path).

metarl's own families step in one kernel call; this adapter serves every other
gymnasium env whose task can be set on the env object (an attribute, a goal, a
target velocity): one Python env per copy inside gymnasium's ``SyncVectorEnv``,
with metarl's task API on top, so :class:`~metarl.envs.TrialWrapper` and the
learners treat it like a native family.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from metarl.envs.base import TaskVectorEnv, check_seed, env_device
from metarl.envs.tasks import Tasks

_MODES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP,
          "disabled": AutoresetMode.DISABLED}


def set_attributes(env: gym.Env, task: dict[str, float]) -> None:
    """The default ``apply_task``: ``setattr(env.unwrapped, name, value)`` per field."""
    for name, value in task.items():
        setattr(env.unwrapped, name, value)


class GymnasiumTaskVecEnv(gym.vector.VectorEnv):
    """N copies of a gymnasium env, each with its own task; torch tensors in and out.

    Args:
        env_fn: a gymnasium id or a callable returning one env (``gym.make`` kwargs in
            ``make_kwargs``).
        num_envs: N.
        task_ranges: ``{field: (low, high)}`` sampled uniformly, or
            ``{field: (low, high, "log")}`` log-uniformly, by :meth:`sample_tasks`.
        apply_task: ``apply_task(env, {field: value})`` sets one env's task
            (default :func:`set_attributes`); recompute derived quantities there.
        autoreset_mode: ``"next_step"``, ``"same_step"`` or ``"disabled"`` (gymnasium's).
        device: where the returned tensors live.
        seed: seeds the copies (``seed + i``) at the first reset.

    Example (HalfCheetahVel-style: any attribute or wrapper field can be the task)::

        >>> import torch
        >>> from metarl.envs import GymnasiumTaskVecEnv
        >>> def apply(env, task):
        ...     u = env.unwrapped
        ...     u.masscart, u.length = task["masscart"], task["length"]
        ...     u.total_mass = u.masspole + u.masscart
        ...     u.polemass_length = u.masspole * u.length
        >>> env = GymnasiumTaskVecEnv("CartPole-v1", 4, task_ranges={"masscart": (0.5, 2.0, "log"),
        ...                           "length": (0.25, 1.0, "log")}, apply_task=apply)
        >>> obs, info = env.reset(seed=0, options={"tasks": env.sample_tasks(4)})
        >>> obs.shape
        torch.Size([4, 4])
    """

    def __init__(self, env_fn: str | Callable[[], gym.Env], num_envs: int, *,
                 task_ranges: dict[str, tuple], apply_task: Callable = set_attributes,
                 autoreset_mode="next_step", device="cpu", seed: int | None = None, **make_kwargs):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not task_ranges:
            raise ValueError("task_ranges must name at least one task field")
        for name, r in task_ranges.items():
            if len(r) not in (2, 3) or (len(r) == 3 and r[2] not in ("log", "uniform")):
                raise ValueError(f"task_ranges[{name!r}] must be (low, high) or (low, high, 'log'), got {r!r}")
            if not r[0] <= r[1] or (len(r) == 3 and r[2] == "log" and r[0] <= 0):
                raise ValueError(f"task_ranges[{name!r}] = {r!r} is not a valid range")
        if autoreset_mode not in _MODES:
            raise ValueError(f"autoreset_mode must be one of {sorted(_MODES)}, got {autoreset_mode!r}")
        device = env_device(device)
        seed = None if seed is None else check_seed(seed)
        make = (lambda: gym.make(env_fn, **make_kwargs)) if isinstance(env_fn, str) else env_fn
        self.vec = SyncVectorEnv([make for _ in range(num_envs)], autoreset_mode=_MODES[autoreset_mode])
        self.num_envs = num_envs
        self.device = device
        self.metadata = {"autoreset_mode": _MODES[autoreset_mode], "render_modes": []}
        self.render_mode = None
        self.single_observation_space = self.vec.single_observation_space
        self.single_action_space = self.vec.single_action_space
        self.observation_space = self.vec.observation_space
        self.action_space = self.vec.action_space
        self.obs_dim = int(np.prod(self.single_observation_space.shape))
        self.task_ranges = dict(task_ranges)
        self.apply_task = apply_task
        self.task_type = dataclasses.make_dataclass(
            "GymnasiumTasks", [(name, torch.Tensor) for name in task_ranges], bases=(Tasks,))
        self._params = tuple(torch.full((num_envs,), float(r[0] + r[1]) / 2) for r in task_ranges.values())
        self._seed = seed
        self._was_reset = False

    # ------------------------------------------------------------------ tasks
    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> Tasks:
        fields = []
        for low, high, *kind in self.task_ranges.values():
            u = torch.rand(n, generator=generator, dtype=torch.float64)
            if kind and kind[0] == "log":
                v = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
            else:
                v = low + u * (high - low)
            fields.append(v.to(torch.float32))
        return self.task_type(*fields)

    @property
    def tasks(self) -> Tasks:
        return self.task_type(*(p.clone() for p in self._params))

    def _as_tasks(self, tasks, n: int, name: str = "tasks") -> Tasks:
        if not isinstance(tasks, self.task_type):
            raise TypeError(f"{name} must come from env.sample_tasks ({self.task_type.__name__}), "
                            f"got {type(tasks).__name__}")
        for fname, t in zip(tasks.field_names(), tasks.fields()):
            if tuple(t.shape) != (n,):
                raise ValueError(f"{name}.{fname} must have shape ({n},), got {tuple(t.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}.{fname} must be finite")
        return tasks

    def set_tasks(self, tasks: Tasks, env_ids=None) -> None:
        ids = list(range(self.num_envs)) if env_ids is None else [int(i) for i in torch.as_tensor(env_ids).flatten()]
        if any(i < 0 or i >= self.num_envs for i in ids):
            raise ValueError(f"env_ids must lie in [0, {self.num_envs})")
        tasks = self._as_tasks(tasks, len(ids))
        names = tasks.field_names()
        values = torch.stack(tasks.fields(), 1).tolist()
        for j, i in enumerate(ids):
            self.apply_task(self.vec.envs[i], dict(zip(names, values[j])))
        for p, t in zip(self._params, tasks.fields()):
            p[ids] = t

    sample_task_split = TaskVectorEnv.sample_task_split

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = dict(options or {})
        unknown = set(options) - {"tasks", "env_ids", "reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'tasks', 'env_ids' or 'reset_mask'")
        if seed is not None:
            seed = check_seed(seed)
        ids = options.get("env_ids", options.get("reset_mask"))
        if ids is not None:
            ids = torch.as_tensor(ids)
            ids = ids.nonzero().flatten() if ids.dtype == torch.bool else ids.flatten().long()
        if "tasks" in options:
            self.set_tasks(options["tasks"], env_ids=ids)
        if seed is None and not self._was_reset:
            seed = self._seed
        if ids is None:
            obs, info = self.vec.reset(seed=seed)
        else:
            mask = np.zeros(self.num_envs, dtype=np.bool_)
            mask[ids.numpy()] = True
            obs, info = self.vec.reset(seed=seed, options={"reset_mask": mask})
        self._was_reset = True
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device), info

    def step(self, actions):
        if not self._was_reset:
            raise RuntimeError("step() called before reset(): call env.reset() first")
        a = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
        if a.shape[0] != self.num_envs:
            raise ValueError(f"actions must have leading dim {self.num_envs}, got shape {a.shape}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        if not all(self.single_action_space.contains(np.asarray(x, dtype=self.single_action_space.dtype))
                   for x in a):
            raise ValueError(f"actions outside {self.single_action_space}")
        obs, reward, terminated, truncated, info = self.vec.step(a)
        dev = self.device
        if "final_obs" in info:
            final = np.zeros((self.num_envs, *self.single_observation_space.shape), dtype=np.float32)
            for i in np.flatnonzero(info["_final_obs"]):
                final[i] = info["final_obs"][i]
            info = {**info, "final_obs": torch.from_numpy(final).to(dev),
                    "_final_obs": torch.from_numpy(info["_final_obs"]).to(dev)}
        return (torch.as_tensor(obs, dtype=torch.float32, device=dev),
                torch.as_tensor(reward, dtype=torch.float32, device=dev),
                torch.as_tensor(terminated, device=dev), torch.as_tensor(truncated, device=dev), info)

    def close_extras(self, **kwargs):
        self.vec.close()
