"""Reptile: the batched inner loop against a Python loop over tasks (torch.optim.Adam, β1 = 0),
the exact outer step, the sine-wave check (meta-learned init vs random init), a small RL run,
exact resume through the run harness, and config validation. The batched MLP, rollouts and
advantages are tested in test_pg.py."""
import csv
import math

import pytest
import torch

import metarl
from metarl import checkpoint
from metarl.algos import pg, reptile
from metarl.algos.reptile import (
    ReptileConfig,
    SineConfig,
    adam_inner,
    init_mlp,
    mlp_forward,
    policy_dist,
    reptile_step,
    stack,
    train,
    train_sine,
)


def _mlp_single(params, x):
    """One task's MLP: x [M, in] (the batched MLP on a batch of one, checked against a plain loop in
    test_pg.py)."""
    return mlp_forward({k: v[None] for k, v in params.items()}, x[None])[0]


@pytest.mark.parametrize("b,steps", [(1, 1), (3, 4), (5, 7)])
def test_inner_loop_batched_equals_python_loop(b, steps):
    """All tasks adapted at once == each task adapted alone with torch.optim.Adam(betas=(0, 0.999))."""
    g = torch.Generator().manual_seed(10 + b)
    phi = init_mlp((1, 9, 9, 1), g)
    amp, phase = reptile.sample_sine_tasks(b, g)
    x, y = reptile.sine_points(amp, phase, 11, g)
    lr = 0.02
    fast = adam_inner(stack(phi, b), lambda p, _s: ((mlp_forward(p, x) - y) ** 2).mean((1, 2)), steps, lr)
    for i in range(b):
        p = {k: v.clone().requires_grad_(True) for k, v in phi.items()}
        opt = torch.optim.Adam(p.values(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
        for _ in range(steps):
            opt.zero_grad()
            ((_mlp_single(p, x[i]) - y[i]) ** 2).mean().backward()
            opt.step()
        for k in phi:
            torch.testing.assert_close(fast[k][i], p[k].detach(), atol=1e-5, rtol=1e-4)


def test_inner_loop_does_not_modify_inputs():
    phi = stack(init_mlp((1, 4, 1), torch.Generator().manual_seed(0)), 3)
    before = {k: v.clone() for k, v in phi.items()}
    adam_inner(phi, lambda p, _s: (mlp_forward(p, torch.ones(3, 2, 1)) ** 2).mean((1, 2)), 2, 0.1)
    assert all(torch.equal(before[k], phi[k]) for k in phi)


@pytest.mark.parametrize("b", [1, 3])
def test_outer_step_is_exact(b):
    g = torch.Generator().manual_seed(b)
    phi = init_mlp((2, 3, 1), g)
    tilde = {k: v.unsqueeze(0) + torch.randn((b, *v.shape), generator=g) for k, v in phi.items()}
    eps = 0.37
    new = reptile_step(phi, tilde, eps)
    for k in phi:
        expected = phi[k] + eps * (tilde[k].mean(0) - phi[k])   # φ + ε (mean φ̃ − φ)
        torch.testing.assert_close(new[k], expected, atol=1e-6, rtol=0)
        if b == 1:   # one task: exactly φ + ε (φ̃ − φ), bit for bit
            assert torch.equal(new[k], phi[k] + eps * (tilde[k][0] - phi[k]))
    one = reptile_step(phi, tilde, 1.0)   # ε = 1 with one task lands on φ̃
    if b == 1:
        for k in phi:
            torch.testing.assert_close(one[k], tilde[k][0], atol=1e-6, rtol=0)


def test_sine_meta_init_adapts_better_than_random_init(one_thread):
    """Paper's sine-wave problem, 1,500 meta-iterations of 4 waves × 5 steps (~6 s on one idle
    core). 10 shots, 32 Adam steps, MSE on 100 evenly spaced x, 100 new waves. Measured (seed 0):
    meta-learned init 0.41 (2,000 its: 0.38), random init 1.93 (before any step:
    3.2 vs 4.1)."""
    s = train_sine(SineConfig(iterations=1500))
    meta, rand = s["eval"]["mse_after"], s["eval_random_init"]["mse_after"]
    assert s["eval"]["steps"] == 32 and s["eval"]["shots"] == 10
    assert meta < 0.5 * rand, (meta, rand)
    assert s["eval"]["mse_after"] < s["eval"]["mse_before"]


# ----------------------------------------------------------------------------- RL pieces
def test_policy_is_per_task():
    """Env j uses task j // K's parameters: B = 3 tasks, K = 3 trajectories."""
    b, k = 3, 3
    cfg = ReptileConfig(meta_batch_size=b, trajectories_per_task=k)
    env = reptile.make_env(cfg, b * k)
    g = torch.Generator().manual_seed(0)
    per_task = [reptile.init_policy(cfg, env, g) for _ in range(b)]
    for i, p in enumerate(per_task):
        p["log_std"] = p["log_std"] + 0.1 * i
    batched = {n: torch.stack([p[n] for p in per_task]) for n in per_task[0]}
    tasks = env.sample_tasks(b, generator=g)
    batch = pg.collect(env, lambda o, _s: policy_dist(batched, o, b), 20, g, tasks=tasks[torch.arange(b * k) // k],
                       seed=0)
    mean, log_std = policy_dist(batched, batch.obs, b)
    losses = reptile.vpg_losses(batched, batch, pg.task_advantages(batch, b, 0.99), b)
    assert losses.shape == (b,)
    for i in range(b):
        sl = slice(i * k, (i + 1) * k)
        single = {n: v[None] for n, v in per_task[i].items()}
        m1, s1 = policy_dist(single, batch.obs[:, sl], 1)
        torch.testing.assert_close(mean[:, sl], m1)
        torch.testing.assert_close(log_std[:, sl], s1)


def test_rl_adaptation_improves_return(one_thread, tmp_path):
    """Navigation2D-v0, 10 outer updates of 8 tasks × 5 trajectories (~4-7 s). Measured (seed 0) on
    20 held-out tasks: return -39.3 before adaptation, -20.4 after one inner step (se 2.7, 1.6)."""
    cfg = ReptileConfig(meta_batch_size=8, trajectories_per_task=5, iterations=10, eval_tasks=20, eval_steps=1)
    s = train(cfg, run_dir=tmp_path)
    r = s["eval"]["returns"]
    assert len(r) == 2
    assert r[1] > r[0] + 5, r
    assert (tmp_path / "progress.csv").read_text().count("\n") == 11
    ck = checkpoint.load(tmp_path / "checkpoint.pt", kind="reptile")
    assert ck["iteration"] == 10 and ck["config"]["iterations"] == 10 and ck["learner"]["iteration"] == 10
    params, cfg2 = reptile.load_params(tmp_path)
    assert cfg2 == cfg and all(torch.equal(params[n], s["params"][n]) for n in params)


def test_resume_equals_an_uninterrupted_run(one_thread, tmp_path):
    """Stop after 2 of 4 meta-updates, resume: same φ and the same log rows as one run of 4."""
    cfg = ReptileConfig(meta_batch_size=3, trajectories_per_task=2, iterations=4, eval_tasks=2, eval_steps=1,
                        hidden=8)
    full = train(cfg, run_dir=tmp_path / "full")
    part = train(cfg, run_dir=tmp_path / "part", max_iterations=2)
    assert part["iterations"] == 2 and "eval" not in part
    resumed = train(cfg, run_dir=tmp_path / "part", resume=True)
    assert resumed["iterations"] == 4
    for n in full["params"]:
        assert torch.equal(full["params"][n], resumed["params"][n]), n
    assert resumed["eval"] == full["eval"]

    def rows(d):   # everything but the wall-clock columns
        with open(tmp_path / d / "progress.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k not in ("seconds", "env_steps_per_s")} for r in csv.DictReader(f)]
    assert rows("part") == rows("full") and len(rows("full")) == 4
    learner = reptile.ReptileLearner(cfg)                 # as `metarl eval` restores a run
    learner.load_state_dict(checkpoint.load(tmp_path / "part" / "checkpoint.pt", kind="reptile")["learner"])
    assert learner.report() == {"eval": full["eval"]}
    with pytest.raises(ValueError, match="config differs"):
        train(ReptileConfig(**{**cfg.__dict__, "inner_lr": 0.2}), run_dir=tmp_path / "part", resume=True)
    with pytest.raises(ValueError, match="run_dir"):
        train(cfg, resume=True)


@pytest.mark.parametrize("field,value", [
    ("meta_batch_size", 0), ("trajectories_per_task", -1), ("inner_steps", 0), ("inner_lr", 0.0),
    ("outer_lr", -1.0), ("gamma", 1.5), ("env", "Nope-v0"), ("num_train_tasks", -2), ("iterations", 1.5),
    ("eval_tasks", -1),
])
def test_bad_reptile_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        ReptileConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("hidden", 0), ("inner_steps", 0), ("inner_lr", -0.1),
                                         ("outer_lr", math.inf), ("eval_shots", 0)])
def test_bad_sine_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        SineConfig(**{field: value})


def test_eval_tasks_zero_means_no_evaluation_unless_a_number_is_given():
    cfg = ReptileConfig(meta_batch_size=2, trajectories_per_task=2, iterations=1, hidden=8, eval_tasks=0, eval_steps=1)
    s = train(cfg)
    assert "eval" not in s and s["iterations"] == 1
    learner = reptile.ReptileLearner(cfg)
    assert learner.report() == {} and len(learner.report(2)["eval"]["returns"]) == 2
    with pytest.raises(ValueError, match="num_tasks must be a positive int"):
        reptile.evaluate(s["params"], cfg)


def test_discrete_env_rejected():
    with pytest.raises(ValueError, match="Box"):
        reptile.make_env(ReptileConfig(env="CartPole-v1"), 2)


def test_make_vec_available():
    assert "Navigation2D-v0" in metarl.envs.ENV_CLASSES
