"""Stable-Baselines3 on metarl envs: :class:`VecEnv`, an SB3 ``VecEnv`` over a gymnasium vector env.

SB3's algorithms and its ``VecEnv`` wrappers (``VecMonitor``, ``VecNormalize``, ``VecFrameStack``) take it
as they take a ``DummyVecEnv``, but the env steps all its copies in one call and what SB3 receives are
NumPy views of the env's CPU tensors (no per-env Python in ``step``/``reset``; the per-env info dicts
SB3 needs are built once and only the entries of copies that ended are replaced).

Needs ``stable-baselines3`` (``pip install -e ".[interop]"``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from metarl.envs.base import TaskVectorEnv
from metarl.envs.tasks import Tasks
from metarl.envs.trial import TrialWrapper
from metarl.integrations import require
from metarl.kernels.rl2_inputs import rl2_inputs

_sb3 = require("stable_baselines3.common.vec_env", "stable-baselines3", "metarl.integrations.sb3")


def _numpy(x) -> np.ndarray:
    """A NumPy view of a CPU tensor (a copy for a GPU tensor); arrays pass through."""
    if isinstance(x, torch.Tensor):
        return x.numpy() if x.device.type == "cpu" else x.cpu().numpy()
    return np.asarray(x)


class VecEnv(_sb3.VecEnv):
    """A Stable-Baselines3 ``VecEnv`` over a metarl vector env (or any gymnasium vector env).

    ``env`` is a metarl env from ``metarl.make_vec`` (any ``autoreset_mode``), a
    :class:`~metarl.envs.TrialWrapper`, or another gymnasium ``VectorEnv`` (torch or NumPy arrays) in
    ``autoreset_mode="same_step"``. SB3 sees what its ``DummyVecEnv`` gives:

    - ``reset() -> obs [N, *obs_shape]`` and ``step(actions [N, ...]) -> (obs, rewards [N] float32,
      dones [N] bool, infos)``, a copy whose episode ended already reset in the returned ``obs``;
    - ``infos[i]`` (a list of N dicts) is ``{}`` unless copy ``i`` ended, then it holds
      ``"terminal_observation"`` (its last observation) and ``"TimeLimit.truncated"`` (truncated and
      not terminated: SB3 bootstraps the value there). The dicts of copies that did not end are reused
      from step to step: read them, do not write into them.

    In ``"same_step"`` mode the last observations come from the env's ``info["final_obs"]``; in
    ``"next_step"`` / ``"disabled"`` mode (metarl envs only) the ended copies are reset with
    ``env.reset(options={"reset_mask": dones})``, one more kernel call on steps where a copy ended, so
    ``"same_step"`` is the faster choice.

    Under a :class:`~metarl.envs.TrialWrapper` SB3's episode is the **trial** (RL^2): ``dones`` marks
    trial ends, so a recurrent policy (sb3-contrib's ``RecurrentPPO``) keeps its memory across the
    trial's episodes and advantages are cut only between trials; ``"TimeLimit.truncated"`` is False
    there (a trial ends by design) and the episode boundaries inside a trial are in the observation
    (its ``prev_done`` entry). The methods below reach the base env for what the wrapper lacks
    (``tasks``, ``set_tasks``): a task set there holds until the copy's trial ends (then the wrapper
    draws the next one); ``set_options({"tasks": tasks})`` starts the next ``reset``'s trials on them.

    Tasks and other attributes, through SB3's methods (the env is one batched object, not N envs):

    - ``get_attr("tasks", indices)``: one one-row task batch per selected copy; any other attribute
      is read from ``env`` once and repeated for each selected copy;
    - ``set_attr("tasks", tasks, indices)``: ``env.set_tasks(tasks, env_ids=indices)`` (a one-row
      batch is given to every selected copy); other attributes only for all copies at once;
    - ``env_method(name, *args, indices=..., **kwargs)``: calls ``env.<name>(*args, **kwargs)`` once,
      with ``env_ids=indices`` when ``indices`` is given (``set_tasks``, ``set_state``), and returns
      the result repeated for each selected copy.

    ``seed(s)`` makes the next ``reset`` reseed every copy from ``s`` (metarl derives each copy's
    random stream from one seed; ``DummyVecEnv`` gives copy ``i`` the seed ``s + i``);
    ``set_options(dict)`` passes one options dict to the next ``reset`` (e.g. ``{"tasks": tasks}``).
    metarl envs do not render: ``render`` and ``get_images`` raise ``NotImplementedError``.

    Example::

        >>> import metarl
        >>> from metarl.integrations.sb3 import VecEnv
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", VecEnv(metarl.make_vec("CartPole-v1", 64)), n_steps=8, seed=0)
        >>> _ = model.learn(512)
    """

    def __init__(self, env):
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.env = env
        self.trials = isinstance(env, TrialWrapper)
        self._same_step = mode == AutoresetMode.SAME_STEP
        if not self._same_step and not isinstance(env, TaskVectorEnv):
            raise ValueError(f"env must use autoreset_mode='same_step' (SB3 resets a copy in the step where it "
                             f"ends), or be a metarl env from metarl.make_vec; got {type(env).__name__} in {mode}")
        device = getattr(env, "device", None)
        self._device = device if isinstance(device, torch.device) else None   # None: a NumPy env
        self._discrete = hasattr(env.single_action_space, "n")
        self._actions = None
        self._infos: list[dict] = [{} for _ in range(env.num_envs)]
        self._touched: list[int] = []      # copies whose info dict holds data from the last step
        self._next_options: dict | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self._seeds[0], options=self._next_options)
        self._reset_seeds()
        self._next_options = None
        for i in self._touched:
            self._infos[i] = {}
        self._touched = []
        return _numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        if self._device is not None:
            actions = torch.from_numpy(np.ascontiguousarray(actions))
            if self._device.type != "cpu":
                actions = actions.to(self._device)
        self._actions = actions

    def step_wait(self):
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, info = self.env.step(actions)
        torch_env = self._device is not None
        if self.trials:
            done = info["trial_start"]
        else:
            done = terminated | truncated
        ended = done.nonzero()[0] if not torch_env else done.nonzero().flatten()
        infos = self._infos
        for i in self._touched:
            infos[i] = {}
        self._touched = ended.tolist()
        if self._touched:
            last, timeout = self._last_observations(obs, actions, reward, terminated, truncated, info, done, ended)
            for j, i in enumerate(self._touched):
                infos[i] = {"terminal_observation": last[j], "TimeLimit.truncated": bool(timeout[j])}
            if not self._same_step:   # a metarl env in next_step / disabled mode: reset the ended copies now
                obs, _ = self.env.reset(options={"reset_mask": done})
        return _numpy(obs), _numpy(reward), _numpy(done), list(infos)

    def _last_observations(self, obs, actions, reward, terminated, truncated, info, done, ended):
        """The last observation ``[k, *obs_shape]`` and the SB3 time-limit flag ``[k]`` of the ``k``
        copies in ``ended`` (indices into the batch)."""
        if self.trials:
            # the RL^2 input after the trial's last step: its final observation and the step's
            # action, reward and done flag (the TrialWrapper's layout, built by the same op)
            base = self.env.base
            final = info["final_obs"][ended].reshape(len(ended), base.obs_dim)
            a = actions[ended] if isinstance(actions, torch.Tensor) else torch.as_tensor(actions)[ended]
            start = torch.zeros(len(ended), dtype=torch.bool, device=final.device)
            last = rl2_inputs(final, a.to(final.device), reward[ended], done[ended], start,
                              self.env.action_dim, self._discrete)
            return _numpy(last), np.zeros(len(ended), dtype=bool)
        timeout = _numpy(truncated[ended] & ~terminated[ended])
        if not self._same_step:
            return _numpy(obs[ended]), timeout
        final = info["final_obs"]
        if isinstance(final, torch.Tensor):
            return _numpy(final[ended]), timeout
        return [final[i] for i in ended.tolist()], timeout   # gymnasium's object array

    # ------------------------------------------------------------------ tasks and attributes
    def _indices(self, indices) -> list[int] | None:
        return None if indices is None else list(self._get_indices(indices))

    def _owner(self, attr_name: str):
        """The object that holds ``attr_name``: the env, or under a TrialWrapper its base env for what the
        wrapper lacks (``tasks``, ``set_tasks``, ``sample_tasks``, ...)."""
        if self.trials and not hasattr(self.env, attr_name):
            return self.env.base
        return self.env

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        ids = list(self._get_indices(indices))
        value = getattr(self._owner(attr_name), attr_name)
        if isinstance(value, Tasks):
            return [value[i] for i in ids]
        return [value] * len(ids)

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        ids = self._indices(indices)
        if attr_name == "tasks":
            if ids is not None and isinstance(value, Tasks) and len(value) == 1 and len(ids) > 1:
                value = value[torch.zeros(len(ids), dtype=torch.int64)]
            self._owner("set_tasks").set_tasks(value, env_ids=ids)
            return
        if ids is not None and sorted(ids) != list(range(self.num_envs)):
            raise ValueError(f"set_attr({attr_name!r}) for some copies only: a metarl env is one batched object; "
                             "only 'tasks' can be set per copy")
        setattr(self._owner(attr_name), attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        ids = self._indices(indices)
        if ids is not None:
            method_kwargs["env_ids"] = ids
        result = getattr(self._owner(method_name), method_name)(*method_args, **method_kwargs)
        return [result] * (self.num_envs if ids is None else len(ids))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))   # no per-copy gymnasium.Wrapper exists

    # ------------------------------------------------------------------ seeding, options, the rest
    def set_options(self, options: dict | None = None) -> None:
        """Options for the next ``reset``: one dict for the whole batch (e.g. ``{"tasks": tasks}``)."""
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be one dict for the whole batch (a metarl env resets all copies in one "
                            f"call), got {type(options).__name__}")
        self._next_options = options or None

    def close(self) -> None:
        self.env.close()

    def render(self, mode: str | None = None):
        raise NotImplementedError("metarl envs do not render (they have no render modes); "
                                  "record observations or the env's get_state() instead")

    def get_images(self):
        raise NotImplementedError("metarl envs do not render (they have no render modes)")


__all__ = ["VecEnv"]
