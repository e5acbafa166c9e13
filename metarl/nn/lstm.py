"""Drop-in ``torch.nn.LSTM`` / ``torch.nn.LSTMCell`` on metarl's kernels, plus a ``reset`` mask.

Both classes subclass torch's, so constructor arguments, parameter names and shapes,
initialisation (U(-1/sqrt(H), 1/sqrt(H)), in torch's order: the same seed gives the
same weights), ``state_dict`` and ``isinstance(m, torch.nn.LSTM)`` are torch's own;
only ``forward`` differs: it runs :mod:`metarl.kernels.lstm` (the fused CPU path for
float32, Triton on CUDA, the reference otherwise) and takes an optional ``reset``.

Not supported (ValueError at construction): ``dropout > 0``, ``bidirectional=True``,
``proj_size > 0``; PackedSequence input (TypeError); ``torch.jit.script`` (TypeError: TorchScript
is deprecated; use torch.compile or torch.export, or torch.jit.trace).

torch.compile and torch.export trace both modules with no graph break: the kernels (and, for
``LSTM``, torch's fused LSTM, which Inductor fails on with gradients on the CPU in torch 2.13) run as
``torch.library`` ops. Dynamo refuses every ``torch.nn.LSTM`` subclass unless
``torch._dynamo.config.allow_rnn = True``; metarl does not set that global flag for you (it would
also make Dynamo trace your plain ``torch.nn.LSTM`` modules, which then fail in Inductor that way).
"""
from __future__ import annotations

import torch

from metarl.kernels._checks import check_device, tracing
from metarl.kernels.lstm import (
    check_reset,
    lstm_cell_unchecked,
    lstm_sequence_unchecked,
    resolve_backend,
)


def _check_input(name, t, dims, size, dtype, device):
    if isinstance(t, torch.nn.utils.rnn.PackedSequence):
        raise TypeError(f"{name}: PackedSequence is not supported by metarl.nn; pass a padded tensor (and reset)")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the parameters' dtype), got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the parameters' device), got one on {t.device}")
    if t.dim() not in dims:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in dims)} input, got {t.dim()}-D "
                         f"shape {list(t.shape)}")
    if t.shape[-1] != size:
        raise ValueError(f"{name}: expected last dimension input_size={size}, got shape {list(t.shape)}")


def _check_state(name, t, shape, dtype, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {t.device}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")


def _split_hx(hx):
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx: expected a tuple (h, c) of two tensors, got {type(hx).__name__}")
    return hx


def refuse_scripting(module: torch.nn.Module):
    """``__prepare_scriptable__`` of metarl's modules: ``torch.jit.script`` calls it first, and it refuses.
    TorchScript is deprecated in PyTorch and cannot call metarl's kernels; the tracers can."""
    raise TypeError(f"{type(module).__module__}.{type(module).__qualname__} does not support torch.jit.script "
                    "(TorchScript is deprecated and cannot run metarl's Numba/Triton kernels): use "
                    "torch.compile(module) or torch.export.export(module, args); torch.jit.trace works too")


class LSTM(torch.nn.LSTM):
    """``torch.nn.LSTM`` with metarl's kernels and an optional per-step ``reset`` mask.

    ``forward(input, hx=None, reset=None) -> (output, (h_n, c_n))`` exactly as torch's:
    ``input`` is ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``) or unbatched ``[T, I]``;
    ``hx = (h_0, c_0)`` each ``[num_layers, B, H]`` (``[num_layers, H]`` unbatched).
    ``reset`` (bool, optional) is time-major ``[T, B]`` — also with ``batch_first`` —
    (``[T]`` unbatched) and zeroes h and c of every layer of a sequence *before* that
    step (an episode or trial starts there).
    ``backend`` (keyword): None picks per device — on the CPU torch's own fused LSTM per
    reset-free segment ("aten", the fastest measured), Triton on CUDA; "aten", "numba",
    "triton" or "torch" (the reference) force one.

    Example::

        >>> import torch, metarl.nn
        >>> ref = torch.nn.LSTM(16, 32, num_layers=2)
        >>> lstm = metarl.nn.LSTM(16, 32, num_layers=2)
        >>> _ = lstm.load_state_dict(ref.state_dict())
        >>> x = torch.randn(10, 4, 16)
        >>> out, (h, c) = lstm(x)
        >>> bool(torch.allclose(out, ref(x)[0], atol=1e-5))
        True
        >>> reset = torch.zeros(10, 4, dtype=torch.bool); reset[5, 0] = True   # env 0 restarts at t = 5
        >>> out, (h, c) = lstm(x, reset=reset)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, backend=None):
        if dropout:
            raise ValueError(f"dropout: metarl.nn.LSTM supports 0.0 only, got {dropout}")
        if bidirectional:
            raise ValueError("bidirectional: metarl.nn.LSTM is unidirectional (bidirectional=False)")
        if proj_size:
            raise ValueError(f"proj_size: metarl.nn.LSTM supports 0 only, got {proj_size}")
        if device is not None:
            check_device(device)   # a clear ValueError for CUDA on a machine without it
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)
        _check_backend(backend)
        self.backend = backend

    __prepare_scriptable__ = refuse_scripting

    def _layer_weights(self):
        if self.bias:
            return [(getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                     getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")) for k in range(self.num_layers)]
        return [(getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), None, None)
                for k in range(self.num_layers)]

    def forward(self, input, hx=None, reset=None):  # noqa: A002 - torch's argument name
        w0 = self._flat_weights[0]
        if reset is None and _use_aten(self.backend, w0.device) and not tracing():
            # nothing of metarl's to do: metarl's checks (its error types and messages), then torch's
            # own forward and kernel, with no per-call work beyond them (B = 1 inference)
            _check_input("input", input, (2, 3), self.input_size, w0.dtype, w0.device)
            if hx is not None:
                h0, c0 = _split_hx(hx)
                lead = (input.shape[1 - int(self.batch_first)],) if input.dim() == 3 else ()
                shape = (self.num_layers, *lead, self.hidden_size)
                _check_state("hx[0] (h_0)", h0, shape, w0.dtype, w0.device)
                _check_state("hx[1] (c_0)", c0, shape, w0.dtype, w0.device)
            if input.shape[int(self.batch_first) if input.dim() == 3 else 0] == 0:
                raise ValueError("input: the sequence must have at least one step")
            return torch.nn.LSTM.forward(self, input, hx)
        weights = self._layer_weights()
        dtype, device = weights[0][0].dtype, weights[0][0].device
        _check_input("input", input, (2, 3), self.input_size, dtype, device)
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError("input: the sequence must have at least one step")
        state_shape = (self.num_layers, batch, self.hidden_size) if batched else (self.num_layers, self.hidden_size)
        if hx is None:
            h0 = c0 = torch.zeros(self.num_layers, batch, self.hidden_size, dtype=dtype, device=device)
        else:
            h0, c0 = _split_hx(hx)
            _check_state("hx[0] (h_0)", h0, state_shape, dtype, device)
            _check_state("hx[1] (c_0)", c0, state_shape, dtype, device)
            if not batched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        if reset is not None:
            # time-major [T, B] whatever the input's layout (the contract); [T] unbatched
            lead = tuple(x.shape[:2]) if batched else tuple(input.shape[:1])
            check_reset(reset, lead, device)
            reset = (reset if batched else reset.unsqueeze(1)).contiguous()
        backend = "aten" if _use_aten(self.backend, device) else resolve_backend(self.backend, device, dtype)
        if backend == "numba":
            x = x.contiguous()
        out, h_n, c_n = lstm_sequence_unchecked(x, h0, c0, weights, reset, backend=backend, zero_state=hx is None,
                                                train=self.training)
        if not batched:
            return out.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (h_n, c_n)


def _check_backend(backend) -> None:
    if backend not in (None, "aten", "cpu", "numba", "triton", "torch"):
        raise ValueError(f"backend must be None, 'aten', 'numba', 'triton' or 'torch', got {backend!r}")


def _use_aten(backend, device) -> bool:
    """On the CPU metarl's nn modules default to torch's own fused LSTM ("aten"): measured
    faster than the GEMM + Numba pointwise path (bench/RESULTS.md); ``backend="numba"``
    still selects metarl's kernel."""
    return backend == "aten" or (backend is None and device.type == "cpu")


class LSTMCell(torch.nn.LSTMCell):
    """``torch.nn.LSTMCell`` with metarl's kernels and an optional ``reset`` mask.

    ``forward(input, hx=None, reset=None) -> (h', c')``: ``input`` ``[B, I]`` or ``[I]``,
    ``hx = (h, c)`` each ``[B, H]`` or ``[H]``; ``reset`` (bool ``[B]``, or 0-d unbatched)
    zeroes h and c of those rows before the step.

    Example::

        >>> import torch, metarl.nn
        >>> cell = metarl.nn.LSTMCell(16, 32)
        >>> h, c = cell(torch.randn(8, 16))                        # zero initial state
        >>> done = torch.tensor([True] + [False] * 7)
        >>> h, c = cell(torch.randn(8, 16), (h, c), reset=done)    # env 0 starts a new episode
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend=None):
        if device is not None:
            check_device(device)   # a clear ValueError for CUDA on a machine without it
        super().__init__(input_size, hidden_size, bias, device, dtype)
        _check_backend(backend)
        self.backend = backend

    __prepare_scriptable__ = refuse_scripting

    def forward(self, input, hx=None, reset=None):  # noqa: A002 - torch's argument name
        dtype, device = self.weight_ih.dtype, self.weight_ih.device
        _check_input("input", input, (1, 2), self.input_size, dtype, device)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        batch = x.shape[0]
        state_shape = (batch, self.hidden_size) if batched else (self.hidden_size,)
        if hx is None:
            h = c = torch.zeros(batch, self.hidden_size, dtype=dtype, device=device)
        else:
            h, c = _split_hx(hx)
            _check_state("hx[0] (h)", h, state_shape, dtype, device)
            _check_state("hx[1] (c)", c, state_shape, dtype, device)
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        if reset is not None:
            check_reset(reset, (batch,) if batched else (), device)
            reset = reset.reshape(1) if not batched else reset.contiguous()
        if _use_aten(self.backend, device):
            if reset is not None:
                h, c = torch.where(reset[:, None], 0.0, h), torch.where(reset[:, None], 0.0, c)
            h_new, c_new = torch.nn.LSTMCell.forward(self, x, (h, c))
        else:
            backend = resolve_backend(self.backend, device, dtype)
            if backend == "numba":
                x, h, c = x.contiguous(), h.contiguous(), c.contiguous()
            h_new, c_new = lstm_cell_unchecked(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih,
                                               self.bias_hh, reset, backend=backend)
        if not batched:
            return h_new.squeeze(0), c_new.squeeze(0)
        return h_new, c_new
