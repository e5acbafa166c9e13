"""Meta-RL trials (RL^2): n episodes of one task, then a new task, per env copy."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from metarl.envs.base import TaskVectorEnv, check_seed
from metarl.envs.gym_adapter import GymnasiumTaskVecEnv
from metarl.envs.tasks import Tasks
from metarl.kernels.rl2_inputs import rl2_inputs


class TrialWrapper(gym.vector.VectorWrapper):
    """Run trials of ``episodes_per_trial`` episodes, each on one task, and build RL^2 inputs.

    The observation is the RL^2 policy input ``[N, obs_dim + action_dim + 2]``:
    ``[obs, one_hot(prev_action) (Discrete) or prev_action (Box), prev_reward, prev_done]``,
    with the ``prev_*`` part zero at a trial start. ``info["trial_start"]`` (bool ``[N]``)
    marks observations that begin a new trial (the policy resets its memory there);
    ``terminated``/``truncated`` keep their per-episode meaning.

    The wrapped env must use ``autoreset_mode="same_step"`` so that every step is a
    real transition. At a trial start each env gets a new task: sampled from the
    env's task distribution, or drawn uniformly from ``tasks`` when given (e.g. a
    meta-test set from ``env.sample_task_split``).

    Example::

        >>> import metarl, torch
        >>> from metarl.envs import TrialWrapper
        >>> env = TrialWrapper(metarl.make_vec("Bandit-v0", 4, arms=5, autoreset_mode="same_step"),
        ...                    episodes_per_trial=10)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, bool(info["trial_start"].all())
        (torch.Size([4, 8]), True)
    """

    def __init__(self, env: TaskVectorEnv | GymnasiumTaskVecEnv, episodes_per_trial: int, *,
                 tasks: Tasks | None = None):
        super().__init__(env)
        base = env.unwrapped if hasattr(env, "unwrapped") else env
        if not isinstance(base, (TaskVectorEnv, GymnasiumTaskVecEnv)):
            raise TypeError(f"TrialWrapper needs a metarl TaskVectorEnv or GymnasiumTaskVecEnv, "
                            f"got {type(base).__name__}")
        if base.metadata["autoreset_mode"] != AutoresetMode.SAME_STEP:
            raise ValueError("TrialWrapper needs autoreset_mode='same_step' "
                             "(metarl.make_vec(..., autoreset_mode='same_step')) so every step is a transition")
        if not isinstance(episodes_per_trial, int) or episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be a positive int, got {episodes_per_trial!r}")
        if tasks is not None:
            base._as_tasks(tasks, len(tasks), name="tasks")
        self.base = base
        self.device = base.device
        self.episodes_per_trial = episodes_per_trial
        self.task_set = None if tasks is None else tasks.to("cpu")
        self._generator = torch.Generator()
        self.shard = (0, 1)
        """``(index, count)``: this env holds rows ``[index·N, (index+1)·N)`` of a batch of ``count·N``
        copies (a data-parallel rank's, :mod:`metarl.distributed`): each draw of ``n`` tasks draws
        ``count·n`` and keeps those rows, which equals the whole batch's draw where trials end together."""
        n, dev = base.num_envs, base.device
        act = base.single_action_space
        self._discrete = isinstance(act, gym.spaces.Discrete)
        self.action_dim = int(act.n) if self._discrete else int(np.prod(act.shape))
        obs_dim = base.obs_dim
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim + self.action_dim + 2,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, n)
        self._episodes = torch.zeros(n, dtype=torch.int64, device=dev)

    # ------------------------------------------------------------------ tasks
    def _draw_tasks(self, n: int) -> Tasks:
        index, count = self.shard
        if self.task_set is None:
            tasks = self.base.sample_tasks(n * count, generator=self._generator)
        else:
            tasks = self.task_set[torch.randint(0, len(self.task_set), (n * count,), generator=self._generator)]
        return tasks if count == 1 else tasks[index * n:(index + 1) * n]

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new trial in every env (new tasks). Returns ``(rl2_obs, info)``.

        ``options={"tasks": tasks}`` starts env ``i`` on ``tasks[i]`` (e.g. a held-out set from
        ``sample_task_split``) instead of drawing; later trials draw as usual.
        """
        options = dict(options or {})
        first = options.pop("tasks", None)
        if options:
            raise ValueError(f"TrialWrapper.reset takes only the option 'tasks', got {sorted(options)}")
        if seed is not None:
            seed = check_seed(seed)
        if first is not None:
            self.base._as_tasks(first, self.base.num_envs)
        self._generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
        if first is None:
            first = self._draw_tasks(self.base.num_envs)
        obs, info = self.base.reset(seed=seed, options={"tasks": first})
        self._episodes.zero_()
        start = torch.ones(self.base.num_envs, dtype=torch.bool, device=self.base.device)
        return self._rl2_obs(obs, None, None, None, start), {**info, "trial_start": start}

    def step(self, actions):
        """Step; envs whose trial ended get a new task and a fresh episode in the same call."""
        obs, reward, terminated, truncated, info = self.base.step(actions)
        done = terminated | truncated
        self._episodes += done
        trial_end = self._episodes >= self.episodes_per_trial
        new_obs = self.start_trials(trial_end)
        obs = obs if new_obs is None else new_obs
        info = {**info, "trial_start": trial_end}
        return self._rl2_obs(obs, actions, reward, done, trial_end), reward, terminated, truncated, info

    def state_dict(self) -> dict:
        """The base env's :meth:`~metarl.envs.TaskVectorEnv.state_dict`, the episode counts of the
        current trials and the task generator's state (for checkpoints)."""
        return {"base": self.base.state_dict(), "episodes": self._episodes.cpu().clone(),
                "generator": self._generator.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        if not isinstance(sd, dict) or set(sd) != {"base", "episodes", "generator"}:
            raise ValueError("not a TrialWrapper state dict")
        if sd["episodes"].shape != self._episodes.shape:
            raise ValueError("state dict is for another number of envs")
        self.base.load_state_dict(sd["base"])
        self._episodes.copy_(sd["episodes"])
        self._generator.set_state(sd["generator"])

    @property
    def episodes(self) -> torch.Tensor:
        """Episodes finished in each env's current trial, ``[N]`` int64: the live counter (a fused
        rollout advances it in place; :meth:`start_trials` zeroes it)."""
        return self._episodes

    def start_trials(self, trial_end: torch.Tensor) -> torch.Tensor | None:
        """New tasks and fresh episodes for the envs where ``trial_end`` ([N] bool); returns the
        base env's observation ``[N, ...]`` after that, or ``None`` when no trial ended. :meth:`step`
        does this itself; a fused rollout that steps the base env calls it at trial ends."""
        ids = trial_end.nonzero().flatten()
        if not ids.numel():
            return None
        obs, _ = self.base.reset(options={"tasks": self._draw_tasks(int(ids.numel())), "env_ids": ids.cpu()})
        self._episodes[ids] = 0
        return obs

    def _rl2_obs(self, obs, actions, reward, done, start) -> torch.Tensor:
        n = obs.shape[0]
        if actions is None:  # a reset: every env starts a trial, the prev part is zero
            out = torch.zeros((n, self.single_observation_space.shape[0]), dtype=torch.float32, device=obs.device)
            out[:, :self.base.obs_dim] = obs.reshape(n, -1)
            return out
        actions = torch.as_tensor(actions, device=obs.device).detach()   # actions are data, as in the env
        return rl2_inputs(obs, actions, reward, done, start, self.action_dim, self._discrete)
