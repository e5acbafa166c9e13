"""MAESN (Gupta, Mendonca, Liu, Abbeel, Levine 2018, "Meta-reinforcement learning of structured
exploration strategies").

A latent-conditioned Gaussian policy ``π_θ(a | s, z)`` (a tanh MLP on ``[s, z]``, learned
``log_std``) and, per meta-training task i, a latent distribution ``N(μ_i, diag σ_i²)``; ``z`` is
drawn ONCE per episode (``z = μ_i + σ_i ⊙ ε``, ε redrawn at each episode start), so exploration is
temporally coherent.

* **inner** (:func:`inner_update`): policy-gradient steps on the latent parameters
  ``(μ_i, log σ_i)`` ONLY, with per-parameter step sizes ``α`` (meta-learned, bounded by
  ``max_inner_lr``, when ``learn_inner_lr``; fixed by default, see the config). Two gradients
  (``latent_gradient``): "reparam" (default) flows through the reparameterised ``z`` into
  ``log π(a | s, z)``; "score" is the likelihood ratio of the latent distribution itself,
  ``∇ log N(z | μ_i, σ_i) · A`` with each episode's z held fixed (:func:`latent_score_losses`, the
  authors' code, which also draws the initial ``μ_i`` from N(0, I): ``latent_init="normal"``);
* **outer**: the VPG loss (linear baseline, per-task normalised advantages) of the trajectories
  sampled with the post-update latents, differentiated through the inner step (second order)
  w.r.t. θ, the pre-update ``(μ_i, log σ_i)`` and α, plus ``kl_coef · KL(N(μ_i, σ_i) ‖ N(0, I))``
  (:func:`kl_standard_normal`). ``outer="adam"`` (default): Adam on the VPG surrogate (a
  departure from the paper: 3-5× cheaper per update here and measured no worse);
  ``outer="trpo"``: the paper's TRPO step (:func:`trpo_outer_step`);
* **test time** (:func:`evaluate`): a new task starts from ``N(0, I)`` and only the latent
  parameters are adapted with the inner rule; returns after 0, 1, ..., ``eval_steps`` steps.

Rewards: MAESN meta-trains on shaped rewards and adapts on the sparse ones at test time.
``train_reward="dense"`` (default) meta-trains goal envs on ``-‖pos − goal‖`` (computed here
from the task's goal and the next observation); ``"env"`` uses the env's own reward.
Evaluation always uses the env's reward (sparse on SemicircleGoal-v0).

Tasks of a batch run in ONE vector env (env j on task ``j // trajectories_per_task``).

What it shows (``bench/reproduce_maesn.py``, SemicircleGoal-v0, seeds 0-2, 40 held-out goals;
bench/RESULTS.md, session 7): with the defaults (60 updates, ~15 s per seed on one core) the goal
region is reached in 44 / 51 / 58 / 65 % of episodes after 0 / 1 / 2 / 3 latent steps, against
43 / 54 / 50 / 50 % for first-order MAML and 35-39 % for a pretrained policy. The defaults that get
there: per-task latents drawn from N(0, I) with σ = 0.1 (distinct task codes from the first update;
with μ_i = 0 and σ = 1 the policy learns to ignore z) and a small KL weight (0.1). The authors'
latent rule (``latent_gradient="score"``) and TRPO step (``outer="trpo"``) measured no better here.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from metarl.algos import harness
from metarl.algos.pg import (
    Batch,
    Params,
    collect,
    dense_rewards,
    eval_task_count,
    gaussian_kl,
    gaussian_log_prob,
    init_mlp,
    make_box_env,
    mlp_forward,
    per_task_mean,
    task_advantages,
    task_mean,
    trpo_step,
)
from metarl.config import Config, env_ids, field


@dataclasses.dataclass
class MAESNConfig(Config):
    """MAESN on a goal-reaching family. Defaults: the small CPU run measured on SemicircleGoal-v0
    (module docstring: ~15 s on one core)."""

    env: str = field("SemicircleGoal-v0", choices=env_ids)
    """Task distribution: a metarl env id with Box actions (SemicircleGoal-v0, Navigation2D-v0)."""
    num_train_tasks: int = field(20, ge=1)
    """Meta-training tasks (``sample_task_split``'s train set); each has its own (μ_i, σ_i)."""
    meta_batch_size: int = field(10, ge=1)
    """Tasks per outer update (drawn from the train set without replacement)."""
    trajectories_per_task: int = field(5, ge=1)
    """K: episodes per task per rollout (one z per episode)."""
    latent_dim: int = field(2, ge=1)
    """Dimension of z (the paper: 2)."""
    hidden: int = field(64, ge=1)
    """Hidden units of each of the two tanh layers of the policy mean."""
    inner_steps: int = field(1, ge=1)
    """Inner latent updates per task during meta-training."""
    latent_gradient: str = field("reparam", choices=("reparam", "score"))
    """Gradient of the inner (latent) policy-gradient step: "reparam" (through ``z = μ + σ ⊙ ε`` into
    ``log π(a | s, z)``) or "score" (the likelihood ratio of the latent distribution,
    ``∇ log N(z | μ, σ) · A`` with the episode's z held fixed: the authors' code)."""
    latent_init: str = field("normal", choices=("normal", "zeros"))
    """Initial per-task latent means: "normal" (``μ_i ~ N(0, I)``, the authors' code) or "zeros";
    ``log σ_i`` starts at ``latent_init_log_sigma``."""
    latent_init_log_sigma: float = field(-2.3, ge=-20, le=5)
    """Initial ``log σ_i`` of every training task's latent distribution. Default σ = 0.1 (the authors'
    code: 1): each task's z starts as a distinct code, which θ can learn to use before the KL term
    widens σ (to ~0.3 after the default 60 updates). With σ = 1 the per-task codes drown in their
    own noise and the policy learns to ignore z (bench/RESULTS.md, session 7)."""
    inner_lr: float = field(20.0, gt=0)
    """Initial inner step size α of μ and log σ (meta-learned per parameter when ``learn_inner_lr``)."""
    learn_inner_lr: bool = False
    """Meta-learn the per-parameter inner step sizes α (as the paper). Off by default: in short CPU
    runs on SemicircleGoal-v0 (session 3's defaults) the learned α grew (20 -> 65-95) and the post-update
    returns collapsed."""
    max_inner_lr: float = field(40.0, gt=0)
    """Upper bound of the learned α (when ``learn_inner_lr``)."""
    outer: str = field("adam", choices=("adam", "trpo"))
    """Outer optimiser: "adam" (Adam on the VPG surrogate, ``outer_lr`` / ``latent_lr``) or "trpo" (the
    paper's: one natural-gradient step of θ, the batch's latents and α on the likelihood-ratio
    surrogate plus the KL penalty, constrained by the mean KL of the post-update policy ≤ ``max_kl``;
    conjugate gradient + backtracking line search, :func:`metarl.algos.pg.trpo_step` with rllab's
    constants)."""
    max_kl: float = field(0.01, gt=0)
    """Trust region of the "trpo" outer step (mean KL between the sampling and the updated
    post-update policies; the authors' step size 0.01)."""
    outer_lr: float = field(3e-3, gt=0)
    """Adam learning rate of the policy weights θ (``outer="adam"``)."""
    latent_lr: float = field(0.03, gt=0)
    """Adam learning rate of the per-task latent initialisations (μ_i, log σ_i) and of log α
    (``outer="adam"``)."""
    kl_coef: float = field(0.1, ge=0)
    """Weight of KL(N(μ_i, σ_i) ‖ N(0, I)) in the outer loss (per task, averaged over the batch; the
    authors used 0.1 and 0.5)."""
    init_log_std: float = field(-1.6, ge=-20, le=5)
    """Initial log standard deviation of the actions (learned)."""
    gamma: float = field(0.99, ge=0, le=1)
    """Discount of the returns in the policy-gradient losses."""
    train_reward: str = field("dense", choices=("dense", "env"))
    """Meta-training reward: "dense" (-‖pos − goal‖, goal envs) or "env" (the env's own reward)."""
    inner_reward: str = field("same", choices=("same", "dense", "env"))
    """Reward of the inner (latent) steps during meta-training: "same" (``train_reward``), "dense" or
    "env". "env" on SemicircleGoal-v0 adapts on the sparse reward as at test time while the outer
    objective keeps ``train_reward`` (measured worse than "same" in short runs: bench/RESULTS.md)."""
    iterations: int = field(60, ge=1)
    """Outer updates."""
    max_grad_norm: float = field(1.0, gt=0)
    """Clip of the outer gradient's global norm."""
    eval_tasks: int = field(40, ge=0)
    """Held-out tasks evaluated at the end of training and by ``metarl eval`` (0: no evaluation at
    the end; ``metarl eval --tasks N`` and ``evaluate(..., num_tasks=N)`` still evaluate N)."""
    eval_steps: int = field(3, ge=1)
    """Adaptation steps evaluated (returns after 0, 1, ..., eval_steps steps)."""
    seed: int = field(0, ge=0)
    """Seed of the envs, tasks, init and sampling."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def check(self):
        if self.meta_batch_size > self.num_train_tasks:
            raise ValueError(f"meta_batch_size ({self.meta_batch_size}) must not exceed num_train_tasks "
                             f"({self.num_train_tasks})")
        if self.inner_lr > self.max_inner_lr:
            raise ValueError(f"inner_lr ({self.inner_lr}) must not exceed max_inner_lr ({self.max_inner_lr}), "
                             f"which bounds the step size")
        if "dense" in (self.train_reward, self.inner_reward) and self.env not in ("SemicircleGoal-v0",
                                                                                   "Navigation2D-v0"):
            raise ValueError(f"train_reward='dense' (or inner_reward='dense') needs a goal env (SemicircleGoal-v0, "
                             f"Navigation2D-v0), got env={self.env!r}")


# ----------------------------------------------------------------------------- pieces
def make_env(cfg: MAESNConfig, num_envs: int, seed: int | None = None):
    """``num_envs`` copies of ``cfg.env`` (Box actions only)."""
    return make_box_env(cfg.env, num_envs, cfg.seed if seed is None else seed)


def init_model(cfg: MAESNConfig, env, generator: torch.Generator) -> dict:
    """All learned tensors (leaves with ``requires_grad``): ``policy`` (θ: the MLP on ``[s, z]`` and
    ``log_std``), ``mu`` / ``log_sigma`` ``[num_train_tasks, latent_dim]`` (the per-task latent
    initialisations, N(0, I) at the start), ``log_alpha_mu`` / ``log_alpha_sigma`` ``[latent_dim]``."""
    o, a, d = env.obs_dim, env.single_action_space.shape[0], cfg.latent_dim
    policy = init_mlp((o + d, cfg.hidden, cfg.hidden, a), generator, out_scale=0.1)
    policy["log_std"] = torch.full((a,), float(cfg.init_log_std))
    mu = torch.zeros((cfg.num_train_tasks, d))
    if cfg.latent_init == "normal":
        mu = torch.randn((cfg.num_train_tasks, d), generator=generator)
    model = {"policy": {k: v.requires_grad_(True) for k, v in policy.items()},
             "mu": mu.requires_grad_(True),
             "log_sigma": torch.full((cfg.num_train_tasks, d), float(cfg.latent_init_log_sigma), requires_grad=True),
             "log_alpha_mu": torch.full((d,), math.log(cfg.inner_lr), requires_grad=True),
             "log_alpha_sigma": torch.full((d,), math.log(cfg.inner_lr), requires_grad=True),
             "max_inner_lr": float(cfg.max_inner_lr), "latent_gradient": cfg.latent_gradient}
    return model


def param_groups(model: dict, cfg: MAESNConfig) -> list[dict]:
    """Adam groups: θ at ``outer_lr``; the latents (and α when learned) at ``latent_lr``."""
    latent = [model["mu"], model["log_sigma"]]
    if cfg.learn_inner_lr:
        latent += [model["log_alpha_mu"], model["log_alpha_sigma"]]
    return [{"params": list(model["policy"].values()), "lr": cfg.outer_lr}, {"params": latent, "lr": cfg.latent_lr}]


def policy_dist(theta: Params, obs: torch.Tensor, z: torch.Tensor):
    """``π_θ(· | s, z)``: mean and log_std ``[..., a]`` for ``obs [..., o]`` and ``z [..., d]``."""
    x = torch.cat([obs, z.expand(*obs.shape[:-1], z.shape[-1])], -1)
    lead = x.shape[:-1]
    mean = mlp_forward({k: v[None] for k, v in theta.items() if k != "log_std"}, x.reshape(1, -1, x.shape[-1]))
    mean = mean.reshape(*lead, -1)
    return mean, theta["log_std"].expand_as(mean)


def kl_standard_normal(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I)) = Σ_d ½(σ² + μ² − 1) − log σ`` over the last dim."""
    return (0.5 * (torch.exp(2 * log_sigma) + mu * mu - 1.0) - log_sigma).sum(-1)


def _per_env(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per-task rows ``[B, d]`` -> per-env rows ``[B·K, d]`` (env j on task j // K)."""
    return x.repeat_interleave(k, 0)


def rollout(theta: Params, mu: torch.Tensor, log_sigma: torch.Tensor, env, env_tasks, k: int,
            generator: torch.Generator, seed: int | None = None,
            steps: int | None = None) -> tuple[Batch, torch.Tensor]:
    """Collect ``steps`` (default: one horizon) steps with latents from ``N(μ_i, σ_i)``, redrawn at
    every episode start (only each env's first episode is unmasked in the batch).

    Returns the batch and the standard-normal draws ``eps [T, N, d]`` (``z_t = μ + σ ⊙ eps_t``;
    constant within an episode)."""
    with torch.no_grad():
        mu_env, sig_env = _per_env(mu.detach(), k), _per_env(log_sigma.detach().exp(), k)
        eps = torch.zeros_like(mu_env)
        log = []

        def act(obs, start):
            fresh = torch.randn(eps.shape, generator=generator)
            eps[start] = fresh[start]
            log.append(eps.clone())
            return policy_dist(theta, obs, mu_env + sig_env * eps)

        batch = collect(env, act, steps or env.max_episode_steps, generator, tasks=env_tasks, seed=seed)
    return batch, torch.stack(log)


def pg_losses(theta: Params, mu, log_sigma, batch: Batch, eps: torch.Tensor, adv: torch.Tensor,
              b: int, k: int) -> torch.Tensor:
    """Per-task VPG loss ``-mean log π_θ(a | s, μ_i + σ_i ⊙ ε) · A`` over valid steps -> ``[b]``
    (differentiable w.r.t. θ and, through the reparameterised z, μ and log σ)."""
    z = _per_env(mu, k) + _per_env(log_sigma.exp(), k) * eps
    mean, log_std = policy_dist(theta, batch.obs, z)
    return -task_mean(gaussian_log_prob(mean, log_std, batch.actions) * adv, batch.mask, b)


def latent_score_losses(mu, log_sigma, batch: Batch, eps: torch.Tensor, adv: torch.Tensor, b: int,
                        k: int) -> torch.Tensor:
    """Per-task likelihood-ratio loss of the latent distribution ``-mean log N(z | μ_i, σ_i) · A`` over
    valid steps -> ``[b]``, with each episode's ``z = μ_i + σ_i ⊙ ε`` held fixed (data): its gradient
    moves ``(μ_i, σ_i)`` toward the latents of the better-than-baseline episodes. Independent of θ."""
    mu_env, ls_env = _per_env(mu, k), _per_env(log_sigma, k)
    z = (mu_env + ls_env.exp() * eps).detach()
    return -task_mean(gaussian_log_prob(mu_env, ls_env, z) * adv, batch.mask, b)


def inner_update(model: dict, mu, log_sigma, batch: Batch, eps, adv, b: int, k: int,
                 create_graph: bool = False):
    """One inner step on the latent parameters only:
    ``μ' = μ − α_μ ⊙ ∇_μ L``, ``log σ' = log σ − α_σ ⊙ ∇_{log σ} L`` (θ is read, never changed).
    ``L`` is :func:`pg_losses` (``model["latent_gradient"]`` "reparam", the default) or
    :func:`latent_score_losses` ("score"). With ``create_graph`` the result stays differentiable
    w.r.t. θ, μ, log σ and α (outer step)."""
    if model.get("latent_gradient", "reparam") == "score":
        losses = latent_score_losses(mu, log_sigma, batch, eps, adv, b, k)
    else:
        losses = pg_losses(model["policy"], mu, log_sigma, batch, eps, adv, b, k)
    g_mu, g_ls = torch.autograd.grad(losses.sum(), [mu, log_sigma], create_graph=create_graph)
    hi = model.get("max_inner_lr", math.inf)
    a_mu, a_ls = model["log_alpha_mu"].exp().clamp(max=hi), model["log_alpha_sigma"].exp().clamp(max=hi)
    return mu - a_mu * g_mu, log_sigma - a_ls * g_ls


def _advantages(cfg: MAESNConfig, batch: Batch, env_tasks, b: int, reward: str) -> torch.Tensor:
    if reward == "dense":
        batch = dense_rewards(batch, env_tasks.goal)
    return task_advantages(batch, b, cfg.gamma)


def trpo_outer_step(model: dict, cfg: MAESNConfig, idx: torch.Tensor, inner_data: list, batch: Batch,
                    eps: torch.Tensor, adv: torch.Tensor, sampled: tuple) -> dict:
    """The paper's outer step, in place: TRPO on θ, the batch's latent initialisations and (when
    learned) α. Objective: the likelihood-ratio surrogate ``-mean r_t A_t`` of the post-update
    trajectories (``r_t = π_new / π_sampling``, the post-update latents recomputed through the inner
    steps ``inner_data = [(batch, eps, adv), ...]`` at every evaluation) ``+ kl_coef · KL(N(μ_i, σ_i) ‖
    N(0, I))``; constraint: mean KL(π_sampling ‖ π_new) over the post-update steps ≤ ``max_kl``.
    ``sampled``: the post-update latents ``(μ', log σ')`` the trajectories were drawn with."""
    b, k = len(idx), cfg.trajectories_per_task
    theta = model["policy"]
    with torch.no_grad():
        z_old = _per_env(sampled[0], k) + _per_env(sampled[1].exp(), k) * eps
        old_mean, old_log_std = policy_dist(theta, batch.obs, z_old)
        old_logp = gaussian_log_prob(old_mean, old_log_std, batch.actions)

    def objective():
        with torch.enable_grad():   # the line search evaluates under no_grad; the inner step needs a gradient
            mu, ls = model["mu"][idx], model["log_sigma"][idx]
            for pre_batch, pre_eps, pre_adv in inner_data:
                mu, ls = inner_update(model, mu, ls, pre_batch, pre_eps, pre_adv, b, k, create_graph=True)
        mean, log_std = policy_dist(theta, batch.obs, _per_env(mu, k) + _per_env(ls.exp(), k) * eps)
        ratio = torch.exp(gaussian_log_prob(mean, log_std, batch.actions) - old_logp)
        surr = -task_mean(ratio * adv, batch.mask, b).mean()
        prior_kl = kl_standard_normal(model["mu"][idx], model["log_sigma"][idx]).mean()
        step_kl = task_mean(gaussian_kl(old_mean, old_log_std, mean, log_std), batch.mask, b).mean()
        return surr + cfg.kl_coef * prior_kl, step_kl

    params = list(theta.values()) + [model["mu"], model["log_sigma"]]
    if cfg.learn_inner_lr:
        params += [model["log_alpha_mu"], model["log_alpha_sigma"]]
    return trpo_step(objective, params, cfg.max_kl)


# ----------------------------------------------------------------------------- evaluation
def adapt(model: dict, cfg: MAESNConfig, env, tasks, steps: int, generator: torch.Generator,
          seed: int | None = None, mu0=None, log_sigma0=None):
    """Adapt the latent distribution of each task in ``tasks`` (start: ``N(0, I)`` unless given)
    with ``steps`` inner steps on the env's reward. Returns ``(mu, log_sigma, returns [steps+1, B],
    reached [steps+1, B])``: mean episode return and fraction of episodes with a positive return
    (on SemicircleGoal-v0: episodes that reached the goal region) after 0..steps steps."""
    b, k = len(tasks), cfg.trajectories_per_task
    env_tasks = tasks[torch.arange(b * k) // k]
    theta = {n: v.detach() for n, v in model["policy"].items()}
    frozen = {**model, "policy": theta, "log_alpha_mu": model["log_alpha_mu"].detach(),
              "log_alpha_sigma": model["log_alpha_sigma"].detach()}
    d = cfg.latent_dim
    mu = torch.zeros((b, d)) if mu0 is None else mu0.detach().clone()
    ls = torch.zeros((b, d)) if log_sigma0 is None else log_sigma0.detach().clone()
    returns, reached = [], []
    for step in range(steps + 1):
        batch, eps = rollout(theta, mu, ls, env, env_tasks, k, generator, seed=seed)
        returns.append(per_task_mean(batch.episode_returns()[None], b))
        reached.append(per_task_mean((batch.episode_returns() > 0).float()[None], b))
        if step == steps:
            break
        adv = _advantages(cfg, batch, env_tasks, b, "env")
        mu, ls = (t.detach().requires_grad_(True) for t in (mu, ls))
        mu, ls = inner_update(frozen, mu, ls, batch, eps, adv, b, k)
        mu, ls = mu.detach(), ls.detach()
    return mu, ls, torch.stack(returns), torch.stack(reached)


def evaluate(model: dict, cfg: MAESNConfig, num_tasks: int | None = None, steps: int | None = None,
             seed: int = 12345) -> dict:
    """Test-time adaptation on held-out tasks (``sample_task_split``'s test set for ``seed``; ``num_tasks``
    default ``cfg.eval_tasks``), starting from ``N(0, I)``: ``{"returns": [mean env return after 0..steps
    steps], "se": [...], "reached": [fraction of episodes with a positive return (sparse: goal region
    reached)]}``."""
    num_tasks = eval_task_count(num_tasks, cfg.eval_tasks)
    steps = cfg.eval_steps if steps is None else steps
    env = make_env(cfg, num_tasks * cfg.trajectories_per_task, seed=seed)
    _, test = env.sample_task_split(1, num_tasks, seed=seed)
    g = torch.Generator().manual_seed(seed)
    _, _, rets, reached = adapt(model, cfg, env, test, steps, g)
    return {"returns": rets.mean(1).tolist(), "se": (rets.std(1) / math.sqrt(num_tasks)).tolist(),
            "reached": reached.mean(1).tolist()}


def report(model: dict, cfg: MAESNConfig, num_tasks: int | None = None, seed: int = 12345) -> dict:
    """MAESN against random exploration on the same held-out tasks and with the same latent
    adaptation: ``{"maesn": evaluate(model), "untrained": evaluate(a freshly initialised model)}``
    (the untrained policy explores by near-uniform Gaussian noise around a small random drift)."""
    fresh = init_model(cfg, make_env(cfg, 1), torch.Generator().manual_seed(cfg.seed))
    return {"maesn": evaluate(model, cfg, num_tasks, seed=seed),
            "untrained": evaluate(fresh, cfg, num_tasks, seed=seed)}


# ----------------------------------------------------------------------------- the learner
LEARNED = ("mu", "log_sigma", "log_alpha_mu", "log_alpha_sigma")
"""The model's tensors besides the policy's (see :func:`init_model`)."""


class MAESNLearner:
    """MAESN as the run harness drives it (:mod:`metarl.algos.harness`): each :meth:`step` draws
    ``meta_batch_size`` training tasks, adapts their latents with ``inner_steps`` latent policy-gradient
    steps (each on fresh trajectories) and takes one outer step (Adam or TRPO) through them."""

    kind = "maesn"

    def __init__(self, cfg: MAESNConfig):
        self.config = cfg
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.env = make_env(cfg, cfg.meta_batch_size * cfg.trajectories_per_task)
        self.train_set, _ = self.env.sample_task_split(cfg.num_train_tasks, 1, seed=cfg.seed)
        self.model = init_model(cfg, self.env, self.generator)
        groups = param_groups(self.model, cfg)
        self.params = [p for grp in groups for p in grp["params"]]
        self.optimizer = torch.optim.Adam(groups)
        self.iterations = cfg.iterations
        self.iteration = 0

    @property
    def env_steps(self) -> int:
        return self.iteration * (self.config.inner_steps + 1) * self.env.num_envs * self.env.max_episode_steps

    def step(self) -> dict:
        cfg, model, g = self.config, self.model, self.generator
        b, k = cfg.meta_batch_size, cfg.trajectories_per_task
        idx = torch.randperm(cfg.num_train_tasks, generator=g)[:b]
        env_tasks = self.train_set[idx][torch.arange(b * k) // k]
        mu0, ls0 = model["mu"][idx], model["log_sigma"][idx]
        # inner: collect with N(μ_i, σ_i), policy-gradient steps on (μ_i, log σ_i) only
        mu, ls = mu0, ls0
        pre, inner_data = None, []
        for _ in range(cfg.inner_steps):
            batch, eps = rollout(model["policy"], mu, ls, self.env, env_tasks, k, g)
            pre = float(batch.episode_returns().mean()) if pre is None else pre
            adv = _advantages(cfg, batch, env_tasks, b, cfg.train_reward if cfg.inner_reward == "same"
                              else cfg.inner_reward)
            inner_data.append((batch, eps, adv))
            mu, ls = inner_update(model, mu, ls, batch, eps, adv, b, k, create_graph=cfg.outer == "adam")
        # outer: the post-update trajectories' surrogate, through the inner steps, + KL to N(0, I)
        batch, eps = rollout(model["policy"], mu, ls, self.env, env_tasks, k, g)
        adv = _advantages(cfg, batch, env_tasks, b, cfg.train_reward)
        kl = kl_standard_normal(mu0, ls0).mean()
        if cfg.outer == "trpo":
            trpo_outer_step(model, cfg, idx, inner_data, batch, eps, adv, (mu.detach(), ls.detach()))
        else:
            loss = pg_losses(model["policy"], mu, ls, batch, eps, adv, b, k).mean() + cfg.kl_coef * kl
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
        self.iteration += 1
        # log
        return {"return_pre": pre, "return_post": float(batch.episode_returns().mean()), "kl": float(kl.detach())}

    def state_dict(self) -> dict:
        model = self.model
        return {"iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "env": self.env.state_dict(),
                "model": {"policy": {n: v.detach().clone() for n, v in model["policy"].items()},
                          **{n: model[n].detach().clone() for n in LEARNED}}}

    def load_state_dict(self, sd: dict) -> None:
        self.iteration = int(sd["iteration"])
        with torch.no_grad():   # in place: the optimizer holds these leaves
            for n, v in sd["model"]["policy"].items():
                self.model["policy"][n].copy_(v)
            for n in LEARNED:
                self.model[n].copy_(sd["model"][n])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.generator.set_state(sd["generator"])
        self.env.load_state_dict(sd["env"])

    def report(self, num_tasks: int | None = None) -> dict:
        """``{"eval": report(model)}`` (MAESN and its untrained twin on held-out tasks); nothing when
        ``num_tasks`` is None and the config's ``eval_tasks`` is 0."""
        if num_tasks is None and self.config.eval_tasks == 0:
            return {}
        return {"eval": report(self.model, self.config, num_tasks)}


# ----------------------------------------------------------------------------- train, load
def train(cfg: MAESNConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Meta-train MAESN through the run harness (:func:`metarl.algos.harness.run`); returns its summary
    (``history``, speed, and when the run finished and ``eval_tasks > 0``, ``eval``: :func:`report`)
    with ``"model"`` (the learned tensors). ``run_dir`` (or None: no files) receives ``config.json``,
    ``progress.csv``, ``checkpoint.pt`` and ``summary.json``; ``resume=True`` continues from its
    checkpoint with the results of an uninterrupted run (it holds the learned tensors, Adam's state,
    the generator and the env's state); ``overwrite=True`` starts over in a directory that holds a run."""
    learner = MAESNLearner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations, progress_keys=("return_pre", "return_post"))
    summary["model"] = learner.model
    return summary


def load_model(run_dir) -> tuple[dict, MAESNConfig]:
    """The learned tensors and config of a run directory (from its checkpoint), as :func:`init_model`
    lays them out."""
    ck = harness.load_checkpoint(run_dir, MAESNLearner.kind)
    cfg = MAESNConfig(**ck["config"])
    return {**ck["learner"]["model"], "max_inner_lr": float(cfg.max_inner_lr),
            "latent_gradient": cfg.latent_gradient}, cfg


__all__ = ["MAESNConfig", "MAESNLearner", "train", "evaluate", "adapt", "inner_update", "kl_standard_normal",
           "rollout", "pg_losses", "latent_score_losses", "init_model", "policy_dist", "dense_rewards", "report",
           "load_model"]
