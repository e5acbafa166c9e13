"""Neural episodic control (Pritzel et al. 2017, "Neural episodic control").

An embedding network ``h = f(s)`` (an MLP here) and, per action, a differentiable neural
dictionary (:class:`~metarl.memory.DND`) of keys ``h_i`` and values ``Q_i``:

* **estimate**: ``Q(s, a) = Σ_i w_i Q_i`` over the ``p`` nearest keys of memory ``a`` (p = 50),
  ``w_i ∝ 1 / (‖h − h_i‖² + δ)`` (δ = 1e-3);
* **act**: ε-greedy on ``Q(s, ·)``;
* **N-step targets**: ``Q^N(s_t, a_t) = Σ_{j<N} γ^j r_{t+j} + γ^N max_a' Q(s_{t+N}, a')``, computed
  once ``s_{t+N}`` is seen (at an episode end: the rewards left, bootstrapped with 0 when the
  episode terminated, with ``max_a' Q`` of the final observation when it was truncated);
* **write**: ``(h_t, Q^N)`` into memory ``a_t`` — a key already there gets
  ``Q_i ← Q_i + α (Q^N − Q_i)`` (α = 0.1), a new one is appended (LRU eviction at capacity) —
  and ``(s_t, a_t, Q^N)`` into the replay buffer;
* **learn**: every ``train_every`` env steps, a minibatch from the replay buffer and one step
  on ``(Q(s, a) − Q^N)²``, whose gradients flow into the embedding network **and** into the
  looked-up keys and values (Adam on the network at ``lr``, plain SGD on the DND at ``dnd_lr``;
  the paper used one RMSProp for all).

``h_t`` is the embedding computed when acting at ``s_t`` (as in the paper's algorithm), so keys
are written as the network saw them then. The ``num_envs`` copies share the memories.

Use it from Python::

    >>> from metarl.algos.nec import NECConfig, train
    >>> summary = train(NECConfig(total_env_steps=20_000), run_dir=None, progress=False)   # doctest: +SKIP

or the command line: ``metarl train nec --env CartPole-v1``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from metarl.algos import episodic, harness
from metarl.algos.episodic import EpisodeStats, epsilon_at, epsilon_greedy
from metarl.config import Config, env_ids, field
from metarl.memory import DND

KIND = "nec"


@dataclasses.dataclass
class NECConfig(Config):
    """NEC. Defaults: a small-CPU setting (8 env copies, 10k entries per action, p = 50, N = 100) that
    takes CartPole-v1 to a mean training return of 150 within ~4k env steps and to 500 by 30k (3 seeds,
    bench/episodic.py)."""

    env: str = field("CartPole-v1", choices=env_ids)
    """A metarl env with Discrete actions and vector observations (CartPole-v1, Acrobot-v1, MountainCar-v0)."""
    num_envs: int = field(8, ge=1)
    """Env copies stepped together (they share the memories and the replay buffer)."""
    total_env_steps: int = field(50_000, ge=1)
    """Training budget in env steps (all envs together)."""
    hidden_size: int = field(64, ge=1)
    """Units of each of the embedding MLP's two tanh hidden layers."""
    key_dim: int = field(32, ge=1)
    """Embedding (key) size."""
    capacity: int = field(10_000, ge=1)
    """Entries per action's DND, least recently used evicted beyond it (preallocated; paper: 5e5 for Atari)."""
    neighbours: int = field(50, ge=1)
    """p: nearest keys per lookup (paper: 50)."""
    delta: float = field(1e-3, gt=0)
    """delta of the kernel 1 / (d^2 + delta) (paper: 1e-3)."""
    n_step: int = field(100, ge=1)
    """N of the N-step Q targets (paper: 100)."""
    gamma: float = field(0.99, ge=0, le=1)
    """Discount."""
    alpha: float = field(0.1, gt=0, le=1)
    """Tabular write rate for a key already in memory: Q_i += alpha (Q^N - Q_i) (paper: 0.1)."""
    lr: float = field(1e-3, gt=0)
    """Adam learning rate of the embedding network."""
    dnd_lr: float = field(0.1, ge=0)
    """SGD learning rate of the DND keys and values (gradients of the same loss; 0: the DND learns by its
    writes only)."""
    batch_size: int = field(32, ge=1)
    """Replay minibatch size (paper: 32)."""
    replay_size: int = field(100_000, ge=1)
    """Replay buffer capacity in transitions (paper: 1e5)."""
    train_every: int = field(8, ge=1)
    """Env steps (all envs together) per learning step."""
    learning_starts: int = field(1_000, ge=0)
    """Env steps before the first learning step."""
    epsilon_start: float = field(1.0, ge=0, le=1)
    """Exploration rate at the start."""
    epsilon_end: float = field(0.01, ge=0, le=1)
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = field(2_000, ge=0)
    """Env steps over which epsilon decays linearly (0: epsilon_end from the start)."""
    seed: int = field(0, ge=0)
    """Seed of the envs, network init, replay sampling and exploration."""
    device: str = "cpu"
    """Torch device of envs, network and memories."""
    eval_episodes: int = field(100, ge=1)
    """Greedy evaluation episodes at the end of training (and by ``metarl eval``)."""
    log_every: int = field(1_000, ge=1)
    """Env steps per progress row (one iteration)."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def check(self):
        episodic.check_env(self.env)
        if self.num_envs > self.capacity:
            raise ValueError(f"capacity ({self.capacity}) must be at least num_envs ({self.num_envs}): "
                             "every step writes one key per env")
        if self.batch_size > self.replay_size:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed replay_size ({self.replay_size})")


class NECAgent(nn.Module):
    """The embedding MLP ``f`` (``embed``) and the per-action :class:`DND` (``dnd``).

    Example::

        >>> import torch
        >>> agent = NECAgent(obs_dim=4, num_actions=2, hidden_size=8, key_dim=4, capacity=16, neighbours=3)
        >>> obs = torch.zeros(2, 4)
        >>> agent(obs).detach()                         # empty memories answer 0
        tensor([[0., 0.],
                [0., 0.]])
        >>> _ = agent.dnd.write(agent.embed(obs[:1]).detach(), torch.tensor([1.5]), torch.tensor([1]))
        >>> agent(obs).detach()
        tensor([[0.0000, 1.5000],
                [0.0000, 1.5000]])
    """

    def __init__(self, obs_dim: int, num_actions: int, *, hidden_size: int = 64, key_dim: int = 32,
                 capacity: int = 10_000, neighbours: int = 50, delta: float = 1e-3, device="cpu"):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(obs_dim, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size),
                                   nn.Tanh(), nn.Linear(hidden_size, key_dim)).to(device)
        self.dnd = DND(num_actions, key_dim, capacity, k=neighbours, delta=delta, device=device)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """``Q(obs, ·) [N, A]``, or ``Q(obs, actions) [N]``; differentiable in the network, keys and values."""
        return self.dnd.lookup(self.embed(obs.float()), actions)

    q_values = forward


def make_agent(cfg: NECConfig, env) -> NECAgent:
    torch.manual_seed(cfg.seed)
    return NECAgent(env.single_observation_space.shape[0], int(env.single_action_space.n),
                    hidden_size=cfg.hidden_size, key_dim=cfg.key_dim, capacity=cfg.capacity,
                    neighbours=cfg.neighbours, delta=cfg.delta, device=cfg.device)


def n_step_targets(rewards: torch.Tensor, bootstrap: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G[:, j] = Σ_{m=j}^{N-1} γ^{m-j} rewards[:, m] + γ^{N-j} bootstrap`` for windows ``rewards [B, N]``
    (oldest first) and ``bootstrap [B]``: the target of the transition at each position of the window.
    Position 0 is the full N-step target; the later ones are the shorter returns an episode end leaves."""
    n = rewards.shape[1]
    j = torch.arange(n, device=rewards.device, dtype=rewards.dtype)
    power = j.unsqueeze(0) - j.unsqueeze(1)                                       # [j, m] = m - j
    discount = torch.where(power >= 0, gamma ** power.clamp_min(0), 0.0)          # upper triangular
    return rewards @ discount.t() + bootstrap.unsqueeze(1) * gamma ** (n - j)


class Replay:
    """``(obs, action, Q^N)`` ring buffer, preallocated."""

    def __init__(self, size: int, obs_dim: int, device):
        self.obs = torch.zeros((size, obs_dim), device=device)
        self.actions = torch.zeros(size, dtype=torch.int64, device=device)
        self.targets = torch.zeros(size, device=device)
        self.size, self.next, self.full = size, 0, False

    def __len__(self) -> int:
        return self.size if self.full else self.next

    def add(self, obs, actions, targets) -> None:
        for lo in range(0, obs.shape[0], self.size):
            o, a, t = obs[lo:lo + self.size], actions[lo:lo + self.size], targets[lo:lo + self.size]
            idx = (self.next + torch.arange(o.shape[0], device=o.device)) % self.size
            self.obs[idx], self.actions[idx], self.targets[idx] = o, a, t
            self.full = self.full or self.next + o.shape[0] >= self.size
            self.next = (self.next + o.shape[0]) % self.size

    def sample(self, n: int, generator: torch.Generator):
        idx = torch.randint(len(self), (n,), generator=generator, device=self.obs.device)
        return self.obs[idx], self.actions[idx], self.targets[idx]

    def state_dict(self) -> dict:
        m = len(self)
        return {"obs": self.obs[:m].cpu(), "actions": self.actions[:m].cpu(), "targets": self.targets[:m].cpu(),
                "next": self.next, "full": self.full}

    def load_state_dict(self, sd: dict) -> None:
        m = sd["obs"].shape[0]
        self.obs[:m], self.actions[:m], self.targets[:m] = sd["obs"], sd["actions"], sd["targets"]
        self.next, self.full = int(sd["next"]), bool(sd["full"])


class NECLearner:
    """NEC as the run harness drives it (:mod:`metarl.algos.harness`): env copies, agent, optimisers,
    replay, and per env a window of the last ``n_step`` transitions (slot ``t % n_step`` holds vector
    step ``t``; ``count[i]`` of them are pending). :meth:`vector_step` steps every env copy once, writes
    the targets that became known and learns; :meth:`step` (one iteration, one progress row) is
    ``log_every // num_envs`` of them."""

    kind = KIND

    def __init__(self, cfg: NECConfig):
        self.config = cfg
        self.steps_per_iteration, self.iterations = episodic.iteration_sizes(cfg)
        self.env = episodic.make_env(cfg)
        self.agent = make_agent(cfg, self.env)
        self.opt_net = torch.optim.Adam(self.agent.embed.parameters(), lr=cfg.lr)
        self.opt_dnd = torch.optim.SGD(self.agent.dnd.parameters(), lr=cfg.dnd_lr)
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        n, w, dev = cfg.num_envs, cfg.n_step, cfg.device
        obs_dim = self.env.single_observation_space.shape[0]
        self.replay = Replay(cfg.replay_size, obs_dim, dev)
        self.stats = EpisodeStats(n, dev)
        self.t = 0                # vector steps taken
        self.win_obs = torch.zeros((n, w, obs_dim), device=dev)
        self.win_keys = torch.zeros((n, w, cfg.key_dim), device=dev)
        self.win_actions = torch.zeros((n, w), dtype=torch.int64, device=dev)
        self.win_rewards = torch.zeros((n, w), device=dev)
        self.count = torch.zeros(n, dtype=torch.int64, device=dev)
        self.obs, _ = self.env.reset(seed=cfg.seed)

    @property
    def env_steps(self) -> int:
        return self.t * self.config.num_envs

    def _ordered(self, newest: int) -> torch.Tensor:
        """Window slots oldest first, for a window whose newest vector step is ``newest``."""
        w = self.config.n_step
        return (newest - w + 1 + torch.arange(w, device=self.count.device)) % w

    def step(self) -> dict:
        losses = []
        for _ in range(self.steps_per_iteration):
            losses += self.vector_step()
        return {**self.stats.row(self.config, self.env_steps),
                "loss": sum(losses) / len(losses) if losses else float("nan"),
                "memory_size": int(self.agent.dnd.ntotal.sum())}

    def vector_step(self) -> list[float]:
        """One step of every env copy, its writes and its learning steps; returns their losses."""
        cfg, n, w = self.config, self.config.num_envs, self.config.n_step
        obs = self.obs
        writes = []
        # act
        with torch.no_grad():
            keys = self.agent.embed(obs.float())
            q = self.agent.dnd.lookup(keys)
        actions = epsilon_greedy(q, epsilon_at(cfg, self.env_steps), self.generator)
        # the transitions of step t - N now have their N-step target (bootstrapped with max_a Q(s_t, a))
        full = self.count == w
        if bool(full.any()):
            target = n_step_targets(self.win_rewards[full][:, self._ordered(self.t - 1)], q.max(1).values[full],
                                    cfg.gamma)[:, 0]
            old = self.t % w
            writes.append((self.win_obs[full, old], self.win_keys[full, old], self.win_actions[full, old], target))
        # step, and record in slot t % N (the transition just written out, if any, is overwritten)
        self.obs, reward, terminated, truncated, info = self.env.step(actions)
        slot = self.t % w
        self.win_obs[:, slot], self.win_keys[:, slot] = obs, keys
        self.win_actions[:, slot], self.win_rewards[:, slot] = actions, reward
        self.count = (self.count + 1).clamp_max(w)
        done = terminated | truncated
        self.stats.update(reward, done, self.env_steps + n)
        # episode ends: every pending transition gets its (shorter) target
        if bool(done.any()):
            writes.append(self._flush(done, terminated, truncated, info["final_obs"]))
        self.t += 1
        # write to the memories and the replay buffer
        if writes:
            o, k, a, g = (torch.cat(x) for x in zip(*writes))
            self.agent.dnd.write(k, g, a, alpha=cfg.alpha)
            self.replay.add(o, a, g)
        # learn: one step per multiple of train_every env steps passed, from learning_starts on
        if not len(self.replay):
            return []
        lo = max(self.env_steps - n, cfg.learning_starts - 1)
        return [self._learn() for _ in range(max(0, self.env_steps // cfg.train_every - lo // cfg.train_every))]

    def _flush(self, done, terminated, truncated, final_obs):
        """Targets of the pending transitions of the envs whose episode ended at step t."""
        cfg, w = self.config, self.config.n_step
        ended = done.nonzero().flatten()
        bootstrap = torch.zeros(ended.numel(), device=done.device)
        trunc = truncated[ended] & ~terminated[ended]
        if bool(trunc.any()):     # cut by the time limit: bootstrap with max_a Q(final obs, a)
            with torch.no_grad():
                bootstrap[trunc] = self.agent(final_obs[ended[trunc]]).max(1).values
        slots = self._ordered(self.t)
        targets = n_step_targets(self.win_rewards[ended][:, slots], bootstrap, cfg.gamma)     # [E, N]
        pending = torch.arange(w, device=done.device) >= (w - self.count[ended]).unsqueeze(1)  # the last count
        self.count[ended] = 0
        e, j = pending.nonzero(as_tuple=True)
        s, env = slots[j], ended[e]
        return self.win_obs[env, s], self.win_keys[env, s], self.win_actions[env, s], targets[e, j]

    def _learn(self) -> float:
        """One gradient step on a replay minibatch; returns its loss."""
        obs, actions, targets = self.replay.sample(self.config.batch_size, self.generator)
        loss = ((self.agent(obs, actions) - targets) ** 2).mean()
        self.opt_net.zero_grad(set_to_none=True)
        self.opt_dnd.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_net.step()
        self.opt_dnd.step()
        return loss.item()

    def report(self, num_tasks: int | None = None) -> dict:
        """``{"eval": {"nec": (mean, se), "random": (mean, se)}}`` over ``num_tasks`` episodes
        (default ``eval_episodes``)."""
        return {"eval": report(self.agent, self.config, num_tasks)}

    def state_dict(self) -> dict:
        return {"agent": self.agent.state_dict(), "opt_net": self.opt_net.state_dict(),
                "opt_dnd": self.opt_dnd.state_dict(), "replay": self.replay.state_dict(),
                "env": self.env.state_dict(), "obs": self.obs.cpu(), "generator": self.generator.get_state(),
                "stats": self.stats.state_dict(), "t": self.t,
                "window": {name: getattr(self, name).cpu() for name in
                           ("win_obs", "win_keys", "win_actions", "win_rewards", "count")}}

    def load_state_dict(self, sd: dict) -> None:
        dev = self.config.device
        self.agent.load_state_dict(sd["agent"])
        self.opt_net.load_state_dict(sd["opt_net"])
        self.opt_dnd.load_state_dict(sd["opt_dnd"])
        self.replay.load_state_dict(sd["replay"])
        self.env.load_state_dict(sd["env"])
        self.obs = sd["obs"].to(dev)
        self.generator.set_state(sd["generator"])
        self.stats.load_state_dict(sd["stats"])
        self.t = int(sd["t"])
        for name, v in sd["window"].items():
            setattr(self, name, v.to(dev))


# ----------------------------------------------------------------------------- public API
def train(cfg: NECConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Train NEC through the run harness; returns the summary of :func:`metarl.algos.mfec.train`
    (``eval``: ``{"nec": (mean, se), "random": (mean, se)}``), with the same files in ``run_dir``;
    the checkpoint holds the network, the DNDs, both optimisers, the replay buffer, the env, the RNG
    and the N-step windows, so ``resume=True`` continues exactly."""
    learner = NECLearner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations, progress_keys=("episode_return", "env_steps_per_s"))
    return {**summary, **learner.stats.summary()}


@torch.no_grad()
def evaluate(agent: NECAgent, cfg: NECConfig, num_episodes: int | None = None, seed: int = 12345,
             epsilon: float = 0.0) -> torch.Tensor:
    """Returns ``[num_episodes]`` of the greedy (``epsilon``-greedy) policy, one episode per env copy."""
    return episodic.evaluate_returns(agent.q_values, cfg, num_episodes or cfg.eval_episodes, seed, epsilon)


@torch.no_grad()
def report(agent: NECAgent, cfg: NECConfig, num_episodes: int | None = None, seed: int = 12345) -> dict:
    """``{"nec": (mean, se), "random": (mean, se)}`` on the same evaluation episodes."""
    return episodic.report_returns(KIND, agent.q_values, cfg, num_episodes, seed)


def load_model(run_dir) -> tuple[NECAgent, NECConfig]:
    """The agent (network and DNDs) and config of a run directory (from its checkpoint)."""
    ck = harness.load_checkpoint(run_dir, KIND)
    cfg = NECConfig(**ck["config"])
    agent = make_agent(cfg, episodic.make_env(cfg, 1))
    agent.load_state_dict(ck["learner"]["agent"])
    return agent, cfg


__all__ = ["NECConfig", "NECAgent", "NECLearner", "n_step_targets", "train", "evaluate", "report", "load_model"]
