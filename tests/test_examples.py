"""The CleanRL-style scripts in examples/ run top to bottom on a tiny budget (as their users run them: a
subprocess with command-line flags parsed by tyro), log their returns and losses, and write TensorBoard
events where tensorboard is installed. Their full runs' results are in bench/RESULTS.md."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

pytest.importorskip("tyro")


def run_example(name, args, log_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(EXAMPLES / name), "--log-dir", str(log_dir), *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def check_logs(stdout, return_key, iterations, log_dir):
    assert len(re.findall(r"^iteration=\d+, SPS=\d+, value_loss=[-\d.]+", stdout, re.M)) == iterations, stdout
    returns = [float(x) for x in re.findall(rf"^global_step=\d+, {return_key}=([-\d.]+)$", stdout, re.M)]
    assert returns and all(abs(r) < 1e6 for r in returns), stdout
    if importlib.util.find_spec("tensorboard") is not None:
        assert list(log_dir.rglob("events.out.tfevents.*"))


def test_ppo_lstm_rl2(tmp_path):
    stdout = run_example("ppo_lstm_rl2.py", ["--total-timesteps", "1280", "--num-envs", "16", "--num-steps", "20",
                                             "--num-minibatches", "2", "--update-epochs", "2"], tmp_path)
    check_logs(stdout, "trial_return", 4, tmp_path)
    # a trial is 10 pulls of a Bernoulli bandit: its return lies in [0, 10]
    assert all(0 <= float(r) <= 10 for r in re.findall(r"trial_return=([-\d.]+)", stdout))


def test_ppo_continuous_halfcheetahvel(tmp_path):
    pytest.importorskip("mujoco")
    stdout = run_example("ppo_continuous_halfcheetahvel.py", [
        "--total-timesteps", "240", "--num-envs", "4", "--num-steps", "30", "--max-episode-steps", "20",
        "--num-minibatches", "2", "--update-epochs", "1", "--physics-threads", "1"], tmp_path)
    check_logs(stdout, "episodic_return", 2, tmp_path)
