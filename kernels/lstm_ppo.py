"""PPO loss gradients of a recurrent actor-critic (LSTM cell + categorical policy head + value head) over
a minibatch of sequences, by hand: the forward once, then backpropagation through time written out, with
no autograd graph.

The loss is RL^2's PPO minibatch loss (:func:`metarl.algos.rl2.ppo_update`; Schulman et al. 2017, eq. 7
and 9), over ``M = T B`` steps of ``B`` sequences of ``T`` steps, times ``scale`` (a data-parallel rank's
share of the minibatch)::

    h_t, c_t   = LSTMCell(x_t, (h_{t-1}, c_{t-1}) zeroed where reset_t)       # torch.nn.LSTMCell's formula
    logits_t   = h_t W_pi^T + b_pi    [A];   v_t = h_t w_v^T + b_v
    lp_t       = log_softmax(logits_t)[a_t];  ent_t = -sum_j p_tj log p_tj
    r_t        = exp(lp_t - lp_old_t)
    pg         = -mean_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)
    vl         = 0.5 mean_t (v_t - R_t)^2
    loss       = scale (pg + vf_coef vl - ent_coef mean_t ent_t)

Gradients (what the kernels compute, per step; ``[.]`` is 1 where true)::

    d lp_t     = -scale/M  r_t A_t [r_t A_t <= clip(r_t) A_t]     (torch.min's and clamp's subgradients)
    d logits_t = d lp_t (onehot(a_t) - p_t) + scale ent_coef / M  p_t (log p_t + ent_t)
    d v_t      = scale vf_coef / M  (v_t - R_t)
    d h_t      = [d logits_t, d v_t] [W_pi; w_v] + (d z_{t+1} W_hh zeroed where reset_{t+1})
    d c        = d c_{t+1} f_{t+1} (zeroed where reset_{t+1}) + d h_t o_t (1 - tanh^2 c_t)
    d z_t      = [d c g i (1 - i), d c c_{t-1} f (1 - f), d c i (1 - g^2), d h_t tanh(c_t) o (1 - o)]
    d [W_ih | W_hh] = sum_t d z_t^T [x_t, h_{t-1}];   d b_ih = d b_hh = sum_t d z_t

Layout and cost (float32; H hidden, X input, A actions):

* forward, per step ONE GEMM ``[x_t, 1, h_{t-1}] [W_ih | b_ih + b_hh | W_hh]^T`` (``[B, X+1+H] x [X+1+H, 4H]``;
  the ones column carries the bias, and its gradient comes out of the weight-gradient GEMM) and ONE fused
  pointwise pass (:func:`_forward_step_nb`: gates, cell, h, and the next step's operand row); then the two heads
  as ONE GEMM over all T steps (``[M, H] x [H, A+1]``);
* the loss and the heads' gradients in ONE pass over the M steps (:func:`_heads_nb`);
* backward, ONE GEMM ``[d logits, d v] [W_pi; w_v]`` over all steps, then per step one fused pointwise pass
  (:func:`_backward_step_nb`) and ONE GEMM ``d z_t W_hh``; the weight gradients as ONE GEMM each over all T
  steps (``d Z^T [X | 1 | H_prev]``: ``[4H, M] x [M, X+1+H]``; ``[A+1, M] x [M, H]`` for the heads).

FLOPs per step: ``2 (X+1+H) 4H`` forward, ``2 (X+1+H) 4H + 2 H 4H`` backward (no input gradient), plus the
heads' ``6 H (A+1)``. Memory kept for the backward: ``T B (4H + 2H + X+1 + 2H)`` floats (gates, cells, operand
rows, outputs, their gradients), in buffers kept from one call to the next (fresh ones cost more in page
faults than the passes that fill them).

Two implementations side by side:

* :func:`lstm_ppo_loss_reference` — the loss in plain PyTorch (the LSTM step by step,
  :func:`metarl.kernels.lstm.lstm_sequence_reference`), differentiated by autograd: the oracle, any device;
* ``backend="numba"`` (CPU) — the passes above: Numba for the pointwise passes (vectorized; they release the
  GIL), torch's GEMMs (MKL) on one thread. ``threads=k`` splits the sequences into k blocks, each block's whole
  forward and backward on its own thread (one synchronisation per minibatch, not one per op), and adds the
  blocks' gradient sums.

Measured (the 2-core CPU, shared with other jobs; B = 256, T = 10, X = 8, H = 64, A = 5, one thread): ~4.1 ms
per minibatch, of which the GEMMs ~2.3 ms, the pointwise passes ~1 ms, the rest Python and torch call overhead;
autograd through torch's fused LSTM took ~8 ms (bench/train.py, column ``metarl autograd``). Two blocks on two
threads gained nothing at B = 256 and lost at B = 16 there (RL^2's update keeps its thread policy: one thread
below ``UPDATE_PARALLEL_MIN_WORK``); at B = 1024 they took 10.3 instead of 14.7 ms.

:func:`lstm_ppo_grads` is the public op: the 8 parameter gradients and the loss terms' means.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import threading

import numpy as np
import torch
from numba import njit

from metarl.kernels._checks import check_tensor
from metarl.kernels.lstm import lstm_sequence_reference, sigmoid_nb, tanh_nb

BACKENDS = ("torch", "numba")
MAX_THREADS = max(1, os.cpu_count() or 1)
"""most threads the Numba path splits a minibatch's sequences over (one block per thread)"""
STATS = ("policy_loss", "value_loss", "entropy", "approx_kl")
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


# ----------------------------------------------------------------------------- reference
def lstm_ppo_loss_reference(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, *,
                            clip: float, vf_coef: float, ent_coef: float, scale: float = 1.0):
    """The PPO minibatch loss of the module docstring, differentiable by autograd.

    ``obs [T, B, X]`` float32, ``actions [T, B]`` int64 in ``[0, A)``, ``h0, c0 [B, H]``, ``resets [T, B]``
    bool (zero the state before step t), ``old_log_probs, advantages, returns [T, B]``; ``params`` =
    ``(w_ih [4H, X], w_hh [4H, H], b_ih [4H], b_hh [4H], w_pi [A, H], b_pi [A], w_v [1, H], b_v [1])``
    (a :class:`~metarl.nn.RecurrentActorCritic`'s ``cell``, ``policy_head`` and ``value_head``).
    Returns ``(loss, stats)``: the scalar loss and ``{policy_loss, value_loss, entropy, approx_kl}``
    (0-dim tensors, unscaled, detached). Bytes: reads the inputs once per step (``T B (X + 5) 4``) and the
    weights; the LSTM keeps ``T B 6H`` floats for autograd.
    """
    w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v = params
    hs = lstm_sequence_reference(obs, h0[None], c0[None], [(w_ih, w_hh, b_ih, b_hh)], resets)[0]   # [T, B, H]
    logp = torch.log_softmax(hs @ w_pi.t() + b_pi, dim=-1)
    value = (hs @ w_v.t() + b_v)[..., 0]
    log_prob = logp.gather(-1, actions[..., None])[..., 0]
    entropy = -(logp.exp() * logp).sum(-1)
    log_ratio = log_prob - old_log_probs
    ratio = log_ratio.exp()
    pg = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()
    vl = 0.5 * ((value - returns) ** 2).mean()
    loss = (pg + vf_coef * vl - ent_coef * entropy.mean()) * scale
    with torch.no_grad():
        stats = {"policy_loss": pg.detach(), "value_loss": vl.detach(), "entropy": entropy.mean(),
                 "approx_kl": ((ratio - 1) - log_ratio).mean()}
    return loss, stats


# ----------------------------------------------------------------------------- numba
@njit(cache=True, nogil=True, error_model="numpy", fastmath={"arcp", "contract"})
def _forward_step_nb(
    # outputs: h_out, c_out [B, H] (h_t, c_t), xh_next [B, X + 1 + H] (its last H columns: h_t zeroed where
    # reset_next)
    h_out, c_out, xh_next,
    # inputs / in place: z [B, 4H] (z_t on entry, the activated [i, f, g, o] on exit), c_prev [B, H],
    # reset, reset_next [B] bool
    z, c_prev, reset, reset_next,
):
    """One step's pointwise part: ``i, f, o = σ(z), g = tanh(z)``, ``c_t = f c_{t-1} + i g``
    (c_{t-1} = 0 where reset), ``h_t = o tanh(c_t)``; writes the next step's GEMM operand row. Every load and
    store is unconditional (resets are selects), so LLVM vectorizes the inner loop."""
    # row slices, not 2-D indices: with z[b, hidden + j] LLVM does not vectorize the loop (5x slower here)
    batch, hidden = c_out.shape
    isz = xh_next.shape[1] - hidden
    for b in range(batch):
        keep = not reset[b]
        keep_next = not reset_next[b]
        zr = z[b]
        zi, zf, zg, zo = zr[:hidden], zr[hidden:2 * hidden], zr[2 * hidden:3 * hidden], zr[3 * hidden:]
        cp_row, c_row, h_row, next_row = c_prev[b], c_out[b], h_out[b], xh_next[b, isz:]
        for j in range(hidden):
            i = sigmoid_nb(zi[j])
            f = sigmoid_nb(zf[j])
            g = tanh_nb(zg[j])
            o = sigmoid_nb(zo[j])
            cp = cp_row[j]
            c = f * (cp if keep else _ZERO) + i * g
            h = o * tanh_nb(c)
            zi[j] = i
            zf[j] = f
            zg[j] = g
            zo[j] = o
            c_row[j] = c
            h_row[j] = h
            next_row[j] = h if keep_next else _ZERO


@njit(cache=True, nogil=True, error_model="numpy")
def _heads_nb(
    # outputs: d_out [M, A + 1] (d logits, d v), sums [4] float64 (sum over steps of -min(...), (v - R)^2,
    # entropy, (r - 1) - log r)
    d_out, sums,
    # inputs: out [M, A + 1] (logits, v), actions [M] int64, old_log_probs, advantages, returns [M]
    out, actions, old_log_probs, advantages, returns,
    # scalars: clip range, gradient factors (scale / M, scale vf_coef / M, scale ent_coef / M)
    lo, hi, c_pg, c_v, c_ent,
):
    """The loss terms of every step and their gradients with respect to the heads' outputs."""
    steps, width = out.shape
    num_actions = width - 1
    pg_sum, vl_sum, ent_sum, kl_sum = 0.0, 0.0, 0.0, 0.0
    for m in range(steps):
        top = out[m, 0]
        for j in range(1, num_actions):
            top = max(top, out[m, j])
        total = _ZERO
        for j in range(num_actions):
            total += math.exp(out[m, j] - top)
        lse = top + math.log(total)
        ent = _ZERO
        for j in range(num_actions):
            lp_j = out[m, j] - lse
            ent -= math.exp(lp_j) * lp_j
        a = actions[m]
        log_ratio = (out[m, a] - lse) - old_log_probs[m]
        r = math.exp(log_ratio)
        adv = advantages[m]
        surr1 = r * adv
        surr2 = min(max(r, lo), hi) * adv
        d_lp = -c_pg * r * adv if surr1 <= surr2 else _ZERO
        for j in range(num_actions):
            lp_j = out[m, j] - lse
            p = math.exp(lp_j)
            d_out[m, j] = d_lp * ((_ONE if j == a else _ZERO) - p) + c_ent * p * (lp_j + ent)
        err = out[m, num_actions] - returns[m]
        d_out[m, num_actions] = c_v * err
        pg_sum -= min(surr1, surr2)
        vl_sum += err * err
        ent_sum += ent
        kl_sum += (r - 1) - log_ratio
    sums[0] = pg_sum
    sums[1] = vl_sum
    sums[2] = ent_sum
    sums[3] = kl_sum


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"arcp", "contract"})
def _backward_step_nb(
    # outputs: dz [B, 4H] (d z_t), dc_out [B, H] (d c_{t-1}, before zeroing where reset)
    dz, dc_out,
    # inputs: dc [B, H] (d c_t, before zeroing where reset_next), d_h [B, H] (the heads' gradient of h_t),
    # dh_rec [B, H] (d z_{t+1} W_hh), gates [B, 4H] (activated i, f, g, o of step t), c_prev, c [B, H]
    # (c_{t-1} before any reset, c_t), reset, reset_next [B] bool
    dc, d_h, dh_rec, gates, c_prev, c, reset, reset_next,
):
    """One step's pointwise backward: ``d z_t`` from ``d h_t`` and ``d c_t`` (the next step's carries zeroed
    where it reset the state), and the carry ``d c_t f_t``. Loads and stores unconditional, and no array both
    read and written (dc in place ran 4x slower: LLVM gave up vectorizing), so the loop vectorizes."""
    batch, hidden = dc.shape
    for b in range(batch):
        keep = not reset[b]
        keep_next = not reset_next[b]
        gr, dzr = gates[b], dz[b]
        gi, gf, gg, go = gr[:hidden], gr[hidden:2 * hidden], gr[2 * hidden:3 * hidden], gr[3 * hidden:]
        dzi, dzf, dzg, dzo = dzr[:hidden], dzr[hidden:2 * hidden], dzr[2 * hidden:3 * hidden], dzr[3 * hidden:]
        c_row, cp_row, dh_row, dr_row, dc_row, dco_row = c[b], c_prev[b], d_h[b], dh_rec[b], dc[b], dc_out[b]
        for j in range(hidden):
            i, f, g, o = gi[j], gf[j], gg[j], go[j]
            tc = tanh_nb(c_row[j])
            cp = cp_row[j]
            cp = cp if keep else _ZERO
            dr = dr_row[j]
            dh = dh_row[j] + (dr if keep_next else _ZERO)
            dcn = dc_row[j]
            d_c = (dcn if keep_next else _ZERO) + dh * o * (_ONE - tc * tc)
            dzi[j] = d_c * g * i * (_ONE - i)
            dzf[j] = d_c * cp * f * (_ONE - f)
            dzg[j] = d_c * i * (_ONE - g * g)
            dzo[j] = dh * tc * o * (_ONE - o)
            dco_row[j] = d_c * f


class _Workspace(threading.local):
    """Buffers kept from one call to the next (per thread), each a flat float32 (or bool) array grown on
    demand and viewed with the shape a call needs: fresh multi-megabyte buffers at every minibatch cost more in
    first-touch page faults than the pointwise passes that fill them (measured: 4x on the backward pass)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple, dtype=torch.float32) -> torch.Tensor:
        size = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(size, dtype=dtype)
        return buf[:size].view(shape)


_WORKSPACE = _Workspace()


def _block_numba(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, packed, clip, factors):
    """Forward and backward of one block of sequences (inputs contiguous, float32 on the CPU; ``packed`` from
    :func:`_pack`, ``factors`` the three gradient factors ``scale / M``, ``scale vf_coef / M``,
    ``scale ent_coef / M`` of the whole minibatch). Returns the block's sums: ``(d [W_ih | b | W_hh]
    [4H, X + 1 + H], d [W_pi; w_v] [A + 1, H], d [b_pi; b_v] [A + 1], loss-term sums [4] float64)``."""
    w_cat_t, w_hh, w_head, b_head = packed
    steps, batch, isz = obs.shape
    hidden = w_hh.shape[1]
    width = w_head.shape[0]                                    # A + 1
    m = steps * batch
    # forward: per step one GEMM [x_t, 1, h_{t-1}] [W_ih | b_ih + b_hh | W_hh]^T and one pointwise pass
    ws = _WORKSPACE
    xh = ws.take("xh", (steps + 1, batch, isz + 1 + hidden))  # row T: the unused operand the last step writes
    xh[:steps, :, :isz] = obs
    xh[:, :, isz] = 1.0
    xh[0, :, isz + 1:] = h0
    xh[0, :, isz + 1:].masked_fill_(resets[0, :, None], 0.0)
    cs = ws.take("cs", (steps + 1, batch, hidden))            # c_{t-1} in row t
    cs[0] = c0
    gates = ws.take("gates", (steps, batch, 4 * hidden))
    hs = ws.take("hs", (steps, batch, hidden))
    res = ws.take("res", (steps + 1, batch), torch.bool)      # row T: no reset after the last step
    res[:steps] = resets
    res[steps] = False
    hs_np, cs_np, xh_np, gates_np, res_np = hs.numpy(), cs.numpy(), xh.numpy(), gates.numpy(), res.numpy()
    xh_t, gates_t = xh.unbind(0), gates.unbind(0)             # the per-step views, made in one call each
    for t in range(steps):
        torch.mm(xh_t[t], w_cat_t, out=gates_t[t])
        _forward_step_nb(hs_np[t], cs_np[t + 1], xh_np[t + 1], gates_np[t], cs_np[t], res_np[t], res_np[t + 1])
    # heads, loss terms and their gradients
    hs_flat = hs.view(m, hidden)
    out = torch.addmm(b_head, hs_flat, w_head.t(), out=ws.take("out", (m, width)))
    d_out = ws.take("d_out", (m, width))
    sums = np.zeros(4)
    _heads_nb(d_out.numpy(), sums, out.numpy(), actions.reshape(m).numpy(), old_log_probs.reshape(m).numpy(),
              advantages.reshape(m).numpy(), returns.reshape(m).numpy(), np.float32(1 - clip), np.float32(1 + clip),
              *factors)
    d_hs = torch.mm(d_out, w_head, out=ws.take("d_hs", (m, hidden))).numpy().reshape(steps, batch, hidden)
    # backward through time: per step one pointwise pass and one GEMM d z_t W_hh
    dz = ws.take("dz", (steps, batch, 4 * hidden))
    dc = ws.take("dc", (2, batch, hidden)).numpy()            # d c_t and d c_{t-1}, swapped each step
    dc[steps % 2] = 0.0
    dh_rec = ws.take("dh_rec", (batch, hidden)).zero_()      # no step after the last
    dz_np, dh_rec_np, dz_t = dz.numpy(), dh_rec.numpy(), dz.unbind(0)
    for t in reversed(range(steps)):
        _backward_step_nb(dz_np[t], dc[t % 2], dc[(t + 1) % 2], d_hs[t], dh_rec_np, gates_np[t], cs_np[t],
                          cs_np[t + 1], res_np[t], res_np[t + 1])
        if t:
            torch.mm(dz_t[t], w_hh, out=dh_rec)
    # weight gradients: one GEMM each over all steps (the bias's is the ones column's)
    d_w_cat = torch.mm(dz.view(m, 4 * hidden).t(), xh[:steps].view(m, isz + 1 + hidden))
    return d_w_cat, torch.mm(d_out.t(), hs_flat), d_out.sum(0), sums


def _pack(params):
    """``([W_ih | b_ih + b_hh | W_hh]^T [X + 1 + H, 4H], W_hh, [W_pi; w_v] [A + 1, H], [b_pi; b_v])``."""
    w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v = (p.detach() for p in params)
    return (torch.cat([w_ih, (b_ih + b_hh)[:, None], w_hh], 1).t(), w_hh, torch.cat([w_pi, w_v]),
            torch.cat([b_pi, b_v]))


_POOL: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None     # (pid, pool)


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The worker threads (made on first use; made again in a forked child, which has none of its parent's)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        # each worker's own OpenMP team size is 1 (torch's ops in it would otherwise start teams of the core count)
        _POOL = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
            max_workers=MAX_THREADS - 1, thread_name_prefix="metarl-lstm-ppo", initializer=torch.set_num_threads,
            initargs=(1,)))
    return _POOL[1]


def _grads_numba(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, clip, vf_coef,
                 ent_coef, scale, threads):
    """The CPU path of :func:`lstm_ppo_grads` (inputs validated, on the CPU, float32): the sequences in
    ``threads`` blocks, each block's forward and backward on its own thread (the calling thread runs the
    first), their gradient sums added."""
    steps, batch, isz = obs.shape
    m = steps * batch
    packed = _pack(params)
    factors = (np.float32(scale / m), np.float32(scale * vf_coef / m), np.float32(scale * ent_coef / m))
    bounds = [batch * k // threads for k in range(threads + 1)]
    blocks = [[t[:, lo:hi].contiguous() for t in (obs, actions)] + [h0[lo:hi], c0[lo:hi]]
              + [t[:, lo:hi].contiguous() for t in (resets, old_log_probs, advantages, returns)]
              for lo, hi in zip(bounds[:-1], bounds[1:])]
    if threads == 1:
        parts = [_block_numba(*blocks[0], packed, clip, factors)]
    else:
        futures = [_pool().submit(_block_numba, *b, packed, clip, factors) for b in blocks[1:]]
        parts = [_block_numba(*blocks[0], packed, clip, factors)] + [f.result() for f in futures]
    d_w_cat, d_head, d_b_head, sums = (sum(p[k] for p in parts) if len(parts) > 1 else parts[0][k] for k in range(4))
    num_actions = d_head.shape[0] - 1
    d_b = d_w_cat[:, isz]
    grads = (d_w_cat[:, :isz].contiguous(), d_w_cat[:, isz + 1:].contiguous(), d_b.contiguous(), d_b.contiguous(),
             d_head[:num_actions], d_b_head[:num_actions], d_head[num_actions:], d_b_head[num_actions:])
    stats = dict(zip(STATS, (float(sums[0]) / m, 0.5 * float(sums[1]) / m, float(sums[2]) / m,
                             float(sums[3]) / m)))
    return grads, stats


def _grads_torch(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, clip, vf_coef,
                 ent_coef, scale):
    leaves = [p.detach().requires_grad_(True) for p in params]
    with torch.enable_grad():
        loss, stats = lstm_ppo_loss_reference(obs, actions, h0, c0, resets, old_log_probs, advantages, returns,
                                              leaves, clip=clip, vf_coef=vf_coef, ent_coef=ent_coef, scale=scale)
        grads = torch.autograd.grad(loss, leaves)
    return grads, {k: float(v) for k, v in stats.items()}


# ----------------------------------------------------------------------------- public
def lstm_ppo_grads(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, *, clip: float,
                   vf_coef: float, ent_coef: float, scale: float = 1.0, backend: str | None = None,
                   threads: int = 1):
    """Gradients of :func:`lstm_ppo_loss_reference`'s loss with respect to ``params``, and its terms.

    Arguments as :func:`lstm_ppo_loss_reference` (``params``: the 8 weight tensors, float32, on one device;
    they need not require grad and get none). ``backend``: ``None`` (``"numba"`` on the CPU, ``"torch"``
    elsewhere), ``"numba"`` or ``"torch"`` (autograd through the reference). ``threads``: the Numba path's
    threads (at most ``MAX_THREADS`` and B), one block of sequences each. Returns ``(grads, stats)``:
    ``grads`` one new tensor per parameter, same shapes (``d b_ih`` and ``d b_hh`` equal, distinct tensors),
    ``stats`` ``{policy_loss, value_loss, entropy, approx_kl}`` (floats: the minibatch means, unscaled).
    """
    if not isinstance(params, (tuple, list)) or len(params) != 8:
        raise TypeError("params must be a sequence (w_ih, w_hh, b_ih, b_hh, w_pi, b_pi, w_v, b_v)")
    w_ih, w_hh = params[0], params[1]
    check_tensor("params[1] (w_hh)", w_hh, (None, None), torch.float32, None)
    dev, hidden = w_hh.device, w_hh.shape[1]
    check_tensor("params[1] (w_hh)", w_hh, (4 * hidden, hidden), torch.float32, dev)
    check_tensor("obs", obs, (None, None, None), torch.float32, dev, like="the weights")
    steps, batch, isz = obs.shape
    if steps < 1 or batch < 1:
        raise ValueError(f"obs must have at least one step and one sequence, got shape {tuple(obs.shape)}")
    check_tensor("params[0] (w_ih)", w_ih, (4 * hidden, isz), torch.float32, dev, like="the weights")
    check_tensor("params[2] (b_ih)", params[2], (4 * hidden,), torch.float32, dev, like="the weights")
    check_tensor("params[3] (b_hh)", params[3], (4 * hidden,), torch.float32, dev, like="the weights")
    check_tensor("params[4] (w_pi)", params[4], (None, hidden), torch.float32, dev, like="the weights")
    num_actions = params[4].shape[0]
    if num_actions < 1:
        raise ValueError("params[4] (w_pi) must have at least one row (action)")
    check_tensor("params[5] (b_pi)", params[5], (num_actions,), torch.float32, dev, like="the weights")
    check_tensor("params[6] (w_v)", params[6], (1, hidden), torch.float32, dev, like="the weights")
    check_tensor("params[7] (b_v)", params[7], (1,), torch.float32, dev, like="the weights")
    check_tensor("h0", h0, (batch, hidden), torch.float32, dev, like="the weights")
    check_tensor("c0", c0, (batch, hidden), torch.float32, dev, like="the weights")
    check_tensor("resets", resets, (steps, batch), torch.bool, dev)
    check_tensor("actions", actions, (steps, batch), torch.int64, dev)
    for name, t in (("old_log_probs", old_log_probs), ("advantages", advantages), ("returns", returns)):
        check_tensor(name, t, (steps, batch), torch.float32, dev, like="the weights")
    lo, hi = int(actions.min()), int(actions.max())
    if lo < 0 or hi >= num_actions:
        raise ValueError(f"actions must lie in [0, {num_actions}), got values in [{lo}, {hi}]")
    for name, v in (("clip", clip), ("vf_coef", vf_coef), ("ent_coef", ent_coef), ("scale", scale)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{name} must be a finite float, got {v!r}")
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    if backend is None:
        backend = "numba" if dev.type == "cpu" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "numba" and dev.type != "cpu":
        raise ValueError(f"backend 'numba' runs on the CPU, the tensors are on {dev}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    args = (obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, float(clip), float(vf_coef),
            float(ent_coef), float(scale))
    if backend == "torch":
        return _grads_torch(*args)
    return lstm_ppo_grads_unchecked(*args, min(threads, MAX_THREADS))


def lstm_ppo_grads_unchecked(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, clip,
                             vf_coef, ent_coef, scale, threads=1):
    """:func:`lstm_ppo_grads` on the CPU (``"numba"``) without validation: inputs float32 on the CPU with the
    documented shapes (non-contiguous ones are copied), ``1 <= threads <= MAX_THREADS``."""
    threads = max(1, min(threads, obs.shape[1]))
    with torch.no_grad():
        if threads == 1:
            return _grads_numba(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, clip,
                                vf_coef, ent_coef, scale, 1)
        with _one_torch_thread():   # one thread per block: torch's own pool (MKL's GEMMs) stays at one
            return _grads_numba(obs, actions, h0, c0, resets, old_log_probs, advantages, returns, params, clip,
                                vf_coef, ent_coef, scale, threads)


@contextlib.contextmanager
def _one_torch_thread():
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)
