"""MAML (Finn, Abbeel, Levine 2017) for RL, with a functional inner loop on ``torch.func``.

Inner step per task ``i`` (one or more, each on freshly collected trajectories of the current
adapted policy, as the paper)::

    θ'_i = θ − α ⊙ ∇_θ L^VPG_{T_i}(π_θ)        (α a float, or per-parameter tensors: Meta-SGD)

where ``L^VPG`` is the REINFORCE loss with a linear feature baseline (Duan et al. 2016: obs,
obs², t, t², t³, 1, fit by least squares per task). Outer step: TRPO (conjugate gradient on
the Hessian of the mean KL, then a backtracking line search on the surrogate under
``KL ≤ max_kl``) on ``Σ_i L^surr_{T_i}(π_{θ'_i(θ)})`` from the adapted policies' trajectories,
differentiating through the inner step (second order) unless ``first_order``; or PPO's clipped
surrogate (``outer="ppo"``).

Everything is batched over tasks: the inner loop is ``vmap`` over tasks of ``grad`` of the
task loss (:func:`inner_loop`; :func:`inner_loop_reference` is the plain Python loop it must
equal), and the rollouts of all tasks' pre- and post-adaptation policies run in ONE vector env
of ``meta_batch × trajectories_per_task`` copies (env ``i`` on task ``i // trajectories_per_task``)
with the per-task parameters stacked ``[B, ...]`` and applied by ``vmap(functional_call)``.

For supervised or custom uses there is also a learn2learn-shaped wrapper, :class:`MAML`
(``clone()`` / ``adapt(loss)``).

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

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import metarl
from metarl import checkpoint
from metarl.algos._run import (
    CHECKPOINT,
    CONFIG_JSON,
    ProgressLog,
    check_choice,
    check_nonnegative_ints,
    check_positive_ints,
    load_for_resume,
)
from metarl.kernels.returns import lambda_returns

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- the learn2learn-shaped wrapper
def _clone_module(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` whose parameters are ``p.clone()`` (differentiable functions of
    the originals, not leaves); buffers are shared. Works on clones of clones (no deepcopy)."""
    clone = copy.copy(module)
    clone.__dict__ = module.__dict__.copy()
    clone.__dict__["_parameters"] = {k: (None if p is None else p.clone()) for k, p in module._parameters.items()}
    clone.__dict__["_buffers"] = dict(module._buffers)
    clone.__dict__["_modules"] = {k: (None if m is None else _clone_module(m)) for k, m in module._modules.items()}
    return clone


def _param_slots(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(owner, name)`` of every parameter, in ``named_parameters`` order (shared ones once)."""
    slots, seen = [], set()
    for m in module.modules():
        for k, p in m._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                slots.append((m, k))
    return slots


class MAML(nn.Module):
    """learn2learn-style MAML wrapper around any ``nn.Module``.

    ``clone()`` returns a wrapper around a copy of the module whose parameters are
    differentiable functions of the originals; ``adapt(loss)`` takes one SGD step
    ``p ← p − lr · ∂loss/∂p`` in place on that clone, keeping the graph (second order) unless
    ``first_order``. A loss computed with the adapted clone backpropagates to the original
    parameters.

    Example::

        >>> import torch
        >>> from metarl.algos.maml import MAML
        >>> maml = MAML(torch.nn.Linear(1, 1), lr=0.1)
        >>> x, y = torch.randn(8, 1), torch.randn(8, 1)
        >>> learner = maml.clone()
        >>> learner.adapt(((learner(x) - y) ** 2).mean())
        >>> ((learner(x) - y) ** 2).mean().backward()     # reaches maml.module's parameters
        >>> maml.module.weight.grad is not None
        True
    """

    def __init__(self, module: nn.Module, lr: float, first_order: bool = False, allow_unused: bool = False):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.module = module
        self.lr = float(lr)
        self.first_order = bool(first_order)
        self.allow_unused = bool(allow_unused)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def clone(self, first_order: bool | None = None) -> MAML:
        """A wrapper around a differentiable copy of the module (same lr; ``first_order`` overrides)."""
        new = copy.copy(self)
        new.__dict__ = self.__dict__.copy()
        new.__dict__["_modules"] = {"module": _clone_module(self.module)}
        if first_order is not None:
            new.__dict__["first_order"] = bool(first_order)
        return new

    def adapt(self, loss: torch.Tensor, first_order: bool | None = None) -> None:
        """One inner SGD step on this (cloned) module's parameters, in place."""
        first_order = self.first_order if first_order is None else bool(first_order)
        slots = _param_slots(self.module)
        params = [m._parameters[k] for m, k in slots]
        grads = torch.autograd.grad(loss, params, create_graph=not first_order, retain_graph=not first_order,
                                    allow_unused=self.allow_unused)
        for (m, k), p, g in zip(slots, params, grads):
            if g is not None:
                m._parameters[k] = p - self.lr * g


# ----------------------------------------------------------------------------- the functional inner loop
def _lr_of(lr, name: str):
    return lr[name] if isinstance(lr, dict) else lr


def inner_loop(loss_fn: Callable, params: dict, batches: Sequence, lr, first_order: bool = False) -> dict:
    """Adapt ``params`` to every task at once: ``vmap`` over tasks of ``len(batches)`` SGD steps.

    ``loss_fn(params, task_batch) -> scalar`` is the loss of ONE task; ``params`` a dict of
    tensors shared by all tasks (the meta-parameters, possibly requiring grad); ``batches`` a
    sequence with one entry per inner step, each a pytree of tensors with a leading task dim
    ``[B, ...]`` (step ``k`` uses ``batches[k]``; repeat an entry to take several steps on the
    same data); ``lr`` a float or a dict of tensors shaped like ``params`` (Meta-SGD).
    ``first_order`` drops the second derivatives (the gradients are treated as constants).
    Returns the adapted parameters, each ``[B, *shape]``; they are differentiable functions of
    ``params`` (and of ``lr`` when it is a dict of tensors).
    """
    if len(batches) == 0:
        raise ValueError("batches must hold at least one inner step")
    task_grad = grad(loss_fn)

    def one_task(*task_batches):
        p = params
        for b in task_batches:
            g = task_grad(p, b)
            p = {k: p[k] - _lr_of(lr, k) * (g[k].detach() if first_order else g[k]) for k in p}
        return p

    return vmap(one_task)(*batches)


def inner_loop_reference(loss_fn: Callable, params: dict, batches: Sequence, lr, first_order: bool = False) -> dict:
    """:func:`inner_loop` as a plain Python loop over tasks with ``torch.autograd.grad`` (the oracle)."""
    num_tasks = _leading_dim(batches[0])
    out = []
    for i in range(num_tasks):
        p = dict(params)
        for b in batches:
            bi = _index_tree(b, i)
            names = list(p)
            loss = loss_fn(p, bi)
            gs = torch.autograd.grad(loss, [p[k] for k in names], create_graph=not first_order)
            p = {k: p[k] - _lr_of(lr, k) * (g.detach() if first_order else g) for k, g in zip(names, gs)}
        out.append(p)
    return {k: torch.stack([o[k] for o in out]) for k in params}


def _leading_dim(tree) -> int:
    if isinstance(tree, torch.Tensor):
        return tree.shape[0]
    if isinstance(tree, dict):
        return _leading_dim(next(iter(tree.values())))
    return _leading_dim(tree[0])


def _index_tree(tree, i: int):
    if isinstance(tree, torch.Tensor):
        return tree[i]
    if isinstance(tree, dict):
        return {k: _index_tree(v, i) for k, v in tree.items()}
    return type(tree)(_index_tree(v, i) for v in tree)


# ----------------------------------------------------------------------------- TRPO pieces
def conjugate_gradient(avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given only ``avp(v) = A v``
    (Hestenes–Stiefel CG, as TRPO; ``iters`` iterations at most)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if float(rr) < residual_tol:
            break
        ap = avp(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def baseline_features(obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Duan et al. (2016) / rllab ``LinearFeatureBaseline`` features of ``obs [..., d]`` at time
    steps ``t [...]``: ``[clip(obs, ±10), clip(obs, ±10)², t/100, (t/100)², (t/100)³, 1]``."""
    o = obs.clamp(-10, 10)
    al = (t.to(obs.dtype) / 100.0).unsqueeze(-1)
    return torch.cat([o, o * o, al, al ** 2, al ** 3, torch.ones_like(al)], -1)


def fit_linear_baseline(features: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None = None,
                        reg_coeff: float = 1e-5) -> torch.Tensor:
    """Least-squares coefficients ``[B, F]`` per task from ``features [B, M, F]``, ``returns [B, M]``
    (samples with ``mask == 0`` ignored): ``(XᵀX + reg·I) w = Xᵀy`` in float64, the regulariser
    multiplied by 10 while the solve is not finite (as rllab)."""
    x = features.double()
    y = returns.double()
    if mask is not None:
        x = x * mask.double().unsqueeze(-1)
        y = y * mask.double()
    xtx = x.transpose(1, 2) @ x
    xty = (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(x.shape[-1], dtype=torch.float64, device=x.device)
    reg = reg_coeff
    for _ in range(5):
        if reg > 0:
            w = torch.linalg.solve(xtx + reg * eye, xty)
        else:   # plain least squares (tests compare against numpy.linalg.lstsq)
            w = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
        if bool(torch.isfinite(w).all()):
            break
        reg = max(reg, 1e-10) * 10
    return w.to(features.dtype)


# ----------------------------------------------------------------------------- policy
POLICY_INITS = ("torch", "xavier")
MEAN_SQUASHES = ("none", "tanh")


class GaussianMLPPolicy(nn.Module):
    """``π(a | s) = N(μ_θ(s), diag(exp(log_std))²)`` with an MLP mean (ReLU hidden layers) and a
    state-independent learned ``log_std`` (rllab's GaussianMLPPolicy, as the MAML code).

    ``init``: ``"xavier"`` is rllab's and the MAML code's (Glorot-uniform weights and zero biases
    in every layer, the output layer included); ``"torch"`` keeps ``nn.Linear``'s default
    initialisation (kaiming-uniform weights with a = √5, uniform biases).
    ``mean_squash``: ``"none"`` (an unbounded mean, as rllab) or ``"tanh"`` (``μ = tanh(MLP(s))``,
    a mean inside ``[-1, 1]``: for policies whose actions are normalised onto a box).

    Example::

        >>> import torch
        >>> from metarl.algos.maml import GaussianMLPPolicy
        >>> mean, log_std = GaussianMLPPolicy(2, 2)(torch.zeros(5, 2))
        >>> mean.shape, log_std.shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (100, 100), init_std: float = 1.0,
                 init: str = "xavier", mean_squash: str = "none"):
        super().__init__()
        if init not in POLICY_INITS:
            raise ValueError(f"init must be one of {POLICY_INITS}, got {init!r}")
        if mean_squash not in MEAN_SQUASHES:
            raise ValueError(f"mean_squash must be one of {MEAN_SQUASHES}, got {mean_squash!r}")
        layers, d = [], obs_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, act_dim))
        if init == "xavier":
            for layer in layers:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
        self.mean = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.squash = mean_squash == "tanh"

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean(obs)
        if self.squash:
            mean = torch.tanh(mean)
        return mean, self.log_std.expand(obs.shape[:-1] + self.log_std.shape)


def _gauss_logp(mean, log_std, act):
    return (-0.5 * ((act - mean) / log_std.exp()) ** 2 - log_std - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(m0, s0, m1, s1):
    """KL(N(m0, e^{s0}) ‖ N(m1, e^{s1})) of diagonal Gaussians (means, log-stds), summed over the last dim."""
    return (s1 - s0 + (torch.exp(2 * s0) + (m0 - m1) ** 2) / (2 * torch.exp(2 * s1)) - 0.5).sum(-1)


# ----------------------------------------------------------------------------- config
def _lr_scales(name: str, scales) -> tuple:
    """``scales`` as a tuple, checked: a non-empty sequence of numbers >= 0."""
    scales = tuple(scales)
    if not scales or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x >= 0 for x in scales):
        raise ValueError(f"{name} must be a non-empty sequence of numbers >= 0, got {scales!r}")
    return scales


@dataclasses.dataclass
class MAMLConfig:
    """MAML-RL with a VPG inner loss and a TRPO (or PPO) outer step. Defaults: the paper's 2D
    navigation setup as in the authors' code (MLP 2×100 ReLU, 20 trajectories per task, meta-batch 20,
    H = 100, actions normalised to [-1, 1], rllab's Glorot-uniform init, inner lr 0.5, one inner
    step, TRPO max KL 0.01, γ = 0.99; evaluation on 40 trajectories per step, later steps at half
    the inner lr)."""

    env: str = "Navigation2D-v0"
    """Task distribution: a metarl env id with a continuous (Box) action space."""
    meta_batch: int = 20
    """B: tasks per meta-update."""
    trajectories_per_task: int = 20
    """K: trajectories per task for each inner step and for the outer step."""
    horizon: int = 100
    """H: steps per trajectory (the env's time limit is set to it)."""
    hidden_sizes: tuple = (100, 100)
    """Hidden layer widths of the policy MLP (ReLU)."""
    init_std: float = 1.0
    """Initial standard deviation of the Gaussian policy (rllab's default 1.0), in the policy's
    action units (see ``normalize_actions``)."""
    normalize_actions: bool = True
    """The policy acts in ``[-1, 1]`` per dimension, mapped affinely onto the env's action box
    (then clipped by the env): rllab's ``normalize`` wrapper, which the MAML code puts around its
    point env. False: the policy acts in the env's own units (for Navigation2D-v0 an initial std of
    1.0 is then ten times the ±0.1 action box)."""
    policy_init: str = "xavier"
    """Initialisation of the policy MLP: 'xavier' (Glorot-uniform weights and zero biases in every
    layer, the output included: rllab's MLP, which the MAML code uses) or 'torch' (``nn.Linear``'s
    default: kaiming-uniform weights with a = √5 and uniform biases). On 2D navigation (100 TRPO
    updates, bench/RESULTS.md session 6) 'xavier' trained stably on CPU seeds 0–4 and 6 (3-step
    return −4.4 to −5.5) where 'torch' diverged on seed 2 (the pre-update policy's mean drifted off
    the action box); it is no cure for that drift, though: 'xavier' diverged on CPU seed 5 and on
    3 of GPU seeds 3–6, 'torch' on 2 of those."""
    mean_squash: str = "none"
    """'none': the policy's mean is the MLP's output (unbounded, as rllab's); 'tanh': the mean is
    ``tanh`` of it, inside ``[-1, 1]``, the normalised action box (needs ``normalize_actions``).
    Not a cure for the drift that 'torch' init showed on 2D navigation seed 2: with 'tanh' the
    pre-update mean drifted to the box's edge instead (−216 at 0 steps after 28 updates)."""
    inner_lr: float = 0.5
    """α: inner SGD step size (the authors' code on 2D navigation, which the spec follows; the
    paper's text says 0.1)."""
    inner_steps: int = 1
    """Inner adaptation steps during meta-training, each on fresh trajectories (0: no adaptation,
    i.e. plain joint training across tasks, the paper's 'pretrained' baseline)."""
    first_order: bool = False
    """First-order MAML: drop the second derivatives through the inner step."""
    meta_sgd: bool = False
    """Meta-SGD: learn a per-parameter inner step size (initialised to inner_lr) in the outer step."""
    outer: str = "trpo"
    """Outer optimiser: 'trpo' (the paper) or 'ppo' (clipped surrogate with Adam)."""
    max_kl: float = 0.01
    """TRPO: KL trust region (mean KL of the post-adaptation policies)."""
    trust_region: str = "post"
    """TRPO: which policies the trust region bounds: "post" (the adapted policies, the authors' code)
    or "both" (the sum of the adapted policies' mean KL and the pre-update policy's, on the
    pre-update samples, ≤ ``max_kl``), which bounds how far each update moves θ itself. Measured:
    it did not stop the divergence of seed 5 (the pre-update policy still drifts off over 100
    updates; bench/RESULTS.md, session 7)."""
    cg_iters: int = 10
    """TRPO: conjugate gradient iterations."""
    cg_damping: float = 1e-5
    """TRPO: damping added to the KL Hessian-vector products (rllab's reg_coeff)."""
    backtrack_ratio: float = 0.8
    """TRPO: line-search step shrink factor."""
    max_backtracks: int = 15
    """TRPO: line-search tries."""
    ppo_lr: float = 3e-4
    """PPO: Adam learning rate."""
    ppo_epochs: int = 5
    """PPO: optimisation epochs per meta-batch (full batch)."""
    ppo_clip: float = 0.2
    """PPO: ratio clip."""
    gamma: float = 0.99
    """Discount of the returns (Monte Carlo returns-to-go)."""
    train_reward: str = "env"
    """Reward meta-training uses: 'env' (the env's own) or 'dense' (−‖position − goal‖ after the
    move, for the point-goal envs: meta-train shaped, adapt on the env's sparse reward, as MAESN's
    comparisons do). Evaluation always uses the env's reward."""
    normalize_advantages: bool = True
    """Centre and scale advantages per task (the MAML code's center_adv)."""
    baseline_reg: float = 1e-5
    """Ridge regulariser of the linear feature baseline fit."""
    iterations: int = 500
    """Meta-updates."""
    seed: int = 0
    """Seed of the policy init, task sampling and action sampling."""
    device: str = "cpu"
    """Torch device of envs and policy."""
    eval_tasks: int = 40
    """Held-out tasks evaluated at the end (0: none)."""
    eval_steps: tuple = (0, 1, 2, 3)
    """Adaptation steps reported by the final evaluation."""
    eval_trajectories: int = 40
    """Trajectories per task collected at each evaluation step (the MAML code's test script: a
    batch of 4,000 steps, i.e. 40 trajectories of H = 100); 0: ``trajectories_per_task``."""
    eval_lr_scales: tuple = (1.0, 0.5)
    """Step size of evaluation adaptation steps 1, 2, ... as multiples of the inner lr (the last
    value repeats). The MAML code's test script takes step 1 at the meta-trained lr and the later
    ones at half of it; ``(1.0,)`` keeps the inner lr for every step."""
    checkpoint_minutes: float = 5.0
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def __post_init__(self):
        self.hidden_sizes = tuple(self.hidden_sizes)
        self.eval_steps = tuple(self.eval_steps)
        check_choice(self, "env", tuple(sorted(metarl.envs.ENV_CLASSES)))
        check_positive_ints(self, "meta_batch", "trajectories_per_task", "horizon", "cg_iters", "max_backtracks",
                            "ppo_epochs", "iterations")
        check_nonnegative_ints(self, "inner_steps", "eval_tasks", "eval_trajectories")
        if not self.hidden_sizes or any(not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints, got {self.hidden_sizes!r}")
        if any(not isinstance(s, int) or s < 0 for s in self.eval_steps):
            raise ValueError(f"eval_steps must be non-negative ints, got {self.eval_steps!r}")
        self.eval_lr_scales = _lr_scales("eval_lr_scales", self.eval_lr_scales)
        for name in ("init_std", "inner_lr", "max_kl", "ppo_lr", "ppo_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("cg_damping", "baseline_reg"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.backtrack_ratio < 1.0:
            raise ValueError(f"backtrack_ratio must lie in (0, 1), got {self.backtrack_ratio}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        check_choice(self, "outer", ("trpo", "ppo"))
        check_choice(self, "trust_region", ("post", "both"))
        check_choice(self, "train_reward", ("env", "dense"))
        if self.train_reward == "dense" and self.env not in ("Navigation2D-v0", "SemicircleGoal-v0"):
            raise ValueError(f"train_reward='dense' needs a point-goal env (Navigation2D-v0, SemicircleGoal-v0), "
                             f"got {self.env!r}")
        check_choice(self, "policy_init", POLICY_INITS)
        check_choice(self, "mean_squash", MEAN_SQUASHES)
        if self.mean_squash != "none" and not self.normalize_actions:
            raise ValueError(f"mean_squash={self.mean_squash!r} needs normalize_actions=True (the squashed mean "
                             f"lies in [-1, 1], the normalised action box)")
        if self.meta_sgd and self.inner_steps == 0:
            raise ValueError("meta_sgd needs inner_steps >= 1 (there is no step size to learn)")

    @property
    def num_envs(self) -> int:
        """N = meta_batch × trajectories_per_task (env i runs task i // trajectories_per_task)."""
        return self.meta_batch * self.trajectories_per_task


# ----------------------------------------------------------------------------- pieces
def make_env(cfg: MAMLConfig, num_envs: int, seed: int | None = None):
    env = metarl.make_vec(cfg.env, num_envs, autoreset_mode="same_step", max_episode_steps=cfg.horizon,
                          device=cfg.device, seed=cfg.seed if seed is None else seed)
    if env._discrete:
        raise ValueError(f"env {cfg.env!r} has a discrete action space; MAML here needs a Box (Gaussian policy)")
    return env


def make_policy(cfg: MAMLConfig, env=None) -> GaussianMLPPolicy:
    """A fresh policy, initialised from ``cfg.seed`` (the global RNG is left as it was)."""
    env = env or make_env(cfg, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        pol = GaussianMLPPolicy(env.obs_dim, int(env.single_action_space.shape[0]), cfg.hidden_sizes, cfg.init_std,
                                cfg.policy_init, cfg.mean_squash)
    return pol.to(cfg.device)


class _Batched:
    """Applies the policy with shared params (``[N, obs]``) or per-task params stacked ``[B, ...]``
    on obs grouped ``[B, K, obs]`` (``vmap(functional_call)``, no Python loop over tasks)."""

    def __init__(self, policy: nn.Module):
        self.policy = policy

    def __call__(self, params: dict, obs: torch.Tensor):
        return functional_call(self.policy, params, (obs,))

    def batched(self, params: dict, obs: torch.Tensor):
        return vmap(lambda p, o: functional_call(self.policy, p, (o,)))(params, obs)


def action_map(env, normalize: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale [a], offset [a])`` taking the policy's ``[-1, 1]`` actions to ``env``'s action box
    (``env_action = offset + scale · action``, rllab's ``normalize``), or None when ``normalize``
    is False (the policy acts in the env's units)."""
    if not normalize:
        return None
    space = env.single_action_space
    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError("normalize_actions needs a bounded action box; set normalize_actions=False")
    return (high - low) / 2, (high + low) / 2


@torch.no_grad()
def collect(env, apply: _Batched, params: dict, batched: bool, tasks, k: int, horizon: int,
            generator: torch.Generator, action_affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """One trajectory of ``horizon`` steps in every env; ``tasks`` (B of them) repeated ``k`` times.
    ``action_affine`` (from :func:`action_map`) maps the policy's actions onto the env's; the
    buffers keep the policy's own actions (their log-probs are what the losses need).
    Returns ``obs [H, N, d]``, ``act [H, N, a]``, ``rew [H, N]``, ``done [H, N]`` (bool),
    ``alive [H, N]`` (bool: the step belongs to the first episode; later steps are ignored) and
    ``next_obs [H, N, d]`` (the observation after the action; the final one where an episode ended)."""
    n = env.num_envs
    b = n // k
    rep = tasks[torch.arange(n) // k]
    obs, _ = env.reset(options={"tasks": rep})
    d, a = env.obs_dim, int(env.single_action_space.shape[0])
    dev = obs.device
    obs_buf = torch.zeros((horizon, n, d), device=dev)
    act_buf = torch.zeros((horizon, n, a), device=dev)
    rew_buf = torch.zeros((horizon, n), device=dev)
    done_buf = torch.zeros((horizon, n), dtype=torch.bool, device=dev)
    alive_buf = torch.zeros((horizon, n), dtype=torch.bool, device=dev)
    next_buf = torch.zeros((horizon, n, d), device=dev)
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    if action_affine is not None:
        scale, offset = (x.to(dev) for x in action_affine)
    for t in range(horizon):
        if batched:
            mean, log_std = apply.batched(params, obs.view(b, k, d))
            mean, log_std = mean.reshape(n, a), log_std.reshape(n, a)
        else:
            mean, log_std = apply(params, obs)
        act = mean + log_std.exp() * torch.randn((n, a), generator=generator, device=dev)
        obs_buf[t] = obs
        act_buf[t] = act
        obs, rew, term, trunc, info = env.step(act if action_affine is None else offset + scale * act)
        rew_buf[t] = rew
        alive_buf[t] = alive
        done_buf[t] = term | trunc
        next_buf[t] = torch.where(done_buf[t][:, None], info["final_obs"].reshape(n, d), obs.reshape(n, d)) \
            if "final_obs" in info else obs
        alive = alive & ~done_buf[t]
    done_buf[-1] = True
    return {"obs": obs_buf, "act": act_buf, "rew": rew_buf, "done": done_buf, "alive": alive_buf, "next_obs": next_buf}


def dense_rewards(ro: dict, goals: torch.Tensor) -> dict:
    """``ro`` with ``rew`` replaced by ``−‖next_obs − goal‖`` (``goals [N, 2]``, per env)."""
    return dict(ro, rew=-(ro["next_obs"] - goals.to(ro["next_obs"].device)).norm(dim=-1))


def _per_task(x: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """``[H, N, ...]`` → ``[B, K·H, ...]`` (task-major; within a task trajectory-major)."""
    h = x.shape[0]
    x = x.reshape((h, b, k) + x.shape[2:]).movedim(0, 2)
    return x.reshape((b, k * h) + x.shape[3:])


def episode_returns(ro: dict, k: int) -> torch.Tensor:
    """Undiscounted return of each task's first episodes, averaged over its ``k`` trajectories: ``[B]``."""
    per_env = (ro["rew"] * ro["alive"]).sum(0)
    return per_env.view(-1, k).mean(1)


def process(ro: dict, cfg: MAMLConfig, b: int, k: int) -> dict:
    """Returns-to-go (lambda_returns with λ = 1), linear baseline per task, advantages; per-task
    tensors ``obs [B, M, d]``, ``act [B, M, a]``, ``adv [B, M]``, ``mask [B, M]`` with M = K·H."""
    h, n = ro["rew"].shape
    mask = ro["alive"].float()
    zeros = torch.zeros_like(ro["rew"])
    ret = lambda_returns(ro["rew"] * mask, zeros, ro["done"], zeros[0], cfg.gamma, 1.0)
    t = torch.arange(h, device=ret.device).unsqueeze(1).expand(h, n)
    obs, act, ret, mask, t = (_per_task(x, b, k) for x in (ro["obs"], ro["act"], ret, mask, t))
    feats = baseline_features(obs, t)
    w = fit_linear_baseline(feats, ret, mask, cfg.baseline_reg)
    adv = (ret - (feats @ w.unsqueeze(-1)).squeeze(-1)) * mask
    if cfg.normalize_advantages:
        cnt = mask.sum(1, keepdim=True).clamp_min(1)
        mu = adv.sum(1, keepdim=True) / cnt
        var = (((adv - mu) * mask) ** 2).sum(1, keepdim=True) / cnt
        adv = (adv - mu) / (var.sqrt() + 1e-8) * mask
    return {"obs": obs, "act": act, "adv": adv, "mask": mask}


def _make_vpg_loss(apply: _Batched):
    def vpg_loss(params, tb):
        """REINFORCE loss of one task: −Σ log π(a|s) A / Σ mask."""
        mean, log_std = apply(params, tb["obs"])
        logp = _gauss_logp(mean, log_std, tb["act"])
        return -(logp * tb["adv"] * tb["mask"]).sum() / tb["mask"].sum().clamp_min(1)
    return vpg_loss


def _lr_dict(policy: nn.Module, cfg: MAMLConfig) -> dict | None:
    if not cfg.meta_sgd:
        return None
    return {k: torch.full_like(p, cfg.inner_lr).requires_grad_(True) for k, p in policy.named_parameters()}


def _adapted(apply, theta: dict, lrs, pre: list, cfg: MAMLConfig, first_order: bool):
    """The per-task adapted params ``[B, ...]`` from the pre-update batches (one per inner step)."""
    return inner_loop(_make_vpg_loss(apply), theta, [{k: v for k, v in p.items()} for p in pre],
                      lrs if lrs is not None else cfg.inner_lr, first_order)


def _outer_terms(apply, theta, lrs, pre, post, cfg, ppo: bool = False):
    """Mean over tasks of the post-adaptation surrogate loss and of KL(old ‖ new)."""
    def task_terms(p, tb):
        mean, log_std = apply(p, tb["obs"])
        logp = _gauss_logp(mean, log_std, tb["act"])
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
        adapted = _adapted(apply, theta, lrs, pre, cfg, cfg.first_order)
        surr, kl = vmap(task_terms)(adapted, post)
    else:
        surr, kl = vmap(task_terms, in_dims=(None, 0))(theta, post)
    kl = kl.mean()
    if cfg.trust_region == "both" and pre:
        kl = kl + vmap(pre_kl, in_dims=(None, 0))(theta, pre[0]).mean()
    return surr.mean(), kl


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _assign(params: list, flat: torch.Tensor) -> None:
    i = 0
    with torch.no_grad():
        for p in params:
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


def trpo_step(objective: Callable[[], tuple[torch.Tensor, torch.Tensor]], params: list, cfg: MAMLConfig) -> dict:
    """One TRPO update of ``params`` (in place): ``objective() -> (surrogate loss, mean KL)``."""
    loss, kl = objective()
    g = _flat(torch.autograd.grad(loss, params, retain_graph=True))
    kl_grad = _flat(torch.autograd.grad(kl, params, create_graph=True))

    def fvp(v):
        return _flat(torch.autograd.grad(kl_grad @ v, params, retain_graph=True)) + cfg.cg_damping * v

    step_dir = conjugate_gradient(fvp, -g, cfg.cg_iters)
    shs = float(step_dir @ fvp(step_dir))
    old = _flat([p.detach() for p in params]).clone()
    loss0 = float(loss.detach())
    stats = {"surrogate_before": loss0, "surrogate_after": loss0, "kl": 0.0, "accepted": 0}
    if not (shs > 0 and math.isfinite(shs)):
        return stats
    full = math.sqrt(2 * cfg.max_kl / shs) * step_dir
    for i in range(cfg.max_backtracks):
        _assign(params, old + cfg.backtrack_ratio ** i * full)
        with torch.no_grad():
            new_loss, new_kl = objective()
        if float(new_loss) < loss0 and float(new_kl) <= cfg.max_kl and math.isfinite(float(new_loss)):
            stats.update(surrogate_after=float(new_loss), kl=float(new_kl), accepted=1)
            return stats
    _assign(params, old)
    return stats


def _with_old(apply, params: dict, batched: bool, tb: dict) -> dict:
    """Adds the behaviour policy's log-probs, means and log-stds to a per-task batch."""
    with torch.no_grad():
        mean, log_std = apply.batched(params, tb["obs"]) if batched else \
            vmap(apply, in_dims=(None, 0))(params, tb["obs"])
    return dict(tb, old_logp=_gauss_logp(mean, log_std, tb["act"]), old_mean=mean, old_log_std=log_std)


# ----------------------------------------------------------------------------- evaluation
def evaluate(policy_params, cfg: MAMLConfig, num_tasks: int | None = None, steps: Sequence[int] | None = None, *,
             inner_lrs: dict | None = None, seed: int = 12345, per_task: bool = False,
             metric: str = "return", trajectories: int | None = None,
             lr_scales: Sequence[float] | None = None) -> dict:
    """Average return on ``num_tasks`` held-out tasks (``sample_task_split``'s test set for ``seed``)
    after each number of adaptation steps in ``steps`` (default ``cfg.eval_steps``); each step
    adapts on freshly collected trajectories (``trajectories`` per task, default
    ``cfg.eval_trajectories``) of the current adapted policy, step ``j`` (1-based) with
    ``cfg.inner_lr`` (or the learned ``inner_lrs``) times ``lr_scales[j - 1]`` (default
    ``cfg.eval_lr_scales``; the last value repeats). Returns ``{steps: mean return}``
    (``per_task=True``: ``{steps: tensor [num_tasks]}``). ``metric="reached"`` reports instead
    the fraction of episodes with a positive return (on SemicircleGoal-v0: the goal region reached).

    ``policy_params``: a :class:`GaussianMLPPolicy`, or its ``state_dict()`` / ``named_parameters`` dict.
    """
    num_tasks = num_tasks or cfg.eval_tasks
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
    if metric not in ("return", "reached"):
        raise ValueError(f"metric must be 'return' or 'reached', got {metric!r}")
    steps = sorted(set(int(s) for s in (cfg.eval_steps if steps is None else steps)))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative ints, got {steps!r}")
    k = trajectories or cfg.eval_trajectories or cfg.trajectories_per_task
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"trajectories must be a positive int, got {trajectories!r}")
    scales = cfg.eval_lr_scales if lr_scales is None else _lr_scales("lr_scales", lr_scales)
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
    apply = _Batched(policy)
    loss_fn = _make_vpg_loss(apply)
    _, test = env.sample_task_split(1, num_tasks, seed=seed)
    g = torch.Generator(device=cfg.device).manual_seed(seed)
    affine = action_map(env, cfg.normalize_actions)
    out, batched = {}, False
    for s in range(steps[-1] + 1):
        ro = collect(env, apply, params, batched, test, k, cfg.horizon, g, affine)
        if s in steps:
            if metric == "reached":
                r = ((ro["rew"] * ro["alive"]).sum(0) > 0).float().view(-1, k).mean(1).cpu()
            else:
                r = episode_returns(ro, k).cpu()
            out[s] = r if per_task else float(r.mean())
        if s < steps[-1]:
            scale = scales[min(s, len(scales) - 1)]
            lr = {n: v * scale for n, v in base_lr.items()} if isinstance(base_lr, dict) else base_lr * scale
            tb = process(ro, cfg, num_tasks, k)
            if batched:
                def sgd_step(p, b, lr=lr):
                    return {n: p[n] - _lr_of(lr, n) * gr for n, gr in grad(loss_fn)(p, b).items()}
                step_fn = vmap(sgd_step)
                params = {n: v.detach() for n, v in step_fn(params, tb).items()}
            else:
                params = {n: v.detach() for n, v in inner_loop(loss_fn, params, [tb], lr, True).items()}
            batched = True
    return out


# ----------------------------------------------------------------------------- training
def train(cfg: MAMLConfig, run_dir=None, progress: bool = False, max_iterations: int | None = None, *,
          resume: bool = False, max_seconds: float | None = None) -> dict:
    """Meta-train; returns a summary dict: iterations, env steps, seconds, the last iteration's
    pre/post-adaptation returns, ``history`` (per iteration), ``policy`` (the state dict),
    ``inner_lrs`` (Meta-SGD) and, when ``eval_tasks > 0`` and the run finished, ``eval``
    ``{steps: mean return}`` on held-out tasks.

    ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv`` (one row per
    meta-update) and ``checkpoint.pt`` (atomic; every ``checkpoint_minutes`` and at the end).
    ``max_iterations`` stops early, as does ``max_seconds`` (a wall-clock budget, checked after
    each meta-update); ``resume=True`` continues from ``run_dir``'s checkpoint with
    the results of an uninterrupted run (every rollout restarts from a reset, so the policy,
    step sizes, optimizer and the two generators are the whole state).
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    b, k, h = cfg.meta_batch, cfg.trajectories_per_task, cfg.horizon
    env = make_env(cfg, cfg.num_envs)
    policy = make_policy(cfg, env)
    apply = _Batched(policy)
    theta = dict(policy.named_parameters())
    lrs = _lr_dict(policy, cfg)
    meta_params = list(theta.values()) + (list(lrs.values()) if lrs is not None else [])
    optimizer = torch.optim.Adam(meta_params, lr=cfg.ppo_lr, eps=1e-5) if cfg.outer == "ppo" else None
    g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    g_tasks = torch.Generator().manual_seed(cfg.seed + 1)
    affine = action_map(env, cfg.normalize_actions)
    total = min(cfg.iterations, max_iterations) if max_iterations is not None else cfg.iterations
    it = 0
    if resume:
        ck = load_for_resume(run_dir, "maml", cfg)
        policy.load_state_dict(ck["policy"])
        if lrs is not None:
            with torch.no_grad():
                for n, v in lrs.items():
                    v.copy_(ck["inner_lrs"][n])
        if optimizer is not None:
            optimizer.load_state_dict(ck["optimizer"])
        g.set_state(ck["generator"])
        g_tasks.set_state(ck["generator_tasks"])
        it = ck["iteration"]
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_JSON).write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    log = ProgressLog(run_dir, ["iteration", "env_steps", "pre_return", "post_return", "surrogate_before",
                                "surrogate_after", "kl", "accepted", "seconds"], keep_through=it if resume else None)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=it, unit="update", dynamic_ncols=True)
    history = []
    per_iter = (cfg.inner_steps + 1) * cfg.num_envs * h

    def snapshot():
        return {"config": dataclasses.asdict(cfg), "iteration": it, "policy": policy.state_dict(),
                "inner_lrs": None if lrs is None else {n: v.detach().clone() for n, v in lrs.items()},
                "generator": g.get_state(), "generator_tasks": g_tasks.get_state(),
                "optimizer": None if optimizer is None else optimizer.state_dict()}

    start = last_ckpt = time.perf_counter()
    try:
        while it < total:
            # collect: pre-update trajectories, then one fresh batch per inner step
            tasks = env.sample_tasks(b, generator=g_tasks)
            pre, returns = [], []
            params, batched = {n: v.detach() for n, v in theta.items()}, False
            lr_now = {n: v.detach() for n, v in lrs.items()} if lrs is not None else cfg.inner_lr
            for s in range(cfg.inner_steps + 1):
                ro = collect(env, apply, params, batched, tasks, k, h, g, affine)
                returns.append(float(episode_returns(ro, k).mean()))
                if cfg.train_reward == "dense":
                    ro = dense_rewards(ro, tasks.goal[torch.arange(b * k) // k])
                tb = process(ro, cfg, b, k)                          # advantage
                if s == cfg.inner_steps:
                    post = _with_old(apply, params, batched, tb)
                    break
                if s == 0 and cfg.trust_region == "both":
                    tb = _with_old(apply, params, batched, tb)
                pre.append(tb)
                params = {n: v.detach() for n, v in
                          _adapted(apply, {n: v.detach() for n, v in theta.items()}, lr_now, pre, cfg, True).items()}
                batched = True
            # update: TRPO (or PPO) on the post-adaptation surrogate, through the inner loop
            def objective(ppo=False, pre=pre, post=post):
                return _outer_terms(apply, theta, lrs, pre, post, cfg, ppo)
            if cfg.outer == "trpo":
                stats = trpo_step(objective, meta_params, cfg)
            else:
                with torch.no_grad():
                    stats = {"surrogate_before": float(objective()[0]), "accepted": 1}
                for _ in range(cfg.ppo_epochs):
                    loss, kl = objective(True)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                with torch.no_grad():
                    loss, kl = objective()
                stats.update(surrogate_after=float(loss), kl=float(kl))
            it += 1
            # log
            row = {"iteration": it, "env_steps": it * per_iter, "pre_return": returns[0], "post_return": returns[-1],
                   **{n: stats[n] for n in ("surrogate_before", "surrogate_after", "kl", "accepted")},
                   "seconds": time.perf_counter() - start}
            history.append(row)
            log.write(row.values())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(pre=f"{returns[0]:.2f}", post=f"{returns[-1]:.2f}")
            if run_dir is not None and time.perf_counter() - last_ckpt > 60 * cfg.checkpoint_minutes:
                checkpoint.save(run_dir / CHECKPOINT, snapshot(), kind="maml")
                last_ckpt = time.perf_counter()
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    finally:
        if run_dir is not None:
            checkpoint.save(run_dir / CHECKPOINT, snapshot(), kind="maml")
        if bar is not None:
            bar.close()
        log.close()
    summary = {"iterations": it, "env_steps": it * per_iter, "train_seconds": time.perf_counter() - start,
               "pre_return": history[-1]["pre_return"] if history else float("nan"),
               "post_return": history[-1]["post_return"] if history else float("nan"),
               "history": history, "policy": {n: v.detach().clone() for n, v in policy.state_dict().items()},
               "inner_lrs": None if lrs is None else {n: v.detach().clone() for n, v in lrs.items()}}
    if cfg.eval_tasks > 0 and it >= cfg.iterations:
        summary["eval"] = evaluate(summary["policy"], cfg, cfg.eval_tasks, inner_lrs=summary["inner_lrs"])
    if run_dir is not None:
        (run_dir / "summary.json").write_text(json.dumps(
            {k: v for k, v in summary.items() if k not in ("policy", "inner_lrs", "history")}, indent=1))
    return summary


def load_policy(run_dir) -> tuple[GaussianMLPPolicy, MAMLConfig, dict | None]:
    """The policy, config and learned inner step sizes (Meta-SGD, else None) of a run directory."""
    ck = checkpoint.load(Path(run_dir) / CHECKPOINT, kind="maml")
    cfg = MAMLConfig(**ck["config"])
    policy = make_policy(cfg)
    policy.load_state_dict(ck["policy"])
    return policy, cfg, ck["inner_lrs"]


__all__ = ["MAML", "MAMLConfig", "GaussianMLPPolicy", "inner_loop", "inner_loop_reference", "conjugate_gradient",
           "baseline_features", "fit_linear_baseline", "trpo_step", "train", "evaluate", "load_policy", "make_env",
           "action_map",
           "make_policy"]
