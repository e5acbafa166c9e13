"""The fused recurrent actor-critic step: LSTM cell + policy head + value head + sampling.

One step of the recurrent policy every RL^2-style learner runs at each env step
(``torch.nn.LSTMCell`` gate order i, f, g, o, as in torch)::

    h, c       = 0 where reset                       (episode / trial starts)
    gates      = [x, h] @ [W_ih, W_hh]^T + b_ih + b_hh          [B, 4H]
    i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of the four H-column blocks
    c'         = f * c + i * g;     h' = o * tanh(c')
    out        = h' @ W_head^T + b_head      (W_head = [W_pi; w_v]: policy rows, then the value row)
    value      = out[:, A]
    discrete:  logits = out[:, :A];  action = argmax(logits + G), G = -log(-log(u))   (Gumbel-max,
               Gumbel 1954; Maddison et al. 2014), u ~ U[0, 1) given;  log_prob = log_softmax(logits)[action]
    gaussian:  mean = out[:, :d];  action = mean + exp(log_std) * eps, eps ~ N(0, 1) given;
               log_prob = sum_k (-eps_k^2 / 2 - log_std_k - log(2 pi) / 2)

The random numbers (``noise``: uniforms ``[B, A]`` or normals ``[B, d]``) are drawn by the
caller (``metarl.nn.RecurrentActorCritic.step`` draws them with a ``torch.Generator``) and
passed to every backend, so the reference and the kernels sample the same actions.

Three implementations, side by side:

* :func:`actor_critic_step_reference` — plain PyTorch, the oracle (any device);
* CPU (``backend="numba"``): :func:`_pack_nb` writes ``xh = [x, h·(1 − reset)]`` in one pass,
  one ``torch.addmm`` GEMM (MKL) computes all gates against the pre-packed, contiguous
  ``W = [W_ih, W_hh]`` with the pre-summed bias, then ONE fused Numba pass per row does the
  gate nonlinearities, the cell update, both heads' GEMVs and the sampling
  (:func:`_step_discrete_nb` / :func:`_step_gaussian_nb`). Its sigmoid/tanh are a rational
  minimax tanh (Eigen's ``generic_fast_tanh_float``, |error| <= 4e-7) so LLVM vectorizes the
  gate loop without SVML, with the fractions combined so each unit divides twice. Its sigmoid
  is accurate in absolute terms only (<= 2e-7: sigmoid(-30) comes out ~1e-7, not 1e-13), so a
  saturated forget gate leaves up to ~2e-7·|c| in c' (6e-6 at |c| = 40; torch's own float32
  rounding there is ~5e-6);
* Triton (``backend="triton"``, CUDA or ``TRITON_INTERPRET=1``), two kernels: :func:`_step_tl`, one
  program per block of rows, looping over blocks of hidden units (small batches, and the fused
  rollout calls it as a device function); and for large batches on a GPU :func:`_step_split_tl`
  / :func:`_step_split_cat_tl`, one program per block of rows x block of hidden units (each reads
  only its slice of the weights; the ``_cat`` twin computes the four gates in one ``tl.dot`` on
  gate-interleaved weights), the heads' partial products summed by the last program of each row
  block. All:
  ``tl.dot`` for the gate GEMM (IEEE fp32 by default; TF32, or bf16 weights with fp32
  accumulation, by ``pack_actor_critic``'s ``precision``), gates + cell + heads (``tl.dot``) +
  sampling fused. Kernel and tiles per precision tuned on an H200 (:data:`CUDA_TILES`); tested
  there against the reference (tests/test_nn_cuda.py).

:func:`actor_critic_step` is the one public op; it takes the weights packed once by
:func:`pack_actor_critic` (re-pack after the weights change; ``RecurrentActorCritic`` does
this by itself) and dispatches on the device, ``backend=`` forcing one.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np
import torch
from numba import njit, prange

from metarl.kernels import _checks
from metarl.kernels._checks import check_tensor
from metarl.kernels._triton import constexpr, lazy_jit, triton_interpret

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

BACKENDS = ("torch", "numba", "triton")
PRECISIONS = ("fp32", "tf32", "bf16")
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Numba threads for the pointwise pass only from this many rows x hidden units up (see _launch_numba)
PARALLEL_MIN_WORK = 1 << 17


# ----------------------------------------------------------------------------- reference
def actor_critic_step_reference(obs, h, c, reset, w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v, noise,
                                log_std=None):
    """One fused step in plain PyTorch (the oracle). Shapes: ``obs [B, X]``, ``h, c [B, H]``,
    ``reset [B]`` bool, ``w_ih [4H, X]``, ``w_hh [4H, H]``, ``b_* [4H]``, ``w_pi [A, H]`` (or
    ``[d, H]``), ``b_pi [A]``, ``w_v [1, H]``, ``b_v [1]``, ``noise [B, A]`` uniforms (discrete,
    ``log_std is None``) or ``[B, d]`` standard normals (Gaussian, ``log_std [d]``).

    Returns ``(action [B] int64 or [B, d] float32, log_prob [B], value [B], h' [B, H], c' [B, H])``.

    Cost per step (float32, 4 bytes; A = actions or d):
    FLOPs  2·B·(X+H)·4H (gate GEMM) + ~10·B·H (cell) + 2·B·H·(A+1) (heads) + ~10·B·A (sampling);
    bytes  read weights 4·(4H·(X+H) + 4H + (A+1)·(H+1)) once, obs 4·B·X, h and c 8·B·H,
           reset B, noise 4·B·A; write h', c' 8·B·H, action 8·B (or 4·B·d), log_prob and value 8·B.
    The GEMM dominates: the floor of ``bench/actor_critic.py`` is its FLOPs over the fp32 GEMM rate.
    """
    keep = (~reset).to(h.dtype)[:, None]
    h = h * keep                                                 # read 4·B·H, write 4·B·H
    c = c * keep                                                 # read 4·B·H, write 4·B·H
    gates = obs @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh          # 2·B·(X+H)·4H FLOPs; write 16·B·H
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)     # read 16·B·H, write 4·B·H
    h_new = torch.sigmoid(o) * torch.tanh(c_new)                        # write 4·B·H
    head = h_new @ w_pi.t() + b_pi                               # 2·B·H·A FLOPs
    value = (h_new @ w_v.t() + b_v)[:, 0]                        # 2·B·H FLOPs
    if log_std is None:                                          # categorical, Gumbel-max
        gumbel = -torch.log(-torch.log(noise))                   # read 4·B·A
        action = torch.argmax(head + gumbel, dim=1)              # write 8·B
        log_prob = torch.log_softmax(head, dim=1).gather(1, action[:, None])[:, 0]
    else:                                                        # diagonal Gaussian
        action = head + torch.exp(log_std) * noise               # read 4·B·d, write 4·B·d
        log_prob = (-0.5 * noise * noise - log_std - HALF_LOG_2PI).sum(dim=1)
    return action, log_prob, value, h_new, c_new


# ----------------------------------------------------------------------------- packed weights
class PackedActorCritic(NamedTuple):
    """Weights laid out once for the kernels (see :func:`pack_actor_critic`)."""

    w: torch.Tensor          # [4H, X + H]  [W_ih, W_hh], contiguous
    bias: torch.Tensor       # [4H]         b_ih + b_hh
    w_head: torch.Tensor     # [A + 1, H]   [W_pi; w_v], contiguous
    b_head: torch.Tensor     # [A + 1]      [b_pi; b_v]
    log_std: torch.Tensor | None   # [d] (Gaussian) or None (categorical)
    std: torch.Tensor | None       # [d] exp(log_std) or None
    params: tuple            # the unpacked tensors (w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v, log_std)
    precision: str = "fp32"  # the gate GEMM's arithmetic in the Triton kernel (PRECISIONS)
    w_dot: torch.Tensor | None = None   # [4H, X + H] the copy of w that tl.dot reads (bf16 for "bf16")
    cache: dict | None = None  # layouts derived from w_dot for the Triton kernels (see _interleave_gates)

    @property
    def obs_dim(self) -> int:
        return self.w.shape[1] - self.hidden_size

    @property
    def hidden_size(self) -> int:
        return self.w.shape[0] // 4

    @property
    def num_outputs(self) -> int:
        """Actions (categorical) or action dimensions (Gaussian)."""
        return self.w_head.shape[0] - 1

    @property
    def discrete(self) -> bool:
        return self.log_std is None


def pack_actor_critic(w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v, log_std=None, *,
                      precision: str = "fp32") -> PackedActorCritic:
    """Pack torch-layout weights (``torch.nn.LSTMCell`` names and shapes, ``nn.Linear`` heads)
    for :func:`actor_critic_step`. ``log_std`` given means a Gaussian policy head.

    ``precision`` (one of :data:`PRECISIONS`) is the gate GEMM's arithmetic in the Triton kernel:
    ``"fp32"`` exact fp32 products (the default, what every backend computes); ``"tf32"`` the
    tensor cores' fp32 mode (10-bit mantissa products, fp32 accumulation); ``"bf16"`` weights
    stored in bfloat16 and ``[x, h]`` rounded to bfloat16 for ``tl.dot``, fp32 accumulation and
    fp32 state. With ``"bf16"`` the fp32 copy ``w`` holds the bf16-rounded weights too, so the
    CPU backends and the reference use the same weights (their activations stay fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    params = (w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v, log_std)
    for name, t in zip(("w_ih", "w_hh", "b_ih", "b_hh", "w_pi", "b_pi", "w_v", "b_v", "log_std"), params):
        if t is None and name == "log_std":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {t.dtype}")
        if t.device != w_ih.device:
            raise ValueError(f"{name} is on {t.device}, but w_ih is on {w_ih.device}")
    four_h, x = w_ih.shape if w_ih.dim() == 2 else (None, None)
    if four_h is None or four_h % 4 or four_h == 0:
        raise ValueError(f"w_ih must be [4H, obs_dim], got {tuple(w_ih.shape)}")
    hid = four_h // 4
    a = w_pi.shape[0] if w_pi.dim() == 2 else None
    expected = {"w_hh": (four_h, hid), "b_ih": (four_h,), "b_hh": (four_h,), "w_pi": (a, hid), "b_pi": (a,),
                "w_v": (1, hid), "b_v": (1,)}
    for name, t in zip(("w_hh", "b_ih", "b_hh", "w_pi", "b_pi", "w_v", "b_v"), params[1:8]):
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(t.shape)}")
    if log_std is not None and tuple(log_std.shape) != (a,):
        raise ValueError(f"log_std must have shape ({a},), got {tuple(log_std.shape)}")
    # detached rather than under no_grad, which torch.export would record as a region of its own
    params = tuple(p if p is None else p.detach() for p in params)
    w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v, log_std = params
    w = torch.cat((w_ih, w_hh), dim=1).contiguous()
    w_dot = w.to(torch.bfloat16) if precision == "bf16" else w
    if precision == "bf16":
        w = w_dot.float()
    bias = (b_ih + b_hh).contiguous()
    w_head = torch.cat((w_pi, w_v), dim=0).contiguous()
    b_head = torch.cat((b_pi, b_v)).contiguous()
    ls = None if log_std is None else log_std.contiguous().clone()
    std = None if ls is None else ls.exp()
    if precision == "bf16":   # the reference (backend "torch") uses the rounded weights too
        params = (w[:, :x], w[:, x:]) + params[2:]
    return PackedActorCritic(w, bias, w_head, b_head, ls, std, params, precision, w_dot, {})


# ----------------------------------------------------------------------------- numba
# reassociation lets LLVM vectorize the head dot products; no 'nnan'/'ninf' (log(0) = -inf is used)
_FM = {"reassoc", "contract", "nsz", "arcp"}
_F0, _F05, _F2 = np.float32(0.0), np.float32(0.5), np.float32(2.0)
_TANH_CLAMP = np.float32(7.90531110763549805)
_A1, _A3, _A5, _A7 = (np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04),
                      np.float32(1.48572235717979e-05), np.float32(5.12229709037114e-08))
_A9, _A11, _A13 = np.float32(-8.60467152213735e-11), np.float32(2.00018790482477e-13), np.float32(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = (np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03),
                      np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06))
_HALF_LOG_2PI = np.float32(HALF_LOG_2PI)


@njit(inline="always", cache=True, fastmath=_FM)
def _tanh_pq_nb(x):
    """tanh(x) = p / q for float32 x, branch-free: Eigen's ``generic_fast_tanh_float``, a 13/6
    rational minimax on [-7.9, 7.9] (|error| <= 4e-7 against ``torch.tanh``). The fraction is
    returned unevaluated so that the cell update divides twice per unit instead of five times
    (q lies in [0.0049, 1], so products of q's stay far from underflow)."""
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return x * p, q


@njit(parallel=True, cache=True)
def _pack_nb(xh, obs, h, reset):
    """``xh[b] = [obs[b], 0 if reset[b] else h[b]]`` (the GEMM's left operand, one pass)."""
    nx = obs.shape[1]
    hid = h.shape[1]
    for b in prange(obs.shape[0]):
        for k in range(nx):
            xh[b, k] = obs[b, k]
        if reset[b]:
            for j in range(hid):
                xh[b, nx + j] = _F0
        else:
            for j in range(hid):
                xh[b, nx + j] = h[b, j]


@njit(inline="always", cache=True, fastmath=_FM)
def _cell_heads_row_nb(b, gates, c, reset, w_head, b_head, h_out, c_out, head):
    """Gates -> (h', c') of row ``b``, then ``head[b] = h' @ w_head^T + b_head``."""
    hid = h_out.shape[1]
    r = reset[b]
    for j in range(hid):
        # sigmoid(z) = (1 + tanh(z/2)) / 2 = (q + p) / 2q with tanh(z/2) = p/q, so
        #   c' = sig(f) c + sig(i) tanh(g) = [(qf+pf) c qi qg + (qi+pi) pg qf] / (2 qf qi qg)
        #   h' = sig(o) tanh(c')            = (qo+po) pc / (2 qo qc)
        pi, qi = _tanh_pq_nb(_F05 * gates[b, j])
        pf, qf = _tanh_pq_nb(_F05 * gates[b, hid + j])
        pg, qg = _tanh_pq_nb(gates[b, 2 * hid + j])
        po, qo = _tanh_pq_nb(_F05 * gates[b, 3 * hid + j])
        cp = _F0 if r else c[b, j]
        qiqg = qi * qg
        cn = ((qf + pf) * cp * qiqg + (qi + pi) * pg * qf) / (_F2 * qf * qiqg)
        pc, qc = _tanh_pq_nb(cn)
        c_out[b, j] = cn
        h_out[b, j] = (qo + po) * pc / (_F2 * qo * qc)
    for k in range(w_head.shape[0]):
        acc = _F0
        for j in range(hid):
            acc += w_head[k, j] * h_out[b, j]
        head[b, k] = acc + b_head[k]


@njit(inline="always", cache=True, fastmath=_FM)
def _discrete_row_nb(b, gates, c, reset, w_head, b_head, u, action, log_prob, value, h_out, c_out, head):
    _cell_heads_row_nb(b, gates, c, reset, w_head, b_head, h_out, c_out, head)
    na = u.shape[1]
    best = 0
    best_z = -np.inf
    m = head[b, 0]
    for k in range(na):
        z = head[b, k] - np.log(-np.log(u[b, k]))   # Gumbel-max
        if z > best_z:
            best_z = z
            best = k
        m = max(m, head[b, k])
    s = _F0
    for k in range(na):
        s += np.exp(head[b, k] - m)
    action[b] = best
    log_prob[b] = head[b, best] - m - np.log(s)
    value[b] = head[b, na]


@njit(inline="always", cache=True, fastmath=_FM)
def _gaussian_row_nb(b, gates, c, reset, w_head, b_head, eps, std, log_std, action, log_prob, value,
                     h_out, c_out, head):
    _cell_heads_row_nb(b, gates, c, reset, w_head, b_head, h_out, c_out, head)
    d = eps.shape[1]
    lp = _F0
    for k in range(d):
        e = eps[b, k]
        action[b, k] = head[b, k] + std[k] * e
        lp += -_F05 * e * e - log_std[k] - _HALF_LOG_2PI
    log_prob[b] = lp
    value[b] = head[b, d]


@njit(parallel=True, cache=True, fastmath=_FM)
def _step_discrete_nb(
    # outputs
    action, log_prob, value, h_out, c_out,
    # workspace [B, A + 1]
    head,
    # inputs
    gates, c, reset, w_head, b_head, u,
):
    """Categorical step (module docstring) on the GEMM's ``gates`` (bias included).

    :func:`_launch_numba` sets the Numba thread count (one below ``PARALLEL_MIN_WORK``)."""
    for b in prange(gates.shape[0]):
        _discrete_row_nb(b, gates, c, reset, w_head, b_head, u, action, log_prob, value, h_out, c_out, head)


@njit(parallel=True, cache=True, fastmath=_FM)
def _step_gaussian_nb(
    # outputs
    action, log_prob, value, h_out, c_out,
    # workspace [B, d + 1]
    head,
    # inputs
    gates, c, reset, w_head, b_head, eps, std, log_std,
):
    """Diagonal-Gaussian step; threads as :func:`_step_discrete_nb`."""
    for b in prange(gates.shape[0]):
        _gaussian_row_nb(b, gates, c, reset, w_head, b_head, eps, std, log_std, action, log_prob, value,
                         h_out, c_out, head)


def _launch_numba(obs, h, c, reset, packed, noise, out):
    action, log_prob, value, h_out, c_out = out
    bsz = h.shape[0]
    xh = torch.empty((bsz, packed.w.shape[1]), dtype=torch.float32)
    head = torch.empty((bsz, packed.w_head.shape[0]), dtype=torch.float32)
    # Below PARALLEL_MIN_WORK the Numba passes run with ONE thread, on purpose: a parallel=True
    # (prange) body gets its arrays marked non-aliasing, so LLVM vectorizes the gate loop
    # (AVX-512 here; the plain-range version measured ~10x slower), while staying on the calling
    # thread keeps Numba's OpenMP pool from fighting torch's (the GEMM's; another OpenMP runtime)
    # for the cores: alternating the two pools on 2 cores made a B = 64 step ~10x slower. From
    # B x H = 2^17 up the pass is long enough (>= 0.2 ms) that both threads pay (measured 6-15%
    # faster steps at B >= 1024).
    threads = numba.get_num_threads()
    numba.set_num_threads(threads if bsz * packed.hidden_size >= PARALLEL_MIN_WORK else 1)
    try:
        _pack_nb(xh.numpy(), obs.numpy(), h.numpy(), reset.numpy())
        gates = torch.addmm(packed.bias, xh, packed.w.t())   # the one GEMM (MKL), bias pre-summed
        args = (action.numpy(), log_prob.numpy(), value.numpy(), h_out.numpy(), c_out.numpy(), head.numpy(),
                gates.numpy(), c.numpy(), reset.numpy(), packed.w_head.numpy(), packed.b_head.numpy(),
                noise.numpy())
        if packed.discrete:
            _step_discrete_nb(*args)
        else:
            _step_gaussian_nb(*args, packed.std.numpy(), packed.log_std.numpy())
    finally:
        numba.set_num_threads(threads)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _gate_dot_tl(a, w, acc, PRECISION: constexpr):
    """``acc + a @ w``, fp32 accumulation. ``PRECISION``: ``"ieee"`` exact fp32 products,
    ``"tf32"`` tensor-core fp32, ``"bf16"`` bf16 operands on the tensor cores, ``"bf16_emulated"``
    the same products computed in fp32 (the interpreter's tl.dot mishandles bf16 operands)."""
    if PRECISION == "bf16":
        acc = tl.dot(a, w, acc)
    elif PRECISION == "bf16_emulated":
        acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    return acc


def triton_precision(packed: PackedActorCritic) -> str:
    """The ``PRECISION`` meta-parameter of :func:`_step_tl` for ``packed`` (and this process:
    bf16 is emulated in fp32 under ``TRITON_INTERPRET=1``)."""
    if packed.precision == "bf16":
        return "bf16_emulated" if triton_interpret() else "bf16"
    return "tf32" if packed.precision == "tf32" else "ieee"


@lazy_jit
def _step_tl(
    # outputs (h_out, c_out [B, H] contiguous; action [B] or [B, A]; log_prob, value [B])
    action_ptr, log_prob_ptr, value_ptr, h_out_ptr, c_out_ptr,
    # inputs (h, c [B, H] contiguous; reset [B]; noise [B, A] contiguous)
    obs_ptr, stride_obs, h_ptr, c_ptr, reset_ptr, noise_ptr,
    # packed weights: w [4H, X + H], bias [4H], w_head [A + 1, H], b_head [A + 1], log_std [A]
    w_ptr, bias_ptr, w_head_ptr, b_head_ptr, log_std_ptr,
    # sizes
    n_rows, X, H, A,
    # meta-parameters
    DISCRETE: constexpr, BLOCK_B: constexpr, BLOCK_N: constexpr, BLOCK_K: constexpr, BLOCK_A: constexpr,
    PRECISION: constexpr = "ieee",
):
    """The fused step (module docstring) for ``BLOCK_B`` rows. For each block of ``BLOCK_N``
    hidden units: the four gate tiles by ``tl.dot`` over ``BLOCK_K`` chunks of ``[x, h]``
    (``PRECISION``: see :func:`_gate_dot_tl`; ``w_ptr`` bf16 for the bf16 modes), the cell
    update, and the heads' partial products (``tl.dot``, fp32 head weights); then the sampling.
    Registers stay bounded for any H (weights stream through in tiles)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = rows < n_rows
    r = tl.load(reset_ptr + rows, mask=rm, other=0).to(tl.int1)
    keep = rm & ~r
    kk = tl.arange(0, BLOCK_K)
    nn_ = tl.arange(0, BLOCK_N)
    ld = X + H
    out = tl.zeros((BLOCK_B, BLOCK_A), dtype=tl.float32)
    for n0 in range(0, H, BLOCK_N):
        n = n0 + nn_
        nm = n < H
        acc_i = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        acc_f = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        acc_o = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, ld, BLOCK_K):
            k = k0 + kk
            # the chunk of [x, h * keep]: columns k < X from obs, X <= k < X + H from h
            xa = tl.load(obs_ptr + rows[:, None] * stride_obs + k[None, :],
                         mask=rm[:, None] & (k < X)[None, :], other=0.0)
            ha = tl.load(h_ptr + rows[:, None] * H + (k - X)[None, :],
                         mask=keep[:, None] & ((k >= X) & (k < ld))[None, :], other=0.0)
            a = (xa + ha).to(w_ptr.dtype.element_ty)
            w_offs = n[None, :] * ld + k[:, None]                 # W^T tile [BLOCK_K, BLOCK_N]
            w_mask = (k < ld)[:, None] & nm[None, :]
            acc_i = _gate_dot_tl(a, tl.load(w_ptr + w_offs, mask=w_mask, other=0.0), acc_i, PRECISION)
            acc_f = _gate_dot_tl(a, tl.load(w_ptr + H * ld + w_offs, mask=w_mask, other=0.0), acc_f, PRECISION)
            acc_g = _gate_dot_tl(a, tl.load(w_ptr + 2 * H * ld + w_offs, mask=w_mask, other=0.0), acc_g, PRECISION)
            acc_o = _gate_dot_tl(a, tl.load(w_ptr + 3 * H * ld + w_offs, mask=w_mask, other=0.0), acc_o, PRECISION)
        acc_i += tl.load(bias_ptr + n, mask=nm, other=0.0)[None, :]
        acc_f += tl.load(bias_ptr + H + n, mask=nm, other=0.0)[None, :]
        acc_g += tl.load(bias_ptr + 2 * H + n, mask=nm, other=0.0)[None, :]
        acc_o += tl.load(bias_ptr + 3 * H + n, mask=nm, other=0.0)[None, :]
        out += _cell_heads_tl(acc_i, acc_f, acc_g, acc_o, rows, rm, keep, n, nm, h_out_ptr, c_out_ptr, c_ptr,
                              w_head_ptr, H, A, BLOCK_A, PRECISION)
    _finish_tl(out, rows, rm, action_ptr, log_prob_ptr, value_ptr, noise_ptr, b_head_ptr, log_std_ptr, A,
               DISCRETE, BLOCK_A)


@lazy_jit
def _cell_heads_tl(acc_i, acc_f, acc_g, acc_o, rows, rm, keep, n, nm, h_out_ptr, c_out_ptr, c_ptr, w_head_ptr,
                   H, A, BLOCK_A: constexpr, PRECISION: constexpr):
    """The LSTM cell update of one tile (rows x units ``n``) from its gate pre-activations (bias
    included): loads c (zero where ``keep`` is off), stores h' and c', and returns the heads'
    product over these units ``h'[:, n] @ W_head[:, n]^T`` ``[BLOCK_B, BLOCK_A]`` (policy columns
    < A, value column A). Shared by the row-block and the split step kernels."""
    hc_offs = rows[:, None] * H + n[None, :]
    c = tl.load(c_ptr + hc_offs, mask=keep[:, None] & nm[None, :], other=0.0)
    # tanh(z) = 2 sigmoid(2z) - 1
    c_new = tl.sigmoid(acc_f) * c + tl.sigmoid(acc_i) * (2.0 * tl.sigmoid(2.0 * acc_g) - 1.0)
    h_new = tl.sigmoid(acc_o) * (2.0 * tl.sigmoid(2.0 * c_new) - 1.0)
    h_new = tl.where(nm[None, :], h_new, 0.0)
    tl.store(h_out_ptr + hc_offs, h_new, mask=rm[:, None] & nm[None, :])
    tl.store(c_out_ptr + hc_offs, c_new, mask=rm[:, None] & nm[None, :])
    ka = tl.arange(0, BLOCK_A)
    wh = tl.load(w_head_ptr + ka[None, :] * H + n[:, None], mask=nm[:, None] & (ka <= A)[None, :], other=0.0)
    if PRECISION == "tf32":
        return tl.dot(h_new, wh, input_precision="tf32")
    else:
        return tl.dot(h_new, wh, input_precision="ieee")


@lazy_jit
def _finish_tl(out, rows, rm, action_ptr, log_prob_ptr, value_ptr, noise_ptr, b_head_ptr, log_std_ptr, A,
               DISCRETE: constexpr, BLOCK_A: constexpr):
    """The step's tail for one block of rows, shared by both step kernels: ``out [BLOCK_B, BLOCK_A]``
    holds ``h' @ W_head^T`` (policy columns < A, value column A); adds the head bias, stores the
    value and samples (Gumbel-max or Gaussian) with the given noise, storing action and log_prob."""
    ka = tl.arange(0, BLOCK_A)
    out += tl.load(b_head_ptr + ka, mask=ka <= A, other=0.0)[None, :]
    tl.store(value_ptr + rows, tl.sum(tl.where((ka == A)[None, :], out, 0.0), axis=1), mask=rm)
    am = ka < A
    noise = tl.load(noise_ptr + rows[:, None] * A + ka[None, :], mask=rm[:, None] & am[None, :], other=0.5)
    if DISCRETE:
        logits = tl.where(am[None, :], out, float("-inf"))
        z = tl.where(am[None, :], logits - tl.log(-tl.log(noise)), float("-inf"))   # Gumbel-max
        action = tl.argmax(z, axis=1)
        m = tl.max(logits, axis=1)
        lse = m + tl.log(tl.sum(tl.exp(logits - m[:, None]), axis=1))
        chosen = tl.sum(tl.where(ka[None, :] == action[:, None], out, 0.0), axis=1)
        tl.store(action_ptr + rows, action.to(tl.int64), mask=rm)
        tl.store(log_prob_ptr + rows, chosen - lse, mask=rm)
    else:
        log_std = tl.load(log_std_ptr + ka, mask=am, other=0.0)
        act = out + tl.exp(log_std)[None, :] * noise
        tl.store(action_ptr + rows[:, None] * A + ka[None, :], act, mask=rm[:, None] & am[None, :])
        lp = tl.where(am[None, :], -0.5 * noise * noise - log_std[None, :] - 0.9189385332046727, 0.0)
        tl.store(log_prob_ptr + rows, tl.sum(lp, axis=1), mask=rm)


@lazy_jit
def _split_tail_tl(acc_i, acc_f, acc_g, acc_o, rows, rm, keep, n, nm, rb, nb, n_blocks,
                   action_ptr, log_prob_ptr, value_ptr, h_out_ptr, c_out_ptr, c_ptr, noise_ptr,
                   w_head_ptr, b_head_ptr, log_std_ptr, part_ptr, count_ptr, n_rows, H, A,
                   DISCRETE: constexpr, BLOCK_B: constexpr, BLOCK_A: constexpr, PRECISION: constexpr):
    """The split kernels' common tail for row block ``rb`` x unit block ``nb``: the cell update
    from the gate pre-activations (bias included), h' and c' stored, the heads' partial product
    stored in ``part``; then the row block's counter is bumped and the program that bumps it
    last sums the partials in unit-block order, samples (:func:`_finish_tl`) and re-zeroes it."""
    out = _cell_heads_tl(acc_i, acc_f, acc_g, acc_o, rows, rm, keep, n, nm, h_out_ptr, c_out_ptr, c_ptr,
                         w_head_ptr, H, A, BLOCK_A, PRECISION)
    ka = tl.arange(0, BLOCK_A)
    part_offs = rows[:, None] * BLOCK_A + ka[None, :]
    tl.store(part_ptr + nb * n_rows * BLOCK_A + part_offs, out, mask=rm[:, None])
    # every thread's partial is written before one thread publishes the count (release, GPU scope)
    tl.debug_barrier()
    done_before = tl.atomic_add(count_ptr + rb, 1, sem="acq_rel")
    if done_before == n_blocks - 1:   # the last program of this row block: all partials are in
        total = tl.zeros((BLOCK_B, BLOCK_A), dtype=tl.float32)
        for j in range(0, n_blocks):   # fixed order: the sum does not depend on which program came last
            total += tl.load(part_ptr + j * n_rows * BLOCK_A + part_offs, mask=rm[:, None], other=0.0,
                             cache_modifier=".cg")
        _finish_tl(total, rows, rm, action_ptr, log_prob_ptr, value_ptr, noise_ptr, b_head_ptr, log_std_ptr,
                   A, DISCRETE, BLOCK_A)
        tl.atomic_xchg(count_ptr + rb, 0)


@lazy_jit
def _step_split_tl(
    # outputs and inputs as _step_tl
    action_ptr, log_prob_ptr, value_ptr, h_out_ptr, c_out_ptr,
    obs_ptr, stride_obs, h_ptr, c_ptr, reset_ptr, noise_ptr,
    w_ptr, bias_ptr, w_head_ptr, b_head_ptr, log_std_ptr,
    # workspace: part [cdiv(H, BLOCK_N), B, BLOCK_A] fp32 (any values); count [cdiv(B, BLOCK_B)] int32,
    # all zero before the launch and left all zero after it
    part_ptr, count_ptr,
    n_rows, X, H, A,
    DISCRETE: constexpr, BLOCK_B: constexpr, BLOCK_N: constexpr, BLOCK_K: constexpr, BLOCK_X: constexpr,
    BLOCK_A: constexpr, PRECISION: constexpr = "ieee",
):
    """The fused step with the hidden units split across programs, for large batches on a GPU.

    Program ``(row block rb, unit block nb)`` (unit blocks vary fastest, so the programs sharing
    a row block run together and share its ``[x, h]`` rows in L2) computes the four gate tiles
    ``[BLOCK_B, BLOCK_N]`` of its units only: it reads its slice of W once (the row-block kernel
    :func:`_step_tl` reads all of W per program), so big ``BLOCK_B`` tiles fit the tensor cores.
    The heads need all units: each program stores its partial ``h'[:, units] @ W_head[:, units]^T``
    in ``part``, then bumps the row block's counter; the program that bumps it last sums the
    partials in unit-block order (deterministic), samples, and zeroes the counter for the next
    launch. ``[x, h]`` is read as obs then h (no K padding between them)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(H, BLOCK_N)
    rb = pid // n_blocks
    nb = pid % n_blocks
    rows = rb * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = rows < n_rows
    r = tl.load(reset_ptr + rows, mask=rm, other=0).to(tl.int1)
    keep = rm & ~r
    n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n < H
    ld = X + H
    # obs columns
    kx = tl.arange(0, BLOCK_X)
    xa = tl.load(obs_ptr + rows[:, None] * stride_obs + kx[None, :], mask=rm[:, None] & (kx < X)[None, :],
                 other=0.0).to(w_ptr.dtype.element_ty)
    wx_offs = n[None, :] * ld + kx[:, None]
    wx_mask = (kx < X)[:, None] & nm[None, :]
    zero = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    acc_i = _gate_dot_tl(xa, tl.load(w_ptr + wx_offs, mask=wx_mask, other=0.0), zero, PRECISION)
    acc_f = _gate_dot_tl(xa, tl.load(w_ptr + H * ld + wx_offs, mask=wx_mask, other=0.0), zero, PRECISION)
    acc_g = _gate_dot_tl(xa, tl.load(w_ptr + 2 * H * ld + wx_offs, mask=wx_mask, other=0.0), zero, PRECISION)
    acc_o = _gate_dot_tl(xa, tl.load(w_ptr + 3 * H * ld + wx_offs, mask=wx_mask, other=0.0), zero, PRECISION)
    # h columns
    kk = tl.arange(0, BLOCK_K)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + kk
        km = k < H
        ha = tl.load(h_ptr + rows[:, None] * H + k[None, :], mask=keep[:, None] & km[None, :],
                     other=0.0).to(w_ptr.dtype.element_ty)
        w_offs = n[None, :] * ld + X + k[:, None]
        w_mask = km[:, None] & nm[None, :]
        acc_i = _gate_dot_tl(ha, tl.load(w_ptr + w_offs, mask=w_mask, other=0.0), acc_i, PRECISION)
        acc_f = _gate_dot_tl(ha, tl.load(w_ptr + H * ld + w_offs, mask=w_mask, other=0.0), acc_f, PRECISION)
        acc_g = _gate_dot_tl(ha, tl.load(w_ptr + 2 * H * ld + w_offs, mask=w_mask, other=0.0), acc_g, PRECISION)
        acc_o = _gate_dot_tl(ha, tl.load(w_ptr + 3 * H * ld + w_offs, mask=w_mask, other=0.0), acc_o, PRECISION)
    acc_i += tl.load(bias_ptr + n, mask=nm, other=0.0)[None, :]
    acc_f += tl.load(bias_ptr + H + n, mask=nm, other=0.0)[None, :]
    acc_g += tl.load(bias_ptr + 2 * H + n, mask=nm, other=0.0)[None, :]
    acc_o += tl.load(bias_ptr + 3 * H + n, mask=nm, other=0.0)[None, :]
    _split_tail_tl(acc_i, acc_f, acc_g, acc_o, rows, rm, keep, n, nm, rb, nb, n_blocks,
                   action_ptr, log_prob_ptr, value_ptr, h_out_ptr, c_out_ptr, c_ptr, noise_ptr,
                   w_head_ptr, b_head_ptr, log_std_ptr, part_ptr, count_ptr, n_rows, H, A,
                   DISCRETE, BLOCK_B, BLOCK_A, PRECISION)


@lazy_jit
def _step_split_cat_tl(
    # outputs and inputs as _step_tl
    action_ptr, log_prob_ptr, value_ptr, h_out_ptr, c_out_ptr,
    obs_ptr, stride_obs, h_ptr, c_ptr, reset_ptr, noise_ptr,
    # w_cat [cdiv(H, BLOCK_N) * 4 * BLOCK_N, X + H], bias_cat [same rows]: rows interleaved per unit
    # block as (unit j, gate i f g o) (see _interleave_gates); then w_head, b_head, log_std as _step_tl
    w_ptr, bias_ptr, w_head_ptr, b_head_ptr, log_std_ptr,
    part_ptr, count_ptr,
    n_rows, X, H, A,
    DISCRETE: constexpr, BLOCK_B: constexpr, BLOCK_N: constexpr, BLOCK_K: constexpr, BLOCK_X: constexpr,
    BLOCK_A: constexpr, PRECISION: constexpr = "ieee",
):
    """:func:`_step_split_tl` with the four gates of a unit block in ONE ``tl.dot`` per K chunk
    (``[BLOCK_B, BLOCK_K] @ [BLOCK_K, 4 BLOCK_N]``, the weight rows interleaved unit-major so the
    accumulator reshapes to ``[BLOCK_B, BLOCK_N, 2, 2]`` and splits into i, f, g, o)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(H, BLOCK_N)
    rb = pid // n_blocks
    nb = pid % n_blocks
    rows = rb * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = rows < n_rows
    r = tl.load(reset_ptr + rows, mask=rm, other=0).to(tl.int1)
    keep = rm & ~r
    ld = X + H
    cols = nb * 4 * BLOCK_N + tl.arange(0, 4 * BLOCK_N)       # rows of w_cat this program reads
    kx = tl.arange(0, BLOCK_X)
    xa = tl.load(obs_ptr + rows[:, None] * stride_obs + kx[None, :], mask=rm[:, None] & (kx < X)[None, :],
                 other=0.0).to(w_ptr.dtype.element_ty)
    wx = tl.load(w_ptr + cols[None, :] * ld + kx[:, None], mask=(kx < X)[:, None], other=0.0)
    acc = _gate_dot_tl(xa, wx, tl.zeros((BLOCK_B, 4 * BLOCK_N), dtype=tl.float32), PRECISION)
    kk = tl.arange(0, BLOCK_K)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + kk
        km = k < H
        ha = tl.load(h_ptr + rows[:, None] * H + k[None, :], mask=keep[:, None] & km[None, :],
                     other=0.0).to(w_ptr.dtype.element_ty)
        wt = tl.load(w_ptr + cols[None, :] * ld + X + k[:, None], mask=km[:, None], other=0.0)
        acc = _gate_dot_tl(ha, wt, acc, PRECISION)
    acc += tl.load(bias_ptr + cols)[None, :]
    # column 4 j + 2 p + q holds gate 2 p + q (i = 0, f = 1, g = 2, o = 3) of unit j
    q0, q1 = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_N, 2, 2)))
    acc_i, acc_g = tl.split(q0)
    acc_f, acc_o = tl.split(q1)
    n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n < H
    _split_tail_tl(acc_i, acc_f, acc_g, acc_o, rows, rm, keep, n, nm, rb, nb, n_blocks,
                   action_ptr, log_prob_ptr, value_ptr, h_out_ptr, c_out_ptr, c_ptr, noise_ptr,
                   w_head_ptr, b_head_ptr, log_std_ptr, part_ptr, count_ptr, n_rows, H, A,
                   DISCRETE, BLOCK_B, BLOCK_A, PRECISION)


def _interleave_gates(packed: PackedActorCritic, block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_cat, bias_cat)`` for :func:`_step_split_cat_tl`: row ``4 (b BLOCK_N + j) + gate`` holds
    gate ``gate`` of unit ``b BLOCK_N + j`` (zero past H), from ``w_dot`` and ``bias``; cached on
    ``packed`` per ``block_n``."""
    key = ("cat", block_n)
    if key not in packed.cache:
        hid = packed.hidden_size
        units = -(-hid // block_n) * block_n
        w = packed.w_dot.new_zeros((4, units, packed.w_dot.shape[1]))
        w[:, :hid] = packed.w_dot.view(4, hid, -1)
        b = packed.bias.new_zeros((4, units))
        b[:, :hid] = packed.bias.view(4, hid)
        packed.cache[key] = (w.transpose(0, 1).reshape(4 * units, -1).contiguous(),
                             b.t().reshape(-1).contiguous())
    return packed.cache[key]


class Tiles(NamedTuple):
    """A Triton launch configuration of the step: ``kernel`` ``"rows"`` (:func:`_step_tl`, one
    program per ``block_b`` rows, all hidden units), ``"split"`` (:func:`_step_split_tl`, one
    program per ``block_b`` rows x ``block_n`` hidden units) or ``"split_cat"``
    (:func:`_step_split_cat_tl`: as split, the four gates in one ``tl.dot`` per K chunk)."""

    kernel: str
    block_b: int
    block_n: int
    block_k: int
    warps: int
    stages: int


# Tiles for B > 1024 on a GPU, per precision: the best of bench/gpu_tune.py's sweeps at B = 4096,
# H = 256 on an H200 (bench/RESULTS.md, session 6; do_bench medians, the kernel alone): bf16
# split_cat 28.8 us (split 31.3, rows 48.2), tf32 split_cat 25.8 (split 28.7-35.6, rows 53.3), fp32
# split 206 (rows 358; split_cat not measured in fp32).
CUDA_TILES = {"fp32": Tiles("split", 128, 64, 32, 8, 2), "tf32": Tiles("split_cat", 128, 64, 32, 8, 3),
              "bf16": Tiles("split_cat", 128, 32, 32, 4, 3)}
SMALL_TILES = Tiles("rows", 16, 32, 32, 4, 3)   # B <= 1024, or the interpreter


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, int(n) - 1).bit_length())


_WORKSPACE: dict = {}


def _split_workspace(device, n_blocks: int, bsz: int, block_a: int, row_blocks: int):
    """The split kernel's scratch, cached per (device, stream, sizes): ``part`` needs no
    initialisation; ``count`` is zeroed once and every launch leaves it zero. One cache entry per
    stream, so launches on different streams never share counters."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream, n_blocks, bsz, block_a, row_blocks)
    ws = _WORKSPACE.get(key)
    if ws is None:
        if len(_WORKSPACE) >= 16:   # bounded: batch sizes vary across a program's phases
            _WORKSPACE.clear()
        ws = (torch.empty((n_blocks, bsz, block_a), dtype=torch.float32, device=device),
              torch.zeros(row_blocks, dtype=torch.int32, device=device))
        _WORKSPACE[key] = ws
    return ws


def _launch_triton(obs, h, c, reset, packed, noise, out, tiles: Tiles | None = None):
    action, log_prob, value, h_out, c_out = out
    bsz, hid = h.shape
    if tiles is None:
        tiles = CUDA_TILES[packed.precision] if bsz > 1024 and obs.device.type == "cuda" else SMALL_TILES
    block_n = min(tiles.block_n, _pow2(hid))
    block_a = _pow2(packed.num_outputs + 1)
    log_std = packed.log_std if packed.log_std is not None else packed.b_head  # unused when discrete
    # split_cat reads the gate rows interleaved per unit block
    w, bias = _interleave_gates(packed, block_n) if tiles.kernel == "split_cat" else (packed.w_dot, packed.bias)
    args = (action, log_prob, value, h_out, c_out, obs, obs.stride(0), h, c, reset, noise,
            w, bias, packed.w_head, packed.b_head, log_std)
    sizes = (bsz, packed.obs_dim, hid, packed.num_outputs)
    row_blocks = -(-bsz // tiles.block_b)
    meta = dict(DISCRETE=packed.discrete, BLOCK_B=tiles.block_b, BLOCK_N=block_n, BLOCK_K=tiles.block_k,
                BLOCK_A=block_a, PRECISION=triton_precision(packed), num_warps=tiles.warps,
                num_stages=tiles.stages)
    if tiles.kernel == "rows":
        _step_tl[(row_blocks,)](*args, *sizes, **meta)
    elif tiles.kernel in ("split", "split_cat"):
        n_blocks = -(-hid // block_n)
        part, count = _split_workspace(obs.device, n_blocks, bsz, block_a, row_blocks)
        kernel = _step_split_cat_tl if tiles.kernel == "split_cat" else _step_split_tl
        kernel[(row_blocks * n_blocks,)](*args, part, count, *sizes, BLOCK_X=_pow2(packed.obs_dim), **meta)
    else:
        raise ValueError(f"tiles.kernel must be 'rows', 'split' or 'split_cat', got {tiles.kernel!r}")


# ----------------------------------------------------------------------------- public op
def resolve_backend(backend, device) -> str:
    """The step's backend for weights on ``device`` unless forced: Triton on CUDA, Numba on the CPU
    (``"cpu"`` is an alias of ``"numba"``); checked by :func:`metarl.kernels._checks.resolve_backend`."""
    return _checks.resolve_backend(backend, device, BACKENDS, default="triton" if device.type == "cuda" else "numba")


def actor_critic_step(obs, h, c, reset, packed: PackedActorCritic, noise, *, backend=None, out=None):
    """The fused step (module docstring) with weights from :func:`pack_actor_critic`.

    ``obs [B, X]`` float32, ``h, c [B, H]`` float32, ``reset [B]`` bool, ``noise`` ``[B, A]``
    uniforms in [0, 1) (categorical) or ``[B, d]`` standard normals (Gaussian), all on the
    weights' device. ``out`` (optional): preallocated ``(action, log_prob, value, h', c')``.
    Returns ``(action, log_prob, value, h', c')``; ``action`` is int64 ``[B]`` or float32 ``[B, d]``.
    No autograd (the rollout step); the inputs are not modified.
    """
    if not isinstance(packed, PackedActorCritic):
        raise TypeError(f"packed must be a PackedActorCritic (pack_actor_critic), got {type(packed).__name__}")
    dev = packed.w.device
    if not isinstance(obs, torch.Tensor):
        raise TypeError(f"obs must be a torch.Tensor, got {type(obs).__name__}")
    if obs.dim() != 2:
        raise ValueError(f"obs must be [B, {packed.obs_dim}], got shape {tuple(obs.shape)}")
    bsz, hid, a = obs.shape[0], packed.hidden_size, packed.num_outputs
    if bsz == 0:
        raise ValueError("obs must have at least one row (B >= 1)")
    check_tensor("obs", obs, (bsz, packed.obs_dim), torch.float32, dev)
    check_tensor("h", h, (bsz, hid), torch.float32, dev)
    check_tensor("c", c, (bsz, hid), torch.float32, dev)
    check_tensor("reset", reset, (bsz,), torch.bool, dev)
    check_tensor("noise", noise, (bsz, a), torch.float32, dev)
    return actor_critic_step_unchecked(obs, h, c, reset, packed, noise, resolve_backend(backend, dev), out)


def _empty_outputs(bsz: int, hid: int, num_outputs: int, discrete: bool, like: torch.Tensor) -> tuple:
    """Uninitialised ``(action, log_prob, value, h', c')`` on ``like``'s device."""
    action = like.new_empty((bsz,), dtype=torch.int64) if discrete else \
        like.new_empty((bsz, num_outputs), dtype=torch.float32)
    return (action, like.new_empty(bsz, dtype=torch.float32), like.new_empty(bsz, dtype=torch.float32),
            like.new_empty((bsz, hid), dtype=torch.float32), like.new_empty((bsz, hid), dtype=torch.float32))


# The step as a torch.library custom op for the tracers (one opaque node; see the ops in
# metarl.kernels.lstm for why eager calls the launchers directly). It takes the unpacked weights,
# which a traced graph passes through unchanged call after call, and packs them inside (cached).
_PACKS: dict = {}
_PACKS_MAX = 4


def _pack_cached(params: tuple, precision: str) -> PackedActorCritic:
    """``pack_actor_critic(*params, precision=precision)``, cached while the same memory holds the same
    versions: keyed by each tensor's device, data pointer, shape, strides and version counter (views
    share their base's counter, so an in-place update of a parameter misses). An entry keeps its
    tensors alive, so no other tensor can take their memory meanwhile. Inference tensors (no
    version counter) are packed every call."""
    if any(p is not None and p.is_inference() for p in params):
        return pack_actor_critic(*params, precision=precision)
    key = (precision,) + tuple(None if p is None else (p.device, p.data_ptr(), tuple(p.shape), p.stride(), p._version)
                               for p in params)
    hit = _PACKS.get(key)
    if hit is None:
        if len(_PACKS) >= _PACKS_MAX:
            _PACKS.pop(next(iter(_PACKS)))
        hit = _PACKS[key] = (params, pack_actor_critic(*params, precision=precision))
    return hit[1]


@torch.library.custom_op("metarl::actor_critic_step", mutates_args=())
def _actor_critic_step_op(obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor, reset: torch.Tensor,
                          noise: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                          b_hh: torch.Tensor, w_pi: torch.Tensor, b_pi: torch.Tensor, w_v: torch.Tensor,
                          b_v: torch.Tensor, log_std: torch.Tensor | None, precision: str, backend: str) -> tuple[
                              torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    packed = _pack_cached(tuple(None if p is None else p.detach()
                                for p in (w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v, log_std)), precision)
    obs, h, c, reset, noise = (t.detach().contiguous() for t in (obs, h, c, reset, noise))
    out = _empty_outputs(obs.shape[0], packed.hidden_size, packed.num_outputs, packed.discrete, obs)
    if backend == "numba":
        _launch_numba(obs, h, c, reset, packed, noise, out)
    else:
        _launch_triton(obs, h, c, reset, packed, noise, out)
    return out


@_actor_critic_step_op.register_fake
def _(obs, h, c, reset, noise, w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v, log_std, precision, backend):
    return _empty_outputs(obs.shape[0], w_hh.shape[1], w_pi.shape[0], log_std is None, obs)


def actor_critic_step_op(obs, h, c, reset, params, noise, backend, precision="fp32"):
    """The step (``backend`` ``"numba"`` or ``"triton"``) as the custom op
    ``torch.ops.metarl.actor_critic_step``, on the unpacked weights ``params`` = ``(w_ih, w_hh, b_ih,
    b_hh, w_pi, b_pi, w_v, b_v, log_std)`` (:func:`pack_actor_critic`'s arguments), which the op packs
    itself (cached while they are unchanged): what traced code runs. No autograd (inputs detached)."""
    params = tuple(None if p is None else p.detach() for p in params)
    return torch.ops.metarl.actor_critic_step(obs.detach(), h.detach(), c.detach(), reset, noise.detach(), *params,
                                              precision, backend)


def actor_critic_step_unchecked(obs, h, c, reset, packed, noise, backend, out=None):
    """:func:`actor_critic_step` without the checks: the caller validated the inputs and chose
    ``backend`` (:func:`resolve_backend`). Traced (torch.compile, torch.export, torch.jit.trace) the
    Numba and Triton backends run as the custom op ``torch.ops.metarl.actor_critic_step``."""
    if backend != "torch" and _checks.tracing():
        res = actor_critic_step_op(obs, h, c, reset, packed.params, noise, backend, packed.precision)
        if out is None:
            return res
        for o, r in zip(out, res):
            o.copy_(r)
        return tuple(out)
    bsz, hid = obs.shape[0], packed.hidden_size
    if backend != "torch":   # kernels index rows densely
        obs, h, c, reset, noise = (t.contiguous() for t in (obs, h, c, reset, noise))
    if out is None:
        out = _empty_outputs(bsz, hid, packed.num_outputs, packed.discrete, packed.w)
    with torch.no_grad():
        if backend == "torch":
            res = actor_critic_step_reference(obs, h, c, reset, *packed.params[:8], noise, log_std=packed.params[8])
            for o, r in zip(out, res):
                o.copy_(r)
        elif backend == "numba":
            _launch_numba(obs, h, c, reset, packed, noise, out)
        else:
            _launch_triton(obs, h, c, reset, packed, noise, out)
    return tuple(out)
