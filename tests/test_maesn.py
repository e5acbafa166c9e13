"""MAESN: z drawn once per episode, inner steps touch only the latent parameters, the KL term
against torch.distributions, the outer gradient reaches θ, the latents and α (second order), a
tiny Navigation2D run whose latent adaptation raises the return, exact resume through the run
harness, and config validation."""
import csv

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import metarl
from metarl import checkpoint
from metarl.algos import maesn, pg
from metarl.algos.maesn import MAESNConfig, evaluate, inner_update, kl_standard_normal, train


def _setup(b=3, k=3, horizon=4):
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=5, meta_batch_size=b,
                      trajectories_per_task=k, hidden=8)
    env = metarl.make_vec(cfg.env, b * k, autoreset_mode="same_step", seed=0, max_episode_steps=horizon)
    g = torch.Generator().manual_seed(0)
    model = maesn.init_model(cfg, env, g)
    tasks = env.sample_tasks(b, generator=g)
    return cfg, env, model, tasks, tasks[torch.arange(b * k) // k], g


def test_latent_drawn_once_per_episode():
    """3 episodes of 4 steps per env: eps (hence z = μ + σ·eps) is constant inside an episode and
    redrawn at each episode start; different envs draw different z."""
    b, k, h = 3, 3, 4
    cfg, env, model, _, env_tasks, g = _setup(b, k, h)
    mu = torch.randn(b, cfg.latent_dim, generator=g)
    ls = 0.1 * torch.randn(b, cfg.latent_dim, generator=g)
    batch, eps = maesn.rollout(model["policy"], mu, ls, env, env_tasks, k, g, seed=0, steps=3 * h)
    assert eps.shape == (3 * h, b * k, cfg.latent_dim)
    starts = batch.episode_start.nonzero()[:, 0].unique().tolist()
    assert starts == [0, h, 2 * h]               # no env terminates this early: fixed-length episodes
    for e in range(3):
        ep = eps[e * h:(e + 1) * h]
        assert torch.equal(ep, ep[:1].expand_as(ep))                     # constant within the episode
        if e:
            assert not torch.isclose(ep[0], eps[(e - 1) * h]).any()      # redrawn at the next episode
    assert torch.unique(eps[0], dim=0).shape[0] == b * k                 # envs draw their own z


def test_inner_update_changes_only_latents():
    b, k = 3, 3
    cfg, env, model, tasks, env_tasks, g = _setup(b, k)
    theta_before = {n: v.detach().clone() for n, v in model["policy"].items()}
    mu = torch.zeros(b, cfg.latent_dim, requires_grad=True)
    ls = torch.zeros(b, cfg.latent_dim, requires_grad=True)
    batch, eps = maesn.rollout(model["policy"], mu, ls, env, env_tasks, k, g, seed=0)
    adv = pg.task_advantages(batch, b, cfg.gamma)
    mu1, ls1 = inner_update(model, mu, ls, batch, eps, adv, b, k)
    assert not torch.equal(mu1, mu) and not torch.equal(ls1, ls)
    for n, v in model["policy"].items():
        assert torch.equal(v, theta_before[n]) and v.grad is None       # θ read, never written or accumulated
    # the full test-time adaptation (3 steps) also leaves θ and α untouched
    alpha = model["log_alpha_mu"].detach().clone()
    mu3, _, rets, reached = maesn.adapt(model, cfg, env, tasks, 3, g, seed=0)
    assert rets.shape == (4, b) and reached.shape == (4, b) and mu3.shape == (b, cfg.latent_dim)
    assert all(torch.equal(v, theta_before[n]) for n, v in model["policy"].items())
    assert torch.equal(model["log_alpha_mu"], alpha)


@pytest.mark.parametrize("rule", ["reparam", "score"])
def test_inner_update_per_task_equals_loop(rule):
    """Each task's latent step depends on its own trajectories only (B = 3, K = 3), for both latent
    gradients."""
    b, k = 3, 3
    cfg, env, model, _, env_tasks, g = _setup(b, k)
    model["latent_gradient"] = rule
    mu = torch.randn(b, cfg.latent_dim, generator=g).requires_grad_(True)
    ls = torch.zeros(b, cfg.latent_dim, requires_grad=True)
    batch, eps = maesn.rollout(model["policy"], mu, ls, env, env_tasks, k, g, seed=0)
    adv = pg.task_advantages(batch, b, cfg.gamma)
    mu1, ls1 = inner_update(model, mu, ls, batch, eps, adv, b, k)
    for i in range(b):
        sl = slice(i * k, (i + 1) * k)
        sub = pg.Batch(*(getattr(batch, f)[:, sl] for f in ("obs", "actions", "rewards", "mask",
                                                                  "episode_start", "next_obs")))
        mi = mu[i:i + 1].detach().requires_grad_(True)
        li = ls[i:i + 1].detach().requires_grad_(True)
        m_i, l_i = inner_update(model, mi, li, sub, eps[:, sl], adv[:, sl], 1, k)
        torch.testing.assert_close(m_i[0], mu1[i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(l_i[0], ls1[i], atol=1e-5, rtol=1e-4)


def test_latent_score_gradient_matches_closed_form():
    """The "score" rule's loss ``-mean log N(z | μ, σ) · A`` (z fixed) has the likelihood-ratio
    gradients ``∇_μ = -mean A (z − μ)/σ²`` and ``∇_{log σ} = -mean A ((z − μ)²/σ² − 1)`` per task,
    does not depend on θ, and its step moves μ along ``(z − μ)/σ²`` of the one favoured episode."""
    b, k = 2, 3
    cfg, env, model, _, env_tasks, g = _setup(b, k)
    mu = torch.randn(b, cfg.latent_dim, generator=g).requires_grad_(True)
    ls = (0.3 * torch.randn(b, cfg.latent_dim, generator=g)).requires_grad_(True)
    batch, eps = maesn.rollout(model["policy"], mu, ls, env, env_tasks, k, g, seed=0)
    adv = torch.randn(batch.mask.shape, generator=g) * batch.mask
    losses = maesn.latent_score_losses(mu, ls, batch, eps, adv, b, k)
    g_mu, g_ls = torch.autograd.grad(losses.sum(), [mu, ls])
    sig = ls.detach().exp().repeat_interleave(k, 0)
    z = mu.detach().repeat_interleave(k, 0) + sig * eps               # [T, N, d]
    u = (z - mu.detach().repeat_interleave(k, 0)) / sig
    w = (adv * batch.mask)[..., None]
    count = batch.mask.view(-1, b, k).sum((0, 2))[:, None]           # valid steps per task
    ref_mu = -(w * u / sig).view(-1, b, k, cfg.latent_dim).sum((0, 2)) / count
    ref_ls = -(w * (u * u - 1)).view(-1, b, k, cfg.latent_dim).sum((0, 2)) / count
    torch.testing.assert_close(g_mu, ref_mu, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_ls, ref_ls, atol=1e-5, rtol=1e-4)
    assert losses.grad_fn is not None and all(
        torch.autograd.grad(losses.sum(), [v], allow_unused=True)[0] is None for v in model["policy"].values())
    # favour task 0's first episode only: the step moves μ_0 toward that episode's z
    adv1 = torch.zeros_like(adv)
    adv1[:, 0] = batch.mask[:, 0]
    model["latent_gradient"] = "score"
    mu1, _ = inner_update(model, mu, ls, batch, eps, adv1, b, k)
    step = (mu1 - mu)[0].detach()
    target = ((z[0, 0] - mu[0]) / ls[0].exp() ** 2).detach()        # (z − μ)/σ², per dimension
    assert torch.dot(step, target) > 0.999 * step.norm() * target.norm()
    torch.testing.assert_close(mu1[1], mu[1])                           # task 1 saw no advantage


def test_latent_init_options():
    """``latent_init="normal"`` (default): per-task means drawn from N(0, I) with the run's generator;
    ``latent_init_log_sigma`` sets every log σ_i; "zeros" starts every mean at 0."""
    cfg, env, *_ = _setup()
    zeros = maesn.init_model(MAESNConfig(**{**cfg.__dict__, "latent_init": "zeros"}), env,
                             torch.Generator().manual_seed(0))
    assert torch.equal(zeros["mu"], torch.zeros_like(zeros["mu"])) and zeros["latent_gradient"] == "reparam"
    cfg2 = MAESNConfig(**{**cfg.__dict__, "latent_init_log_sigma": -1.5, "latent_gradient": "score",
                          "num_train_tasks": 400})
    a = maesn.init_model(cfg2, env, torch.Generator().manual_seed(0))
    b = maesn.init_model(cfg2, env, torch.Generator().manual_seed(0))
    assert torch.equal(a["mu"], b["mu"]) and a["mu"].shape == (400, cfg.latent_dim)
    mu = a["mu"].detach()
    assert abs(float(mu.mean())) < 0.15 and abs(float(mu.std()) - 1) < 0.1
    assert torch.equal(a["log_sigma"], torch.full((400, cfg.latent_dim), -1.5))
    assert a["latent_gradient"] == "score" and a["mu"].requires_grad


@pytest.mark.parametrize("shape", [(1, 1), (5, 2), (3, 7)])
def test_kl_matches_closed_form(shape):
    g = torch.Generator().manual_seed(shape[1])
    mu = torch.randn(shape, generator=g)
    ls = 0.5 * torch.randn(shape, generator=g)
    ref = kl_divergence(Normal(mu, ls.exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_standard_normal(mu, ls), ref, atol=1e-6, rtol=1e-5)
    assert float(kl_standard_normal(torch.zeros(2), torch.zeros(2))) == 0.0


def test_outer_step_reaches_policy_latents_and_step_sizes(tmp_path):
    """One outer update (second order through the inner step) moves θ, the batch's latent
    initialisations and α; latents of tasks outside the batch keep their initial values."""
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=6, meta_batch_size=3,
                      trajectories_per_task=2, hidden=8, iterations=1, learn_inner_lr=True, eval_tasks=0)
    s = train(cfg, run_dir=tmp_path)
    env = metarl.make_vec(cfg.env, 1)
    init = maesn.init_model(cfg, env, torch.Generator().manual_seed(cfg.seed))
    m = s["model"]
    for n, v in init["policy"].items():
        assert not torch.equal(m["policy"][n].detach(), v.detach()), n
    moved = (m["mu"].detach() != init["mu"].detach()).any(1)
    assert int(moved.sum()) == cfg.meta_batch_size
    assert not torch.equal(m["log_alpha_mu"].detach(), init["log_alpha_mu"].detach())
    ck = checkpoint.load(tmp_path / "checkpoint.pt", kind="maesn")
    assert ck["iteration"] == 1 and torch.equal(ck["learner"]["model"]["mu"], m["mu"].detach())
    loaded, cfg2 = maesn.load_model(tmp_path)
    assert cfg2 == cfg and torch.equal(loaded["policy"]["w0"], m["policy"]["w0"].detach())
    assert loaded["latent_gradient"] == cfg.latent_gradient and loaded["max_inner_lr"] == cfg.max_inner_lr
    assert "eval" not in s                                        # eval_tasks=0: no evaluation at the end
    assert set(maesn.MAESNLearner(cfg).report(2)["eval"]) == {"maesn", "untrained"}


@pytest.mark.parametrize("rule", ["reparam", "score"])
def test_trpo_outer_step_improves_surrogate_within_trust_region(rule):
    """The paper's outer step: one TRPO update lowers the surrogate (+ prior KL), keeps the mean KL of
    the post-update policy within ``max_kl``, and moves θ and the batch's latents only."""
    b, k = 3, 3
    cfg, env, model, tasks, env_tasks, g = _setup(b, k, horizon=8)
    cfg = MAESNConfig(**{**cfg.__dict__, "outer": "trpo", "max_kl": 0.02, "latent_gradient": rule})
    model["latent_gradient"] = rule
    idx = torch.tensor([0, 2, 4])
    with torch.no_grad():
        model["mu"].copy_(torch.randn(model["mu"].shape, generator=g))
    before = {n: v.detach().clone() for n, v in model["policy"].items()}
    mu_before = model["mu"].detach().clone()
    mu0, ls0 = model["mu"][idx], model["log_sigma"][idx]
    batch, eps = maesn.rollout(model["policy"], mu0, ls0, env, env_tasks, k, g, seed=0)
    adv = pg.task_advantages(batch, b, cfg.gamma)
    mu1, ls1 = inner_update(model, mu0, ls0, batch, eps, adv, b, k)
    post, eps1 = maesn.rollout(model["policy"], mu1, ls1, env, env_tasks, k, g)
    adv1 = pg.task_advantages(post, b, cfg.gamma)
    stats = maesn.trpo_outer_step(model, cfg, idx, [(batch, eps, adv)], post, eps1, adv1,
                                  (mu1.detach(), ls1.detach()))
    assert stats["accepted"] == 1
    assert stats["surrogate_after"] < stats["surrogate_before"]
    assert 0 < stats["kl"] <= cfg.max_kl
    assert any(not torch.equal(v.detach(), before[n]) for n, v in model["policy"].items())
    moved = (model["mu"].detach() != mu_before).any(1)
    assert moved[idx].all() and not moved[[1, 3]].any()


def test_trpo_outer_trains_and_resumes(tmp_path):
    """``outer="trpo"`` through :func:`train`: a run of 2 updates equals 1 + resume 1."""
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=6, meta_batch_size=3,
                      trajectories_per_task=2, hidden=8, iterations=2, outer="trpo", latent_init="normal",
                      eval_tasks=0)
    full = train(cfg, run_dir=tmp_path / "full")["model"]
    train(cfg, run_dir=tmp_path / "part", max_iterations=1)
    resumed = train(cfg, run_dir=tmp_path / "part", resume=True)["model"]
    init = maesn.init_model(cfg, metarl.make_vec(cfg.env, 1), torch.Generator().manual_seed(cfg.seed))
    assert not torch.equal(full["policy"]["w0"].detach(), init["policy"]["w0"].detach())
    for n in full["policy"]:
        assert torch.equal(full["policy"][n].detach(), resumed["policy"][n].detach()), n
    assert torch.equal(full["mu"].detach(), resumed["mu"].detach())


def test_inner_reward_selects_the_reward_of_the_inner_step(monkeypatch):
    """``inner_reward`` chooses the reward of the inner steps only; the outer step keeps ``train_reward``."""
    seen = []
    real = maesn._advantages

    def spy(cfg, batch, env_tasks, b, reward):
        seen.append(reward)
        return real(cfg, batch, env_tasks, b, reward)

    monkeypatch.setattr(maesn, "_advantages", spy)
    small = dict(env="SemicircleGoal-v0", num_train_tasks=4, meta_batch_size=2, trajectories_per_task=2, hidden=8,
                 iterations=1, inner_steps=2, eval_tasks=0)
    train(MAESNConfig(**small, train_reward="dense", inner_reward="env"))
    assert seen == ["env", "env", "dense"]
    seen.clear()
    train(MAESNConfig(**small, train_reward="dense"))
    assert seen == ["dense", "dense", "dense"]


def test_resume_equals_an_uninterrupted_run(one_thread, tmp_path):
    """Stop after 2 of 4 outer updates, resume: same learned tensors and log rows as one run."""
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=6, meta_batch_size=3,
                      trajectories_per_task=2, hidden=8, iterations=4, learn_inner_lr=True, eval_tasks=0)
    full = train(cfg, run_dir=tmp_path / "full")["model"]
    assert train(cfg, run_dir=tmp_path / "part", max_iterations=2)["iterations"] == 2
    resumed = train(cfg, run_dir=tmp_path / "part", resume=True)
    assert resumed["iterations"] == 4
    for n in full["policy"]:
        assert torch.equal(full["policy"][n].detach(), resumed["model"]["policy"][n].detach()), n
    for n in ("mu", "log_sigma", "log_alpha_mu", "log_alpha_sigma"):
        assert torch.equal(full[n].detach(), resumed["model"][n].detach()), n

    def rows(d):   # everything but the wall-clock columns
        with open(tmp_path / d / "progress.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k not in ("seconds", "env_steps_per_s")} for r in csv.DictReader(f)]
    assert rows("part") == rows("full") and len(rows("full")) == 4
    with pytest.raises(ValueError, match="config differs"):
        train(MAESNConfig(**{**cfg.__dict__, "hidden": 16}), run_dir=tmp_path / "part", resume=True)


def test_tiny_run_adaptation_improves_return(one_thread):
    """Navigation2D-v0 (dense reward), 40 outer updates of 8 tasks × 5 episodes from 16 train tasks,
    kl_coef 0.01, fixed inner step α = 10 (~3 s on one idle core; 90 s on the loaded shared box). 20 held-out
    tasks, z from N(0, I), then latent steps only. Measured (seed 0): return -39.5 before
    adaptation, -39.4 after one step, -34.8 after two (se ≈ 3 each, the same tasks at every
    stage): one step does not help, two do; the margin asserted is 2. Latents start at N(0, I)
    (``latent_init="zeros"``, σ = 1: the defaults when this was measured)."""
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=16, meta_batch_size=8,
                      trajectories_per_task=5, iterations=40, inner_lr=10.0, learn_inner_lr=False, kl_coef=0.01,
                      latent_init="zeros", latent_init_log_sigma=0.0, eval_tasks=0)
    s = train(cfg)
    r = evaluate(s["model"], cfg, num_tasks=20, steps=2)["returns"]
    assert r[2] > r[0] + 2, r


def test_fixed_inner_lr_stays_fixed():
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=4, meta_batch_size=2,
                      trajectories_per_task=2, hidden=8, iterations=1, inner_lr=7.0, eval_tasks=0)
    m = train(cfg)["model"]
    assert torch.allclose(m["log_alpha_mu"].exp(), torch.full((cfg.latent_dim,), 7.0))


@pytest.mark.slow
def test_sparse_goals_beat_random_exploration(one_thread):
    """SemicircleGoal-v0, the default config (~40 s on one core beside another job). Measured (seed 0,
    20 held-out tasks): MAESN 53.8 / 48.4 / 50.8 / 61.9 steps in the goal region after 0-3 latent
    steps (s.e. 12-16), the untrained policy (random exploration) adapted the same way 9.8 / 9.0 /
    7.8 / 6.0."""
    s = train(MAESNConfig(eval_tasks=20))
    ours, rand = s["eval"]["maesn"]["returns"], s["eval"]["untrained"]["returns"]
    assert ours[0] > 2 * rand[0] and ours[3] > ours[0] and ours[3] > 2 * rand[3], (ours, rand)


@pytest.mark.parametrize("field,value", [
    ("max_inner_lr", 0.0), ("num_train_tasks", 0), ("meta_batch_size", 0), ("latent_dim", 0), ("inner_lr", 0.0),
    ("latent_lr", -1.0),
    ("kl_coef", -0.1), ("gamma", -0.5), ("train_reward", "shaped"), ("env", "Nope-v0"), ("inner_steps", 0),
    ("inner_reward", "sparse"), ("latent_gradient", "pathwise"), ("latent_init", "uniform"), ("outer", "sgd"),
    ("max_kl", 0.0), ("eval_tasks", -1), ("latent_init_log_sigma", float("nan")),
])
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        MAESNConfig(**{field: value})


def test_batch_larger_than_train_set_raises():
    with pytest.raises(ValueError, match="meta_batch_size"):
        MAESNConfig(num_train_tasks=4, meta_batch_size=5)


def test_inner_lr_above_its_bound_raises():
    """The step size is clamped to max_inner_lr: a larger inner_lr would silently be the bound."""
    with pytest.raises(ValueError, match="inner_lr .* must not exceed max_inner_lr"):
        MAESNConfig(inner_lr=50.0, max_inner_lr=40.0)


def test_dense_reward_needs_goal_env():
    with pytest.raises(ValueError, match="train_reward"):
        MAESNConfig(env="Pendulum-v1", train_reward="dense")
    with pytest.raises(ValueError, match="inner_reward='dense'"):
        MAESNConfig(env="Pendulum-v1", train_reward="env", inner_reward="dense")
