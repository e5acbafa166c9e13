"""metarl.nn.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell, and every LSTM kernel
backend against the reference (kernels/lstm.py).

Tolerances (float32): outputs and states atol 2e-6 + rtol 1e-5 against torch (the fused
CPU path's rational tanh is within 4e-7 of tanh); gradients atol 1e-5, rtol 1e-4 (the
backward recomputes through the reference, so only summation order differs).
"""
import pytest
import torch

import metarl.nn
from metarl.backend import available
from metarl.kernels import lstm as K

FWD_TOL = {"atol": 2e-6, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}
KERNEL_BACKENDS = [b for b in ("torch", "numba", "triton") if available()[b]]
# the modules also run torch's own fused LSTM per reset-free segment ("aten", the CPU default)
MODULE_BACKENDS = ["aten", "numba"]

# (T, B, I, H, num_layers, bias, batch_first) and what each row exercises
SEQ_CASES = [
    (5, 3, 16, 32, 1, True, False),   # plain
    (4, 1, 7, 13, 1, True, False),    # B = 1, odd (prime) H, odd I
    (3, 5, 16, 48, 2, True, False),   # two layers, H not a power of two
    (4, 6, 10, 13, 2, False, True),   # no bias, batch_first, odd H
    (1, 2, 3, 17, 1, True, True),     # T = 1, H just past a 16-block
]


def _pair(input_size, hidden_size, num_layers, bias, batch_first, backend=None):
    ref = torch.nn.LSTM(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first)
    mine = metarl.nn.LSTM(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                          backend=backend)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def _grads(module, loss_fn, *inputs):
    """Loss value's gradients w.r.t. ``inputs`` and every parameter, in order."""
    for p in module.parameters():
        p.grad = None
    xs = [t.detach().clone().requires_grad_(True) for t in inputs]
    loss = loss_fn(module, *xs)
    loss.backward()
    return [t.grad for t in xs] + [p.grad for p in module.parameters()]


def _assert_all_close(a, b, tol):
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, **tol, msg=lambda m, k=k: f"item {k}: {m}")


# ----------------------------------------------------------------------------- module parity
@pytest.mark.parametrize("backend", MODULE_BACKENDS)
@pytest.mark.parametrize("case", SEQ_CASES)
def test_lstm_matches_torch(case, backend):
    steps, batch, isz, hid, layers, bias, batch_first = case
    ref, mine = _pair(isz, hid, layers, bias, batch_first, backend)
    x = torch.randn((batch, steps, isz) if batch_first else (steps, batch, isz))
    h0, c0 = torch.randn(layers, batch, hid), torch.randn(layers, batch, hid)
    w_out = torch.randn((batch, steps, hid) if batch_first else (steps, batch, hid))
    w_h, w_c = torch.randn(layers, batch, hid), torch.randn(layers, batch, hid)

    for hx in (None, (h0, c0)):
        with torch.no_grad():
            out_r, (h_r, c_r) = ref(x, hx)
            out_m, (h_m, c_m) = mine(x, hx)
        _assert_all_close([out_m, h_m, c_m], [out_r, h_r, c_r], FWD_TOL)

    def loss(m, x, h0, c0):
        out, (h, c) = m(x, (h0, c0))
        return (out * w_out).sum() + (h * w_h).sum() + (c * w_c).sum()

    _assert_all_close(_grads(mine, loss, x, h0, c0), _grads(ref, loss, x, h0, c0), GRAD_TOL)


def test_lstm_unbatched_matches_torch():
    ref, mine = _pair(6, 13, 2, True, False)
    x = torch.randn(5, 6)
    hx = (torch.randn(2, 13), torch.randn(2, 13))
    out_r, (h_r, c_r) = ref(x, hx)
    out_m, (h_m, c_m) = mine(x, hx)
    assert out_m.shape == (5, 13) and h_m.shape == (2, 13)
    _assert_all_close([out_m, h_m, c_m], [out_r, h_r, c_r], FWD_TOL)
    out_m, _ = mine(x)
    torch.testing.assert_close(out_m, ref(x)[0], **FWD_TOL)


@pytest.mark.parametrize("batch, isz, hid, bias", [
    (1, 5, 13, True),      # B = 1, odd H
    (7, 16, 48, True),     # odd B, H not a power of two
    (4, 3, 20, False),     # no bias
])
def test_cell_matches_torch(batch, isz, hid, bias):
    ref = torch.nn.LSTMCell(isz, hid, bias=bias)
    mine = metarl.nn.LSTMCell(isz, hid, bias=bias)
    mine.load_state_dict(ref.state_dict())
    x, h, c = torch.randn(batch, isz), torch.randn(batch, hid), torch.randn(batch, hid)
    with torch.no_grad():
        _assert_all_close(list(mine(x, (h, c))), list(ref(x, (h, c))), FWD_TOL)
        _assert_all_close(list(mine(x)), list(ref(x)), FWD_TOL)
        _assert_all_close(list(mine(x[0], (h[0], c[0]))), list(ref(x[0], (h[0], c[0]))), FWD_TOL)  # unbatched
    w_h, w_c = torch.randn(batch, hid), torch.randn(batch, hid)

    def loss(m, x, h, c):
        h1, c1 = m(x, (h, c))
        return (h1 * w_h).sum() + (c1 * w_c).sum()

    _assert_all_close(_grads(mine, loss, x, h, c), _grads(ref, loss, x, h, c), GRAD_TOL)


def test_float64_module_matches_torch():
    """Non-float32 parameters run the reference (any dtype torch supports)."""
    ref = torch.nn.LSTM(4, 9, 2, dtype=torch.float64)
    mine = metarl.nn.LSTM(4, 9, 2, dtype=torch.float64)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    _assert_all_close(list(mine(x)[1]) + [mine(x)[0]], list(ref(x)[1]) + [ref(x)[0]], {"atol": 1e-12, "rtol": 0})


# ----------------------------------------------------------------------------- state dict
def test_state_dict_round_trip_both_ways():
    for layers, bias in ((1, True), (2, False)):
        ref = torch.nn.LSTM(5, 11, layers, bias=bias)
        mine = metarl.nn.LSTM(5, 11, layers, bias=bias)
        assert list(mine.state_dict()) == list(ref.state_dict())
        mine.load_state_dict(ref.state_dict(), strict=True)
        back = torch.nn.LSTM(5, 11, layers, bias=bias)
        back.load_state_dict(mine.state_dict(), strict=True)
        for k, v in ref.state_dict().items():
            assert torch.equal(back.state_dict()[k], v), k
    ref_cell, cell = torch.nn.LSTMCell(5, 11), metarl.nn.LSTMCell(5, 11)
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    cell.load_state_dict(ref_cell.state_dict(), strict=True)
    ref_cell.load_state_dict(cell.state_dict(), strict=True)


def test_same_seed_same_init_as_torch():
    """U(-1/sqrt(H), 1/sqrt(H)) drawn in torch's order: the same seed gives the same weights."""
    torch.manual_seed(3)
    ref = torch.nn.LSTM(5, 12, 2)
    torch.manual_seed(3)
    mine = metarl.nn.LSTM(5, 12, 2)
    for (k, v), w in zip(ref.state_dict().items(), mine.state_dict().values()):
        assert torch.equal(v, w), k
    assert all(p.abs().max() <= 12 ** -0.5 for p in mine.parameters())
    assert isinstance(mine, torch.nn.LSTM) and isinstance(metarl.nn.LSTMCell(2, 3), torch.nn.LSTMCell)


# ----------------------------------------------------------------------------- reset
def _split_runs(ref, x, h0, c0, reset):
    """torch.nn.LSTM on each batch row's segments (split at the reset points), zero state
    at each restart: the (output, h_n, c_n) a reset mask must reproduce."""
    steps, batch = reset.shape
    outs, hs, cs = [], [], []
    for b in range(batch):
        starts = [0] + [t for t in range(1, steps) if reset[t, b]] + [steps]
        hx = (h0[:, b:b + 1], c0[:, b:b + 1])
        if reset[0, b]:
            hx = (torch.zeros_like(hx[0]), torch.zeros_like(hx[1]))
        pieces = []
        for lo, hi in zip(starts[:-1], starts[1:]):
            if lo > 0:
                hx = (torch.zeros_like(hx[0]), torch.zeros_like(hx[1]))
            out, hx = ref(x[lo:hi, b:b + 1], hx)
            pieces.append(out)
        outs.append(torch.cat(pieces))
        hs.append(hx[0])
        cs.append(hx[1])
    return torch.cat(outs, 1), torch.cat(hs, 1), torch.cat(cs, 1)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["aten"])
def test_reset_equals_separate_sequences(backend):
    steps, batch, isz, hid, layers = 6, 4, 5, 13, 2
    ref = torch.nn.LSTM(isz, hid, layers)
    mine = metarl.nn.LSTM(isz, hid, layers, backend=backend)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(steps, batch, isz)
    h0, c0 = torch.randn(layers, batch, hid), torch.randn(layers, batch, hid)
    reset = torch.zeros(steps, batch, dtype=torch.bool)
    reset[2, 0] = reset[4, 0] = True   # two restarts in one row
    reset[0, 1] = True                 # restart at the first step: h0, c0 ignored
    reset[5, 2] = True                 # restart at the last step
    # row 3: never reset
    w = torch.randn(steps, batch, hid)

    with torch.no_grad():
        out_m, (h_m, c_m) = mine(x, (h0, c0), reset=reset)
        expect = _split_runs(ref, x, h0, c0, reset)
    _assert_all_close([out_m, h_m, c_m], list(expect), FWD_TOL)

    # gradients of the input and the weights through the reset points
    xm, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    (mine(xm, (h0, c0), reset=reset)[0] * w).sum().backward()
    (_split_runs(ref, xr, h0, c0, reset)[0] * w).sum().backward()
    _assert_all_close([xm.grad] + [p.grad for p in mine.parameters()],
                      [xr.grad] + [p.grad for p in ref.parameters()], GRAD_TOL)


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_reset_batch_first_and_cell(backend):
    ref, mine = _pair(3, 8, 1, True, True, backend)
    x = torch.randn(2, 5, 3)                                   # [B, T, I]
    reset_tb = torch.zeros(5, 2, dtype=torch.bool)
    reset_tb[3, 1] = True                                      # reset is [T, B] even with batch_first
    with torch.no_grad():
        out, _ = mine(x, reset=reset_tb)
        expect, _, _ = _split_runs(_as_seq_major(ref), x.transpose(0, 1), torch.zeros(1, 2, 8),
                                   torch.zeros(1, 2, 8), reset_tb)
    torch.testing.assert_close(out, expect.transpose(0, 1), **FWD_TOL)

    ref_cell, cell = torch.nn.LSTMCell(3, 8), metarl.nn.LSTMCell(3, 8, backend=backend)
    cell.load_state_dict(ref_cell.state_dict())
    xc, h, c = torch.randn(3, 3), torch.randn(3, 8), torch.randn(3, 8)
    r = torch.tensor([False, True, False])
    keep = (~r).float()[:, None]
    with torch.no_grad():
        _assert_all_close(list(cell(xc, (h, c), reset=r)), list(ref_cell(xc, (h * keep, c * keep))), FWD_TOL)
        # unbatched cell: a 0-d reset
        _assert_all_close(list(cell(xc[1], (h[1], c[1]), reset=torch.tensor(True))),
                          list(ref_cell(xc[1])), FWD_TOL)


def _as_seq_major(ref):
    m = torch.nn.LSTM(ref.input_size, ref.hidden_size, ref.num_layers)
    m.load_state_dict(ref.state_dict())
    return m


# ----------------------------------------------------------------------------- kernels
def _cell_args(batch, isz, hid, dtype=torch.float32, bias=True):
    x, h, c = torch.randn(batch, isz), torch.randn(batch, hid), torch.randn(batch, hid)
    w_ih, w_hh = torch.randn(4 * hid, isz, dtype=dtype) * 0.3, torch.randn(4 * hid, hid, dtype=dtype) * 0.3
    b_ih = torch.randn(4 * hid, dtype=dtype) if bias else None
    b_hh = torch.randn(4 * hid, dtype=dtype) if bias else None
    reset = torch.rand(batch) < 0.4
    return x, h, c, w_ih, w_hh, b_ih, b_hh, reset


# (B, I, H): 1; odd and prime; just past a Triton block (16 rows, 32 columns)
KERNEL_SHAPES = [(1, 4, 8), (5, 7, 13), (17, 16, 33)]


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_numba_step_poisoned(shape):
    """The fused pointwise kernel: h', c' and the next step's [x, h'] operand, outputs NaN-poisoned."""
    batch, isz, hid = shape
    x, h, c, w_ih, w_hh, b_ih, b_hh, reset = _cell_args(batch, isz, hid)
    reset_next = torch.rand(batch) < 0.5
    x_next = torch.randn(batch, isz)
    gates = torch.cat([x, torch.where(reset[:, None], 0.0, h)], 1) @ torch.cat([w_ih, w_hh], 1).t() + b_ih + b_hh
    h_r, c_r = K.lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih, b_hh, reset)
    xh_r = torch.cat([x_next, torch.where(reset_next[:, None], 0.0, h_r)], 1)
    for kernel in (K._lstm_step_nb, K._lstm_step_serial_nb):
        h_out, c_out, xh = (torch.full(s, float("nan")) for s in ((batch, hid), (batch, hid), (batch, isz + hid)))
        kernel(h_out.numpy(), c_out.numpy(), xh.numpy(), x_next.numpy(), gates.numpy(), c.numpy(),
               reset.numpy(), reset_next.numpy())
        _assert_all_close([h_out, c_out, xh], [h_r, c_r, xh_r], FWD_TOL)


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
@pytest.mark.parametrize("wdtype, tol", [
    (torch.float32, FWD_TOL),
    # bf16 weights: x and h are rounded to bf16 for tl.dot (here already bf16 values);
    # products are exact in fp32, so only summation order differs from the fp32 reference
    (torch.bfloat16, {"atol": 2e-5, "rtol": 1e-4}),
])
@pytest.mark.skipif(not available()["triton"], reason="Triton (or TRITON_INTERPRET=1) unavailable")
def test_triton_cell_poisoned(shape, wdtype, tol):
    batch, isz, hid = shape
    x, h, c, w_ih, w_hh, b_ih, b_hh, reset = _cell_args(batch, isz, hid, wdtype)
    if wdtype == torch.bfloat16:  # operands exact in bf16, so any fp32 -> bf16 rounding mode agrees
        x, h = x.bfloat16().float(), h.bfloat16().float()
    for r in (None, reset):
        h_out, c_out = torch.full((batch, hid), float("nan")), torch.full((batch, hid), float("nan"))
        K._cell_triton(x, h, c, w_ih, w_hh, b_ih, b_hh, r, h_out=h_out, c_out=c_out)
        if wdtype == torch.bfloat16:
            expect = K.lstm_cell_reference(x, h, c, w_ih.float(), w_hh.float(), b_ih.float() + b_hh.float(),
                                           None, r)
        else:
            expect = K.lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih, b_hh, r)
        _assert_all_close([h_out, c_out], list(expect), tol)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_backends(backend, bias):
    x, h, c, w_ih, w_hh, b_ih, b_hh, reset = _cell_args(5, 7, 13, bias=bias)
    for r in (None, reset):
        got = K.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, r, backend=backend)
        _assert_all_close(list(got), list(K.lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih, b_hh, r)), FWD_TOL)
    # gradients through the autograd.Function (backward recomputes the reference)
    leaves = [t.clone().requires_grad_() for t in (x, h, c, w_ih, w_hh)]
    ref_leaves = [t.clone().requires_grad_() for t in (x, h, c, w_ih, w_hh)]
    wh, wc = torch.randn(5, 13), torch.randn(5, 13)
    h1, c1 = K.lstm_cell(*leaves, b_ih, b_hh, reset, backend=backend)
    ((h1 * wh).sum() + (c1 * wc).sum()).backward()
    h1, c1 = K.lstm_cell_reference(*ref_leaves, b_ih, b_hh, reset)
    ((h1 * wh).sum() + (c1 * wc).sum()).backward()
    _assert_all_close([t.grad for t in leaves], [t.grad for t in ref_leaves], GRAD_TOL)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_lstm_sequence_backends(backend):
    steps, batch, isz, hid, layers = 4, 3, 5, 13, 2
    weights = [(torch.randn(4 * hid, isz if k == 0 else hid) * 0.3, torch.randn(4 * hid, hid) * 0.3,
                torch.randn(4 * hid), torch.randn(4 * hid)) for k in range(layers)]
    x = torch.randn(steps, batch, isz)
    h0, c0 = torch.randn(layers, batch, hid), torch.randn(layers, batch, hid)
    reset = torch.rand(steps, batch) < 0.3
    for r in (None, reset):
        got = K.lstm_sequence(x, h0, c0, weights, r, backend=backend)
        _assert_all_close(list(got), list(K.lstm_sequence_reference(x, h0, c0, weights, r)), FWD_TOL)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_module_inputs():
    m = metarl.nn.LSTM(4, 6, 2)
    x = torch.randn(3, 2, 4)
    h = torch.zeros(2, 2, 6)
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(3, 2, 5))                                  # wrong input size
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(3, 2, 1, 4))                               # wrong rank
    with pytest.raises(TypeError, match="input"):
        m(x.double())                                            # dtype differs from the parameters
    with pytest.raises(TypeError, match="input"):
        m(torch.ones(3, 2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(3, 2, 4, device="meta"))                   # wrong device
    with pytest.raises(TypeError, match="input"):
        m(x.numpy())
    with pytest.raises(TypeError, match="PackedSequence"):
        m(torch.nn.utils.rnn.pack_padded_sequence(x, [3, 2]))
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        m(x, (torch.zeros(1, 2, 6), h))                          # wrong num_layers
    with pytest.raises(ValueError, match=r"hx\[1\]"):
        m(x, (h, torch.zeros(2, 3, 6)))                          # wrong batch
    with pytest.raises(TypeError, match=r"hx\[1\]"):
        m(x, (h, h.double()))
    with pytest.raises(TypeError, match="hx"):
        m(x, h)                                                  # not a tuple
    with pytest.raises(ValueError, match="reset"):
        m(x, reset=torch.zeros(2, 3, dtype=torch.bool))          # [B, T] without batch_first
    with pytest.raises(TypeError, match="reset"):
        m(x, reset=torch.zeros(3, 2, dtype=torch.uint8))         # not bool
    with pytest.raises(TypeError, match="reset"):
        m(x, reset=[[False] * 2] * 3)
    for kwargs in ({"dropout": 0.1}, {"bidirectional": True}, {"proj_size": 2}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            metarl.nn.LSTM(4, 6, **kwargs)
    cell = metarl.nn.LSTMCell(4, 6)
    with pytest.raises(ValueError, match="input"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        cell(torch.randn(2, 4), (torch.zeros(3, 6), torch.zeros(2, 6)))
    with pytest.raises(ValueError, match="reset"):
        cell(torch.randn(2, 4), reset=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="reset"):
        cell(torch.randn(2, 4), reset=torch.zeros(2))
    with pytest.raises(ValueError, match="backend"):
        metarl.nn.LSTMCell(4, 6, backend="cuda-magic")(torch.randn(2, 4))


def test_bad_kernel_inputs():
    x, h, c, w_ih, w_hh, b_ih, b_hh, reset = _cell_args(3, 4, 5)
    with pytest.raises(ValueError, match="x"):
        K.lstm_cell(torch.randn(3, 5), h, c, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="c"):
        K.lstm_cell(x, h, torch.randn(2, 5), w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="w_hh"):
        K.lstm_cell(x, h, c, w_ih, torch.randn(4 * 5, 4), b_ih, b_hh)
    with pytest.raises(TypeError, match="h"):
        K.lstm_cell(x, h.double(), c, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="reset"):
        K.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, reset[:2])
    with pytest.raises(TypeError, match="numba"):
        K.lstm_cell(*(t.double() for t in (x, h, c, w_ih, w_hh, b_ih, b_hh)), backend="numba")
    with pytest.raises(ValueError, match="h0"):
        K.lstm_sequence(x[None], h[None, :2], c[None], [(w_ih, w_hh, b_ih, b_hh)])
    with pytest.raises(ValueError, match="T >= 1"):
        K.lstm_sequence(x[None, :0].transpose(0, 1), h[None], c[None], [(w_ih, w_hh, b_ih, b_hh)])
