"""Model-free episodic control (Blundell et al. 2016, "Model-free episodic control").

Per action ``a`` a table ``Q_EC(φ(s), a)`` held in a :class:`~metarl.memory.FlatIndex` (exact L2,
least-recently-used eviction at ``capacity``) with the values beside it; ``φ`` is a fixed
Gaussian random projection of the observation to ``projection_dim`` dimensions.

* **estimate**: a key stored in memory ``a`` (bitwise equal) answers its value; any other key
  the mean value of its ``k`` nearest keys (k = 11). An action whose memory is still empty
  answers ``+inf`` (tried first).
* **act**: ε-greedy on the estimates (:func:`metarl.algos.episodic.epsilon_greedy`).
* **update**, after each episode, for every step ``t``:
  ``Q_EC(φ(s_t), a_t) ← max(Q_EC(φ(s_t), a_t), R_t)`` for a stored key, else the key is added
  with value ``R_t``; ``R_t = Σ_k γ^k r_{t+k}`` (γ = 1 in the paper), computed with
  :func:`metarl.kernels.returns.lambda_returns` (λ = 1, values 0).

One departure, on by default (``bootstrap_truncated``): an episode cut by the env's time limit
(``truncated`` and not ``terminated``) has its return completed with the estimate of its final
observation, ``R_t = Σ_{k<T-t} γ^k r_{t+k} + γ^{T-t} max_a Q_EC(φ(s_T), a)``, as DQN (and NEC
here) bootstrap at a time limit. The paper's Atari episodes end by termination; with a time
limit the plain Monte-Carlo return says a state 10 steps before the limit is worth 10, and on
Acrobot-v1 (every early episode truncated at 500 steps) that time artefact is all the table
learns: -500 after 15k env steps without the bootstrap.

The ``num_envs`` env copies run side by side; each writes its episode when that episode ends,
so the algorithm is the paper's with a memory shared by several actors.

Use it from Python::

    >>> from metarl.algos.mfec import MFECConfig, train
    >>> summary = train(MFECConfig(total_env_steps=20_000), run_dir=None, progress=False)   # doctest: +SKIP
    >>> summary["eval"]                                                                     # doctest: +SKIP
    {'mfec': (..., ...), 'random': (22.3, 1.2)}

or the command line: ``metarl train mfec --env CartPole-v1``.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from metarl.algos import episodic, harness
from metarl.algos.episodic import EpisodeStats, epsilon_at, epsilon_greedy
from metarl.config import Config, env_ids, field
from metarl.kernels.returns import lambda_returns
from metarl.memory import FlatIndex

KIND = "mfec"


@dataclasses.dataclass
class MFECConfig(Config):
    """MFEC. Defaults: CartPole-v1 with 4 env copies; a mean training return of 150 within 4-8k env
    steps, greedy returns of ~170-280 after 30k (3 seeds, bench/episodic.py)."""

    env: str = field("CartPole-v1", choices=env_ids)
    """A metarl env with Discrete actions and vector observations (CartPole-v1, Acrobot-v1, MountainCar-v0)."""
    num_envs: int = field(4, ge=1)
    """Env copies stepped together (each writes its episodes to the shared memories)."""
    total_env_steps: int = field(50_000, ge=1)
    """Training budget in env steps (all envs together)."""
    projection_dim: int = field(64, ge=0)
    """Dimension of the Gaussian random projection phi(s) (paper: 64); 0 = the raw observation."""
    k: int = field(11, ge=1)
    """Nearest neighbours averaged for a key not in memory (paper: 11)."""
    capacity: int = field(1_000_000, ge=1)
    """Entries per action's memory, least recently used evicted beyond it (paper: 10^6; grows as needed)."""
    gamma: float = field(1.0, ge=0, le=1)
    """Discount of the returns R_t written to memory (paper: 1)."""
    bootstrap_truncated: bool = True
    """Complete the return of an episode cut by the time limit with gamma^(steps left) max_a Q_EC(phi(final obs), a),
    as DQN does (False: the paper's plain Monte-Carlo return, which makes late states of long episodes look poor)."""
    epsilon_start: float = field(1.0, ge=0, le=1)
    """Exploration rate at the start."""
    epsilon_end: float = field(0.01, ge=0, le=1)
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = field(2_000, ge=0)
    """Env steps over which epsilon decays linearly (0: epsilon_end from the start)."""
    seed: int = field(0, ge=0)
    """Seed of the envs, the projection and the exploration."""
    device: str = "cpu"
    """Torch device of envs and memories."""
    eval_episodes: int = field(100, ge=1)
    """Greedy evaluation episodes at the end of training (and by ``metarl eval``)."""
    log_every: int = field(1_000, ge=1)
    """Env steps per progress row (one iteration)."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def check(self):
        episodic.check_env(self.env)


class MFECAgent:
    """The MFEC tables: a random projection and, per action, a :class:`FlatIndex` of keys with their values.

    Example::

        >>> import torch
        >>> agent = MFECAgent(obs_dim=2, num_actions=2, projection_dim=0, k=2)
        >>> keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
        >>> agent.write(keys, torch.tensor([0, 0, 0]), torch.tensor([1.0, 3.0, 5.0]))   # (0, 0) twice: max 5
        >>> agent.estimate(torch.tensor([[0.0, 0.0], [0.4, 0.0]]))    # exact key; 2 nearest (mean); action 1 empty
        tensor([[5., inf],
                [4., inf]])
    """

    def __init__(self, obs_dim: int, num_actions: int, *, projection_dim: int = 64, k: int = 11,
                 capacity: int = 1_000_000, seed: int = 0, device="cpu", backend: str | None = None):
        self.num_actions, self.k, self.capacity = num_actions, k, capacity
        self.device = torch.device(device)
        self.backend = backend
        if projection_dim:
            g = torch.Generator().manual_seed(seed)
            # N(0, 1/F) entries: squared distances are preserved in expectation (Johnson-Lindenstrauss)
            self.projection = (torch.randn(obs_dim, projection_dim, generator=g) / math.sqrt(projection_dim)).to(device)
        else:
            self.projection = None
        self.key_dim = projection_dim or obs_dim
        self.memories = [FlatIndex(self.key_dim, capacity=capacity, device=device, backend=backend)
                         for _ in range(num_actions)]
        # values by id (FlatIndex ids count up from 0 and are never reused: 4 bytes per key ever added)
        self.values = [torch.zeros(0, device=device) for _ in range(num_actions)]

    @property
    def sizes(self) -> list[int]:
        """Entries stored per action."""
        return [m.ntotal for m in self.memories]

    def keys(self, obs: torch.Tensor) -> torch.Tensor:
        """``φ(obs)``: ``[N, key_dim]`` float32."""
        obs = obs.float()
        return (obs @ self.projection).contiguous() if self.projection is not None else obs.contiguous()

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """``[N, A]`` estimates for observations ``[N, obs_dim]``."""
        return self.estimate(self.keys(obs))

    def _exact(self, memory: FlatIndex, keys: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Rows whose nearest stored key (id ``ids``, -1: none) is bitwise equal to the query."""
        exact = torch.zeros(keys.shape[0], dtype=torch.bool, device=keys.device)
        hit = ids >= 0
        if bool(hit.any()):
            stored = memory.reconstruct_batch(ids[hit])
            exact[hit] = (stored == keys[hit]).all(1)
        return exact

    def estimate(self, keys: torch.Tensor) -> torch.Tensor:
        """``[N, A]``: the stored value of an exact key, else the mean of its ``k`` nearest (``+inf``:
        memory empty). Every neighbour read counts as a use (LRU)."""
        n = keys.shape[0]
        out = torch.full((n, self.num_actions), math.inf, device=keys.device)
        if n == 0:
            return out
        for a, memory in enumerate(self.memories):
            if memory.ntotal == 0:
                continue
            _, ids = memory.search(keys, self.k)
            hit = ids >= 0
            vals = torch.where(hit, self.values[a][ids.clamp_min(0)], 0.0)
            mean = vals.sum(1) / hit.sum(1)
            out[:, a] = torch.where(self._exact(memory, keys, ids[:, 0]), vals[:, 0], mean)
        return out

    @torch.no_grad()
    def write(self, keys: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor) -> None:
        """The MFEC update for rows ``(keys [n, key_dim], actions [n], returns [n])``: a key stored in its
        action's memory keeps ``max(old, R)``; a new key is added with ``R`` (a key repeated within
        the call counts once, with its largest return)."""
        if keys.shape[0] != actions.shape[0] or keys.shape[0] != returns.shape[0]:
            raise ValueError(f"keys, actions and returns must have the same length, got {keys.shape[0]}, "
                             f"{actions.shape[0]}, {returns.shape[0]}")
        returns = returns.to(torch.float32)
        for a in range(self.num_actions):
            sel = actions == a
            if not bool(sel.any()):
                continue
            uniq, best = _unique_max(keys[sel], returns[sel])
            for lo in range(0, uniq.shape[0], self.capacity):    # at most `capacity` new keys per add
                self._write_one(a, uniq[lo:lo + self.capacity], best[lo:lo + self.capacity])

    def _write_one(self, a: int, keys: torch.Tensor, returns: torch.Tensor) -> None:
        memory = self.memories[a]
        ids = memory.search(keys, 1)[1][:, 0] if memory.ntotal else torch.full_like(returns, -1, dtype=torch.int64)
        exact = self._exact(memory, keys, ids)
        if bool(exact.any()):
            old = self.values[a][ids[exact]]
            self.values[a][ids[exact]] = torch.maximum(old, returns[exact])
        new = ~exact
        if bool(new.any()):
            new_ids = memory.add(keys[new])
            top = int(new_ids.max()) + 1
            if top > self.values[a].numel():
                grown = torch.zeros(max(top, 2 * self.values[a].numel(), 1024), device=self.values[a].device)
                grown[:self.values[a].numel()] = self.values[a]
                self.values[a] = grown
            self.values[a][new_ids] = returns[new]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"projection": None if self.projection is None else self.projection.cpu(),
                "memories": [episodic.index_to_tensor(m) for m in self.memories],
                "values": [v.cpu() for v in self.values]}

    def load_state_dict(self, sd: dict) -> None:
        if (sd["projection"] is None) != (self.projection is None) or len(sd["memories"]) != self.num_actions:
            raise ValueError("state dict does not fit this MFEC agent")
        if self.projection is not None:
            self.projection = sd["projection"].to(self.device)
        self.memories = [episodic.index_from_tensor(t, device=self.device, backend=self.backend)
                         for t in sd["memories"]]
        self.values = [v.to(self.device) for v in sd["values"]]


def _unique_max(keys: torch.Tensor, returns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of ``keys`` in order of first appearance, each with its largest return."""
    uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
    if uniq.shape[0] == keys.shape[0]:
        return keys, returns
    m = uniq.shape[0]
    best = torch.full((m,), -math.inf, device=keys.device).scatter_reduce(0, inverse, returns, "amax")
    first = torch.full((m,), keys.shape[0], device=keys.device).scatter_reduce(
        0, inverse, torch.arange(keys.shape[0], device=keys.device), "amin")
    order = torch.argsort(first)
    return uniq[order], best[order]


def make_agent(cfg: MFECConfig, env) -> MFECAgent:
    return MFECAgent(env.single_observation_space.shape[0], int(env.single_action_space.n),
                     projection_dim=cfg.projection_dim, k=cfg.k, capacity=cfg.capacity, seed=cfg.seed,
                     device=cfg.device)


class MFECLearner:
    """MFEC as the run harness drives it (:mod:`metarl.algos.harness`): the env copies, the agent,
    and the steps of the episodes in progress. :meth:`vector_step` steps every env copy once and
    writes the episodes that ended; :meth:`step` (one iteration, one progress row) is
    ``log_every // num_envs`` of them."""

    kind = KIND

    def __init__(self, cfg: MFECConfig):
        self.config = cfg
        self.steps_per_iteration, self.iterations = episodic.iteration_sizes(cfg)
        self.env = episodic.make_env(cfg)
        self.agent = make_agent(cfg, self.env)
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        n, dev = cfg.num_envs, cfg.device
        self.stats = EpisodeStats(n, dev)
        self.env_steps = 0
        # the episodes in progress, time-major; env i has written rows [0, pos[i])
        length = self.env.max_episode_steps or 1000    # grows if an episode is longer
        self.buf_keys = torch.zeros((length, n, self.agent.key_dim), device=dev)
        self.buf_actions = torch.zeros((length, n), dtype=torch.int64, device=dev)
        self.buf_rewards = torch.zeros((length, n), device=dev)
        self.pos = torch.zeros(n, dtype=torch.int64, device=dev)
        self.obs, _ = self.env.reset(seed=cfg.seed)

    def step(self) -> dict:
        for _ in range(self.steps_per_iteration):
            self.vector_step()
        return {**self.stats.row(self.config, self.env_steps), "memory_size": sum(self.agent.sizes)}

    def vector_step(self) -> None:
        cfg, n = self.config, self.config.num_envs
        # act
        keys = self.agent.keys(self.obs)
        q = self.agent.estimate(keys)
        actions = epsilon_greedy(q, epsilon_at(cfg, self.env_steps), self.generator)
        self.obs, reward, terminated, truncated, info = self.env.step(actions)
        self.env_steps += n
        # record
        if int(self.pos.max()) == self.buf_rewards.shape[0]:
            self._grow()
        envs = torch.arange(n, device=self.pos.device)
        self.buf_keys[self.pos, envs] = keys
        self.buf_actions[self.pos, envs] = actions
        self.buf_rewards[self.pos, envs] = reward
        self.pos += 1
        done = terminated | truncated
        self.stats.update(reward, done, self.env_steps)
        # update the tables with the episodes that ended
        if bool(done.any()):
            cut = truncated & ~terminated if cfg.bootstrap_truncated else torch.zeros_like(done)
            self._write_episodes(done, cut, info["final_obs"])

    def _write_episodes(self, done: torch.Tensor, cut: torch.Tensor, final_obs: torch.Tensor) -> None:
        ended = done.nonzero().flatten()
        lengths = self.pos[ended]
        t = int(lengths.max())
        rewards = self.buf_rewards[:t, ended].clone()      # zeros past each episode's end
        if bool(cut.any()):       # time limit: the last reward also carries gamma * max_a Q_EC(final obs, a)
            q = self.agent.q_values(final_obs[cut])
            value = torch.where(torch.isinf(q), -torch.inf, q).max(1).values
            value = torch.where(torch.isinf(value), 0.0, value)          # every table empty: 0
            last = lengths[cut[ended]] - 1
            rewards[last, cut[ended].nonzero().flatten()] += self.config.gamma * value
        zeros = torch.zeros_like(rewards)
        returns = lambda_returns(rewards, zeros, torch.zeros_like(rewards, dtype=torch.bool),
                                 zeros[0], self.config.gamma, 1.0)
        mask = torch.arange(t, device=rewards.device).unsqueeze(1) < lengths      # [t, ended]
        self.agent.write(self.buf_keys[:t, ended][mask], self.buf_actions[:t, ended][mask], returns[mask])
        self.buf_rewards[:, ended] = 0.0
        self.pos[ended] = 0

    def _grow(self) -> None:
        def grow(x):
            return torch.cat([x, torch.zeros_like(x)])
        self.buf_keys, self.buf_actions, self.buf_rewards = (grow(self.buf_keys), grow(self.buf_actions),
                                                             grow(self.buf_rewards))

    def report(self, num_tasks: int | None = None) -> dict:
        """``{"eval": {"mfec": (mean, se), "random": (mean, se)}}`` over ``num_tasks`` episodes
        (default ``eval_episodes``)."""
        return {"eval": report(self.agent, self.config, num_tasks)}

    def state_dict(self) -> dict:
        t = int(self.pos.max())
        return {"agent": self.agent.state_dict(), "env": self.env.state_dict(), "obs": self.obs.cpu(),
                "generator": self.generator.get_state(), "stats": self.stats.state_dict(),
                "env_steps": self.env_steps, "pos": self.pos.cpu(), "buf_keys": self.buf_keys[:t].cpu(),
                "buf_actions": self.buf_actions[:t].cpu(), "buf_rewards": self.buf_rewards[:t].cpu()}

    def load_state_dict(self, sd: dict) -> None:
        dev = self.config.device
        self.agent.load_state_dict(sd["agent"])
        self.env.load_state_dict(sd["env"])
        self.obs = sd["obs"].to(dev)
        self.generator.set_state(sd["generator"])
        self.stats.load_state_dict(sd["stats"])
        self.env_steps = int(sd["env_steps"])
        self.pos = sd["pos"].to(dev)
        t = sd["buf_rewards"].shape[0]
        while self.buf_rewards.shape[0] < t:
            self._grow()
        self.buf_keys.zero_()
        self.buf_actions.zero_()
        self.buf_rewards.zero_()
        self.buf_keys[:t] = sd["buf_keys"].to(dev)
        self.buf_actions[:t] = sd["buf_actions"].to(dev)
        self.buf_rewards[:t] = sd["buf_rewards"].to(dev)


# ----------------------------------------------------------------------------- public API
def train(cfg: MFECConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Train MFEC through the run harness (:func:`metarl.algos.harness.run`); returns its summary
    (``iterations``, ``env_steps``, ``train_seconds``, ``env_steps_per_s``, ``interrupted``, ``history``
    and after a complete run ``eval``: ``{"mfec": (mean, se), "random": (mean, se)}`` over
    ``eval_episodes`` greedy episodes) with ``episodes``, ``final_episode_return`` (mean of the last 20
    training episodes) and the lists ``episode_end_steps`` / ``episode_returns`` of every training episode.

    ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv`` (one row per
    ``log_every`` env steps), TensorBoard events when ``tensorboard`` is installed, ``summary.json``
    and ``checkpoint.pt`` (memories, env, RNG and the episodes in progress). ``resume=True``
    continues from it exactly; ``overwrite=True`` starts over in a directory that holds a run;
    ``max_iterations`` stops early (the run can be resumed).
    """
    learner = MFECLearner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations, progress_keys=("episode_return", "env_steps_per_s"))
    return {**summary, **learner.stats.summary()}


def evaluate(agent: MFECAgent, cfg: MFECConfig, num_episodes: int | None = None, seed: int = 12345,
             epsilon: float = 0.0) -> torch.Tensor:
    """Returns ``[num_episodes]`` of the greedy (``epsilon``-greedy) policy, one episode per env copy."""
    return episodic.evaluate_returns(agent.q_values, cfg, num_episodes or cfg.eval_episodes, seed, epsilon)


def report(agent: MFECAgent, cfg: MFECConfig, num_episodes: int | None = None, seed: int = 12345) -> dict:
    """``{"mfec": (mean, se), "random": (mean, se)}`` on the same evaluation episodes."""
    return episodic.report_returns(KIND, agent.q_values, cfg, num_episodes, seed)


def load_model(run_dir) -> tuple[MFECAgent, MFECConfig]:
    """The agent (memories and projection) and config of a run directory (from its checkpoint)."""
    ck = harness.load_checkpoint(run_dir, KIND)
    cfg = MFECConfig(**ck["config"])
    agent = make_agent(cfg, episodic.make_env(cfg, 1))
    agent.load_state_dict(ck["learner"]["agent"])
    return agent, cfg


__all__ = ["MFECConfig", "MFECAgent", "MFECLearner", "train", "evaluate", "report", "load_model"]
