"""Every learner through the one run harness, as a user runs it: ``python -m metarl train NAME`` in a
subprocess, killed with SIGKILL after a random number of iterations (a checkpoint after every
iteration, so kills also land inside checkpoint writes), resumed with ``--resume`` until it finishes.
The final checkpoint's weights and the progress rows equal those of an uninterrupted run."""
import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from metarl import checkpoint
from metarl.cli import ALGOS

# tiny runs of ITERATIONS iterations each (the smallest sizes the learners accept)
ITERATIONS = 12
TINY = {
    "rl2": ["--num-envs", "8", "--hidden-size", "8", "--total-env-steps", str(8 * 10 * ITERATIONS),
            "--eval-tasks", "5"],
    "maml": ["--meta-batch", "2", "--trajectories-per-task", "2", "--horizon", "5", "--hidden-sizes", "8,8",
             "--iterations", str(ITERATIONS), "--eval-tasks", "2", "--eval-steps", "0,1"],
    "reptile": ["--meta-batch-size", "2", "--trajectories-per-task", "2", "--iterations", str(ITERATIONS),
                "--eval-tasks", "2", "--eval-steps", "1"],
    "maesn": ["--meta-batch-size", "2", "--trajectories-per-task", "2", "--iterations", str(ITERATIONS),
              "--eval-tasks", "2", "--eval-steps", "1"],
    "episodic-rl2": ["--lifetimes", "2", "--trials-per-lifetime", "3", "--pulls-per-trial", "3", "--hidden", "8",
                     "--iterations", str(ITERATIONS), "--eval-lifetimes", "4"],
    # metagrad's first rollout (before its first update) counts against the budget
    "metagrad": ["--num-envs", "2", "--rollout-steps", "5", "--total-env-steps", str(2 * 5 * (ITERATIONS + 1)),
                 "--hidden-size", "8", "--eval-tasks", "3"],
    "mfec": ["--num-envs", "4", "--log-every", "40", "--total-env-steps", str(40 * ITERATIONS),
             "--eval-episodes", "2"],
    "nec": ["--num-envs", "4", "--log-every", "40", "--total-env-steps", str(40 * ITERATIONS),
            "--eval-episodes", "2"],
    "promp": ["--meta-batch", "2", "--trajectories-per-task", "2", "--horizon", "5", "--hidden-sizes", "8,8",
              "--iterations", str(ITERATIONS), "--eval-tasks", "2", "--eval-steps", "0,1"],
}
TIMING_COLUMNS = ("seconds", "env_steps_per_s")


def test_every_learner_has_a_tiny_run():
    assert set(TINY) == set(ALGOS)


def _command(name, run_dir, resume: bool):
    run = ["--resume", str(run_dir)] if resume else \
        [*TINY[name], "--run-dir", str(run_dir), "--checkpoint-minutes", "1e-9"]
    return [sys.executable, "-m", "metarl", "train", name, *run, "--quiet", "--num-threads", "1"]


def _rows(run_dir):
    path = run_dir / "progress.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def _run(name, run_dir, resume: bool, kill_at_row: int | None = None) -> bool:
    """Run (or resume) to the end, or SIGKILL it once progress.csv holds ``kill_at_row`` rows;
    True when it was killed."""
    env = dict(os.environ, METARL_PROGRESS="off")
    p = subprocess.Popen(_command(name, run_dir, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if kill_at_row is not None:
        while p.poll() is None:
            if len(_rows(run_dir)) >= kill_at_row:
                p.send_signal(signal.SIGKILL)
                p.wait()
                return True
            time.sleep(0.002)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
    return False


def _final(run_dir):
    ck = checkpoint.load(run_dir / "checkpoint.pt", kind=checkpoint.read_kind(run_dir / "checkpoint.pt"))
    return ck["iteration"], ck["learner"]


def _assert_same(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), path      # NaN == NaN here


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, name):
    _run(name, tmp_path / "whole", resume=False)
    rng = random.Random(name)
    run, kills, resume = tmp_path / "killed", 0, False
    for _ in range(3):
        done = len(_rows(run))
        if done >= ITERATIONS:
            break
        kills += _run(name, run, resume, kill_at_row=rng.randint(done + 1, min(done + 4, ITERATIONS - 1)))
        resume = (run / "checkpoint.pt").exists()
    _run(name, run, resume=resume)
    assert kills >= 1, "no kill landed before the run ended"
    it_whole, whole = _final(tmp_path / "whole")
    it_killed, killed = _final(run)
    assert it_whole == it_killed == ITERATIONS
    _assert_same(whole, killed)
    assert _rows(run) == _rows(tmp_path / "whole")
