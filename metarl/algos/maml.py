"""MAML (Finn, Abbeel, Levine 2017) for RL, with a functional inner loop on ``torch.func``.

Inner step per task ``i`` (one or more, each on freshly collected trajectories of the current
adapted policy, as the paper)::

    θ'_i = θ − α ⊙ ∇_θ L^VPG_{T_i}(π_θ)        (α a float, or per-parameter tensors: Meta-SGD)

where ``L^VPG`` is the REINFORCE loss with a linear feature baseline (Duan et al. 2016: obs,
obs², t, t², t³, 1, fit by least squares per task). Outer step: TRPO (conjugate gradient on
the Hessian of the mean KL, then a backtracking line search on the surrogate under
``KL ≤ max_kl``) on ``Σ_i L^surr_{T_i}(π_{θ'_i(θ)})`` from the adapted policies' trajectories,
differentiating through the inner step (second order) unless ``first_order``; or PPO's clipped
surrogate (``outer="ppo"``). The policy, baseline and TRPO pieces live in :mod:`metarl.algos.pg`.

Everything is batched over tasks: the inner loop is ``vmap`` over tasks of ``grad`` of the
task loss (:func:`inner_loop`; :func:`inner_loop_reference` is the plain Python loop it must
equal), and the rollouts of all tasks' pre- and post-adaptation policies run in ONE vector env
of ``meta_batch × trajectories_per_task`` copies (env ``i`` on task ``i // trajectories_per_task``)
with the per-task parameters stacked ``[B, ...]`` and applied by ``vmap(functional_call)``.
:mod:`metarl.algos.inner` holds the inner loop and a learn2learn-shaped wrapper for supervised or
custom uses, :class:`MAML` (``clone()`` / ``adapt(loss)``); both are importable from here too.

Use it from Python::

    >>> from metarl.algos.maml import MAMLConfig, train, evaluate
    >>> cfg = MAMLConfig(meta_batch=10, trajectories_per_task=10, horizon=30, iterations=20)
    >>> summary = train(cfg, run_dir=None, progress=False)          # doctest: +SKIP
    >>> evaluate(summary["policy"], cfg, num_tasks=40)                # doctest: +SKIP

Paper vs. code (Navigation2D-v0): the defaults follow the authors' code (cbfinn/maml_rl) where
it differs from the paper's text: inner lr 0.5 (text: 0.1); the policy acts in ``[-1, 1]``
mapped onto the env's ``[-0.1, 0.1]`` action box (rllab's ``normalize`` wrapper around the
point env; ``normalize_actions=False`` acts in the env's units); rllab's initialisation of the
policy MLP (Glorot-uniform weights, zero biases; ``policy_init``); and the test-time protocol of
its test script: 40 trajectories per adaptation step, step 1 at the inner lr and later steps
at half of it (``eval_trajectories``, ``eval_lr_scales``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import grad, vmap

from metarl import distributed
from metarl.algos import harness
from metarl.algos.inner import MAML, inner_loop, inner_loop_reference
from metarl.algos.pg import (
    ESTIMATORS,
    MEAN_SQUASHES,
    POLICY_INITS,
    Batch,
    FunctionalPolicy,
    GaussianMLPPolicy,
    action_map,
    baseline_features,
    collect,
    conjugate_gradient,
    dense_rewards,
    eval_task_count,
    fit_linear_baseline,
    gaussian_kl,
    gaussian_log_prob,
    inner_loss_fn,
    make_horizon_env,
    make_mlp_policy,
    per_task_advantages,
    per_task_dice_weights,
    trpo_step,
    vpg_loss_fn,
)
from metarl.config import Config, env_ids, env_options, field


@dataclasses.dataclass
class MAMLConfig(Config):
    """MAML-RL with a VPG inner loss and a TRPO (or PPO) outer step. Defaults: the paper's 2D
    navigation setup as in the authors' code (MLP 2×100 ReLU, 20 trajectories per task, meta-batch 20,
    H = 100, actions normalised to [-1, 1], rllab's Glorot-uniform init, inner lr 0.5, one inner
    step, TRPO max KL 0.01, γ = 0.99; evaluation on 40 trajectories per step, later steps at half
    the inner lr)."""

    env: str = field("Navigation2D-v0", choices=env_ids)
    """Task distribution: a metarl env id with a continuous (Box) action space."""
    env_options: str = "{}"
    """More keyword arguments for ``metarl.make_vec``, as a JSON object: e.g. ``'{"velocity_range": [0, 2]}'``
    (HalfCheetahVel-v0 as in the MAML paper) or ``'{"task_name": "reach-v3"}'`` (MetaWorld-ML1-v0)."""
    meta_batch: int = field(20, ge=1)
    """B: tasks per meta-update."""
    trajectories_per_task: int = field(20, ge=1)
    """K: trajectories per task for each inner step and for the outer step."""
    horizon: int = field(100, ge=1)
    """H: steps per trajectory (the env's time limit is set to it)."""
    hidden_sizes: tuple[int, ...] = field((100, 100), ge=1)
    """Hidden layer widths of the policy MLP (ReLU)."""
    init_std: float = field(1.0, gt=0)
    """Initial standard deviation of the Gaussian policy (rllab's default 1.0), in the policy's
    action units (see ``normalize_actions``)."""
    normalize_actions: bool = True
    """The policy acts in ``[-1, 1]`` per dimension, clipped there and mapped affinely onto the env's
    action box: rllab's ``normalize`` wrapper, which the MAML code puts around its envs (the MuJoCo
    families charge control cost on the action as given, so the clip matters there). False: the
    policy acts in the env's own units (for Navigation2D-v0 an initial std of 1.0 is then ten times
    the ±0.1 action box)."""
    policy_init: str = field("xavier", choices=POLICY_INITS)
    """Initialisation of the policy MLP: 'xavier' (Glorot-uniform weights and zero biases in every
    layer, the output included: rllab's MLP, which the MAML code uses) or 'torch' (``nn.Linear``'s
    default). On 2D navigation 'xavier' trained stably on more seeds, but no init cures the drift of
    the pre-update policy off the action box that diverges some seeds (bench/RESULTS.md, session 6)."""
    mean_squash: str = field("none", choices=MEAN_SQUASHES)
    """'none': the policy's mean is the MLP's output (unbounded, as rllab's); 'tanh': the mean is
    ``tanh`` of it, inside ``[-1, 1]``, the normalised action box (needs ``normalize_actions``); no cure
    for that drift either (the mean drifted to the box's edge instead)."""
    inner_lr: float = field(0.5, gt=0)
    """α: inner SGD step size (the authors' code on 2D navigation, which the spec follows; the
    paper's text says 0.1)."""
    inner_steps: int = field(1, ge=0)
    """Inner adaptation steps during meta-training, each on fresh trajectories. 0: no adaptation
    during training, i.e. plain joint training across tasks (the paper's 'pretrained' baseline;
    evaluation still adapts with ``inner_lr``); ``first_order`` and ``trust_region`` then make no
    difference, and ``meta_sgd`` is refused (no step size to learn)."""
    first_order: bool = False
    """First-order MAML: drop the second derivatives through the inner step."""
    estimator: str = field("maml", choices=ESTIMATORS)
    """The inner loss, i.e. the meta-gradient's estimator (:mod:`metarl.algos.pg`): "maml" (REINFORCE's
    surrogate ``−mean log π · A``, the authors'; its Hessian drops the score-product term, so the
    meta-gradient ignores how θ moves the pre-update samples), "lvc" (ProMP's low-variance curvature:
    ``−mean π/π_old · A``, the same inner step, the score products of each step kept) or "dice" (DiCE with
    a baseline: unbiased derivatives of the return discounted from t = 0, the cross-time products
    included; its inner step weights step t by γ^t). Evaluation adapts with the same loss."""
    meta_sgd: bool = False
    """Meta-SGD: learn a per-parameter inner step size (initialised to inner_lr) in the outer step."""
    outer: str = field("trpo", choices=("trpo", "ppo"))
    """Outer optimiser: 'trpo' (the paper) or 'ppo' (clipped surrogate with Adam)."""
    max_kl: float = field(0.01, gt=0)
    """TRPO: KL trust region (mean KL of the post-adaptation policies)."""
    trust_region: str = field("post", choices=("post", "both"))
    """TRPO: which policies the trust region bounds: "post" (the adapted policies, the authors' code)
    or "both" (the sum of the adapted policies' mean KL and the pre-update policy's, on the
    pre-update samples, ≤ ``max_kl``: bounds how far each update moves θ itself; it did not stop the
    divergence of seed 5, bench/RESULTS.md session 7)."""
    cg_iters: int = field(10, ge=1)
    """TRPO: conjugate gradient iterations."""
    cg_damping: float = field(1e-5, ge=0)
    """TRPO: damping added to the KL Hessian-vector products (rllab's reg_coeff)."""
    backtrack_ratio: float = field(0.8, gt=0, lt=1)
    """TRPO: line-search step shrink factor."""
    max_backtracks: int = field(15, ge=1)
    """TRPO: line-search tries."""
    ppo_lr: float = field(3e-4, gt=0)
    """PPO: Adam learning rate."""
    ppo_epochs: int = field(5, ge=1)
    """PPO: optimisation epochs per meta-batch (full batch)."""
    ppo_clip: float = field(0.2, gt=0)
    """PPO: ratio clip."""
    gamma: float = field(0.99, ge=0, le=1)
    """Discount of the returns (Monte Carlo returns-to-go)."""
    train_reward: str = field("env", choices=("env", "dense"))
    """Reward meta-training uses: 'env' (the env's own) or 'dense' (−‖position − goal‖ after the
    move, for the point-goal envs: meta-train shaped, adapt on the env's sparse reward, as MAESN's
    comparisons do). Evaluation always uses the env's reward."""
    normalize_advantages: bool = True
    """Centre and scale advantages per task (the MAML code's center_adv)."""
    baseline_reg: float = field(1e-5, ge=0)
    """Ridge regulariser of the linear feature baseline fit."""
    iterations: int = field(500, ge=1)
    """Meta-updates."""
    seed: int = field(0, ge=0)
    """Seed of the policy init, task sampling and action sampling."""
    device: str = "cpu"
    """Torch device of envs and policy."""
    eval_tasks: int = field(40, ge=0)
    """Held-out tasks evaluated at the end of training and by ``metarl eval`` (0: no evaluation at
    the end; ``metarl eval --tasks N`` and ``evaluate(..., num_tasks=N)`` still evaluate N); on a
    ``MetaWorld-*`` env the benchmark's test tasks in its protocol (the package's default is 200)."""
    eval_steps: tuple[int, ...] = field((0, 1, 2, 3), ge=0)
    """Adaptation steps reported by the final evaluation."""
    eval_trajectories: int = field(40, ge=0)
    """Trajectories per task collected at each evaluation step (the MAML code's test script: a
    batch of 4,000 steps, i.e. 40 trajectories of H = 100); 0: ``trajectories_per_task``."""
    eval_lr_scales: tuple[float, ...] = field((1.0, 0.5), ge=0)
    """Step size of evaluation adaptation steps 1, 2, ... as multiples of the inner lr (the last
    value repeats). The MAML code's test script takes step 1 at the meta-trained lr and the later
    ones at half of it; ``(1.0,)`` keeps the inner lr for every step."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def check(self):
        env_options(self.env_options, reserved=("max_episode_steps", "num_envs", "device", "seed", "autoreset_mode"))
        if self.train_reward == "dense" and self.env not in ("Navigation2D-v0", "SemicircleGoal-v0"):
            raise ValueError(f"train_reward='dense' needs a point-goal env (Navigation2D-v0, SemicircleGoal-v0), "
                             f"got {self.env!r}")
        if self.mean_squash != "none" and not self.normalize_actions:
            raise ValueError(f"mean_squash={self.mean_squash!r} needs normalize_actions=True (the squashed mean "
                             f"lies in [-1, 1], the normalised action box)")
        if self.meta_sgd and self.inner_steps == 0:
            raise ValueError("meta_sgd needs inner_steps >= 1 (there is no step size to learn)")

    @property
    def num_envs(self) -> int:
        """N = meta_batch × trajectories_per_task (env i runs task i // trajectories_per_task)."""
        return self.meta_batch * self.trajectories_per_task


# ----------------------------------------------------------------------------- MAML-RL pieces
def make_env(cfg: MAMLConfig, num_envs: int, seed: int | None = None):
    """``num_envs`` copies of ``cfg.env`` with the time limit ``cfg.horizon`` (Box actions only)."""
    return make_horizon_env(cfg, num_envs, seed)


def make_policy(cfg: MAMLConfig, env=None) -> GaussianMLPPolicy:
    """A fresh policy, initialised from ``cfg.seed`` (the global RNG is left as it was)."""
    return make_mlp_policy(cfg, env or make_env(cfg, 1))


def rollout(env, apply: FunctionalPolicy, params: dict, batched: bool, tasks, k: int, horizon: int,
            generator: torch.Generator, action_affine=None, shard: tuple[int, int] = (0, 1)) -> Batch:
    """One trajectory of ``horizon`` steps in every env; ``tasks`` (B of them) repeated ``k`` times;
    ``params`` shared, or per task stacked ``[B, ...]`` when ``batched`` (:func:`metarl.algos.pg.collect`,
    with its ``shard``)."""
    return collect(env, apply.acting(params, k if batched else None), horizon, generator,
                   tasks=tasks[torch.arange(env.num_envs) // k], action_affine=action_affine, shard=shard)


def episode_returns(batch: Batch, k: int) -> torch.Tensor:
    """Undiscounted return of each task's first episodes, averaged over its ``k`` trajectories: ``[B]``."""
    return batch.episode_returns().view(-1, k).mean(1)


def process(batch: Batch, cfg: MAMLConfig, b: int) -> dict:
    """The per-task samples and advantages of a batch of ``b`` tasks (:func:`metarl.algos.pg.per_task_advantages`)."""
    return per_task_advantages(batch, b, cfg.gamma, cfg.baseline_reg, normalize=cfg.normalize_advantages)


def inner_batch(batch: Batch, cfg: MAMLConfig, b: int, apply, params: dict, batched: bool) -> dict:
    """The per-task samples an inner step of ``cfg.estimator`` adapts on: advantages (:func:`process`;
    "maml", "lvc") or DiCE's weights (:func:`~metarl.algos.pg.per_task_dice_weights`; "dice"), with the
    sampling policy's (``params``, per task when ``batched``) log-probs for "lvc" and "dice"."""
    if cfg.estimator == "dice":
        tb = per_task_dice_weights(batch, b, cfg.gamma, cfg.baseline_reg, normalize=cfg.normalize_advantages)
    else:
        tb = process(batch, cfg, b)
    return tb if cfg.estimator == "maml" else with_old(apply, params, batched, tb)


def adapted(apply, theta: dict, lrs, pre: list, cfg: MAMLConfig, first_order: bool) -> dict:
    """The per-task adapted params ``[B, ...]`` from the pre-update batches (one per inner step, from
    :func:`inner_batch`)."""
    return inner_loop(inner_loss_fn(apply, cfg.estimator), theta, pre, lrs if lrs is not None else cfg.inner_lr,
                      first_order)


def with_old(apply, params: dict, batched: bool, tb: dict) -> dict:
    """Adds the behaviour policy's log-probs, means and log-stds to a per-task batch."""
    with torch.no_grad():
        mean, log_std = apply.batched(params, tb["obs"]) if batched else \
            vmap(apply, in_dims=(None, 0))(params, tb["obs"])
    return dict(tb, old_logp=gaussian_log_prob(mean, log_std, tb["act"]), old_mean=mean, old_log_std=log_std)


def outer_terms(apply, theta: dict, lrs, pre: list, post: dict, cfg: MAMLConfig, ppo: bool = False):
    """Mean over tasks of the post-adaptation surrogate loss and of KL(old ‖ new) (plus the
    pre-update policy's mean KL on its own samples when ``trust_region="both"``)."""
    def task_terms(p, tb):
        mean, log_std = apply(p, tb["obs"])
        logp = gaussian_log_prob(mean, log_std, tb["act"])
        ratio = torch.exp(logp - tb["old_logp"])
        m = tb["mask"]
        cnt = m.sum().clamp_min(1)
        if ppo:
            clipped = ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip)
            surr = -(torch.min(ratio * tb["adv"], clipped * tb["adv"]) * m).sum() / cnt
        else:
            surr = -(ratio * tb["adv"] * m).sum() / cnt
        kl = (gaussian_kl(tb["old_mean"], tb["old_log_std"], mean, log_std) * m).sum() / cnt
        return surr, kl

    def pre_kl(p, tb):
        mean, log_std = apply(p, tb["obs"])
        m = tb["mask"]
        return (gaussian_kl(tb["old_mean"], tb["old_log_std"], mean, log_std) * m).sum() / m.sum().clamp_min(1)

    if pre:
        surr, kl = vmap(task_terms)(adapted(apply, theta, lrs, pre, cfg, cfg.first_order), post)
    else:
        surr, kl = vmap(task_terms, in_dims=(None, 0))(theta, post)
    kl = kl.mean()
    if cfg.trust_region == "both" and pre:
        kl = kl + vmap(pre_kl, in_dims=(None, 0))(theta, pre[0]).mean()
    return surr.mean(), kl


# ----------------------------------------------------------------------------- evaluation
def evaluate(policy_params, cfg: MAMLConfig, num_tasks: int | None = None, steps: Sequence[int] | None = None, *,
             inner_lrs: dict | None = None, seed: int = 12345, per_task: bool = False,
             metric: str = "return", trajectories: int | None = None,
             lr_scales: Sequence[float] | None = None) -> dict:
    """Average return on ``num_tasks`` held-out tasks (``sample_task_split``'s test set for ``seed``;
    default ``cfg.eval_tasks``) after each number of adaptation steps in ``steps`` (default
    ``cfg.eval_steps``); each step adapts on freshly collected trajectories (``trajectories`` per task,
    default ``cfg.eval_trajectories``) of the current adapted policy, step ``j`` (1-based) with
    ``cfg.inner_lr`` (or the learned ``inner_lrs``) times ``lr_scales[j - 1]`` (default
    ``cfg.eval_lr_scales``; the last value repeats). Returns ``{steps: mean return}``
    (``per_task=True``: ``{steps: tensor [num_tasks]}``). ``metric="reached"`` reports instead
    the fraction of episodes with a positive return (on SemicircleGoal-v0: the goal region reached).

    ``policy_params``: a :class:`GaussianMLPPolicy`, or its ``state_dict()`` / ``named_parameters`` dict.
    """
    num_tasks = eval_task_count(num_tasks, cfg.eval_tasks)
    if metric not in ("return", "reached"):
        raise ValueError(f"metric must be 'return' or 'reached', got {metric!r}")
    steps = sorted(set(int(s) for s in (cfg.eval_steps if steps is None else steps)))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative ints, got {steps!r}")
    k = trajectories or cfg.eval_trajectories or cfg.trajectories_per_task
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"trajectories must be a positive int, got {trajectories!r}")
    scales = cfg.eval_lr_scales if lr_scales is None else tuple(lr_scales)
    if not scales or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x >= 0 for x in scales):
        raise ValueError(f"lr_scales must be a non-empty sequence of numbers >= 0, got {scales!r}")
    env = make_env(cfg, num_tasks * k, seed=seed)
    policy = make_policy(cfg, env)
    if isinstance(policy_params, nn.Module):
        policy_params = dict(policy_params.named_parameters())
    names = [n for n, _ in policy.named_parameters()]
    missing = [n for n in names if n not in policy_params]
    if missing:
        raise ValueError(f"policy_params lacks {missing}")
    params = {n: policy_params[n].detach().to(cfg.device) for n in names}
    base_lr = {n: v.detach() for n, v in inner_lrs.items()} if inner_lrs is not None else cfg.inner_lr
    apply = FunctionalPolicy(policy)
    loss_fn = inner_loss_fn(apply, cfg.estimator)
    _, test = env.sample_task_split(1, num_tasks, seed=seed)
    g = torch.Generator(device=cfg.device).manual_seed(seed)
    affine = action_map(env, cfg.normalize_actions)
    out, batched = {}, False
    for s in range(steps[-1] + 1):
        batch = rollout(env, apply, params, batched, test, k, cfg.horizon, g, affine)
        if s in steps:
            r = (batch.episode_returns() > 0).float().view(-1, k).mean(1) if metric == "reached" else \
                episode_returns(batch, k)
            out[s] = r.cpu() if per_task else float(r.mean())
        if s < steps[-1]:
            scale = scales[min(s, len(scales) - 1)]
            lr = {n: v * scale for n, v in base_lr.items()} if isinstance(base_lr, dict) else base_lr * scale
            tb = inner_batch(batch, cfg, num_tasks, apply, params, batched)
            def sgd_step(p, b, lr=lr):      # first order: the adapted params are data, not a graph
                return {n: p[n] - (lr[n] if isinstance(lr, dict) else lr) * g for n, g in grad(loss_fn)(p, b).items()}
            params = {n: v.detach() for n, v in vmap(sgd_step, in_dims=(0 if batched else None, 0))(params, tb).items()}
            batched = True
    return out


class MetaWorldAgent:
    """MAML as the Meta-World benchmark's meta-learning agent (:func:`metarl.envs.metaworld.metalearning_evaluation`).

    ``init`` restores the meta-trained parameters; ``adapt_action`` samples the current (adapted) policy
    and ``step`` stores those transitions; ``adapt`` takes one VPG step per env copy (each copy runs one
    test task: its adaptation episodes, all of the same length, are the step's trajectories; loss,
    linear-baseline advantages and first-order step as :func:`evaluate`'s), adaptation round ``j``
    (1-based) at ``inner_lr`` (or the learned ``inner_lrs``) times ``cfg.eval_lr_scales[j - 1]``;
    ``eval_action`` acts with the adapted policy's mean; evaluation transitions are not stored.
    Actions go through :func:`~metarl.algos.pg.action_map` as in training."""

    def __init__(self, policy: GaussianMLPPolicy, cfg: MAMLConfig, env, generator: torch.Generator,
                 inner_lrs: dict | None = None):
        self.cfg, self.num_envs, self.generator = cfg, env.num_envs, generator
        self.apply = FunctionalPolicy(policy)
        self.loss_fn = inner_loss_fn(self.apply, cfg.estimator)
        self.theta = {n: p.detach() for n, p in policy.named_parameters()}
        self.base_lr = {n: v.detach() for n, v in inner_lrs.items()} if inner_lrs is not None else cfg.inner_lr
        self.affine = action_map(env, cfg.normalize_actions)
        self.init()

    def init(self) -> None:
        self.params, self.batched, self.rounds = self.theta, False, 0
        self.adapting, self.last = True, None
        self.buf: dict[str, list] = {"obs": [], "act": [], "rew": [], "done": []}

    @torch.no_grad()
    def _policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batched:
            return self.apply(self.params, obs)
        mean, log_std = self.apply.batched(self.params, obs.view(self.num_envs, 1, -1))
        return mean.reshape(self.num_envs, -1), log_std.reshape(self.num_envs, -1)

    def _to_env(self, a: torch.Tensor) -> torch.Tensor:
        if self.affine is None:
            return a
        scale, offset = (x.to(a.device) for x in self.affine)
        return offset + scale * a.clamp(-1.0, 1.0)

    def adapt_action(self, obs: torch.Tensor) -> torch.Tensor:
        mean, log_std = self._policy(obs)
        self.last = mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator, device=mean.device)
        return self._to_env(self.last)

    def eval_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self._to_env(self._policy(obs)[0])

    def step(self, obs, actions, reward, terminated, truncated) -> None:
        if self.adapting:
            for k, v in (("obs", obs), ("act", self.last), ("rew", reward), ("done", terminated | truncated)):
                self.buf[k].append(v)

    def adapt(self) -> None:
        cfg, n = self.cfg, self.num_envs
        done = torch.stack(self.buf["done"])                       # [E * H, n]
        h = int(done[:, 0].nonzero()[0]) + 1                       # episodes all last H steps (no early end)
        e = done.shape[0] // h

        def regroup(x):     # [E * H, n, ...] -> [H, n * E, ...]: env i's episodes are trajectories i * E + j
            x = torch.stack(x).view(e, h, n, *x[0].shape[1:]).transpose(0, 1).transpose(1, 2)
            return x.reshape(h, n * e, *x.shape[3:])
        obs, act, rew = regroup(self.buf["obs"]), regroup(self.buf["act"]), regroup(self.buf["rew"])
        start = torch.zeros((h, n * e), dtype=torch.bool, device=obs.device)
        start[0] = True
        batch = Batch(obs, act, rew, torch.ones_like(rew), start, obs)
        scale = cfg.eval_lr_scales[min(self.rounds, len(cfg.eval_lr_scales) - 1)]
        lr = {k: v * scale for k, v in self.base_lr.items()} if isinstance(self.base_lr, dict) else self.base_lr * scale
        loss_fn = self.loss_fn

        def sgd_step(p, b):
            return {k: p[k] - (lr[k] if isinstance(lr, dict) else lr) * g for k, g in grad(loss_fn)(p, b).items()}
        tb = inner_batch(batch, cfg, n, self.apply, self.params, self.batched)
        self.params = {k: v.detach() for k, v in
                       vmap(sgd_step, in_dims=(0 if self.batched else None, 0))(self.params, tb).items()}
        self.batched, self.rounds, self.adapting = True, self.rounds + 1, False
        self.buf = {k: [] for k in self.buf}

    def reset(self, mask: torch.Tensor) -> None:
        pass


def metaworld_report(policy, cfg: MAMLConfig, num_tasks: int | None = None, *, inner_lrs: dict | None = None,
                     seed: int = 12345, adaptation_episodes: int = 10, evaluation_episodes: int = 3,
                     max_episode_steps: int | None = None) -> dict:
    """The Meta-World benchmark's metric of a MAML policy trained on a ``MetaWorld-*`` env: success rate
    (per test task name and their mean) and mean return on the benchmark's TEST tasks (of the training
    env's benchmark: its ``env_options``, ``benchmark_seed`` ``cfg.seed`` unless they set it) after one
    adaptation step on ``adaptation_episodes`` episodes per task, over the first ``evaluation_episodes``
    evaluation episodes, by
    :func:`metarl.envs.metaworld.metalearning_evaluation` with :class:`MetaWorldAgent`; ``num_tasks``
    test tasks in all (default 200: the package's 20 envs x 10 evaluations), episodes of the benchmark's
    500 steps (``max_episode_steps``). Returns ``{"eval": {"success_rate", "return",
    "success_rate_per_task": {name: rate}, "return_per_task", "num_evals", "num_envs",
    "adaptation_episodes", "evaluation_episodes", "episode_steps"}}``."""
    from metarl.envs import metaworld as mw

    def make_agent(env, gen):
        return MetaWorldAgent(policy, cfg, env, gen, inner_lrs)

    return mw.meta_test_report(cfg.env, env_options(cfg.env_options), make_agent,
                               benchmark_seed=cfg.seed, num_tasks=num_tasks, max_episode_steps=max_episode_steps,
                               seed=seed, device=cfg.device, adaptation_episodes=adaptation_episodes,
                               evaluation_episodes=evaluation_episodes)


# ----------------------------------------------------------------------------- the learner
class MAMLLearner:
    """MAML-RL as the run harness drives it (:mod:`metarl.algos.harness`): each :meth:`step` is one
    meta-update (collect the pre-update and, after each inner step, the adapted trajectories of
    ``meta_batch`` tasks; then the TRPO or PPO outer step through the inner loop). Under ``torchrun`` each
    rank owns ``meta_batch / world`` of the tasks; the outer step's gradient, Fisher-vector products, KL and
    line-search values are averaged over ranks (:mod:`metarl.distributed`: one process's step)."""

    kind = "maml"
    data_parallel = True        # shards its tasks under torchrun (harness.run refuses learners without it)

    def __init__(self, cfg: MAMLConfig):
        self.config = cfg
        distributed.init(cfg.device)
        self.tasks_per_rank = distributed.shard(cfg.meta_batch, "meta_batch")
        self.env = make_env(cfg, self.tasks_per_rank * cfg.trajectories_per_task)
        distributed.shard_env_keys(self.env, cfg.seed)
        self.policy = make_policy(cfg, self.env)
        self.apply = FunctionalPolicy(self.policy)
        self.theta = dict(self.policy.named_parameters())
        self.lrs = None if not cfg.meta_sgd else \
            {n: torch.full_like(p, cfg.inner_lr).requires_grad_(True) for n, p in self.theta.items()}
        self.meta_params = list(self.theta.values()) + (list(self.lrs.values()) if self.lrs is not None else [])
        self.optimizer = torch.optim.Adam(self.meta_params, lr=cfg.ppo_lr, eps=1e-5) if cfg.outer == "ppo" else None
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)      # action sampling
        self.task_generator = torch.Generator().manual_seed(cfg.seed + 1)               # task sampling
        self.affine = action_map(self.env, cfg.normalize_actions)
        self.iterations = cfg.iterations
        self.iteration = 0

    @property
    def env_steps(self) -> int:
        cfg = self.config
        return self.iteration * (cfg.inner_steps + 1) * cfg.num_envs * cfg.horizon

    def step(self) -> dict:
        cfg, apply = self.config, self.apply
        b, k = self.tasks_per_rank, cfg.trajectories_per_task
        # collect: pre-update trajectories, then one fresh batch per inner step (every rank draws the
        # whole meta-batch and keeps its rows)
        tasks = self.env.sample_tasks(cfg.meta_batch, generator=self.task_generator)[distributed.rows(b)]
        theta = {n: v.detach() for n, v in self.theta.items()}
        lr_now = {n: v.detach() for n, v in self.lrs.items()} if self.lrs is not None else cfg.inner_lr
        params, batched, pre, returns = theta, False, [], []
        pop = getattr(self.env, "pop_episode_successes", None)     # Meta-World: success at any step
        successes = []
        for s in range(cfg.inner_steps + 1):
            batch = rollout(self.env, apply, params, batched, tasks, k, cfg.horizon, self.generator, self.affine,
                            distributed.shard_index())
            returns.append(float(episode_returns(batch, k).mean()))
            if pop is not None:
                finished, succeeded = pop()
                successes.append(succeeded / finished if finished else float("nan"))
            if cfg.train_reward == "dense":
                batch = dense_rewards(batch, tasks.goal[torch.arange(b * k) // k])
            if s == cfg.inner_steps:
                post = with_old(apply, params, batched, process(batch, cfg, b))
                break
            tb = inner_batch(batch, cfg, b, apply, params, batched)
            if s == 0 and cfg.trust_region == "both" and cfg.estimator == "maml":
                tb = with_old(apply, params, batched, tb)
            pre.append(tb)
            params = {n: v.detach() for n, v in adapted(apply, theta, lr_now, pre, cfg, True).items()}
            batched = True

        # update: TRPO (or PPO) on the post-adaptation surrogate, through the inner loop
        def objective(ppo=False):
            return outer_terms(apply, self.theta, self.lrs, pre, post, cfg, ppo)
        if cfg.outer == "trpo":
            stats = trpo_step(objective, self.meta_params, cfg.max_kl, cg_iters=cfg.cg_iters,
                              cg_damping=cfg.cg_damping, backtrack_ratio=cfg.backtrack_ratio,
                              max_backtracks=cfg.max_backtracks, reduce=distributed.all_reduce_mean)
        else:
            with torch.no_grad():
                stats = {"surrogate_before": float(objective()[0]), "accepted": 1}
            for _ in range(cfg.ppo_epochs):
                loss, _ = objective(True)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.mean_grads(self.meta_params)
                self.optimizer.step()
            with torch.no_grad():
                loss, kl = objective()
            stats.update(surrogate_after=float(loss), kl=float(kl))
        self.iteration += 1
        # log
        row = {"pre_return": returns[0], "post_return": returns[-1]}
        if successes:
            row.update(pre_success=successes[0], post_success=successes[-1])
        return {**row, **{n: stats[n] for n in ("surrogate_before", "surrogate_after", "kl", "accepted")}}

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "policy": self.policy.state_dict(),
                "inner_lrs": None if self.lrs is None else {n: v.detach().clone() for n, v in self.lrs.items()},
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "task_generator": self.task_generator.get_state(),
                "env": self.env.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.iteration = int(sd["iteration"])
        self.policy.load_state_dict(sd["policy"])
        if self.lrs is not None:
            with torch.no_grad():
                for n, v in self.lrs.items():
                    v.copy_(sd["inner_lrs"][n])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(sd["optimizer"])
        self.generator.set_state(sd["generator"])
        self.task_generator.set_state(sd["task_generator"])
        self.env.load_state_dict(sd["env"])

    def report(self, num_tasks: int | None = None) -> dict:
        """``{"eval": {steps: mean return}}`` on ``num_tasks`` (default ``eval_tasks``) held-out tasks (on a
        ``MetaWorld-*`` env the benchmark's metric on as many of its test tasks, :func:`metaworld_report`;
        the package's own protocol is 200); nothing when ``num_tasks`` is None and ``eval_tasks`` is 0."""
        if num_tasks is None and self.config.eval_tasks == 0:
            return {}
        if self.config.env.startswith("MetaWorld-"):    # the benchmark's metric on eval_tasks test tasks
            return metaworld_report(self.policy, self.config, num_tasks or self.config.eval_tasks, inner_lrs=self.lrs)
        return {"eval": evaluate(self.policy, self.config, num_tasks, inner_lrs=self.lrs)}


# ----------------------------------------------------------------------------- train, load
def train(cfg: MAMLConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None, max_seconds: float | None = None) -> dict:
    """Meta-train through the run harness (:func:`metarl.algos.harness.run`); returns its summary
    (``iterations``, ``env_steps``, ``train_seconds``, ``history``: one row per meta-update, and
    when the run finished and ``eval_tasks > 0``, ``eval``: ``{steps: mean return}`` on held-out
    tasks) with ``policy`` (the state dict), ``inner_lrs`` (Meta-SGD, else None) and the last
    update's ``pre_return`` / ``post_return``.

    ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv``, ``checkpoint.pt`` and
    ``summary.json``; ``resume=True`` continues from its checkpoint with the results of an
    uninterrupted run; ``overwrite=True`` starts over in a directory that holds a run.
    ``max_iterations`` / ``max_seconds`` (a wall-clock budget, checked after each meta-update) stop early.
    """
    learner = MAMLLearner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations, max_seconds=max_seconds,
                          progress_keys=("pre_return", "post_return", "post_success"))
    last = summary["history"][-1] if summary["history"] else {}
    summary.update(pre_return=last.get("pre_return", float("nan")), post_return=last.get("post_return", float("nan")),
                   policy={n: v.detach().clone() for n, v in learner.policy.state_dict().items()},
                   inner_lrs=None if learner.lrs is None else {n: v.detach().clone() for n, v in learner.lrs.items()})
    return summary


def load_policy(run_dir) -> tuple[GaussianMLPPolicy, MAMLConfig, dict | None]:
    """The policy, config and learned inner step sizes (Meta-SGD, else None) of a run directory."""
    ck = harness.load_checkpoint(run_dir, MAMLLearner.kind)
    cfg = MAMLConfig(**ck["config"])
    policy = make_policy(cfg)
    policy.load_state_dict(ck["learner"]["policy"])
    return policy, cfg, ck["learner"]["inner_lrs"]


__all__ = ["MAML", "MAMLConfig", "MAMLLearner", "GaussianMLPPolicy", "inner_loop", "inner_loop_reference",
           "conjugate_gradient", "baseline_features", "fit_linear_baseline", "trpo_step", "gaussian_kl", "train",
           "evaluate", "load_policy", "make_env", "make_policy", "action_map", "MetaWorldAgent", "metaworld_report",
           "vpg_loss_fn", "inner_batch"]
