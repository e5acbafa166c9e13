"""Meta-gradient RL (Xu, van Hasselt, Silver 2018, "Meta-Gradient Reinforcement Learning"):
an A2C learner whose discount γ and bootstrapping λ are learned online by gradient descent.

With ``η = (γ, λ) = (σ(x_γ), σ(x_λ))`` and the λ-return of :func:`metarl.kernels.returns.lambda_returns`
(``G^η_t = r_{t+1} + γ[(1 − λ) v(s_{t+1}) + λ G^η_{t+1}]``), one iteration is

1. **inner update** on the current batch τ (``T`` steps of ``N`` envs), A2C with the targets ``G^η``::

       L(τ, θ, η) = −(G^η − v)·log π  +  c_v ½ (G^η − v)²  −  c_H H[π]        (v, π: θ; G^η: detached v)
       θ' = θ − α · s · ∇_θ L / (√ν + ε)                                      (RMSProp, as A2C)

   where ``s`` is the global-norm clip factor and ``ν`` RMSProp's square average (both held
   constant w.r.t. η: the optimiser's statistics are not differentiated);
2. **collect** the next batch τ' with θ';
3. **meta update** on τ' with the fixed reference ``η̄ = (γ̄, λ̄)``: the A2C objective without
   entropy (value term weighted by ``meta_vf_coef``), ``J'(τ', θ', η̄)``, and
   ``x ← x − β · Adam(∂J'/∂θ' · dθ'/dη · dη/dx)``.

``dθ'/dη`` is the trace ``z' = μ z + ∂f(τ, θ, η)/∂η`` of the update ``f = θ' − θ``. With ``μ = 0``
(the paper's usual choice, the default) it is the derivative of this iteration's update alone and
is taken by autograd through the functional inner update (``torch.func.functional_call`` on
parameters that keep the graph to η, ``create_graph=True``); the λ-return's derivatives w.r.t.
γ and λ come from the returns kernel's backward (Numba on the CPU, Triton on CUDA). With ``μ > 0``
the trace is kept explicitly (one tensor per parameter with a trailing axis of 2), its new term
``∂f/∂η_k = −α s ∇_θ(∂L/∂η_k)/(√ν + ε)`` taken by two second-order passes through the torch
reference of the λ-return (the kernels' backward is first order only). These functions are in
:mod:`metarl.algos.metagrad_update`; this module holds the config, the learner and the evaluation.

The A2C pieces (model, rollouts, loss, functional RMSProp step) live in
:mod:`metarl.algos.metagrad_a2c`; this module holds η, the meta-objective, the meta-gradient and the
learner. The policy and value are conditioned on η (the paper's variant): a linear embedding of
``(logit γ, logit λ)`` is concatenated to the observation. Rewards of truncated episodes are
bootstrapped with ``γ v(final_obs)`` (so that, too, depends on γ).

Envs: any metarl family with a Discrete action space; each env copy keeps one task from the
family's training split (CartPole-v1: masses, pole length and force ×log-U[0.5, 2]), and the
final evaluation runs one episode on each of ``eval_tasks`` held-out tasks. ``reward_delay = k``
turns the env into a delayed-reward task (:class:`~metarl.envs.delayed_reward.DelayedRewardVecEnv`:
rewards summed and paid every ``k`` steps of an episode and at its end). Fixed ``(γ, λ)`` (plain
A2C, the grid of ``bench/metagrad.py``) is ``meta_gamma=False, meta_lambda=False``.

Use it from Python::

    >>> from metarl.algos.metagrad import MetaGradConfig, train
    >>> cfg = MetaGradConfig(total_env_steps=20_000, eval_tasks=20)
    >>> summary = train(cfg, run_dir=None, progress=False)          # doctest: +SKIP
    >>> summary["eval"]["metagrad"], summary["gamma"], summary["lambda"]  # doctest: +SKIP

or the command line: ``metarl train metagrad --reward-delay 10``.
"""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import torch

import metarl
from metarl.algos import harness
from metarl.algos.metagrad_update import (
    Batch,
    EpisodeTracker,
    MetaGradActorCritic,
    MetaParams,
    a2c_loss,
    collect,
    inner_loss,
    inner_update,
    meta_gradient,
    meta_objective,
    rmsprop_step,
    sample_actions,
    update_jacobian,
)
from metarl.algos.pg import mean_se
from metarl.config import Config, env_ids, field
from metarl.envs.delayed_reward import DelayedRewardVecEnv

RETURNS_BACKENDS = ("auto", "torch", "numba", "triton")


@dataclasses.dataclass
class MetaGradConfig(Config):
    """Meta-gradient A2C (γ and λ learned online). Defaults: CartPole-v1 with varied physics,
    16 envs × 20-step rollouts; a held-out return of ~200-300 after 300k env steps (~10 s on one
    free CPU core)."""

    env: str = field("CartPole-v1", choices=env_ids)
    """Task family: a metarl env id with a Discrete action space (CartPole-v1, Acrobot-v1, ...)."""
    vary_tasks: bool = True
    """Each env copy gets a task from the family's distribution (CartPole: masses, pole length and
    force); False: the default task (gymnasium's physics) everywhere."""
    reward_delay: int = field(0, ge=0)
    """Delayed-reward task: rewards are summed and paid every k steps of an episode and at its end
    (0: paid each step)."""
    num_envs: int = field(16, ge=1)
    """Env copies stepped together (N)."""
    rollout_steps: int = field(20, ge=1)
    """Steps per rollout (T): each batch is [T, N]."""
    total_env_steps: int = field(300_000, ge=1)
    """Training budget in env steps (all envs together)."""
    hidden_size: int = field(64, ge=1)
    """Units of each of the two hidden layers of the actor and of the critic (tanh MLPs)."""
    eta_embedding: int = field(16, ge=0)
    """Size of the linear embedding of η concatenated to the observation (0: not conditioned on η)."""
    lr: float = field(7e-4, gt=0)
    """RMSProp learning rate α of the inner (A2C) update."""
    anneal_lr: bool = False
    """Decay α linearly to 0 over training (as some A2C/PPO baselines do). Off: at the budgets of
    ``bench/metagrad.py`` the learner is far from converged and decaying α measured worse."""
    vf_coef: float = field(0.5, ge=0)
    """Value-loss weight c_v (inner and meta objective)."""
    ent_coef: float = field(0.01, ge=0)
    """Entropy bonus c_H (inner objective only)."""
    max_grad_norm: float = field(0.5, gt=0)
    """Global-norm gradient clip of the inner update."""
    gamma: float = field(0.99, ge=0, le=1)
    """Initial discount γ (meta-learned when meta_gamma; must then lie in (0, 1))."""
    lam: float = field(0.9, ge=0, le=1)
    """Initial λ of the λ-return (meta-learned when meta_lambda; must then lie in (0, 1))."""
    meta_gamma: bool = True
    """Meta-learn γ (else it stays at gamma)."""
    meta_lambda: bool = True
    """Meta-learn λ (else it stays at lam)."""
    ref_gamma: float = field(0.995, ge=0, le=1)
    """γ̄ of the meta-objective J'(τ', θ', η̄) (the fixed reference)."""
    ref_lambda: float = field(1.0, ge=0, le=1)
    """λ̄ of the meta-objective (1: Monte-Carlo returns bootstrapped at the rollout's end)."""
    meta_vf_coef: float = field(0.5, ge=0)
    """Value-loss weight in J' (0: J' is the policy-gradient term alone, which measured worse on both
    bench envs). With it γ tends to rise past γ̄ on CartPole: J' bootstraps on the critic trained with γ."""
    meta_lr: float = field(0.01, ge=0)
    """Adam learning rate β of the meta-parameters (the logits of γ and λ)."""
    trace_decay: float = field(0.0, ge=0, lt=1)
    """μ of the trace z' = μ z + ∂f/∂η approximating dθ'/dη (0: this update's derivative only)."""
    returns_backend: str = field("auto", choices=RETURNS_BACKENDS)
    """λ-return kernel: auto (Numba on the CPU, Triton on CUDA), torch (the reference), numba or triton."""
    seed: int = field(0, ge=0)
    """Seed of the envs, tasks, network init and action sampling."""
    device: str = "cpu"
    """Torch device of envs and networks."""
    eval_tasks: int = field(100, ge=1)
    """Held-out tasks (one episode each) evaluated at the end (and by ``metarl eval``)."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def check(self):
        if self.total_env_steps < self.num_envs * self.rollout_steps:
            raise ValueError(f"total_env_steps ({self.total_env_steps}) must be at least one rollout, "
                             f"num_envs * rollout_steps = {self.num_envs * self.rollout_steps}")
        for name, flag in (("gamma", "meta_gamma"), ("lam", "meta_lambda")):
            v = getattr(self, name)
            if getattr(self, flag) and not 0.0 < v < 1.0:
                raise ValueError(f"{name} = {v} cannot be meta-learned (its sigmoid logit is infinite): "
                                 f"give a value in (0, 1) or set {flag}=False")
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available here")
        space = metarl.make_vec(self.env, 1, seed=0).single_action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise ValueError(f"env {self.env!r} has a {type(space).__name__} action space; metagrad needs a "
                             "Discrete one (CartPole-v1, Acrobot-v1, MountainCar-v0, ...)")

    @property
    def learns_eta(self) -> bool:
        return (self.meta_gamma or self.meta_lambda) and self.meta_lr > 0

    @property
    def backend(self) -> str | None:
        return None if self.returns_backend == "auto" else self.returns_backend


# ----------------------------------------------------------------------------- envs and model
def make_env(cfg: MetaGradConfig, num_envs: int | None = None, seed: int | None = None, *, delayed: bool = True):
    """``num_envs`` copies (default ``cfg.num_envs``) of ``cfg.env`` with same-step autoreset, wrapped
    in :class:`DelayedRewardVecEnv` when ``cfg.reward_delay`` (and ``delayed``). The caller sets tasks."""
    env = metarl.make_vec(cfg.env, num_envs or cfg.num_envs, autoreset_mode="same_step", device=cfg.device,
                          seed=cfg.seed if seed is None else seed)
    if cfg.reward_delay and delayed:
        env = DelayedRewardVecEnv(env, cfg.reward_delay)
    return env


def _base(env):
    return env.base if isinstance(env, DelayedRewardVecEnv) else env


def task_split(cfg: MetaGradConfig, env, num_train: int, num_test: int, seed: int):
    """Training and held-out tasks (the family's default task everywhere when not ``vary_tasks``)."""
    base = _base(env)
    if not cfg.vary_tasks:
        return base.default_tasks(num_train), base.default_tasks(num_test)
    return base.sample_task_split(num_train, num_test, seed=seed)


def make_model(cfg: MetaGradConfig, env) -> MetaGradActorCritic:
    torch.manual_seed(cfg.seed)
    model = MetaGradActorCritic(_base(env).obs_dim, int(env.single_action_space.n), cfg.hidden_size,
                                cfg.eta_embedding).to(cfg.device)
    model.eta.copy_(torch.tensor([cfg.gamma, cfg.lam]))
    return model


# ----------------------------------------------------------------------------- the learner
class MetaGradLearner:
    """Meta-gradient A2C as the run harness drives it (:mod:`metarl.algos.harness`). It holds θ as a
    dict of tensors (``params``; ``model`` is the module they are called through, synced by
    :meth:`sync_model`), RMSProp's ``sq_avg``, η (:class:`MetaParams`), the trace when ``μ > 0``,
    and the batch τ the next inner update trains on. Each :meth:`step`: inner update on τ, collect
    τ' with θ', meta update on J'(τ', θ', η̄) (the first also collects τ_0)."""

    kind = "metagrad"

    def __init__(self, cfg: MetaGradConfig):
        self.config = cfg
        self.env = make_env(cfg)
        train_tasks, _ = task_split(cfg, self.env, cfg.num_envs, 1, seed=cfg.seed)
        _base(self.env).set_tasks(train_tasks)
        self.model = make_model(cfg, self.env)
        self.meta = MetaParams(cfg)
        self.params = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        self.sq_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.trace = ({k: torch.zeros(*v.shape, 2, device=v.device) for k, v in self.params.items()}
                      if cfg.trace_decay > 0 else None)
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        self.tracker = EpisodeTracker(cfg.num_envs, cfg.device)
        self.steps_per_iteration = cfg.rollout_steps * cfg.num_envs
        self.iterations = max(1, cfg.total_env_steps // self.steps_per_iteration - 1)   # + τ_0: the budget in all
        self.tail_start = self.iterations - max(1, self.iterations // 10)   # final return: the last 10% of iterations
        self.iteration = 0
        self.batch: Batch | None = None     # τ, collected with the current θ

    @property
    def env_steps(self) -> int:
        return 0 if self.batch is None else (self.iteration + 1) * self.steps_per_iteration

    def step(self) -> dict:
        cfg = self.config
        if self.batch is None:   # τ_0, collected with θ_0
            obs, _ = self.env.reset(seed=cfg.seed)
            self.batch = collect(self.env, self.model, self.params, self.meta.current(), obs, cfg.rollout_steps,
                                 self.generator, self.tracker)
        if self.iteration == self.tail_start:
            self.tracker.tail = []
        eta_in = self.meta.current()
        gamma, lam = self.meta.values()
        through = cfg.learns_eta and self.trace is None     # μ = 0: dθ'/dη by autograd through the update
        lr = cfg.lr * (1.0 - self.iteration / self.iterations) if cfg.anneal_lr else cfg.lr
        # inner update on τ (keeping the graph to η when the meta-gradient goes through it)
        new, new_sq, stats = inner_update(self.model, self.params, self.sq_avg, self.batch,
                                          gamma if through else gamma.detach(), lam if through else lam.detach(),
                                          eta_in, cfg, create_graph=through, lr=lr)
        if cfg.learns_eta and self.trace is not None:      # μ > 0: the trace z' = μ z + ∂f/∂η
            jac = update_jacobian(self.model, self.params, self.sq_avg, self.batch, self.meta, eta_in, cfg, lr)
            self.trace = {k: cfg.trace_decay * self.trace[k] + jac[k] for k in jac}
        new_detached = {k: v.detach() for k, v in new.items()}
        # collect τ' with θ'
        next_batch = collect(self.env, self.model, new_detached, eta_in, self.batch.last_obs, cfg.rollout_steps,
                             self.generator, self.tracker)
        # meta update on J'(τ', θ', η̄)
        grad = torch.zeros(2)
        if cfg.learns_eta:
            grad = meta_gradient(self.model, new, next_batch, self.meta, eta_in, cfg, self.trace)
            self.meta.step(grad)
        self.params, self.sq_avg, self.batch = new_detached, new_sq, next_batch
        self.iteration += 1
        # log
        gamma_now, lam_now = self.meta.current().tolist()
        return {"episode_return": self.tracker.mean(), "gamma": gamma_now, "lambda": lam_now,
                **{k: float(v) for k, v in stats.items()}, "meta_grad_gamma": float(grad[0]),
                "meta_grad_lambda": float(grad[1])}

    def sync_model(self) -> MetaGradActorCritic:
        """Copy θ and η into ``model`` (its parameters and its ``eta`` buffer); returns it."""
        with torch.no_grad():
            self.model.eta.copy_(self.meta.current())
            for k, p in self.model.named_parameters():
                p.copy_(self.params[k])
        return self.model

    def state_dict(self) -> dict:
        def cpu(d):
            return None if d is None else {k: v.cpu() for k, v in d.items()}
        return {"iteration": self.iteration, "model": self.sync_model().state_dict(), "sq_avg": cpu(self.sq_avg),
                "trace": cpu(self.trace), "meta": self.meta.state_dict(), "env": self.env.state_dict(),
                "generator": self.generator.get_state(), "tracker": self.tracker.state_dict(),
                "batch": None if self.batch is None else self.batch.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        dev = self.config.device
        self.iteration = int(sd["iteration"])
        self.model.load_state_dict(sd["model"])
        self.params = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        self.sq_avg = {k: v.to(dev) for k, v in sd["sq_avg"].items()}
        self.trace = None if sd["trace"] is None else {k: v.to(dev) for k, v in sd["trace"].items()}
        self.meta.load_state_dict(sd["meta"])
        self.env.load_state_dict(sd["env"])
        self.generator.set_state(sd["generator"])
        self.tracker.load_state_dict(sd["tracker"])
        self.batch = None if sd["batch"] is None else Batch.from_state_dict(sd["batch"], dev)

    def report(self, num_tasks: int | None = None) -> dict:
        return {"eval": report(self.sync_model(), self.config, num_tasks)}


def train(cfg: MetaGradConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Train meta-gradient A2C through the run harness (:func:`metarl.algos.harness.run`); returns its
    summary (``iterations``, ``env_steps``, ``train_seconds``, ``env_steps_per_s``, ``interrupted``,
    ``history``: the progress rows of this call, each with ``env_steps``, ``gamma`` and ``lambda``, and
    after a complete run ``eval``: :func:`report`) with ``gamma``, ``lambda`` (final),
    ``train_return`` (mean of the last 100 training episodes), ``final_return`` (mean return of the
    training episodes that ended in the last 10% of iterations) and ``model`` (the trained
    :class:`MetaGradActorCritic`, not written to JSON).

    ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv``, TensorBoard events
    when ``tensorboard`` is installed, ``checkpoint.pt`` and ``summary.json``; ``resume=True``
    continues from its checkpoint exactly as an uninterrupted run would (same machine and backend);
    ``overwrite=True`` starts over in a directory that holds a run. ``max_iterations`` stops early.
    """
    learner = MetaGradLearner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations, progress_keys=("episode_return", "gamma", "lambda"))
    gamma, lam = learner.meta.current().tolist()
    tail = learner.tracker.tail
    return {**summary, "gamma": gamma, "lambda": lam, "train_return": learner.tracker.mean(),
            "final_return": sum(tail) / len(tail) if tail else float("nan"), "model": learner.sync_model()}


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: MetaGradActorCritic | None, cfg: MetaGradConfig, num_tasks: int | None = None,
             seed: int = 12345) -> torch.Tensor:
    """One episode (true, undelayed rewards) on each of ``num_tasks`` held-out tasks, sampling from
    the policy (``model=None``: uniformly random actions). Returns the returns ``[num_tasks]``."""
    num_tasks = num_tasks or cfg.eval_tasks
    env = make_env(cfg, num_tasks, seed=seed, delayed=False)
    _, test = task_split(cfg, env, 1, num_tasks, seed=seed)
    obs, _ = env.reset(seed=seed, options={"tasks": test})
    g = torch.Generator(device=cfg.device).manual_seed(seed)
    total = torch.zeros(num_tasks, device=cfg.device)
    running = torch.ones(num_tasks, dtype=torch.bool, device=cfg.device)
    n_act = int(env.single_action_space.n)
    for _ in range(env.max_episode_steps or 10_000):
        if model is None:
            action = torch.randint(n_act, (num_tasks,), generator=g, device=cfg.device)
        else:
            action = sample_actions(model(obs)[0], g)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += torch.where(running, reward, 0.0)
        running &= ~(terminated | truncated)
        if not bool(running.any()):
            break
    return total.cpu()


def report(model: MetaGradActorCritic, cfg: MetaGradConfig, num_tasks: int | None = None, seed: int = 12345) -> dict:
    """The trained policy and uniformly random actions on the same held-out tasks, ``{name: (mean, se)}``,
    with the final ``gamma`` and ``lambda``."""
    return {"metagrad": mean_se(evaluate(model, cfg, num_tasks, seed)),
            "random": mean_se(evaluate(None, cfg, num_tasks, seed)),
            "gamma": float(model.eta[0]), "lambda": float(model.eta[1])}


def load_model(run_dir) -> tuple[MetaGradActorCritic, MetaGradConfig]:
    """The trained model (its ``eta`` buffer holds the final γ, λ) and config of a run directory."""
    ck = harness.load_checkpoint(run_dir, MetaGradLearner.kind)
    cfg = MetaGradConfig(**ck["config"])
    model = make_model(cfg, make_env(cfg, 1))
    model.load_state_dict(ck["learner"]["model"])
    return model, cfg


__all__ = ["MetaGradConfig", "MetaGradLearner", "MetaGradActorCritic", "DelayedRewardVecEnv", "MetaParams", "Batch",
           "EpisodeTracker", "train", "evaluate", "report", "load_model", "make_env", "make_model", "task_split",
           "collect", "a2c_loss", "inner_loss", "inner_update", "meta_objective", "meta_gradient", "update_jacobian",
           "rmsprop_step", "sample_actions"]
