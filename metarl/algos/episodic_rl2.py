"""Episodic meta-RL (Ritter et al. 2018, "Been there, done that"): an RL^2 LSTM agent whose cell
state is stored in an episodic memory at the end of every trial, keyed by the task's context,
and reinstated through a learned gate when a similar context comes back.

The task family (:class:`EpisodicRL2Config`): a *lifetime* of ``trials_per_lifetime`` bandit
trials of ``pulls_per_trial`` pulls each, whose tasks are drawn (uniformly, with repeats) from a
small set of ``tasks_per_lifetime`` tasks sampled afresh for every lifetime. A task is an
``arms``-armed Bernoulli bandit with one good arm (``p_good``, the others ``p_bad``) and a
random context vector ``[context_dim]`` that the agent observes at every pull. Because the set
is new in every lifetime, the network's weights cannot memorise which arm goes with which
context; only the episodic memory can carry that from one trial of a task to its next.

The agent (:class:`EpisodicLSTMCell`): an LSTM cell on ``[context, one_hot(prev action),
prev reward, match]`` with a fifth, *reinstatement* gate ``r``:

    c' = f ⊙ c + i ⊙ tanh(g) + r ⊙ tanh(c_ep),      h' = o ⊙ tanh(c')

(h, c) reset to zero at every trial start, as in RL^2; ``c_ep`` is the cell state retrieved for
the trial's context. The memory (:class:`EpisodicMemory`: a :class:`metarl.memory.DND` with one
memory per lifetime, vector values and ``k = 1``) holds one ``(context, c_T)`` entry per task seen
in the lifetime, the latest trial's state (a recurring context's entry is overwritten); lookup is
exact nearest-neighbour search (all lifetimes in one ``batched_knn`` call), and
``match = exp(−κ d²)`` of the neighbour's squared distance tells the agent how close the retrieved
entry is. With ``memory=False`` the same agent runs with an empty
memory (``c_ep = 0``, ``match = 0``): RL^2 without episodic memory, the baseline.

Training is A2C over whole lifetimes: returns within each trial (no bootstrapping across trials),
backpropagation through each trial's pulls (the stored states are constants), one Adam step per
batch of ``lifetimes`` lifetimes run in parallel.

    >>> from metarl.algos.episodic_rl2 import EpisodicRL2Config, train
    >>> summary = train(EpisodicRL2Config(), progress=False)     # 800 updates, ~3 min  # doctest: +SKIP
    >>> summary["eval"]["first pull, recurring task"]                           # doctest: +SKIP

or the command line: ``metarl train episodic-rl2``.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from metarl.algos import harness
from metarl.algos.pg import mean_se
from metarl.config import Config, field
from metarl.memory import DND


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass
class EpisodicRL2Config(Config):
    """Episodic meta-RL on recurring contextual bandits (module docstring)."""

    arms: int = field(4, ge=2)
    """Arms per bandit task."""
    p_good: float = field(0.9, ge=0, le=1)
    """Reward probability of a task's good arm."""
    p_bad: float = field(0.1, ge=0, le=1)
    """Reward probability of every other arm."""
    context_dim: int = field(16, ge=1)
    """Size of a task's context vector (standard normal entries over √context_dim)."""
    tasks_per_lifetime: int = field(3, ge=1)
    """Distinct tasks in one lifetime (drawn afresh per lifetime; trials pick among them)."""
    trials_per_lifetime: int = field(6, ge=1)
    """Trials in one lifetime (the memory is emptied at a lifetime's start)."""
    pulls_per_trial: int = field(10, ge=1)
    """Pulls in one trial (the LSTM state is reset at a trial's start)."""
    memory: bool = True
    """Store and reinstate cell states (False: the RL^2 baseline with an empty memory)."""
    match_scale: float = field(10.0, gt=0)
    """κ of the match signal exp(−κ d²) given to the agent with the retrieved state."""
    hidden: int = field(64, ge=1)
    """LSTM hidden size."""
    lifetimes: int = field(32, ge=1)
    """Lifetimes run in parallel per update (the batch)."""
    iterations: int = field(800, ge=1)
    """Updates (one Adam step per batch of lifetimes)."""
    lr: float = field(5e-3, gt=0)
    """Adam learning rate."""
    gamma: float = field(0.9, ge=0, le=1)
    """Discount within a trial."""
    value_coef: float = field(0.5, ge=0)
    """Weight of the value loss."""
    entropy_coef: float = field(0.01, ge=0)
    """Entropy bonus at the start, annealed linearly to 0 over training."""
    max_grad_norm: float = field(1.0, gt=0)
    """Gradient clipping."""
    eval_lifetimes: int = field(500, ge=1)
    """Held-out lifetimes evaluated at the end (and by ``metarl eval``)."""
    seed: int = field(0, ge=0)
    """Seed of the network init, tasks and action sampling."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    @property
    def input_size(self) -> int:
        """``[context, one_hot(prev action), prev reward, match]``."""
        return self.context_dim + self.arms + 2


# ----------------------------------------------------------------------------- tasks
def sample_lifetimes(cfg: EpisodicRL2Config, n: int, generator: torch.Generator) -> dict:
    """``n`` lifetimes: ``probs [n, M, K]``, ``contexts [n, M, D]``, ``schedule [n, L]`` (the task
    of each trial) and ``recurring [n, L]`` (bool: that task already had a trial in the lifetime)."""
    m, k, d, L = cfg.tasks_per_lifetime, cfg.arms, cfg.context_dim, cfg.trials_per_lifetime
    good = torch.randint(k, (n, m), generator=generator)
    probs = torch.full((n, m, k), cfg.p_bad)
    probs.scatter_(2, good[..., None], cfg.p_good)
    contexts = torch.randn((n, m, d), generator=generator) / math.sqrt(d)
    schedule = torch.randint(m, (n, L), generator=generator)
    seen = torch.zeros((n, m), dtype=torch.bool)
    recurring = torch.zeros((n, L), dtype=torch.bool)
    rows = torch.arange(n)
    for t in range(L):
        recurring[:, t] = seen[rows, schedule[:, t]]
        seen[rows, schedule[:, t]] = True
    return {"probs": probs, "contexts": contexts, "schedule": schedule, "recurring": recurring}


# ----------------------------------------------------------------------------- agent
class EpisodicLSTMCell(nn.Module):
    """LSTM cell with a reinstatement gate (module docstring): ``forward(x [B, I], (h, c), c_ep
    [B, H]) -> (h', c')``. Gate order in ``weight [5H, I + H]``: i, f, g, o, r."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.linear = nn.Linear(input_size + hidden_size, 5 * hidden_size)
        with torch.no_grad():   # forget gate bias 1 (standard); reinstatement starts half open
            self.linear.bias[hidden_size:2 * hidden_size].fill_(1.0)

    def forward(self, x, state, c_ep):
        h, c = state
        i, f, g, o, r = self.linear(torch.cat([x, h], -1)).chunk(5, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g) + torch.sigmoid(r) * torch.tanh(c_ep)
        return torch.sigmoid(o) * torch.tanh(c), c


class EpisodicAgent(nn.Module):
    """:class:`EpisodicLSTMCell` + policy head (``arms`` logits) + value head."""

    def __init__(self, cfg: EpisodicRL2Config):
        super().__init__()
        self.cell = EpisodicLSTMCell(cfg.input_size, cfg.hidden)
        self.policy = nn.Linear(cfg.hidden, cfg.arms)
        self.value = nn.Linear(cfg.hidden, 1)

    def forward(self, x, state, c_ep):
        h, c = self.cell(x, state, c_ep)
        return self.policy(h), self.value(h).squeeze(-1), (h, c)


class EpisodicMemory:
    """One memory per lifetime, all in one :class:`metarl.memory.DND` (``num_actions`` = lifetimes,
    ``k = 1``, ``value_dim = H``): keys are task contexts, values the cell states at trial ends.
    Writing a context already stored replaces its state (the DND's rule with α = 1), so the latest
    trial of a recurring task is what comes back; a new context is appended (least recently used
    entry evicted when full). Lookups run in one :func:`metarl.kernels.knn.batched_knn` call for
    all lifetimes."""

    def __init__(self, n: int, capacity: int, key_dim: int, value_dim: int):
        self.dnd = DND(n, key_dim, capacity, k=1, value_dim=value_dim)
        self.rows = torch.arange(n)

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store one entry per lifetime: ``keys [n, D]``, ``values [n, H]`` (detached)."""
        self.dnd.write(keys.detach(), values.detach(), self.rows, alpha=1.0)

    @torch.no_grad()
    def lookup(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values [n, H], squared distance [n])`` of each lifetime's nearest entry to
        ``queries [n, D]``; an empty memory answers zeros and +inf. Constants (no gradient)."""
        d2, _ = self.dnd.search(queries, self.rows, k=1)
        return self.dnd.lookup(queries, self.rows).detach(), d2[:, 0]


# ----------------------------------------------------------------------------- one lifetime batch
def run_lifetimes(agent: EpisodicAgent, cfg: EpisodicRL2Config, life: dict, generator: torch.Generator,
                  train: bool = True) -> dict:
    """Run a batch of lifetimes (``life`` from :func:`sample_lifetimes`). Returns ``loss`` (A2C,
    differentiable when ``train``), ``rewards [n, L, T]`` and the entropy."""
    n, L, T, K = life["probs"].shape[0], cfg.trials_per_lifetime, cfg.pulls_per_trial, cfg.arms
    rows = torch.arange(n)
    memory = EpisodicMemory(n, L, cfg.context_dim, cfg.hidden)
    rewards = torch.zeros((n, L, T))
    pg_terms, v_terms, entropies = [], [], []
    for trial in range(L):
        task = life["schedule"][:, trial]
        ctx = life["contexts"][rows, task]
        probs = life["probs"][rows, task]
        if cfg.memory:
            c_ep, d2 = memory.lookup(ctx)
            match = torch.exp(-cfg.match_scale * d2)
        else:
            c_ep, match = torch.zeros((n, cfg.hidden)), torch.zeros(n)
        h = c = torch.zeros((n, cfg.hidden))
        prev = torch.zeros((n, K + 1))
        logps, values, rews = [], [], []
        for _ in range(T):
            x = torch.cat([ctx, prev, match[:, None]], -1)
            logits, value, (h, c) = agent(x, (h, c), c_ep)
            logp_all = torch.log_softmax(logits, -1)
            u = torch.rand((n, K), generator=generator)
            action = (logits.detach() - torch.log(-torch.log(u))).argmax(-1)   # Gumbel-max sample
            reward = (torch.rand(n, generator=generator) < probs[rows, action]).float()
            logps.append(logp_all.gather(1, action[:, None])[:, 0])
            entropies.append(-(logp_all.exp() * logp_all).sum(-1))
            values.append(value)
            rews.append(reward)
            prev = torch.cat([torch.nn.functional.one_hot(action, K).float(), reward[:, None]], -1)
        rewards[:, trial] = torch.stack(rews, 1)
        if cfg.memory:
            memory.write(ctx, c)
        if train:
            ret = torch.zeros(n)
            returns = []
            for r in reversed(rews):
                ret = r + cfg.gamma * ret
                returns.append(ret)
            returns = torch.stack(returns[::-1])                      # [T, n]
            values = torch.stack(values)
            adv = returns - values.detach()
            pg_terms.append(-(torch.stack(logps) * adv).mean())
            v_terms.append(((returns - values) ** 2).mean())
    entropy = torch.stack(entropies).mean()
    out = {"rewards": rewards, "entropy": float(entropy.detach())}
    if train:
        out["pg_loss"] = torch.stack(pg_terms).mean()
        out["v_loss"] = torch.stack(v_terms).mean()
        out["entropy_t"] = entropy
    return out


def _first_pull_groups(rewards: torch.Tensor, recurring: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first pull's rewards on recurring and on new tasks, and the reward per pull of each
    lifetime, from ``rewards [n, L, T]`` and ``recurring [n, L]``."""
    first = rewards[:, :, 0]
    return {"first pull, recurring task": first[recurring], "first pull, new task": first[~recurring],
            "reward per pull": rewards.mean((1, 2))}


@torch.no_grad()
def evaluate(agent: EpisodicAgent, cfg: EpisodicRL2Config, lifetimes: int | None = None, seed: int = 12345) -> dict:
    """First-pull reward on recurring and on new tasks and the reward per pull, ``(mean, s.e.)``,
    over ``lifetimes`` held-out lifetimes (chance for the first pull: the arms' mean probability)."""
    lifetimes = lifetimes or cfg.eval_lifetimes
    g = torch.Generator().manual_seed(seed)
    life = sample_lifetimes(cfg, lifetimes, g)
    out = run_lifetimes(agent, cfg, life, g, train=False)
    stats = {k: mean_se(x) if x.numel() else (math.nan, math.nan)
             for k, x in _first_pull_groups(out["rewards"], life["recurring"]).items()}
    stats["first pull by chance"] = ((cfg.p_good + (cfg.arms - 1) * cfg.p_bad) / cfg.arms, 0.0)
    return stats


# ----------------------------------------------------------------------------- the learner
class EpisodicRL2Learner:
    """Episodic meta-RL as the run harness drives it (:mod:`metarl.algos.harness`): each :meth:`step`
    runs a batch of ``lifetimes`` fresh lifetimes and makes one A2C update (Adam) on them."""

    kind = "episodic-rl2"

    def __init__(self, cfg: EpisodicRL2Config):
        self.config = cfg
        torch.manual_seed(cfg.seed)
        self.agent = EpisodicAgent(cfg)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(cfg.seed)       # lifetimes, actions and rewards
        self.iterations = cfg.iterations
        self.iteration = 0
        self.steps_per_iteration = cfg.lifetimes * cfg.trials_per_lifetime * cfg.pulls_per_trial

    @property
    def env_steps(self) -> int:
        """Pulls so far (all lifetimes together)."""
        return self.iteration * self.steps_per_iteration

    def step(self) -> dict:
        cfg = self.config
        life = sample_lifetimes(cfg, cfg.lifetimes, self.generator)
        out = run_lifetimes(self.agent, cfg, life, self.generator)
        ent_coef = cfg.entropy_coef * (1 - self.iteration / cfg.iterations)
        loss = out["pg_loss"] + cfg.value_coef * out["v_loss"] - ent_coef * out["entropy_t"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.iteration += 1
        means = {k: float(x.mean()) for k, x in _first_pull_groups(out["rewards"], life["recurring"]).items()}
        return {"first_pull_recurring": means["first pull, recurring task"],
                "first_pull_new": means["first pull, new task"],
                "reward_per_pull": means["reward per pull"], "entropy": out["entropy"]}

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "agent": self.agent.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.iteration = int(sd["iteration"])
        self.agent.load_state_dict(sd["agent"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.generator.set_state(sd["generator"])

    def report(self, num_tasks: int | None = None) -> dict:
        """``{"eval": evaluate(...)}`` over ``num_tasks`` held-out lifetimes (default ``eval_lifetimes``)."""
        return {"eval": evaluate(self.agent, self.config, num_tasks)}


def train(cfg: EpisodicRL2Config, run_dir=None, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, max_iterations: int | None = None) -> dict:
    """Train the agent (module docstring) through the run harness (:func:`metarl.algos.harness.run`);
    returns its summary (``iterations``, ``env_steps`` (pulls), ``train_seconds``, ``interrupted``,
    ``history``, and after a complete run ``eval``: :func:`evaluate`) with ``model``, the trained
    :class:`EpisodicAgent`. ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv``
    (first-pull rewards, reward per pull, entropy), ``checkpoint.pt`` and ``summary.json``;
    ``resume=True`` continues from its checkpoint with the results of an uninterrupted run;
    ``overwrite=True`` starts over in a directory that holds a run. ``max_iterations`` stops early."""
    learner = EpisodicRL2Learner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations,
                          progress_keys=("first_pull_recurring", "first_pull_new", "reward_per_pull"))
    return {**summary, "model": learner.agent}


def load_model(run_dir) -> tuple[EpisodicAgent, EpisodicRL2Config]:
    """The trained agent and config of a run directory (from its checkpoint)."""
    ck = harness.load_checkpoint(run_dir, EpisodicRL2Learner.kind)
    cfg = EpisodicRL2Config(**ck["config"])
    agent = EpisodicAgent(cfg)
    agent.load_state_dict(ck["learner"]["agent"])
    return agent, cfg


def report(agent: EpisodicAgent, cfg: EpisodicRL2Config, lifetimes: int | None = None) -> dict:
    """The trained agent on ``lifetimes`` held-out lifetimes (:func:`evaluate`)."""
    return evaluate(agent, cfg, lifetimes)


__all__ = ["EpisodicRL2Config", "EpisodicRL2Learner", "EpisodicLSTMCell", "EpisodicAgent", "EpisodicMemory",
           "sample_lifetimes", "run_lifetimes", "evaluate", "train", "load_model", "report"]
