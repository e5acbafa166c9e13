"""One iteration of meta-gradient RL (:mod:`metarl.algos.metagrad`) as functions of the parameters θ
and of η = (γ, λ), so that autograd can differentiate the A2C update with respect to η.

The A2C learner:

- :class:`MetaGradActorCritic` — actor and critic MLPs conditioned on η;
- :func:`collect` — a rollout ``[T, N]`` (:class:`Batch`) with the policy
  ``torch.func.functional_call(model, params)``, actions by :func:`sample_actions`, finished
  episodes counted by :class:`EpisodeTracker`;
- :func:`a2c_loss` — the A2C loss with λ-return targets ``G^(γ, λ)``
  (:func:`metarl.kernels.returns.lambda_returns`), γ and λ possibly carrying a graph;
- :func:`rmsprop_step` — ``θ' = θ − α s g / (√ν + ε)`` as a function.

The meta-learner:

- :class:`MetaParams` — η as sigmoids of learned logits, with their Adam;
- :func:`inner_update` — ``θ' = θ + f(τ, θ, η)`` (the loss :func:`inner_loss`), keeping the
  graph from θ' to η when asked;
- :func:`meta_objective` — ``J'(τ', θ', η̄)``; :func:`meta_gradient` — ``∂J'/∂x`` through the
  update, or through the trace built from :func:`update_jacobian` when ``μ > 0``.

:class:`~metarl.algos.metagrad.MetaGradLearner` holds the state (θ, RMSProp's ν, η, the trace,
the env) and calls these in order; the module docstring of :mod:`metarl.algos.metagrad` gives the
equations.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call

from metarl.kernels.returns import lambda_returns

if TYPE_CHECKING:
    from metarl.algos.metagrad import MetaGradConfig

# RMSProp of the inner (A2C) update: square-average decay and epsilon
RMS_ALPHA = 0.99
RMS_EPS = 1e-5
# η enters the network as (logit γ, logit λ) / ETA_SCALE, γ and λ clamped to [ETA_CLAMP, 1 − ETA_CLAMP]
ETA_SCALE = 5.0
ETA_CLAMP = 1e-3


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

    def state_dict(self) -> dict:
        return {"acc": self.acc.cpu(), "recent": list(self.recent),
                "tail": None if self.tail is None else list(self.tail)}

    def load_state_dict(self, sd: dict) -> None:
        self.acc.copy_(sd["acc"])
        self.recent.clear()
        self.recent.extend(sd["recent"])
        self.tail = None if sd["tail"] is None else list(sd["tail"])


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


# ----------------------------------------------------------------------------- loss and update
def a2c_loss(model, params: dict, batch: Batch, gamma, lam, eta_in: torch.Tensor, *, vf_coef: float,
             ent_coef: float, backend: str | None = None) -> tuple[torch.Tensor, dict]:
    """The A2C loss on ``batch`` with λ-return targets ``G^(γ, λ)``: ``gamma, lam`` floats or 0-dim
    tensors (which may carry a graph to η). Returns ``(loss, stats)``."""
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


# ----------------------------------------------------------------------------- η and the meta-gradient
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


def inner_loss(model, params, batch, gamma, lam, eta_in, cfg: MetaGradConfig, backend=None):
    """``L(τ, θ, η)``: A2C with targets ``G^η`` and the entropy bonus."""
    return a2c_loss(model, params, batch, gamma, lam, eta_in, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                    backend=cfg.backend if backend is None else backend)


def inner_update(model, params: dict, sq_avg: dict, batch: Batch, gamma, lam, eta_in, cfg: MetaGradConfig,
                 *, create_graph: bool, lr: float | None = None):
    """One A2C step ``θ' = θ + f(τ, θ, η)``, functional: with ``create_graph`` the returned ``θ'`` keeps
    the graph to ``gamma``/``lam`` (and so to η). ``lr`` defaults to ``cfg.lr``. Returns ``(θ', ν', stats)``."""
    theta = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    loss, stats = inner_loss(model, theta, batch, gamma, lam, eta_in, cfg)
    grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)))
    new, new_sq, _, _ = rmsprop_step(theta, grads, sq_avg, cfg.lr if lr is None else lr, cfg.max_grad_norm)
    return new, new_sq, stats


def meta_objective(model, params, batch, eta_in, cfg: MetaGradConfig, backend=None) -> torch.Tensor:
    """``J'(τ', θ', η̄)``: A2C with the reference targets ``G^η̄``, value weight ``meta_vf_coef``, no entropy."""
    return a2c_loss(model, params, batch, cfg.ref_gamma, cfg.ref_lambda, eta_in, vf_coef=cfg.meta_vf_coef,
                    ent_coef=0.0, backend=cfg.backend if backend is None else backend)[0]


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


__all__ = ["MetaGradActorCritic", "Batch", "EpisodeTracker", "MetaParams", "sample_actions", "collect", "a2c_loss",
           "rmsprop_step", "inner_loss", "inner_update", "meta_objective", "update_jacobian", "meta_gradient"]
