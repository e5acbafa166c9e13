"""Classical baselines of RL^2 Table 2 (Duan et al. 2016, §4.2): random tabular MDPs, batched over tasks.

Each agent keeps, per task, the visit counts ``n[N, S, A]``, reward sums ``r[N, S, A]`` and
transition counts ``c[N, S, A, S]`` of everything it has seen in the trial, builds a
model at every episode start (an estimate or a posterior sample), plans on it by
finite-horizon value iteration (batched einsum over tasks) and acts on the resulting
time-dependent Q-values. :func:`evaluate_tabular` steps the real ``TabularMDP-v0`` env
(``autoreset_mode="same_step"``), so start state, reward noise and transitions are the env's.

Posterior (the conjugate prior that matches the task distribution of ``TabularMDP-v0``):
mean reward ``N(1, 1)`` prior with known noise variance 1 -> ``N((1 + r) / (1 + n), 1 / (1 + n))``;
transitions ``Dirichlet(1, ..., 1)`` -> ``Dirichlet(1 + c)``.

A strategy is a class ``Strategy(num_tasks, S, A, horizon, generator, device, **kwargs)``
with ``plan(counts) -> None`` at episode starts and ``act(state, h) -> LongTensor[N]``.
"""
from __future__ import annotations

import torch

from metarl.baselines._common import (
    argmax_random_ties,
    check_int,
    check_name,
    check_prob,
    make_generator,
    sample_gamma,
)

EPSILON = 0.1
"""Default ε of ε-greedy (probability of a uniformly random action at each step)."""
PRIOR_REWARD_MEAN = 1.0
PRIOR_REWARD_VAR = 1.0
REWARD_NOISE_VAR = 1.0
TIE_ATOL = 1e-9


class Counts:
    """Sufficient statistics of one trial per task (float64)."""

    def __init__(self, n: int, s: int, a: int, device):
        kw = dict(dtype=torch.float64, device=device)
        self.visits = torch.zeros((n, s, a), **kw)
        self.reward_sum = torch.zeros((n, s, a), **kw)
        self.trans = torch.zeros((n, s, a, s), **kw)
        self.rows = torch.arange(n, device=device)

    def add(self, state, action, reward, next_state):
        r = self.rows
        self.visits[r, state, action] += 1.0
        self.reward_sum[r, state, action] += reward.to(torch.float64)
        self.trans[r, state, action, next_state] += 1.0

    def reward_posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the Normal posterior of every mean reward."""
        precision = 1.0 / PRIOR_REWARD_VAR + self.visits / REWARD_NOISE_VAR
        mean = (PRIOR_REWARD_MEAN / PRIOR_REWARD_VAR + self.reward_sum / REWARD_NOISE_VAR) / precision
        return mean, 1.0 / precision

    def posterior_mean_model(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior means: rewards ``(1 + r) / (1 + n)``, transitions ``(1 + c) / (S + n)``."""
        mean, _ = self.reward_posterior()
        alpha = self.trans + 1.0
        return mean, alpha / alpha.sum(-1, keepdim=True)

    def empirical_model(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Maximum-likelihood model: mean observed reward (0 where never tried) and observed
        transition frequencies (uniform where never tried)."""
        reward = self.reward_sum / self.visits.clamp_min(1.0)
        seen = self.trans.sum(-1, keepdim=True)
        uniform = torch.full_like(self.trans, 1.0 / self.trans.shape[-1])
        return reward, torch.where(seen > 0, self.trans / seen.clamp_min(1.0), uniform)


def value_iteration(reward: torch.Tensor, transitions: torch.Tensor, horizon: int) -> torch.Tensor:
    """Finite-horizon Q-values ``[horizon, N, S, A]`` of models ``reward[N, S, A]``,
    ``transitions[N, S, A, S]``: ``Q_h = R + P V_{h+1}``, ``V_h = max_a Q_h``, ``V_horizon = 0``."""
    q = torch.empty((horizon,) + tuple(reward.shape), dtype=reward.dtype, device=reward.device)
    v = torch.zeros(reward.shape[:2], dtype=reward.dtype, device=reward.device)
    for h in range(horizon - 1, -1, -1):
        q[h] = reward + torch.einsum("nsaj,nj->nsa", transitions, v)
        v = q[h].amax(-1)
    return q


class TabularStrategy:
    """Base class: sizes, generator; acts greedily on the Q-values of its last plan."""

    def __init__(self, num_tasks: int, num_states: int, num_actions: int, horizon: int,
                 generator: torch.Generator, device):
        self.num_tasks, self.num_states, self.num_actions, self.horizon = num_tasks, num_states, num_actions, horizon
        self.generator, self.device = generator, torch.device(device)
        self.rows = torch.arange(num_tasks, device=self.device)
        self.q = None

    def plan(self, counts: Counts) -> None:
        raise NotImplementedError

    def greedy(self, state: torch.Tensor, h: int) -> torch.Tensor:
        return argmax_random_ties(self.q[h, self.rows, state], self.generator, atol=TIE_ATOL)

    def act(self, state: torch.Tensor, h: int) -> torch.Tensor:
        return self.greedy(state, h)


class RandomStrategy(TabularStrategy):
    """Random: a uniformly random action every step (RL^2 Table 2, "Random")."""

    def plan(self, counts):
        pass

    def act(self, state, h):
        return torch.randint(0, self.num_actions, (self.num_tasks,), generator=self.generator, device=self.device)


class GreedyStrategy(TabularStrategy):
    """Greedy (certainty equivalence; Kumar & Varaiya 1986): at each episode start, solve an
    estimated model by finite-horizon value iteration and follow it for the episode (RL^2 §4.2,
    "Greedy"). Ties uniformly at random.

    ``model="empirical"`` (default): the maximum-likelihood model (:meth:`Counts.empirical_model`:
    untried actions have reward 0, so the agent sticks to what it has seen) — it reproduces the
    published Greedy column (n = 10: 135.9 here vs 134.8). ``model="posterior"``: the posterior
    mean under the task distribution's own prior (untried actions have reward 1) — a much
    stronger agent (about 154 at n = 10).
    """

    def __init__(self, *args, model: str = "empirical"):
        super().__init__(*args)
        if model not in ("empirical", "posterior"):
            raise ValueError(f"model must be 'empirical' or 'posterior', got {model!r}")
        self.model = model

    def plan(self, counts):
        model = counts.empirical_model() if self.model == "empirical" else counts.posterior_mean_model()
        self.q = value_iteration(*model, self.horizon)


class EpsilonGreedyStrategy(GreedyStrategy):
    """ε-Greedy: the greedy agent, but each step a uniformly random action with probability
    ``epsilon`` (default :data:`EPSILON`; RL^2 §4.2, "ε-Greedy"). ``model`` as for Greedy."""

    def __init__(self, *args, epsilon: float = EPSILON, model: str = "empirical"):
        super().__init__(*args, model=model)
        self.epsilon = check_prob("epsilon", epsilon)

    def act(self, state, h):
        greedy = self.greedy(state, h)
        explore = torch.rand(self.num_tasks, generator=self.generator, device=self.device) < self.epsilon
        rand = torch.randint(0, self.num_actions, (self.num_tasks,), generator=self.generator, device=self.device)
        return torch.where(explore, rand, greedy)


class PSRLStrategy(TabularStrategy):
    """Posterior sampling for RL (Osband, Russo & Van Roy 2013; Strens 2000): at each episode
    start draw one MDP from the posterior — mean rewards from their Normal posteriors (prior
    ``N(1, 1)``, known noise variance 1), transitions from ``Dirichlet(1 + counts)`` — solve it by
    finite-horizon value iteration and act greedily on it for the episode (RL^2 §4.2, "PSRL")."""

    def plan(self, counts):
        mean, var = counts.reward_posterior()
        noise = torch.randn(mean.shape, generator=self.generator, device=self.device, dtype=torch.float64)
        reward = mean + var.sqrt() * noise
        g = sample_gamma(counts.trans + 1.0, self.generator).clamp_min(1e-300)
        self.q = value_iteration(reward, g / g.sum(-1, keepdim=True), self.horizon)


TABULAR_BASELINES: dict[str, type[TabularStrategy]] = {
    "random": RandomStrategy,
    "greedy": GreedyStrategy,
    "epsilon_greedy": EpsilonGreedyStrategy,
    "psrl": PSRLStrategy,
}
"""Name -> strategy class (``Strategy(num_tasks, S, A, horizon, generator, device, **kwargs)``)."""


def evaluate_tabular(name: str, tasks, episodes: int, *, horizon: int = 10, seed: int = 0,
                     **kwargs) -> torch.Tensor:
    """Total reward ``[N]`` (float32) of strategy ``name`` over ``episodes`` episodes of each task.

    Args:
        name: a key of :data:`TABULAR_BASELINES`.
        tasks: ``TabularMDPTasks`` (``mean_reward [N, S, A]``, ``transitions [N, S, A, S]``), as
            ``metarl.make_vec("TabularMDP-v0", N).sample_tasks(N)`` returns; S and A are read
            from the shapes; runs on their device.
        episodes: n, episodes per task (the trial); the agent's statistics persist across them.
        horizon: steps per episode (the env's ``horizon``, default 10).
        seed: seeds the env (rewards, transitions) and the strategy's own stream.
        **kwargs: the strategy's options (``epsilon``, ``model``).

    Example::

        >>> import metarl, torch
        >>> from metarl.baselines import evaluate_tabular
        >>> tasks = metarl.make_vec("TabularMDP-v0", 1).sample_tasks(64, generator=torch.Generator().manual_seed(0))
        >>> evaluate_tabular("psrl", tasks, 2, seed=0).shape
        torch.Size([64])
    """
    import metarl
    from metarl.envs.tabular_mdp import TabularMDPTasks

    check_name(name, TABULAR_BASELINES, "tabular baselines")
    if not isinstance(tasks, TabularMDPTasks):
        raise ValueError(f"tasks must be a TabularMDPTasks (from sample_tasks), got {type(tasks).__name__}")
    mr, p = tasks.mean_reward, tasks.transitions
    if not isinstance(mr, torch.Tensor) or mr.dim() != 3 or min(mr.shape) < 1:
        raise ValueError(f"tasks.mean_reward must be a tensor of shape [N, S, A], got "
                         f"{tuple(mr.shape) if isinstance(mr, torch.Tensor) else type(mr).__name__}")
    n, s, a = mr.shape
    if not isinstance(p, torch.Tensor) or tuple(p.shape) != (n, s, a, s):
        raise ValueError(f"tasks.transitions must have shape {(n, s, a, s)}, got "
                         f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")
    episodes = check_int("episodes", episodes)
    horizon = check_int("horizon", horizon)
    dev = mr.device
    strategy = TABULAR_BASELINES[name](n, s, a, horizon, make_generator(seed, dev, 2), dev, **kwargs)
    env = metarl.make_vec("TabularMDP-v0", n, num_states=s, num_actions=a, horizon=horizon, seed=int(seed),
                          device=dev, autoreset_mode="same_step")
    obs, _ = env.reset(seed=int(seed), options={"tasks": tasks})   # validates the tasks (ValueError)
    state = obs.argmax(-1)
    counts = Counts(n, s, a, dev)
    total = torch.zeros(n, dtype=torch.float64, device=dev)
    for _ in range(episodes):
        strategy.plan(counts)
        for h in range(horizon):
            action = strategy.act(state, h)
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated | truncated
            next_state = torch.where(done, info["final_obs"].argmax(-1), obs.argmax(-1))
            counts.add(state, action, reward, next_state)
            total += reward.to(torch.float64)
            state = obs.argmax(-1)
    return total.to(torch.float32)
