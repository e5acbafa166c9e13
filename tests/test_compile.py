"""metarl.nn under torch.compile, torch.export and TorchScript, and the kernels' torch.library ops.

Traced code runs the kernels as custom ops (``torch.ops.metarl.lstm_cell``, ``lstm_sequence``,
``lstm_sequence_backward``, ``actor_critic_step``; metarl.kernels.lstm / .actor_critic), with a
written-out backward. Here:

* the written-out backward against autograd through the reference (float64, tight);
* ``torch.library.opcheck`` on every op (schema, fake implementation, autograd registration,
  AOT dispatch with dynamic shapes);
* ``torch.compile(..., fullgraph=True)`` (a graph break fails the test) of LSTM, LSTMCell and
  RecurrentActorCritic.step / evaluate: outputs and gradients equal eager's to float tolerance;
* ``torch.export.export`` of a small module around each, run and compared with eager;
* ``torch.jit.script`` refused with a clear TypeError, ``torch.jit.trace`` recording the ops.

Tolerances: compiled and exported forwards run the same kernels as eager (Inductor fuses only
the code around them), so outputs agree to FWD_TOL; gradients come from the written-out backward
(compiled) against torch's or the reference's autograd (eager): GRAD_TOL, as tests/test_lstm.py.

Cost: torch.compile's first compile of a graph takes seconds on the CI CPU, so the fast set
compiles one case per module (CPU default or Numba); the Triton (interpreter) and other backend
variants are marked slow.
"""
import warnings

import gymnasium as gym
import pytest
import torch

import metarl.nn
from metarl.backend import available
from metarl.kernels import lstm as K

FWD_TOL = {"atol": 1e-6, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}
SLOW = pytest.mark.slow
TRITON = pytest.mark.skipif(not available()["triton"], reason="Triton is not installed")
# (T, B, I, H, layers): two layers, odd (prime) H and I, B not a power of two
SEQ = (5, 3, 5, 7, 2)


def _compile(fn):
    torch._dynamo.reset()   # fresh caches: no test inherits another's graphs or recompile count
    return torch.compile(fn, fullgraph=True)


def _resets(steps, batch):
    reset = torch.zeros(steps, batch, dtype=torch.bool)
    reset[2, 0] = reset[3, 1] = True   # rows restart at different steps
    return reset


def _weights(sizes, bias, dtype=torch.float64):
    """Per layer (w_ih, w_hh, b_ih, b_hh) for input/hidden ``sizes`` = (I, H, layers)."""
    isz, hid, layers = sizes
    out = []
    for layer in range(layers):
        shapes = [(4 * hid, isz if layer == 0 else hid), (4 * hid, hid), (4 * hid,), (4 * hid,)]
        out.append(tuple(torch.randn(s, dtype=dtype) if bias or k < 2 else None for k, s in enumerate(shapes)))
    return out


def _input_and_param_grads(module, loss_fn, *inputs):
    """``(outputs, grads)``: the module's outputs and the gradients of ``loss_fn(outputs)`` w.r.t.
    ``inputs`` and every parameter, in order."""
    params = [p for _, p in sorted(module.named_parameters())]   # by name: an exported module's order may differ
    for p in params:
        p.grad = None
    xs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = loss_fn(*xs)
    scalar = sum((o * torch.linspace(-1, 1, o.numel(), device=o.device).view(o.shape)).sum()
                 for o in torch.utils._pytree.tree_leaves(out) if o.is_floating_point())
    scalar.backward()
    return out, [t.grad for t in xs] + [p.grad for p in params]


def _assert_close(a, b, tol):
    a, b = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, **tol, msg=lambda m, k=k: f"item {k}: {m}")


# ----------------------------------------------------------------------------- written-out backward
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_reset", [False, True])
def test_backward_references_match_autograd(bias, with_reset):
    steps, batch, isz, hid, layers = SEQ
    weights = _weights((isz, hid, layers), bias)
    x = torch.randn(steps, batch, isz, dtype=torch.float64)
    h0, c0 = torch.randn(layers, batch, hid, dtype=torch.float64), torch.randn(layers, batch, hid, dtype=torch.float64)
    reset = _resets(steps, batch) if with_reset else None
    leaves = [t.requires_grad_(True) for t in (x, h0, c0, *(w for layer in weights for w in layer if w is not None))]
    out = K.lstm_sequence_reference(x, h0, c0, weights, reset)
    grads_out = [torch.randn_like(t) for t in out]
    expected = torch.autograd.grad(out, leaves, grads_out)
    with torch.no_grad():
        gx, gh0, gc0, layer_grads = K.lstm_sequence_backward_reference(*grads_out, x, h0, c0, weights, reset)
    got = [gx, gh0, gc0] + [g for layer in layer_grads for g in layer if g is not None]
    _assert_close(got, list(expected), {"atol": 1e-12, "rtol": 1e-10})

    # one cell step: row 0 resets when with_reset
    cell_reset = reset[2] if with_reset else None
    h1, c1 = K.lstm_cell_reference(x[0], h0[0], c0[0], *weights[0], cell_reset)
    g_h, g_c = torch.randn_like(h1), torch.randn_like(c1)
    cell_leaves = [x, h0, c0] + [w for w in weights[0] if w is not None]
    expected = torch.autograd.grad((h1, c1), cell_leaves, (g_h, g_c))
    with torch.no_grad():
        got = K.lstm_cell_backward_reference(g_h, g_c, x[0], h0[0], c0[0], *weights[0], cell_reset)
    _assert_close([got[0], got[1], got[2]] + [g for g in got[3:] if g is not None],
                  [expected[0][0], expected[1][0], expected[2][0], *expected[3:]], {"atol": 1e-12, "rtol": 1e-10})


def test_sequence_backward_without_upstream_gradients():
    """``None`` gradients (an output the loss does not use) count as zeros."""
    steps, batch, isz, hid, layers = SEQ
    weights = _weights((isz, hid, layers), True)
    x = torch.randn(steps, batch, isz, dtype=torch.float64)
    h0 = c0 = torch.zeros(layers, batch, hid, dtype=torch.float64)
    grad_out = torch.randn(steps, batch, hid, dtype=torch.float64)
    zeros = torch.zeros(layers, batch, hid, dtype=torch.float64)
    with_none = K.lstm_sequence_backward_reference(grad_out, None, None, x, h0, c0, weights)
    with_zeros = K.lstm_sequence_backward_reference(grad_out, zeros, zeros, x, h0, c0, weights)
    _assert_close(with_none, with_zeros, {"atol": 0.0, "rtol": 0.0})


# ----------------------------------------------------------------------------- opcheck
def _seq_args(backend):
    steps, batch, isz, hid, layers = SEQ
    flat = [w.float().requires_grad_(True) for layer in _weights((isz, hid, layers), True) for w in layer]
    x = torch.randn(steps, batch, isz, requires_grad=True)
    h0, c0 = torch.randn(layers, batch, hid, requires_grad=True), torch.randn(layers, batch, hid, requires_grad=True)
    return (x, h0, c0, flat, True, _resets(steps, batch), backend, False, True)


def _cell_args(backend):
    x, h0, c0, flat = _seq_args(backend)[:4]
    return (x[0], h0[0], c0[0], *flat[:4], _resets(SEQ[0], SEQ[1])[2], backend)


def _step_args(discrete, backend):
    obs_dim, hid, bsz, num_out = 5, 7, 3, 4
    space = gym.spaces.Discrete(num_out) if discrete else gym.spaces.Box(-1.0, 1.0, (num_out,))
    policy = metarl.nn.RecurrentActorCritic(obs_dim, space, hid)
    noise = policy.sample_noise((bsz,))
    params = [None if p is None else p.detach() for p in policy._params()]   # the step has no autograd
    return (torch.randn(bsz, obs_dim), torch.randn(bsz, hid), torch.randn(bsz, hid), torch.tensor([True, False, False]),
            noise, *params, "fp32", backend)


def _backward_args():
    x, h0, c0, flat = (t.detach() if isinstance(t, torch.Tensor) else [w.detach() for w in t]
                       for t in _seq_args("numba")[:4])
    grads = (torch.randn(SEQ[0], SEQ[1], SEQ[3]), torch.randn_like(h0), torch.randn_like(c0))
    return (*grads, x, h0, c0, flat, True, _resets(SEQ[0], SEQ[1]))


OPCHECK_CASES = [
    ("lstm_cell", lambda: _cell_args("numba")),
    ("lstm_sequence", lambda: _seq_args("numba")),
    ("lstm_sequence", lambda: _seq_args("aten")),
    ("lstm_sequence_backward", _backward_args),
    ("actor_critic_step", lambda: _step_args(True, "numba")),
    ("actor_critic_step", lambda: _step_args(False, "numba")),
    pytest.param("lstm_cell", lambda: _cell_args("triton"), marks=[SLOW, TRITON]),
    pytest.param("lstm_sequence", lambda: _seq_args("triton"), marks=[SLOW, TRITON]),
    pytest.param("actor_critic_step", lambda: _step_args(True, "triton"), marks=[SLOW, TRITON]),
]


@pytest.mark.parametrize("name,make_args", OPCHECK_CASES)
def test_opcheck(name, make_args, one_thread):
    """torch's own check of a custom op: schema, fake tensors, autograd registration, AOT dispatch."""
    torch.library.opcheck(getattr(torch.ops.metarl, name).default, make_args())


# ----------------------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("backend", [None, "numba", pytest.param("triton", marks=[SLOW, TRITON])])
def test_compile_lstm(backend, one_thread):
    """Forward and backward, with resets and a given state, as one graph; the parameters loaded
    from a torch.nn.LSTM (Dynamo refuses LSTM subclasses without allow_rnn)."""
    steps, batch, isz, hid, layers = SEQ
    ref = torch.nn.LSTM(isz, hid, layers)
    lstm = metarl.nn.LSTM(isz, hid, layers, backend=backend)
    lstm.load_state_dict(ref.state_dict())
    x, h0, c0 = torch.randn(steps, batch, isz), torch.randn(layers, batch, hid), torch.randn(layers, batch, hid)
    reset = _resets(steps, batch)

    def run(module):
        return _input_and_param_grads(lstm, lambda x, h0, c0: module(x, (h0, c0), reset=reset), x, h0, c0)

    eager = run(lstm)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = run(_compile(lstm))
    _assert_close(compiled[0], eager[0], FWD_TOL)
    _assert_close(compiled[1], eager[1], GRAD_TOL)


@pytest.mark.slow
def test_compile_lstm_without_reset_matches_torch(one_thread):
    """The CPU default without ``reset`` (eager: torch.nn.LSTM.forward; compiled: the op) equals
    torch.nn.LSTM, and the compiled graph reads the live parameters after an optimizer step."""
    steps, batch, isz, hid, layers = SEQ
    ref = torch.nn.LSTM(isz, hid, layers, batch_first=True)
    lstm = metarl.nn.LSTM(isz, hid, layers, batch_first=True)
    lstm.load_state_dict(ref.state_dict())
    x = torch.randn(batch, steps, isz)
    with torch._dynamo.config.patch(allow_rnn=True), torch.no_grad():
        compiled = _compile(lstm)
        _assert_close(compiled(x), ref(x), FWD_TOL)
        for p in lstm.parameters():
            p.mul_(0.5)
        ref.load_state_dict(lstm.state_dict())   # and back: the state dict round-trips
        _assert_close(compiled(x), ref(x), FWD_TOL)


@pytest.mark.parametrize("backend", [pytest.param(None, marks=SLOW), "numba",
                                     pytest.param("triton", marks=[SLOW, TRITON])])
def test_compile_lstm_cell(backend, one_thread):
    _, batch, isz, hid, _ = SEQ
    cell = metarl.nn.LSTMCell(isz, hid, backend=backend)
    x, h, c = torch.randn(batch, isz), torch.randn(batch, hid), torch.randn(batch, hid)
    reset = torch.tensor([True] + [False] * (batch - 1))

    def run(module):
        return _input_and_param_grads(cell, lambda x, h, c: module(x, (h, c), reset=reset), x, h, c)

    eager = run(cell)
    compiled = run(_compile(cell))
    _assert_close(compiled[0], eager[0], FWD_TOL)
    _assert_close(compiled[1], eager[1], GRAD_TOL)


STEP_CASES = [(True, "numba"), pytest.param(False, "numba", marks=SLOW), pytest.param(True, "torch", marks=SLOW),
              pytest.param(True, "triton", marks=[SLOW, TRITON]), pytest.param(False, "triton", marks=[SLOW, TRITON])]


@pytest.mark.parametrize("discrete,backend", STEP_CASES)
def test_compile_actor_critic_step(discrete, backend, one_thread):
    """The fused step as one graph: the same actions, log-probs, values and state as eager for the
    same noise, also after the parameters change in place (the kernel op re-packs them)."""
    obs_dim, hid, bsz = 5, 7, 3
    space = gym.spaces.Discrete(4) if discrete else gym.spaces.Box(-1.0, 1.0, (2,))
    policy = metarl.nn.RecurrentActorCritic(obs_dim, space, hid, backend=backend)
    obs, state = torch.randn(bsz, obs_dim), (torch.randn(bsz, hid), torch.randn(bsz, hid))
    reset = torch.tensor([True, False, False])
    noise = policy.sample_noise((bsz,))
    step = _compile(policy.step)
    for _ in range(2):
        eager = policy.step(obs, state, reset, noise=noise)
        _assert_close(step(obs, state, reset, noise=noise), eager, FWD_TOL)
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(0.1 * torch.randn_like(p))


def test_compile_actor_critic_evaluate(one_thread):
    """evaluate (the training pass) as one graph, forward and backward, with resets mid-sequence."""
    steps, bsz, obs_dim, hid = 6, 3, 5, 7
    policy = metarl.nn.RecurrentActorCritic(obs_dim, gym.spaces.Discrete(4), hid)
    obs = torch.randn(steps, bsz, obs_dim)
    actions = torch.randint(0, 4, (steps, bsz))
    reset = _resets(steps, bsz)

    def run(fn):
        return _input_and_param_grads(policy, lambda obs: fn(obs, actions, None, reset), obs)

    eager = run(policy.evaluate)
    compiled_fn = _compile(policy.evaluate)
    compiled = run(compiled_fn)
    _assert_close(compiled[0], eager[0], FWD_TOL)
    _assert_close(compiled[1], eager[1], GRAD_TOL)
    with pytest.raises(RuntimeError, match=r"actions must lie in \[0, 4\)"):
        compiled_fn(obs, actions + 4, None, reset)


@pytest.mark.slow
def test_compile_second_batch_size(one_thread):
    """A second batch size recompiles with a dynamic batch dimension (the ops' fake
    implementations take symbolic sizes) and still matches eager."""
    policy = metarl.nn.RecurrentActorCritic(5, gym.spaces.Discrete(4), 7)
    cell = metarl.nn.LSTMCell(5, 7, backend="numba")
    step, cell_c = _compile(policy.step), torch.compile(cell, fullgraph=True)
    with torch.no_grad():
        for bsz in (3, 6, 9):
            obs, reset = torch.randn(bsz, 5), torch.zeros(bsz, dtype=torch.bool)
            noise = policy.sample_noise((bsz,))
            _assert_close(step(obs, None, reset, noise=noise), policy.step(obs, None, reset, noise=noise), FWD_TOL)
            _assert_close(cell_c(obs), cell(obs), FWD_TOL)


# ----------------------------------------------------------------------------- torch.export
class _LSTM(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.lstm = metarl.nn.LSTM(SEQ[2], SEQ[3], SEQ[4], backend=backend)

    def forward(self, x, reset):
        out, (h, c) = self.lstm(x, reset=reset)
        return out, h, c


class _Cell(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.cell = metarl.nn.LSTMCell(SEQ[2], SEQ[3], backend=backend)

    def forward(self, x, h, c, reset):
        return self.cell(x, (h, c), reset=reset)


class _Step(torch.nn.Module):
    def __init__(self, backend, discrete):
        super().__init__()
        space = gym.spaces.Discrete(4) if discrete else gym.spaces.Box(-1.0, 1.0, (2,))
        self.policy = metarl.nn.RecurrentActorCritic(SEQ[2], space, SEQ[3], backend=backend)

    def forward(self, obs, h, c, reset, noise):
        action, log_prob, value, (h, c) = self.policy.step(obs, (h, c), reset, noise=noise)
        return action, log_prob, value, h, c


class _Evaluate(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.policy = metarl.nn.RecurrentActorCritic(SEQ[2], gym.spaces.Discrete(4), SEQ[3])

    def forward(self, obs, actions, reset):
        return self.policy.evaluate(obs, actions, None, reset)


def _export_case(kind, backend):
    steps, batch, isz, hid, _ = SEQ
    reset = _resets(steps, batch)
    if kind == "lstm":
        return _LSTM(backend), (torch.randn(steps, batch, isz), reset), (torch.randn(steps, batch, isz), reset.flip(0))
    if kind == "cell":
        make = lambda: (torch.randn(batch, isz), torch.randn(batch, hid), torch.randn(batch, hid), reset[2])  # noqa: E731
        return _Cell(backend), make(), make()
    if kind in ("step", "step_gaussian"):
        module = _Step(backend, kind == "step")
        make = lambda: (torch.randn(batch, isz), torch.randn(batch, hid), torch.randn(batch, hid), reset[3],  # noqa: E731
                        module.policy.sample_noise((batch,)))
        return module, make(), make()
    make = lambda: (torch.randn(steps, batch, isz), torch.randint(0, 4, (steps, batch)), reset)  # noqa: E731
    return _Evaluate(), make(), make()


EXPORT_CASES = [("lstm", None), ("lstm", "numba"), ("cell", "numba"), ("step", "numba"), ("step_gaussian", "numba"),
                ("evaluate", None), pytest.param("cell", None, marks=SLOW),
                pytest.param("lstm", "triton", marks=[SLOW, TRITON]),
                pytest.param("cell", "triton", marks=[SLOW, TRITON]),
                pytest.param("step", "triton", marks=[SLOW, TRITON])]


@pytest.mark.parametrize("kind,backend", EXPORT_CASES)
def test_export_round_trip(kind, backend, one_thread):
    """torch.export.export, then the exported program on the traced inputs and on new ones (other
    resets, other values) equals eager; gradients flow through the exported module as in eager."""
    module, args, other = _export_case(kind, backend)
    program = torch.export.export(module, args)
    ops = {node.target.namespace for node in program.graph.nodes if isinstance(node.target, torch._ops.OpOverload)}
    assert ("metarl" in ops) == (kind != "cell" or backend is not None)   # the CPU default cell is torch's own
    assert not any(isinstance(node.target, torch._ops.HigherOrderOperator) for node in program.graph.nodes)
    exported = program.module()
    with torch.no_grad():
        for inputs in (args, other):
            _assert_close(exported(*inputs), module(*inputs), FWD_TOL)
    if kind in ("lstm", "cell", "evaluate"):
        floating = [k for k, a in enumerate(other) if a.is_floating_point()]

        def with_floating(fn):
            def call(*xs):
                inputs = list(other)
                for k, t in zip(floating, xs):
                    inputs[k] = t
                return fn(*inputs)
            return call

        eager = _input_and_param_grads(module, with_floating(module), *[other[k] for k in floating])
        got = _input_and_param_grads(exported, with_floating(exported), *[other[k] for k in floating])
        _assert_close(got[0], eager[0], FWD_TOL)
        _assert_close(got[1], eager[1], GRAD_TOL)


# ----------------------------------------------------------------------------- TorchScript
@pytest.mark.parametrize("make", [lambda: metarl.nn.LSTM(3, 4), lambda: metarl.nn.LSTMCell(3, 4),
                                  lambda: metarl.nn.RecurrentActorCritic(3, gym.spaces.Discrete(2), 4),
                                  lambda: torch.nn.Sequential(metarl.nn.LSTMCell(3, 4))])
def test_jit_script_refused(make):
    """TorchScript is deprecated and cannot call the kernels: a TypeError that names the module and
    points to torch.compile / torch.export (also for a metarl module inside another)."""
    with pytest.raises(TypeError, match=r"metarl\.nn\..*does not support torch\.jit\.script.*torch\.compile"):
        torch.jit.script(make())


def test_jit_trace_records_the_ops():
    """torch.jit.trace records the kernel ops (not their empty outputs): the traced LSTM follows new
    resets and the traced step new parameters, as eager does."""
    steps, batch, isz, hid, _ = SEQ
    module = _LSTM("numba")
    reset = _resets(steps, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, (torch.randn(steps, batch, isz), reset))
        step = _Step("numba", True)
        inputs = (torch.randn(batch, isz), torch.randn(batch, hid), torch.randn(batch, hid), reset[3],
                  step.policy.sample_noise((batch,)))
        traced_step = torch.jit.trace(step, inputs)
    assert "metarl::lstm_sequence" in str(traced.inlined_graph)
    x = torch.randn(steps, batch, isz)
    with torch.no_grad():
        _assert_close(traced(x, reset.flip(0)), module(x, reset.flip(0)), FWD_TOL)
        for p in step.parameters():
            p.mul_(1.5)
        _assert_close(traced_step(*inputs), step(*inputs), FWD_TOL)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("precision,batch", [("fp32", 5), ("tf32", 2048), ("bf16", 2048)])
def test_compile_and_export_on_cuda(precision, batch):
    """On a GPU (the Triton kernels): compiled LSTM, LSTMCell and step, and the exported step, equal
    eager; at B = 2048 the step takes the split kernels, whose interleaved weights the op rebuilds."""
    dev = torch.device("cuda")
    _, _, isz, hid, layers = SEQ
    steps = 4
    lstm = metarl.nn.LSTM(isz, hid, layers, device=dev)
    cell = metarl.nn.LSTMCell(isz, hid, device=dev)
    x, reset = torch.randn(steps, batch, isz, device=dev), torch.zeros(steps, batch, dtype=torch.bool, device=dev)
    reset[1, 0] = True
    with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=True):
        _assert_close(_compile(lstm)(x, reset=reset), lstm(x, reset=reset), FWD_TOL)
        _assert_close(_compile(cell)(x[0], reset=reset[1]), cell(x[0], reset=reset[1]), FWD_TOL)
    module = _Step(None, True).to(dev)
    module.policy.precision = precision
    inputs = (x[0], torch.randn(batch, hid, device=dev), torch.randn(batch, hid, device=dev), reset[1],
              module.policy.sample_noise((batch,)))
    with torch.no_grad():
        eager = module(*inputs)
        _assert_close(_compile(module)(*inputs), eager, FWD_TOL)
        _assert_close(torch.export.export(module, inputs).module()(*inputs), eager, FWD_TOL)

