"""The hand-written PPO gradients of an LSTM actor-critic (``metarl.kernels.lstm_ppo``): the Numba path equals
autograd through the plain-PyTorch reference (gradients of all 8 weights and the loss terms), with resets
inside the sequences, ratios clipped on both sides, the entropy term on and off and a data-parallel share;
RL^2's ``ppo_update`` gives the same parameters on its fused and autograd paths; bad inputs raise naming the
argument.

Tolerances (float32): gradients ``atol 1e-6`` (the largest gradients are ~1e-2; the hand-written backward sums
over the steps in another order than autograd, and its tanh is a rational approximation, |error| <= 4e-7),
``rtol 1e-4``; loss terms ``1e-5`` (accumulated in float64 by the kernel, float32 by the reference).
"""
import copy

import pytest
import torch

from metarl.kernels import lstm_ppo as K
from metarl.kernels.lstm_ppo import STATS, lstm_ppo_grads, lstm_ppo_loss_reference

GRAD_TOL = {"atol": 1e-6, "rtol": 1e-4}
STAT_TOL = {"atol": 1e-5, "rtol": 1e-5}

# (T, B, X, H, A): all ones (one step, one sequence, one action: the softmax is constant); odd sizes; a prime
# batch and hidden size; RL^2's bandit sizes (input 8, hidden 64, 5 arms)
SHAPES = [(1, 1, 1, 1, 1), (7, 5, 3, 6, 4), (10, 37, 8, 17, 5), (10, 64, 8, 64, 5)]
# where the state resets: never; at step 0 only (RL^2, one trial per rollout); at random steps inside the
# sequences (several trials per rollout), including the last step
RESETS = ["none", "first", "inside"]


def params(x, h, a, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4 * h, x), (4 * h, h), (4 * h,), (4 * h,), (a, h), (a,), (1, h), (1,)]
    return [torch.randn(s, generator=g) * 0.4 for s in shapes]


def batch(t, b, x, a, resets, seed=1):
    """A minibatch whose old log-probabilities put ratios on both sides of the clip range."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(t, b, x, generator=g)
    actions = torch.randint(0, a, (t, b), generator=g)
    reset = torch.zeros(t, b, dtype=torch.bool)
    if resets == "first":
        reset[0] = True
    elif resets == "inside":
        reset = torch.rand(t, b, generator=g) < 0.3
        reset[-1, ::2] = True
    old = torch.log(torch.full((t, b), 1.0 / a)) + 0.6 * torch.randn(t, b, generator=g)
    adv = torch.randn(t, b, generator=g)
    ret = torch.randn(t, b, generator=g)
    return obs, actions, reset, old, adv, ret


def case(shape, resets, seed=0):
    t, b, x, h, a = shape
    obs, actions, reset, old, adv, ret = batch(t, b, x, a, resets, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    h0, c0 = torch.randn(b, h, generator=g), torch.randn(b, h, generator=g)
    return (obs, actions, h0, c0, reset, old, adv, ret, params(x, h, a, seed))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("resets", RESETS)
@pytest.mark.parametrize("ent_coef,scale", [(0.0, 1.0), (0.05, 0.37)])
def test_grads_match_autograd(shape, resets, ent_coef, scale):
    args = case(shape, resets)
    kw = {"clip": 0.2, "vf_coef": 0.5, "ent_coef": ent_coef, "scale": scale}
    got, got_stats = lstm_ppo_grads(*args, backend="numba", **kw)
    leaves = [p.clone().requires_grad_(True) for p in args[-1]]
    loss, stats = lstm_ppo_loss_reference(*args[:-1], leaves, **kw)
    want = torch.autograd.grad(loss, leaves)
    for name, g, w in zip(("w_ih", "w_hh", "b_ih", "b_hh", "w_pi", "b_pi", "w_v", "b_v"), got, want):
        assert g.shape == w.shape and g.dtype == torch.float32, name
        torch.testing.assert_close(g, w, **GRAD_TOL, msg=lambda m, name=name: f"{name}: {m}")
    assert got[2] is not got[3]            # clip_grad_norm_ scales each gradient in place: no shared tensor
    for k in STATS:
        assert got_stats[k] == pytest.approx(float(stats[k]), abs=STAT_TOL["atol"], rel=STAT_TOL["rtol"]), k
    # the public op's torch backend is the same autograd
    ref, _ = lstm_ppo_grads(*args, backend="torch", **kw)
    for g, w in zip(ref, want):
        torch.testing.assert_close(g, w)


def test_case_exercises_both_clip_sides():
    """The cases above clip ratios above 1 + eps and below 1 - eps, with advantages of both signs (the branches
    of the surrogate's subgradient), and keep others inside the range."""
    obs, actions, h0, c0, reset, old, adv, ret, p = case(SHAPES[-1], "inside")
    with torch.no_grad():
        from metarl.kernels.lstm import lstm_sequence_reference
        hs = lstm_sequence_reference(obs, h0[None], c0[None], [tuple(p[:4])], reset)[0]
        lp = torch.log_softmax(hs @ p[4].t() + p[5], -1).gather(-1, actions[..., None])[..., 0]
    r = (lp - old).exp()
    for side in (r > 1.2, r < 0.8, (r >= 0.8) & (r <= 1.2)):
        assert int((side & (adv > 0)).sum()) > 10 and int((side & (adv < 0)).sum()) > 10


def test_reused_buffers_are_rewritten():
    """The kernel keeps its buffers between calls: poisoned with NaN, a call with a smaller and then a larger
    shape still equals autograd (an element the kernel forgot to write would show)."""
    kw = {"clip": 0.2, "vf_coef": 0.5, "ent_coef": 0.01}
    for shape in ((10, 64, 8, 64, 5), (3, 7, 8, 64, 5), (11, 70, 8, 64, 5)):
        for buf in K._WORKSPACE.buffers.values():
            if buf.dtype == torch.float32:
                buf.fill_(float("nan"))
        args = case(shape, "inside", seed=3)
        got, _ = lstm_ppo_grads(*args, **kw)
        want, _ = lstm_ppo_grads(*args, backend="torch", **kw)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **GRAD_TOL)


@pytest.mark.parametrize("shape,threads", [
    ((10, 64, 8, 64, 5), 2),      # two equal blocks
    ((7, 37, 3, 6, 4), 3),        # uneven blocks (37 rows; 3 threads, or MAX_THREADS where fewer cores)
    ((5, 1, 3, 6, 4), 2),         # one sequence: one block
])
def test_blocks_on_threads_equal_one_thread(shape, threads):
    """The sequences split over threads (each block's forward and backward on its own thread, the blocks'
    gradient sums added) give the gradients and loss terms of one block."""
    args = case(shape, "inside", seed=5)
    kw = {"clip": 0.2, "vf_coef": 0.5, "ent_coef": 0.01, "scale": 0.5}
    want, want_stats = lstm_ppo_grads(*args, **kw)
    before = torch.get_num_threads()
    got, got_stats = lstm_ppo_grads(*args, threads=threads, **kw)
    assert torch.get_num_threads() == before     # torch's thread count is restored
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **GRAD_TOL)
    for k in STATS:
        assert got_stats[k] == pytest.approx(want_stats[k], abs=STAT_TOL["atol"], rel=STAT_TOL["rtol"]), k


def _threads_in_child(args, queue):
    grads, _ = lstm_ppo_grads(*args, clip=0.2, vf_coef=0.5, ent_coef=0.01, threads=2)
    queue.put([g.tolist() for g in grads])


def test_threads_after_fork():
    """A process forked after the worker threads started (they do not survive a fork) still runs the blocks on
    threads: the pool is made again in the child instead of waiting on its parent's dead workers."""
    import multiprocessing as mp

    args = case((5, 8, 3, 6, 4), "inside", seed=6)
    want, _ = lstm_ppo_grads(*args, clip=0.2, vf_coef=0.5, ent_coef=0.01, threads=2)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_threads_in_child, args=(args, queue))
    child.start()
    try:
        got = queue.get(timeout=30)
        child.join(timeout=30)
    finally:
        if child.is_alive():
            child.terminate()
    assert child.exitcode == 0
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.tensor(g), w, **GRAD_TOL)


def test_non_contiguous_inputs():
    """Minibatches are gathered columns of a rollout; strided views give the same gradients."""
    args = list(case((6, 9, 3, 5, 4), "inside", seed=4))
    kw = {"clip": 0.1, "vf_coef": 1.0, "ent_coef": 0.02}
    want, _ = lstm_ppo_grads(*args, **kw)
    for i in (0, 1, 4, 5, 6, 7):   # obs, actions, resets, old log-probs, advantages, returns as strided views
        wide = torch.stack([args[i], args[i]], dim=2)
        args[i] = wide.select(2, 1)
        assert not args[i].is_contiguous()
    got, _ = lstm_ppo_grads(*args, **kw)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_ppo_update_fused_equals_autograd():
    """RL^2's update (4 epochs x 3 minibatches, trials of 3 steps in a 10-step rollout: resets inside the
    sequences) gives the same parameters, optimizer state and loss terms on both paths."""
    from metarl.algos.rl2 import RL2Config, make_env, make_policy, ppo_update
    from metarl.rollout import Carry, collect

    cfg = RL2Config(num_envs=13, episodes_per_trial=3, rollout_steps=10, hidden_size=16, minibatches=3,
                    total_env_steps=10 ** 6, seed=0)
    env = make_env(cfg)
    policy = make_policy(cfg, env)
    obs, info = env.reset(seed=0)
    ro = collect(env, policy, 10, carry=Carry(obs, info["trial_start"], policy.initial_state(13)),
                 generator=torch.Generator().manual_seed(0))
    assert bool(ro.resets[1:].any())
    out = []
    for fused in (True, False):
        p = copy.deepcopy(policy)
        opt = torch.optim.Adam(p.parameters(), lr=cfg.lr, eps=1e-5)
        stats = ppo_update(p, opt, ro, cfg, 0.01, torch.Generator().manual_seed(1), fused=fused)
        out.append((p, opt, stats))
    (p1, o1, s1), (p2, o2, s2) = out
    for (name, a), b in zip(p1.named_parameters(), p2.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        torch.testing.assert_close(o1.state[a]["exp_avg"], o2.state[b]["exp_avg"], atol=1e-7, rtol=1e-4)
    assert not torch.equal(p1.cell.weight_hh, policy.cell.weight_hh)   # the update moved the weights
    for k in STATS:
        assert s1[k] == pytest.approx(s2[k], abs=1e-5, rel=1e-5), k


@pytest.mark.parametrize("bad,error,match", [
    ({"obs": torch.zeros(4, 3, 2, dtype=torch.float64)}, TypeError, "obs"),
    ({"h0": torch.zeros(2, 5)}, ValueError, "h0"),
    ({"actions": torch.full((4, 3), 7)}, ValueError, "actions must lie in"),
    ({"actions": torch.zeros(4, 3, dtype=torch.int32)}, TypeError, "actions"),
    ({"resets": torch.zeros(4, 3)}, TypeError, "resets"),
    ({"advantages": torch.zeros(4, 2)}, ValueError, "advantages"),
    ({"params": (torch.zeros(1),)}, TypeError, "params"),
    ({"clip": float("nan")}, TypeError, "clip"),
    ({"clip": 0.0}, ValueError, "clip"),
    ({"backend": "triton"}, ValueError, "backend"),
    ({"threads": 0}, ValueError, "threads"),
])
def test_bad_input_raises(bad, error, match):
    obs, actions, h0, c0, reset, old, adv, ret, p = case((4, 3, 2, 5, 4), "first")
    kw = {"obs": obs, "actions": actions, "h0": h0, "c0": c0, "resets": reset, "old_log_probs": old,
          "advantages": adv, "returns": ret, "params": p, "clip": 0.2, "vf_coef": 0.5, "ent_coef": 0.01}
    kw.update(bad)
    with pytest.raises(error, match=match):
        lstm_ppo_grads(**kw)
