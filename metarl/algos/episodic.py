"""The shared pieces of episodic control (:mod:`metarl.algos.mfec`, :mod:`metarl.algos.nec`); not a
learner. (Episodic meta-RL, :mod:`metarl.algos.episodic_rl2`, is another idea and uses none of this.)

Both act ε-greedily on per-action value estimates read from episodic memories, on a batched
single-task env (a metarl vector env with Discrete actions and vector observations:
CartPole-v1, Acrobot-v1, MountainCar-v0), and both run through the run harness
(:mod:`metarl.algos.harness`) with one iteration = one ``progress.csv`` row = ``log_every`` env
steps. So the pieces here are about acting, counting and evaluating, not the memories' rules:

- :func:`make_env`, :func:`check_env` — the vector env (``same_step`` autoreset, so an episode's
  last observation is at hand in ``info["final_obs"]``);
- :func:`epsilon_at`, :func:`epsilon_greedy` — the linear ε schedule and the action choice
  (greedy ties broken uniformly at random, every random number from one ``torch.Generator``);
- :class:`EpisodeStats` — per-env running returns and the record of finished episodes
  ``(env steps at the end, return)``, which the progress rows (:meth:`EpisodeStats.row`), the
  summary (:meth:`EpisodeStats.summary`) and ``bench/episodic.py`` (:func:`steps_to_reach`) read;
- :func:`iteration_sizes` — vector steps per iteration and iterations of a config;
- :func:`evaluate_returns`, :func:`report_returns` — one episode on each of ``num_episodes`` env
  copies with a given action-value function (or uniformly random actions: the "random" baseline);
- :func:`index_to_tensor` / :func:`index_from_tensor` — a :class:`~metarl.memory.FlatIndex`
  inside a checkpoint (its own atomic, checksummed file format, carried as bytes).
"""
from __future__ import annotations

import os
import tempfile

import gymnasium as gym
import torch

import metarl
from metarl.algos.pg import mean_se
from metarl.memory import FlatIndex

RETURN_WINDOW = 20          # finished episodes averaged into progress.csv's episode_return
EVAL_MAX_STEPS = 100_000    # evaluate_returns gives up after this many steps (envs without a time limit)


# ----------------------------------------------------------------------------- the env
def check_env(env_id: str) -> None:
    """``ValueError`` unless ``env_id`` (a registered metarl env id) has Discrete actions and vector
    observations (the configs' ``check``)."""
    env = metarl.make_vec(env_id, 1, seed=0)
    if not isinstance(env.single_action_space, gym.spaces.Discrete):
        raise ValueError(f"env {env_id!r} has {env.single_action_space} actions; episodic control needs "
                         "Discrete actions (CartPole-v1, Acrobot-v1, MountainCar-v0)")
    if len(env.single_observation_space.shape) != 1:
        raise ValueError(f"env {env_id!r} has observations of shape {env.single_observation_space.shape}; "
                         "episodic control here needs vectors")


def make_env(cfg, num_envs: int | None = None, seed: int | None = None):
    return metarl.make_vec(cfg.env, num_envs or cfg.num_envs, autoreset_mode="same_step", device=cfg.device,
                           seed=cfg.seed if seed is None else seed)


# ----------------------------------------------------------------------------- acting
def epsilon_at(cfg, env_steps: int) -> float:
    """Linear from ``epsilon_start`` to ``epsilon_end`` over the first ``epsilon_decay_steps`` env steps."""
    if cfg.epsilon_decay_steps == 0:
        return cfg.epsilon_end
    frac = min(1.0, env_steps / cfg.epsilon_decay_steps)
    return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)


def epsilon_greedy(q: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """Actions ``[N]`` int64 for values ``q [N, A]``: the argmax (ties broken uniformly at random;
    ``+inf`` marks an action to try first), or with probability ``epsilon`` a uniform action."""
    n, a = q.shape
    u = torch.rand((n, a + 1), generator=generator, device=q.device)
    best = q == q.max(1, keepdim=True).values
    greedy = torch.where(best, u[:, :a], -1.0).argmax(1)
    explore = u[:, a] < epsilon
    # the random action reuses the tie-break draws (an argmax of uniforms is uniform)
    return torch.where(explore, u[:, :a].argmax(1), greedy)


class EpisodeStats:
    """Per-env running returns, and every finished episode as ``(env steps at its end, return)``."""

    def __init__(self, num_envs: int, device="cpu"):
        self.running = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.end_steps: list[int] = []
        self.returns: list[float] = []

    def update(self, reward: torch.Tensor, done: torch.Tensor, env_steps: int) -> None:
        """Add one vector step's rewards; ``env_steps`` is the count after this step (all envs)."""
        self.running += reward
        if bool(done.any()):
            finished = self.running[done].tolist()
            self.returns.extend(finished)
            self.end_steps.extend([env_steps] * len(finished))
            self.running[done] = 0.0

    def recent_mean(self, window: int = RETURN_WINDOW) -> float:
        tail = self.returns[-window:]
        return sum(tail) / len(tail) if tail else float("nan")

    def row(self, cfg, env_steps: int) -> dict:
        """The progress values every episodic-control learner logs: ``episode_return`` (mean of the
        last :data:`RETURN_WINDOW` episodes), ``episodes`` (finished so far) and ``epsilon`` now."""
        return {"episode_return": self.recent_mean(), "episodes": len(self.returns),
                "epsilon": epsilon_at(cfg, env_steps)}

    def summary(self) -> dict:
        """What ``train`` adds to the harness's summary: ``episodes``, ``final_episode_return`` and every
        finished training episode as ``episode_end_steps`` / ``episode_returns`` (learning curves)."""
        return {"episodes": len(self.returns), "final_episode_return": self.recent_mean(),
                "episode_end_steps": list(self.end_steps), "episode_returns": list(self.returns)}

    def state_dict(self) -> dict:
        return {"running": self.running.cpu(), "end_steps": list(self.end_steps), "returns": list(self.returns)}

    def load_state_dict(self, sd: dict) -> None:
        self.running.copy_(sd["running"])
        self.end_steps, self.returns = list(sd["end_steps"]), list(sd["returns"])


def steps_to_reach(end_steps, returns, threshold: float, window: int = 10) -> int | None:
    """The env steps at which the mean return of the last ``window`` finished episodes first reaches
    ``threshold`` (None: never). The metric ``bench/episodic.py`` reports for every learner."""
    for i in range(window - 1, len(returns)):
        if sum(returns[i - window + 1:i + 1]) / window >= threshold:
            return int(end_steps[i])
    return None


# ----------------------------------------------------------------------------- runs and evaluation
def iteration_sizes(cfg) -> tuple[int, int]:
    """``(vector steps per iteration, iterations)``: one progress row per ``log_every`` env steps."""
    steps = max(1, cfg.log_every // cfg.num_envs)
    return steps, max(1, cfg.total_env_steps // (steps * cfg.num_envs))


@torch.no_grad()
def evaluate_returns(q_fn, cfg, num_episodes: int, seed: int = 12345, epsilon: float = 0.0) -> torch.Tensor:
    """One episode on each of ``num_episodes`` env copies (seeded with ``seed``): returns ``[num_episodes]``.

    ``q_fn(obs [n, obs_dim]) -> [n, A]`` values (ε-greedy on them), or None: uniform random actions."""
    env = make_env(cfg, num_episodes, seed=seed)
    obs, _ = env.reset(seed=seed)
    g = torch.Generator(device=cfg.device).manual_seed(seed)
    num_actions = env.single_action_space.n
    total = torch.zeros(num_episodes, dtype=torch.float64, device=cfg.device)
    running = torch.ones(num_episodes, dtype=torch.bool, device=cfg.device)
    actions = torch.zeros(num_episodes, dtype=torch.int64, device=cfg.device)
    for _ in range(EVAL_MAX_STEPS):
        if q_fn is None:
            actions = torch.randint(num_actions, (num_episodes,), generator=g, device=cfg.device)
        else:
            actions.zero_()
            actions[running] = epsilon_greedy(q_fn(obs[running]), epsilon, g)
        obs, reward, terminated, truncated, _ = env.step(actions)
        total += torch.where(running, reward.double(), 0.0)
        running &= ~(terminated | truncated)
        if not bool(running.any()):
            break
    return total.cpu()


def report_returns(name: str, q_fn, cfg, num_episodes: int | None = None, seed: int = 12345) -> dict:
    """``{name: (mean, se), "random": (mean, se)}`` over the same evaluation episodes."""
    num_episodes = num_episodes or cfg.eval_episodes
    return {name: mean_se(evaluate_returns(q_fn, cfg, num_episodes, seed)),
            "random": mean_se(evaluate_returns(None, cfg, num_episodes, seed))}


# ----------------------------------------------------------------------------- memories in checkpoints
def index_to_tensor(index: FlatIndex) -> torch.Tensor:
    """The bytes of ``index.save(...)`` as a uint8 tensor (goes inside a checkpoint)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "index")
        index.save(path)
        with open(path, "rb") as f:
            data = bytearray(f.read())
    return torch.frombuffer(data, dtype=torch.uint8).clone()


def index_from_tensor(data: torch.Tensor, *, device="cpu", backend=None) -> FlatIndex:
    """Inverse of :func:`index_to_tensor` (the memory's own checks run: ``ValueError`` if damaged)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "index")
        with open(path, "wb") as f:
            f.write(data.numpy().tobytes())
        return FlatIndex.load(path, device=device, backend=backend)


__all__ = ["EpisodeStats", "epsilon_at", "epsilon_greedy", "evaluate_returns", "report_returns", "steps_to_reach",
           "iteration_sizes", "make_env", "check_env", "index_to_tensor", "index_from_tensor"]
