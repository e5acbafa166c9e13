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


# ----------------------------------------------------------------------------- the CLI as a new user meets it
TINY = ["--num-envs", "8", "--hidden-size", "8", "--total-env-steps", "320", "--eval-tasks", "10", "--quiet"]


def test_cli_refuses_to_overwrite_a_run_unless_told(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "rl2", *TINY, "--run-dir", str(run)]) == 0
    log = (run / "progress.csv").read_text()
    ck = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "rl2", *TINY, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (run / "progress.csv").read_text() == log and (run / "checkpoint.pt").read_bytes() == ck
    assert main(["train", "rl2", *TINY, "--seed", "3", "--run-dir", str(run), "--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["seed"] == 3


@pytest.mark.parametrize("argv,match", [
    (["train", "rl2", "--lr", "nan"], "lr must be a positive finite number, got nan"),
    (["train", "rl2", "--clip", "inf"], "clip must be a positive finite number"),
    (["train", "rl2", "--seed", "-1"], "seed must be a non-negative int"),
    (["train", "rl2", "--device", "cuda:0"], "cuda"),
    (["eval", "{file}"], "no checkpoint.pt"),
    (["plot", "{file}"], "no progress.csv"),
    (["train", "rl2", "--run-dir", "{file}"], "is a file, not a directory"),
    (["train", "rl2", "--resume", "{tmp}/nothing"], "no checkpoint.pt"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, match):
    if any("cuda" in a for a in argv) and torch.cuda.is_available():
        pytest.skip("CUDA is available here: the run would start")
    f = tmp_path / "file"
    f.write_text("not a run")
    argv = [a.format(file=f, tmp=tmp_path) for a in argv]
    assert main([*argv, "--quiet"] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith("metarl ") and len(err.strip().splitlines()) == 1, err


def test_cli_resume_of_another_learners_run_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "rl2", *TINY, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "maml", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a 'rl2' run, not 'maml'" in err and len(err.strip().splitlines()) == 1


def test_cli_counts_take_scientific_notation(capsys):
    from metarl.cli import parse_int

    assert parse_int("1e5") == 100_000 and parse_int("2_000") == 2000 and parse_int("3") == 3
    with pytest.raises(SystemExit):
        main(["train", "rl2", "--total-env-steps", "1.5e0"])
    assert "expected an integer" in capsys.readouterr().err


def test_cli_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, contextlib, io\nfrom metarl.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_plot_keeps_the_legend_off_the_labels(tmp_path):
    from metarl.cli import plot_run

    run = tmp_path / "run"
    assert main(["train", "rl2", *TINY, "--run-dir", str(run)]) == 0
    fig = plot_run(run)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    axes_box = ax.get_tightbbox(r)            # the axes with tick labels, axis labels and title
    legend_box = fig.legends[0].get_window_extent(r)
    assert not axes_box.overlaps(legend_box)
    fig_box = fig.bbox
    assert fig_box.contains(legend_box.x0, legend_box.y0) and fig_box.contains(legend_box.x1, legend_box.y1)
