"""ProMP: Proximal Meta-Policy Search (Rothfuss, Lee, Clavera, Asfour, Abbeel 2019).

MAML's structure (an inner policy-gradient step per task on pre-update samples, an outer step on the
adapted policies' samples, through the inner step), with the three changes of the paper:

1. **LVC inner objective** (low-variance curvature). Task ``i``'s inner loss on its pre-update samples
   ``(s, a, A)`` drawn from ``π_old``::

       L^LVC_i(θ) = −mean_t [ π_θ(a_t|s_t) / π_old(a_t|s_t) · A_t ]      (π_old: data, no gradient)

   At ``θ = θ_old`` its gradient is the REINFORCE gradient (the inner step is VPG's), but its Hessian
   carries the ``∇log π ∇log πᵀ A`` term that MAML's surrogate drops, so the meta-gradient through the
   step accounts for the pre-update sampling distribution (the unbiased-in-expectation, low-variance
   estimator of the paper's section 5).
2. **Clipped outer objective** on the post-update samples, PPO's, with the likelihood ratio of the
   adapted policy ``π_{θ'_i(θ)}`` to the policy that sampled them.
3. **Inner KL penalty**: ``η · mean_i KL(π_old ‖ π_θ)`` on the pre-update samples (one coefficient per
   inner step; halved / doubled when the KL falls below / rises above ``target_inner_kl`` by 1.5×,
   when ``adaptive_inner_kl``). The outer loss is minimised by ``outer_steps`` full-batch Adam steps per
   batch of samples (no re-sampling), differentiating through the inner step (second order).

Everything is batched over tasks as :mod:`metarl.algos.maml`: the inner loop is
:func:`metarl.algos.inner.inner_loop` (``vmap`` over tasks of ``grad``), rollouts of all tasks run in one
vector env (:func:`metarl.algos.pg.collect`, env ``j`` on task ``j // trajectories_per_task``), advantages
are discounted returns minus each task's linear feature baseline, normalised per task
(:func:`metarl.algos.pg.per_task_advantages`).

Authors' code (jonasrothfuss/ProMP, ``pro-mp_run_point_mass.py`` / ``pro-mp_run_mujoco.py``) vs. the
defaults here: the same inner lr 0.1, one inner step, meta-batch 40, 20 rollouts per task of H = 100,
MLP 64×64, outer Adam lr 1e-3, 5 outer steps, clip 0.3, inner KL coefficient 5e-4 with target 0.01, γ =
0.99, GAE λ = 1 (Monte Carlo returns), normalised advantages, linear feature baseline. Their run scripts
keep the coefficient FIXED (``adaptive_inner_kl_penalty: False``; the class's own default is adaptive):
``adaptive_inner_kl=False`` here too. Differences: 500 iterations (theirs 1001); the policy's hidden
layers are ReLU with rllab's Glorot-uniform init and actions normalised onto the env's box (as
:mod:`metarl.algos.maml`; theirs: tanh hidden layers); the losses average over valid (unmasked) steps.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import vmap

from metarl.algos import harness
from metarl.algos.inner import inner_loop
from metarl.algos.pg import (
    POLICY_INITS,
    Batch,
    FunctionalPolicy,
    GaussianMLPPolicy,
    action_map,
    collect,
    eval_task_count,
    gaussian_kl,
    gaussian_log_prob,
    lvc_loss_fn,
    make_horizon_env,
    make_mlp_policy,
    masked_mean,
    per_task_advantages,
)
from metarl.config import Config, env_ids, env_options, field


@dataclasses.dataclass
class PROMPConfig(Config):
    """ProMP with an LVC inner step, a clipped outer objective and an inner KL penalty. Defaults: the
    authors' run scripts (inner lr 0.1, one inner step, meta-batch 40, 20 trajectories per task, H = 100,
    MLP 64×64, Adam lr 1e-3, 5 outer steps, clip 0.3, fixed inner KL coefficient 5e-4) on 2D navigation."""

    env: str = field("Navigation2D-v0", choices=env_ids)
    """Task distribution: a metarl env id with a continuous (Box) action space."""
    env_options: str = "{}"
    """More keyword arguments for ``metarl.make_vec``, as a JSON object (e.g. ``'{"velocity_range": [0, 2]}'``)."""
    meta_batch: int = field(40, ge=1)
    """B: tasks per meta-update (the authors' meta_batch_size)."""
    trajectories_per_task: int = field(20, ge=1)
    """K: trajectories per task for each inner step and for the outer step (rollouts_per_meta_task)."""
    horizon: int = field(100, ge=1)
    """H: steps per trajectory (the env's time limit is set to it)."""
    hidden_sizes: tuple[int, ...] = field((64, 64), ge=1)
    """Hidden layer widths of the policy MLP (ReLU)."""
    init_std: float = field(1.0, gt=0)
    """Initial standard deviation of the Gaussian policy, in the policy's action units."""
    normalize_actions: bool = True
    """The policy acts in ``[-1, 1]`` per dimension, clipped there and mapped onto the env's action box
    (the authors' ``normalize`` wrapper); False: the policy acts in the env's own units."""
    policy_init: str = field("xavier", choices=POLICY_INITS)
    """Initialisation of the policy MLP: 'xavier' (Glorot-uniform weights, zero biases) or 'torch'."""
    inner_lr: float = field(0.1, gt=0)
    """α: inner SGD step size on the LVC objective."""
    inner_steps: int = field(1, ge=1)
    """Inner adaptation steps during meta-training, each on fresh trajectories of the current adapted policy."""
    outer_lr: float = field(1e-3, gt=0)
    """Adam learning rate of the outer (meta) steps (the authors' learning_rate)."""
    outer_steps: int = field(5, ge=1)
    """Full-batch Adam steps per batch of samples, without re-sampling (the authors' num_promp_steps)."""
    clip_eps: float = field(0.3, gt=0, lt=1)
    """Clip range of the outer likelihood ratio: ``[1 − clip_eps, 1 + clip_eps]``."""
    init_inner_kl_penalty: float = field(5e-4, ge=0)
    """η: initial coefficient of the inner KL penalty (one per inner step)."""
    adaptive_inner_kl: bool = False
    """Adapt η after each meta-update: halve it when the inner KL is below ``target_inner_kl / 1.5``, double
    it above ``1.5 · target_inner_kl`` (the authors' class default; their run scripts keep η fixed)."""
    target_inner_kl: float = field(0.01, gt=0)
    """Target inner KL of the adaptive penalty (unused when ``adaptive_inner_kl`` is False)."""
    gamma: float = field(0.99, ge=0, le=1)
    """Discount of the returns (Monte Carlo returns-to-go; the authors' GAE λ = 1)."""
    normalize_advantages: bool = True
    """Centre and scale advantages per task."""
    baseline_reg: float = field(1e-5, ge=0)
    """Ridge regulariser of the linear feature baseline fit."""
    iterations: int = field(500, ge=1)
    """Meta-updates."""
    seed: int = field(0, ge=0)
    """Seed of the policy init, task sampling and action sampling."""
    device: str = "cpu"
    """Torch device of envs and policy."""
    eval_tasks: int = field(40, ge=0)
    """Held-out tasks evaluated at the end of training and by ``metarl eval`` (0: none at the end)."""
    eval_steps: tuple[int, ...] = field((0, 1, 2, 3), ge=0)
    """Adaptation steps reported by the evaluation."""
    eval_trajectories: int = field(40, ge=0)
    """Trajectories per task collected at each evaluation step; 0: ``trajectories_per_task``."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def check(self):
        env_options(self.env_options, reserved=("max_episode_steps", "num_envs", "device", "seed", "autoreset_mode"))

    @property
    def num_envs(self) -> int:
        """N = meta_batch × trajectories_per_task (env i runs task i // trajectories_per_task)."""
        return self.meta_batch * self.trajectories_per_task


# ----------------------------------------------------------------------------- pieces
def sample(env, apply: FunctionalPolicy, params: dict, batched: bool, tasks, k: int, cfg: PROMPConfig,
           generator: torch.Generator, affine) -> tuple[dict, torch.Tensor]:
    """One trajectory per env of ``tasks`` (B of them, ``k`` envs each) with shared or per-task (``batched``,
    ``[B, ...]``) ``params``. Returns the per-task samples ``{obs, act, adv, mask [B, M, ...], old_logp,
    old_mean, old_log_std}`` (the sampling policy's, as data) and each task's mean return ``[B]``."""
    b = env.num_envs // k
    batch: Batch = collect(env, apply.acting(params, k if batched else None), cfg.horizon, generator,
                           tasks=tasks[torch.arange(env.num_envs) // k], action_affine=affine)
    tb = per_task_advantages(batch, b, cfg.gamma, cfg.baseline_reg, normalize=cfg.normalize_advantages)
    with torch.no_grad():
        mean, log_std = apply.batched(params, tb["obs"]) if batched else apply(params, tb["obs"])
    tb.update(old_logp=gaussian_log_prob(mean, log_std, tb["act"]), old_mean=mean, old_log_std=log_std)
    return tb, batch.episode_returns().view(-1, k).mean(1)


def outer_loss(apply: FunctionalPolicy, theta: dict, pre: list, post: dict, kl_coeffs: Sequence[float],
               cfg: PROMPConfig) -> tuple[torch.Tensor, dict]:
    """ProMP's meta-objective (to minimise): mean over tasks of the clipped surrogate of the adapted
    policies ``θ'_i(θ)`` on the post-update samples, plus ``Σ_k η_k · mean_i KL(π_old,k ‖ π_k)`` on each
    inner step's samples averaged over steps (π_k: the policy that step adapts from, a function of θ).
    Returns ``(loss, {"surrogate", "inner_kl": [per step], "outer_kl"})``."""
    loss_fn = lvc_loss_fn(apply)
    steps = [inner_loop(loss_fn, theta, pre[:j], cfg.inner_lr) for j in range(1, len(pre) + 1)]

    def kl_of(p, tb):
        mean, log_std = apply(p, tb["obs"])
        return masked_mean(gaussian_kl(tb["old_mean"], tb["old_log_std"], mean, log_std), tb["mask"])

    inner_kls = [vmap(kl_of, in_dims=(None, 0))(theta, pre[0]).mean()]
    inner_kls += [vmap(kl_of)(p, tb).mean() for p, tb in zip(steps[:-1], pre[1:])]

    def clipped(p, tb):
        mean, log_std = apply(p, tb["obs"])
        ratio = torch.exp(gaussian_log_prob(mean, log_std, tb["act"]) - tb["old_logp"])
        clip = ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)
        surr = -masked_mean(torch.min(ratio * tb["adv"], clip * tb["adv"]), tb["mask"])
        kl = masked_mean(gaussian_kl(tb["old_mean"], tb["old_log_std"], mean, log_std), tb["mask"])
        return surr, kl

    surr, outer_kl = vmap(clipped)(steps[-1], post)
    penalty = torch.stack([c * kl for c, kl in zip(kl_coeffs, inner_kls)]).mean()
    stats = {"surrogate": surr.mean(), "inner_kl": [kl.detach() for kl in inner_kls], "outer_kl": outer_kl.mean()}
    return surr.mean() + penalty, stats


def adapt_kl_coeff(coeff: float, kl: float, target: float) -> float:
    """The authors' rule: halve ``coeff`` when ``kl < target / 1.5``, double it when ``kl > 1.5 · target``."""
    if kl < target / 1.5:
        return coeff / 2
    if kl > target * 1.5:
        return coeff * 2
    return coeff


# ----------------------------------------------------------------------------- evaluation
def evaluate(policy_params, cfg: PROMPConfig, num_tasks: int | None = None, steps: Sequence[int] | None = None, *,
             seed: int = 12345, per_task: bool = False, trajectories: int | None = None) -> dict:
    """Mean return on ``num_tasks`` held-out tasks (``sample_task_split``'s test set for ``seed``; default
    ``cfg.eval_tasks``) after each number of adaptation steps in ``steps`` (default ``cfg.eval_steps``); each
    step is one LVC (= VPG at the sampling point) step of size ``cfg.inner_lr`` on freshly collected
    trajectories (``trajectories`` per task, default ``cfg.eval_trajectories``). Returns ``{steps: mean
    return}`` (``per_task=True``: ``{steps: tensor [num_tasks]}``). ``policy_params``: a
    :class:`GaussianMLPPolicy` or its ``state_dict()``."""
    num_tasks = eval_task_count(num_tasks, cfg.eval_tasks)
    steps = sorted(set(int(s) for s in (cfg.eval_steps if steps is None else steps)))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative ints, got {steps!r}")
    k = trajectories or cfg.eval_trajectories or cfg.trajectories_per_task
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"trajectories must be a positive int, got {trajectories!r}")
    env = make_horizon_env(cfg, num_tasks * k, seed=seed)
    policy = make_mlp_policy(cfg, env)
    if isinstance(policy_params, nn.Module):
        policy_params = dict(policy_params.named_parameters())
    params = {n: policy_params[n].detach().to(cfg.device) for n, _ in policy.named_parameters()}
    apply = FunctionalPolicy(policy)
    _, test = env.sample_task_split(1, num_tasks, seed=seed)
    g = torch.Generator(device=cfg.device).manual_seed(seed)
    affine = action_map(env, cfg.normalize_actions)
    out, batched, theta, seen = {}, False, params, []
    for s in range(steps[-1] + 1):
        tb, returns = sample(env, apply, params, batched, test, k, cfg, g, affine)
        if s in steps:
            out[s] = returns.cpu() if per_task else float(returns.mean())
        if s < steps[-1]:
            # s + 1 first-order steps from θ, step j on the j-th batch (sampled by the policy of step j)
            seen.append(tb)
            params = {n: v.detach() for n, v in inner_loop(lvc_loss_fn(apply), theta, seen, cfg.inner_lr,
                                                            True).items()}
            batched = True
    env.close()
    return out


# ----------------------------------------------------------------------------- the learner
class PROMPLearner:
    """ProMP as the run harness drives it (:mod:`metarl.algos.harness`): each :meth:`step` is one
    meta-update (collect the pre-update and, after each LVC inner step, the adapted trajectories of
    ``meta_batch`` tasks; then ``outer_steps`` Adam steps on the clipped, KL-penalised meta-objective)."""

    kind = "promp"

    def __init__(self, cfg: PROMPConfig):
        self.config = cfg
        self.env = make_horizon_env(cfg, cfg.num_envs)
        self.policy = make_mlp_policy(cfg, self.env)
        self.apply = FunctionalPolicy(self.policy)
        self.theta = dict(self.policy.named_parameters())
        self.optimizer = torch.optim.Adam(list(self.theta.values()), lr=cfg.outer_lr)
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)      # action sampling
        self.task_generator = torch.Generator().manual_seed(cfg.seed + 1)               # task sampling
        self.affine = action_map(self.env, cfg.normalize_actions)
        self.kl_coeffs = [cfg.init_inner_kl_penalty] * cfg.inner_steps
        self.iterations = cfg.iterations
        self.iteration = 0

    @property
    def env_steps(self) -> int:
        cfg = self.config
        return self.iteration * (cfg.inner_steps + 1) * cfg.num_envs * cfg.horizon

    def step(self) -> dict:
        cfg, apply, k = self.config, self.apply, self.config.trajectories_per_task
        tasks = self.env.sample_tasks(cfg.meta_batch, generator=self.task_generator)
        theta = {n: v.detach() for n, v in self.theta.items()}
        params, batched, pre, returns = theta, False, [], []
        for s in range(cfg.inner_steps + 1):
            tb, r = sample(self.env, apply, params, batched, tasks, k, cfg, self.generator, self.affine)
            returns.append(float(r.mean()))
            if s == cfg.inner_steps:
                post = tb
                break
            pre.append(tb)
            params = {n: v.detach() for n, v in inner_loop(lvc_loss_fn(apply), theta, pre, cfg.inner_lr, True).items()}
            batched = True

        for j in range(cfg.outer_steps):
            loss, stats = outer_loss(apply, self.theta, pre, post, self.kl_coeffs, cfg)
            if j == 0:
                loss_before = float(loss.detach())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            loss, stats = outer_loss(apply, self.theta, pre, post, self.kl_coeffs, cfg)
        inner_kls = [float(kl) for kl in stats["inner_kl"]]
        if cfg.adaptive_inner_kl:
            self.kl_coeffs = [adapt_kl_coeff(c, kl, cfg.target_inner_kl) for c, kl in zip(self.kl_coeffs, inner_kls)]
        self.iteration += 1
        return {"pre_return": returns[0], "post_return": returns[-1], "loss_before": loss_before,
                "loss_after": float(loss), "inner_kl": sum(inner_kls) / len(inner_kls),
                "outer_kl": float(stats["outer_kl"]), "inner_kl_coeff": sum(self.kl_coeffs) / len(self.kl_coeffs)}

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(), "kl_coeffs": list(self.kl_coeffs),
                "generator": self.generator.get_state(), "task_generator": self.task_generator.get_state(),
                "env": self.env.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.iteration = int(sd["iteration"])
        self.policy.load_state_dict(sd["policy"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.kl_coeffs = [float(c) for c in sd["kl_coeffs"]]
        self.generator.set_state(sd["generator"])
        self.task_generator.set_state(sd["task_generator"])
        self.env.load_state_dict(sd["env"])

    def report(self, num_tasks: int | None = None) -> dict:
        """``{"eval": {steps: mean return}}`` on held-out tasks (:func:`evaluate`); nothing when ``num_tasks``
        is None and the config's ``eval_tasks`` is 0."""
        if num_tasks is None and self.config.eval_tasks == 0:
            return {}
        return {"eval": evaluate(self.policy, self.config, num_tasks)}


# ----------------------------------------------------------------------------- train, load
def train(cfg: PROMPConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None, max_seconds: float | None = None) -> dict:
    """Meta-train through the run harness (:func:`metarl.algos.harness.run`); returns its summary
    (``iterations``, ``env_steps``, ``history``, ``eval`` when the run finished and ``eval_tasks > 0``) with
    ``policy`` (the state dict). ``run_dir``, ``resume``, ``overwrite``, ``max_iterations``, ``max_seconds``:
    as :func:`metarl.algos.maml.train`."""
    learner = PROMPLearner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations, max_seconds=max_seconds,
                          progress_keys=("pre_return", "post_return"))
    summary["policy"] = {n: v.detach().clone() for n, v in learner.policy.state_dict().items()}
    return summary


def load_policy(run_dir) -> tuple[GaussianMLPPolicy, PROMPConfig]:
    """The policy and config of a run directory."""
    ck = harness.load_checkpoint(run_dir, PROMPLearner.kind)
    cfg = PROMPConfig(**ck["config"])
    policy = make_mlp_policy(cfg, make_horizon_env(cfg, 1))
    policy.load_state_dict(ck["learner"]["policy"])
    return policy, cfg


__all__ = ["PROMPConfig", "PROMPLearner", "lvc_loss_fn", "outer_loss", "adapt_kl_coeff", "evaluate", "train",
           "load_policy"]
