"""Classical Bernoulli-bandit baselines of RL^2 Table 1 (Duan et al. 2016, §4.1), batched over tasks.

Every strategy keeps Beta(1, 1) posteriors per arm as success/failure counts
``successes[N, K]``, ``failures[N, K]`` (float32) and picks one arm per task per pull
with batched torch ops (no Python loop over tasks). :func:`evaluate_bandit` plays
them against the real ``Bandit-v0`` env (``autoreset_mode="same_step"``), so the
rewards are the env's own Bernoulli draws.

A strategy is a class ``Strategy(num_tasks, arms, horizon, generator, device, **kwargs)``
with ``select(successes, failures, t) -> LongTensor[N]`` (``t``: pulls made so far);
:data:`BANDIT_BASELINES` maps the names to these classes.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from metarl.baselines._common import (
    argmax_random_ties,
    check_int,
    check_name,
    check_nonneg,
    check_prob,
    make_generator,
    sample_gamma,
)

# ε for ε-greedy and c for UCB1 by horizon n, tuned here by a grid search on tasks
# drawn with other seeds than the tests' (the paper tuned its baselines' hyperparameters
# but does not print the values). Horizons between the rows use the nearest row.
EPSILON_BY_HORIZON = {10: 0.0, 100: 0.05, 500: 0.05}
UCB_C_BY_HORIZON = {10: 0.1, 100: 0.2, 500: 0.2}
GITTINS_GAMMA_BY_HORIZON = {10: 0.8, 100: 0.99, 500: 0.995}
BAYES_OPTIMAL_MAX_HORIZON = 20
"""The exact DP is offered up to this horizon: K = 5, n = 20 has 2.4e5 decision states (about 3 s);
n = 30 has 6.4e6 (about 2 minutes)."""


def _by_horizon(table: dict, horizon: int) -> float:
    return table[min(table, key=lambda h: (abs(math.log(h / horizon)), h))]


def posterior_mean(successes: torch.Tensor, failures: torch.Tensor) -> torch.Tensor:
    """Mean of the Beta(1 + successes, 1 + failures) posterior of every arm."""
    return (successes + 1.0) / (successes + failures + 2.0)


class BanditStrategy:
    """Base class: holds the sizes and the strategy's random generator."""

    def __init__(self, num_tasks: int, arms: int, horizon: int, generator: torch.Generator, device):
        self.num_tasks, self.arms, self.horizon = num_tasks, arms, horizon
        self.generator, self.device = generator, torch.device(device)

    def select(self, successes: torch.Tensor, failures: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError


class RandomStrategy(BanditStrategy):
    """Random: pull an arm uniformly at random every step (RL^2 Table 1, "Random")."""

    def select(self, successes, failures, t):
        return torch.randint(0, self.arms, (self.num_tasks,), generator=self.generator, device=self.device)


class GreedyStrategy(BanditStrategy):
    """Greedy: pull the arm with the highest Beta(1, 1) posterior mean, ties uniformly at random
    (RL^2 §4.1, "Greedy", the ε = 0 case of ε-greedy). With the prior an untried arm (mean 1/2)
    beats an arm that failed, so greedy tries new arms until one succeeds."""

    def select(self, successes, failures, t):
        return argmax_random_ties(posterior_mean(successes, failures), self.generator)


class EpsilonGreedyStrategy(BanditStrategy):
    """ε-Greedy: with probability ε a uniformly random arm, else the greedy arm (Sutton & Barto
    §2.2; RL^2 §4.1, where ε is tuned). ``epsilon`` defaults to :data:`EPSILON_BY_HORIZON`
    (tuned here per horizon; ε = 0 at n = 10 where exploring at random only costs)."""

    def __init__(self, *args, epsilon: float | None = None):
        super().__init__(*args)
        self.epsilon = _by_horizon(EPSILON_BY_HORIZON, self.horizon) if epsilon is None \
            else check_prob("epsilon", epsilon)

    def select(self, successes, failures, t):
        greedy = argmax_random_ties(posterior_mean(successes, failures), self.generator)
        explore = torch.rand(self.num_tasks, generator=self.generator, device=self.device) < self.epsilon
        rand = torch.randint(0, self.arms, (self.num_tasks,), generator=self.generator, device=self.device)
        return torch.where(explore, rand, greedy)


class UCB1Strategy(BanditStrategy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002): ``argmax_i mean_i + c * sqrt(2 ln t / n_i)``.

    ``prior=True`` (default, as RL^2 §4.1): the statistics start with one success and one
    failure per arm (the Beta(1, 1) prior), so ``mean_i = (s_i + 1) / (n_i + 2)``,
    ``n_i`` counts the pulls plus 2 and ``t`` the pulls of all arms plus ``2K``; no forced
    first pulls. ``prior=False``: the textbook UCB1 — every untried arm first (random
    order), then the empirical mean with ``t`` the pulls so far. ``c`` defaults to
    :data:`UCB_C_BY_HORIZON` (tuned here; the paper tunes c). Ties uniformly at random.
    """

    def __init__(self, *args, c: float | None = None, prior: bool = True):
        super().__init__(*args)
        self.c = _by_horizon(UCB_C_BY_HORIZON, self.horizon) if c is None else check_nonneg("c", c)
        if not isinstance(prior, bool):
            raise ValueError(f"prior must be a bool, got {prior!r}")
        self.prior = prior

    def select(self, successes, failures, t):
        pulls = successes + failures
        if self.prior:
            n = pulls + 2.0
            total = t + 2.0 * self.arms
            score = (successes + 1.0) / n + self.c * torch.sqrt(2.0 * math.log(total) / n)
        else:
            n = pulls.clamp_min(1.0)
            score = successes / n + self.c * torch.sqrt(2.0 * math.log(max(t, 1)) / n)
            score = torch.where(pulls == 0, torch.full_like(score, math.inf), score)
        return argmax_random_ties(score, self.generator)


class ThompsonStrategy(BanditStrategy):
    """Thompson sampling (Thompson 1933; Chapelle & Li 2011): draw one mean per arm from its
    Beta(1 + s, 1 + f) posterior and pull the arm with the largest draw (RL^2 §4.1, "TS")."""

    def select(self, successes, failures, t):
        a = sample_gamma(successes + 1.0, self.generator)
        b = sample_gamma(failures + 1.0, self.generator)
        return (a / (a + b)).argmax(-1)


# ---------------------------------------------------------------------------------------------
# Bayes-optimal finite-horizon policy: exact DP over Beta posteriors.

def _code(s: int, f: int) -> int:
    """Index of the per-arm posterior state (s successes, f failures); (0, 0) -> 0."""
    m = s + f
    return m * (m + 1) // 2 + s


def _hash_weights(horizon: int) -> np.ndarray:
    """Random 64-bit weight per arm state ((0, 0) -> 0); a task's state hashes to the sum of its
    arms' weights (mod 2**64): symmetric in the arms, and untouched arms add nothing."""
    n_codes = (horizon + 1) * (horizon + 2) // 2
    w = np.random.default_rng(20161102).integers(-2 ** 63, 2 ** 63 - 1, size=n_codes, dtype=np.int64)
    w[0] = 0
    return w


def _wrap(x: int) -> int:
    return (x + 2 ** 63) % 2 ** 64 - 2 ** 63


@functools.lru_cache(maxsize=16)
def bayes_optimal_table(arms: int, horizon: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Solve the K-armed Bernoulli bandit with Beta(1, 1) priors over ``horizon`` pulls exactly.

    Bellman recursion over posterior states (Bellman 1956; Gittins 1979 for the
    finite-horizon Bayesian bandit): ``V(x) = max_i p_i (1 + V(x with arm i's s + 1))
    + (1 - p_i) V(x with arm i's f + 1)``, ``p_i = (s_i + 1) / (s_i + f_i + 2)``, ``V = 0``
    after ``horizon`` pulls. The recursion is symmetric in the arms, so a state is the
    sorted multiset of the touched arms' ``(s, f)`` (untouched arms are implicit): the
    count depends on ``horizon`` far more than on ``arms``.

    Returns ``(value, keys, best)``: ``value`` is the expected total reward under the prior
    (the Bayes-optimal value: about 6.66 for K = 5, n = 10); ``keys`` the sorted hashes
    (int64) of every decision state and ``best[j]`` the code of the arm state to pull there.
    """
    w = _hash_weights(horizon)
    memo: dict[tuple, float] = {}
    best_code: dict[tuple, int] = {}

    def replace(state: tuple, old: tuple, new: tuple) -> tuple:
        lst = list(state)
        if old != (0, 0):
            lst.remove(old)
        lst.append(new)
        return tuple(sorted(lst, reverse=True))

    def value(state: tuple, remaining: int) -> float:
        if remaining == 0:
            return 0.0
        got = memo.get(state)
        if got is not None:
            return got
        classes = sorted(set(state), reverse=True)
        if len(state) < arms:
            classes.append((0, 0))
        best, arg = -1.0, None
        for s, f in classes:
            p = (s + 1) / (s + f + 2)
            q = p * (1.0 + value(replace(state, (s, f), (s + 1, f)), remaining - 1)) \
                + (1.0 - p) * value(replace(state, (s, f), (s, f + 1)), remaining - 1)
            if q > best + 1e-12:
                best, arg = q, _code(s, f)
        memo[state] = best
        best_code[state] = arg
        return best

    v0 = value((), horizon)
    keys = np.empty(len(best_code), dtype=np.int64)
    codes = np.empty(len(best_code), dtype=np.int64)
    for j, (state, c) in enumerate(best_code.items()):
        keys[j] = _wrap(sum(int(w[_code(s, f)]) for s, f in state))
        codes[j] = c
    order = np.argsort(keys, kind="stable")
    keys, codes = keys[order], codes[order]
    if np.any(keys[1:] == keys[:-1]):  # a 64-bit collision: never seen, but never silent
        raise RuntimeError("bayes_optimal_table: hash collision between posterior states")
    return v0, torch.from_numpy(keys), torch.from_numpy(codes)


class BayesOptimalStrategy(BanditStrategy):
    """Bayes-optimal: the exact finite-horizon Bayes-optimal policy under Beta(1, 1) priors,
    from :func:`bayes_optimal_table` (dynamic programming; the quantity RL^2's Gittins column
    approximates). Ties between equally good arm states go to the first in the DP's order;
    among arms sharing that state, uniformly at random. Offered for ``horizon <=``
    :data:`BAYES_OPTIMAL_MAX_HORIZON`."""

    def __init__(self, *args):
        super().__init__(*args)
        if self.horizon > BAYES_OPTIMAL_MAX_HORIZON:
            raise ValueError(f"horizon must be <= {BAYES_OPTIMAL_MAX_HORIZON} for 'bayes_optimal' (exact DP); "
                             f"got {self.horizon}: use 'gittins' for longer horizons")
        self.value, keys, best = bayes_optimal_table(self.arms, self.horizon)
        self.keys, self.best = keys.to(self.device), best.to(self.device)
        self.weights = torch.from_numpy(_hash_weights(self.horizon)).to(self.device)

    def select(self, successes, failures, t):
        s, f = successes.to(torch.int64), failures.to(torch.int64)
        m = s + f
        codes = m * (m + 1) // 2 + s
        h = self.weights[codes].sum(-1)          # int64, wraps mod 2**64 like _wrap
        idx = torch.searchsorted(self.keys, h).clamp_max(self.keys.numel() - 1)
        if not bool((self.keys[idx] == h).all()):
            raise RuntimeError("BayesOptimalStrategy: a posterior state is missing from the DP table")
        target = self.best[idx]
        return argmax_random_ties((codes == target[:, None]).to(torch.float32), self.generator)


# ---------------------------------------------------------------------------------------------
# Gittins index (discounted, infinite horizon), used as a policy for finite horizons.

@functools.lru_cache(maxsize=8)
def gittins_table(gamma: float, max_pulls: int, grid: int = 1001, extra: int = 300) -> torch.Tensor:
    """Gittins indices ``G[s, f]`` (float64, ``s + f <= max_pulls``) of a Bernoulli arm with a
    Beta(1 + s, 1 + f) posterior and discount ``gamma``, by the calibration (retirement) method
    (Gittins 1979; Gittins, Glazebrook & Weber 2011, §8): the index is the per-step reward
    ``lam`` of a safe arm at which pulling once more and retiring are equally good.

    All states are solved at once for a grid of ``grid`` values of ``lam`` in [0, 1] (one
    backward DP over ``s + f`` per grid value, batched), and the index is interpolated
    linearly between the grid points around the sign change. The DP is truncated
    ``extra`` pulls past ``max_pulls``, where the value is approximated by that of a known
    arm, ``max(lam, mean) / (1 - gamma)``. Runs on one CPU thread (many small ops: on a
    shared machine intra-op threading made it 50x slower); cached per arguments.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gittins_table(gamma, max_pulls, grid, extra)
    finally:
        torch.set_num_threads(threads)


def _gittins_table(gamma: float, max_pulls: int, grid: int, extra: int) -> torch.Tensor:
    lam = torch.linspace(0.0, 1.0, grid, dtype=torch.float64)[:, None]     # [G, 1]
    retire = lam / (1.0 - gamma)
    depth = max_pulls + extra
    s = torch.arange(depth + 1, dtype=torch.float64)
    mean = (s + 1.0) / (depth + 2.0)
    w = torch.maximum(lam, mean[None]) / (1.0 - gamma)                       # [G, depth + 1] at m = depth
    out = torch.zeros((max_pulls + 1, max_pulls + 1), dtype=torch.float64)
    for m in range(depth - 1, -1, -1):
        s = torch.arange(m + 1, dtype=torch.float64)
        p = (s + 1.0) / (m + 2.0)
        cont = p + gamma * (p * w[:, 1:] + (1.0 - p) * w[:, :-1])         # w[:, j] is (s=j, f=m+1-j)
        w = torch.maximum(retire, cont)
        if m <= max_pulls:
            diff = cont - retire                                           # decreasing in lam
            above = (diff > 0).sum(0).clamp(1, grid - 1)                   # first grid index with diff <= 0
            d0 = diff.gather(0, (above - 1)[None])[0]
            d1 = diff.gather(0, above[None])[0]
            l0 = lam[above - 1, 0]
            frac = (d0 / (d0 - d1)).clamp(0.0, 1.0)
            idx = l0 + frac / (grid - 1)
            si = torch.arange(m + 1)
            out[si, m - si] = idx
    return out


class GittinsStrategy(BanditStrategy):
    """Gittins index policy (Gittins 1979; RL^2 §4.1, "Gittins"): pull the arm with the largest
    discounted Gittins index of its Beta posterior (:func:`gittins_table`). The index is
    Bayes-optimal for the discounted infinite-horizon problem; here it is an approximation
    for n pulls, with discount ``gamma`` defaulting to :data:`GITTINS_GAMMA_BY_HORIZON`
    (tuned here per horizon). Ties uniformly at random."""

    def __init__(self, *args, gamma: float | None = None):
        super().__init__(*args)
        g = _by_horizon(GITTINS_GAMMA_BY_HORIZON, self.horizon) if gamma is None else gamma
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 < float(g) < 1.0:
            raise ValueError(f"gamma must be a number in (0, 1), got {g!r}")
        self.gamma = float(g)
        self.table = gittins_table(self.gamma, self.horizon).to(self.device, torch.float32)

    def select(self, successes, failures, t):
        s, f = successes.to(torch.int64), failures.to(torch.int64)
        return argmax_random_ties(self.table[s, f], self.generator)


BANDIT_BASELINES: dict[str, type[BanditStrategy]] = {
    "random": RandomStrategy,
    "greedy": GreedyStrategy,
    "epsilon_greedy": EpsilonGreedyStrategy,
    "ucb1": UCB1Strategy,
    "thompson": ThompsonStrategy,
    "gittins": GittinsStrategy,
    "bayes_optimal": BayesOptimalStrategy,
}
"""Name -> strategy class (``Strategy(num_tasks, arms, horizon, generator, device, **kwargs)``)."""


def check_probs(probs) -> torch.Tensor:
    if not isinstance(probs, torch.Tensor):
        raise ValueError(f"probs must be a torch.Tensor [N, K], got {type(probs).__name__}")
    if probs.dim() != 2 or probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(f"probs must have shape [N, K] with N, K >= 1, got {tuple(probs.shape)}")
    if not probs.dtype.is_floating_point:
        raise ValueError(f"probs must be floating point, got dtype {probs.dtype}")
    if not bool(((probs >= 0) & (probs <= 1)).all()):  # also rejects NaN
        raise ValueError("probs must lie in [0, 1] (and be finite)")
    return probs.to(torch.float32).contiguous()


def evaluate_bandit(name: str, probs: torch.Tensor, horizon: int, *, seed: int = 0, **kwargs) -> torch.Tensor:
    """Total reward ``[N]`` (float32) of strategy ``name`` over ``horizon`` pulls of each task.

    Args:
        name: a key of :data:`BANDIT_BASELINES`.
        probs: ``[N, K]`` Bernoulli arm means in [0, 1], one task per row (``Bandit-v0``'s
            ``tasks.probs``), on the device to run on.
        horizon: n, pulls per task.
        seed: seeds the env's reward stream and the strategy's own stream (same seed:
            same result).
        **kwargs: the strategy's options (``epsilon``, ``c``, ``prior``, ``gamma``).

    Example::

        >>> import torch
        >>> from metarl.baselines import evaluate_bandit, summary
        >>> probs = torch.rand(1000, 5, generator=torch.Generator().manual_seed(0))
        >>> totals = evaluate_bandit("thompson", probs, 10, seed=0)
        >>> totals.shape
        torch.Size([1000])
    """
    import metarl
    from metarl.envs.bandit import BanditTasks

    check_name(name, BANDIT_BASELINES, "bandit baselines")
    probs = check_probs(probs)
    horizon = check_int("horizon", horizon)
    n, k = probs.shape
    dev = probs.device
    strategy = BANDIT_BASELINES[name](n, k, horizon, make_generator(seed, dev, 1), dev, **kwargs)
    env = metarl.make_vec("Bandit-v0", n, arms=k, seed=int(seed), device=dev, autoreset_mode="same_step")
    env.reset(seed=int(seed), options={"tasks": BanditTasks(probs)})
    successes = torch.zeros((n, k), dtype=torch.float32, device=dev)
    failures = torch.zeros((n, k), dtype=torch.float32, device=dev)
    rows = torch.arange(n, device=dev)
    for t in range(horizon):
        arm = strategy.select(successes, failures, t)
        _, reward, _, _, _ = env.step(arm)
        successes[rows, arm] += reward
        failures[rows, arm] += 1.0 - reward
    return successes.sum(-1)
