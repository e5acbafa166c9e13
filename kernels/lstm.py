"""LSTM cell and sequence kernels: the torch.nn.LSTM formula with a per-step state reset.

Gate order and formula are torch's (``torch.nn.LSTMCell``; Hochreiter & Schmidhuber
1997 with the forget gate of Gers et al. 2000)::

    z          = x W_ih^T + b_ih + h W_hh^T + b_hh        # [B, 4H], gates i | f | g | o
    i, f, o    = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o)
    g          = tanh(z_g)
    c'         = f * c + i * g
    h'         = o * tanh(c')

``reset[B]`` (bool) zeroes a row's ``h`` and ``c`` *before* the step (an episode or a
trial starts there); in a sequence ``reset[T, B]`` does so for every layer at step t.

Three implementations side by side, one public function per op
(:func:`lstm_cell`, :func:`lstm_sequence`) dispatching on the device (``backend=``
forces one):

* ``"torch"`` — :func:`lstm_cell_reference` / :func:`lstm_sequence_reference`, the
  oracle, plain PyTorch on any device and dtype.
* ``"numba"`` (the CPU default for float32) — per step ONE BLAS GEMM
  ``[x, h] [W_ih | W_hh]^T + b`` on pre-packed contiguous weights, then ONE fused
  pointwise pass (:func:`_lstm_step_nb`: reset, sigmoids, tanh, cell update, and the
  next step's ``[x, h]`` operand) with a branch-free rational tanh LLVM vectorizes.
  Measured on the 2-core CPU (``bench/lstm.py``) against the alternatives: precomputing
  ``X W_ih^T`` for all T in one GEMM costs more than it saves (K = I is tiny, and the
  ``[T, B, 4H]`` result is written to and read back from DRAM; ~1.4 ms per step at
  B = 1024, H = 256, T = 32, mostly first-touch page faults), while widening the
  recurrent GEMM from K = H to K = I + H is nearly free.
* ``"triton"`` — :func:`_lstm_cell_tl`: ``tl.dot`` for the gate GEMM, gates and cell
  update fused, fp32 or bf16 weights with fp32 accumulation (a sequence launches it
  once per step and layer). CUDA, or the CPU under ``TRITON_INTERPRET=1`` (tests).

Gradients: :class:`torch.autograd.Function` wrappers whose backward recomputes the
forward through the reference and differentiates it (simplest correct choice;
``bench/lstm.py --train`` measures it against torch.nn.LSTM's own backward).

Traced code (torch.compile, torch.export, torch.jit.trace: :func:`metarl.kernels._checks.tracing`)
runs the Numba and Triton paths, and torch's fused LSTM per reset-free segment (``"aten"``,
:func:`lstm_sequence_aten`, metarl.nn's CPU default), as the ``torch.library`` ops
``torch.ops.metarl.lstm_cell`` / ``lstm_sequence``: one opaque node each, a fake implementation for
the shapes, and the backward written out (:func:`lstm_cell_backward_reference`, traced into the
graph; :func:`lstm_sequence_backward_reference`, its own op ``lstm_sequence_backward``). Eager code
calls the kernels directly (an op's dispatch costs tens of microseconds).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from numba import njit, prange

from metarl.kernels import _checks
from metarl.kernels._checks import check_tensor
from metarl.kernels._triton import constexpr, lazy_jit, triton_interpret

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

BACKENDS = ("torch", "numba", "triton")
# Below this many cell elements (B x H) one thread runs the pointwise pass: a parallel
# region costs more than the work.
PARALLEL_MIN_ELEMENTS = 8192
# Triton tile sizes (tl.dot needs every dimension >= 16)
TRITON_BLOCK_B = 16
TRITON_BLOCK_H = 32
TRITON_BLOCK_K = 32


def flops_per_step(batch: int, input_size: int, hidden_size: int) -> int:
    """FLOPs of one cell step: the gate GEMMs ``2 B 4H (I + H)`` (pointwise work, ~ 20 B H, not counted)."""
    return 2 * batch * 4 * hidden_size * (input_size + hidden_size)


# ----------------------------------------------------------------------------- reference
def lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, reset=None):
    """One LSTM step, ``x[B, I], h[B, H], c[B, H] -> (h'[B, H], c'[B, H])`` (torch's formula).

    ``reset[B]`` (bool, optional) zeroes ``h`` and ``c`` of those rows before the step.
    FLOPs: ``2 B 4H (I + H)`` in the two GEMMs, ~20 B H pointwise. Bytes (float32, the
    floor): read x 4BI, h and c 8BH, weights 16H(I + H), biases 32H; write h', c' 8BH.
    """
    if reset is not None:
        keep = ~reset.unsqueeze(-1)
        h = torch.where(keep, h, torch.zeros((), dtype=h.dtype, device=h.device))
        c = torch.where(keep, c, torch.zeros((), dtype=c.dtype, device=c.device))
    gates = x @ w_ih.t() + h @ w_hh.t()  # [B, 4H]
    if b_ih is not None:
        gates = gates + b_ih
    if b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    h_new = o * torch.tanh(c_new)
    return h_new, c_new


def lstm_sequence_reference(x, h0, c0, weights, reset=None):
    """A stacked LSTM over a sequence, layer after layer as torch.nn.LSTM runs it.

    ``x[T, B, I]``, ``h0, c0 [L, B, H]``, ``weights``: one ``(w_ih, w_hh, b_ih, b_hh)``
    per layer (biases may be None); ``reset[T, B]`` (bool, optional) zeroes every
    layer's state of a row before step t. Returns ``(output[T, B, H], h_n[L, B, H], c_n[L, B, H])``.
    Per step and layer: the FLOPs and bytes of :func:`lstm_cell_reference`.
    """
    inp = x
    h_n, c_n = [], []
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        h, c = h0[layer], c0[layer]
        outs = []
        for t in range(inp.shape[0]):
            h, c = lstm_cell_reference(inp[t], h, c, w_ih, w_hh, b_ih, b_hh,
                                       None if reset is None else reset[t])
            outs.append(h)
        inp = torch.stack(outs)
        h_n.append(h)
        c_n.append(c)
    return inp, torch.stack(h_n), torch.stack(c_n)


def _step_grads(gates, c_prev, c_new, grad_h, grad_c):
    """Backward of one step's pointwise part: ``(dz [B, 4H], dc_prev [B, H])`` from the activated
    gates ``[i, f, g, o]`` ``[B, 4H]``, the cell before (after any reset) and after the step, and
    the gradients reaching ``h'`` and ``c'``."""
    i, f, g, o = gates.chunk(4, dim=-1)
    tanh_c = torch.tanh(c_new)
    dc = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
    dz = torch.cat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                    grad_h * tanh_c * o * (1 - o)], dim=-1)
    return dz, dc * f


def _activated_gates(z):
    i, f, g, o = z.chunk(4, dim=-1)
    return torch.cat([torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)], dim=-1)


def lstm_cell_backward_reference(grad_h, grad_c, x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, reset=None):
    """The gradients of :func:`lstm_cell_reference`'s ``(h', c')``, written out (no autograd):
    ``(d x, d h, d c, d w_ih, d w_hh, d b_ih, d b_hh)``, the bias terms None without biases.
    ``grad_h, grad_c [B, H]`` (None: zero). Recomputes the gates (one step's FLOPs), then two
    GEMMs for the inputs' gradients and two for the weights'."""
    grad_h = torch.zeros_like(h) if grad_h is None else grad_h
    grad_c = torch.zeros_like(c) if grad_c is None else grad_c
    if reset is not None:
        keep = ~reset.unsqueeze(-1)
        h = torch.where(keep, h, torch.zeros((), dtype=h.dtype, device=h.device))
        c = torch.where(keep, c, torch.zeros((), dtype=c.dtype, device=c.device))
    z = x @ w_ih.t() + h @ w_hh.t()
    for b in (b_ih, b_hh):
        z = z if b is None else z + b
    gates = _activated_gates(z)
    i, f, g, _ = gates.chunk(4, dim=-1)
    dz, dc = _step_grads(gates, c, f * c + i * g, grad_h, grad_c)
    dh = dz @ w_hh
    if reset is not None:
        dh = torch.where(keep, dh, torch.zeros((), dtype=dh.dtype, device=dh.device))
        dc = torch.where(keep, dc, torch.zeros((), dtype=dc.dtype, device=dc.device))
    db = dz.sum(0) if b_ih is not None or b_hh is not None else None
    return (dz @ w_ih, dh, dc, dz.t() @ x, dz.t() @ h, None if b_ih is None else db, None if b_hh is None else db)


def lstm_sequence_backward_reference(grad_out, grad_h_n, grad_c_n, x, h0, c0, weights, reset=None):
    """The gradients of :func:`lstm_sequence_reference`'s ``(output, h_n, c_n)`` by backpropagation
    through time, written out (no autograd): the forward is recomputed layer by layer keeping each
    step's gates and cells, then each layer is walked backwards in time (per step one GEMM
    ``dz W_hh``; the input and weight gradients as three GEMMs over all T steps at once).

    ``grad_out [T, B, H]``, ``grad_h_n, grad_c_n [L, B, H]`` (each None: zero). Returns
    ``(d x, d h0, d c0, [(d w_ih, d w_hh, d b_ih, d b_hh) per layer])`` (bias terms None without
    biases). Memory: ``T B (6H + I_l)`` floats per layer kept for the backward."""
    steps, batch = x.shape[0], x.shape[1]
    saved, inp = [], x
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        hidden = w_hh.shape[1]
        zx = (inp.reshape(steps * batch, -1) @ w_ih.t()).reshape(steps, batch, 4 * hidden)
        for b in (b_ih, b_hh):
            zx = zx if b is None else zx + b
        h, c = h0[layer], c0[layer]
        h_in, c_in, gates, c_out, outs = [], [], [], [], []
        for t in range(steps):
            if reset is not None:
                keep = ~reset[t].unsqueeze(-1)
                h = torch.where(keep, h, torch.zeros((), dtype=h.dtype, device=h.device))
                c = torch.where(keep, c, torch.zeros((), dtype=c.dtype, device=c.device))
            act = _activated_gates(zx[t] + h @ w_hh.t())
            i, f, g, o = act.chunk(4, dim=-1)
            h_in.append(h)
            c_in.append(c)
            gates.append(act)
            c = f * c + i * g
            h = o * torch.tanh(c)
            c_out.append(c)
            outs.append(h)
        saved.append((inp, h_in, c_in, gates, c_out))
        inp = torch.stack(outs)
    grad_in = torch.zeros_like(inp) if grad_out is None else grad_out
    grads, dh0, dc0 = [None] * len(weights), [None] * len(weights), [None] * len(weights)
    for layer in reversed(range(len(weights))):
        w_ih, w_hh, b_ih, b_hh = weights[layer]
        inp, h_in, c_in, gates, c_out = saved[layer]
        dh = torch.zeros_like(h_in[0]) if grad_h_n is None else grad_h_n[layer]
        dc = torch.zeros_like(c_in[0]) if grad_c_n is None else grad_c_n[layer]
        dz = [None] * steps
        for t in reversed(range(steps)):
            dz[t], dc = _step_grads(gates[t], c_in[t], c_out[t], grad_in[t] + dh, dc)
            dh = dz[t] @ w_hh
            if reset is not None:
                keep = ~reset[t].unsqueeze(-1)
                dh = torch.where(keep, dh, torch.zeros((), dtype=dh.dtype, device=dh.device))
                dc = torch.where(keep, dc, torch.zeros((), dtype=dc.dtype, device=dc.device))
        dh0[layer], dc0[layer] = dh, dc
        dz_all = torch.stack(dz).reshape(steps * batch, -1)                  # [T B, 4H]
        db = dz_all.sum(0) if b_ih is not None or b_hh is not None else None
        grads[layer] = (dz_all.t() @ inp.reshape(steps * batch, -1), dz_all.t() @ torch.stack(h_in).reshape(
            steps * batch, -1), None if b_ih is None else db, None if b_hh is None else db)
        grad_in = (dz_all @ w_ih).reshape(steps, batch, -1)
    return grad_in, torch.stack(dh0), torch.stack(dc0), grads


# ----------------------------------------------------------------------------- aten
def lstm_sequence_aten(x, h0, c0, weights, reset=None, train=False):
    """torch's own fused LSTM (``torch.lstm``: oneDNN on the CPU, cuDNN on CUDA) over each
    reset-free segment of ``x [T, B, I]``: a new segment starts at every step where some row
    resets, whose rows of every layer's (h, c) are zeroed first. Shapes and returns as
    :func:`lstm_sequence_reference`; differentiable by torch. ``train``: torch.lstm's flag (its
    dropout is 0 here). Under RL^2 resets come at trial starts only, so a rollout of whole trials
    is one or a few segments."""
    flat, has_bias = _flatten(weights)
    steps = x.shape[0]
    starts = [] if reset is None else reset.any(1).nonzero().flatten().tolist()
    bounds = sorted({0, *starts}) + [steps]
    h, c = h0, c0
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        if reset is not None:
            zero = reset[s][None, :, None]
            h, c = torch.where(zero, 0.0, h), torch.where(zero, 0.0, c)
        out, h, c = torch.lstm(x[s:e], (h, c), flat, has_bias, len(weights), 0.0, train, False, False)
        outs.append(out)
    return (outs[0] if len(outs) == 1 else torch.cat(outs)), h, c


# ----------------------------------------------------------------------------- numba
# tanh as Eigen's rational minimax approximation (``generic_fast_tanh_float``, the
# one TensorFlow's CPU kernels use): |error| <= 4e-7 against float64 tanh, branch-free,
# so the pointwise loop vectorizes without SVML. sigmoid(x) = (1 + tanh(x / 2)) / 2.
_TANH_CLAMP = np.float32(7.90531110763549805)
_TANH_TINY = np.float32(0.0004)
_A1, _A3, _A5, _A7 = (np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04),
                      np.float32(1.48572235717979e-05), np.float32(5.12229709037114e-08))
_A9, _A11, _A13 = np.float32(-8.60467152213735e-11), np.float32(2.00018790482477e-13), \
    np.float32(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = (np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03),
                      np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06))
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)


@njit(inline="always", cache=True, error_model="numpy")
def tanh_nb(x):
    """float32 tanh, branch-free rational approximation (|error| <= 4e-7)."""
    v = x if x < _TANH_CLAMP else _TANH_CLAMP  # selects, not min/max: they keep the loop vectorizable
    v = v if v > -_TANH_CLAMP else -_TANH_CLAMP
    x2 = v * v
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = v * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return v if abs(x) < _TANH_TINY else p / q


@njit(inline="always", cache=True, error_model="numpy")
def sigmoid_nb(x):
    return _HALF + _HALF * tanh_nb(_HALF * x)


@njit(inline="always", cache=True, error_model="numpy")
def _step_row_nb(b, h_out, c_out, xh_next, x_next, gates, c_prev, reset, reset_next):
    # Vectorized by LLVM (AVX-512 here) because every load is unconditional and each
    # reset a select; error_model="numpy" drops the zero-division check of p / q in tanh_nb.
    hidden = c_out.shape[1]
    isz = x_next.shape[1]
    keep = not reset[b]
    keep_next = not reset_next[b]
    for k in range(isz):  # the next step's GEMM operand [x_{t+1}, h_t]: x part
        xh_next[b, k] = x_next[b, k]
    for j in range(hidden):
        zi, zf, zg, zo = gates[b, j], gates[b, hidden + j], gates[b, 2 * hidden + j], gates[b, 3 * hidden + j]
        cp = c_prev[b, j]
        c = sigmoid_nb(zf) * (cp if keep else _ZERO) + sigmoid_nb(zi) * tanh_nb(zg)
        h = sigmoid_nb(zo) * tanh_nb(c)
        c_out[b, j] = c
        h_out[b, j] = h
        xh_next[b, isz + j] = h if keep_next else _ZERO  # h part, zeroed where the next step resets


@njit(parallel=True, cache=True, error_model="numpy")
def _lstm_step_nb(
    # outputs: h' [B, H], c' [B, H] (may alias c_prev: each element is read, then written),
    # xh_next [B, I + H]: the next step's GEMM operand [x_next, h' masked by reset_next]
    h_out, c_out, xh_next,
    # inputs: x_next [B, I] (I may be 0), gates [B, 4H] = [x, h] [W_ih | W_hh]^T + b_ih + b_hh,
    # c_prev [B, H], reset [B] bool (this step: read c = 0), reset_next [B] bool
    x_next, gates, c_prev, reset, reset_next,
):
    """torch.nn.LSTMCell's pointwise part, fused: ``c' = σ(z_f)(0 if reset else c) + σ(z_i) tanh(z_g)``,
    ``h' = σ(z_o) tanh(c')``, plus the next step's ``[x_next, h']`` row; threads over rows.
    (The h part of ``z`` is zero on reset rows because the previous step wrote h = 0 there.)"""
    for b in prange(c_out.shape[0]):
        _step_row_nb(b, h_out, c_out, xh_next, x_next, gates, c_prev, reset, reset_next)


@njit(cache=True, error_model="numpy")
def _lstm_step_serial_nb(h_out, c_out, xh_next, x_next, gates, c_prev, reset, reset_next):
    """:func:`_lstm_step_nb` on one thread (small B x H)."""
    for b in range(c_out.shape[0]):
        _step_row_nb(b, h_out, c_out, xh_next, x_next, gates, c_prev, reset, reset_next)


def _step_numba(h_out, c_out, xh_next, x_next, gates, c_prev, reset, reset_next):
    """Launch the fused pointwise pass on NumPy views (parallel only when it pays)."""
    if c_out.size >= PARALLEL_MIN_ELEMENTS:
        _lstm_step_nb(h_out, c_out, xh_next, x_next, gates, c_prev, reset, reset_next)
    else:
        _lstm_step_serial_nb(h_out, c_out, xh_next, x_next, gates, c_prev, reset, reset_next)


_PACKED: dict = {}  # id(w_ih) -> (w_ih, w_hh, b_ih, b_hh, versions, w_cat^T, bias)
_PACKED_MAX = 8


def _packed(w_ih, w_hh, b_ih, b_hh):
    """``([W_ih | W_hh]^T, b_ih + b_hh)``: the one-GEMM weights, packed once and cached while
    the same tensors keep the same versions (an optimizer step or load_state_dict bumps them).
    The cache holds the tensors themselves, so an id cannot be reused by another tensor."""
    tensors = [t for t in (w_ih, w_hh, b_ih, b_hh) if t is not None]
    cacheable = not any(t.is_inference() for t in tensors)  # inference tensors have no version counter
    versions = tuple(t._version for t in tensors) if cacheable else None
    hit = _PACKED.get(id(w_ih)) if cacheable else None
    if hit is not None and hit[0] is w_ih and hit[1] is w_hh and hit[2] is b_ih and hit[3] is b_hh \
            and hit[4] == versions:
        return hit[5], hit[6]
    w_cat_t = torch.cat([w_ih.detach(), w_hh.detach()], 1).t()  # [I + H, 4H] view of a [4H, I + H] block
    bias = None
    if b_ih is not None or b_hh is not None:
        bias = sum(b.detach() for b in (b_ih, b_hh) if b is not None)
    if not cacheable:
        return w_cat_t, bias
    if len(_PACKED) >= _PACKED_MAX:
        _PACKED.pop(next(iter(_PACKED)))
    _PACKED[id(w_ih)] = (w_ih, w_hh, b_ih, b_hh, versions, w_cat_t, bias)
    return w_cat_t, bias


def _gemm(xh, w_cat_t, bias, out):
    if bias is None:
        return torch.mm(xh, w_cat_t, out=out)
    return torch.addmm(bias, xh, w_cat_t, out=out)


def _cell_numba(x, h, c, w_ih, w_hh, b_ih, b_hh, reset):
    """CPU cell: ONE GEMM ``[x, h] [W_ih | W_hh]^T + b`` (packed weights) + one fused pointwise pass."""
    batch, hidden = h.shape
    isz = x.shape[1]
    w_cat_t, bias = _packed(w_ih, w_hh, b_ih, b_hh)
    xh = torch.empty(batch, isz + hidden, dtype=x.dtype)
    xh[:, :isz].copy_(x)
    xh[:, isz:].copy_(h)
    if reset is not None:
        xh[:, isz:].masked_fill_(reset[:, None], 0.0)
    gates = _gemm(xh, w_cat_t, bias, torch.empty(batch, 4 * hidden, dtype=x.dtype))
    h_out = torch.empty(batch, hidden, dtype=h.dtype)
    c_out = torch.empty(batch, hidden, dtype=c.dtype)
    reset_np = np.zeros(batch, np.bool_) if reset is None else reset.numpy()
    h_np = h_out.numpy()
    # no next step: the "next operand" is h' itself (x part of width 0, never reset)
    _step_numba(h_np, c_out.numpy(), h_np, np.empty((batch, 0), np.float32), gates.numpy(), c.numpy(), reset_np,
                np.zeros(batch, np.bool_))
    return h_out, c_out


def _sequence_numba(x, h0, c0, weights, reset, zero_state=False):
    """CPU sequence: per layer and step ONE GEMM ``[x_t, h_{t-1}] [W_ih | W_hh]^T + b`` (packed
    weights) and ONE fused pointwise pass, which also writes the next step's ``[x_{t+1}, h_t]``.
    ``zero_state``: h0 = c0 = 0, so step 0 multiplies x_0 by W_ih only."""
    steps, batch = x.shape[0], x.shape[1]
    reset_np = np.zeros((steps + 1, batch), np.bool_)
    if reset is not None:
        reset_np[:steps] = reset.numpy()
    inp = x
    h_n, c_n = [], []
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        hidden, isz = w_hh.shape[1], inp.shape[2]
        w_cat_t, bias = _packed(w_ih, w_hh, b_ih, b_hh)
        xh = torch.empty(batch, isz + hidden, dtype=x.dtype)
        xh[:, :isz].copy_(inp[0])
        xh[:, isz:].copy_(h0[layer])
        if reset is not None:
            xh[:, isz:].masked_fill_(reset[0, :, None], 0.0)
        gates = torch.empty(batch, 4 * hidden, dtype=x.dtype)
        out = torch.empty(steps, batch, hidden, dtype=x.dtype)
        c = c0[layer].clone(memory_format=torch.contiguous_format)
        inp_np, out_np, c_np, xh_np, gates_np = inp.numpy(), out.numpy(), c.numpy(), xh.numpy(), gates.numpy()
        for t in range(steps):
            if t == 0 and zero_state:
                _gemm(inp[0], w_cat_t[:isz], bias, gates)
            else:
                _gemm(xh, w_cat_t, bias, gates)
            # the last step writes an unused next operand (x_{T-1} again) to keep one code path
            _step_numba(out_np[t], c_np, xh_np, inp_np[min(t + 1, steps - 1)], gates_np, c_np,
                        reset_np[t], reset_np[t + 1])
        inp = out
        h_n.append(out[steps - 1])
        c_n.append(c)
    return inp, torch.stack(h_n), torch.stack(c_n)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _dot_tl(a, w, acc, F32: constexpr):
    """``acc + a @ w`` with fp32 accumulation: exact fp32 products (IEEE, no TF32) when ``F32``,
    else the operands' own dtype (bf16 tensor cores)."""
    if F32:
        acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, w, acc)
    return acc


@lazy_jit
def _lstm_cell_tl(
    # outputs [B, H]
    h_out_ptr, c_out_ptr,
    # inputs: x [B, I], h [B, H], c [B, H] (float32), weights [4H, I] and [4H, H]
    # (row-major, float32 or bfloat16), bias [4H] float32 (b_ih + b_hh), reset [B] int8
    x_ptr, h_ptr, c_ptr, w_ih_ptr, w_hh_ptr, bias_ptr, reset_ptr,
    # sizes
    B, I, H,
    # strides (rows; columns are contiguous)
    stride_x, stride_h, stride_c, stride_ho, stride_co,
    # meta-parameters
    HAS_BIAS: constexpr, HAS_RESET: constexpr, F32_DOT: constexpr,
    BLOCK_B: constexpr, BLOCK_H: constexpr, BLOCK_K: constexpr,
):
    """One LSTM step for a ``[BLOCK_B, BLOCK_H]`` tile of the output: the four gate tiles
    ``z_* = x W_ih[*]^T + h W_hh[*]^T + b`` accumulate in float32 through ``tl.dot``
    (x and h cast to the weights' dtype), then torch.nn.LSTMCell's pointwise update.
    Rows with ``reset`` read h = c = 0."""
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_k = tl.arange(0, BLOCK_K)
    mb = offs_b < B
    mh = offs_h < H
    if HAS_RESET:
        keep = mb & (tl.load(reset_ptr + offs_b, mask=mb, other=0) == 0)
    else:
        keep = mb
    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    # x W_ih^T: the weight tile is read transposed, [BLOCK_K, BLOCK_H]
    for k0 in range(0, I, BLOCK_K):
        kk = k0 + offs_k
        mk = kk < I
        a = tl.load(x_ptr + offs_b[:, None] * stride_x + kk[None, :], mask=mb[:, None] & mk[None, :], other=0.0)
        a = a.to(w_ih_ptr.dtype.element_ty)
        w_off = offs_h[None, :] * I + kk[:, None]
        wm = mk[:, None] & mh[None, :]
        acc_i = _dot_tl(a, tl.load(w_ih_ptr + w_off, mask=wm, other=0.0), acc_i, F32_DOT)
        acc_f = _dot_tl(a, tl.load(w_ih_ptr + H * I + w_off, mask=wm, other=0.0), acc_f, F32_DOT)
        acc_g = _dot_tl(a, tl.load(w_ih_ptr + 2 * H * I + w_off, mask=wm, other=0.0), acc_g, F32_DOT)
        acc_o = _dot_tl(a, tl.load(w_ih_ptr + 3 * H * I + w_off, mask=wm, other=0.0), acc_o, F32_DOT)
    # h W_hh^T (reset rows read zeros)
    for k0 in range(0, H, BLOCK_K):
        kk = k0 + offs_k
        mk = kk < H
        a = tl.load(h_ptr + offs_b[:, None] * stride_h + kk[None, :], mask=keep[:, None] & mk[None, :], other=0.0)
        a = a.to(w_hh_ptr.dtype.element_ty)
        w_off = offs_h[None, :] * H + kk[:, None]
        wm = mk[:, None] & mh[None, :]
        acc_i = _dot_tl(a, tl.load(w_hh_ptr + w_off, mask=wm, other=0.0), acc_i, F32_DOT)
        acc_f = _dot_tl(a, tl.load(w_hh_ptr + H * H + w_off, mask=wm, other=0.0), acc_f, F32_DOT)
        acc_g = _dot_tl(a, tl.load(w_hh_ptr + 2 * H * H + w_off, mask=wm, other=0.0), acc_g, F32_DOT)
        acc_o = _dot_tl(a, tl.load(w_hh_ptr + 3 * H * H + w_off, mask=wm, other=0.0), acc_o, F32_DOT)
    if HAS_BIAS:
        acc_i += tl.load(bias_ptr + offs_h, mask=mh, other=0.0)[None, :]
        acc_f += tl.load(bias_ptr + H + offs_h, mask=mh, other=0.0)[None, :]
        acc_g += tl.load(bias_ptr + 2 * H + offs_h, mask=mh, other=0.0)[None, :]
        acc_o += tl.load(bias_ptr + 3 * H + offs_h, mask=mh, other=0.0)[None, :]
    m2 = mb[:, None] & mh[None, :]
    c_prev = tl.load(c_ptr + offs_b[:, None] * stride_c + offs_h[None, :], mask=keep[:, None] & mh[None, :],
                     other=0.0).to(tl.float32)
    # tanh(z) = 2 sigmoid(2z) - 1 (Triton has no tanh in tl)
    c_new = tl.sigmoid(acc_f) * c_prev + tl.sigmoid(acc_i) * (2.0 * tl.sigmoid(2.0 * acc_g) - 1.0)
    h_new = tl.sigmoid(acc_o) * (2.0 * tl.sigmoid(2.0 * c_new) - 1.0)
    tl.store(c_out_ptr + offs_b[:, None] * stride_co + offs_h[None, :], c_new, mask=m2)
    tl.store(h_out_ptr + offs_b[:, None] * stride_ho + offs_h[None, :], h_new, mask=m2)


def _cell_triton(x, h, c, w_ih, w_hh, b_ih, b_hh, reset, h_out=None, c_out=None):
    """Launch :func:`_lstm_cell_tl` (allocates h', c' unless given)."""
    batch, hidden = h.shape
    w_ih, w_hh = w_ih.contiguous(), w_hh.contiguous()
    x = x.contiguous() if x.stride(-1) != 1 else x
    h = h.contiguous() if h.stride(-1) != 1 else h
    c = c.contiguous() if c.stride(-1) != 1 else c
    h_out = torch.empty(batch, hidden, dtype=torch.float32, device=h.device) if h_out is None else h_out
    c_out = torch.empty(batch, hidden, dtype=torch.float32, device=h.device) if c_out is None else c_out
    has_bias = b_ih is not None or b_hh is not None
    bias = None
    if has_bias:
        bias = sum(b.float() for b in (b_ih, b_hh) if b is not None).contiguous()
    reset_i8 = reset.view(torch.int8) if reset is not None else None
    grid = (triton_cdiv(batch, TRITON_BLOCK_B), triton_cdiv(hidden, TRITON_BLOCK_H))
    _lstm_cell_tl[grid](
        h_out, c_out, x, h, c, w_ih, w_hh, bias if has_bias else h_out, reset_i8 if reset is not None else h_out,
        batch, x.shape[1], hidden,
        x.stride(0), h.stride(0), c.stride(0), h_out.stride(0), c_out.stride(0),
        HAS_BIAS=has_bias, HAS_RESET=reset is not None,
        # the interpreter's tl.dot mishandles bf16 operands: it gets the bf16-rounded values in fp32
        F32_DOT=w_ih.dtype == torch.float32 or triton_interpret(),
        BLOCK_B=TRITON_BLOCK_B, BLOCK_H=TRITON_BLOCK_H, BLOCK_K=TRITON_BLOCK_K,
    )
    return h_out, c_out


def _sequence_triton(x, h0, c0, weights, reset, zero_state=False):
    """The cell kernel once per step and layer, writing straight into the output."""
    steps, batch = x.shape[0], x.shape[1]
    inp = x
    h_n, c_n = [], []
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        hidden = w_hh.shape[1]
        out = torch.empty(steps, batch, hidden, dtype=torch.float32, device=x.device)
        c_buf = torch.empty(2, batch, hidden, dtype=torch.float32, device=x.device)
        h, c = h0[layer], c0[layer]
        for t in range(steps):
            _cell_triton(inp[t], h, c, w_ih, w_hh, b_ih, b_hh, None if reset is None else reset[t],
                         h_out=out[t], c_out=c_buf[t % 2])
            h, c = out[t], c_buf[t % 2]
        inp = out
        h_n.append(h)
        c_n.append(c)
    return inp, torch.stack(h_n), torch.stack(c_n)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# ----------------------------------------------------------------------------- dispatch
def resolve_backend(backend: str | None, device: torch.device, dtype: torch.dtype) -> str:
    """The backend for tensors on ``device`` with parameters of ``dtype`` unless forced:
    Triton on CUDA (float32 / bfloat16), the fused Numba path on the CPU (float32),
    the reference otherwise. ``"cpu"`` is an alias of ``"numba"``."""
    if device.type == "cuda" and dtype in (torch.float32, torch.bfloat16) and not _checks.triton_problem("cuda"):
        default = "triton"
    else:
        default = "numba" if device.type == "cpu" and dtype == torch.float32 else "torch"
    backend = _checks.resolve_backend(backend, device, BACKENDS, default=default)
    if backend == "numba" and dtype != torch.float32:
        raise TypeError(f"backend='numba' computes in float32, got {dtype}; use backend='torch'")
    if backend == "triton" and dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"backend='triton' takes float32 or bfloat16 weights, got {dtype}")
    return backend


def _state_dtype_for(backend, dtype):
    return torch.float32 if backend == "triton" else dtype


def _cell_forward(backend, x, h, c, w_ih, w_hh, b_ih, b_hh, reset):
    if backend == "numba":
        return _cell_numba(x, h, c, w_ih, w_hh, b_ih, b_hh, reset)
    if backend == "triton":
        return _cell_triton(x.float(), h.float(), c.float(), w_ih, w_hh, b_ih, b_hh, reset)
    return lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih, b_hh, reset)


def _sequence_forward(backend, x, h0, c0, weights, reset, zero_state=False):
    if backend == "numba":
        return _sequence_numba(x, h0, c0, weights, reset, zero_state)
    if backend == "triton":
        return _sequence_triton(x.float(), h0.float(), c0.float(), weights, reset, zero_state)
    return lstm_sequence_reference(x, h0, c0, weights, reset)


def _flatten(weights):
    """Per-layer tuples -> (flat tensors, has_bias)."""
    has_bias = weights[0][2] is not None
    flat = []
    for w_ih, w_hh, b_ih, b_hh in weights:
        flat += [w_ih, w_hh] + ([b_ih, b_hh] if has_bias else [])
    return flat, has_bias


def _unflatten(flat, has_bias):
    k = 4 if has_bias else 2
    return [tuple(flat[i:i + k]) + ((None, None) if not has_bias else ()) for i in range(0, len(flat), k)]


def _detached(*tensors):
    return [t.detach() if t is not None else None for t in tensors]


def _grad_through_reference(ctx, run, inputs, grad_outputs):
    """Recompute ``run(*inputs)`` through the reference with autograd and differentiate it."""
    needs = ctx.needs_input_grad[2:]  # after (backend, reset)
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(bool(n)) if t is not None else None for t, n in zip(inputs, needs)]
        outs = run(*leaves)
        wrt = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(outs, wrt, grad_outputs, allow_unused=True)) if wrt else iter(())
    return (None, None) + tuple(next(grads) if t is not None and t.requires_grad else None for t in leaves)


class LSTMCellFunction(torch.autograd.Function):
    """The cell with the fast forward; backward recomputes through :func:`lstm_cell_reference`."""

    @staticmethod
    def forward(ctx, backend, reset, x, h, c, w_ih, w_hh, b_ih, b_hh):
        ctx.save_for_backward(x, h, c, w_ih, w_hh, b_ih, b_hh)
        ctx.reset = reset
        return _cell_forward(backend, *_detached(x, h, c, w_ih, w_hh, b_ih, b_hh), reset)

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        reset = ctx.reset

        def run(x, h, c, w_ih, w_hh, b_ih, b_hh):
            return lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih, b_hh, reset)

        return _grad_through_reference(ctx, run, ctx.saved_tensors, (grad_h, grad_c))


class LSTMSequenceFunction(torch.autograd.Function):
    """The sequence with the fast forward; backward recomputes through :func:`lstm_sequence_reference`."""

    @staticmethod
    def forward(ctx, backend, reset, x, h0, c0, has_bias, *flat):
        ctx.save_for_backward(x, h0, c0, *flat)
        ctx.reset, ctx.has_bias = reset, has_bias
        x, h0, c0, *flat = _detached(x, h0, c0, *flat)
        return _sequence_forward(backend, x, h0, c0, _unflatten(flat, has_bias), reset)

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        reset, has_bias = ctx.reset, ctx.has_bias
        saved = ctx.saved_tensors

        def run(x, h0, c0, _has_bias, *flat):
            return lstm_sequence_reference(x, h0, c0, _unflatten(flat, has_bias), reset)

        # the has_bias slot is not a tensor: give it a None input
        grads = _grad_through_reference(ctx, run, saved[:3] + (None,) + saved[3:], (grad_out, grad_h, grad_c))
        return grads


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ----------------------------------------------------------------------------- torch.library ops
# The kernels as custom ops: torch.compile, torch.export and torch.jit.trace cannot trace into Numba
# or a Triton launch, so traced code (_checks.tracing()) calls the ops, each one opaque node with a
# fake implementation for the shapes and an autograd formula.
# Eager code calls the kernels directly: an op's Python dispatch costs tens of microseconds per
# call, as much as a small step. Backends: "numba", "triton" and, for the sequence, "aten" (torch's
# fused LSTM per reset-free segment: the segments are data-dependent, and Inductor in torch 2.13
# fails on the CPU LSTM's backward graph, aten.mkldnn_rnn_layer).
@torch.library.custom_op("metarl::lstm_cell", mutates_args=())
def _lstm_cell_op(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                  b_ih: torch.Tensor | None, b_hh: torch.Tensor | None, reset: torch.Tensor | None,
                  backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    # the weights as given (the same tensors call after call, so the packed-weights cache keeps hitting)
    x, h, c = (t.detach().contiguous() for t in (x, h, c))
    reset = None if reset is None else reset.contiguous()
    return _cell_forward(backend, x, h, c, w_ih, w_hh, b_ih, b_hh, reset)


@_lstm_cell_op.register_fake
def _(x, h, c, w_ih, w_hh, b_ih, b_hh, reset, backend):
    dtype = _state_dtype_for(backend, h.dtype)
    return h.new_empty(h.shape, dtype=dtype), c.new_empty(c.shape, dtype=dtype)


def _lstm_cell_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:8])   # x, h, c, w_ih, w_hh, b_ih, b_hh, reset


def _lstm_cell_grads(ctx, grad_h, grad_c):
    x, h, c, w_ih, w_hh, b_ih, b_hh, reset = ctx.saved_tensors
    grad_h, grad_c = (None if g is None else g.to(h.dtype) for g in (grad_h, grad_c))
    return (*lstm_cell_backward_reference(grad_h, grad_c, x, h, c, w_ih, w_hh, b_ih, b_hh, reset), None, None)


_lstm_cell_op.register_autograd(_lstm_cell_grads, setup_context=_lstm_cell_setup)


@torch.library.custom_op("metarl::lstm_sequence", mutates_args=())
def _lstm_sequence_op(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, weights: list[torch.Tensor],
                      has_bias: bool, reset: torch.Tensor | None, backend: str, zero_state: bool,
                      train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, h0, c0 = (t.detach().contiguous() for t in (x, h0, c0))   # the weights as given: see _lstm_cell_op
    reset = None if reset is None else reset.contiguous()
    layers = _unflatten(list(weights), has_bias)
    with torch.no_grad():
        if backend == "aten":
            return lstm_sequence_aten(x, h0, c0, layers, reset, train)
        return _sequence_forward(backend, x, h0, c0, layers, reset, zero_state)


@_lstm_sequence_op.register_fake
def _(x, h0, c0, weights, has_bias, reset, backend, zero_state, train):
    dtype = _state_dtype_for(backend, x.dtype)
    return (x.new_empty((x.shape[0], x.shape[1], h0.shape[2]), dtype=dtype), h0.new_empty(h0.shape, dtype=dtype),
            c0.new_empty(c0.shape, dtype=dtype))


def _lstm_sequence_setup(ctx, inputs, output):
    x, h0, c0, weights, has_bias, reset = inputs[:6]
    ctx.save_for_backward(x, h0, c0, reset, *weights)
    ctx.has_bias = has_bias


def _lstm_sequence_grads(ctx, grad_out, grad_h, grad_c):
    x, h0, c0, reset, *flat = ctx.saved_tensors
    gx, gh0, gc0, *grad_flat = torch.ops.metarl.lstm_sequence_backward(
        grad_out, grad_h, grad_c, x, h0, c0, flat, ctx.has_bias, reset)
    return gx, gh0, gc0, grad_flat, None, None, None, None, None


_lstm_sequence_op.register_autograd(_lstm_sequence_grads, setup_context=_lstm_sequence_setup)


@torch.library.custom_op("metarl::lstm_sequence_backward", mutates_args=())
def _lstm_sequence_backward_op(grad_out: torch.Tensor | None, grad_h_n: torch.Tensor | None,
                               grad_c_n: torch.Tensor | None, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                               weights: list[torch.Tensor], has_bias: bool,
                               reset: torch.Tensor | None) -> list[torch.Tensor]:
    """:func:`lstm_sequence_backward_reference` as one opaque node: traced, its loop over time
    would be unrolled into the graph (T x L steps to compile)."""
    dtype = x.dtype
    grad_out, grad_h_n, grad_c_n = (None if g is None else g.to(dtype) for g in (grad_out, grad_h_n, grad_c_n))
    gx, gh0, gc0, grads = lstm_sequence_backward_reference(grad_out, grad_h_n, grad_c_n, x, h0, c0,
                                                           _unflatten(list(weights), has_bias), reset)
    flat = [gx, gh0, gc0]
    for g_ih, g_hh, gb_ih, gb_hh in grads:   # the two bias gradients are one tensor: an op's outputs may not alias
        flat += [g_ih, g_hh] + ([] if gb_ih is None else [gb_ih, gb_hh.clone()])
    return flat


@_lstm_sequence_backward_op.register_fake
def _(grad_out, grad_h_n, grad_c_n, x, h0, c0, weights, has_bias, reset):
    return [torch.empty_like(t) for t in (x, h0, c0, *weights)]


def lstm_cell_unchecked(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, reset=None, *, backend="numba"):
    """:func:`lstm_cell` without validation (callers that validated already, e.g. metarl.nn)."""
    if backend == "torch":
        return lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih, b_hh, reset)
    if _checks.tracing():
        return torch.ops.metarl.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, reset, backend)
    if _needs_grad(x, h, c, w_ih, w_hh, b_ih, b_hh):
        return LSTMCellFunction.apply(backend, reset, x, h, c, w_ih, w_hh, b_ih, b_hh)
    with torch.no_grad():
        return _cell_forward(backend, x, h, c, w_ih, w_hh, b_ih, b_hh, reset)


def lstm_sequence_unchecked(x, h0, c0, weights, reset=None, *, backend="numba", zero_state=False, train=False):
    """:func:`lstm_sequence` without validation; ``zero_state``: h0 and c0 are known zeros.
    ``backend`` may also be ``"aten"`` (:func:`lstm_sequence_aten`, with its ``train`` flag)."""
    if backend == "torch":
        return lstm_sequence_reference(x, h0, c0, weights, reset)
    flat, has_bias = _flatten(weights)
    if _checks.tracing():
        return torch.ops.metarl.lstm_sequence(x, h0, c0, flat, has_bias, reset, backend, zero_state, train)
    if backend == "aten":
        return lstm_sequence_aten(x, h0, c0, weights, reset, train)
    if _needs_grad(x, h0, c0, *flat):
        return LSTMSequenceFunction.apply(backend, reset, x, h0, c0, has_bias, *flat)
    with torch.no_grad():
        return _sequence_forward(backend, x, h0, c0, weights, reset, zero_state)


# ----------------------------------------------------------------------------- validation
def check_weights(weights, input_size=None, cell=False):
    """Per-layer ``(w_ih[4H, I_l], w_hh[4H, H], b_ih[4H] | None, b_hh[4H] | None)``; returns
    (dtype, device, H). Errors name ``weights[l].w_ih`` etc. (``w_ih`` etc. when ``cell``)."""
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("weights: expected a non-empty sequence of (w_ih, w_hh, b_ih, b_hh) per layer")

    def name(layer, what):
        return what if cell else f"weights[{layer}].{what}"

    for layer, wts in enumerate(weights):
        if not isinstance(wts, (list, tuple)) or len(wts) != 4:
            raise TypeError(f"weights[{layer}]: expected a tuple (w_ih, w_hh, b_ih, b_hh)")
    w_hh0 = weights[0][1]
    check_tensor(name(0, "w_hh"), w_hh0, (None, None), None, None)
    hidden = w_hh0.shape[1]
    dtype, device = w_hh0.dtype, w_hh0.device
    if not dtype.is_floating_point:
        raise TypeError(f"{name(0, 'w_hh')}: expected a floating dtype, got {dtype}")
    has_bias = weights[0][2] is not None
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        check_tensor(name(layer, "w_hh"), w_hh, (4 * hidden, hidden), dtype, device)
        check_tensor(name(layer, "w_ih"), w_ih, (4 * hidden, input_size if layer == 0 else hidden), dtype, device)
        if (b_ih is not None) != has_bias or (b_hh is not None) != has_bias:
            raise ValueError(f"{name(layer, 'b_ih')}: every layer needs both biases or none")
        if has_bias:
            check_tensor(name(layer, "b_ih"), b_ih, (4 * hidden,), dtype, device)
            check_tensor(name(layer, "b_hh"), b_hh, (4 * hidden,), dtype, device)
    return dtype, device, hidden


def check_reset(reset, shape, device):
    """``reset`` is None or a bool tensor of ``shape`` on ``device``."""
    if reset is None:
        return
    check_tensor("reset", reset, shape, torch.bool, device)


# ----------------------------------------------------------------------------- public
def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, reset=None, *, backend=None):
    """One LSTM step ``(h', c')`` for ``x[B, I]``, ``h, c [B, H]``, weights as torch.nn.LSTMCell's,
    ``reset[B]`` (bool, optional: zero those rows' state first). Differentiable."""
    dtype, device, hidden = check_weights([(w_ih, w_hh, b_ih, b_hh)], None, cell=True)
    check_tensor("x", x, (None, w_ih.shape[1]), dtype, device)
    batch = x.shape[0]
    check_tensor("h", h, (batch, hidden), dtype, device)
    check_tensor("c", c, (batch, hidden), dtype, device)
    check_reset(reset, (batch,), device)
    backend = resolve_backend(backend, device, dtype)
    if backend == "numba":
        x, h, c = x.contiguous(), h.contiguous(), c.contiguous()
    return lstm_cell_unchecked(x, h, c, w_ih, w_hh, b_ih, b_hh, reset if reset is None else reset.contiguous(),
                               backend=backend)


def lstm_sequence(x, h0, c0, weights: Sequence, reset=None, *, backend=None):
    """A stacked LSTM over ``x[T, B, I]`` from ``h0, c0 [L, B, H]``; ``weights``: per layer
    ``(w_ih, w_hh, b_ih, b_hh)`` as torch.nn.LSTM's; ``reset[T, B]`` (bool, optional).
    Returns ``(output[T, B, H], h_n[L, B, H], c_n[L, B, H])``. Differentiable."""
    dtype, device, hidden = check_weights(weights, None if not isinstance(x, torch.Tensor) or x.dim() != 3
                                          else x.shape[2])
    check_tensor("x", x, (None, None, None), dtype, device)
    steps, batch = x.shape[0], x.shape[1]
    if steps == 0:
        raise ValueError("x: the sequence must have at least one step (T >= 1)")
    check_tensor("h0", h0, (len(weights), batch, hidden), dtype, device)
    check_tensor("c0", c0, (len(weights), batch, hidden), dtype, device)
    check_reset(reset, (steps, batch), device)
    backend = resolve_backend(backend, device, dtype)
    if backend == "numba":
        x = x.contiguous()
    return lstm_sequence_unchecked(x, h0, c0, weights, reset if reset is None else reset.contiguous(),
                                   backend=backend)


__all__ = [
    "lstm_cell", "lstm_sequence", "lstm_cell_reference", "lstm_sequence_reference", "resolve_backend",
    "LSTMCellFunction", "LSTMSequenceFunction", "flops_per_step",
]
