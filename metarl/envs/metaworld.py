"""Meta-World+ ML1 / ML10 / ML25 / ML45 as metarl task distributions (optional extra ``metaworld``).

The benchmark is the package's own (``metaworld.ML1(task_name, seed)``, ``metaworld.ML10(seed)``, ...):
its train tasks are what :meth:`MetaWorldVecEnv.sample_tasks` draws, its test tasks are the test
half of :meth:`~MetaWorldVecEnv.sample_task_split`, its goals come from its seed. A task is data
(:class:`MetaWorldTasks`: which benchmark, which split, which of the split's ``metaworld.Task``
objects, and its task-name index); each env copy runs one of the package's Sawyer env objects
set to its task, so rewards, observations and ``info["success"]`` are the package's code.

Stepping: each copy's per-env Python (the mocap action before the physics; observation and reward
after it) is the package's, called per copy; the physics of all copies (5 ``mj_step``,
``mj_rnePostConstraint``, ``mj_forward`` each) runs in one call on MuJoCo's ``mjBatch`` thread pool
(:mod:`metarl.kernels.envs.metaworld_batch`) with the GIL released. Copies cannot share one model:
the package writes per-task ``body_pos``/``site_pos`` into its env's model at every reset.

MuJoCo 4: metaworld 3.1.1 (the latest) pins ``mujoco==3.3.0``, which has no ``mjBatch`` and conflicts
with the ``mujoco`` extra's ``mujoco>=4.0`` (pip: ResolutionImpossible); 3.0.0 asks for ``mujoco>=3.0``
and differs from 3.1.1 only in one reward fix (button-press-topdown-wall-v3) and a camera. So the
``metaworld`` extra lets pip pick 3.0.0, and ``pip install --no-deps metaworld==3.1.1`` upgrades to 3.1.1.
Both write 11 numbers into each weld's ``eq_data`` row, which has 12 since MuJoCo 3.17 (``ValueError:
could not broadcast input array from shape (11,) into shape (12,)`` when any env is made):
:func:`require_metaworld` replaces that one method (``SawyerMocapBase.reset_mocap_welds``) with one
writing the same 11 numbers and 0 in the 12th (the flag of welds whose pose ``mj_setConst``
recomputes; metaworld gives the pose).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import TaskVectorEnv, check_seed
from metarl.envs.tasks import Tasks
from metarl.kernels.envs import metaworld_batch
from metarl.kernels.envs._autoreset import DISABLED, NEXT_STEP, SAME_STEP
from metarl.kernels.envs.mujoco_batch import require_mujoco

EXTRA_HINT = 'pip install -e ".[metaworld]" (then, for metaworld 3.1.1: pip install --no-deps metaworld==3.1.1)'
BENCHMARKS = ("ML1", "ML10", "ML25", "ML45")
MAX_PATH_LENGTH = 500
"""``SawyerXYZEnv.max_path_length``: episodes are truncated there and the package refuses to step further"""
TRAIN, TEST = 0, 1
_BENCHMARK_NAMES: dict[int, str] = {}   # benchmark id -> "ML10(seed=0)", for error messages


# ----------------------------------------------------------------------------- the package
def _reset_mocap_welds(self) -> None:
    """``SawyerMocapBase.reset_mocap_welds`` for MuJoCo's 12-number weld rows (see the module docstring)."""
    import mujoco

    if self.model.nmocap > 0 and self.model.eq_data is not None:
        for i in range(self.model.eq_data.shape[0]):
            if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                self.model.eq_data[i, :11] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)
                self.model.eq_data[i, 11:] = 0.0


def require_metaworld():
    """The ``metaworld`` module, working with this MuJoCo, or ``ImportError`` naming the extra."""
    mujoco = require_mujoco()
    try:
        import metaworld
        from metaworld.sawyer_xyz_env import SawyerMocapBase
    except ImportError as e:
        raise ImportError(f"the Meta-World families need the optional extra 'metaworld': {EXTRA_HINT}") from e
    if mujoco.mjNEQDATA != 11:
        SawyerMocapBase.reset_mocap_welds = _reset_mocap_welds
    return metaworld


@functools.cache
def task_names() -> tuple[str, ...]:
    """Meta-World's 50 task names (``"reach-v3"``, ...) in the package's order: a task's ``name`` index."""
    require_metaworld()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    return tuple(ALL_V3_ENVIRONMENTS)


def benchmark_id(benchmark: str, task_name: str | None, seed: int) -> int:
    """A stable 62-bit id of one benchmark instance (name, ML1 task, seed): the ``benchmark`` field of its tasks."""
    label = f"{benchmark}({task_name!r}, seed={seed})" if benchmark == "ML1" else f"{benchmark}(seed={seed})"
    bid = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little") >> 2
    _BENCHMARK_NAMES[bid] = label
    return bid


@functools.cache
def load_benchmark(benchmark: str, task_name: str | None = None, seed: int = 0):
    """The package's benchmark object (``metaworld.ML1(task_name, seed=seed)`` / ``metaworld.ML10(seed=seed)``
    / ...), built once per process (building ML45 runs 2,500 env resets)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    metaworld = require_metaworld()
    seed = check_seed(seed, "benchmark_seed")
    if benchmark == "ML1":
        if task_name not in task_names():
            raise ValueError(f"task_name must be one of Meta-World's 50 tasks (e.g. 'reach-v3', 'push-v3'), "
                             f"got {task_name!r}; all: {list(task_names())}")
        return metaworld.ML1(task_name, seed=seed)
    if task_name is not None:
        raise ValueError(f"task_name is an option of ML1 only; {benchmark} fixes its tasks, got {task_name!r}")
    return getattr(metaworld, benchmark)(seed=seed)


# ----------------------------------------------------------------------------- tasks
@dataclasses.dataclass
class MetaWorldTasks(Tasks):
    """Meta-World tasks as data: entry ``j`` is ``benchmark.train_tasks[index[j]]`` (``split`` 0) or
    ``benchmark.test_tasks[index[j]]`` (``split`` 1), a ``metaworld.Task`` whose ``rand_vec`` fixes
    the object and goal positions; :meth:`MetaWorldVecEnv.task_objects` gives those objects."""

    benchmark: torch.Tensor
    """``[n]`` int64: id of the benchmark instance (name, ML1 task, seed) the tasks come from"""
    split: torch.Tensor
    """``[n]`` int64: 0 the benchmark's train tasks, 1 its test tasks"""
    index: torch.Tensor
    """``[n]`` int64: position in ``benchmark.train_tasks`` or ``benchmark.test_tasks``"""
    name: torch.Tensor
    """``[n]`` int64: the task name (Sawyer env class), an index into :func:`task_names`"""


# ----------------------------------------------------------------------------- the env
class MetaWorldVecEnv(TaskVectorEnv):
    """N copies of Meta-World Sawyer envs, each set to its own task of one benchmark (ML1/ML10/ML25/ML45).

    Observations ``[N, 39]`` float32 (the package's, goal zeroed as in every ML benchmark), rewards
    ``[N]`` float32 (reward version ``"v2"`` by default), actions ``[N, 4]`` in [-1, 1],
    ``info["success"]`` ``[N]`` bool (the step's ``success`` flag; in ``same_step`` mode, for an env
    whose episode ended, the flag of its final step). Episodes last ``max_episode_steps`` (at most
    500, the default) and end early on success with ``terminate_on_success=True`` (the package's
    test envs). A new task (``set_tasks``) takes effect at the copy's next reset, since the package
    places objects and goals at reset.

    Family options (keyword arguments of ``metarl.make_vec``):
        task_name: ML1's task (one of :func:`task_names`, e.g. ``"reach-v3"``); ML1 only.
        benchmark_seed: the seed of the benchmark's goals (``metaworld.ML10(seed=...)``; ML1's test
            goals use ``seed + 1``). Default: the env's ``seed``, as the package's ``gym.make_vec``
            does, or 0 without one.
        reward_function_version: ``"v2"`` (the default) or ``"v1"``.
        terminate_on_success: end an episode at its first successful step (default False).
        num_threads: MuJoCo threads stepping the physics, the caller's included (default
            ``torch.get_num_threads()``).

    Example::

        >>> import metarl, torch
        >>> env = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", seed=0)
        >>> obs, info = env.reset(options={"tasks": env.sample_tasks(2)})
        >>> obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 4))
        >>> obs.shape, info["success"].dtype
        (torch.Size([2, 39]), torch.bool)
    """

    benchmark_name: str = ""
    task_type = MetaWorldTasks
    max_episode_steps = MAX_PATH_LENGTH
    kernels = metaworld_batch

    def __init__(self, num_envs: int, *, device="cpu", seed: int | None = None, autoreset_mode="next_step",
                 backend: str | None = None, max_episode_steps: int | None = None, task_name: str | None = None,
                 benchmark_seed: int | None = None, reward_function_version: str = "v2",
                 terminate_on_success: bool = False, num_threads: int | None = None):
        require_metaworld()
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or not isinstance(
                max_episode_steps, int) or not 1 <= max_episode_steps <= MAX_PATH_LENGTH):
            raise ValueError(f"max_episode_steps must be an int in [1, {MAX_PATH_LENGTH}] (Meta-World truncates at "
                             f"{MAX_PATH_LENGTH} and refuses to step further), got {max_episode_steps!r}")
        if reward_function_version not in ("v1", "v2"):
            raise ValueError(f"reward_function_version must be 'v1' or 'v2', got {reward_function_version!r}")
        if not isinstance(terminate_on_success, bool):
            raise TypeError(f"terminate_on_success must be a bool, got {type(terminate_on_success).__name__}")
        if num_threads is None:
            num_threads = torch.get_num_threads()
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        if benchmark_seed is None:
            benchmark_seed = 0 if seed is None else check_seed(seed)
        self.task_name, self.benchmark_seed = task_name, check_seed(benchmark_seed, "benchmark_seed")
        self.benchmark = load_benchmark(self.benchmark_name, task_name, self.benchmark_seed)
        self.benchmark_id = benchmark_id(self.benchmark_name, task_name, self.benchmark_seed)
        self.reward_function_version = reward_function_version
        self.terminate_on_success = terminate_on_success
        self.num_threads = num_threads
        self.env_id = f"MetaWorld-{self.benchmark_name}-v0"

        names = task_names()
        self._split_tasks = (list(self.benchmark.train_tasks), list(self.benchmark.test_tasks))
        self._classes = {**self.benchmark.train_classes, **self.benchmark.test_classes}
        self.train_names = tuple(self.benchmark.train_classes)
        """the benchmark's train task names, in its order"""
        self.test_names = tuple(self.benchmark.test_classes)
        """the benchmark's test task names, in its order"""
        # per split: each task's name index [len] and, per task name, the positions of its tasks
        self._name_ids = tuple(torch.tensor([names.index(t.env_name) for t in ts], dtype=torch.int64)
                               for ts in self._split_tasks)
        self._by_name = tuple({n: [j for j, t in enumerate(ts) if t.env_name == n] for n in split_names}
                              for ts, split_names in zip(self._split_tasks, (self.train_names, self.test_names)))
        self._pool: dict[str, list] = {}
        self._probe = self._new_sawyer(self.train_names[0])
        super().__init__(num_envs, device=device, seed=seed, autoreset_mode=autoreset_mode, backend=backend,
                         max_episode_steps=max_episode_steps)

    # ------------------------------------------------------------------ TaskVectorEnv hooks
    def _resolve_backend(self, backend: str | None) -> str:
        if backend not in (None, "cpu", "mujoco"):
            raise ValueError(f"backend must be 'mujoco' (or None) for a Meta-World family, got {backend!r}")
        if self.device.type != "cpu":
            raise ValueError(f"the Meta-World families run on the CPU (the package's envs are NumPy), "
                             f"got device={self.device}")
        return "mujoco"

    def _make_spaces(self):
        space = self._probe.sawyer_observation_space
        obs = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
        return obs, gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def _new_state(self) -> torch.Tensor:
        return torch.zeros((0, self.num_envs), dtype=torch.float32)   # the state lives in the Sawyer env objects

    def _init_kernels(self) -> None:
        n = self.num_envs
        self._envs: list = [None] * n
        self._obs = np.zeros((n, self.obs_dim), dtype=np.float64)
        self._success = torch.zeros(n, dtype=torch.bool)
        self._episode_success = torch.zeros(n, dtype=torch.bool)   # any successful step in the running episode
        self._finished = self._succeeded = 0                         # episodes ended / of them successful
        self._batch = metaworld_batch.MetaWorldBatch(n, self._probe.frame_skip, self.num_threads)
        self._pool.setdefault(self.train_names[0], []).append(self._probe)

    def episode_lengths(self) -> torch.Tensor | None:
        """``max_episode_steps`` for every env, or None with ``terminate_on_success`` (episodes end on success)."""
        if self.terminate_on_success:
            return None
        return torch.full((self.num_envs,), self.max_episode_steps, dtype=torch.int64)

    def kernel_buffers(self) -> tuple:
        raise NotImplementedError("the Meta-World families have no kernel buffers (their state is the package's "
                                  "env objects); step them with env.step")

    # ------------------------------------------------------------------ tasks
    def _tasks(self, split: int, index: torch.Tensor) -> MetaWorldTasks:
        n = index.shape[0]
        return MetaWorldTasks(torch.full((n,), self.benchmark_id, dtype=torch.int64),
                              torch.full((n,), split, dtype=torch.int64), index.to(torch.int64),
                              self._name_ids[split][index])

    def _round_robin(self, split: int, n: int) -> MetaWorldTasks:
        """``n`` tasks of ``split`` visiting its task names in turn (task ``j``: name ``j % C``, that
        name's ``(j // C) % 50``-th task), so every prefix is balanced over the names."""
        groups = list(self._by_name[split].values())
        c = len(groups)
        index = [groups[j % c][(j // c) % len(groups[j % c])] for j in range(n)]
        return self._tasks(split, torch.tensor(index, dtype=torch.int64))

    def default_tasks(self, n: int) -> MetaWorldTasks:
        """The first ``n`` train tasks in turn over the train task names (see :meth:`sample_task_split`)."""
        return self._round_robin(TRAIN, n)

    def sample_tasks(self, n: int, generator: torch.Generator | None = None) -> MetaWorldTasks:
        """``n`` tasks drawn uniformly from the benchmark's train tasks (so each train task name with
        probability 1/C)."""
        index = torch.randint(0, len(self._split_tasks[TRAIN]), (n,), generator=generator)
        return self._tasks(TRAIN, index)

    def sample_task_split(self, num_train: int, num_test: int, seed: int = 0) -> tuple[MetaWorldTasks,
                                                                                       MetaWorldTasks]:
        """The benchmark's own split: ``num_train`` of its train tasks and ``num_test`` of its test
        tasks, each taken in turn over the split's task names (repeating past the split's size:
        ML1 has 50 goals per split, ML10 500 train and 250 test tasks). Never a random split: the
        goals are those of ``benchmark_seed``; ``seed`` (checked) selects nothing."""
        check_seed(seed)
        for arg, v in (("num_train", num_train), ("num_test", num_test)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{arg} must be an int >= 0, got {v!r}")
        return self._round_robin(TRAIN, num_train), self._round_robin(TEST, num_test)

    def test_tasks_per_env(self) -> list[list[int]]:
        """The package's meta-test layout (``metaworld._make_ml_envs_inner``): with C test task names and
        ``N = k * C`` envs, env ``c * k + j`` runs the ``j``-th, ``j + k``-th, ... test tasks of name
        ``c``; returns those test-task positions per env."""
        c = len(self.test_names)
        if self.num_envs % c:
            raise ValueError(f"the meta-test layout needs num_envs divisible by the {c} test task names "
                             f"(the package's meta_batch_size rule), got {self.num_envs}")
        k = self.num_envs // c
        return [self._by_name[TEST][name][j::k] for name in self.test_names for j in range(k)]

    def check_tasks(self, tasks: MetaWorldTasks) -> None:
        other = tasks.benchmark[tasks.benchmark != self.benchmark_id]
        if other.numel():
            theirs = _BENCHMARK_NAMES.get(int(other[0]), f"an unknown benchmark (id {int(other[0])})")
            mine = _BENCHMARK_NAMES[self.benchmark_id]
            raise ValueError(f"tasks come from {theirs} but this env runs {mine}: sample them from this env "
                             "(env.sample_tasks / env.sample_task_split)")
        if not bool(((tasks.split == TRAIN) | (tasks.split == TEST)).all()):
            raise ValueError("tasks.split must be 0 (train) or 1 (test)")
        for split in (TRAIN, TEST):
            sel = tasks.split == split
            index, size = tasks.index[sel], len(self._split_tasks[split])
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
                raise ValueError(f"tasks.index must lie in [0, {size}) for split {split}, got "
                                 f"[{int(index.min())}, {int(index.max())}]")
            if not torch.equal(tasks.name[sel], self._name_ids[split][index]):
                raise ValueError("tasks.name does not match the benchmark's task at tasks.index")

    def task_objects(self, tasks: MetaWorldTasks) -> list:
        """The package's ``metaworld.Task`` objects of ``tasks`` (``env.set_task`` takes them)."""
        tasks = self._as_tasks(tasks, len(tasks))
        return [self._split_tasks[s][i] for s, i in zip(tasks.split.tolist(), tasks.index.tolist())]

    def task_name_of(self, tasks: MetaWorldTasks) -> list[str]:
        """The task name of each task (``"reach-v3"``, ...)."""
        names = task_names()
        return [names[i] for i in tasks.name.tolist()]

    def set_tasks(self, tasks: MetaWorldTasks, env_ids=None) -> None:
        """Give env ``env_ids[j]`` the task ``tasks[j]`` (all envs when ``env_ids`` is None), from the
        env's next reset on (the package places objects and goals at reset; ``reset(options={"tasks":
        ...})`` sets and resets at once)."""
        super().set_tasks(tasks, env_ids)

    def pop_episode_successes(self) -> tuple[int, int]:
        """``(finished, succeeded)``: the episodes that ended (terminated or truncated) since the last call
        (or since the env was made), and how many of them succeeded, the benchmark's episode success
        (``info["success"]`` at any of its steps); both counts restart at 0. Episodes cut by a reset
        are not counted. The learners log ``succeeded / finished`` as their training success rate."""
        out = (self._finished, self._succeeded)
        self._finished = self._succeeded = 0
        return out

    def set_terminate_on_success(self, on: bool) -> None:
        """End episodes at their first successful step (the package's ``toggle_terminate_on_success``)."""
        if not isinstance(on, bool):
            raise TypeError(f"on must be a bool, got {type(on).__name__}")
        self.terminate_on_success = on

    # ------------------------------------------------------------------ the Sawyer envs
    def _new_sawyer(self, name: str):
        return self._classes[name](reward_function_version=self.reward_function_version)

    def sawyer(self, i: int):
        """Env copy ``i``'s package env object (a ``SawyerXYZEnv``; None before its first reset)."""
        return self._envs[i]

    def _reset_copy(self, i: int) -> None:
        """Reset copy ``i`` on its task, swapping in a Sawyer env of the task's class when it changed."""
        split, index = int(self._params[1][i]), int(self._params[2][i])
        task = self._split_tasks[split][index]
        env = self._envs[i]
        if env is None or env.task_name != self._classes[task.env_name].__name__:
            if env is not None:
                self._pool.setdefault(self._class_name(env), []).append(env)
            pool = self._pool.get(task.env_name)
            env = pool.pop() if pool else self._new_sawyer(task.env_name)
            self._envs[i] = env
            self._batch.bind(i, env.model, env.data)
        env.set_task(task)
        obs, _ = env.reset()
        self._obs[i] = obs

    def _class_name(self, env) -> str:
        return next(n for n, c in self._classes.items() if type(env) is c)

    # ------------------------------------------------------------------ reset and step
    def _reset_kernel(self, mask: torch.Tensor) -> torch.Tensor:
        ids = mask.nonzero().flatten().tolist()
        for i in ids:
            self._reset_copy(i)
        self._counter.add_(mask.to(self._counter.dtype))
        self._elapsed.masked_fill_(mask, 0)
        self._needs_reset.masked_fill_(mask, False)
        self._success.masked_fill_(mask, False)
        self._episode_success.masked_fill_(mask, False)
        return torch.from_numpy(self._obs.astype(np.float32))

    def _step_kernel(self, a: torch.Tensor, same_step: bool):
        """``SawyerXYZEnv.step`` of every env (autoreset as gymnasium defines it): the package's
        per-env Python around one batched physics call."""
        n, mode, limit = self.num_envs, self._mode, self.max_episode_steps
        act = a.numpy()
        due = self._needs_reset.clone() if mode == NEXT_STEP else torch.zeros(n, dtype=torch.bool)
        stepped = (~due).nonzero().flatten()
        ids = stepped.tolist()
        reward = np.zeros(n, dtype=np.float64)
        success = np.zeros(n, dtype=np.bool_)
        envs, obs = self._envs, self._obs
        for i in ids:   # the mocap target and gripper control (SawyerXYZEnv.step, do_simulation)
            env = envs[i]
            env.set_xyz_action(act[i, :3])
            env.data.ctrl[:] = (act[i, 3], -act[i, 3])
        self._batch.step(None if len(ids) == n else stepped.to(torch.int32).numpy())
        for i in ids:   # observation, reward and success (SawyerXYZEnv.step after the physics)
            env = envs[i]
            env.curr_path_length += 1
            o = np.clip(env._get_obs(), env.sawyer_observation_space.low, env.sawyer_observation_space.high,
                        dtype=np.float64)
            env._last_stable_obs = o
            r, info = env.evaluate_state(o, act[i])
            obs[i], reward[i], success[i] = o, r, info["success"] == 1.0
        success_t = torch.from_numpy(success)
        terminated = success_t & ~due if self.terminate_on_success else torch.zeros(n, dtype=torch.bool)
        elapsed = self._elapsed + 1
        truncated = (elapsed >= limit) & ~due
        done = terminated | truncated
        episode_success = self._episode_success | success_t
        self._finished += int(done.sum())
        self._succeeded += int((episode_success & done).sum())
        self._episode_success = episode_success & ~done
        final_obs = self._empty_final
        if mode == NEXT_STEP:
            for i in due.nonzero().flatten().tolist():
                self._reset_copy(i)
            elapsed.masked_fill_(due, 0)
            self._counter.add_(due.to(self._counter.dtype))
            self._needs_reset.copy_(done)
        elif mode == SAME_STEP:
            final_obs = torch.from_numpy(np.where(done.numpy()[:, None], obs, 0.0).astype(np.float32))
            for i in done.nonzero().flatten().tolist():
                self._reset_copy(i)
            elapsed.masked_fill_(done, 0)
            self._counter.add_(done.to(self._counter.dtype))
        else:
            assert mode == DISABLED
            self._needs_reset.copy_(done)
        self._elapsed.copy_(elapsed)
        self._success = success_t
        return (torch.from_numpy(obs.astype(np.float32)), torch.from_numpy(reward.astype(np.float32)),
                terminated, truncated, final_obs)

    def step(self, actions):
        """Step every env once: ``(obs, reward, terminated, truncated, info)`` with ``info["success"]``
        ``[N]`` bool beside the base class's keys (see :meth:`TaskVectorEnv.step`)."""
        obs, reward, terminated, truncated, info = super().step(actions)
        info["success"] = self._success.clone()
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------------------ state
    def get_state(self) -> torch.Tensor:
        raise NotImplementedError("the Meta-World families keep their state in the package's env objects; "
                                  "use state_dict() / load_state_dict()")

    def set_state(self, state, env_ids=None) -> None:
        raise NotImplementedError("the Meta-World families keep their state in the package's env objects; "
                                  "use state_dict() / load_state_dict()")

    def state_dict(self) -> dict:
        """Everything to continue bit for bit: the base class's clocks, keys and tasks, and per copy its
        Sawyer env's class, MuJoCo state (``mjSTATE_INTEGRATION``), the model fields the package writes
        at reset (``body_pos``, ``site_pos``) and the env object's plain attributes."""
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        copies = []
        for env in self._envs:
            if env is None:
                copies.append(None)
                continue
            state = np.empty(mujoco.mj_stateSize(env.model, spec))
            mujoco.mj_getState(env.model, env.data, state, spec)
            attrs = {k: _data_view(env.data, v) or _to_plain(v) for k, v in vars(env).items()
                     if isinstance(v, (np.ndarray, np.generic, int, float, bool, str, type(None)))}
            copies.append({"name": self._class_name(env), "state": _to_plain(state),
                           "body_pos": _to_plain(env.model.body_pos), "site_pos": _to_plain(env.model.site_pos),
                           "attrs": attrs})
        return {"num_envs": self.num_envs, "benchmark": self.benchmark_id, "elapsed": self._elapsed.clone(),
                "needs_reset": self._needs_reset.clone(), "counter": self._counter.clone(), "key": self._key.clone(),
                "params": [p.clone() for p in self._params], "was_reset": self._was_reset,
                "obs": _to_plain(self._obs), "success": self._success.clone(),
                "episode_success": self._episode_success.clone(), "episode_counts": (self._finished, self._succeeded),
                "terminate_on_success": self.terminate_on_success, "copies": copies}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict` (same benchmark and N); checked before anything changes."""
        import mujoco

        if not isinstance(sd, dict) or sd.get("num_envs") != self.num_envs or "copies" not in sd:
            raise ValueError(f"state dict is not for this env ({self.num_envs} Meta-World envs)")
        if sd["benchmark"] != self.benchmark_id:
            raise ValueError(f"state dict is for {_BENCHMARK_NAMES.get(sd['benchmark'], 'another benchmark')}, "
                             f"this env runs {_BENCHMARK_NAMES[self.benchmark_id]}")
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        for i, c in enumerate(sd["copies"]):
            if c is None:
                continue
            env = self._envs[i]
            if env is None or self._class_name(env) != c["name"]:
                if env is not None:
                    self._pool.setdefault(self._class_name(env), []).append(env)
                pool = self._pool.get(c["name"])
                env = pool.pop() if pool else self._new_sawyer(c["name"])
                self._envs[i] = env
                self._batch.bind(i, env.model, env.data)
            env.model.body_pos[:] = _from_plain(c["body_pos"])
            env.model.site_pos[:] = _from_plain(c["site_pos"])
            for k, v in c["attrs"].items():
                setattr(env, k, _data_view(env.data, v) if isinstance(v, tuple) else _from_plain(v))
            mujoco.mj_setState(env.model, env.data, _from_plain(c["state"]), spec)
            mujoco.mj_forward(env.model, env.data)
        for dst, src in ((self._elapsed, sd["elapsed"]), (self._needs_reset, sd["needs_reset"]),
                         (self._counter, sd["counter"]), (self._key, sd["key"]), *zip(self._params, sd["params"])):
            dst.copy_(src)
        self._obs[:] = _from_plain(sd["obs"])
        self._success = sd["success"].clone()
        self._episode_success = sd.get("episode_success", torch.zeros_like(self._success)).clone()
        self._finished, self._succeeded = sd.get("episode_counts", (0, 0))
        self._was_reset = bool(sd["was_reset"])
        self.terminate_on_success = bool(sd["terminate_on_success"])

    def close_extras(self, **kwargs):
        if getattr(self, "_batch", None) is not None:
            self._batch.close()
        for env in [*getattr(self, "_envs", []), *(e for p in self._pool.values() for e in p)]:
            if env is not None:
                env.close()
        self._envs, self._pool = [], {}


def _to_plain(v):
    """A copy of a state-dict value that ``torch.load(weights_only=True)`` reads (metarl's checkpoints):
    a NumPy array -> a tensor of its dtype, a NumPy scalar -> ``{"numpy_scalar": dtype, "value": v}``."""
    if isinstance(v, np.ndarray):
        return torch.from_numpy(v.copy())
    if isinstance(v, np.generic):
        return {"numpy_scalar": v.dtype.str, "value": v.item()}
    return copy.deepcopy(v)


def _from_plain(v):
    """The inverse of :func:`_to_plain` (arrays and scalars as the package keeps them)."""
    if isinstance(v, torch.Tensor):
        return v.numpy().copy()
    if isinstance(v, dict) and set(v) == {"numpy_scalar", "value"}:
        return np.dtype(v["numpy_scalar"]).type(v["value"])
    return copy.deepcopy(v)


_VIEWED_FIELDS = ("xpos", "xquat", "xmat", "xipos", "site_xpos", "site_xmat", "geom_xpos", "geom_xmat",
                  "qpos", "qvel", "mocap_pos", "mocap_quat")


def _data_view(data, v):
    """Attributes that are live views into ``MjData`` (the package keeps ``init_left_pad`` /
    ``init_right_pad`` as ``data.body(...).xpos`` views, so they follow the simulation): an array
    -> ``(field, element offset, shape, strides)`` (None for other values); such a tuple -> the same
    view into ``data``."""
    if isinstance(v, tuple):
        field, offset, shape, strides = v
        return np.lib.stride_tricks.as_strided(getattr(data, field).reshape(-1)[offset:], shape, strides)
    if not isinstance(v, np.ndarray) or v.base is None:
        return None
    for field in _VIEWED_FIELDS:
        arr = getattr(data, field)
        if np.shares_memory(v, arr):
            offset = (v.__array_interface__["data"][0] - arr.__array_interface__["data"][0]) // arr.itemsize
            return field, offset, v.shape, v.strides
    return None


class ML1VecEnv(MetaWorldVecEnv):
    """ML1: one task name (``task_name=``, default ``"reach-v3"``), 50 train goals (``benchmark_seed``)
    and 50 test goals (``benchmark_seed + 1``)."""

    benchmark_name = "ML1"

    def __init__(self, num_envs: int, *, task_name: str = "reach-v3", **kwargs):
        super().__init__(num_envs, task_name=task_name, **kwargs)


class ML10VecEnv(MetaWorldVecEnv):
    """ML10: 10 train task names, 5 held-out test task names, 50 goals each."""

    benchmark_name = "ML10"


class ML25VecEnv(MetaWorldVecEnv):
    """ML25: 25 train task names, 5 held-out test task names, 50 goals each."""

    benchmark_name = "ML25"


class ML45VecEnv(MetaWorldVecEnv):
    """ML45: 45 train task names, 5 held-out test task names, 50 goals each."""

    benchmark_name = "ML45"


# ----------------------------------------------------------------------------- the benchmark's metric
META_BATCH_SIZE = 20
"""the package's ``meta_batch_size`` default: test envs per evaluation"""
META_TEST_TASKS = 200
"""test tasks of the package's default meta-test: 20 envs x ``num_evals=10`` evaluations"""


def make_meta_test_env(env_id: str, benchmark_seed: int, *, num_tasks: int | None = None,
                       max_episode_steps: int | None = None, seed: int = 0, device="cpu",
                       **kwargs) -> tuple[MetaWorldVecEnv, int]:
    """The benchmark's meta-test vector env for :func:`metalearning_evaluation` and its ``num_evals``.

    ``num_tasks`` test tasks in all (default :data:`META_TEST_TASKS`, the package's 20 envs x 10
    evaluations): ``num_evals = ceil(num_tasks / envs)`` evaluations of ``envs = min(20, num_tasks)``
    env copies, rounded up to a multiple of the benchmark's test task names. ``benchmark_seed``: the
    training env's (its test tasks are the benchmark's held-out ones for that seed). Episodes last
    ``max_episode_steps`` (default the benchmark's 500). ``kwargs`` go to ``metarl.make_vec``
    (``task_name`` for ML1)."""
    if not isinstance(env_id, str) or not env_id.startswith("MetaWorld-"):
        raise ValueError(f"env_id must be a Meta-World id (MetaWorld-ML1-v0, ...), got {env_id!r}")
    n = META_TEST_TASKS if num_tasks is None else num_tasks
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
    import metarl

    benchmark = env_id.split("-")[1]
    task_name = kwargs.get("task_name", "reach-v3") if benchmark == "ML1" else None
    names = len(load_benchmark(benchmark, task_name, check_seed(benchmark_seed, "benchmark_seed")).test_classes)
    envs = -(-min(META_BATCH_SIZE, n) // names) * names
    env = metarl.make_vec(env_id, envs, autoreset_mode="same_step", seed=seed, benchmark_seed=benchmark_seed,
                          max_episode_steps=max_episode_steps or MAX_PATH_LENGTH, device=device, **kwargs)
    return env, -(-n // envs)


def meta_test_report(env_id: str, env_options: dict, make_agent: Callable, *, benchmark_seed: int,
                     num_tasks: int | None = None, max_episode_steps: int | None = None, seed: int = 12345,
                     device="cpu", adaptation_episodes: int = 10, evaluation_episodes: int = 3) -> dict:
    """The benchmark's metric for a learner: :func:`make_meta_test_env` from the training env's
    ``env_options`` (``benchmark_seed`` unless they set it; ``terminate_on_success`` is the protocol's),
    ``agent = make_agent(env, generator)``, then :func:`metalearning_evaluation`. Returns ``{"eval":
    {"success_rate", "return", "success_rate_per_task", "return_per_task", "num_evals", "num_envs",
    "adaptation_episodes", "evaluation_episodes", "episode_steps"}}``."""
    options = dict(env_options)
    options.pop("terminate_on_success", None)
    env, num_evals = make_meta_test_env(env_id, options.pop("benchmark_seed", benchmark_seed), num_tasks=num_tasks,
                                        max_episode_steps=max_episode_steps, seed=seed, device=device, **options)
    agent = make_agent(env, torch.Generator(device=device).manual_seed(seed))
    out = metalearning_evaluation(env, agent, num_evals=num_evals, adaptation_episodes=adaptation_episodes,
                                  evaluation_episodes=evaluation_episodes, seed=seed)
    out.update(num_envs=env.num_envs, adaptation_episodes=adaptation_episodes,
               evaluation_episodes=evaluation_episodes, episode_steps=env.max_episode_steps)
    env.close()
    return {"eval": out}


def metalearning_evaluation(env: MetaWorldVecEnv, agent, *, num_evals: int = 10, adaptation_steps: int = 1,
                            adaptation_episodes: int = 10, evaluation_episodes: int = 3, seed: int = 0,
                            on_step: Callable | None = None) -> dict:
    """The Meta-World+ meta-test metric (``metaworld.evaluation.metalearning_evaluation``, same defaults).

    ``env`` must use ``autoreset_mode="same_step"`` and have ``num_envs`` divisible by the number of
    test task names (the package's ``meta_batch_size``; 20 in its defaults). Envs are laid out as the
    package's test vector env (:meth:`MetaWorldVecEnv.test_tasks_per_env`): each cycles through its
    own test tasks in an order shuffled anew at each wrap (the package's pseudorandom task selector).
    For each of ``num_evals`` evaluations: every env takes its next task; ``agent.init()``; then
    ``adaptation_steps`` rounds, each running every env until it has finished ``adaptation_episodes``
    episodes (no termination on success; ``agent.adapt_action(obs)`` acts, ``agent.step(obs, action,
    reward, terminated, truncated)`` sees each transition) and ending in ``agent.adapt()``; then, with
    termination on success, ``agent.reset(mask)`` at episode ends and ``agent.eval_action(obs)``
    acting and ``agent.step`` seeing each transition (the package gives an RL^2 agent the same through
    its observation, ``recurrent_info_in_obs``; an agent that adapts only in ``adapt`` ignores them),
    episodes until every task name has finished ``evaluation_episodes``; the first
    ``evaluation_episodes`` episodes to finish of each task name count, an episode succeeding when
    its last step's ``success`` is 1 (with termination on success: when any step succeeded).

    The agent (tensors on ``env.device``, obs ``[N, 39]``, actions ``[N, 4]``): ``init()``,
    ``adapt_action(obs) -> actions``, ``step(obs, actions, reward, terminated, truncated)``,
    ``adapt()``, ``eval_action(obs) -> actions``, ``reset(mask [N] bool)``.

    Returns ``{"success_rate": mean over evaluations of the mean over test task names,
    "return": mean episode return (the same episodes), "success_rate_per_task": {name: rate},
    "return_per_task": {name: mean return}, "num_evals": num_evals}``. ``on_step(env_steps)`` is
    called after every env step (progress bars).
    """
    if not isinstance(env, MetaWorldVecEnv):
        raise TypeError(f"env must be a MetaWorldVecEnv (metarl.make_vec('MetaWorld-...')), got {type(env).__name__}")
    if env.metadata["autoreset_mode"] != gym.vector.AutoresetMode.SAME_STEP:
        raise ValueError("env must use autoreset_mode='same_step' (as the package's evaluation envs)")
    for arg, v in (("num_evals", num_evals), ("adaptation_steps", adaptation_steps),
                   ("adaptation_episodes", adaptation_episodes), ("evaluation_episodes", evaluation_episodes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{arg} must be a positive int, got {v!r}")
    per_env = env.test_tasks_per_env()
    n = env.num_envs
    g = torch.Generator().manual_seed(check_seed(seed))
    orders = [list(t) for t in per_env]
    cursor = [-1] * n
    names = env.test_names
    env_names = [names[i // (n // len(names))] for i in range(n)]
    terminate = env.terminate_on_success
    sums = {name: 0.0 for name in names}
    rets = {name: 0.0 for name in names}
    total_success, total_return = 0.0, 0.0
    steps = 0
    try:
        for _ in range(num_evals):
            # every env takes its next task (reshuffling its list at each wrap, as the package's selector)
            index = []
            for i in range(n):
                cursor[i] = (cursor[i] + 1) % len(orders[i])
                if cursor[i] == 0:
                    orders[i] = [orders[i][j] for j in torch.randperm(len(orders[i]), generator=g).tolist()]
                index.append(orders[i][cursor[i]])
            tasks = env._tasks(TEST, torch.tensor(index, dtype=torch.int64))
            agent.init()
            env.set_terminate_on_success(False)
            for _ in range(adaptation_steps):
                obs, _ = env.reset(options={"tasks": tasks})
                episodes = torch.zeros(n, dtype=torch.int64)
                while bool((episodes < adaptation_episodes).any()):
                    actions = agent.adapt_action(obs)
                    next_obs, reward, terminated, truncated, _ = env.step(actions)
                    agent.step(obs, actions, reward, terminated, truncated)
                    episodes += terminated | truncated
                    obs = next_obs
                    steps += n
                    if on_step is not None:
                        on_step(steps)
                agent.adapt()
            # evaluation: the first `evaluation_episodes` finished episodes of each task name
            env.set_terminate_on_success(True)
            obs, _ = env.reset()
            agent.reset(torch.ones(n, dtype=torch.bool))
            ep_return = torch.zeros(n, dtype=torch.float64)
            finished: dict[str, list[tuple[float, bool]]] = {name: [] for name in names}
            while any(len(f) < evaluation_episodes for f in finished.values()):
                actions = agent.eval_action(obs)
                next_obs, reward, terminated, truncated, info = env.step(actions)
                agent.step(obs, actions, reward, terminated, truncated)
                obs = next_obs
                ep_return += reward.to(torch.float64)
                done = terminated | truncated
                agent.reset(done)
                for i in done.nonzero().flatten().tolist():
                    finished[env_names[i]].append((float(ep_return[i]), bool(info["success"][i])))
                ep_return[done] = 0.0
                steps += n
                if on_step is not None:
                    on_step(steps)
            rate = {name: sum(s for _, s in f[:evaluation_episodes]) / evaluation_episodes
                    for name, f in finished.items()}
            ret = {name: sum(r for r, _ in f[:evaluation_episodes]) / evaluation_episodes
                   for name, f in finished.items()}
            for name in names:
                sums[name] += rate[name]
                rets[name] += ret[name]
            total_success += sum(rate.values()) / len(rate)
            total_return += sum(ret.values()) / len(ret)
    finally:
        env.set_terminate_on_success(terminate)
    return {"success_rate": total_success / num_evals, "return": total_return / num_evals,
            "success_rate_per_task": {name: sums[name] / num_evals for name in names},
            "return_per_task": {name: rets[name] / num_evals for name in names}, "num_evals": num_evals}
