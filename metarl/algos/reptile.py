"""Reptile (Nichol, Achiam, Schulman 2018, "On first-order meta-learning algorithms").

For each task ``T_i`` of a meta-batch: ``φ̃_i = U^k_{T_i}(φ)``, k steps of Adam with β1 = 0 on the
task's loss starting from ``φ``; then ``φ ← φ + ε · mean_i(φ̃_i − φ)``.

Everything is batched over tasks: the per-task parameters are stacked ``[B, ...]`` and the MLPs
run as batched matrix products (:func:`metarl.algos.pg.mlp_forward`, ``torch.baddbmm``), so the k
inner steps update all B tasks at once (the summed per-task losses give each task exactly its own
gradient); there is no Python loop over tasks.

Two task families:

* **RL** (:class:`ReptileConfig`, :class:`ReptileLearner`, :func:`train`): the task loss is the
  vanilla policy-gradient loss with a per-task linear feature baseline (Duan et al. 2016, as MAML's
  code; :func:`metarl.algos.pg.task_advantages`) on ``trajectories_per_task`` episodes collected for
  every task in ONE batched env (env ``j`` runs task ``j // trajectories_per_task``). Default task
  family: Navigation2D-v0.
* **sine-wave regression** (:class:`SineConfig`, :func:`train_sine`): the paper's toy problem
  (amplitude ``U[0.1, 5]``, phase ``U[0, π]``, x ``U[-5, 5]``, MLP 1-64-64-1 tanh), evaluated
  after 32 inner steps on 10 shots (:func:`evaluate_sine`).

Use it from Python::

    >>> from metarl.algos.reptile import SineConfig, train_sine
    >>> summary = train_sine(SineConfig(iterations=200))          # doctest: +SKIP
    >>> from metarl.algos.reptile import ReptileConfig, train
    >>> summary = train(ReptileConfig(iterations=20))              # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import time

import torch

from metarl.algos import harness
from metarl.algos.pg import (
    Batch,
    Params,
    collect,
    eval_task_count,
    gaussian_log_prob,
    init_mlp,
    make_box_env,
    mlp_forward,
    per_task_mean,
    stack,
    task_advantages,
    task_mean,
)
from metarl.config import Config, env_ids, field


@dataclasses.dataclass
class ReptileConfig(Config):
    """Reptile for RL: VPG (with a linear baseline) as the task loss, Adam (β1 = 0) inner steps."""

    env: str = field("Navigation2D-v0", choices=env_ids)
    """Task distribution: a metarl env id with Box actions (Navigation2D-v0, SemicircleGoal-v0, ...)."""
    meta_batch_size: int = field(20, ge=1)
    """B: tasks per outer update (adapted together)."""
    trajectories_per_task: int = field(10, ge=1)
    """K: episodes per task per inner step (env j runs task j // K)."""
    inner_steps: int = field(3, ge=1)
    """k: inner Adam (β1 = 0) steps per task."""
    inner_lr: float = field(0.01, gt=0)
    """Inner Adam learning rate."""
    outer_lr: float = field(0.5, gt=0)
    """ε: outer step size (φ ← φ + ε · mean(φ̃ − φ)), annealed linearly to 0 when ``anneal``."""
    anneal: bool = True
    """Anneal ε linearly to 0 over ``iterations``."""
    iterations: int = field(200, ge=1)
    """Outer updates."""
    hidden: int = field(64, ge=1)
    """Hidden units of each of the two tanh layers of the policy mean."""
    init_log_std: float = field(-1.6, ge=-20, le=5)
    """Initial log standard deviation of the actions (learned, one per action dim)."""
    gamma: float = field(0.99, ge=0, le=1)
    """Discount of the returns in the VPG loss."""
    num_train_tasks: int = field(0, ge=0)
    """Meta-train task set size from ``sample_task_split`` (0: fresh tasks every update)."""
    eval_tasks: int = field(40, ge=0)
    """Held-out tasks evaluated at the end of training and by ``metarl eval`` (0: no evaluation at
    the end; ``metarl eval --tasks N`` and ``evaluate(..., num_tasks=N)`` still evaluate N)."""
    eval_steps: int = field(3, ge=1)
    """Adaptation steps evaluated (returns after 0, 1, ..., eval_steps steps)."""
    seed: int = field(0, ge=0)
    """Seed of the envs, tasks, init and sampling."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""


# ----------------------------------------------------------------------------- the Reptile update
def adam_inner(params: Params, loss_fn, steps: int, lr: float, beta2: float = 0.999, eps: float = 1e-8,
               callback=None) -> Params:
    """``steps`` Adam updates with β1 = 0 (Reptile's inner optimiser) on stacked per-task parameters.

    ``loss_fn(params, step) -> [B]`` per-task losses (step = 0, ..., steps − 1); their sum is
    differentiated, so task b's update depends only on task b's loss. Adam's second moment is
    per task and per element, as B separate optimisers would keep it. ``callback(step, params)``
    (optional) runs before each update and after the last (RL uses it to collect and record).
    Returns new tensors (the inputs are not modified).
    """
    p = {k: v.detach().clone() for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    for t in range(1, steps + 1):
        if callback is not None:
            callback(t - 1, p)
        leaves = {k: v.requires_grad_(True) for k, v in p.items()}
        losses = loss_fn(leaves, t - 1)
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        with torch.no_grad():
            new = {}
            for (k, v), g in zip(leaves.items(), grads):
                v2[k].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v2[k] / (1 - beta2 ** t)).sqrt_().add_(eps)
                new[k] = v.detach() - lr * g / denom
        p = new
    if callback is not None:
        callback(steps, p)
    return p


def reptile_step(phi: Params, phi_tilde: Params, epsilon: float) -> Params:
    """The outer update ``φ ← φ + ε · mean_i(φ̃_i − φ)`` (``phi_tilde`` stacked ``[B, ...]``)."""
    return {k: phi[k] + epsilon * (phi_tilde[k] - phi[k].unsqueeze(0)).mean(0) for k in phi}


# ----------------------------------------------------------------------------- RL pieces
def make_env(cfg, num_envs: int, seed: int | None = None):
    """``num_envs`` copies of ``cfg.env`` (Box actions only)."""
    return make_box_env(cfg.env, num_envs, cfg.seed if seed is None else seed)


def init_policy(cfg: ReptileConfig, env, generator: torch.Generator) -> Params:
    """Unbatched policy parameters: the mean MLP ``obs -> h -> h -> act`` and ``log_std [act]``."""
    o, a = env.obs_dim, env.single_action_space.shape[0]
    params = init_mlp((o, cfg.hidden, cfg.hidden, a), generator, out_scale=0.1)
    params["log_std"] = torch.full((a,), float(cfg.init_log_std))
    return params


def policy_dist(params: Params, obs: torch.Tensor, b: int):
    """Per-task policy on ``obs [..., N, o]`` (env j uses task ``j // K``'s params) -> mean, log_std."""
    lead = obs.shape[:-2]
    n, o = obs.shape[-2:]
    x = obs.reshape(-1, b, n // b, o).permute(1, 0, 2, 3).reshape(b, -1, o)
    mean = mlp_forward({k: v for k, v in params.items() if k != "log_std"}, x)
    a = mean.shape[-1]
    mean = mean.view(b, -1, n // b, a).permute(1, 0, 2, 3).reshape(*lead, n, a)
    log_std = params["log_std"][:, None, :].expand(b, n // b, a).reshape(n, a)
    return mean, log_std.expand_as(mean)


def vpg_losses(params: Params, batch: Batch, adv: torch.Tensor, b: int) -> torch.Tensor:
    """Per-task VPG loss ``-mean_t,k log π(a|s) · A`` over valid steps -> ``[b]``."""
    mean, log_std = policy_dist(params, batch.obs, b)
    return -task_mean(gaussian_log_prob(mean, log_std, batch.actions) * adv, batch.mask, b)


def adapt(cfg: ReptileConfig, phi: Params, env, tasks, steps: int, generator: torch.Generator,
          seed: int | None = None, measure_final: bool = True) -> tuple[Params, torch.Tensor]:
    """k inner steps on B tasks at once (``env`` has ``B · K`` envs, ``tasks`` has B).

    Returns the adapted stacked parameters and the mean episode return per stage ``[steps + 1, B]``
    (stage j: trajectories sampled with the parameters after j steps; the last stage costs an
    extra rollout, skipped when ``measure_final`` is False: then ``[steps, B]``)."""
    b, k = len(tasks), cfg.trajectories_per_task
    env_tasks = tasks[torch.arange(b * k) // k]
    returns = []
    state = {}

    def callback(step, p):
        if step == steps and not measure_final:
            return
        batch = collect(env, lambda obs, _start: policy_dist(p, obs, b), env.max_episode_steps, generator,
                        tasks=env_tasks, seed=seed)
        returns.append(per_task_mean(batch.episode_returns()[None], b))
        if step < steps:
            state["batch"] = batch
            state["adv"] = task_advantages(batch, b, cfg.gamma)

    adapted = adam_inner(stack(phi, b), lambda p, _step: vpg_losses(p, state["batch"], state["adv"], b), steps,
                         cfg.inner_lr, callback=callback)
    return adapted, torch.stack(returns)


def evaluate(phi: Params, cfg: ReptileConfig, num_tasks: int | None = None, steps: int | None = None,
             seed: int = 12345) -> dict:
    """Adapt ``phi`` to held-out tasks (``sample_task_split``'s test set for ``seed``; ``num_tasks``
    default ``cfg.eval_tasks``); returns ``{"returns": [mean return after 0, 1, ..., steps adaptation
    steps], "se": [...]}``."""
    num_tasks = eval_task_count(num_tasks, cfg.eval_tasks)
    steps = cfg.eval_steps if steps is None else steps
    env = make_env(cfg, num_tasks * cfg.trajectories_per_task, seed=seed)
    _, test = env.sample_task_split(1, num_tasks, seed=seed)
    g = torch.Generator().manual_seed(seed)
    _, rets = adapt(cfg, phi, env, test, steps, g)
    return {"returns": rets.mean(1).tolist(), "se": (rets.std(1) / math.sqrt(num_tasks)).tolist()}


# ----------------------------------------------------------------------------- the learner
class ReptileLearner:
    """Reptile-RL as the run harness drives it (:mod:`metarl.algos.harness`): each :meth:`step`
    draws ``meta_batch_size`` tasks, adapts φ to all of them with ``inner_steps`` Adam steps (each on
    fresh trajectories) and moves φ toward the adapted parameters."""

    kind = "reptile"

    def __init__(self, cfg: ReptileConfig):
        self.config = cfg
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.env = make_env(cfg, cfg.meta_batch_size * cfg.trajectories_per_task)
        self.phi = init_policy(cfg, self.env, self.generator)
        self.train_set = self.env.sample_task_split(cfg.num_train_tasks, 1, seed=cfg.seed)[0] \
            if cfg.num_train_tasks else None
        self.iterations = cfg.iterations
        self.iteration = 0

    @property
    def env_steps(self) -> int:
        return self.iteration * self.config.inner_steps * self.env.num_envs * self.env.max_episode_steps

    def step(self) -> dict:
        cfg = self.config
        # collect + inner: k VPG steps for all B tasks at once
        if self.train_set is None:
            tasks = self.env.sample_tasks(cfg.meta_batch_size, generator=self.generator)
        else:
            tasks = self.train_set[torch.randint(len(self.train_set), (cfg.meta_batch_size,),
                                                 generator=self.generator)]
        phi_tilde, rets = adapt(cfg, self.phi, self.env, tasks, cfg.inner_steps, self.generator, measure_final=False)
        # outer: φ ← φ + ε mean(φ̃ − φ)
        eps = cfg.outer_lr * ((1 - self.iteration / cfg.iterations) if cfg.anneal else 1.0)
        self.phi = reptile_step(self.phi, phi_tilde, eps)
        self.iteration += 1
        # log
        return {"return_pre": float(rets[0].mean()), "return_post": float(rets[-1].mean()), "epsilon": eps}

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "params": dict(self.phi), "generator": self.generator.get_state(),
                "env": self.env.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.iteration = int(sd["iteration"])
        self.phi = dict(sd["params"])
        self.generator.set_state(sd["generator"])
        self.env.load_state_dict(sd["env"])

    def report(self, num_tasks: int | None = None) -> dict:
        """``{"eval": evaluate(φ)}`` on held-out tasks; nothing when ``num_tasks`` is None and the
        config's ``eval_tasks`` is 0."""
        if num_tasks is None and self.config.eval_tasks == 0:
            return {}
        return {"eval": evaluate(self.phi, self.config, num_tasks)}


def train(cfg: ReptileConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Meta-train with Reptile through the run harness (:func:`metarl.algos.harness.run`); returns its
    summary (``history``, speed, and when the run finished and ``eval_tasks > 0``, ``eval``: the
    returns after 0..eval_steps steps on held-out tasks) with ``params``, the meta-learned init.
    ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv``, ``checkpoint.pt`` and
    ``summary.json``; ``resume=True`` continues from its checkpoint with the results of an
    uninterrupted run; ``overwrite=True`` starts over in a directory that holds a run."""
    learner = ReptileLearner(cfg)
    summary = harness.run(learner, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                          max_iterations=max_iterations, progress_keys=("return_pre", "return_post"))
    summary["params"] = learner.phi
    return summary


def load_params(run_dir) -> tuple[Params, ReptileConfig]:
    """The meta-learned initialisation and config of a run directory (from its checkpoint)."""
    ck = harness.load_checkpoint(run_dir, ReptileLearner.kind)
    return ck["learner"]["params"], ReptileConfig(**ck["config"])


# ----------------------------------------------------------------------------- sine-wave regression
@dataclasses.dataclass
class SineConfig(Config):
    """Reptile on the paper's 1-D sine-wave regression (Nichol et al. 2018, §6.1 / their gist)."""

    hidden: int = field(64, ge=1)
    """Hidden units of each of the two tanh layers (MLP 1-h-h-1)."""
    meta_batch_size: int = field(4, ge=1)
    """Tasks (sine waves) per outer update, adapted together."""
    inner_steps: int = field(5, ge=1)
    """k: Adam (β1 = 0) steps per task during meta-training."""
    inner_batch: int = field(10, ge=1)
    """Points per inner step (a fresh minibatch of x ~ U[-5, 5] each step)."""
    inner_lr: float = field(0.01, gt=0)
    """Adam learning rate of the inner loop (training and evaluation)."""
    outer_lr: float = field(1.0, gt=0)
    """ε: outer step size, annealed linearly to 0 over ``iterations`` (the paper's gist: 0.1 with
    30,000 iterations; 1.0 reaches a good init in a few thousand)."""
    iterations: int = field(3000, ge=1)
    """Outer updates."""
    eval_shots: int = field(10, ge=1)
    """K: points a new task is adapted on at evaluation."""
    eval_steps: int = field(32, ge=1)
    """Inner steps at evaluation (the paper: 32)."""
    eval_tasks: int = field(100, ge=1)
    """Held-out sine waves evaluated."""
    seed: int = field(0, ge=0)
    """Seed of the init, the tasks and the points."""


def sample_sine_tasks(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitudes ``U[0.1, 5]`` and phases ``U[0, π]``, each ``[n]``."""
    amp = 0.1 + 4.9 * torch.rand(n, generator=generator)
    phase = math.pi * torch.rand(n, generator=generator)
    return amp, phase


def sine_points(amp, phase, m: int, generator: torch.Generator):
    """``m`` points per task: ``x ~ U[-5, 5]`` ``[B, m, 1]`` and ``y = amp · sin(x + phase)``."""
    x = 10 * torch.rand((amp.shape[0], m, 1), generator=generator) - 5
    return x, amp[:, None, None] * torch.sin(x + phase[:, None, None])


def _mse(params, x, y):
    return ((mlp_forward(params, x) - y) ** 2).mean(dim=(1, 2))


def init_sine_model(cfg: SineConfig, generator: torch.Generator | None = None) -> Params:
    g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    return init_mlp((1, cfg.hidden, cfg.hidden, 1), g)


def evaluate_sine(phi: Params, cfg: SineConfig, seed: int = 12345, steps: int | None = None) -> dict:
    """Adapt ``phi`` to ``eval_tasks`` new sine waves with ``steps`` (default ``eval_steps``) inner steps
    on ``eval_shots`` points each; MSE on 100 evenly spaced x in [-5, 5] before and after."""
    g = torch.Generator().manual_seed(seed)
    steps = cfg.eval_steps if steps is None else steps
    amp, phase = sample_sine_tasks(cfg.eval_tasks, g)
    xs, ys = sine_points(amp, phase, cfg.eval_shots, g)
    grid = torch.linspace(-5, 5, 100).expand(cfg.eval_tasks, 100).unsqueeze(-1)
    y_grid = amp[:, None, None] * torch.sin(grid + phase[:, None, None])
    batched = stack(phi, cfg.eval_tasks)
    adapted = adam_inner(batched, lambda p, _step: _mse(p, xs, ys), steps, cfg.inner_lr)
    with torch.no_grad():
        before = _mse(batched, grid, y_grid)
        after = _mse(adapted, grid, y_grid)
    return {"mse_before": float(before.mean()), "mse_after": float(after.mean()), "steps": steps,
            "shots": cfg.eval_shots}


def train_sine(cfg: SineConfig, progress: bool = False, max_iterations: int | None = None) -> dict:
    """Meta-train on sine waves (in memory, no run directory: a few seconds); returns ``{"params",
    "iterations", "train_seconds", "eval", "eval_random_init"}`` (the evaluation of the meta-learned
    init and of the random init it started from)."""
    g = torch.Generator().manual_seed(cfg.seed)
    phi0 = init_sine_model(cfg, g)
    phi = {k: v.clone() for k, v in phi0.items()}
    start = time.perf_counter()
    iters = cfg.iterations if max_iterations is None else min(cfg.iterations, max_iterations)
    for it in range(iters):
        amp, phase = sample_sine_tasks(cfg.meta_batch_size, g)
        # one fresh minibatch per inner step, drawn up front: [k, B, m, 1]
        pts = [sine_points(amp, phase, cfg.inner_batch, g) for _ in range(cfg.inner_steps)]
        phi_tilde = adam_inner(stack(phi, cfg.meta_batch_size), lambda p, step, pts=pts: _mse(p, *pts[step]),
                               cfg.inner_steps, cfg.inner_lr)
        phi = reptile_step(phi, phi_tilde, cfg.outer_lr * (1 - it / cfg.iterations))
        if progress and (it + 1) % max(1, iters // 10) == 0:
            print(f"iteration {it + 1}/{iters}")
    seconds = time.perf_counter() - start
    return {"params": phi, "iterations": iters, "train_seconds": seconds,
            "eval": evaluate_sine(phi, cfg), "eval_random_init": evaluate_sine(phi0, cfg)}


__all__ = ["ReptileConfig", "ReptileLearner", "load_params", "SineConfig", "train", "train_sine", "evaluate",
           "evaluate_sine", "adapt", "adam_inner", "reptile_step", "mlp_forward", "init_mlp", "stack", "collect",
           "task_advantages", "gaussian_log_prob"]
