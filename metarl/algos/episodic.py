"""What the episodic-control learners (:mod:`metarl.algos.mfec`, :mod:`metarl.algos.nec`) share.

Both act ε-greedily on per-action value estimates read from episodic memories, on a batched
single-task env (a metarl vector env with Discrete actions and vector observations:
CartPole-v1, Acrobot-v1, MountainCar-v0), so the pieces here are about the run, not the
algorithm:

- :func:`make_env`, :func:`check_env` — the vector env (``same_step`` autoreset, so an episode's
  last observation is at hand in ``info["final_obs"]``);
- :func:`epsilon_at`, :func:`epsilon_greedy` — the linear ε schedule and the action choice
  (greedy ties broken uniformly at random, every random number from one ``torch.Generator``);
- :class:`EpisodeStats` — per-env running returns and the record of finished episodes
  ``(env steps at the end, return)``, which the logs, the summary and ``bench/episodic.py``
  read;
- :func:`evaluate_returns` — one episode on each of ``num_episodes`` env copies with a
  given action-value function (or uniformly random actions: the "random" baseline);
- :func:`index_to_tensor` / :func:`index_from_tensor` — a :class:`~metarl.memory.FlatIndex`
  inside a checkpoint (its own atomic, checksummed file format, carried as bytes);
- :func:`train_loop` — progress bar, ``progress.csv``, TensorBoard, ``config.json``, periodic /
  final / Ctrl-C checkpoints, exact resume and the summary, around a learner object that
  knows how to take one vector step.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import torch

import metarl
from metarl import checkpoint
from metarl.algos._run import CHECKPOINT, CONFIG_JSON, ProgressLog, check_positive_ints, load_for_resume
from metarl.algos.rl2 import _progress, _tensorboard, mean_se
from metarl.memory import FlatIndex

RETURN_WINDOW = 20          # finished episodes averaged into progress.csv's episode_return
EVAL_MAX_STEPS = 100_000    # evaluate_returns gives up after this many steps (envs without a time limit)


# ----------------------------------------------------------------------------- config checks
def check_range(cfg, name: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo < v <= hi if lo_open else lo <= v <= hi):
        raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")


def check_common(cfg) -> None:
    """The fields MFEC and NEC configs share."""
    check_env(cfg.env)
    check_positive_ints(cfg, "num_envs", "total_env_steps", "log_every", "eval_episodes")
    if isinstance(cfg.epsilon_decay_steps, bool) or not isinstance(cfg.epsilon_decay_steps, int) \
            or cfg.epsilon_decay_steps < 0:
        raise ValueError(f"epsilon_decay_steps must be an int >= 0, got {cfg.epsilon_decay_steps!r}")
    for name in ("epsilon_start", "epsilon_end", "gamma"):
        check_range(cfg, name, 0.0, 1.0)
    if cfg.checkpoint_minutes <= 0:
        raise ValueError(f"checkpoint_minutes must be positive, got {cfg.checkpoint_minutes}")


def check_env(env_id: str) -> None:
    """``ValueError`` unless ``env_id`` is a metarl env with Discrete actions and vector observations."""
    if env_id not in metarl.envs.ENV_CLASSES:
        raise ValueError(f"env must be one of {sorted(metarl.envs.ENV_CLASSES)}, got {env_id!r}")
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


# ----------------------------------------------------------------------------- the run
def iteration_sizes(cfg) -> tuple[int, int]:
    """``(vector steps per iteration, iterations)``: one progress row per ``log_every`` env steps."""
    steps = max(1, cfg.log_every // cfg.num_envs)
    return steps, max(1, cfg.total_env_steps // (steps * cfg.num_envs))


def train_loop(kind: str, cfg, learner, run_dir=None, *, resume: bool = False, progress: bool = True,
               max_iterations: int | None = None) -> dict:
    """Run ``learner`` (an object with ``stats`` (:class:`EpisodeStats`), ``step()`` — one vector env
    step and whatever learning it implies —, ``columns`` and ``log_values()`` — the extra
    progress.csv columns —, ``state_dict()`` / ``load_state_dict()`` and ``report(num_episodes)``)
    for ``cfg.total_env_steps`` env steps, with the files and behaviour of
    :func:`metarl.algos.rl2.train` (see :func:`metarl.algos.mfec.train`). Returns the summary."""
    run_dir = Path(run_dir) if run_dir is not None else None
    steps, iterations = iteration_sizes(cfg)
    per_iteration = steps * cfg.num_envs
    it = 0
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            ck = load_for_resume(run_dir, kind, cfg)
            learner.load_state_dict(ck["learner"])
            it = int(ck["iteration"])
        (run_dir / CONFIG_JSON).write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    elif resume:
        raise ValueError("resume=True needs the run_dir to resume from")
    columns = ["iteration", "env_steps", "episode_return", "episodes", "epsilon", *learner.columns,
               "env_steps_per_s"]
    writer = _tensorboard(run_dir)
    log = ProgressLog(run_dir, columns, keep_through=it if resume else None)
    bar = _progress(progress, iterations, it)

    def save():
        checkpoint.save(run_dir / CHECKPOINT, {"config": dataclasses.asdict(cfg), "iteration": it,
                                               "learner": learner.state_dict()}, kind=kind)

    start = last_ckpt = time.perf_counter()
    steps_done = 0
    interrupted = False
    try:
        while it < iterations and (max_iterations is None or it < max_iterations):
            for _ in range(steps):
                learner.step()
            it += 1
            steps_done += per_iteration
            rate = steps_done / (time.perf_counter() - start)
            mean_ret = learner.stats.recent_mean()
            row = [it, it * per_iteration, mean_ret, len(learner.stats.returns),
                   epsilon_at(cfg, it * per_iteration), *learner.log_values(), rate]
            log.write(row)
            if writer is not None:
                for name, val in zip(columns[2:], row[2:]):
                    writer.add_scalar(name, val, it * per_iteration)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(episode_return=f"{mean_ret:.1f}", steps_per_s=f"{rate:.3g}")
            if run_dir is not None and time.perf_counter() - last_ckpt > 60 * cfg.checkpoint_minutes:
                save()
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if run_dir is not None:
            save()
        if bar is not None:
            bar.close()
        log.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    summary = {"iterations": it, "env_steps": it * per_iteration, "train_seconds": seconds,
               "env_steps_per_s": steps_done / max(1e-9, seconds), "interrupted": interrupted,
               "episodes": len(learner.stats.returns), "final_episode_return": learner.stats.recent_mean()}
    if not interrupted and it >= iterations:
        summary["eval"] = learner.report()
    if run_dir is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    # every finished training episode, for learning curves (not in summary.json: it can be long)
    summary["episode_end_steps"] = list(learner.stats.end_steps)
    summary["episode_returns"] = list(learner.stats.returns)
    return summary


__all__ = ["EpisodeStats", "epsilon_at", "epsilon_greedy", "evaluate_returns", "report_returns", "steps_to_reach",
           "train_loop", "make_env", "check_env", "index_to_tensor", "index_from_tensor"]
