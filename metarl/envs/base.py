"""The batched task-distribution env: one class, every family.

:class:`TaskVectorEnv` is a ``gymnasium.vector.VectorEnv`` whose N copies each carry
their own task parameters and are stepped by one kernel call. A family subclass
declares its spaces, its task dataclass and how tasks are sampled and checked; the
kernels live in ``metarl.kernels.envs.<family>``. Everything else — autoreset,
seeding, partial resets, state get/set, validation — is written once here.
"""
from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from metarl.envs.tasks import Tasks
from metarl.kernels._checks import check_device
from metarl.kernels.envs import _launch
from metarl.kernels.envs._autoreset import MODES
from metarl.kernels.envs._validate import first_invalid_discrete, first_nonfinite
from metarl.kernels.rng import make_keys

_AUTORESET = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP,
              "disabled": AutoresetMode.DISABLED}


def _mode_name(mode) -> str:
    if isinstance(mode, AutoresetMode):
        return {v: k for k, v in _AUTORESET.items()}[mode]
    if mode not in _AUTORESET:
        raise ValueError(f"autoreset_mode must be one of {sorted(_AUTORESET)} or a gymnasium AutoresetMode, "
                         f"got {mode!r}")
    return mode


def env_device(device) -> torch.device:
    """The device an env lives on: the CPU or a CUDA device that exists here (``ValueError``
    otherwise), with the index filled in for CUDA (``"cuda"`` -> ``cuda:<current>``), so it
    compares equal to the device of the tensors made on it."""
    dev = check_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be the CPU or a CUDA device, got {device!r}")
    return dev


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int in ``[0, 2**64)``: ``TypeError`` for a non-integer (bool included),
    ``ValueError`` for a negative seed (gymnasium refuses those too) or one past 64 bits
    (the envs' random keys are derived from 64 bits: a larger seed would repeat a smaller one)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name} must be in [0, 2**64) (gymnasium refuses negative seeds), got {seed}")
    return seed


class TaskVectorEnv(gym.vector.VectorEnv):
    """N env copies with per-copy task parameters, stepped by one kernel.

    Observations, rewards and flags are torch tensors on ``env.device``: obs
    ``[N, *obs_shape]`` float32, reward ``[N]`` float32, terminated/truncated ``[N]``
    bool. Actions are tensors ``[N]`` (int, Discrete) or ``[N, d]`` (float, Box) on the
    same device; NumPy arrays and lists are accepted and converted.

    Subclasses set: ``env_id``, ``kernels`` (the kernel module), ``task_type``,
    ``max_episode_steps`` and implement ``_make_spaces``, ``default_tasks``,
    ``sample_tasks`` and ``check_tasks`` (and ``check_state`` where states have a
    domain). Family options (e.g. ``arms``) are set by the subclass's ``__init__``
    before it calls ``super().__init__``, since the spaces and defaults read them.
    The kernels see observations flattened to ``[N, obs_dim]``.
    """

    env_id: str = ""
    kernels: Any = None
    task_type: type[Tasks] = Tasks
    max_episode_steps: int = 0

    def __init__(self, num_envs: int, *, device="cpu", seed: int | None = None,
                 autoreset_mode="next_step", backend: str | None = None,
                 max_episode_steps: int | None = None):
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.num_envs = num_envs
        self.device = env_device(device)
        if seed is not None:
            seed = check_seed(seed)
        self.backend = self._resolve_backend(backend)
        if max_episode_steps is not None:
            if max_episode_steps < 0:
                raise ValueError(f"max_episode_steps must be >= 0 (0: no limit), got {max_episode_steps}")
            self.max_episode_steps = int(max_episode_steps)
        mode_name = _mode_name(autoreset_mode)
        self._mode = MODES[mode_name]
        self.metadata = {"autoreset_mode": _AUTORESET[mode_name], "render_modes": []}
        self.render_mode = None
        self.spec = None

        self.single_observation_space, self.single_action_space = self._make_spaces()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._discrete = isinstance(self.single_action_space, gym.spaces.Discrete)
        self._obs_shape = self.single_observation_space.shape
        self._act_shape = self.single_action_space.shape
        self.obs_dim = int(np.prod(self._obs_shape))

        n, dev = num_envs, self.device
        self._state = self._new_state()
        self._elapsed = torch.zeros(n, dtype=torch.int32, device=dev)
        self._needs_reset = torch.zeros(n, dtype=torch.bool, device=dev)
        self._counter = torch.zeros(n, dtype=torch.int64, device=dev)
        self._key = torch.zeros(n, dtype=torch.int64, device=dev)
        defaults = self.default_tasks(n)
        self._params = tuple(t.to(dev).contiguous().clone() for t in defaults.fields())
        self._empty_final = torch.zeros((0, self.obs_dim), dtype=torch.float32, device=dev)
        self._was_reset = False
        self._reseed(seed)
        self._init_kernels()

    # ------------------------------------------------------------------ family hooks
    def _make_spaces(self) -> tuple[gym.Space, gym.Space]:
        raise NotImplementedError

    def default_tasks(self, n: int) -> Tasks:
        """n copies of the source env's default parameters."""
        raise NotImplementedError

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> Tasks:
        """n tasks from the family's default task distribution (CPU tensors)."""
        raise NotImplementedError

    def check_tasks(self, tasks: Tasks) -> None:
        """Raise ``ValueError`` naming the field when a task is out of range."""
        raise NotImplementedError

    # ------------------------------------------------------------------ buffers
    # Four hooks a family that does not step through metarl's own kernels (the MuJoCo
    # families) overrides: the backend choice, the state buffer, the kernel set-up, and
    # the two kernel calls of step() and reset().
    def _resolve_backend(self, backend: str | None) -> str:
        return _launch.resolve_backend(backend, self.device, self.kernels)

    def _new_state(self) -> torch.Tensor:
        """The state buffer ``[STATE_DIM, N]`` the kernels update in place."""
        return torch.zeros((self.kernels.STATE_DIM, self.num_envs), dtype=torch.float32, device=self.device)

    def _init_kernels(self) -> None:
        self._step_fn = _launch.STEP[self.backend]
        self._reset_fn = _launch.RESET[self.backend]
        self._numpy = self.backend in ("numba", "cpp")
        self._bind_buffers()

    def _kernel_params(self) -> tuple[torch.Tensor, ...]:
        """The per-env parameters the kernels read: the task fields, plus any family
        option the kernels need per env (e.g. TabularMDP's horizon). Called once."""
        return self._params

    def _bind_buffers(self):
        """Argument tuples for the kernels; NumPy views for Numba (made once)."""
        persistent = (self._state, self._elapsed, self._needs_reset, self._counter, self._kernel_params())
        self._buffers = persistent   # the tensors themselves (the fused rollout reads them)
        if self._numpy:
            self._args = tuple(_launch.to_numpy_args(persistent))
            self._key_arg = self._key.numpy()
        else:
            self._args = persistent
            self._key_arg = self._key

    def episode_lengths(self) -> torch.Tensor | None:
        """Steps per episode of every env, ``[N]`` int64 on ``env.device``, for families whose
        episodes last a fixed number of steps (a Bandit pull is one episode; a TabularMDP episode
        lasts its horizon), capped by ``max_episode_steps``; ``None`` for families whose episodes
        end by termination (CartPole, Navigation2D, ...). Trials of a fixed length are planned with it."""
        return _launch.episode_length(self.kernels, self._kernel_params(), self.max_episode_steps)

    def kernel_buffers(self) -> tuple:
        """The tensors the env kernels step in place: ``(state [STATE_DIM, N] float32, elapsed [N]
        int32, needs_reset [N] bool, counter [N] int64, params, key [N] int64)``, ``params`` the
        per-env tensors the kernels read (the task fields and any per-env family option). The live
        buffers, not copies:
        for a fused kernel that steps the env itself (:func:`metarl.rollout.collect`)."""
        return self._state, self._elapsed, self._needs_reset, self._counter, self._kernel_params(), self._key

    def _reseed(self, seed: int | None):
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self._key.copy_(make_keys(seed, self.num_envs).to(self.device))
        self._counter.zero_()

    # ------------------------------------------------------------------ tasks
    @property
    def tasks(self) -> Tasks:
        """The current task of every env (a copy), leading dim N."""
        return self.task_type(*(p.clone() for p in self._params))

    def _as_tasks(self, tasks, n_expected: int, name: str = "tasks") -> Tasks:
        if not isinstance(tasks, self.task_type):
            raise TypeError(f"{name} must be a {self.task_type.__name__} (from env.sample_tasks), "
                            f"got {type(tasks).__name__}")
        ref = self.default_tasks(1)
        for fname, t, r in zip(tasks.field_names(), tasks.fields(), ref.fields()):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}.{fname} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != r.dtype:
                raise TypeError(f"{name}.{fname} must have dtype {r.dtype}, got {t.dtype}")
            if tuple(t.shape) != (n_expected, *r.shape[1:]):
                raise ValueError(f"{name}.{fname} must have shape {(n_expected, *r.shape[1:])}, got {tuple(t.shape)}")
        self.check_tasks(tasks)
        return tasks

    def _as_env_ids(self, env_ids) -> torch.Tensor | None:
        if env_ids is None:
            return None
        ids = torch.as_tensor(env_ids, device="cpu")
        if ids.dtype == torch.bool:
            if ids.shape != (self.num_envs,):
                raise ValueError(f"env_ids as a mask must have shape ({self.num_envs},), got {tuple(ids.shape)}")
            return ids.nonzero().flatten()
        if ids.dtype.is_floating_point or ids.dtype.is_complex:
            raise TypeError(f"env_ids must be integer indices or a bool mask, got dtype {ids.dtype}")
        ids = ids.flatten().to(torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_envs):
            raise ValueError(f"env_ids must lie in [0, {self.num_envs}), got min {int(ids.min())} max {int(ids.max())}")
        if ids.unique().numel() != ids.numel():
            raise ValueError("env_ids must not repeat")
        return ids

    def set_tasks(self, tasks: Tasks, env_ids=None) -> None:
        """Give env ``env_ids[j]`` the task ``tasks[j]`` (all envs when ``env_ids`` is None).

        The episode in progress continues with the new parameters; call ``reset``
        (optionally with ``options={"env_ids": ...}``) for a clean start.
        """
        ids = self._as_env_ids(env_ids)
        n = self.num_envs if ids is None else int(ids.numel())
        tasks = self._as_tasks(tasks, n)
        for p, t in zip(self._params, tasks.fields()):
            t = t.to(self.device)
            if ids is None:
                p.copy_(t)
            else:
                p[ids.to(self.device)] = t

    def sample_task_split(self, num_train: int, num_test: int, seed: int = 0) -> tuple[Tasks, Tasks]:
        """Disjoint meta-train and meta-test task sets, reproducible from ``seed``.

        Both come from one generator stream (train first), so the sets never share a
        draw; the same seed gives the same sets on every machine.
        """
        g = torch.Generator().manual_seed(check_seed(seed))
        both = self.sample_tasks(num_train + num_test, generator=g)
        return both[:num_train], both[num_train:]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything a run needs to continue bit for bit: physical state, episode clocks, RNG keys
        and counters, tasks (CPU copies; for checkpoints, with ``torch.save``)."""
        return {"num_envs": self.num_envs, "state": self._state.cpu().clone(), "elapsed": self._elapsed.cpu().clone(),
                "needs_reset": self._needs_reset.cpu().clone(), "counter": self._counter.cpu().clone(),
                "key": self._key.cpu().clone(), "params": [p.cpu().clone() for p in self._params],
                "was_reset": self._was_reset}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict` (same family options and N); checked before anything changes."""
        if not isinstance(sd, dict) or sd.get("num_envs") != self.num_envs:
            raise ValueError(f"state dict is not for this env ({self.num_envs} envs)")
        pairs = [(self._state, sd["state"]), (self._elapsed, sd["elapsed"]), (self._needs_reset, sd["needs_reset"]),
                 (self._counter, sd["counter"]), (self._key, sd["key"]), *zip(self._params, sd["params"])]
        if len(sd["params"]) != len(self._params) or any(
                a.shape != b.shape or a.dtype != b.dtype for a, b in pairs):
            raise ValueError("state dict shapes or dtypes do not match this env")
        for dst, src in pairs:   # in place: the kernels hold views of these buffers
            dst.copy_(src)
        self._was_reset = bool(sd["was_reset"])

    # ------------------------------------------------------------------ state
    def get_state(self) -> torch.Tensor:
        """The physical state ``[N, STATE_DIM]`` float32, in gymnasium's order (a copy)."""
        return self._state.t().clone()

    def set_state(self, state: torch.Tensor, env_ids=None) -> None:
        """Set the state of all envs (``[N, STATE_DIM]``) or of ``env_ids`` (``[len(ids), STATE_DIM]``).

        Envs whose state is set start a fresh episode clock (elapsed steps 0, not done).
        """
        ids = self._as_env_ids(env_ids)
        n = self.num_envs if ids is None else int(ids.numel())
        if not isinstance(state, torch.Tensor):
            raise TypeError(f"state must be a torch.Tensor, got {type(state).__name__}")
        if not state.dtype.is_floating_point:
            raise TypeError(f"state must be floating point, got {state.dtype}")
        expected = (n, self.kernels.STATE_DIM)
        if tuple(state.shape) != expected:
            raise ValueError(f"state must have shape {expected}, got {tuple(state.shape)}")
        if not bool(torch.isfinite(state).all()):
            raise ValueError("state contains NaN or inf")
        self.check_state(state)
        self._write_state(state, ids)
        if ids is None:
            self._elapsed.zero_()
            self._needs_reset.zero_()
        else:
            d = ids.to(self.device)
            self._elapsed[d] = 0
            self._needs_reset[d] = False
        self._was_reset = True

    def _write_state(self, state: torch.Tensor, ids: torch.Tensor | None) -> None:
        """Store the validated ``state`` ``[n, STATE_DIM]`` for all envs (``ids`` None) or ``ids``."""
        s = state.to(device=self.device, dtype=torch.float32).t()
        if ids is None:
            self._state.copy_(s)
        else:
            self._state[:, ids.to(self.device)] = s

    def check_state(self, state: torch.Tensor) -> None:
        """Family hook: raise ``ValueError`` for states outside the family's domain."""

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset all envs, or only those in ``options["env_ids"]`` / ``options["reset_mask"]``.

        ``seed`` re-derives every env's random key (same seed: same episodes).
        ``options["tasks"]`` sets tasks first (for the reset envs when ids are given).
        Returns ``(obs [N, ...], info)``; obs of envs not reset is their current one.
        """
        options = dict(options or {})
        unknown = set(options) - {"tasks", "env_ids", "reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'tasks', 'env_ids' or 'reset_mask'")
        if "env_ids" in options and "reset_mask" in options:
            raise ValueError("give options['env_ids'] or options['reset_mask'], not both")
        ids = self._as_env_ids(options.get("env_ids", options.get("reset_mask")))
        if seed is not None:
            seed = check_seed(seed)
        if "tasks" in options:
            self.set_tasks(options["tasks"], env_ids=ids)
        if seed is not None:
            self._reseed(seed)
        if ids is None:
            mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        else:
            mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            mask[ids.to(self.device)] = True
        obs = self._reset_kernel(mask)
        self._was_reset = True
        return obs, {}

    def _reset_kernel(self, mask: torch.Tensor) -> torch.Tensor:
        """Reset the envs where ``mask`` (bool ``[N]``); return the observation ``[N, obs_dim]`` of all."""
        obs = self._new_obs()
        if self._numpy:
            self._reset_fn(self.kernels, *self._args, self._key_arg, mask.numpy(), obs.numpy())
        else:
            self._reset_fn(self.kernels, *self._args, self._key_arg, mask, obs)
        return obs

    def _new_obs(self) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.from_numpy(np.empty((self.num_envs, self.obs_dim), dtype=np.float32))
        return torch.empty((self.num_envs, self.obs_dim), dtype=torch.float32, device=self.device)

    def step(self, actions):
        """Step every env once. Returns ``(obs, reward, terminated, truncated, info)``.

        In ``same_step`` mode ``info`` holds ``final_obs`` ``[N, ...]`` (zeros where no
        episode ended), ``_final_obs`` ``[N]`` bool, ``final_info`` ``{}`` and
        ``_final_info``, as gymnasium's vector envs do (tensors instead of object arrays).
        """
        if not self._was_reset:
            raise RuntimeError("step() called before reset(): call env.reset() first")
        a = self._check_actions(actions)
        n = self.num_envs
        same_step = self._mode == 1
        if self._mode == 2 and bool(self._needs_reset.any()):
            bad = self._needs_reset.nonzero().flatten()[:8].tolist()
            raise RuntimeError(f"autoreset_mode='disabled' and envs {bad} ended: reset them with "
                               "env.reset(options={'reset_mask': mask}) before stepping")
        obs, reward, terminated, truncated, final_obs = self._step_kernel(a, same_step)
        if self._obs_shape != (self.obs_dim,):
            obs = obs.view(n, *self._obs_shape)
            final_obs = final_obs.view(-1, *self._obs_shape)
        if not same_step:
            return obs, reward, terminated, truncated, {}
        done = terminated | truncated
        info = {"final_obs": final_obs, "_final_obs": done,
                "final_info": {}, "_final_info": done}
        return obs, reward, terminated, truncated, info

    def _step_kernel(self, a: torch.Tensor, same_step: bool):
        """One kernel step of every env with autoreset: ``(obs [N, obs_dim], reward, terminated,
        truncated, final_obs)``, ``final_obs`` ``[N, obs_dim]`` in same-step mode, else ``[0, obs_dim]``."""
        n = self.num_envs
        if self._numpy:
            obs_np = np.empty((n, self.obs_dim), dtype=np.float32)
            rew_np = np.empty(n, dtype=np.float32)
            term_np = np.empty(n, dtype=np.bool_)
            trunc_np = np.empty(n, dtype=np.bool_)
            final_np = np.empty((n, self.obs_dim), dtype=np.float32) if same_step else self._empty_final.numpy()
            self._step_fn(self.kernels, *self._args, a.numpy(), self._key_arg,
                          obs_np, rew_np, term_np, trunc_np, final_np, self.max_episode_steps, self._mode)
            obs, reward = torch.from_numpy(obs_np), torch.from_numpy(rew_np)
            terminated, truncated = torch.from_numpy(term_np), torch.from_numpy(trunc_np)
            final_obs = torch.from_numpy(final_np)
        else:
            dev = self.device
            obs = torch.empty((n, self.obs_dim), dtype=torch.float32, device=dev)
            reward = torch.empty(n, dtype=torch.float32, device=dev)
            terminated = torch.empty(n, dtype=torch.bool, device=dev)
            truncated = torch.empty(n, dtype=torch.bool, device=dev)
            final_obs = torch.empty((n, self.obs_dim), dtype=torch.float32, device=dev) if same_step \
                else self._empty_final
            self._step_fn(self.kernels, *self._args, a, self._key_arg,
                          obs, reward, terminated, truncated, final_obs, self.max_episode_steps, self._mode)
        return obs, reward, terminated, truncated, final_obs

    # ------------------------------------------------------------------ validation
    def _check_actions(self, actions) -> torch.Tensor:
        """Validate actions; return a contiguous tensor the kernels can read."""
        if not isinstance(actions, torch.Tensor):
            arr = np.asarray(actions) if isinstance(actions, (np.ndarray, list, tuple, int, float)) else None
            if arr is None or arr.dtype.kind not in "biuf":
                raise TypeError("actions must be a torch.Tensor or a numeric NumPy array, "
                                f"got {type(actions).__name__}")
            actions = torch.as_tensor(arr, device=self.device)
        if actions.device != self.device:
            raise ValueError(f"actions are on {actions.device} but the env is on {self.device}")
        actions = actions.detach()   # actions are data (a policy's output may require grad)
        n = self.num_envs
        if self._discrete:
            if actions.dtype.is_floating_point or actions.dtype == torch.bool or actions.dtype.is_complex:
                raise TypeError(f"actions for a Discrete space must be integers, got dtype {actions.dtype}")
            if actions.shape != (n,):
                if actions.shape == (n, 1):
                    actions = actions.view(n)
                else:
                    raise ValueError(f"actions must have shape ({n},), got {tuple(actions.shape)}")
            if actions.dtype != torch.int64:
                actions = actions.to(torch.int64)
            actions = actions.contiguous()
            bad = first_invalid_discrete(actions, self.single_action_space.n)
            if bad >= 0:
                raise ValueError(f"actions[{bad}] = {int(actions[bad])} is outside "
                                 f"Discrete({self.single_action_space.n})")
            return actions
        expected = (n, *self._act_shape)
        if not actions.dtype.is_floating_point:
            raise TypeError(f"actions for a Box space must be floating point, got dtype {actions.dtype}")
        if tuple(actions.shape) != expected:
            if tuple(actions.shape) == (n,) and self._act_shape == (1,):
                actions = actions.view(n, 1)
            else:
                raise ValueError(f"actions must have shape {expected}, got {tuple(actions.shape)}")
        actions = actions.to(torch.float32).contiguous()
        bad = first_nonfinite(actions)
        if bad >= 0:
            raise ValueError(f"actions[{bad}] contains NaN or inf")
        return actions

    # ------------------------------------------------------------------ misc
    def close_extras(self, **kwargs):
        pass

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.env_id!r}, num_envs={self.num_envs}, device={str(self.device)!r}, "
                f"backend={self.backend!r}, autoreset_mode={_mode_name(self.metadata['autoreset_mode'])!r})")
