"""ProMP (metarl.algos.promp): config checks, the outer objective and KL penalty, exact resume through the run
harness, learning on 2D navigation (the LVC objective's derivatives: tests/test_estimators.py, with the other
inner losses)."""
import csv
import dataclasses
import math

import pytest
import torch

from metarl import checkpoint
from metarl.algos import promp as P
from metarl.algos.pg import make_horizon_env, make_mlp_policy
from metarl.algos.promp import PROMPConfig, adapt_kl_coeff, evaluate, lvc_loss_fn, outer_loss, train
from metarl.cli import ALGOS

TINY = dict(meta_batch=3, trajectories_per_task=3, horizon=5, hidden_sizes=(8,), eval_tasks=0)


@pytest.mark.parametrize("field,value", [
    ("meta_batch", 0), ("trajectories_per_task", -1), ("horizon", 0), ("inner_lr", 0.0), ("inner_steps", 0),
    ("outer_lr", -1e-3), ("outer_steps", 0), ("clip_eps", 1.0), ("clip_eps", 0.0), ("init_inner_kl_penalty", -1.0),
    ("target_inner_kl", 0.0), ("gamma", 1.5), ("hidden_sizes", (0,)), ("env", "Nope-v0"), ("eval_steps", (-1,)),
    ("eval_tasks", -1), ("policy_init", "zeros"), ("env_options", "[1]"), ("meta_batch", 2.5)])
def test_bad_configs_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PROMPConfig(**{field: value})


def test_defaults_are_the_authors_run_scripts_and_promp_is_registered():
    cfg = PROMPConfig()
    assert (cfg.inner_lr, cfg.inner_steps, cfg.meta_batch, cfg.trajectories_per_task, cfg.horizon) == \
        (0.1, 1, 40, 20, 100)
    assert (cfg.outer_lr, cfg.outer_steps, cfg.clip_eps, cfg.init_inner_kl_penalty) == (1e-3, 5, 0.3, 5e-4)
    assert (cfg.target_inner_kl, cfg.adaptive_inner_kl, cfg.hidden_sizes) == (0.01, False, (64, 64))
    assert ALGOS["promp"] == ("metarl.algos.promp", "PROMPConfig", "PROMPLearner")


def test_outer_objective_at_the_sampling_point_and_its_kl_penalty():
    """Before any outer step the post-update ratio is 1 (surrogate = −mean A, outer KL 0), the inner KL is 0;
    after θ moves, the penalty adds exactly η · KL(π_old ‖ π_θ) on the pre-update samples."""
    cfg = PROMPConfig(**TINY, seed=3)
    learner = P.PROMPLearner(cfg)
    apply, k = learner.apply, cfg.trajectories_per_task
    tasks = learner.env.sample_tasks(cfg.meta_batch, generator=learner.task_generator)
    theta = {n: v.detach() for n, v in learner.theta.items()}
    pre, _ = P.sample(learner.env, apply, theta, False, tasks, k, cfg, learner.generator, learner.affine)
    adapted = {n: v.detach() for n, v in P.inner_loop(lvc_loss_fn(apply), theta, [pre], cfg.inner_lr, True).items()}
    post, _ = P.sample(learner.env, apply, adapted, True, tasks, k, cfg, learner.generator, learner.affine)
    loss, stats = outer_loss(apply, theta, [pre], post, [0.5], cfg)
    mean_adv = ((post["adv"] * post["mask"]).sum(1) / post["mask"].sum(1)).mean()
    torch.testing.assert_close(stats["surrogate"], -mean_adv, atol=1e-6, rtol=1e-5)
    assert float(stats["outer_kl"]) < 1e-9 and float(stats["inner_kl"][0]) < 1e-9
    moved = {n: v + 0.05 * torch.randn_like(v) for n, v in theta.items()}
    loss0, s0 = outer_loss(apply, moved, [pre], post, [0.0], cfg)
    loss1, s1 = outer_loss(apply, moved, [pre], post, [0.5], cfg)
    assert float(s1["inner_kl"][0]) > 1e-4
    torch.testing.assert_close(loss1 - loss0, 0.5 * s1["inner_kl"][0], atol=1e-6, rtol=1e-5)


def test_adaptive_kl_coefficient_follows_the_authors_rule():
    assert adapt_kl_coeff(1.0, 0.001, 0.01) == 0.5
    assert adapt_kl_coeff(1.0, 0.02, 0.01) == 2.0
    assert adapt_kl_coeff(1.0, 0.011, 0.01) == 1.0


@pytest.mark.parametrize("options", [dict(), dict(inner_steps=2, adaptive_inner_kl=True)])
def test_resume_equals_an_uninterrupted_run(tmp_path, options):
    cfg = PROMPConfig(**TINY, iterations=4, **options)
    train(cfg, tmp_path / "whole", progress=False)
    assert train(cfg, tmp_path / "split", max_iterations=2, progress=False)["iterations"] == 2
    resumed = train(cfg, tmp_path / "split", resume=True, progress=False)
    assert resumed["iterations"] == 4 and len(resumed["history"]) == 2
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt", kind="promp")
    b = checkpoint.load(tmp_path / "split" / "checkpoint.pt", kind="promp")
    assert a["iteration"] == b["iteration"] == 4
    for k in a["learner"]["policy"]:
        assert torch.equal(a["learner"]["policy"][k], b["learner"]["policy"][k]), k
    assert a["learner"]["kl_coeffs"] == b["learner"]["kl_coeffs"]
    rows = []
    for d in ("whole", "split"):
        with open(tmp_path / d / "progress.csv", newline="") as f:
            rows.append([{k: v for k, v in r.items() if k not in ("seconds", "env_steps_per_s")}
                         for r in csv.DictReader(f)])
    assert rows[0] == rows[1] and len(rows[0]) == 4
    with pytest.raises(ValueError, match="config differs"):
        train(dataclasses.replace(cfg, seed=1), tmp_path / "split", resume=True, progress=False)


def test_report_and_evaluation_steps():
    cfg = PROMPConfig(**dict(TINY, eval_tasks=2), eval_steps=(0, 2), eval_trajectories=2)
    learner = P.PROMPLearner(cfg)
    out = learner.report()["eval"]
    assert set(out) == {0, 2} and all(math.isfinite(v) for v in out.values())
    assert P.PROMPLearner(dataclasses.replace(cfg, eval_tasks=0)).report() == {}
    with pytest.raises(ValueError, match="num_tasks"):
        evaluate(make_mlp_policy(cfg, make_horizon_env(cfg, 1)), cfg, num_tasks=0)


def _paired(a, b):
    d = (b - a).double()
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def test_a_short_promp_run_on_navigation_learns_to_adapt():
    """15 meta-updates of 10 tasks × 10 trajectories of H = 20 (about 10 s on one thread): the post-update
    return on 40 held-out tasks rises clearly above the untrained policy's (paired over the same tasks)."""
    cfg = PROMPConfig(meta_batch=10, trajectories_per_task=10, horizon=20, hidden_sizes=(32, 32), iterations=15,
                      eval_tasks=0, seed=0)
    untrained = evaluate(make_mlp_policy(cfg, make_horizon_env(cfg, 1)), cfg, num_tasks=40, steps=(0, 1), per_task=True)
    summary = train(cfg, run_dir=None, progress=False)
    assert summary["iterations"] == 15
    trained = evaluate(summary["policy"], cfg, num_tasks=40, steps=(0, 1), per_task=True)
    better, se = _paired(untrained[1], trained[1])
    assert better > 4 * se, (better, se, {k: float(v.mean()) for k, v in trained.items()})
