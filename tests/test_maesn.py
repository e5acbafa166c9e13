"""MAESN: z drawn once per episode, inner steps touch only the latent parameters, the KL term
against torch.distributions, the outer gradient reaches θ, the latents and α (second order), a
tiny Navigation2D run whose latent adaptation raises the return, and config validation."""
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import metarl
from metarl import checkpoint
from metarl.algos import maesn
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
    adv = maesn.task_advantages(batch, b, cfg.gamma)
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


def test_inner_update_per_task_equals_loop():
    """Each task's latent step depends on its own trajectories only (B = 3, K = 3)."""
    b, k = 3, 3
    cfg, env, model, _, env_tasks, g = _setup(b, k)
    mu = torch.randn(b, cfg.latent_dim, generator=g).requires_grad_(True)
    ls = torch.zeros(b, cfg.latent_dim, requires_grad=True)
    batch, eps = maesn.rollout(model["policy"], mu, ls, env, env_tasks, k, g, seed=0)
    adv = maesn.task_advantages(batch, b, cfg.gamma)
    mu1, ls1 = inner_update(model, mu, ls, batch, eps, adv, b, k)
    for i in range(b):
        sl = slice(i * k, (i + 1) * k)
        sub = maesn.Batch(*(getattr(batch, f)[:, sl] for f in ("obs", "actions", "rewards", "mask",
                                                                  "episode_start", "next_obs")))
        mi = mu[i:i + 1].detach().requires_grad_(True)
        li = ls[i:i + 1].detach().requires_grad_(True)
        m_i, l_i = inner_update(model, mi, li, sub, eps[:, sl], adv[:, sl], 1, k)
        torch.testing.assert_close(m_i[0], mu1[i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(l_i[0], ls1[i], atol=1e-5, rtol=1e-4)


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
    initialisations and α; latents of tasks outside the batch stay at N(0, I)."""
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=6, meta_batch_size=3,
                      trajectories_per_task=2, hidden=8, iterations=1, learn_inner_lr=True)
    s = train(cfg, run_dir=tmp_path, evaluate_at_end=False)
    env = metarl.make_vec(cfg.env, 1)
    init = maesn.init_model(cfg, env, torch.Generator().manual_seed(cfg.seed))
    m = s["model"]
    for n, v in init["policy"].items():
        assert not torch.equal(m["policy"][n].detach(), v.detach()), n
    moved = (m["mu"].detach() != 0).any(1)
    assert int(moved.sum()) == cfg.meta_batch_size
    assert not torch.equal(m["log_alpha_mu"].detach(), init["log_alpha_mu"].detach())
    ck = checkpoint.load(tmp_path / "checkpoint.pt", kind="maesn")
    assert ck["iteration"] == 1 and torch.equal(ck["model"]["mu"], m["mu"].detach())
    loaded, cfg2 = maesn.load_model(tmp_path)
    assert cfg2 == cfg and torch.equal(loaded["policy"]["w0"], m["policy"]["w0"].detach())


def test_inner_reward_selects_the_reward_of_the_inner_step(monkeypatch):
    """``inner_reward`` chooses the reward of the inner steps only; the outer step keeps ``train_reward``."""
    seen = []
    real = maesn._advantages

    def spy(cfg, batch, env_tasks, b, reward):
        seen.append(reward)
        return real(cfg, batch, env_tasks, b, reward)

    monkeypatch.setattr(maesn, "_advantages", spy)
    small = dict(env="SemicircleGoal-v0", num_train_tasks=4, meta_batch_size=2, trajectories_per_task=2, hidden=8,
                 iterations=1, inner_steps=2)
    train(MAESNConfig(**small, train_reward="dense", inner_reward="env"), evaluate_at_end=False)
    assert seen == ["env", "env", "dense"]
    seen.clear()
    train(MAESNConfig(**small, train_reward="dense"), evaluate_at_end=False)
    assert seen == ["dense", "dense", "dense"]


def test_resume_equals_an_uninterrupted_run(one_thread, tmp_path):
    """Stop after 2 of 4 outer updates, resume: same learned tensors and log rows as one run."""
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=6, meta_batch_size=3,
                      trajectories_per_task=2, hidden=8, iterations=4, learn_inner_lr=True)
    full = train(cfg, run_dir=tmp_path / "full", evaluate_at_end=False)["model"]
    assert train(cfg, run_dir=tmp_path / "part", max_iterations=2, evaluate_at_end=False)["iterations"] == 2
    resumed = train(cfg, run_dir=tmp_path / "part", evaluate_at_end=False, resume=True)
    assert resumed["iterations"] == 4
    for n in full["policy"]:
        assert torch.equal(full["policy"][n].detach(), resumed["model"]["policy"][n].detach()), n
    for n in ("mu", "log_sigma", "log_alpha_mu", "log_alpha_sigma"):
        assert torch.equal(full[n].detach(), resumed["model"][n].detach()), n

    def rows(d):   # everything but the wall-clock column
        return [line.split(",")[:-1] for line in (tmp_path / d / "progress.csv").read_text().splitlines()]
    assert rows("part") == rows("full")
    with pytest.raises(ValueError, match="config differs"):
        train(MAESNConfig(**{**cfg.__dict__, "hidden": 16}), run_dir=tmp_path / "part", resume=True)


def test_tiny_run_adaptation_improves_return(one_thread):
    """Navigation2D-v0 (dense reward), 40 outer updates of 8 tasks × 5 episodes from 16 train tasks,
    kl_coef 0.01, fixed inner step α = 10 (~3 s on one idle core; 90 s on the loaded shared box). 20 held-out
    tasks, z from N(0, I), then latent steps only. Measured (seed 0): return -39.5 before
    adaptation, -39.4 after one step, -34.8 after two (se ≈ 3 each, the same tasks at every
    stage): one step does not help, two do; the margin asserted is 2."""
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=16, meta_batch_size=8,
                      trajectories_per_task=5, iterations=40, inner_lr=10.0, learn_inner_lr=False, kl_coef=0.01)
    s = train(cfg, evaluate_at_end=False)
    r = evaluate(s["model"], cfg, num_tasks=20, steps=2)["returns"]
    assert r[2] > r[0] + 2, r


def test_fixed_inner_lr_stays_fixed():
    cfg = MAESNConfig(env="Navigation2D-v0", train_reward="env", num_train_tasks=4, meta_batch_size=2,
                      trajectories_per_task=2, hidden=8, iterations=1, inner_lr=7.0)
    m = train(cfg, evaluate_at_end=False)["model"]
    assert torch.allclose(m["log_alpha_mu"].exp(), torch.full((cfg.latent_dim,), 7.0))


@pytest.mark.slow
def test_sparse_goals_beat_random_exploration(one_thread):
    """SemicircleGoal-v0, the default config (~10 s on one idle core). Measured (seed 0, 20 held-out
    tasks): MAESN 34.4 / 40.8 / 44.6 / 50.3 steps in the goal region after 0-3 latent steps,
    the untrained policy (random exploration) adapted the same way 9.8 / 9.0 / 7.8 / 6.0."""
    s = train(MAESNConfig(eval_tasks=20))
    ours, rand = s["eval"]["maesn"]["returns"], s["eval"]["untrained"]["returns"]
    assert ours[0] > 2 * rand[0] and ours[3] > ours[0] and ours[3] > 2 * rand[3], (ours, rand)


@pytest.mark.parametrize("field,value", [
    ("max_inner_lr", 0.0), ("num_train_tasks", 0), ("meta_batch_size", 0), ("latent_dim", 0), ("inner_lr", 0.0),
    ("latent_lr", -1.0),
    ("kl_coef", -0.1), ("gamma", -0.5), ("train_reward", "shaped"), ("env", "Nope-v0"), ("inner_steps", 0),
    ("inner_reward", "sparse"),
])
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        MAESNConfig(**{field: value})


def test_batch_larger_than_train_set_raises():
    with pytest.raises(ValueError, match="meta_batch_size"):
        MAESNConfig(num_train_tasks=4, meta_batch_size=5)


def test_dense_reward_needs_goal_env():
    with pytest.raises(ValueError, match="train_reward"):
        MAESNConfig(env="Pendulum-v1", train_reward="dense")
    with pytest.raises(ValueError, match="inner_reward='dense'"):
        MAESNConfig(env="Pendulum-v1", train_reward="env", inner_reward="dense")
