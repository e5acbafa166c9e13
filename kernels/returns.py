"""Generalized advantage estimation and λ-returns over a ``[T, N]`` rollout, with per-env γ and λ.

GAE (Schulman et al. 2016, "High-dimensional continuous control using generalized advantage
estimation", eq. 16), with ``done_t`` ending the bootstrapping segment after step ``t``::

    V_T     = last_value
    delta_t = r_t + γ · V_{t+1} · (1 − done_t) − V_t
    A_t     = delta_t + γ · λ · (1 − done_t) · A_{t+1}          (A_T = 0)
    G_t     = A_t + V_t                                           (the λ-return, TD(λ) target)

γ and λ are python floats or per-env tensors ``[N]`` (or 0-dim); the op is differentiable
with respect to ``rewards``, ``values``, ``last_value``, γ and λ (meta-gradient RL, Xu et
al. 2018, differentiates the returns w.r.t. γ and λ).

Backward (reverse mode of the scan, itself a scan forward in time). With ``gA``, ``gG`` the
upstream gradients of the advantages and returns and ``p_t = (1 − done_t) · a_t``::

    a_t          = gA_t + gG_t + γ λ p_{t−1}                      (p_{−1} = 0; a_t = dL/d delta_t)
    dL/dr_t      = a_t
    dL/dV_t      = gG_t − a_t + γ p_{t−1}
    dL/dV_T      = γ p_{T−1}                                      (last_value)
    dL/dγ        = Σ_t p_t · (V_{t+1} + λ A_{t+1})
    dL/dλ        = Σ_t p_t · γ · A_{t+1}

Three implementations, side by side:

* :func:`gae_reference` — plain PyTorch loop over t (the oracle, any device and dtype,
  differentiable by autograd to any order);
* Numba (``backend="numba"``, CPU): :func:`_gae_fwd_nb` / :func:`_gae_bwd_nb`, parallel over
  blocks of envs (prange), the t-loop inside, envs innermost (contiguous, vectorizable);
  float32 and float64;
* Triton (``backend="triton"``, CUDA or ``TRITON_INTERPRET=1``): :func:`_gae_fwd_tl` /
  :func:`_gae_bwd_tl`, one program per block of envs looping over t (backwards for the
  forward pass, forwards for the backward pass), the carries in registers; float32. Tested
  under the interpreter, and on CUDA by the ``cuda`` test: correct, not tuned.

The kernel backends wrap forward and backward in :class:`_GAEFunction` (a
``torch.autograd.Function``); the backward runs the SAME backend's backward kernel. It is
``once_differentiable``: for higher-order gradients (differentiating through the backward)
use ``backend="torch"``.

:func:`gae` is the public op (device dispatch, ``backend=`` forcing one); :func:`lambda_returns`
returns only ``G``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from numba import njit, prange
from torch.autograd.function import once_differentiable

from metarl.kernels import _checks
from metarl.kernels._checks import check_tensor
from metarl.kernels._triton import constexpr, lazy_jit
from metarl.kernels.envs._launch import TRITON_OPTIONS, call_numba

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

BACKENDS = ("torch", "numba", "triton")
# Numba: envs per prange block (the inner, contiguous loop)
NUMBA_BLOCK = 256
# Triton: envs per program (one per thread) and warps per program. Not tuned.
TRITON_BLOCK = 128
TRITON_WARPS = 4


# ----------------------------------------------------------------------------- reference
def gae_reference(rewards, values, dones, last_value, gamma, lam):
    """GAE in plain PyTorch (the oracle): ``rewards, values [T, N]``, ``dones [T, N]`` bool,
    ``last_value [N]``, ``gamma, lam`` floats or tensors broadcastable to ``[N]``.
    Returns ``(advantages, returns)``, each ``[T, N]`` in the inputs' dtype. No input checks: the
    oracle computes whatever it is given (NaN and inf propagate); :func:`gae` validates.

    Bytes (float32): read rewards 4·T·N, values 4·T·N, dones T·N, last_value, γ, λ 12·N;
    write advantages 4·T·N, returns 4·T·N: 17·T·N + 12·N in all, the floor of the kernels.
    (The backward reads upstream grads 8·T·N, values 4·T·N, dones T·N, advantages 4·T·N and
    writes grads of rewards, values 8·T·N: 25·T·N + O(N).)
    """
    gamma = torch.as_tensor(gamma, dtype=rewards.dtype, device=rewards.device)
    lam = torch.as_tensor(lam, dtype=rewards.dtype, device=rewards.device)
    not_done = (~dones).to(rewards.dtype)                                   # read T·N
    a = torch.zeros_like(last_value)
    v_next = last_value                                                     # read 4·N
    adv = []
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * v_next * not_done[t] - values[t]      # read 4·N + 4·N
        a = delta + gamma * lam * not_done[t] * a
        adv.append(a)
        v_next = values[t]
    advantages = torch.stack(adv[::-1])                                     # write 4·T·N
    return advantages, advantages + values                                  # write 4·T·N


# ----------------------------------------------------------------------------- numba
@njit(parallel=True, cache=True)
def _gae_fwd_nb(adv, ret, rewards, values, dones, last_value, gamma, lam):
    """GAE (module docstring) into ``adv, ret [T, N]``: prange over blocks of NUMBA_BLOCK envs,
    t from T−1 down to 0, envs innermost. ``A_{t+1}`` and ``V_{t+1}`` are re-read from the row
    just written / read (in cache), so no per-env state is kept."""
    t_len, n = rewards.shape
    for b in prange((n + NUMBA_BLOCK - 1) // NUMBA_BLOCK):
        lo = b * NUMBA_BLOCK
        hi = min(lo + NUMBA_BLOCK, n)
        t = t_len - 1
        for i in range(lo, hi):
            v = values[t, i]
            if dones[t, i]:
                a = rewards[t, i] - v
            else:
                a = rewards[t, i] + gamma[i] * last_value[i] - v
            adv[t, i] = a
            ret[t, i] = a + v
        for t in range(t_len - 2, -1, -1):
            for i in range(lo, hi):
                # every load unconditional and the done case a select, so LLVM vectorizes the loop
                r = rewards[t, i]
                v = values[t, i]
                g = gamma[i]
                a_bootstrap = r + g * values[t + 1, i] - v + g * lam[i] * adv[t + 1, i]
                a = r - v if dones[t, i] else a_bootstrap
                adv[t, i] = a
                ret[t, i] = a + v


@njit(parallel=True, cache=True)
def _gae_bwd_nb(g_rewards, g_values, g_last, g_gamma, g_lam,
                g_adv, g_ret, values, dones, last_value, gamma, lam, adv):
    """The backward scan (module docstring), t from 0 up to T−1. ``g_rewards[t] = a_t`` doubles
    as the carry: ``p_{t−1}`` is re-read from the row before."""
    t_len, n = values.shape
    zero = values.dtype.type(0)   # typed, so float32 stays float32
    for b in prange((n + NUMBA_BLOCK - 1) // NUMBA_BLOCK):
        lo = b * NUMBA_BLOCK
        hi = min(lo + NUMBA_BLOCK, n)
        for i in range(lo, hi):
            a = g_adv[0, i] + g_ret[0, i]
            g_rewards[0, i] = a
            g_values[0, i] = g_ret[0, i] - a
            g_gamma[i] = 0.0
            g_lam[i] = 0.0
        for t in range(1, t_len):
            for i in range(lo, hi):
                g = gamma[i]
                lm = lam[i]
                p = zero if dones[t - 1, i] else g_rewards[t - 1, i]
                v = values[t, i]
                an = adv[t, i]
                g_gamma[i] += p * (v + lm * an)     # step t−1's γ and λ terms
                g_lam[i] += p * g * an
                a = g_adv[t, i] + g_ret[t, i] + g * lm * p
                g_rewards[t, i] = a
                g_values[t, i] = g_ret[t, i] - a + g * p
        for i in range(lo, hi):
            p = zero if dones[t_len - 1, i] else g_rewards[t_len - 1, i]
            g_gamma[i] += p * last_value[i]         # A_T = 0
            g_last[i] = gamma[i] * p


def _forward_numba(adv, ret, rewards, values, dones, last_value, gamma, lam):
    call_numba(_gae_fwd_nb, rewards.shape[1], adv.numpy(), ret.numpy(), rewards.numpy(), values.numpy(),
               dones.numpy(), last_value.numpy(), gamma.numpy(), lam.numpy())


def _backward_numba(grads, g_adv, g_ret, values, dones, last_value, gamma, lam, adv):
    call_numba(_gae_bwd_nb, values.shape[1], *(g.numpy() for g in grads), g_adv.numpy(), g_ret.numpy(),
               values.numpy(), dones.numpy(), last_value.numpy(), gamma.numpy(), lam.numpy(), adv.numpy())


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _gae_fwd_tl(
    # outputs ([T, N], row stride stride_t)
    adv_ptr, ret_ptr,
    # inputs ([T, N] with row stride stride_t; dones as uint8; last_value, gamma, lam [N])
    rewards_ptr, values_ptr, dones_ptr, last_value_ptr, gamma_ptr, lam_ptr,
    # sizes, strides
    T, N, stride_t,
    # meta-parameters
    BLOCK: constexpr,
):
    """GAE (module docstring; Schulman et al. 2016) for BLOCK envs, t from T−1 down to 0,
    ``A_{t+1}`` and ``V_{t+1}`` carried in registers."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    g = tl.load(gamma_ptr + offs, mask=m, other=0.0)
    gl = g * tl.load(lam_ptr + offs, mask=m, other=0.0)
    v_next = tl.load(last_value_ptr + offs, mask=m, other=0.0)
    a = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(0, T):
        row = tl.cast(T - 1 - k, tl.int64) * stride_t
        r = tl.load(rewards_ptr + row + offs, mask=m, other=0.0)
        v = tl.load(values_ptr + row + offs, mask=m, other=0.0)
        d = tl.load(dones_ptr + row + offs, mask=m, other=0) != 0
        a = tl.where(d, r - v, r + g * v_next - v + gl * a)
        tl.store(adv_ptr + row + offs, a, mask=m)
        tl.store(ret_ptr + row + offs, a + v, mask=m)
        v_next = v


@lazy_jit
def _gae_bwd_tl(
    # outputs (g_rewards, g_values [T, N] with row stride stride_t; g_last, g_gamma, g_lam [N])
    g_rewards_ptr, g_values_ptr, g_last_ptr, g_gamma_ptr, g_lam_ptr,
    # inputs (g_adv, g_ret, values, dones (uint8), adv [T, N] with row stride stride_t; the rest [N])
    g_adv_ptr, g_ret_ptr, values_ptr, dones_ptr, last_value_ptr, gamma_ptr, lam_ptr, adv_ptr,
    # sizes, strides
    T, N, stride_t,
    # meta-parameters
    BLOCK: constexpr,
):
    """The backward scan (module docstring) for BLOCK envs, t from 0 up to T−1, the carry
    ``p_{t−1} = (1 − done_{t−1}) a_{t−1}`` and the γ, λ sums in registers."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    g = tl.load(gamma_ptr + offs, mask=m, other=0.0)
    lm = tl.load(lam_ptr + offs, mask=m, other=0.0)
    p = tl.zeros((BLOCK,), dtype=tl.float32)
    g_gamma = tl.zeros((BLOCK,), dtype=tl.float32)
    g_lam = tl.zeros((BLOCK,), dtype=tl.float32)
    for t in range(0, T):
        row = tl.cast(t, tl.int64) * stride_t
        ga = tl.load(g_adv_ptr + row + offs, mask=m, other=0.0)
        gr = tl.load(g_ret_ptr + row + offs, mask=m, other=0.0)
        v = tl.load(values_ptr + row + offs, mask=m, other=0.0)
        an = tl.load(adv_ptr + row + offs, mask=m, other=0.0)
        d = tl.load(dones_ptr + row + offs, mask=m, other=0) != 0
        g_gamma += p * (v + lm * an)          # step t−1's γ and λ terms
        g_lam += p * g * an
        a = ga + gr + g * lm * p
        tl.store(g_rewards_ptr + row + offs, a, mask=m)
        tl.store(g_values_ptr + row + offs, gr - a + g * p, mask=m)
        p = tl.where(d, 0.0, a)
    g_gamma += p * tl.load(last_value_ptr + offs, mask=m, other=0.0)   # A_T = 0
    tl.store(g_gamma_ptr + offs, g_gamma, mask=m)
    tl.store(g_lam_ptr + offs, g_lam, mask=m)
    tl.store(g_last_ptr + offs, g * p, mask=m)


def _forward_triton(adv, ret, rewards, values, dones, last_value, gamma, lam):
    t_len, n = rewards.shape
    _gae_fwd_tl[(-(-n // TRITON_BLOCK),)](
        adv, ret, rewards, values, dones.view(torch.uint8), last_value, gamma, lam,
        t_len, n, rewards.stride(0), BLOCK=TRITON_BLOCK, num_warps=TRITON_WARPS, **TRITON_OPTIONS)


def _backward_triton(grads, g_adv, g_ret, values, dones, last_value, gamma, lam, adv):
    t_len, n = values.shape
    _gae_bwd_tl[(-(-n // TRITON_BLOCK),)](
        *grads, g_adv, g_ret, values, dones.view(torch.uint8), last_value, gamma, lam, adv,
        t_len, n, values.stride(0), BLOCK=TRITON_BLOCK, num_warps=TRITON_WARPS, **TRITON_OPTIONS)


_FORWARD = {"numba": _forward_numba, "triton": _forward_triton}
_BACKWARD = {"numba": _backward_numba, "triton": _backward_triton}


# ----------------------------------------------------------------------------- autograd
class _GAEFunction(torch.autograd.Function):
    """Forward and backward on one kernel backend. Inputs: contiguous-able ``rewards, values
    [T, N]``, ``dones [T, N]`` bool, ``last_value, gamma, lam [N]`` (already expanded)."""

    @staticmethod
    def forward(ctx, rewards, values, dones, last_value, gamma, lam, backend):
        rewards, values, dones, last_value, gamma, lam = (
            t.detach().contiguous() for t in (rewards, values, dones, last_value, gamma, lam))
        adv, ret = torch.empty_like(rewards), torch.empty_like(rewards)
        _FORWARD[backend](adv, ret, rewards, values, dones, last_value, gamma, lam)
        ctx.save_for_backward(values, dones, last_value, gamma, lam, adv)
        ctx.backend = backend
        return adv, ret

    @staticmethod
    @once_differentiable
    def backward(ctx, g_adv, g_ret):
        values, dones, last_value, gamma, lam, adv = ctx.saved_tensors
        g_adv = torch.zeros_like(values) if g_adv is None else g_adv.contiguous()
        g_ret = torch.zeros_like(values) if g_ret is None else g_ret.contiguous()
        grads = (torch.empty_like(values), torch.empty_like(values), torch.empty_like(last_value),
                 torch.empty_like(gamma), torch.empty_like(lam))
        _BACKWARD[ctx.backend](grads, g_adv, g_ret, values, dones, last_value, gamma, lam, adv)
        g_rewards, g_values, g_last, g_gamma, g_lam = grads
        return g_rewards, g_values, None, g_last, g_gamma, g_lam, None


# ----------------------------------------------------------------------------- public op
def _resolve_backend(backend, device: torch.device, dtype: torch.dtype) -> str:
    if backend == "triton" and dtype != torch.float32:
        raise TypeError(f"backend='triton' needs float32 tensors, got {dtype} (use backend='torch')")
    if device.type == "cuda":
        default = "triton" if dtype == torch.float32 else "torch"   # the Triton kernels are float32 only
    else:
        default = "numba" if device.type == "cpu" else "torch"
    return _checks.resolve_backend(backend, device, BACKENDS, default=default)


def _check_coef(name, x, n, dtype, device):
    """``gamma`` / ``lam``: a python number in [0, 1] -> a ``[N]`` tensor; a tensor of shape
    ``()``, ``(1,)`` or ``(N,)`` -> itself (its range is checked by the caller, in one sync)."""
    if isinstance(x, torch.Tensor):
        if x.dtype != dtype:
            raise TypeError(f"{name} must be {dtype} (as rewards), got {x.dtype}")
        if x.device != device:
            raise ValueError(f"{name} must be on {device} (rewards' device), got {x.device}")
        if tuple(x.shape) not in ((), (1,), (n,)):
            raise ValueError(f"{name} must be a float or a tensor of shape ({n},) (or 0-dim), got {tuple(x.shape)}")
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1] or a tensor, got {type(x).__name__}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")
    return torch.full((n,), float(x), dtype=dtype, device=device)


def _validate(rewards, values, dones, last_value, gamma, lam):
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() != 2 or rewards.shape[0] < 1 or rewards.shape[1] < 1:
        raise ValueError(f"rewards must be [T, N] with T >= 1 and N >= 1, got shape {tuple(rewards.shape)}")
    if rewards.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"rewards must be float32 (or float64 on the torch and numba backends), got {rewards.dtype}")
    n, dtype, dev = rewards.shape[1], rewards.dtype, rewards.device
    check_tensor("values", values, rewards.shape, dtype, dev, like="rewards")
    check_tensor("dones", dones, rewards.shape, torch.bool, dev)
    check_tensor("last_value", last_value, (n,), dtype, dev, like="rewards")
    gamma = _check_coef("gamma", gamma, n, dtype, dev)
    lam = _check_coef("lam", lam, n, dtype, dev)
    _check_values(rewards, values, last_value, gamma, lam)
    return gamma, lam


def _check_values(rewards, values, last_value, gamma, lam):
    """The data checks, in one host sync: rewards, values and last_value finite (an inf, like a
    NaN, turns every advantage before it into inf or NaN); gamma and lam in [0, 1] (which
    refuses NaN and ±inf too)."""
    with torch.no_grad():
        flags = [~torch.isfinite(t).all() for t in (rewards, values, last_value)]
        flags += [~((c >= 0) & (c <= 1)).all() for c in (gamma, lam)]   # NaN fails both comparisons
        bad = torch.stack(flags).tolist()
    for name, b, t in zip(("rewards", "values", "last_value"), bad[:3], (rewards, values, last_value)):
        if b:
            found = "NaN" if bool(torch.isnan(t).any()) else "inf"
            raise ValueError(f"{name} contains {found}: {name} must be finite")
    for name, b, c in zip(("gamma", "lam"), bad[3:], (gamma, lam)):
        if b:
            lo, hi = c.detach().min().item(), c.detach().max().item()
            raise ValueError(f"{name} must be in [0, 1], got values in [{lo}, {hi}]")


def gae(rewards, values, dones, last_value, gamma, lam, *, backend=None):
    """Generalized advantage estimation (module docstring) over a ``[T, N]`` rollout.

    ``rewards, values [T, N]`` float32 (``values[t] = V(s_t)``); ``dones [T, N]`` bool (the
    transition at t ends the bootstrapping segment: ``V(s_{t+1})`` is not used and the
    recursion restarts); ``last_value [N] = V(s_T)``; ``gamma, lam``: python floats in [0, 1]
    or per-env tensors ``[N]`` (or 0-dim) in [0, 1], which may require grad. Rewards and values
    must be finite (NaN or ±inf raise ``ValueError``). float64 works on
    the ``"torch"`` and ``"numba"`` backends. ``backend``: None picks ``"triton"`` on CUDA
    (``"torch"`` for float64) and ``"numba"`` on the CPU; ``"torch"``, ``"numba"`` (or
    ``"cpu"``), ``"triton"`` force one.

    Returns ``(advantages, returns)``, each ``[T, N]``; gradients flow to ``rewards``,
    ``values``, ``last_value``, ``gamma`` and ``lam`` (first order on the kernel backends,
    any order on ``"torch"``).

    >>> r = torch.tensor([[1.0], [1.0]]); v = torch.zeros(2, 1); d = torch.tensor([[False], [True]])
    >>> adv, ret = gae(r, v, d, torch.zeros(1), 0.5, 1.0)
    >>> adv[:, 0].tolist()
    [1.5, 1.0]
    """
    gamma, lam = _validate(rewards, values, dones, last_value, gamma, lam)
    backend = _resolve_backend(backend, rewards.device, rewards.dtype)
    return _gae(rewards, values, dones, last_value, gamma, lam, backend)


def _gae(rewards, values, dones, last_value, gamma, lam, backend):
    """:func:`gae` without the checks: ``gamma, lam`` tensors of shape ``()``, ``(1,)`` or ``(N,)``."""
    if backend == "torch":
        return gae_reference(rewards, values, dones, last_value, gamma, lam)
    n = rewards.shape[1]
    return _GAEFunction.apply(rewards, values, dones, last_value, gamma.expand(n), lam.expand(n), backend)


def lambda_returns(rewards, values, dones, last_value, gamma, lam, *, backend=None):
    """The λ-returns ``G = A + V`` of :func:`gae` (the TD(λ) targets), ``[T, N]``."""
    return gae(rewards, values, dones, last_value, gamma, lam, backend=backend)[1]


__all__ = ["gae", "gae_reference", "lambda_returns"]
