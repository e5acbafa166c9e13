"""RL^2 end to end: learning on bandits, checkpoint/resume equality, the CLI, bad configs."""
import json

import pytest
import torch

from metarl import checkpoint
from metarl.algos.rl2 import RL2Config, evaluate, make_env, make_policy, train
from metarl.cli import main

SMALL = dict(num_envs=64, hidden_size=32, eval_tasks=200, total_env_steps=64 * 10 * 8)


def test_a_short_run_learns_well_above_random():
    """Bandits k = 5, n = 10: Random scores 5.0 and Greedy 6.4-6.6 (se ~0.1 on 400 tasks); a short run
    (512k env steps, ~15 s) must beat Random clearly and come close to Greedy (the full README run
    matches the Bayes-optimal policy: bench/RESULTS.md)."""
    cfg = RL2Config(num_envs=512, hidden_size=32, total_env_steps=512 * 10 * 100, eval_tasks=400, seed=1)
    summary = train(cfg, run_dir=None, progress=False)
    mean, se = summary["eval"]["rl2"]
    rnd_mean, rnd_se = summary["eval"]["random"]
    assert mean > rnd_mean + 4 * (se + rnd_se), summary["eval"]
    assert mean > summary["eval"]["greedy"][0] - 0.6, summary["eval"]


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = RL2Config(**SMALL)
    train(cfg, tmp_path / "whole", progress=False, max_iterations=6)
    train(cfg, tmp_path / "split", progress=False, max_iterations=3)
    train(cfg, tmp_path / "split", resume=True, progress=False, max_iterations=6)
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt", kind="rl2")
    b = checkpoint.load(tmp_path / "split" / "checkpoint.pt", kind="rl2")
    assert a["iteration"] == b["iteration"] == 6
    for k in a["learner"]["policy"]:
        assert torch.equal(a["learner"]["policy"][k], b["learner"]["policy"][k]), k
    whole = (tmp_path / "whole" / "progress.csv").read_text().splitlines()
    split = (tmp_path / "split" / "progress.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in whole] == [r.split(",")[:3] for r in split]


def test_corrupt_checkpoint_is_refused_and_kept(tmp_path):
    cfg = RL2Config(**SMALL)
    train(cfg, tmp_path, progress=False, max_iterations=1)
    path = tmp_path / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        train(cfg, tmp_path, resume=True, progress=False)
    assert path.read_bytes() == bytes(data)          # nothing overwritten
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(ValueError, match="truncated|corrupt"):
        train(cfg, tmp_path, resume=True, progress=False)


def test_cli_train_eval_plot(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "rl2", "--num-envs", "32", "--hidden-size", "16", "--total-env-steps", "960",
                 "--eval-tasks", "50", "--run-dir", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "rl2" in out and "random" in out and "env steps" in out
    assert json.loads((run / "config.json").read_text())["num_envs"] == 32
    assert (run / "progress.csv").exists() and (run / "checkpoint.pt").exists()
    assert main(["eval", str(run), "--tasks", "40"]) == 0
    assert "rl2" in capsys.readouterr().out
    assert main(["plot", str(run)]) == 0
    assert (run / "learning_curve.png").stat().st_size > 1000


@pytest.mark.parametrize("kwargs,match", [
    (dict(env="NoSuchEnv-v0"), "env must be one of"),
    (dict(num_envs=-3), "num_envs"),
    (dict(gamma=1.5), "gamma"),
    (dict(minibatches=10, num_envs=4), "minibatches"),
    (dict(hidden_size=True), "hidden_size must be a positive int"),
    (dict(epochs=2.0), "epochs must be a positive int"),
    (dict(rollout_steps=-1), "rollout_steps must be a non-negative int"),
    (dict(lr=float("nan")), "lr must be a positive finite number"),
    (dict(clip=float("inf")), "clip"),
    (dict(max_grad_norm=-1), "max_grad_norm"),
    (dict(ent_coef="str"), "ent_coef"),
    (dict(seed=1.5), "seed"),
    (dict(seed=-1), "seed"),
    (dict(normalize_returns="yes"), "normalize_returns must be a bool"),
    (dict(checkpoint_minutes=float("nan")), "checkpoint_minutes"),
])
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RL2Config(**kwargs)


def test_cli_reports_bad_config(capsys):
    assert main(["train", "rl2", "--num-envs", "0", "--quiet"]) == 2
    assert "num_envs" in capsys.readouterr().err


def test_evaluate_uses_held_out_tasks_one_trial_each():
    cfg = RL2Config(**SMALL)
    env = make_env(cfg, 8)
    policy = make_policy(cfg, env)
    r = evaluate(policy, cfg, num_tasks=30)
    assert r.shape == (30,) and bool(((r >= 0) & (r <= cfg.episodes_per_trial)).all())
    assert torch.equal(r, evaluate(policy, cfg, num_tasks=30))     # deterministic


def test_return_normalizer_matches_the_pooled_mean_and_std():
    from metarl.algos.rl2 import ReturnNormalizer

    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(7, 5, generator=g) * 30 + 80, torch.randn(3, 11, generator=g) * 5 - 2,
              torch.randn(1, 1, generator=g)]
    norm = ReturnNormalizer()
    for c in chunks:
        norm.update(c)
    pooled = torch.cat([c.flatten() for c in chunks]).double()
    torch.testing.assert_close(norm.mean, pooled.mean())
    torch.testing.assert_close(norm.std, pooled.var(unbiased=False).sqrt())
    fresh = ReturnNormalizer()
    fresh.load_state_dict(norm.state_dict())
    assert float(fresh.mean) == float(norm.mean) and float(fresh.std) == float(norm.std)
