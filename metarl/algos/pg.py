"""Policy-gradient pieces the learners share (one copy each).

- **evaluation**: :func:`mean_se`, :func:`eval_task_count`;
- **Gaussian policies**: :func:`gaussian_log_prob`, :func:`gaussian_kl`; :class:`GaussianMLPPolicy`
  (an ``nn.Module``, applied with shared or per-task stacked parameters by :class:`FunctionalPolicy`)
  and the functional tanh MLP on stacked per-task parameters (:func:`init_mlp`, :func:`mlp_forward`,
  :func:`stack`);
- **rollouts** of B tasks × K trajectories in one vector env (env ``j`` on task ``j // K``):
  :func:`make_box_env`, :func:`action_map`, :class:`Batch`, :func:`collect`, :func:`dense_rewards`,
  :func:`per_task`, :func:`per_task_mean`, :func:`task_mean`, :func:`returns_to_go`;
- **the linear feature baseline** (Duan et al. 2016, rllab's ``LinearFeatureBaseline``):
  :func:`baseline_features`, :func:`fit_linear_baseline`, :func:`per_task_advantages`,
  :func:`task_advantages`;
- **inner (adaptation) losses** of MAML-style learners: :func:`vpg_loss_fn` (MAML's), :func:`lvc_loss_fn`
  (ProMP's), :func:`dice_loss_fn` (unbiased; weights by :func:`per_task_dice_weights`), :func:`inner_loss_fn`;
- **TRPO** (Schulman et al. 2015): :func:`conjugate_gradient`, :func:`trpo_step`.

Layouts: rollouts are time-major ``[T, N, ...]`` with ``N = B · K``; per-task tensors are
``[B, M, ...]`` with ``M = K · T`` (task-major, trajectory-major inside a task: :func:`per_task`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import gymnasium as gym
import torch
from torch import nn
from torch.func import functional_call, vmap

import metarl
from metarl.kernels.returns import lambda_returns

LOG_2PI = math.log(2 * math.pi)
Params = dict[str, torch.Tensor]


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    """``(mean, standard error of the mean)`` of a tensor of per-task or per-episode results (the
    standard error is NaN for a single value)."""
    x = x.detach().double().flatten()
    se = float(x.std() / math.sqrt(x.numel())) if x.numel() > 1 else math.nan
    return float(x.mean()), se


def eval_task_count(num_tasks: int | None, eval_tasks: int) -> int:
    """How many held-out tasks an evaluation runs: ``num_tasks``, or the config's ``eval_tasks`` when
    None (0 there means no evaluation unless a number is given); a ValueError unless a positive int."""
    n = eval_tasks if num_tasks is None else num_tasks
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_tasks must be a positive int (the config's eval_tasks is {eval_tasks}), got {n!r}")
    return n


# ----------------------------------------------------------------------------- Gaussian policies
def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log N(actions | mean, diag(exp(log_std))²)`` summed over the last dim: ``[..., a]`` → ``[...]``."""
    return (-0.5 * ((actions - mean) / log_std.exp()) ** 2 - log_std - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(m0: torch.Tensor, s0: torch.Tensor, m1: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """``KL(N(m0, e^{s0}) ‖ N(m1, e^{s1}))`` of diagonal Gaussians (means, log-stds ``[..., a]``),
    summed over the last dim: ``[...]``."""
    return (s1 - s0 + (torch.exp(2 * s0) + (m0 - m1) ** 2) / (2 * torch.exp(2 * s1)) - 0.5).sum(-1)


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
        >>> from metarl.algos.pg import GaussianMLPPolicy
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


class FunctionalPolicy:
    """Applies a policy module with given parameters: shared ones on obs ``[..., obs]``
    (``functional_call``), or per-task ones stacked ``[B, ...]`` on obs grouped ``[B, K, obs]``
    (:meth:`batched`: ``vmap(functional_call)``, no Python loop over tasks)."""

    def __init__(self, policy: nn.Module):
        self.policy = policy

    def __call__(self, params: dict, obs: torch.Tensor):
        return functional_call(self.policy, params, (obs,))

    def batched(self, params: dict, obs: torch.Tensor):
        return vmap(lambda p, o: functional_call(self.policy, p, (o,)))(params, obs)

    def acting(self, params: dict, k: int | None = None) -> Callable:
        """The ``act_fn`` of :func:`collect`: shared ``params``, or (``k`` given) per-task params
        stacked ``[B, ...]`` for envs grouped by task, ``k`` per task."""
        if k is None:
            return lambda obs, _start: self(params, obs)

        def act(obs, _start):
            mean, log_std = self.batched(params, obs.view(obs.shape[0] // k, k, -1))
            return mean.reshape(obs.shape[0], -1), log_std.reshape(obs.shape[0], -1)
        return act


def init_mlp(sizes: tuple[int, ...], generator: torch.Generator | None = None, out_scale: float = 1.0) -> Params:
    """Unbatched MLP parameters ``{"w0": [in, h], "b0": [h], ...}`` (PyTorch's default uniform init
    ``U(±1/√in)``; the last layer scaled by ``out_scale``)."""
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(n_in)
        scale = out_scale if i == len(sizes) - 2 else 1.0
        params[f"w{i}"] = (torch.rand((n_in, n_out), generator=generator) * 2 - 1) * bound * scale
        params[f"b{i}"] = (torch.rand(n_out, generator=generator) * 2 - 1) * bound * scale
    return params


def num_layers(params: Params) -> int:
    """Linear layers of :func:`init_mlp` parameters."""
    return sum(1 for k in params if k.startswith("w"))


def mlp_forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Batched tanh MLP: ``x [B, M, in]`` with parameters stacked ``w_l [B, in, out]``, ``b_l [B, out]``
    gives ``[B, M, out]`` (task b uses its own parameters; one ``torch.baddbmm`` per layer)."""
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


# ----------------------------------------------------------------------------- rollouts
def make_box_env(env_id: str, num_envs: int, seed: int, *, max_episode_steps: int | None = None,
                 device: str = "cpu", **options):
    """``metarl.make_vec(env_id, num_envs, **options)`` with ``autoreset_mode="same_step"``; an env whose
    actions are not a Box (a Gaussian policy's) is refused."""
    steps = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    env = metarl.make_vec(env_id, num_envs, autoreset_mode="same_step", device=device, seed=seed, **steps, **options)
    if not isinstance(env.single_action_space, gym.spaces.Box):
        raise ValueError(f"env {env_id!r} has a {type(env.single_action_space).__name__} action space; "
                         f"these learners need a Box (a Gaussian policy)")
    return env


def make_horizon_env(cfg, num_envs: int, seed: int | None = None):
    """``num_envs`` copies of ``cfg.env`` (and its ``cfg.env_options``) with the time limit ``cfg.horizon``, on
    ``cfg.device``, seeded ``cfg.seed`` unless ``seed`` (Box actions only): the env of MAML-style learners."""
    from metarl.config import env_options

    return make_box_env(cfg.env, num_envs, cfg.seed if seed is None else seed, max_episode_steps=cfg.horizon,
                        device=cfg.device, **env_options(cfg.env_options))


def make_mlp_policy(cfg, env) -> GaussianMLPPolicy:
    """A fresh :class:`GaussianMLPPolicy` for ``env`` from ``cfg.hidden_sizes``, ``init_std``,
    ``policy_init`` (and ``mean_squash`` where the config has one), initialised from ``cfg.seed`` (the
    global RNG is left as it was), on ``cfg.device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        pol = GaussianMLPPolicy(env.obs_dim, int(env.single_action_space.shape[0]), cfg.hidden_sizes, cfg.init_std,
                                cfg.policy_init, getattr(cfg, "mean_squash", "none"))
    return pol.to(cfg.device)


def action_map(env, normalize: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale [a], offset [a])`` taking the policy's ``[-1, 1]`` actions to ``env``'s action box
    (``env_action = offset + scale · clip(action, -1, 1)``, rllab's ``normalize``), or None when ``normalize``
    is False (the policy acts in the env's units)."""
    if not normalize:
        return None
    space = env.single_action_space
    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError("normalize_actions needs a bounded action box; set normalize_actions=False")
    return (high - low) / 2, (high + low) / 2


@dataclasses.dataclass
class Batch:
    """Trajectories of ``N = B · K`` envs (env j on task ``j // K``), ``T`` steps, time-major."""

    obs: torch.Tensor
    """``[T, N, obs_dim]`` observation the action was taken in."""
    actions: torch.Tensor
    """``[T, N, act_dim]`` the policy's sampled actions (before any :func:`action_map` and the env's clip)."""
    rewards: torch.Tensor
    """``[T, N]`` rewards (0 after the env's first episode ended)."""
    mask: torch.Tensor
    """``[T, N]`` float: 1 while the first episode of the env is running."""
    episode_start: torch.Tensor
    """``[T, N]`` bool: step t starts an episode (MAESN redraws its latent there)."""
    next_obs: torch.Tensor
    """``[T, N, obs_dim]`` observation after the action (the final one where an episode ended)."""

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each env's first episode ``[N]``."""
        return self.rewards.sum(0)


@torch.no_grad()
def collect(env, act_fn: Callable, steps: int, generator: torch.Generator, tasks=None, seed: int | None = None,
            action_affine: tuple[torch.Tensor, torch.Tensor] | None = None, shard: tuple[int, int] = (0, 1)) -> Batch:
    """Roll ``env`` (autoreset ``same_step``) for ``steps`` steps with a Gaussian policy.

    ``act_fn(obs [N, o], episode_start [N] bool) -> (mean [N, a], log_std [N, a])``; actions are
    ``mean + exp(log_std) · ε`` with ε drawn from ``generator`` on the env's device. ``tasks``: one
    task per env (None: keep the env's). ``action_affine`` (from :func:`action_map`) maps the
    policy's actions onto the env's; the batch keeps the policy's own. Only each env's first
    episode counts (``mask``); with ``steps`` = the horizon every env runs exactly one. ``shard``
    ``(index, count)``: ``env`` holds rows ``[index·N, (index+1)·N)`` of a batch of ``count·N`` (a
    data-parallel rank's, :mod:`metarl.distributed`): ε is drawn for the whole batch and those rows kept.
    """
    obs, _ = env.reset(seed=seed, options=None if tasks is None else {"tasks": tasks})
    n, d, a = env.num_envs, env.obs_dim, env.single_action_space.shape[0]
    dev = obs.device
    buf_obs = torch.zeros((steps, n, d), device=dev)
    buf_act = torch.zeros((steps, n, a), device=dev)
    buf_rew = torch.zeros((steps, n), device=dev)
    buf_mask = torch.zeros((steps, n), device=dev)
    buf_start = torch.zeros((steps, n), dtype=torch.bool, device=dev)
    buf_next = torch.zeros((steps, n, d), device=dev)
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    start = torch.ones(n, dtype=torch.bool, device=dev)
    if action_affine is not None:
        scale, offset = (x.to(dev) for x in action_affine)
    index, count = shard
    for t in range(steps):
        mean, log_std = act_fn(obs, start)
        eps = torch.randn((n * count, a), generator=generator, device=dev)
        action = mean + log_std.exp() * (eps if count == 1 else eps[index * n:(index + 1) * n])
        buf_obs[t], buf_act[t], buf_mask[t], buf_start[t] = obs, action, alive.float(), start
        # rllab's normalize wrapper clips to the box before the env: the MuJoCo families' control cost sees
        # the action as given (gymnasium's), so an unclipped Gaussian sample would be charged for force the
        # actuators never apply
        env_action = action if action_affine is None else (offset + scale * action.clamp(-1.0, 1.0))
        obs, reward, term, trunc, info = env.step(env_action)
        buf_rew[t] = reward * alive
        start = term | trunc
        buf_next[t] = torch.where(start[:, None], info["final_obs"].reshape(n, d), obs.reshape(n, d)) \
            if "final_obs" in info else obs
        alive = alive & ~start
    return Batch(buf_obs, buf_act, buf_rew, buf_mask, buf_start, buf_next)


def dense_rewards(batch: Batch, goals: torch.Tensor) -> Batch:
    """``batch`` with the shaped reward of the point-goal envs: ``−‖next_obs − goal‖`` ``[T, N]``
    (0 on masked steps); ``goals [N, 2]``, one per env."""
    return dataclasses.replace(batch, rewards=-(batch.next_obs - goals.to(batch.next_obs.device)).norm(dim=-1)
                               * batch.mask)


def per_task(x: torch.Tensor, b: int) -> torch.Tensor:
    """``[T, N, ...]`` → ``[B, K·T, ...]`` (task-major; within a task trajectory-major)."""
    t, n = x.shape[:2]
    x = x.reshape((t, b, n // b) + x.shape[2:]).movedim(0, 2)
    return x.reshape((b, n // b * t) + x.shape[3:])


def per_task_mean(x: torch.Tensor, b: int) -> torch.Tensor:
    """``x [..., N]`` averaged per task (``N = b · K``, env j on task ``j // K``) → ``[b]``."""
    return x.reshape(-1, b, x.shape[-1] // b).mean((0, 2))


def task_mean(x: torch.Tensor, mask: torch.Tensor, b: int) -> torch.Tensor:
    """``Σ x · mask / Σ mask`` per task over the valid steps of ``x, mask [T, N]`` → ``[b]`` (the
    policy-gradient losses: ``x = log π · A``)."""
    return per_task_mean(x * mask, b) / per_task_mean(mask, b).clamp_min(1e-8)


def returns_to_go(batch: Batch, gamma: float) -> torch.Tensor:
    """Discounted returns-to-go of each env's first episode ``[T, N]`` (0 after it)."""
    done = batch.mask == 0
    done[-1] = True
    zeros = torch.zeros_like(batch.rewards)
    return lambda_returns(batch.rewards, zeros, done, zeros[0], gamma, 1.0)


# ----------------------------------------------------------------------------- the linear feature baseline
def baseline_features(obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Duan et al. (2016) / rllab ``LinearFeatureBaseline`` features of ``obs [..., d]`` at time
    steps ``t [...]``: ``[clip(obs, ±10), clip(obs, ±10)², t/100, (t/100)², (t/100)³, 1]`` ``[..., 2d + 4]``."""
    o = obs.clamp(-10, 10)
    al = (t.to(obs.dtype) / 100.0).unsqueeze(-1)
    return torch.cat([o, o * o, al, al ** 2, al ** 3, torch.ones_like(al)], -1)


def fit_linear_baseline(features: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None = None,
                        reg_coeff: float = 1e-5, relative: bool = False) -> torch.Tensor:
    """Least-squares coefficients ``[B, F]`` per task from ``features [B, M, F]``, ``returns [B, M]``
    (samples with ``mask == 0`` ignored): ``(XᵀX + r·I) w = Xᵀy`` in float64.

    ``r = reg_coeff`` (rllab's), or with ``relative`` ``reg_coeff`` times the mean diagonal of each
    task's ``XᵀX`` (scale-free: Reptile's and MAESN's). While a system is singular or its solution
    not finite, ``r`` is multiplied by 10 (as rllab, up to 5 tries); a task still failing then gets
    a zero baseline. ``reg_coeff = 0``: plain least squares (``torch.linalg.lstsq``)."""
    x = features.double()
    y = returns.double()
    if mask is not None:
        x = x * mask.double().unsqueeze(-1)
        y = y * mask.double()
    if reg_coeff == 0:
        return torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1).to(features.dtype)
    xtx = x.transpose(1, 2) @ x
    xty = (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(x.shape[-1], dtype=torch.float64, device=x.device)
    scale = xtx.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-8)[:, None, None] if relative else 1.0
    reg = reg_coeff
    for _ in range(5):
        w, info = torch.linalg.solve_ex(xtx + reg * scale * eye, xty)
        ok = (info == 0)[:, None] & torch.isfinite(w)
        if bool(ok.all()):
            break
        reg *= 10
    return torch.where(ok, w, 0.0).to(features.dtype)


def per_task_advantages(batch: Batch, b: int, gamma: float, reg_coeff: float = 1e-5, relative: bool = False,
                        normalize: bool = True) -> dict:
    """The batch's samples per task with their advantages: ``obs [B, M, d]``, ``act [B, M, a]``,
    ``adv [B, M]``, ``mask [B, M]`` (M = K·T, :func:`per_task`). Advantages: discounted returns-to-go
    minus each task's own linear baseline (:func:`fit_linear_baseline` on :func:`baseline_features`;
    ``reg_coeff``, ``relative``), 0 on masked samples; ``normalize``: centred and scaled per task over
    its valid samples (the MAML code's ``center_adv``)."""
    t_len, n = batch.rewards.shape
    t = torch.arange(t_len, device=batch.rewards.device).unsqueeze(1).expand(t_len, n)
    obs, act, ret, mask, t = (per_task(x, b) for x in (batch.obs, batch.actions, returns_to_go(batch, gamma),
                                                         batch.mask, t))
    feats = baseline_features(obs, t)
    w = fit_linear_baseline(feats, ret, mask, reg_coeff, relative)
    adv = (ret - (feats @ w.unsqueeze(-1)).squeeze(-1)) * mask
    if normalize:
        mu, sigma = masked_moments(adv, mask)
        adv = (adv - mu) / sigma * mask
    return {"obs": obs, "act": act, "adv": adv, "mask": mask}


def masked_moments(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (+ 1e-8) of each task's valid samples of ``x, mask [B, M]``: ``[B, 1]`` each."""
    cnt = mask.sum(1, keepdim=True).clamp_min(1)
    mu = (x * mask).sum(1, keepdim=True) / cnt
    var = (((x - mu) * mask) ** 2).sum(1, keepdim=True) / cnt
    return mu, var.sqrt() + 1e-8


def per_task_dice_weights(batch: Batch, b: int, gamma: float, reg_coeff: float = 1e-5,
                          normalize: bool = True) -> dict:
    """The per-step weights of the DiCE inner objective (:func:`dice_loss_fn`) of ``b`` tasks: ``reward_w``
    and ``baseline_w``, ``[B, K, T]`` (0 on masked steps), beside :func:`per_task_advantages`' ``obs``,
    ``act``, ``mask`` (``[B, M, ...]``, ``M = K·T``).

    In the frame of the objective discounted from t = 0: ``G_t = Σ_{t' ≥ t} γ^{t'} r_{t'}`` (each
    trajectory's), ``β_t`` its linear baseline (:func:`fit_linear_baseline` per task),
    ``A_t = G_t − β_t``; with ``normalize`` ``A`` is centred and scaled per task, ``A' = (A − μ) / σ``,
    which the weights carry as ``reward_w = γ^t r_t / σ`` and ``baseline_w = (β_t + μ) / σ`` (so
    ``Σ_{t' ≥ t} reward_w − baseline_w = A'_t``)."""
    t_len, n = batch.rewards.shape
    k = n // b
    t = torch.arange(t_len, device=batch.rewards.device)
    disc = gamma ** t.to(batch.rewards.dtype)
    rew = batch.rewards * batch.mask * disc.unsqueeze(1)                      # γ^t r_t                [T, N]
    ret = returns_to_go(batch, gamma) * disc.unsqueeze(1)                    # G_t = γ^t · return-to-go [T, N]
    obs, act, ret, rew, mask, tt = (per_task(x, b) for x in (batch.obs, batch.actions, ret, rew, batch.mask,
                                                             t.unsqueeze(1).expand(t_len, n)))
    feats = baseline_features(obs, tt)
    base = (feats @ fit_linear_baseline(feats, ret, mask, reg_coeff).unsqueeze(-1)).squeeze(-1) * mask
    mu, sigma = masked_moments((ret - base) * mask, mask) if normalize else (0.0, 1.0)
    reward_w = (rew * mask / sigma).view(b, k, t_len)
    baseline_w = ((base + mu) * mask / sigma).view(b, k, t_len)
    return {"obs": obs, "act": act, "mask": mask, "reward_w": reward_w, "baseline_w": baseline_w}


def task_advantages(batch: Batch, b: int, gamma: float, reg: float = 1e-5) -> torch.Tensor:
    """:func:`per_task_advantages` (relative ridge ``reg``, normalised) back in the batch's layout:
    advantages ``[T, N]`` of ``b`` tasks (0 on masked steps), all tasks solved at once."""
    t_len, n = batch.rewards.shape
    adv = per_task_advantages(batch, b, gamma, reg, relative=True)["adv"]
    return adv.reshape(b, n // b, t_len).movedim(2, 0).reshape(t_len, n)


# ----------------------------------------------------------------------------- inner (adaptation) losses
ESTIMATORS = ("maml", "lvc", "dice")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ x · mask / Σ mask`` over the last dim (one task's valid samples)."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def vpg_loss_fn(apply: FunctionalPolicy) -> Callable:
    """MAML's inner loss of one task, ``(params, task batch) -> −mean_t log π_θ(a|s) · A`` (``obs [M, d]``,
    ``act [M, a]``, ``adv, mask [M]``). Its Hessian lacks the ``∇log π ∇log πᵀ A`` term of the
    likelihood-ratio one: the bias of MAML's meta-gradient (Rothfuss et al. 2019, section 4)."""
    def vpg_loss(params, tb):
        mean, log_std = apply(params, tb["obs"])
        return -masked_mean(gaussian_log_prob(mean, log_std, tb["act"]) * tb["adv"], tb["mask"])
    return vpg_loss


def lvc_loss_fn(apply: FunctionalPolicy) -> Callable:
    """ProMP's low-variance-curvature inner loss of one task, ``−mean_t π_θ(a|s) / π_old(a|s) · A``
    (``old_logp [M]``, the sampling policy's log-probs, is data: the denominator's gradient is stopped).
    At the sampling point its gradient is :func:`vpg_loss_fn`'s and its Hessian
    ``−mean_t (∇²log π + ∇log π ∇log πᵀ) A_t`` (the likelihood-ratio Hessian without the cross-time terms)."""
    def lvc_loss(params, tb):
        mean, log_std = apply(params, tb["obs"])
        ratio = torch.exp(gaussian_log_prob(mean, log_std, tb["act"]) - tb["old_logp"])
        return -masked_mean(ratio * tb["adv"], tb["mask"])
    return lvc_loss


def dice_loss_fn(apply: FunctionalPolicy) -> Callable:
    """The DiCE inner loss of one task (Foerster et al. 2018, with the baseline of Mao et al. 2019), whose
    derivatives of every order are the likelihood-ratio estimators of the discounted return's::

        L(θ) = −(1/M) Σ_{k,t} mask · [ □(c_{k,t}) · reward_w_{k,t} + (1 − □(ℓ_{k,t})) · baseline_w_{k,t} ]

    ``ℓ_{k,t} = log π_θ(a|s)`` of trajectory ``k``'s step ``t``, ``c_{k,t} = Σ_{t' ≤ t} ℓ_{k,t'}``,
    ``□(x) = exp(x − x_old)`` with ``x_old`` the sampling policy's value (``old_logp``: data). Task batch:
    ``obs [M, d]``, ``act [M, a]``, ``mask [M]``, ``old_logp [M]``, ``reward_w, baseline_w [K, T]``
    (:func:`per_task_dice_weights`). At the sampling point the gradient is
    ``−(1/M) Σ ∇ℓ_t · A'_t`` (REINFORCE with the weights' advantages) and the Hessian
    ``−(1/M) Σ_t [(∇²c_t + ∇c_t ∇c_tᵀ) reward_w_t − (∇²ℓ_t + ∇ℓ_t ∇ℓ_tᵀ) baseline_w_t]``: unbiased, the
    cross-time score products included (which :func:`lvc_loss_fn` drops for a lower variance)."""
    def dice_loss(params, tb):
        mean, log_std = apply(params, tb["obs"])
        shape = tb["reward_w"].shape
        delta = (gaussian_log_prob(mean, log_std, tb["act"]) - tb["old_logp"]).view(shape)
        mask = tb["mask"].view(shape)
        box_c = torch.exp(torch.cumsum(delta * mask, -1))
        box_l = torch.exp(delta)
        terms = (box_c * tb["reward_w"] + (1 - box_l) * tb["baseline_w"]) * mask
        return -terms.sum() / mask.sum().clamp_min(1)
    return dice_loss


def inner_loss_fn(apply: FunctionalPolicy, estimator: str) -> Callable:
    """The one-task inner loss of ``estimator``: ``"maml"`` (:func:`vpg_loss_fn`), ``"lvc"``
    (:func:`lvc_loss_fn`) or ``"dice"`` (:func:`dice_loss_fn`)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return {"maml": vpg_loss_fn, "lvc": lvc_loss_fn, "dice": dice_loss_fn}[estimator](apply)


# ----------------------------------------------------------------------------- TRPO
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


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _assign(params: list, flat: torch.Tensor) -> None:
    i = 0
    with torch.no_grad():
        for p in params:
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


def trpo_step(objective: Callable[[], tuple[torch.Tensor, torch.Tensor]], params: list, max_kl: float, *,
              cg_iters: int = 10, cg_damping: float = 1e-5, backtrack_ratio: float = 0.8,
              max_backtracks: int = 15, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """One TRPO update of the leaf tensors ``params`` (in place). ``objective() -> (surrogate loss,
    mean KL to the sampling policy)``, both scalars differentiable w.r.t. ``params``; it is called
    again under ``torch.no_grad`` in the line search.

    Step direction: ``cg_iters`` conjugate-gradient iterations on ``(H + cg_damping·I) x = −g``
    (``H``: the KL's Hessian, by Hessian-vector products; ``g``: the surrogate's gradient), scaled to
    KL ``max_kl`` under the quadratic model; then a backtracking line search (factor
    ``backtrack_ratio``, ``max_backtracks`` tries) accepts the first step that lowers the surrogate
    and keeps the KL ≤ ``max_kl`` (none: ``params`` are left unchanged). Defaults are rllab's.
    ``reduce``: data-parallel TRPO (:mod:`metarl.distributed`): ``objective`` gives this rank's share (a
    mean over its tasks) and ``reduce`` (e.g. ``distributed.all_reduce_mean``) turns a tensor into the
    whole batch's: applied to the gradient, every Fisher-vector product and the line search's values, so
    every rank takes the same step. Returns ``{"surrogate_before", "surrogate_after", "kl", "accepted"}``.
    """
    reduce = reduce or (lambda x: x)
    loss, kl = objective()
    g = reduce(_flat(torch.autograd.grad(loss, params, retain_graph=True)))
    kl_grad = _flat(torch.autograd.grad(kl, params, create_graph=True))

    def fvp(v):
        return reduce(_flat(torch.autograd.grad(kl_grad @ v, params, retain_graph=True))) + cg_damping * v

    step_dir = conjugate_gradient(fvp, -g, cg_iters)
    shs = float(step_dir @ fvp(step_dir))
    old = _flat([p.detach() for p in params]).clone()
    loss0 = float(reduce(loss.detach()))
    stats = {"surrogate_before": loss0, "surrogate_after": loss0, "kl": 0.0, "accepted": 0}
    if not (shs > 0 and math.isfinite(shs)):
        return stats
    full = math.sqrt(2 * max_kl / shs) * step_dir
    for i in range(max_backtracks):
        _assign(params, old + backtrack_ratio ** i * full)
        with torch.no_grad():
            new_loss, new_kl = (reduce(x) for x in objective())
        if float(new_loss) < loss0 and float(new_kl) <= max_kl and math.isfinite(float(new_loss)):
            stats.update(surrogate_after=float(new_loss), kl=float(new_kl), accepted=1)
            return stats
    _assign(params, old)
    return stats


__all__ = ["mean_se", "eval_task_count", "gaussian_log_prob", "gaussian_kl", "GaussianMLPPolicy", "FunctionalPolicy",
           "init_mlp", "mlp_forward", "stack", "make_box_env", "make_horizon_env", "make_mlp_policy", "action_map",
           "Batch", "collect", "dense_rewards",
           "per_task", "per_task_mean", "task_mean", "returns_to_go", "baseline_features", "fit_linear_baseline",
           "per_task_advantages", "task_advantages", "masked_moments", "per_task_dice_weights", "ESTIMATORS",
           "masked_mean", "vpg_loss_fn", "lvc_loss_fn", "dice_loss_fn", "inner_loss_fn", "conjugate_gradient",
           "trpo_step"]
