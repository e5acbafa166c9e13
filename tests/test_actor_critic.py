"""The fused recurrent actor-critic step (``metarl.kernels.actor_critic``) and
``metarl.nn.actor_critic.RecurrentActorCritic``.

Tolerances: float32 throughout. Sampled categorical actions are compared exactly (all
backends consume the same uniforms); log_prob, value, h, c and Gaussian actions to
``atol = rtol = 1e-5`` (the kernels sum in another order than torch's GEMM, and the Numba
pass uses a rational tanh with |error| <= 4e-7).
"""
import doctest
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

from metarl.kernels.actor_critic import (
    _WORKSPACE,
    Tiles,
    _launch_triton,
    actor_critic_step,
    actor_critic_step_reference,
    pack_actor_critic,
)
from metarl.nn.actor_critic import RecurrentActorCritic

ATOL = RTOL = 1e-5
OBS_DIM = 5          # odd
NUM_ACTIONS = 3      # odd, not a power of two
ACTION_DIM = 2

# B: 1 (one row), 7 (odd, under one 16-row Triton block), 17 (just past a block), 64 (several blocks)
BATCHES = [1, 7, 17, 64]
# H: 13 (odd, prime, padded to 16 in Triton), 32 (a power of two), 45 (two 32-unit Triton tiles, the
# second partial; [x, h] spans two 32-wide K chunks)
HIDDEN = [13, 32, 45]
KINDS = ["discrete", "box"]


def space(kind):
    return gym.spaces.Discrete(NUM_ACTIONS) if kind == "discrete" else \
        gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)


def make_policy(kind, hidden, backend=None, seed=0):
    torch.manual_seed(seed)
    policy = RecurrentActorCritic(OBS_DIM, space(kind), hidden, backend=backend)
    with torch.no_grad():  # non-trivial log_std and logits
        if policy.log_std is not None:
            policy.log_std.copy_(torch.linspace(-0.7, 0.4, ACTION_DIM))
        policy.policy_head.weight.mul_(3.0)
    return policy


def poisoned_outputs(packed, bsz):
    """Outputs filled with NaN (and -1 actions) before the launch: an unwritten element fails."""
    a, hid = packed.num_outputs, packed.hidden_size
    action = torch.full((bsz,), -1, dtype=torch.int64) if packed.discrete else torch.full((bsz, a), float("nan"))
    return (action, torch.full((bsz,), float("nan")), torch.full((bsz,), float("nan")),
            torch.full((bsz, hid), float("nan")), torch.full((bsz, hid), float("nan")))


def random_inputs(packed, bsz, seed):
    """``(obs, h, c, reset, noise)`` for one step: normals, reset on ~30 % of rows, uniforms
    (categorical) or normals (Gaussian) as the noise."""
    g = torch.Generator().manual_seed(seed)
    hid, a = packed.hidden_size, packed.num_outputs
    obs = torch.randn(bsz, OBS_DIM, generator=g)
    h, c = torch.randn(bsz, hid, generator=g), torch.randn(bsz, hid, generator=g)
    reset = torch.rand(bsz, generator=g) < 0.3
    noise = torch.rand(bsz, a, generator=g) if packed.discrete else torch.randn(bsz, a, generator=g)
    return obs, h, c, reset, noise


def assert_step_close(got, want):
    action, log_prob, value, h, c = got
    if action.dtype == torch.int64:
        assert torch.equal(action, want[0])
    else:
        torch.testing.assert_close(action, want[0], atol=ATOL, rtol=RTOL)
    for name, g, w in zip(("log_prob", "value", "h", "c"), (log_prob, value, h, c), want[1:]):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"{name}: {m}")


# ----------------------------------------------------------------------------- kernel parity
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("bsz", BATCHES)
def test_step_matches_reference(backend, kind, hidden, bsz):
    policy = make_policy(kind, hidden)
    packed = policy.packed()
    obs, h, c, reset, noise = random_inputs(packed, bsz, seed=bsz * 100 + hidden)
    inputs = [t.clone() for t in (obs, h, c, reset, noise)]
    want = actor_critic_step_reference(obs, h, c, reset, *packed.params[:8], noise, log_std=packed.params[8])
    out = poisoned_outputs(packed, bsz)
    got = actor_critic_step(obs, h, c, reset, packed, noise, backend=backend, out=out)
    assert all(g_ is o for g_, o in zip(got, out))
    assert_step_close(got, want)
    for before, after in zip(inputs, (obs, h, c, reset, noise)):  # inputs untouched
        assert torch.equal(before, after)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_step_precision_modes(backend, precision):
    """Reduced-precision packing: the reference, Numba and Triton use the same (bf16-rounded)
    weights. Inputs are bf16-exact, so the Triton bf16 products (emulated in fp32 under the
    interpreter) are exact and every backend agrees to fp32 rounding. (The tensor-core modes
    themselves run on a GPU only: tests/test_nn_cuda.py.)"""
    policy = make_policy("discrete", 45)
    policy.precision = precision
    packed = policy.packed()
    assert packed.precision == precision
    w = torch.cat((policy.cell.weight_ih, policy.cell.weight_hh), 1).detach()
    if precision == "bf16":
        assert packed.w_dot.dtype == torch.bfloat16
        assert torch.equal(packed.w, w.bfloat16().float()) and not torch.equal(packed.w, w)
        assert torch.equal(packed.params[0], packed.w[:, :OBS_DIM])
    else:
        assert packed.w_dot is packed.w and torch.equal(packed.w, w)
    inputs, want = bf16_exact_inputs(packed)
    assert_step_close(actor_critic_step(*inputs, backend=backend), want)


def bf16_exact_inputs(packed, bsz=19, seed=3):
    """``(obs, h, c, reset, packed, noise)`` with bf16-exact obs and h, and the reference's outputs."""
    g = torch.Generator().manual_seed(seed)
    hid = packed.hidden_size
    obs = torch.randn(bsz, OBS_DIM, generator=g).bfloat16().float()
    h = torch.randn(bsz, hid, generator=g).bfloat16().float()
    c = torch.randn(bsz, hid, generator=g)
    reset = torch.rand(bsz, generator=g) < 0.3
    noise = torch.rand(bsz, NUM_ACTIONS, generator=g)
    want = actor_critic_step_reference(obs, h, c, reset, *packed.params[:8], noise)
    return (obs, h, c, reset, packed, noise), want


SPLIT = [pytest.param(Tiles("split", 16, 16, 16, 4, 1), id="split16"),
         pytest.param(Tiles("split", 32, 32, 32, 4, 1), id="split32"),
         pytest.param(Tiles("split_cat", 16, 16, 16, 4, 1), id="split_cat16"),
         pytest.param(Tiles("split_cat", 32, 32, 32, 4, 1), id="split_cat32")]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("tiles", SPLIT)
def test_split_kernel_matches_reference(kind, hidden, tiles):
    """The split Triton kernel (hidden units across programs, heads reduced by the last program of
    each row block): equal to the reference over odd B and H (row and unit blocks partial), twice in
    a row (its counters are left zero for the next launch), and bit-identical between launches."""
    pytest.importorskip("triton")
    policy = make_policy(kind, hidden)
    packed = policy.packed()
    bsz = 37
    obs, h, c, reset, noise = random_inputs(packed, bsz, seed=hidden)
    want = actor_critic_step_reference(obs, h, c, reset, *packed.params[:8], noise, log_std=packed.params[8])
    first = None
    for _ in range(2):
        out = poisoned_outputs(packed, bsz)
        _launch_triton(obs, h, c, reset, packed, noise, out, tiles=tiles)
        assert_step_close(out, want)
        if first is None:
            first = [t.clone() for t in out]
        else:
            assert all(torch.equal(x, y) for x, y in zip(first, out))
    assert all(int(count.abs().sum()) == 0 for _, count in _WORKSPACE.values())


@pytest.mark.parametrize("kernel", ["split", "split_cat"])
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_split_kernel_precision_modes(precision, kernel):
    """bf16-exact inputs and weights: the split kernel's reduced-precision products (emulated under
    the interpreter) equal the fp32 reference on the rounded weights."""
    pytest.importorskip("triton")
    policy = make_policy("discrete", 45)
    policy.precision = precision
    packed = policy.packed()
    inputs, want = bf16_exact_inputs(packed, seed=4)
    out = poisoned_outputs(packed, 19)
    _launch_triton(*inputs, out, tiles=Tiles(kernel, 16, 16, 16, 4, 1))
    assert_step_close(out, want)
    if kernel == "split_cat":   # the interleaved layout is derived from the packed (rounded) weights
        w_cat, b_cat = packed.cache[("cat", 16)]
        assert w_cat.dtype == packed.w_dot.dtype and w_cat.shape == (4 * 48, OBS_DIM + 45)
        assert torch.equal(w_cat[4 * 7 + 2], packed.w_dot[2 * 45 + 7])   # unit 7, gate g
        assert torch.equal(b_cat[4 * 7 + 2], packed.bias[2 * 45 + 7]) and not w_cat[4 * 46:].any()


def test_bad_tiles_kernel():
    pytest.importorskip("triton")
    packed = make_policy("discrete", 8).packed()
    x = torch.zeros(2, OBS_DIM)
    h = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="tiles.kernel must be"):
        _launch_triton(x, h, h, torch.zeros(2, dtype=torch.bool), packed, torch.rand(2, NUM_ACTIONS),
                       poisoned_outputs(packed, 2), tiles=Tiles("cols", 16, 16, 16, 4, 1))


def test_bad_precision():
    with pytest.raises(ValueError, match="precision must be one of"):
        RecurrentActorCritic(OBS_DIM, space("discrete"), 8, precision="fp16")
    p = make_policy("discrete", 8)
    with pytest.raises(ValueError, match="precision must be one of"):
        pack_actor_critic(*p._params(), precision="half")


@pytest.mark.parametrize("kind", KINDS)
def test_numba_threaded_pass_matches_reference(kind, monkeypatch):
    """The multi-threaded Numba pass (used from B x H = 2^17 up) at a small size."""
    import metarl.kernels.actor_critic as k
    monkeypatch.setattr(k, "PARALLEL_MIN_WORK", 0)
    policy = make_policy(kind, 32)
    obs, h, c = torch.randn(33, OBS_DIM), torch.randn(33, 32), torch.randn(33, 32)
    reset = torch.rand(33) < 0.3
    noise = torch.rand(33, policy.num_outputs) if kind == "discrete" else torch.randn(33, policy.num_outputs)
    want = actor_critic_step(obs, h, c, reset, policy.packed(), noise, backend="torch")
    got = actor_critic_step(obs, h, c, reset, policy.packed(), noise, backend="numba",
                            out=poisoned_outputs(policy.packed(), 33))
    assert_step_close(got, want)


def test_step_noncontiguous_obs(backend):
    policy = make_policy("discrete", 13)
    obs = torch.randn(9, 2 * OBS_DIM)[:, ::2]  # strided view
    h, c = policy.initial_state(9)
    reset, noise = torch.zeros(9, dtype=torch.bool), torch.rand(9, NUM_ACTIONS)
    want = actor_critic_step(obs.contiguous(), h, c, reset, policy.packed(), noise, backend="torch")
    assert_step_close(actor_critic_step(obs, h, c, reset, policy.packed(), noise, backend=backend), want)


@pytest.mark.parametrize("kind", KINDS)
def test_module_step_same_across_backends(kind):
    """Through ``RecurrentActorCritic.step``: the same generator seed gives the same actions on
    every backend, over a few steps with resets (state carried between steps)."""
    results = {}
    for backend in ("torch", "numba", "triton"):
        policy = make_policy(kind, 13, backend=backend)
        g = torch.Generator().manual_seed(7)
        data = torch.Generator().manual_seed(8)
        state, trace = None, []
        for _ in range(4):
            obs = torch.randn(11, OBS_DIM, generator=data)
            reset = torch.rand(11, generator=data) < 0.25
            action, log_prob, value, state = policy.step(obs, state, reset, generator=g)
            trace.append((action, log_prob, value, *state))
        results[backend] = trace
    for backend in ("numba", "triton"):
        for got, want in zip(results[backend], results["torch"]):
            assert_step_close(got, want)


def test_step_has_no_autograd():
    policy = make_policy("box", 13)
    action, log_prob, value, (h, c) = policy.step(torch.randn(3, OBS_DIM), None, torch.zeros(3, dtype=torch.bool))
    assert not any(t.requires_grad for t in (action, log_prob, value, h, c))


def test_packed_weights_follow_parameter_updates():
    policy = make_policy("discrete", 13, backend="numba")
    obs, reset = torch.randn(4, OBS_DIM), torch.zeros(4, dtype=torch.bool)
    _, _, v0, _ = policy.step(obs, None, reset)
    with torch.no_grad():
        policy.value_head.bias.add_(1.0)   # in place, as an optimizer step
    _, _, v1, _ = policy.step(obs, None, reset)
    torch.testing.assert_close(v1, v0 + 1.0, atol=ATOL, rtol=RTOL)


# ----------------------------------------------------------------------------- sampling statistics
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_categorical_draws_follow_softmax(backend):
    """Chi-square test of 40,000 Gumbel-max draws (one state, many rows) against softmax(logits)."""
    policy = make_policy("discrete", 13, backend=backend)
    n = 40_000
    obs = torch.randn(1, OBS_DIM).expand(n, OBS_DIM).contiguous()
    h, c = torch.randn(1, 13).expand(n, 13).contiguous(), torch.randn(1, 13).expand(n, 13).contiguous()
    action, log_prob, _, (h1, _) = policy.step(obs, (h, c), torch.zeros(n, dtype=torch.bool),
                                               generator=torch.Generator().manual_seed(0))
    logits = policy.policy_head(h1[:1]).detach()[0]
    probs = torch.softmax(logits.double(), 0).numpy()
    assert probs.min() > 0.02  # every cell well populated
    counts = np.bincount(action.numpy(), minlength=NUM_ACTIONS)
    assert stats.chisquare(counts, probs * n).pvalue > 1e-3
    torch.testing.assert_close(log_prob, torch.log_softmax(logits, 0)[action], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_gaussian_draws_have_mean_and_std(backend):
    policy = make_policy("box", 13, backend=backend)
    n = 40_000
    obs = torch.randn(1, OBS_DIM).expand(n, OBS_DIM).contiguous()
    action, _, _, (h1, _) = policy.step(obs, None, torch.zeros(n, dtype=torch.bool),
                                        generator=torch.Generator().manual_seed(0))
    mean = policy.policy_head(h1[:1]).detach()[0]
    std = policy.log_std.detach().exp()
    # 5 standard errors: mean's is std/sqrt(n); the sample std's is about std/sqrt(2n)
    assert ((action.mean(0) - mean).abs() < 5 * std / n ** 0.5).all()
    assert ((action.std(0) - std).abs() < 5 * std / (2 * n) ** 0.5).all()


# ----------------------------------------------------------------------------- reset
def test_reset_zeroes_state(backend):
    policy = make_policy("discrete", 13, backend=backend)
    bsz = 9
    obs, h, c = torch.randn(bsz, OBS_DIM), torch.randn(bsz, 13), torch.randn(bsz, 13)
    reset = torch.tensor([True, False, True, True, False, False, True, False, True])
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731 - the same noise twice
    got = policy.step(obs, (h, c), reset, generator=g())
    h0, c0 = h.clone(), c.clone()
    h0[reset] = 0
    c0[reset] = 0
    want = policy.step(obs, (h0, c0), torch.zeros(bsz, dtype=torch.bool), generator=g())
    assert torch.equal(got[0], want[0])
    for x, y in zip(got[1:3] + got[3], want[1:3] + want[3]):
        torch.testing.assert_close(x, y, atol=ATOL, rtol=RTOL)
    # and a reset row equals a fresh (None) state
    fresh = policy.step(obs, None, torch.zeros(bsz, dtype=torch.bool), generator=g())
    torch.testing.assert_close(got[3][0][reset], fresh[3][0][reset], atol=ATOL, rtol=RTOL)


# ----------------------------------------------------------------------------- evaluate
def rollout(policy, t_len, bsz, seed=0):
    data = torch.Generator().manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    hid = policy.hidden_size
    state0 = (torch.randn(bsz, hid, generator=data), torch.randn(bsz, hid, generator=data))
    obs_seq = torch.randn(t_len, bsz, OBS_DIM, generator=data)
    reset_seq = torch.rand(t_len, bsz, generator=data) < 0.2
    reset_seq[0, 0] = True
    state, acts, lps, vals = state0, [], [], []
    for t in range(t_len):
        a, lp, v, state = policy.step(obs_seq[t], state, reset_seq[t], generator=g)
        acts.append(a)
        lps.append(lp)
        vals.append(v)
    return obs_seq, torch.stack(acts), state0, reset_seq, torch.stack(lps), torch.stack(vals)


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_equals_step_and_reaches_all_parameters(kind):
    policy = make_policy(kind, 13, backend="numba")
    obs_seq, actions, state0, reset_seq, log_prob, value = rollout(policy, 6, 5)
    lp, ent, v = policy.evaluate(obs_seq, actions, state0, reset_seq)
    assert lp.shape == ent.shape == v.shape == (6, 5)
    torch.testing.assert_close(lp, log_prob, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(v, value, atol=ATOL, rtol=RTOL)
    (lp.sum() + ent.sum() + v.sum()).backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_equals_torch_loop(kind):
    """``evaluate`` against what a user writes with torch: ``nn.LSTMCell`` + ``nn.Linear`` +
    ``torch.distributions``, one step at a time, state zeroed at resets; values and gradients."""
    policy = make_policy(kind, 13)
    obs_seq, actions, state0, reset_seq, _, _ = rollout(policy, 7, 3, seed=5)
    lp, ent, v = policy.evaluate(obs_seq, actions, state0, reset_seq)
    (lp.sum() + 0.1 * ent.sum() + 0.5 * v.sum()).backward()

    cell = torch.nn.LSTMCell(OBS_DIM, 13)
    cell.load_state_dict(policy.cell.state_dict())
    pi = torch.nn.Linear(13, policy.num_outputs)
    pi.load_state_dict(policy.policy_head.state_dict())
    vf = torch.nn.Linear(13, 1)
    vf.load_state_dict(policy.value_head.state_dict())
    log_std = None if policy.log_std is None else policy.log_std.detach().clone().requires_grad_()
    h, c = state0
    lps, ents, vals = [], [], []
    for t in range(7):
        keep = (~reset_seq[t]).float()[:, None]
        h, c = cell(obs_seq[t], (h * keep, c * keep))
        if kind == "discrete":
            dist = torch.distributions.Categorical(logits=pi(h))
        else:
            dist = torch.distributions.Independent(torch.distributions.Normal(pi(h), log_std.exp()), 1)
        lps.append(dist.log_prob(actions[t]))
        ents.append(dist.entropy())
        vals.append(vf(h)[:, 0])
    lp_ref, ent_ref, v_ref = torch.stack(lps), torch.stack(ents), torch.stack(vals)
    (lp_ref.sum() + 0.1 * ent_ref.sum() + 0.5 * v_ref.sum()).backward()
    for got, want in ((lp, lp_ref), (ent, ent_ref), (v, v_ref)):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    pairs = [(policy.cell, cell), (policy.policy_head, pi), (policy.value_head, vf)]
    for mine, theirs in pairs:
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    if log_std is not None:
        torch.testing.assert_close(policy.log_std.grad, log_std.grad, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_step_inputs():
    policy = make_policy("discrete", 13)
    ok_obs, ok_reset = torch.zeros(4, OBS_DIM), torch.zeros(4, dtype=torch.bool)
    ok_state = policy.initial_state(4)
    cases = [
        (TypeError, "obs", dict(obs=ok_obs.numpy())),
        (TypeError, "obs", dict(obs=ok_obs.double())),
        (ValueError, "obs", dict(obs=torch.zeros(4, OBS_DIM + 1))),
        (ValueError, "obs", dict(obs=torch.zeros(OBS_DIM))),
        (ValueError, "obs", dict(obs=torch.zeros(4, OBS_DIM, device="meta"))),
        (TypeError, "state", dict(state=ok_state[0])),
        (ValueError, r"state\[0\]", dict(state=(torch.zeros(4, 12), ok_state[1]))),
        (ValueError, r"state\[1\]", dict(state=(ok_state[0], torch.zeros(3, 13)))),
        (TypeError, r"state\[1\]", dict(state=(ok_state[0], ok_state[1].half()))),
        (TypeError, "reset", dict(reset=torch.zeros(4))),
        (ValueError, "reset", dict(reset=torch.zeros(5, dtype=torch.bool))),
        (ValueError, "reset", dict(reset=torch.zeros(4, 1, dtype=torch.bool))),
        (TypeError, "generator", dict(generator=np.random.default_rng(0))),
    ]
    for exc, name, bad in cases:
        kw = dict(obs=ok_obs, state=ok_state, reset=ok_reset) | bad
        generator = kw.pop("generator", None)
        with pytest.raises(exc, match=name):
            policy.step(kw["obs"], kw["state"], kw["reset"], generator=generator)


def test_bad_evaluate_and_constructor_inputs():
    policy = make_policy("discrete", 13)
    obs, acts = torch.zeros(3, 2, OBS_DIM), torch.zeros(3, 2, dtype=torch.int64)
    reset = torch.zeros(3, 2, dtype=torch.bool)
    with pytest.raises(TypeError, match="actions"):
        policy.evaluate(obs, acts.float(), None, reset)
    with pytest.raises(ValueError, match="actions"):
        policy.evaluate(obs, acts + NUM_ACTIONS, None, reset)
    with pytest.raises(ValueError, match="reset_seq"):
        policy.evaluate(obs, acts, None, reset[:2])
    with pytest.raises(ValueError, match="obs_seq"):
        policy.evaluate(obs[0], acts, None, reset)
    with pytest.raises(ValueError, match="state0"):
        policy.evaluate(obs, acts, (torch.zeros(3, 13), torch.zeros(3, 13)), reset)
    with pytest.raises(TypeError, match="action_space"):
        RecurrentActorCritic(OBS_DIM, gym.spaces.MultiBinary(3), 8)
    with pytest.raises(ValueError, match="action_space"):
        RecurrentActorCritic(OBS_DIM, gym.spaces.Box(-1, 1, shape=(2, 2)), 8)
    with pytest.raises(ValueError, match="hidden_size"):
        RecurrentActorCritic(OBS_DIM, space("discrete"), 0)
    with pytest.raises(ValueError, match="backend"):
        RecurrentActorCritic(OBS_DIM, space("discrete"), 8, backend="cuda-magic").step(
            torch.zeros(1, OBS_DIM), None, None)


def test_bad_kernel_inputs():
    policy = make_policy("box", 13)
    packed = policy.packed()
    obs, (h, c) = torch.zeros(2, OBS_DIM), policy.initial_state(2)
    reset, noise = torch.zeros(2, dtype=torch.bool), torch.zeros(2, ACTION_DIM)
    with pytest.raises(ValueError, match="noise"):
        actor_critic_step(obs, h, c, reset, packed, torch.zeros(2, ACTION_DIM + 1))
    with pytest.raises(TypeError, match="packed"):
        actor_critic_step(obs, h, c, reset, packed.params, noise)
    with pytest.raises(ValueError, match="backend"):
        actor_critic_step(obs, h, c, reset, packed, noise, backend="cpp")
    w = policy.cell.weight_ih.detach()
    with pytest.raises(ValueError, match="w_hh"):
        pack_actor_critic(w, w, *packed.params[2:])
    with pytest.raises(TypeError, match="b_v"):
        pack_actor_critic(*packed.params[:7], packed.params[7].double(), packed.params[8])


# ----------------------------------------------------------------------------- packaging
def test_docstring_example():
    import metarl.nn.actor_critic as module
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_import_does_not_import_triton():
    code = ("import sys, torch, gymnasium as gym\n"
            "from metarl.nn.actor_critic import RecurrentActorCritic\n"
            "p = RecurrentActorCritic(3, gym.spaces.Discrete(2), 8)\n"
            "p.step(torch.zeros(2, 3), None, None)\n"
            "print('triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "TRITON_INTERPRET": "0"})
    assert out.stdout.strip() == "False"
