"""Meta-gradient RL (``metarl.algos.metagrad``): the λ-return's gradients w.r.t. γ and λ (gradcheck
in float64, through the sigmoid parametrisation and the γ-dependent truncation bootstrap, which
``tests/test_returns.py`` does not cover); the meta-gradient by the returns kernel equals autograd
through the reference; the explicit trace (μ = 0) equals autograd through the functional update;
the meta-update moves γ toward the reference γ̄ on a chain where that is the answer; the
delayed-reward wrapper; a short CartPole run beats random clearly; files, exact resume through the
run harness; bad configs raise naming the field (tests/test_config.py walks every field)."""
import csv
import json

import pytest
import torch

import metarl
from metarl import checkpoint
from metarl.algos import harness
from metarl.algos import metagrad as M
from metarl.algos.metagrad import MetaGradConfig
from metarl.envs.delayed_reward import DelayedRewardVecEnv
from metarl.kernels.returns import lambda_returns


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one intra-op thread (conftest's one_thread)."""


def _rollout(t_len, n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(t_len, n, generator=g, dtype=dtype)
    values = torch.randn(t_len, n, generator=g, dtype=dtype)
    dones = torch.rand(t_len, n, generator=g) < 0.25
    truncated = dones & (torch.rand(t_len, n, generator=g) < 0.5)
    boot = torch.where(truncated, torch.randn(t_len, n, generator=g, dtype=dtype), 0.0)
    return rewards, values, dones, boot, torch.randn(n, generator=g, dtype=dtype)


# ----------------------------------------------------------------------------- λ-return gradients
@pytest.mark.parametrize("backend", ["torch", "numba"])       # the float64 paths
@pytest.mark.parametrize("t_len,n", [(1, 1), (7, 3), (20, 5)])  # T = 1: bootstrap only; odd sizes
def test_lambda_return_gradcheck_wrt_eta_logits(backend, t_len, n):
    """gradcheck (float64) of G^η w.r.t. the logits of γ and λ, as the learner uses it: 0-dim γ, λ
    through sigmoids, γ also inside the rewards of truncated steps (r + γ v(final_obs))."""
    rewards, values, dones, boot, last = _rollout(t_len, n, seed=t_len * 10 + n, dtype=torch.float64)

    def fn(x):
        gamma, lam = torch.sigmoid(x[0]), torch.sigmoid(x[1])
        return lambda_returns(rewards + gamma * boot, values, dones, last, gamma, lam, backend=backend)

    x = torch.tensor([1.5, 0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("gamma,lam", [(0.9, 0.0), (0.99, 0.5), (0.995, 0.95), (0.5, 1.0)])
def test_lambda_return_eta_grads_kernel_equals_reference(gamma, lam):
    """float32: dG/dγ and dG/dλ (summed against random upstream grads) by the Numba kernel's backward
    equal autograd through the torch reference, at the grid's coefficients."""
    rewards, values, dones, boot, last = _rollout(20, 32, seed=3)
    up = torch.randn(20, 32, generator=torch.Generator().manual_seed(4))
    out = []
    for backend in ("numba", "torch"):
        g = torch.tensor(gamma, requires_grad=True)
        lm = torch.tensor(lam, requires_grad=True)
        ret = lambda_returns(rewards + g * boot, values, dones, last, g, lm, backend=backend)
        out.append(torch.autograd.grad((ret * up).sum(), (g, lm)))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------- the meta-gradient
def _setup(seed=0, **kw):
    kw.setdefault("meta_vf_coef", 0.5)          # both terms of J'
    cfg = MetaGradConfig(num_envs=6, rollout_steps=9, total_env_steps=1000, hidden_size=16, eta_embedding=4,
                         seed=seed, **kw)
    env = M.make_env(cfg)
    env.set_tasks(M.task_split(cfg, env, cfg.num_envs, 1, seed=seed)[0])
    model = M.make_model(cfg, env)
    meta = M.MetaParams(cfg)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    sq = {k: torch.full_like(v, 1e-3) for k, v in params.items()}
    g = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    # long enough for terminations; truncation forced on some steps so that the bootstrap path runs
    b1 = M.collect(env, model, params, meta.current(), obs, cfg.rollout_steps, g)
    b2 = M.collect(env, model, params, meta.current(), b1.last_obs, cfg.rollout_steps, g)
    for b in (b1, b2):
        b.truncated[3, :2] = True
        b.dones[3, :2] = True
        b.final_obs[3, :2] = b.obs[4, :2] + 0.01
    return cfg, model, meta, params, sq, b1, b2


def _meta_grad(cfg, model, meta, params, sq, b1, b2, trace=None):
    gamma, lam = meta.values()
    eta_in = meta.current()
    if trace is None:
        new, _, _ = M.inner_update(model, params, sq, b1, gamma, lam, eta_in, cfg, create_graph=True)
    else:
        new, _, _ = M.inner_update(model, params, sq, b1, gamma.detach(), lam.detach(), eta_in, cfg,
                                   create_graph=False)
    return M.meta_gradient(model, new, b2, meta, eta_in, cfg, trace)


def test_meta_gradient_kernel_equals_reference():
    """The meta-gradient through the Numba λ-return backward equals the one through autograd of the
    torch reference (same inner update, same next batch); both components nonzero."""
    cfg, model, meta, params, sq, b1, b2 = _setup(returns_backend="numba")
    got = _meta_grad(cfg, model, meta, params, sq, b1, b2)
    ref_cfg = MetaGradConfig(**{**cfg.__dict__, "returns_backend": "torch"})
    want = _meta_grad(ref_cfg, model, meta, params, sq, b1, b2)
    assert (got.abs() > 0).all()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_trace_with_mu_zero_equals_autograd_through_the_update():
    """z = ∂f/∂η built explicitly (two second-order passes, :func:`update_jacobian`) gives the same
    meta-gradient as autograd through the functional inner update; a fixed component gets 0."""
    cfg, model, meta, params, sq, b1, b2 = _setup(meta_lambda=False, lam=0.0)
    want = _meta_grad(cfg, model, meta, params, sq, b1, b2)
    z = M.update_jacobian(model, params, sq, b1, meta, meta.current(), cfg)
    assert set(z) == set(params) and all(z[k].shape == (*params[k].shape, 2) for k in z)
    got = _meta_grad(cfg, model, meta, params, sq, b1, b2, trace=z)
    assert want[0] != 0 and want[1] == 0 and got[1] == 0
    torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-3)


def _chain_batch(k=6):
    """A deterministic chain 0 → 1 → ... → k−1 → end (reward 1 on the last move, then restart at 0),
    one env starting in each state, T = k steps: every transition once per env and batch."""
    n = t_len = k
    obs = torch.zeros(t_len, n, k)
    rewards = torch.zeros(t_len, n)
    dones = torch.zeros(t_len, n, dtype=torch.bool)
    for i in range(n):
        for t in range(t_len):
            s = (i + t) % k
            obs[t, i, s] = 1.0
            if s == k - 1:
                rewards[t, i], dones[t, i] = 1.0, True
    last = torch.zeros(n, k)
    last[torch.arange(n), torch.arange(n) % k] = 1.0      # after k steps each env is back where it began
    return M.Batch(obs=obs, actions=torch.zeros(t_len, n, dtype=torch.int64), rewards=rewards, dones=dones,
                   truncated=torch.zeros_like(dones), final_obs=torch.zeros_like(obs), last_obs=last)


@pytest.mark.parametrize("gamma0,ref_gamma", [(0.3, 0.9), (0.9, 0.3)])
def test_meta_update_moves_gamma_toward_the_reference(gamma0, ref_gamma):
    """One action (so only the value terms act: the prediction problem, J' = its value term), a known
    chain: the inner TD(0) targets use γ, the meta-objective's Monte-Carlo targets use γ̄, so the
    meta-gradient must carry γ toward γ̄ (the value function that best serves J' is the one whose
    targets are those of γ̄)."""
    cfg = MetaGradConfig(num_envs=6, rollout_steps=6, total_env_steps=1000, hidden_size=16, eta_embedding=0,
                         gamma=gamma0, lam=0.0, meta_lambda=False, ref_gamma=ref_gamma, ref_lambda=1.0,
                         meta_vf_coef=0.5, lr=3e-3, meta_lr=0.05, ent_coef=0.0, max_grad_norm=10.0,
                         anneal_lr=False)
    torch.manual_seed(0)
    model = M.MetaGradActorCritic(6, 1, 16, 0)
    meta = M.MetaParams(cfg)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    sq = {k: torch.zeros_like(v) for k, v in params.items()}
    batch = _chain_batch()
    gammas = [float(meta.current()[0])]
    for _ in range(150):
        gamma, lam = meta.values()
        new, sq, _ = M.inner_update(model, params, sq, batch, gamma, lam, meta.current(), cfg, create_graph=True)
        meta.step(M.meta_gradient(model, new, batch, meta, meta.current(), cfg))
        params = {k: v.detach() for k, v in new.items()}
        gammas.append(float(meta.current()[0]))
    start, end = gammas[0], gammas[-1]
    assert abs(end - ref_gamma) < 0.5 * abs(start - ref_gamma), gammas[::15]
    assert (end - start) * (ref_gamma - start) > 0


# ----------------------------------------------------------------------------- env wrapper
def test_delayed_reward_pays_every_k_steps_and_at_episode_end():
    k, n = 4, 16
    base = metarl.make_vec("CartPole-v1", n, seed=1, autoreset_mode="same_step")
    ref = metarl.make_vec("CartPole-v1", n, seed=1, autoreset_mode="same_step")
    env = DelayedRewardVecEnv(base, k)
    env.reset(seed=1)
    ref.reset(seed=1)
    g = torch.Generator().manual_seed(0)
    paid, true, since = torch.zeros(n), torch.zeros(n), torch.zeros(n, dtype=torch.int64)
    ended = 0
    for _ in range(120):
        a = torch.randint(2, (n,), generator=g)
        _, r, term, trunc, _ = env.step(a)
        _, r_ref, *_ = ref.step(a)
        since += 1
        done = term | trunc
        pay_now = done | (since % k == 0)
        assert bool((r[~pay_now] == 0).all())
        paid += r
        true += r_ref
        since[done] = 0
        ended += int(done.sum())
        # at every episode end everything owed has been paid
        torch.testing.assert_close(paid[done], true[done])
        paid[done], true[done] = 0.0, 0.0
    assert ended > n                                  # random CartPole episodes are short
    with pytest.raises(ValueError, match="same_step"):
        DelayedRewardVecEnv(metarl.make_vec("CartPole-v1", 2, seed=0), 3)
    for delay in (0, True, 2.0):
        with pytest.raises(ValueError, match="delay"):
            DelayedRewardVecEnv(metarl.make_vec("CartPole-v1", 2, seed=0, autoreset_mode="same_step"), delay)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_short_run_beats_random_clearly():
    """60k env steps of meta-gradient A2C on CartPole with varied physics: the held-out return is
    well above uniformly random actions (~22), and γ, λ moved."""
    cfg = MetaGradConfig(total_env_steps=60_000, eval_tasks=50, seed=0)
    s = M.train(cfg, None, progress=False)
    ev = s["eval"]
    assert ev["random"][0] < 30
    assert ev["metagrad"][0] > 3 * ev["random"][0], ev
    assert (s["gamma"], s["lambda"]) != (cfg.gamma, cfg.lam)
    assert len(s["history"]) == s["iterations"]


def test_files_and_exact_resume(tmp_path):
    """progress.csv (env_steps, gamma, lambda), config.json, a metagrad checkpoint; stopping after 3
    iterations and resuming to 6 equals 6 uninterrupted (μ > 0 and a delayed reward: the trace and the
    wrapper's state are checkpointed too); load_model and report give the trained η."""
    kw = dict(num_envs=8, rollout_steps=10, total_env_steps=8 * 10 * 7, hidden_size=16, eta_embedding=4,
              trace_decay=0.5, reward_delay=5, eval_tasks=5)
    cfg = MetaGradConfig(**kw)
    full = M.train(cfg, tmp_path / "full", progress=False)
    M.train(cfg, tmp_path / "part", progress=False, max_iterations=3)
    part = M.train(cfg, tmp_path / "part", progress=False, resume=True)
    assert full["iterations"] == part["iterations"] == 6
    assert full["env_steps"] == cfg.total_env_steps
    for a, b in zip(full["model"].state_dict().values(), part["model"].state_dict().values()):
        assert torch.equal(a, b)
    rows = {name: list(csv.DictReader(open(tmp_path / name / "progress.csv"))) for name in ("full", "part")}
    assert [r["iteration"] for r in rows["part"]] == [str(i) for i in range(1, 7)]
    for a, b in zip(rows["full"], rows["part"]):
        for col in ("env_steps", "episode_return", "gamma", "lambda", "value_loss", "meta_grad_gamma"):
            assert a[col] == b[col], col
    assert rows["full"][-1]["env_steps"] == str(cfg.total_env_steps)
    assert json.loads((tmp_path / "full" / "config.json").read_text()) == cfg.__dict__
    assert checkpoint.read_kind(tmp_path / "full" / "checkpoint.pt") == "metagrad"
    ck = harness.load_checkpoint(tmp_path / "part", "metagrad")
    assert ck["iteration"] == 6 and ck["learner"]["iteration"] == 6
    assert ck["learner"]["trace"] is not None and set(ck["learner"]["env"]) == {"env", "acc", "t"}
    for a, b in zip(full["model"].state_dict().values(), ck["learner"]["model"].values()):
        assert torch.equal(a, b)
    model, cfg2 = M.load_model(tmp_path / "full")
    assert cfg2 == cfg
    assert torch.allclose(model.eta, torch.tensor([full["gamma"], full["lambda"]]))
    rep = M.report(model, cfg2, 5)
    assert set(rep) == {"metagrad", "random", "gamma", "lambda"} and len(rep["metagrad"]) == 2
    with pytest.raises(ValueError, match="config differs"):
        M.train(MetaGradConfig(**{**kw, "lr": 1e-3}), tmp_path / "full", progress=False, resume=True)


def test_fixed_eta_is_plain_a2c():
    """meta_gamma = meta_lambda = False: γ, λ stay put (λ = 0 and 1 allowed) and no meta-gradient is logged."""
    cfg = MetaGradConfig(num_envs=4, rollout_steps=5, total_env_steps=60, hidden_size=8, gamma=0.9, lam=0.0,
                         meta_gamma=False, meta_lambda=False, eval_tasks=3)
    s = M.train(cfg, None, progress=False)
    assert s["history"] and all((h["gamma"], h["lambda"]) == (pytest.approx(0.9), 0.0) for h in s["history"])
    assert all(h["meta_grad_gamma"] == h["meta_grad_lambda"] == 0.0 for h in s["history"])


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,match", [
    ({"env": "Nope-v0"}, "env must be one of"),
    ({"env": "Pendulum-v1"}, "Discrete"),
    ({"num_envs": 0}, "num_envs must be a positive int"),
    ({"rollout_steps": 2.5}, "rollout_steps must be a positive int"),
    ({"reward_delay": -1}, "reward_delay must be a non-negative int"),
    ({"total_env_steps": 10}, "at least one rollout"),
    ({"gamma": 1.2}, "gamma must be a finite number in \\[0, 1\\]"),
    ({"lam": 0.0}, "lam = 0.0 cannot be meta-learned"),
    ({"gamma": 1.0}, "gamma = 1.0 cannot be meta-learned.*meta_gamma=False"),
    ({"ref_lambda": -0.1}, "ref_lambda must be a finite number in"),
    ({"trace_decay": 1.0}, "trace_decay must be a finite number in \\[0, 1\\)"),
    ({"lr": 0.0}, "lr must be a positive finite number"),
    ({"max_grad_norm": float("inf")}, "max_grad_norm must be a positive finite number"),
    ({"meta_lr": -1.0}, "meta_lr must be a finite number >= 0"),
    ({"meta_vf_coef": -0.5}, "meta_vf_coef must be a finite number >= 0"),
    ({"returns_backend": "cuda"}, "returns_backend must be one of"),
])
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaGradConfig(**kwargs)


def test_fixed_extremes_are_valid():
    MetaGradConfig(gamma=1.0, lam=0.0, meta_gamma=False, meta_lambda=False)


@pytest.mark.parametrize("name", ["metarl.algos.metagrad_update", "metarl.envs.delayed_reward"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
