"""Recurrent actor-critic (RL^2-style policy): an LSTM cell, a policy head and a value head.

The rollout step (:meth:`RecurrentActorCritic.step`) is one fused kernel
(:func:`metarl.kernels.actor_critic.actor_critic_step`); the training pass
(:meth:`RecurrentActorCritic.evaluate`) is plain PyTorch autograd over the same math.

Both run under ``torch.compile(..., fullgraph=True)`` and ``torch.export`` (the kernels are
``torch.library`` ops there). For the actions eager would sample, draw the noise outside the
compiled function (``step(..., noise=policy.sample_noise((B,), generator=g))``): Dynamo cannot
trace a ``generator=``, and noise drawn inside a compiled step comes from Inductor's random
stream (``torch._inductor.config.fallback_random = True`` makes it torch's).
"""
from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from metarl.kernels._checks import check_device, check_tensor, tracing
from metarl.kernels.actor_critic import (
    HALF_LOG_2PI,
    PRECISIONS,
    PackedActorCritic,
    actor_critic_step_op,
    actor_critic_step_unchecked,
    pack_actor_critic,
    resolve_backend,
)
from metarl.kernels.lstm import lstm_sequence_unchecked
from metarl.nn.lstm import refuse_scripting


class RecurrentActorCritic(nn.Module):
    """LSTM cell + policy head + value head, with a fused sampling step for rollouts.

    Parameters (names as in torch, so weights move to and from plain torch modules):
    ``cell`` (a ``torch.nn.LSTMCell``: ``cell.weight_ih [4H, obs_dim]``, ``cell.weight_hh``,
    ``cell.bias_ih``, ``cell.bias_hh``), ``policy_head`` (``nn.Linear(H, A)`` logits, or
    ``nn.Linear(H, d)`` Gaussian means), ``value_head`` (``nn.Linear(H, 1)``) and, for a
    ``Box`` action space, ``log_std [d]`` (state-independent).

    Args:
        obs_dim: observation size (observations are ``[B, obs_dim]`` float32).
        action_space: ``gymnasium.spaces.Discrete(A)`` (categorical policy, ``start`` 0) or a
            1-D ``gymnasium.spaces.Box`` of shape ``(d,)`` (diagonal Gaussian; actions are not
            clipped to the box's bounds, clip them in the env wrapper as CleanRL does).
        hidden_size: LSTM hidden size H.
        log_std_init: initial value of every ``log_std`` entry (Gaussian only).
        backend: ``None`` (Triton on CUDA, Numba on the CPU), ``"numba"``/``"cpu"``,
            ``"triton"`` or ``"torch"`` (the reference) for :meth:`step`.
        precision: the rollout step's gate GEMM (``"fp32"`` default, ``"tf32"`` or ``"bf16"``;
            see :func:`metarl.kernels.actor_critic.pack_actor_critic`). With ``"bf16"`` every
            rollout backend uses the bf16-rounded LSTM weights (and the Triton kernel bf16
            activations for ``tl.dot``); the parameters themselves, :meth:`evaluate` and its
            gradients stay fp32.
        device, dtype: as for torch modules (float32 only).

    Example::

        >>> import gymnasium as gym, torch
        >>> from metarl.nn.actor_critic import RecurrentActorCritic
        >>> policy = RecurrentActorCritic(4, gym.spaces.Discrete(2), hidden_size=32)
        >>> obs, reset = torch.zeros(8, 4), torch.zeros(8, dtype=torch.bool)
        >>> g = torch.Generator().manual_seed(0)
        >>> action, log_prob, value, state = policy.step(obs, None, reset, generator=g)
        >>> action.shape, log_prob.shape, value.shape, state[0].shape
        (torch.Size([8]), torch.Size([8]), torch.Size([8]), torch.Size([8, 32]))
        >>> log_prob, entropy, value = policy.evaluate(obs[None], action[None], None, reset[None])
        >>> log_prob.shape
        torch.Size([1, 8])
    """

    def __init__(self, obs_dim: int, action_space, hidden_size: int, *, log_std_init: float = 0.0,
                 backend: str | None = None, precision: str = "fp32", device=None, dtype=None):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not isinstance(obs_dim, int) or obs_dim < 1:
            raise ValueError(f"obs_dim must be a positive int, got {obs_dim!r}")
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        if dtype not in (None, torch.float32):
            raise TypeError(f"dtype must be torch.float32, got {dtype}")
        if device is not None:
            check_device(device)   # a clear ValueError for CUDA on a machine without it
        if isinstance(action_space, gym.spaces.Discrete):
            if int(action_space.start) != 0:
                raise ValueError(f"action_space must be Discrete with start 0, got start {action_space.start}")
            self.discrete, num_out = True, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            if len(action_space.shape) != 1:
                raise ValueError(f"action_space must be a 1-D Box (d,), got shape {action_space.shape}")
            self.discrete, num_out = False, int(action_space.shape[0])
        else:
            raise TypeError(f"action_space must be gymnasium.spaces.Discrete or Box, got {type(action_space).__name__}")
        if num_out < 1:
            raise ValueError(f"action_space must have at least one action/dimension, got {action_space}")
        self.obs_dim, self.hidden_size, self.num_outputs = obs_dim, hidden_size, num_out
        self.action_space = action_space
        self.backend = backend
        self.precision = precision
        kw = {"device": device, "dtype": torch.float32}
        self.cell = nn.LSTMCell(obs_dim, hidden_size, **kw)
        self.policy_head = nn.Linear(hidden_size, num_out, **kw)
        self.value_head = nn.Linear(hidden_size, 1, **kw)
        log_std = None if self.discrete else nn.Parameter(torch.full((num_out,), float(log_std_init), **kw))
        self.register_parameter("log_std", log_std)   # None (registered) for a categorical policy
        self._packed: tuple | None = None   # (key, PackedActorCritic)

    __prepare_scriptable__ = refuse_scripting

    # ------------------------------------------------------------------ helpers
    def _params(self) -> tuple:
        # straight from the parameter dicts (nn.Module.__getattr__ is slow on the per-step path)
        c, p, v = (self._modules[name]._parameters for name in ("cell", "policy_head", "value_head"))
        return (c["weight_ih"], c["weight_hh"], c["bias_ih"], c["bias_hh"], p["weight"], p["bias"],
                v["weight"], v["bias"], self._parameters["log_std"])

    def packed(self) -> PackedActorCritic:
        """The kernels' weight layout, re-packed whenever a parameter changed (optimizer step,
        ``load_state_dict``, ``.to``): checked by data pointer and version counter."""
        params = self._params()
        key = (self.precision,) + tuple((p.data_ptr(), p._version) for p in params if p is not None)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, pack_actor_critic(*params, precision=self.precision))
        return self._packed[1]

    @property
    def device(self) -> torch.device:
        return self._modules["cell"]._parameters["weight_ih"].device

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)``, each ``[batch_size, H]``."""
        z = torch.zeros((batch_size, self.hidden_size), device=self.device)
        return z, z.clone()

    def _check_state(self, state, bsz, prefix=""):
        if state is None:
            return self.initial_state(bsz)
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{prefix}state must be None or a tuple (h, c), got {type(state).__name__}")
        h, c = state
        check_tensor(f"{prefix}state[0] (h)", h, (bsz, self.hidden_size), torch.float32, self.device)
        check_tensor(f"{prefix}state[1] (c)", c, (bsz, self.hidden_size), torch.float32, self.device)
        return h, c

    def _check_obs(self, name, obs, lead: tuple):
        if not isinstance(obs, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(obs).__name__}")
        if obs.dim() != len(lead) + 1 or obs.shape[-1] != self.obs_dim or any(n < 1 for n in obs.shape[:-1]):
            want = ", ".join(lead + (str(self.obs_dim),))
            raise ValueError(f"{name} must have shape [{want}], got {tuple(obs.shape)}")
        check_tensor(name, obs, obs.shape, torch.float32, self.device)

    # ------------------------------------------------------------------ rollout
    def sample_noise(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The random numbers of ``shape`` policy steps: ``[*shape, A]`` uniforms in [0, 1)
        (Gumbel-max) or ``[*shape, d]`` standard normals, drawn with ``generator`` on the
        module's device. ``step(..., noise=...)`` and the fused rollout consume them."""
        self._check_generator(generator)
        full = (*shape, self.num_outputs)
        dev = self.device
        return torch.rand(full, generator=generator, device=dev) if self.discrete else \
            torch.randn(full, generator=generator, device=dev)

    def _check_generator(self, generator):
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            if generator.device.type != self.device.type:
                raise ValueError(f"generator is on {generator.device}, but the module is on {self.device}")

    def step(self, obs, state, reset, *, generator: torch.Generator | None = None, noise=None):
        """One fused policy step (no autograd).

        ``obs [B, obs_dim]`` float32; ``state`` = ``(h, c)`` each ``[B, H]``, or ``None`` for
        zeros; ``reset [B]`` bool (or ``None``: no resets) zeroes ``(h, c)`` of those rows before
        the step. The random numbers (``[B, A]`` uniforms for Gumbel-max, or ``[B, d]`` standard
        normals) are drawn with ``generator`` (torch's default generator when ``None``) on the
        module's device and passed to the kernel, so every backend samples the same actions;
        ``noise`` given (``[B, A]`` or ``[B, d]`` float32, e.g. a row of :meth:`sample_noise`)
        is used instead.

        Returns ``(action, log_prob, value, (h', c'))``: ``action`` int64 ``[B]`` (Discrete) or
        float32 ``[B, d]`` (Box), ``log_prob [B]``, ``value [B]``.
        """
        self._check_obs("obs", obs, ("B",))
        bsz, dev = obs.shape[0], self.device
        h, c = self._check_state(state, bsz)
        if reset is None:
            reset = torch.zeros(bsz, dtype=torch.bool, device=dev)
        check_tensor("reset", reset, (bsz,), torch.bool, dev)
        backend = resolve_backend(self.backend, dev)
        if noise is None:
            noise = self.sample_noise((bsz,), generator=generator)
        else:
            check_tensor("noise", noise, (bsz, self.num_outputs), torch.float32, dev)
        # inputs validated above: straight to the op's unchecked body; traced (torch.compile, export, jit.trace),
        # the packing cache's checks cannot be: the kernels' op packs the parameters itself, the reference packs in
        # the graph
        if not tracing():
            out = actor_critic_step_unchecked(obs, h, c, reset, self.packed(), noise, backend)
        elif backend == "torch":
            out = actor_critic_step_unchecked(obs, h, c, reset, pack_actor_critic(*self._params(),
                                                                                  precision=self.precision),
                                              noise, backend)
        else:
            out = actor_critic_step_op(obs, h, c, reset, self._params(), noise, backend, self.precision)
        action, log_prob, value, h, c = out
        return action, log_prob, value, (h, c)

    # ------------------------------------------------------------------ training
    def evaluate(self, obs_seq, actions, state0, reset_seq):
        """Log-probabilities of ``actions``, entropies and values along a ``[T, B]`` sequence,
        with gradients (plain PyTorch autograd; the same math as the fused step).

        ``obs_seq [T, B, obs_dim]``, ``actions [T, B]`` int64 (Discrete) or ``[T, B, d]`` float32
        (Box), ``state0`` = ``(h, c)`` each ``[B, H]`` or ``None``, ``reset_seq [T, B]`` bool
        (``reset_seq[t]`` zeroes the state before step t, as in :meth:`step`).
        Returns ``(log_prob, entropy, value)``, each ``[T, B]``. Discrete actions outside
        ``[0, A)`` raise ``ValueError``; under torch.compile / torch.export, ``RuntimeError`` when
        the graph runs.
        """
        self._check_obs("obs_seq", obs_seq, ("T", "B"))
        t_len, bsz = obs_seq.shape[:2]
        dev = self.device
        h, c = self._check_state(state0, bsz, prefix="state0 ")
        if reset_seq is None:
            reset_seq = torch.zeros((t_len, bsz), dtype=torch.bool, device=dev)
        check_tensor("reset_seq", reset_seq, (t_len, bsz), torch.bool, dev)
        if self.discrete:
            check_tensor("actions", actions, (t_len, bsz), torch.int64, dev)
            if tracing():   # the values are unknown while tracing: checked when the graph runs
                torch._assert_async(((actions >= 0) & (actions < self.num_outputs)).all(),
                                    f"actions must lie in [0, {self.num_outputs})")
            elif actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.num_outputs):
                raise ValueError(f"actions must lie in [0, {self.num_outputs}), got values in "
                                 f"[{int(actions.min())}, {int(actions.max())}]")
        else:
            check_tensor("actions", actions, (t_len, bsz, self.num_outputs), torch.float32, dev)

        hs = self._lstm_sequence(obs_seq, h, c, reset_seq)      # [T, B, H]
        head = self.policy_head(hs)
        value = self.value_head(hs)[..., 0]
        if self.discrete:
            logp = torch.log_softmax(head, dim=-1)
            log_prob = logp.gather(-1, actions[..., None])[..., 0]
            entropy = -(logp.exp() * logp).sum(-1)
        else:
            z = (actions - head) * torch.exp(-self.log_std)
            log_prob = (-0.5 * z * z - self.log_std - HALF_LOG_2PI).sum(-1)
            entropy = (0.5 + HALF_LOG_2PI + self.log_std).sum().expand(t_len, bsz)
        return log_prob, entropy, value

    def _lstm_sequence(self, obs_seq, h, c, reset_seq):
        """The LSTM's outputs ``[T, B, H]`` along the sequence, differentiable: torch's own fused
        LSTM (oneDNN on the CPU, cuDNN on a GPU; forward and backward) over each reset-free
        segment — a new segment starts at every step where some row resets, whose rows of
        (h, c) are zeroed first. Under RL^2 resets come at trial starts only, so a rollout of
        whole trials is one or a few segments. Measured against the former per-step Python
        loop: bench/RESULTS.md (RL^2 section). Traced (torch.compile, export) it is one node, the
        op ``torch.ops.metarl.lstm_sequence`` (the segments are data-dependent)."""
        cell = self.cell
        weights = [(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
        return lstm_sequence_unchecked(obs_seq, h[None], c[None], weights, reset_seq, backend="aten",
                                       train=self.training)[0]

    def extra_repr(self) -> str:
        kind = f"Discrete({self.num_outputs})" if self.discrete else f"Gaussian(d={self.num_outputs})"
        return f"obs_dim={self.obs_dim}, policy={kind}, hidden_size={self.hidden_size}, backend={self.backend!r}"

