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
reference of the λ-return (the kernels' backward is first order only).

The policy and value are conditioned on η (the paper's variant): a linear embedding of
``(logit γ, logit λ)`` is concatenated to the observation. Rewards of truncated episodes are
bootstrapped with ``γ v(final_obs)`` (so that, too, depends on γ).

Envs: any metarl family with a Discrete action space; each env copy keeps one task from the
family's training split (CartPole-v1: masses, pole length and force ×log-U[0.5, 2]), and the
final evaluation runs one episode on each of ``eval_tasks`` held-out tasks. ``reward_delay = k``
turns the env into a delayed-reward task (:class:`DelayedRewardVecEnv`: rewards summed and paid
every ``k`` steps of an episode and at its end). Fixed ``(γ, λ)`` (plain A2C, the grid of
``bench/metagrad.py``) is ``meta_gamma=False, meta_lambda=False``.

Use it from Python::

    >>> from metarl.algos.metagrad import MetaGradConfig, train
    >>> cfg = MetaGradConfig(total_env_steps=20_000, eval_tasks=20)
    >>> summary = train(cfg, run_dir=None, progress=False)          # doctest: +SKIP
    >>> summary["eval"]["metagrad"], summary["gamma"], summary["lambda"]  # doctest: +SKIP

or the command line: ``metarl train metagrad --reward-delay 10``.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from pathlib import Path

import gymnasium as gym
import torch
from torch import nn
from torch.func import functional_call

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

RETURNS_BACKENDS = ("auto", "torch", "numba", "triton")
# RMSProp of the inner update (A2C's optimiser): square-average decay and epsilon
RMS_ALPHA = 0.99
RMS_EPS = 1e-5
# η enters the network as (logit γ, logit λ) / ETA_SCALE, γ and λ clamped to [ETA_CLAMP, 1 − ETA_CLAMP]
ETA_SCALE = 5.0
ETA_CLAMP = 1e-3
LOG_COLUMNS = ["iteration", "env_steps", "episode_return", "gamma", "lambda", "policy_loss", "value_loss",
               "entropy", "meta_grad_gamma", "meta_grad_lambda", "env_steps_per_s"]


@dataclasses.dataclass
class MetaGradConfig:
    """Meta-gradient A2C (γ and λ learned online). Defaults: CartPole-v1 with varied physics,
    16 envs × 20-step rollouts; a held-out return of ~200-300 after 300k env steps (~10 s on one
    free CPU core)."""

    env: str = "CartPole-v1"
    """Task family: a metarl env id with a Discrete action space (CartPole-v1, Acrobot-v1, ...)."""
    vary_tasks: bool = True
    """Each env copy gets a task from the family's distribution (CartPole: masses, pole length and
    force); False: the default task (gymnasium's physics) everywhere."""
    reward_delay: int = 0
    """Delayed-reward task: rewards are summed and paid every k steps of an episode and at its end
    (0: paid each step)."""
    num_envs: int = 16
    """Env copies stepped together (N)."""
    rollout_steps: int = 20
    """Steps per rollout (T): each batch is [T, N]."""
    total_env_steps: int = 300_000
    """Training budget in env steps (all envs together)."""
    hidden_size: int = 64
    """Units of each of the two hidden layers of the actor and of the critic (tanh MLPs)."""
    eta_embedding: int = 16
    """Size of the linear embedding of η concatenated to the observation (0: not conditioned on η)."""
    lr: float = 7e-4
    """RMSProp learning rate α of the inner (A2C) update."""
    anneal_lr: bool = False
    """Decay α linearly to 0 over training (as some A2C/PPO baselines do). Off: at the budgets of
    ``bench/metagrad.py`` the learner is far from converged and decaying α measured worse."""
    vf_coef: float = 0.5
    """Value-loss weight c_v (inner and meta objective)."""
    ent_coef: float = 0.01
    """Entropy bonus c_H (inner objective only)."""
    max_grad_norm: float = 0.5
    """Global-norm gradient clip of the inner update."""
    gamma: float = 0.99
    """Initial discount γ (meta-learned when meta_gamma; must then lie in (0, 1))."""
    lam: float = 0.9
    """Initial λ of the λ-return (meta-learned when meta_lambda; must then lie in (0, 1))."""
    meta_gamma: bool = True
    """Meta-learn γ (else it stays at gamma)."""
    meta_lambda: bool = True
    """Meta-learn λ (else it stays at lam)."""
    ref_gamma: float = 0.995
    """γ̄ of the meta-objective J'(τ', θ', η̄) (the fixed reference)."""
    ref_lambda: float = 1.0
    """λ̄ of the meta-objective (1: Monte-Carlo returns bootstrapped at the rollout's end)."""
    meta_vf_coef: float = 0.5
    """Value-loss weight in J' (0: J' is the policy-gradient term alone, which measured worse on both
    bench envs). With it γ tends to rise past γ̄ on CartPole: J' bootstraps on the critic trained with γ."""
    meta_lr: float = 0.01
    """Adam learning rate β of the meta-parameters (the logits of γ and λ)."""
    trace_decay: float = 0.0
    """μ of the trace z' = μ z + ∂f/∂η approximating dθ'/dη (0: this update's derivative only)."""
    returns_backend: str = "auto"
    """λ-return kernel: auto (Numba on the CPU, Triton on CUDA), torch (the reference), numba or triton."""
    seed: int = 0
    """Seed of the envs, tasks, network init and action sampling."""
    device: str = "cpu"
    """Torch device of envs and networks."""
    eval_tasks: int = 100
    """Held-out tasks (one episode each) evaluated at the end (and by ``metarl eval``)."""
    checkpoint_minutes: float = 5.0
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def __post_init__(self):
        check_choice(self, "env", tuple(sorted(metarl.envs.ENV_CLASSES)))
        check_positive_ints(self, "num_envs", "rollout_steps", "total_env_steps", "hidden_size", "eval_tasks")
        check_nonnegative_ints(self, "reward_delay", "eta_embedding")
        if self.total_env_steps < self.num_envs * self.rollout_steps:
            raise ValueError(f"total_env_steps ({self.total_env_steps}) must be at least one rollout, "
                             f"num_envs * rollout_steps = {self.num_envs * self.rollout_steps}")
        for name, learned in (("gamma", self.meta_gamma), ("lam", self.meta_lambda)):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
            if learned and not 0.0 < v < 1.0:
                flag = "meta_gamma" if name == "gamma" else "meta_lambda"
                raise ValueError(f"{name} = {v} cannot be meta-learned (its sigmoid logit is infinite): "
                                 f"give a value in (0, 1) or set {flag}=False")
        for name in ("ref_gamma", "ref_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.trace_decay < 1.0:
            raise ValueError(f"trace_decay (mu) must lie in [0, 1), got {self.trace_decay}")
        if not self.lr > 0 or not self.max_grad_norm > 0:
            raise ValueError(f"lr and max_grad_norm must be positive, got {self.lr} and {self.max_grad_norm}")
        for name in ("meta_lr", "vf_coef", "meta_vf_coef", "ent_coef", "checkpoint_minutes"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_choice(self, "returns_backend", RETURNS_BACKENDS)
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


# ----------------------------------------------------------------------------- envs
class DelayedRewardVecEnv(gym.vector.VectorWrapper):
    """Delayed rewards: each env's rewards are summed and paid every ``delay`` steps of its episode
    and at the episode's end (terminated or truncated), 0 in between. An episode's return is
    unchanged; only the credit assignment gets harder. Needs ``autoreset_mode="same_step"``.

    Example::

        >>> import metarl, torch
        >>> env = DelayedRewardVecEnv(metarl.make_vec("CartPole-v1", 2, seed=0, autoreset_mode="same_step"), 3)
        >>> _ = env.reset(seed=0)
        >>> [float(env.step(torch.zeros(2, dtype=torch.int64))[1][0]) for _ in range(3)]
        [0.0, 0.0, 3.0]
    """

    def __init__(self, env, delay: int):
        super().__init__(env)
        if not isinstance(delay, int) or delay < 1:
            raise ValueError(f"delay must be a positive int, got {delay!r}")
        if env.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError("DelayedRewardVecEnv needs an env with autoreset_mode='same_step'")
        self.delay = delay
        self.base = env
        self._acc = torch.zeros(env.num_envs, device=env.device)
        self._t = torch.zeros(env.num_envs, dtype=torch.int64, device=env.device)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        ids = (options or {}).get("env_ids", (options or {}).get("reset_mask"))
        if ids is None:
            self._acc.zero_()
            self._t.zero_()
        else:
            self._acc[ids] = 0.0
            self._t[ids] = 0
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._acc += reward
        self._t += 1
        done = terminated | truncated
        pay = done | (self._t % self.delay == 0)
        out = torch.where(pay, self._acc, torch.zeros_like(self._acc))
        self._acc[pay] = 0.0
        self._t[done] = 0
        return obs, out, terminated, truncated, info

    def state_dict(self) -> dict:
        return {"env": self.base.state_dict(), "acc": self._acc.cpu().clone(), "t": self._t.cpu().clone()}

    def load_state_dict(self, sd: dict) -> None:
        self.base.load_state_dict(sd["env"])
        self._acc.copy_(sd["acc"])
        self._t.copy_(sd["t"])


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


# ----------------------------------------------------------------------------- model
class MetaGradActorCritic(nn.Module):
    """Separate actor and critic MLPs (two tanh layers each) on ``[obs, W_η φ(η)]``, where
    ``φ(η) = (logit γ, logit λ) / 5`` (γ, λ clamped to [0.001, 0.999]) and ``W_η`` is a learned
    linear embedding (the paper's η-conditioned variant; ``eta_embedding=0`` drops it). The buffer
    ``eta`` holds the (γ, λ) the model was last trained with; :meth:`forward` uses it unless given.

    Example::

        >>> import torch
        >>> model = MetaGradActorCritic(4, 2, hidden_size=64)
        >>> logits, value = model(torch.zeros(8, 4), torch.tensor([0.99, 0.9]))
        >>> logits.shape, value.shape
        (torch.Size([8, 2]), torch.Size([8]))
    """

    def __init__(self, obs_dim: int, num_actions: int, hidden_size: int = 64, eta_embedding: int = 16):
        super().__init__()
        self.eta_embed = nn.Linear(2, eta_embedding) if eta_embedding else None
        inp = obs_dim + eta_embedding

        def mlp(out: int, gain: float) -> nn.Sequential:
            layers = [nn.Linear(inp, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size), nn.Tanh(),
                      nn.Linear(hidden_size, out)]
            for layer, g in zip(layers[::2], (math.sqrt(2), math.sqrt(2), gain)):
                nn.init.orthogonal_(layer.weight, g)
                nn.init.zeros_(layer.bias)
            return nn.Sequential(*layers)

        self.actor = mlp(num_actions, 0.01)
        self.critic = mlp(1, 1.0)
        self.register_buffer("eta", torch.tensor([0.99, 0.95]))

    def forward(self, obs: torch.Tensor, eta: torch.Tensor | None = None):
        """``obs [..., obs_dim]``, ``eta = (γ, λ)`` (detached; default the buffer) ->
        ``(logits [..., A], value [...])``."""
        x = obs
        if self.eta_embed is not None:
            eta = (self.eta if eta is None else eta).detach().clamp(ETA_CLAMP, 1 - ETA_CLAMP)
            e = self.eta_embed(torch.logit(eta) / ETA_SCALE)
            x = torch.cat([obs, e.expand(*obs.shape[:-1], e.shape[-1])], -1)
        return self.actor(x), self.critic(x).squeeze(-1)


def make_model(cfg: MetaGradConfig, env) -> MetaGradActorCritic:
    torch.manual_seed(cfg.seed)
    model = MetaGradActorCritic(_base(env).obs_dim, int(env.single_action_space.n), cfg.hidden_size,
                                cfg.eta_embedding).to(cfg.device)
    model.eta.copy_(torch.tensor([cfg.gamma, cfg.lam]))
    return model


class MetaParams:
    """η = (γ, λ): learned components as sigmoids of logits ``x`` (Adam on ``x``), fixed ones constant."""

    def __init__(self, cfg: MetaGradConfig):
        self.cfg = cfg
        self.learned = torch.tensor([cfg.meta_gamma, cfg.meta_lambda])
        init = torch.tensor([cfg.gamma, cfg.lam], dtype=torch.float64)
        logits = torch.where(self.learned, torch.logit(init.clamp(1e-12, 1 - 1e-12)), torch.zeros(2, dtype=init.dtype))
        self.fixed = init.float().to(cfg.device)
        self.logits = logits.float().to(cfg.device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.logits], lr=max(cfg.meta_lr, 1e-12))
        self._learned = self.learned.to(cfg.device)

    def values(self, logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(γ, λ)`` as 0-dim tensors, differentiable w.r.t. ``logits`` (default ``self.logits``) where learned."""
        x = self.logits if logits is None else logits
        eta = torch.where(self._learned, torch.sigmoid(x), self.fixed)
        return eta[0], eta[1]

    def current(self) -> torch.Tensor:
        """``(γ, λ)`` now, detached, ``[2]``."""
        return torch.stack(self.values()).detach()

    def step(self, grad: torch.Tensor) -> None:
        """One Adam step on the learned logits along ``grad = ∂J'/∂x``."""
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = torch.where(self._learned, grad, torch.zeros_like(grad))
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"logits": self.logits.detach().cpu().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        with torch.no_grad():
            self.logits.copy_(sd["logits"])
        self.optimizer.load_state_dict(sd["optimizer"])


# ----------------------------------------------------------------------------- rollouts
@dataclasses.dataclass
class Batch:
    """One rollout, ``T`` steps of ``N`` envs: ``obs [T, N, D]``, ``actions [T, N]`` int64, ``rewards
    [T, N]``, ``dones [T, N]`` bool (terminated or truncated after step t), ``truncated [T, N]`` bool,
    ``final_obs [T, N, D]`` (the last observation of episodes ending at t, zeros elsewhere) and
    ``last_obs [N, D]`` (the observation after the last step, for bootstrapping)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor
    last_obs: torch.Tensor

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name).cpu() for f in dataclasses.fields(self)}

    @classmethod
    def from_state_dict(cls, sd: dict, device) -> Batch:
        return cls(**{f.name: sd[f.name].to(device) for f in dataclasses.fields(cls)})


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Categorical samples by inverse CDF of one uniform per row (reproducible with ``generator``)."""
    u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device)
    cdf = torch.softmax(logits, -1).cumsum(-1)
    return (cdf < u).sum(-1).clamp_max(logits.shape[-1] - 1)


class EpisodeTracker:
    """Running returns per env; the returns of the last ``keep`` finished episodes, and of every
    episode finished since ``tail`` was set to a list (the final-return window)."""

    def __init__(self, n: int, device, keep: int = 100):
        self.acc = torch.zeros(n, device=device)
        self.recent = collections.deque(maxlen=keep)
        self.tail: list | None = None

    def add(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        self.acc += reward
        if bool(done.any()):
            finished = self.acc[done].tolist()
            self.recent.extend(finished)
            if self.tail is not None:
                self.tail.extend(finished)
            self.acc[done] = 0.0

    def mean(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else float("nan")


@torch.no_grad()
def collect(env, model, params: dict, eta: torch.Tensor, obs: torch.Tensor, steps: int,
            generator: torch.Generator, tracker: EpisodeTracker | None = None) -> Batch:
    """Step ``env`` ``steps`` times from ``obs`` with the policy ``functional_call(model, params)``."""
    n, d = obs.shape
    dev = obs.device
    # storage [T, N, ...]
    b = Batch(obs=torch.zeros((steps, n, d), device=dev),
              actions=torch.zeros((steps, n), dtype=torch.int64, device=dev),
              rewards=torch.zeros((steps, n), device=dev),
              dones=torch.zeros((steps, n), dtype=torch.bool, device=dev),
              truncated=torch.zeros((steps, n), dtype=torch.bool, device=dev),
              final_obs=torch.zeros((steps, n, d), device=dev), last_obs=obs)
    for t in range(steps):
        logits, _ = functional_call(model, params, (obs, eta))
        action = sample_actions(logits, generator)
        b.obs[t] = obs
        b.actions[t] = action
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        b.rewards[t] = reward
        b.dones[t] = done
        b.truncated[t] = truncated & ~terminated
        if bool(truncated.any()):
            b.final_obs[t] = torch.where(truncated[:, None], info["final_obs"], 0.0)
        if tracker is not None:
            tracker.add(reward, done)
    b.last_obs = obs.clone()
    return b


# ----------------------------------------------------------------------------- losses and updates
def a2c_loss(model, params: dict, batch: Batch, gamma, lam, eta_in: torch.Tensor, *, vf_coef: float,
             ent_coef: float, backend: str | None = None) -> tuple[torch.Tensor, dict]:
    """The A2C loss on ``batch`` with λ-return targets ``G^(γ, λ)``: ``gamma, lam`` floats or 0-dim
    tensors (which may carry a graph to η). Returns ``(loss, stats)``."""
    t_len, n, d = batch.obs.shape
    logits, values = functional_call(model, params, (batch.obs, eta_in))
    _, last_value = functional_call(model, params, (batch.last_obs, eta_in))
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, batch.actions[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    # advantage: λ-returns from the detached values; truncated episodes bootstrap on γ v(final_obs)
    rewards = batch.rewards
    if bool(batch.truncated.any()):
        idx = batch.truncated.nonzero(as_tuple=True)
        _, v_final = functional_call(model, params, (batch.final_obs[idx], eta_in))
        boot = torch.zeros_like(rewards).index_put(idx, v_final.detach())
        rewards = rewards + gamma * boot
    g = lambda_returns(rewards, values.detach(), batch.dones, last_value.detach(), gamma, lam, backend=backend)
    adv = g - values.detach()
    policy_loss = -(adv * logp).mean()
    value_loss = 0.5 * ((g - values) ** 2).mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return loss, {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "entropy": entropy.detach()}


def inner_loss(model, params, batch, gamma, lam, eta_in, cfg: MetaGradConfig, backend=None):
    """``L(τ, θ, η)``: A2C with targets ``G^η`` and the entropy bonus."""
    return a2c_loss(model, params, batch, gamma, lam, eta_in, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                    backend=cfg.backend if backend is None else backend)


def meta_objective(model, params, batch, eta_in, cfg: MetaGradConfig, backend=None) -> torch.Tensor:
    """``J'(τ', θ', η̄)``: A2C with the reference targets ``G^η̄``, value weight ``meta_vf_coef``, no entropy."""
    return a2c_loss(model, params, batch, cfg.ref_gamma, cfg.ref_lambda, eta_in, vf_coef=cfg.meta_vf_coef,
                    ent_coef=0.0,
                    backend=cfg.backend if backend is None else backend)[0]


def rmsprop_step(params: dict, grads: dict, sq_avg: dict, lr: float, max_grad_norm: float):
    """``θ' = θ − lr s g / (√ν + ε)`` with ``ν ← 0.99 ν + 0.01 g²`` and the clip factor ``s``; ``s`` and
    ``ν`` are computed from detached gradients (held constant w.r.t. η). Returns ``(θ', ν', s, denom)``."""
    with torch.no_grad():
        norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads.values()))
        scale = torch.clamp(max_grad_norm / (norm + 1e-6), max=1.0)
        new_sq = {k: RMS_ALPHA * sq_avg[k] + (1 - RMS_ALPHA) * (scale * grads[k].detach()) ** 2 for k in grads}
        denom = {k: new_sq[k].sqrt() + RMS_EPS for k in grads}
    new = {k: params[k] - lr * scale * grads[k] / denom[k] for k in params}
    return new, new_sq, scale, denom


def inner_update(model, params: dict, sq_avg: dict, batch: Batch, gamma, lam, eta_in, cfg: MetaGradConfig,
                 *, create_graph: bool, lr: float | None = None):
    """One A2C step ``θ' = θ + f(τ, θ, η)``, functional: with ``create_graph`` the returned ``θ'`` keeps
    the graph to ``gamma``/``lam`` (and so to η). ``lr`` defaults to ``cfg.lr``. Returns ``(θ', ν', stats)``."""
    theta = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    loss, stats = inner_loss(model, theta, batch, gamma, lam, eta_in, cfg)
    grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)))
    new, new_sq, _, _ = rmsprop_step(theta, grads, sq_avg, cfg.lr if lr is None else lr, cfg.max_grad_norm)
    return new, new_sq, stats


def update_jacobian(model, params: dict, sq_avg: dict, batch: Batch, meta: MetaParams, eta_in,
                    cfg: MetaGradConfig, lr: float | None = None) -> dict:
    """``∂f(τ, θ, η)/∂x`` for each learned logit ``x_k``, ``{name: [*shape, 2]}``: by the symmetry of
    second derivatives, ``∂(∇_θ L)/∂x_k = ∇_θ(∂L/∂x_k)``, two second-order passes through the torch
    reference of the λ-return (differentiable to any order). The trace's new term."""
    lr = cfg.lr if lr is None else lr
    theta = {k: v.detach().requires_grad_() for k, v in params.items()}
    x = meta.logits.detach().requires_grad_()
    gamma, lam = meta.values(x)
    loss, _ = inner_loss(model, theta, batch, gamma, lam, eta_in, cfg, backend="torch")
    grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
    _, _, scale, denom = rmsprop_step(theta, dict(zip(theta, grads)), sq_avg, lr, cfg.max_grad_norm)
    (dl_dx,) = torch.autograd.grad(loss, x, create_graph=True)
    cols = []
    for k in range(2):
        if not bool(meta.learned[k]) or not dl_dx[k].requires_grad:
            cols.append({n: torch.zeros_like(v) for n, v in theta.items()})
            continue
        rows = torch.autograd.grad(dl_dx[k], list(theta.values()), retain_graph=True, allow_unused=True)
        cols.append({n: (torch.zeros_like(theta[n]) if r is None else -lr * scale * r / denom[n])
                     for n, r in zip(theta, rows)})
    return {n: torch.stack([cols[0][n], cols[1][n]], -1).detach() for n in theta}


def meta_gradient(model, new_params: dict, next_batch: Batch, meta: MetaParams, eta_in, cfg: MetaGradConfig,
                  trace: dict | None = None) -> torch.Tensor:
    """``∂J'(τ', θ', η̄)/∂x`` ``[2]`` (zeros for fixed components), ``τ' = next_batch``.

    ``trace`` None: ``new_params`` (θ' from :func:`inner_update` with ``create_graph=True``) carry the
    graph to ``meta.logits`` and the chain ``∂J'/∂θ' · dθ'/dη`` is autograd's (through the returns
    kernel's first-order backward). ``trace`` a dict ``{name: [*shape, 2]}`` (:func:`update_jacobian`,
    accumulated as ``z' = μ z + ∂f/∂η``): the gradient is ``(∂J'/∂θ') · z``."""
    if trace is None:
        j = meta_objective(model, new_params, next_batch, eta_in, cfg)
        grad = None
        if j.requires_grad and meta.logits.requires_grad:
            (grad,) = torch.autograd.grad(j, meta.logits, allow_unused=True)
        return torch.zeros_like(meta.logits.detach()) if grad is None else grad.detach()
    theta = {k: v.detach().requires_grad_() for k, v in new_params.items()}
    j = meta_objective(model, theta, next_batch, eta_in, cfg)
    dj = dict(zip(theta, torch.autograd.grad(j, list(theta.values()))))
    return sum((dj[k][..., None] * trace[k]).reshape(-1, 2).sum(0) for k in dj).detach()


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


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std() / math.sqrt(max(1, x.numel()))) if x.numel() > 1 else 0.0


def report(model: MetaGradActorCritic, cfg: MetaGradConfig, num_tasks: int | None = None, seed: int = 12345) -> dict:
    """The trained policy and uniformly random actions on the same held-out tasks, ``{name: (mean, se)}``,
    with the final ``gamma`` and ``lambda``."""
    return {"metagrad": mean_se(evaluate(model, cfg, num_tasks, seed)),
            "random": mean_se(evaluate(None, cfg, num_tasks, seed)),
            "gamma": float(model.eta[0]), "lambda": float(model.eta[1])}


def load_model(run_dir) -> tuple[MetaGradActorCritic, MetaGradConfig]:
    """The trained model (its ``eta`` buffer holds the final γ, λ) and config of a run directory."""
    ck = checkpoint.load(Path(run_dir) / CHECKPOINT, kind="metagrad")
    cfg = MetaGradConfig(**ck["config"])
    model = make_model(cfg, make_env(cfg, 1))
    model.load_state_dict(ck["model"])
    return model, cfg


# ----------------------------------------------------------------------------- training
def train(cfg: MetaGradConfig, run_dir=None, *, resume: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Train meta-gradient A2C; returns a summary dict: ``iterations``, ``env_steps``, ``train_seconds``,
    ``env_steps_per_s``, ``interrupted``, ``gamma``, ``lambda`` (final), ``train_return`` (mean of the last
    100 training episodes), ``final_return`` (mean return of the training episodes that ended in the last
    10% of iterations), ``history`` (``[env_steps, γ, λ]`` per iteration) and, after a complete run,
    ``eval`` (:func:`report`); ``model`` (not written to JSON).

    ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv`` (one row per iteration,
    with ``env_steps``, ``gamma`` and ``lambda``), TensorBoard events when ``tensorboard`` is installed,
    ``checkpoint.pt`` (atomic; every ``checkpoint_minutes``, at the end and on Ctrl-C) and
    ``summary.json``. ``resume=True`` continues from ``run_dir``'s checkpoint exactly as an
    uninterrupted run would (same machine and backend). ``max_iterations`` stops early (tests).
    """
    from metarl.algos.rl2 import _progress, _tensorboard

    run_dir = Path(run_dir) if run_dir is not None else None
    env = make_env(cfg)
    train_tasks, _ = task_split(cfg, env, cfg.num_envs, 1, seed=cfg.seed)
    _base(env).set_tasks(train_tasks)
    model = make_model(cfg, env)
    meta = MetaParams(cfg)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    sq_avg = {k: torch.zeros_like(v) for k, v in params.items()}
    trace = {k: torch.zeros(*v.shape, 2, device=v.device) for k, v in params.items()} if cfg.trace_decay > 0 else None
    g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    tracker = EpisodeTracker(cfg.num_envs, cfg.device)
    per_update = cfg.rollout_steps * cfg.num_envs
    iterations = max(1, cfg.total_env_steps // per_update - 1)   # + τ_0: the budget in all
    tail_start = iterations - max(1, iterations // 10)   # final return: episodes of the last 10% of iterations
    it, batch, history = 0, None, []
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            ck = load_for_resume(run_dir, "metagrad", cfg)
            params = {k: v.to(cfg.device) for k, v in ck["params"].items()}
            sq_avg = {k: v.to(cfg.device) for k, v in ck["sq_avg"].items()}
            trace = None if ck["trace"] is None else {k: v.to(cfg.device) for k, v in ck["trace"].items()}
            meta.load_state_dict(ck["meta"])
            env.load_state_dict(ck["env"])
            g.set_state(ck["generator"])
            tracker.acc.copy_(ck["episode_acc"])
            tracker.recent.extend(ck["recent"])
            tracker.tail = None if ck["tail"] is None else list(ck["tail"])
            it, history = ck["iteration"], [list(h) for h in ck["history"]]
            batch = Batch.from_state_dict(ck["batch"], cfg.device)
        (run_dir / CONFIG_JSON).write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    writer = _tensorboard(run_dir)
    log = ProgressLog(run_dir, LOG_COLUMNS, keep_through=it if resume else None)
    bar = _progress(progress, iterations, it)
    if batch is None:   # τ_0, collected with θ_0
        obs, _ = env.reset(seed=cfg.seed)
        batch = collect(env, model, params, meta.current(), obs, cfg.rollout_steps, g, tracker)

    def snapshot():
        with torch.no_grad():
            model.eta.copy_(meta.current())
            for k, p in model.named_parameters():
                p.copy_(params[k])
        return {"config": dataclasses.asdict(cfg), "iteration": it, "model": model.state_dict(),
                "params": {k: v.cpu() for k, v in params.items()}, "sq_avg": {k: v.cpu() for k, v in sq_avg.items()},
                "trace": None if trace is None else {k: v.cpu() for k, v in trace.items()},
                "meta": meta.state_dict(), "env": env.state_dict(), "generator": g.get_state(),
                "episode_acc": tracker.acc.cpu(), "recent": list(tracker.recent), "history": history,
                "tail": None if tracker.tail is None else list(tracker.tail),
                "batch": batch.state_dict()}

    start = last_ckpt = time.perf_counter()
    steps_done = 0
    interrupted = False
    try:
        while it < iterations and (max_iterations is None or it < max_iterations):
            if it == tail_start:
                tracker.tail = []
            eta_in = meta.current()
            gamma, lam = meta.values()
            through = cfg.learns_eta and trace is None     # μ = 0: dθ'/dη by autograd through the update
            lr = cfg.lr * (1.0 - it / iterations) if cfg.anneal_lr else cfg.lr
            # inner update on τ (keeping the graph to η when the meta-gradient goes through it)
            new, new_sq, stats = inner_update(model, params, sq_avg, batch, gamma if through else gamma.detach(),
                                              lam if through else lam.detach(), eta_in, cfg, create_graph=through,
                                              lr=lr)
            if cfg.learns_eta and trace is not None:      # μ > 0: the trace z' = μ z + ∂f/∂η
                jac = update_jacobian(model, params, sq_avg, batch, meta, eta_in, cfg, lr)
                trace = {k: cfg.trace_decay * trace[k] + jac[k] for k in jac}
            new_detached = {k: v.detach() for k, v in new.items()}
            # collect τ' with θ'
            next_batch = collect(env, model, new_detached, eta_in, batch.last_obs, cfg.rollout_steps, g, tracker)
            # meta update on J'(τ', θ', η̄)
            grad = torch.zeros(2)
            if cfg.learns_eta:
                grad = meta_gradient(model, new, next_batch, meta, eta_in, cfg, trace)
                meta.step(grad)
            params, sq_avg, batch = new_detached, new_sq, next_batch
            # log
            it += 1
            steps_done += per_update
            rate = steps_done / (time.perf_counter() - start)
            eta_now = meta.current().tolist()
            history.append([it * per_update, *eta_now])
            row = [it, (it + 1) * per_update, tracker.mean(), *eta_now, *(float(v) for v in stats.values()),
                   *grad.tolist(), rate]
            log.write(row)
            if writer is not None:
                for name, val in zip(LOG_COLUMNS[2:], row[2:]):
                    writer.add_scalar(name, val, row[1])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(episode_return=f"{row[2]:.1f}", gamma=f"{eta_now[0]:.4f}", lam=f"{eta_now[1]:.3f}")
            if run_dir is not None and time.perf_counter() - last_ckpt > 60 * cfg.checkpoint_minutes:
                checkpoint.save(run_dir / CHECKPOINT, snapshot(), kind="metagrad")
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        snap = snapshot()   # also copies θ and η into ``model``
        if run_dir is not None:
            checkpoint.save(run_dir / CHECKPOINT, snap, kind="metagrad")
        if bar is not None:
            bar.close()
        log.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    gamma_f, lam_f = meta.current().tolist()
    summary = {"iterations": it, "env_steps": (it + 1) * per_update, "train_seconds": seconds,
               "env_steps_per_s": steps_done / max(1e-9, seconds), "interrupted": interrupted,
               "gamma": gamma_f, "lambda": lam_f, "train_return": tracker.mean(),
               "final_return": sum(tracker.tail) / len(tracker.tail) if tracker.tail else float("nan"),
               "history": history}
    if not interrupted and it >= iterations:
        summary["eval"] = report(model, cfg)
    if run_dir is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    summary["model"] = model
    return summary


__all__ = ["MetaGradConfig", "MetaGradActorCritic", "DelayedRewardVecEnv", "MetaParams", "Batch", "train",
           "evaluate", "report", "load_model", "make_env", "make_model", "collect", "a2c_loss", "inner_update",
           "meta_objective", "meta_gradient", "update_jacobian", "rmsprop_step", "sample_actions"]
