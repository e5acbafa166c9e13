"""The run harness (metarl.algos.harness), tested once with a toy learner: resume equals an
uninterrupted run, Ctrl-C and SIGTERM save a consistent checkpoint, kill -9 at random points loses
nothing, a run directory is never overwritten silently, progress.csv is rewritten atomically, and
progress shows as status lines when stderr is not a terminal. tests/test_learners_resume.py runs the
kill -9 test on every learner."""
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from metarl import checkpoint
from metarl.algos import harness
from metarl.config import Config, field


@dataclasses.dataclass
class ToyConfig(Config):
    iterations: int = field(20, ge=1)
    """Iterations."""
    seed: int = field(0, ge=0)
    """Seed."""
    sleep: float = field(0.0, ge=0)
    """Seconds each step sleeps (kill tests)."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints."""


class ToyLearner:
    """A random walk of a weight vector driven by a seeded generator: any state left out of the
    checkpoint, or any step replayed or skipped on resume, changes the final weights."""

    kind = "toy"

    def __init__(self, cfg: ToyConfig):
        self.config, self.iterations = cfg, cfg.iterations
        self.w = torch.zeros(4, dtype=torch.float64)
        self.g = torch.Generator().manual_seed(cfg.seed)
        self.env_steps = 0
        self.fail_at = None

    def step(self):
        if self.fail_at is not None and self.env_steps // 10 == self.fail_at:
            self.w += 1000.0                     # a half-done update, then an error
            raise RuntimeError("boom")
        self.w += torch.randn(4, generator=self.g, dtype=torch.float64)
        self.env_steps += 10
        if self.config.sleep:
            time.sleep(self.config.sleep)
        return {"w0": float(self.w[0]), "norm": float(self.w.norm())}

    def state_dict(self):
        return {"w": self.w.clone(), "g": self.g.get_state(), "env_steps": self.env_steps}

    def load_state_dict(self, sd):
        self.w.copy_(sd["w"])
        self.g.set_state(sd["g"])
        self.env_steps = sd["env_steps"]

    def report(self, num_tasks=None):
        return {"eval": {"toy": (float(self.w.sum()), 0.0)}}


def rows(run_dir, drop=("seconds", "env_steps_per_s")):
    with open(run_dir / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def final_weights(run_dir):
    return checkpoint.load(run_dir / "checkpoint.pt", kind="toy")["learner"]["w"]


def test_a_run_writes_its_files_and_reports(tmp_path):
    s = harness.run(ToyLearner(ToyConfig()), tmp_path, progress=False)
    assert s["iterations"] == 20 and s["env_steps"] == 200 and not s["interrupted"]
    assert set(s["eval"]) == {"toy"} and len(s["history"]) == 20
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint.pt", "progress.csv", "config.json", "summary.json"}
    assert json.loads((tmp_path / "config.json").read_text()) == dataclasses.asdict(ToyConfig())
    log = rows(tmp_path, drop=())
    assert [int(r["iteration"]) for r in log] == list(range(1, 21))
    assert list(log[0]) == ["iteration", "env_steps", "w0", "norm", "env_steps_per_s", "seconds"]
    assert json.loads((tmp_path / "summary.json").read_text())["eval"]["toy"][0] == pytest.approx(s["eval"]["toy"][0])


def test_resume_equals_an_uninterrupted_run(tmp_path):
    harness.run(ToyLearner(ToyConfig()), tmp_path / "whole", progress=False)
    for stop in (3, 4, 11, None):
        harness.run(ToyLearner(ToyConfig()), tmp_path / "split", resume=stop != 3, progress=False, max_iterations=stop)
    assert torch.equal(final_weights(tmp_path / "whole"), final_weights(tmp_path / "split"))
    assert rows(tmp_path / "whole") == rows(tmp_path / "split")


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
    """Rows written after the last checkpoint (a kill between the two) are dropped on resume, so the
    log has each iteration once; a torn last line is dropped too."""
    harness.run(ToyLearner(ToyConfig()), tmp_path, progress=False, max_iterations=5)
    with open(tmp_path / "progress.csv", "a") as f:        # iterations 6, 7 logged, then killed mid-row
        f.write("6,60,0.1,0.2,1.0,1.0\n7,70,0.3,0.4,1.0,1.0\n8,8")
    harness.run(ToyLearner(ToyConfig()), tmp_path, resume=True, progress=False)
    assert [int(r["iteration"]) for r in rows(tmp_path)] == list(range(1, 21))


def test_a_fresh_run_refuses_an_existing_run_unless_told(tmp_path):
    harness.run(ToyLearner(ToyConfig()), tmp_path, progress=False, max_iterations=3)
    before = (tmp_path / "progress.csv").read_text()
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
        harness.run(ToyLearner(ToyConfig()), tmp_path, progress=False)
    assert (tmp_path / "progress.csv").read_text() == before       # nothing truncated
    s = harness.run(ToyLearner(ToyConfig(iterations=2)), tmp_path, overwrite=True, progress=False)
    assert s["iterations"] == 2 and len(rows(tmp_path)) == 2


def test_bad_run_directories_and_resumes_are_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        harness.run(ToyLearner(ToyConfig()), f, progress=False)
    with pytest.raises(ValueError, match="nothing to resume"):
        harness.run(ToyLearner(ToyConfig()), tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(ValueError, match="needs the run_dir"):
        harness.run(ToyLearner(ToyConfig()), None, resume=True, progress=False)
    harness.run(ToyLearner(ToyConfig()), tmp_path / "r", progress=False, max_iterations=2)
    with pytest.raises(ValueError, match=r"differs from this one in \['seed'\]"):
        harness.run(ToyLearner(ToyConfig(seed=3)), tmp_path / "r", resume=True, progress=False)

    class Other(ToyLearner):
        kind = "other"

    with pytest.raises(ValueError, match="is a 'toy' run, not 'other'"):
        harness.run(Other(ToyConfig()), tmp_path / "r", resume=True, progress=False)


def test_orphaned_temp_files_are_removed_at_the_next_start(tmp_path):
    harness.run(ToyLearner(ToyConfig()), tmp_path, progress=False, max_iterations=2)
    orphan = tmp_path / ".checkpoint.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    (tmp_path / ".progress.csv.x.tmp").write_text("1,2")
    harness.run(ToyLearner(ToyConfig()), tmp_path, resume=True, progress=False)
    assert not orphan.exists() and not list(tmp_path.glob(".*.tmp"))


def test_an_error_inside_an_iteration_keeps_the_last_good_checkpoint(tmp_path):
    learner = ToyLearner(ToyConfig(checkpoint_minutes=1e-9))
    learner.fail_at = 6
    with pytest.raises(RuntimeError, match="boom"):
        harness.run(learner, tmp_path, progress=False)
    ck = checkpoint.load(tmp_path / "checkpoint.pt", kind="toy")
    assert ck["iteration"] == 6 and float(ck["learner"]["w"].abs().max()) < 100     # not the half-done update
    harness.run(ToyLearner(ToyConfig(checkpoint_minutes=1e-9)), tmp_path, resume=True, progress=False)
    harness.run(ToyLearner(ToyConfig()), tmp_path / "whole", progress=False)
    assert torch.equal(final_weights(tmp_path), final_weights(tmp_path / "whole"))


def test_a_signal_mid_iteration_finishes_it_saves_and_stops(tmp_path):
    class Interrupting(ToyLearner):
        def step(self):
            out = super().step()
            if self.env_steps == 70:
                os.kill(os.getpid(), signal.SIGINT)      # Ctrl-C arrives during iteration 7
            return out

    s = harness.run(Interrupting(ToyConfig()), tmp_path, progress=False)
    assert s["interrupted"] and s["iterations"] == 7 and "eval" not in s
    assert checkpoint.load(tmp_path / "checkpoint.pt", kind="toy")["iteration"] == 7
    harness.run(ToyLearner(ToyConfig()), tmp_path, resume=True, progress=False)
    harness.run(ToyLearner(ToyConfig()), tmp_path / "whole", progress=False)
    assert torch.equal(final_weights(tmp_path), final_weights(tmp_path / "whole"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # handlers restored


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_harness import ToyConfig, ToyLearner
    from metarl.algos import harness
    cfg = ToyConfig(iterations=40, sleep=0.02, checkpoint_minutes=1e-9)
    harness.run(ToyLearner(cfg), sys.argv[1], resume=sys.argv[2] == "resume", progress=False)
""")


def _logged(run_dir) -> int:
    try:
        return max(0, len((run_dir / "progress.csv").read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _run_toy(run_dir, resume: bool, signal_at_row: int | None = None, sig=signal.SIGKILL):
    """Run (or resume) the toy in a subprocess to its end, or send it ``sig`` once progress.csv holds
    ``signal_at_row`` rows (polled, so a slow start on a busy machine does not matter); returns the
    exit status."""
    code = SCRIPT.format(tests=os.path.dirname(__file__))
    p = subprocess.Popen([sys.executable, "-c", code, str(run_dir), "resume" if resume else "fresh"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if signal_at_row is not None:
        while p.poll() is None and _logged(run_dir) < signal_at_row:
            time.sleep(0.002)
        if p.poll() is None:
            p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode in (0, -sig), err.decode()
    return p.returncode


def test_kill_9_at_random_points_loses_nothing(tmp_path):
    """Killed (SIGKILL) after a random number of logged rows (checkpoints after every iteration, so
    kills land inside checkpoint writes too), then resumed until done: the same weights and the same
    progress rows as an uninterrupted run."""
    import random

    rng = random.Random(0)
    _run_toy(tmp_path / "whole", resume=False)
    run, kills, resume = tmp_path / "killed", 0, False
    for _ in range(4):
        done = _logged(run)
        kills += _run_toy(run, resume, signal_at_row=rng.randint(done + 1, done + 9)) == -signal.SIGKILL
        resume = (run / "checkpoint.pt").exists()
    if _logged(run) < 40 or checkpoint.load(run / "checkpoint.pt", kind="toy")["iteration"] < 40:
        _run_toy(run, resume=True)
    assert kills >= 3
    assert torch.equal(final_weights(run), final_weights(tmp_path / "whole"))
    assert rows(run) == rows(tmp_path / "whole")


def test_sigterm_saves_and_the_run_resumes(tmp_path):
    rc = _run_toy(tmp_path / "run", resume=False, signal_at_row=3, sig=signal.SIGTERM)
    assert rc == 0                                   # stopped cleanly after saving
    it = checkpoint.load(tmp_path / "run" / "checkpoint.pt", kind="toy")["iteration"]
    assert 3 <= it < 40
    assert [int(r["iteration"]) for r in rows(tmp_path / "run")] == list(range(1, it + 1))
    _run_toy(tmp_path / "run", resume=True)
    _run_toy(tmp_path / "whole", resume=False)
    assert torch.equal(final_weights(tmp_path / "run"), final_weights(tmp_path / "whole"))


def test_progress_is_status_lines_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness, "STATUS_SECONDS", 0.0)
    monkeypatch.delenv("METARL_PROGRESS", raising=False)
    harness.run(ToyLearner(ToyConfig(iterations=3)), None, progress=True, progress_keys=("norm",))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1].startswith("[toy] iteration 3/3 (100%) norm=") and "eta" in err[-1]
    monkeypatch.setenv("METARL_PROGRESS", "off")
    harness.run(ToyLearner(ToyConfig(iterations=3)), None, progress=True)
    assert capsys.readouterr().err == ""


def test_progress_mode_switch(monkeypatch):
    monkeypatch.delenv("METARL_PROGRESS", raising=False)
    assert harness.progress_mode(False) == "off"
    for value, mode in (("bar", "bar"), ("1", "bar"), ("lines", "lines"), ("off", "off"), ("0", "off")):
        monkeypatch.setenv("METARL_PROGRESS", value)
        assert harness.progress_mode(True) == mode


def test_missing_tensorboard_is_warned_once(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(harness, "_warned_tensorboard", False)
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        harness.run(ToyLearner(ToyConfig(iterations=2)), tmp_path / "a", progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        harness.run(ToyLearner(ToyConfig(iterations=2)), tmp_path / "b", progress=False)


def test_tensorboard_events_are_written_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    harness.run(ToyLearner(ToyConfig(iterations=2)), tmp_path, progress=False)
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_bad_arguments_are_refused(tmp_path):
    for kwargs, match in ((dict(max_iterations=-1), "max_iterations"), (dict(max_iterations=1.5), "max_iterations"),
                          (dict(max_seconds=-1), "max_seconds"), (dict(resume=True, overwrite=True), "exclude")):
        with pytest.raises(ValueError, match=match):
            harness.run(ToyLearner(ToyConfig()), tmp_path / "x", progress=False, **kwargs)
