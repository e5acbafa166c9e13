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
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from metarl import checkpoint
from metarl.algos._run import (
    CHECKPOINT,
    CONFIG_JSON,
    ProgressLog,
    check_nonnegative,
    check_positive,
    check_positive_ints,
    check_unit_interval,
    load_for_resume,
)
from metarl.memory import DND


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass
class EpisodicRL2Config:
    """Episodic meta-RL on recurring contextual bandits (module docstring)."""

    arms: int = 4
    """Arms per bandit task."""
    p_good: float = 0.9
    """Reward probability of a task's good arm."""
    p_bad: float = 0.1
    """Reward probability of every other arm."""
    context_dim: int = 16
    """Size of a task's context vector (standard normal entries over √context_dim)."""
    tasks_per_lifetime: int = 3
    """Distinct tasks in one lifetime (drawn afresh per lifetime; trials pick among them)."""
    trials_per_lifetime: int = 6
    """Trials in one lifetime (the memory is emptied at a lifetime's start)."""
    pulls_per_trial: int = 10
    """Pulls in one trial (the LSTM state is reset at a trial's start)."""
    memory: bool = True
    """Store and reinstate cell states (False: the RL^2 baseline with an empty memory)."""
    match_scale: float = 10.0
    """κ of the match signal exp(−κ d²) given to the agent with the retrieved state."""
    hidden: int = 64
    """LSTM hidden size."""
    lifetimes: int = 32
    """Lifetimes run in parallel per update (the batch)."""
    iterations: int = 800
    """Updates (one Adam step per batch of lifetimes)."""
    lr: float = 5e-3
    """Adam learning rate."""
    gamma: float = 0.9
    """Discount within a trial."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.01
    """Entropy bonus at the start, annealed linearly to 0 over training."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    eval_lifetimes: int = 500
    """Held-out lifetimes evaluated at the end."""
    seed: int = 0
    """Seed of the network init, tasks and action sampling."""
    checkpoint_minutes: float = 5.0
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def __post_init__(self):
        check_positive_ints(self, "arms", "context_dim", "tasks_per_lifetime", "trials_per_lifetime", "pulls_per_trial",
                            "hidden", "lifetimes", "iterations", "eval_lifetimes")
        if self.arms < 2:
            raise ValueError(f"arms must be >= 2, got {self.arms}")
        check_unit_interval(self, "p_good", "p_bad", "gamma")
        check_positive(self, "lr", "match_scale", "max_grad_norm")
        check_nonnegative(self, "value_coef", "entropy_coef")

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


def _first_pull_stats(rewards: torch.Tensor, recurring: torch.Tensor) -> dict:
    first = rewards[:, :, 0]
    rec, new = first[recurring], first[~recurring]

    def mean_se(x):
        if x.numel() == 0:
            return math.nan, math.nan
        se = float(x.std() / math.sqrt(x.numel())) if x.numel() > 1 else math.nan
        return float(x.mean()), se
    return {"first pull, recurring task": mean_se(rec), "first pull, new task": mean_se(new),
            "reward per pull": mean_se(rewards.mean((1, 2)))}


@torch.no_grad()
def evaluate(agent: EpisodicAgent, cfg: EpisodicRL2Config, lifetimes: int | None = None, seed: int = 12345) -> dict:
    """First-pull reward on recurring and on new tasks and the reward per pull, ``(mean, s.e.)``,
    over ``lifetimes`` held-out lifetimes (chance for the first pull: the arms' mean probability)."""
    lifetimes = lifetimes or cfg.eval_lifetimes
    g = torch.Generator().manual_seed(seed)
    life = sample_lifetimes(cfg, lifetimes, g)
    out = run_lifetimes(agent, cfg, life, g, train=False)
    stats = _first_pull_stats(out["rewards"], life["recurring"])
    stats["first pull by chance"] = ((cfg.p_good + (cfg.arms - 1) * cfg.p_bad) / cfg.arms, 0.0)
    return stats


# ----------------------------------------------------------------------------- training
def train(cfg: EpisodicRL2Config, run_dir=None, *, resume: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Train the agent (module docstring); returns ``{"iterations", "env_steps", "train_seconds",
    "eval", "model"}`` (``eval`` once the run is complete). ``run_dir`` receives ``config.json``,
    ``progress.csv`` (``env_steps``, first-pull rewards, reward per pull, entropy) and
    ``checkpoint.pt`` (atomic; periodic, at the end and on Ctrl-C); ``resume=True`` continues
    from it with the results of an uninterrupted run."""
    run_dir = Path(run_dir) if run_dir is not None else None
    torch.manual_seed(cfg.seed)
    agent = EpisodicAgent(cfg)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    it = 0
    if resume:
        ck = load_for_resume(run_dir, "episodic-rl2", cfg)
        agent.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        g.set_state(ck["generator"])
        it = ck["iteration"]
    steps_per_it = cfg.lifetimes * cfg.trials_per_lifetime * cfg.pulls_per_trial
    header = ["iteration", "env_steps", "first_pull_recurring", "first_pull_new", "reward_per_pull", "entropy",
              "seconds"]
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_JSON).write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    log = ProgressLog(run_dir, header, keep_through=it if resume else None)
    total = cfg.iterations if max_iterations is None else min(cfg.iterations, max_iterations)

    def snapshot():
        return {"config": dataclasses.asdict(cfg), "iteration": it, "model": agent.state_dict(),
                "optimizer": optimizer.state_dict(), "generator": g.get_state()}

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=it, unit="update", dynamic_ncols=True)
    start = last_ckpt = time.perf_counter()
    interrupted, last = False, None
    try:
        while it < total:
            if run_dir is not None:
                last = copy.deepcopy(snapshot())
            life = sample_lifetimes(cfg, cfg.lifetimes, g)
            out = run_lifetimes(agent, cfg, life, g)
            ent_coef = cfg.entropy_coef * (1 - it / cfg.iterations)
            loss = out["pg_loss"] + cfg.value_coef * out["v_loss"] - ent_coef * out["entropy_t"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
            it += 1
            stats = _first_pull_stats(out["rewards"], life["recurring"])
            row = [it, it * steps_per_it, stats["first pull, recurring task"][0], stats["first pull, new task"][0],
                   stats["reward per pull"][0], out["entropy"], time.perf_counter() - start]
            log.write(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(recurring=f"{row[2]:.2f}", new=f"{row[3]:.2f}", pull=f"{row[4]:.2f}")
            if run_dir is not None and time.perf_counter() - last_ckpt > 60 * cfg.checkpoint_minutes:
                checkpoint.save(run_dir / CHECKPOINT, snapshot(), kind="episodic-rl2")
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        log.close()
        if run_dir is not None:
            checkpoint.save(run_dir / CHECKPOINT, last if interrupted and last is not None else snapshot(),
                            kind="episodic-rl2")
    summary = {"iterations": it, "env_steps": it * steps_per_it, "train_seconds": time.perf_counter() - start}
    if interrupted:
        summary["interrupted"] = True
    elif it >= cfg.iterations:
        summary["eval"] = evaluate(agent, cfg)
    if run_dir is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    summary["model"] = agent
    return summary


def load_model(run_dir) -> tuple[EpisodicAgent, EpisodicRL2Config]:
    """The trained agent and config of a run directory (from its checkpoint)."""
    ck = checkpoint.load(Path(run_dir) / CHECKPOINT, kind="episodic-rl2")
    cfg = EpisodicRL2Config(**ck["config"])
    agent = EpisodicAgent(cfg)
    agent.load_state_dict(ck["model"])
    return agent, cfg


def report(agent: EpisodicAgent, cfg: EpisodicRL2Config, lifetimes: int | None = None) -> dict:
    """:func:`evaluate` for the CLI's ``metarl eval``."""
    return evaluate(agent, cfg, lifetimes)


__all__ = ["EpisodicRL2Config", "EpisodicLSTMCell", "EpisodicAgent", "EpisodicMemory", "sample_lifetimes",
           "run_lifetimes", "evaluate", "train", "load_model", "report"]
