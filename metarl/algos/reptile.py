"""Reptile (Nichol, Achiam, Schulman 2018, "On first-order meta-learning algorithms").

For each task ``T_i`` of a meta-batch: ``φ̃_i = U^k_{T_i}(φ)``, k steps of Adam with β1 = 0 on the
task's loss starting from ``φ``; then ``φ ← φ + ε · mean_i(φ̃_i − φ)``.

Everything is batched over tasks: the per-task parameters are stacked ``[B, ...]`` and the MLPs
run as batched matrix products (:func:`mlp_forward`, ``torch.baddbmm``), so the k inner steps
update all B tasks at once (the summed per-task losses give each task exactly its own gradient);
there is no Python loop over tasks.

Two task families:

* **RL** (:class:`ReptileConfig`, :func:`train`): the task loss is the vanilla policy-gradient
  loss with a per-task linear feature baseline (Duan et al. 2016, as MAML's code) on
  ``trajectories_per_task`` episodes collected for every task in ONE batched env (env ``j`` runs
  task ``j // trajectories_per_task``). Default task family: Navigation2D-v0.
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
import json
import math
import time
from pathlib import Path

import torch

import metarl
from metarl import checkpoint
from metarl.algos._run import (
    CHECKPOINT,
    CONFIG_JSON,
    ProgressLog,
    check_choice,
    check_nonnegative_ints,
    check_positive,
    check_positive_ints,
    check_unit_interval,
    load_for_resume,
)
from metarl.kernels.returns import lambda_returns

Params = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- batched MLP
def init_mlp(sizes: tuple[int, ...], generator: torch.Generator | None = None, out_scale: float = 1.0) -> Params:
    """Unbatched MLP parameters ``{"w0": [in, h], "b0": [h], ...}`` (PyTorch's default uniform init;
    the last layer scaled by ``out_scale``)."""
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(n_in)
        scale = out_scale if i == len(sizes) - 2 else 1.0
        params[f"w{i}"] = (torch.rand((n_in, n_out), generator=generator) * 2 - 1) * bound * scale
        params[f"b{i}"] = (torch.rand(n_out, generator=generator) * 2 - 1) * bound * scale
    return params


def num_layers(params: Params) -> int:
    return sum(1 for k in params if k.startswith("w"))


def mlp_forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Batched tanh MLP: ``x [B, M, in]`` with parameters stacked ``w_l [B, in, out]``, ``b_l [B, out]``
    gives ``[B, M, out]`` (task b uses its own parameters)."""
    n = num_layers(params)
    h = x
    for i in range(n):
        h = torch.baddbmm(params[f"b{i}"].unsqueeze(1), h, params[f"w{i}"])
        if i < n - 1:
            h = torch.tanh(h)
    return h


def stack(params: Params, b: int) -> Params:
    """``b`` independent copies of unbatched parameters, stacked ``[b, ...]``."""
    return {k: v.unsqueeze(0).expand(b, *v.shape).clone() for k, v in params.items()}


# ----------------------------------------------------------------------------- inner loop
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


# ----------------------------------------------------------------------------- sine regression
@dataclasses.dataclass
class SineConfig:
    """Reptile on the paper's 1-D sine-wave regression (Nichol et al. 2018, §6.1 / their gist)."""

    hidden: int = 64
    """Hidden units of each of the two tanh layers (MLP 1-h-h-1)."""
    meta_batch_size: int = 4
    """Tasks (sine waves) per outer update, adapted together."""
    inner_steps: int = 5
    """k: Adam (β1 = 0) steps per task during meta-training."""
    inner_batch: int = 10
    """Points per inner step (a fresh minibatch of x ~ U[-5, 5] each step)."""
    inner_lr: float = 0.01
    """Adam learning rate of the inner loop (training and evaluation)."""
    outer_lr: float = 1.0
    """ε: outer step size, annealed linearly to 0 over ``iterations`` (the paper's gist: 0.1 with
    30,000 iterations; 1.0 reaches a good init in a few thousand)."""
    iterations: int = 3000
    """Outer updates."""
    eval_shots: int = 10
    """K: points a new task is adapted on at evaluation."""
    eval_steps: int = 32
    """Inner steps at evaluation (the paper: 32)."""
    eval_tasks: int = 100
    """Held-out sine waves evaluated."""
    seed: int = 0
    """Seed of the init, the tasks and the points."""

    def __post_init__(self):
        check_positive_ints(self, "hidden", "meta_batch_size", "inner_steps", "inner_batch", "iterations", "eval_shots",
                            "eval_steps", "eval_tasks")
        check_positive(self, "inner_lr", "outer_lr")


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
    """Meta-train on sine waves; returns ``{"params", "iterations", "train_seconds", "eval", "eval_random_init"}``
    (the evaluation of the meta-learned init and of the random init it started from)."""
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


# ----------------------------------------------------------------------------- RL pieces
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log-density summed over the last (action) dim."""
    return (-0.5 * ((actions - mean) / log_std.exp()) ** 2 - log_std - 0.5 * LOG_2PI).sum(-1)


@dataclasses.dataclass
class Batch:
    """Trajectories of ``B · K`` envs (env j on task ``j // K``), ``T`` steps, time-major."""

    obs: torch.Tensor
    """``[T, N, obs_dim]`` observation the action was taken in."""
    actions: torch.Tensor
    """``[T, N, act_dim]`` sampled (unclipped) actions."""
    rewards: torch.Tensor
    """``[T, N]`` rewards (0 after the env's first episode ended)."""
    mask: torch.Tensor
    """``[T, N]`` float: 1 while the first episode of the env is running."""
    episode_start: torch.Tensor
    """``[T, N]`` bool: step t starts an episode (z is redrawn there, MAESN)."""
    next_obs: torch.Tensor
    """``[T, N, obs_dim]`` observation after the action (the final one where an episode ended)."""

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each env's first episode ``[N]``."""
        return self.rewards.sum(0)


@torch.no_grad()
def collect(env, act_fn, steps: int, generator: torch.Generator, tasks=None, seed: int | None = None) -> Batch:
    """Roll ``env`` (autoreset ``same_step``) for ``steps`` steps with a Gaussian policy.

    ``act_fn(obs [N, o], episode_start [N] bool) -> (mean [N, a], log_std [N, a])``. Only each env's
    first episode counts (``mask``); with ``steps`` = the horizon every env runs exactly one.
    """
    options = {"tasks": tasks} if tasks is not None else None
    obs, _ = env.reset(seed=seed, options=options)
    n = env.num_envs
    a_dim = env.single_action_space.shape[0]
    buf_obs = torch.zeros((steps, n, env.obs_dim))
    buf_act = torch.zeros((steps, n, a_dim))
    buf_rew = torch.zeros((steps, n))
    buf_mask = torch.zeros((steps, n))
    buf_start = torch.zeros((steps, n), dtype=torch.bool)
    buf_next = torch.zeros((steps, n, env.obs_dim))
    alive = torch.ones(n, dtype=torch.bool)
    start = torch.ones(n, dtype=torch.bool)
    for t in range(steps):
        mean, log_std = act_fn(obs, start)
        noise = torch.randn(mean.shape, generator=generator)
        action = mean + log_std.exp() * noise
        buf_obs[t], buf_act[t], buf_mask[t], buf_start[t] = obs, action, alive.float(), start
        obs, reward, term, trunc, info = env.step(action)
        buf_rew[t] = reward * alive
        start = term | trunc
        buf_next[t] = torch.where(start[:, None], info["final_obs"].reshape(n, -1), obs.reshape(n, -1))
        alive &= ~start
    return Batch(buf_obs, buf_act, buf_rew, buf_mask, buf_start, buf_next)


def task_advantages(batch: Batch, tasks_per_batch: int, gamma: float, reg: float = 1e-5) -> torch.Tensor:
    """Discounted returns-to-go minus a per-task linear feature baseline, normalised per task.

    The baseline (MAML's ``LinearFeatureBaseline``): features ``[o, o², t, t², t³, 1]`` (t = step/100),
    ridge regression on the returns of the task's own K trajectories, all B tasks solved at once
    (``torch.linalg.solve`` on ``[B, F, F]``). Returns advantages ``[T, N]`` (0 on masked steps).
    """
    T, n = batch.rewards.shape
    b = tasks_per_batch
    dones = torch.zeros((T, n), dtype=torch.bool)
    dones[-1] = True
    ret = lambda_returns(batch.rewards, torch.zeros_like(batch.rewards), dones | (batch.mask == 0),
                         torch.zeros(n), gamma, 1.0)
    o = batch.obs.clamp(-10, 10)
    t = (torch.arange(T, dtype=torch.float32) / 100.0)[:, None, None].expand(T, n, 1)
    feats = torch.cat([o, o * o, t, t * t, t ** 3, torch.ones_like(t)], -1) * batch.mask[..., None]
    f = feats.shape[-1]
    # group by task: [T, B, K, F] -> [B, T*K, F]
    X = feats.view(T, b, n // b, f).permute(1, 0, 2, 3).reshape(b, -1, f)
    y = (ret * batch.mask).view(T, b, n // b).permute(1, 0, 2).reshape(b, -1, 1)
    # float64 normal equations with a ridge relative to their scale; a task whose system is still
    # singular (degenerate trajectories) falls back to a zero baseline
    X64, y64 = X.double(), y.double()
    A = X64.transpose(1, 2) @ X64
    ridge = reg * A.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-8)
    A = A + ridge[:, None, None] * torch.eye(f, dtype=torch.float64)
    w, info = torch.linalg.solve_ex(A, X64.transpose(1, 2) @ y64)
    w = torch.where((info == 0)[:, None, None] & torch.isfinite(w), w, torch.zeros_like(w))
    base = (X64 @ w).float().view(b, T, n // b).permute(1, 0, 2).reshape(T, n)
    adv = (ret - base) * batch.mask
    # per-task normalisation over the task's valid steps
    m = batch.mask.view(T, b, -1)
    a = adv.view(T, b, -1)
    cnt = m.sum((0, 2)).clamp_min(1)
    mu = a.sum((0, 2)) / cnt
    var = (((a - mu[None, :, None]) * m) ** 2).sum((0, 2)) / cnt
    a = (a - mu[None, :, None]) / (var.sqrt()[None, :, None] + 1e-8) * m
    return a.reshape(T, n)


def per_task_mean(x: torch.Tensor, b: int) -> torch.Tensor:
    """``x [..., N]`` averaged per task (``N = b · K``, env j on task ``j // K``) -> ``[b]``."""
    return x.reshape(-1, b, x.shape[-1] // b).mean((0, 2))


# ----------------------------------------------------------------------------- RL config
@dataclasses.dataclass
class ReptileConfig:
    """Reptile for RL: VPG (with a linear baseline) as the task loss, Adam (β1 = 0) inner steps."""

    env: str = "Navigation2D-v0"
    """Task distribution: a metarl env id with Box actions (Navigation2D-v0, SemicircleGoal-v0, ...)."""
    meta_batch_size: int = 20
    """B: tasks per outer update (adapted together)."""
    trajectories_per_task: int = 10
    """K: episodes per task per inner step (env j runs task j // K)."""
    inner_steps: int = 3
    """k: inner Adam (β1 = 0) steps per task."""
    inner_lr: float = 0.01
    """Inner Adam learning rate."""
    outer_lr: float = 0.5
    """ε: outer step size (φ ← φ + ε · mean(φ̃ − φ)), annealed linearly to 0 when ``anneal``."""
    anneal: bool = True
    """Anneal ε linearly to 0 over ``iterations``."""
    iterations: int = 200
    """Outer updates."""
    hidden: int = 64
    """Hidden units of each of the two tanh layers of the policy mean."""
    init_log_std: float = -1.6
    """Initial log standard deviation of the actions (learned, one per action dim)."""
    gamma: float = 0.99
    """Discount of the returns in the VPG loss."""
    num_train_tasks: int = 0
    """Meta-train task set size from ``sample_task_split`` (0: fresh tasks every update)."""
    eval_tasks: int = 40
    """Held-out tasks evaluated at the end."""
    eval_steps: int = 3
    """Adaptation steps evaluated (returns after 0, 1, ..., eval_steps steps)."""
    seed: int = 0
    """Seed of the envs, tasks, init and sampling."""
    checkpoint_minutes: float = 5.0
    """Minutes between checkpoints (one is also written at the end)."""

    def __post_init__(self):
        check_choice(self, "env", tuple(sorted(metarl.envs.ENV_CLASSES)))
        check_positive_ints(self, "meta_batch_size", "trajectories_per_task", "inner_steps", "iterations", "hidden",
                            "eval_tasks", "eval_steps")
        check_nonnegative_ints(self, "num_train_tasks")
        check_positive(self, "inner_lr", "outer_lr")
        check_unit_interval(self, "gamma")


def make_env(cfg, num_envs: int, seed: int | None = None):
    env = metarl.make_vec(cfg.env, num_envs, autoreset_mode="same_step", seed=cfg.seed if seed is None else seed)
    if env._discrete:
        raise ValueError(f"env {cfg.env!r} has discrete actions; these learners need a Box action space")
    return env


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
    lp = gaussian_log_prob(mean, log_std, batch.actions)
    m = batch.mask
    return -per_task_mean(lp * adv * m, b) / per_task_mean(m, b).clamp_min(1e-8)


def adapt(cfg: ReptileConfig, phi: Params, env, tasks, steps: int, generator: torch.Generator,
          seed: int | None = None, measure_final: bool = True) -> tuple[Params, torch.Tensor]:
    """k inner steps on B tasks at once (``env`` has ``B · K`` envs, ``tasks`` has B).

    Returns the adapted stacked parameters and the mean episode return per stage ``[steps + 1, B]``
    (stage j: trajectories sampled with the parameters after j steps; the last stage costs an
    extra rollout, skipped when ``measure_final`` is False: then ``[steps, B]``)."""
    b, k = len(tasks), cfg.trajectories_per_task
    env_tasks = tasks[torch.arange(b * k) // k]
    horizon = env.max_episode_steps
    returns = []
    state = {}

    def rollout(p):
        return collect(env, lambda obs, _start: policy_dist(p, obs, b), horizon, generator, tasks=env_tasks,
                       seed=seed)

    def loss_fn(p, _step):
        return vpg_losses(p, state["batch"], state["adv"], b)

    def callback(step, p):
        if step == steps and not measure_final:
            return
        batch = rollout(p)
        returns.append(per_task_mean(batch.episode_returns()[None], b))
        if step < steps:
            state["batch"] = batch
            state["adv"] = task_advantages(batch, b, cfg.gamma)

    adapted = adam_inner(stack(phi, b), loss_fn, steps, cfg.inner_lr, callback=callback)
    return adapted, torch.stack(returns)


def evaluate(phi: Params, cfg: ReptileConfig, num_tasks: int | None = None, steps: int | None = None,
             seed: int = 12345) -> dict:
    """Adapt ``phi`` to held-out tasks (``sample_task_split``'s test set for ``seed``); returns
    ``{"returns": [mean return after 0, 1, ..., steps adaptation steps], "se": [...]}``."""
    num_tasks = num_tasks or cfg.eval_tasks
    steps = cfg.eval_steps if steps is None else steps
    env = make_env(cfg, num_tasks * cfg.trajectories_per_task, seed=seed)
    _, test = env.sample_task_split(1, num_tasks, seed=seed)
    g = torch.Generator().manual_seed(seed)
    _, rets = adapt(cfg, phi, env, test, steps, g)
    return {"returns": rets.mean(1).tolist(), "se": (rets.std(1) / math.sqrt(num_tasks)).tolist()}


def train(cfg: ReptileConfig, run_dir=None, progress: bool = False, max_iterations: int | None = None, *,
          resume: bool = False) -> dict:
    """Meta-train with Reptile; returns a summary (final evaluation after 0..eval_steps steps, speed,
    and ``"params"``, the meta-learned init). ``run_dir`` receives ``config.json``, ``progress.csv``
    and ``checkpoint.pt`` (atomic; every ``checkpoint_minutes`` and at the end, Ctrl-C included).
    ``resume=True`` continues from ``run_dir``'s checkpoint with the results of an uninterrupted
    run: the checkpoint holds φ, the generator and the env's state (its RNG keys and counters)."""
    run_dir = Path(run_dir) if run_dir is not None else None
    g = torch.Generator().manual_seed(cfg.seed)
    b, k = cfg.meta_batch_size, cfg.trajectories_per_task
    env = make_env(cfg, b * k)
    phi = init_policy(cfg, env, g)
    train_set = env.sample_task_split(cfg.num_train_tasks, 1, seed=cfg.seed)[0] if cfg.num_train_tasks else None
    it = 0
    if resume:
        ck = load_for_resume(run_dir, "reptile", cfg)
        if "generator" not in ck:
            raise ValueError(f"{run_dir}: this checkpoint was written without the state a resume needs")
        phi, it = ck["params"], ck["iteration"]
        g.set_state(ck["generator"])
        env.load_state_dict(ck["env"])
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_JSON).write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    log = ProgressLog(run_dir, ["iteration", "return_pre", "return_post", "epsilon", "seconds"],
                      keep_through=it if resume else None)
    iters = cfg.iterations if max_iterations is None else min(cfg.iterations, max_iterations)

    def snapshot():
        return {"config": dataclasses.asdict(cfg), "iteration": it, "params": phi, "generator": g.get_state(),
                "env": env.state_dict()}

    start = last_ckpt = time.perf_counter()
    interrupted, last = False, None
    try:
        while it < iters:
            if run_dir is not None:   # the state at this iteration boundary, saved if Ctrl-C comes mid-iteration
                last = snapshot()     # (φ is replaced, never changed in place)
            # collect + inner: k VPG steps for all B tasks at once
            if train_set is None:
                tasks = env.sample_tasks(b, generator=g)
            else:
                tasks = train_set[torch.randint(len(train_set), (b,), generator=g)]
            phi_tilde, rets = adapt(cfg, phi, env, tasks, cfg.inner_steps, g, measure_final=False)
            # outer: φ ← φ + ε mean(φ̃ − φ)
            eps = cfg.outer_lr * ((1 - it / cfg.iterations) if cfg.anneal else 1.0)
            phi = reptile_step(phi, phi_tilde, eps)
            it += 1
            # log
            row = [it, float(rets[0].mean()), float(rets[-1].mean()), eps, time.perf_counter() - start]
            log.write(row)
            if progress:
                print(f"iteration {it}/{iters} return pre {row[1]:.3f} post {row[2]:.3f}")
            if run_dir is not None and time.perf_counter() - last_ckpt > 60 * cfg.checkpoint_minutes:
                checkpoint.save(run_dir / CHECKPOINT, snapshot(), kind="reptile")
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        log.close()
        if run_dir is not None:
            checkpoint.save(run_dir / CHECKPOINT, last if interrupted and last is not None else snapshot(),
                            kind="reptile")
    seconds = time.perf_counter() - start
    summary = {"iterations": it, "train_seconds": seconds}
    if interrupted:
        summary["interrupted"] = True
    elif it >= cfg.iterations:
        summary["eval"] = evaluate(phi, cfg)
    if run_dir is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    summary["params"] = phi
    return summary


def load_params(run_dir) -> tuple[Params, ReptileConfig]:
    """The meta-learned initialisation and config of a run directory (from its checkpoint)."""
    ck = checkpoint.load(Path(run_dir) / CHECKPOINT, kind="reptile")
    return ck["params"], ReptileConfig(**ck["config"])


__all__ = ["ReptileConfig", "load_params", "SineConfig", "train", "train_sine", "evaluate", "evaluate_sine", "adapt",
           "adam_inner", "reptile_step", "mlp_forward", "init_mlp", "stack", "collect", "task_advantages",
           "gaussian_log_prob"]
