"""Data-parallel training (:mod:`metarl.distributed`) as users launch it: ``torchrun`` (here
``python -m torch.distributed.run``) with 2 gloo processes on the CPU running ``-m metarl train NAME``.

- 2 processes x (N / 2) env copies (RL^2) or tasks (MAML) give the parameters of 1 process x N after the
  same updates (float rounding only: sums in another order, BLAS on half the batch; atol below);
- only rank 0 writes; the checkpoint holds both ranks' states and the world size; resuming it with
  another number of processes is refused;
- (slow) a stop request sent to one rank stops both after the same iteration with a checkpoint, and the
  2-process resume ends where an uninterrupted 2-process run ends;
- (slow) the multi-node path: 2 torchrun agents as 2 "nodes" on this host, c10d rendezvous on localhost.

The one-process reference runs in this process (the learner's ``train``), the distributed runs by subprocess.
"""
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from metarl import checkpoint, distributed
from metarl.algos import harness, maml, rl2

ITERATIONS = 3
RL2_ARGS = {"num_envs": 8, "hidden_size": 8, "total_env_steps": 8 * 10 * ITERATIONS, "eval_tasks": 5}
MAML_ARGS = {"meta_batch": 4, "trajectories_per_task": 2, "horizon": 5, "hidden_sizes": (8, 8),
             "iterations": ITERATIONS, "eval_tasks": 2, "eval_steps": (0, 1)}
# measured: RL^2 within 1e-7 after 3 updates; MAML within 5e-5 (TRPO's step is a ratio of small
# Fisher-vector products, so rounding of the averaged terms moves it more)
ATOL = {"rl2": 1e-5, "maml": 5e-4}
TIMING_COLUMNS = ("seconds", "env_steps_per_s")


def _flags(args: dict) -> list[str]:
    out = []
    for k, v in args.items():
        out += [f"--{k.replace('_', '-')}", ",".join(map(str, v)) if isinstance(v, tuple) else str(v)]
    return out


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "METARL_PROGRESS": "off"}


def _torchrun(name, args, run_dir=None, resume=None, nproc=2, launch=("--standalone",), background=False):
    """``torchrun --nproc-per-node NPROC LAUNCH... -m metarl train NAME ...``: waited for (and checked), or
    a Popen when ``background``."""
    run = ["--resume", str(resume)] if resume else [*_flags(args), "--run-dir", str(run_dir)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *launch,
           "-m", "metarl", "train", name, *run, "--quiet", "--num-threads", "1"]
    if background:
        return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _one_process(mod, cfg_cls, args, run_dir):
    torch.set_num_threads(1)
    return mod.train(cfg_cls(**args), run_dir, progress=False)


def _ck(run_dir, kind):
    return checkpoint.load(run_dir / harness.CHECKPOINT, kind=kind)


def _rows(run_dir):
    with open(run_dir / harness.LOG_CSV, newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def _assert_params_close(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


# ----------------------------------------------------------------------------- one process: the identity
def test_helpers_are_the_identity_in_one_process():
    assert not distributed.active() and distributed.shard_index() == (0, 1) and distributed.is_main()
    x = torch.randn(7, 3)
    assert distributed.all_reduce_mean(x) is x and distributed.gather(x, 1) is x
    idx = torch.tensor([4, 0, 2])
    assert distributed.local_rows(idx, 5) == (idx, 1.0)
    torch.testing.assert_close(distributed.normalize(x), (x - x.mean()) / (x.std() + 1e-8), atol=0, rtol=0)
    assert distributed.mean_values({"a": 1.5, "b": "x"}) == {"a": 1.5, "b": "x"}
    assert distributed.any_true(True, False) == (True, False)
    assert distributed.on_main(lambda: 3) == 3 and distributed.gather_objects("s") == ["s"]


def test_shard_refuses_an_unequal_split(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: 3)
    assert distributed.shard(9, "num_envs") == 3
    with pytest.raises(ValueError, match=r"num_envs \(8\) must be divisible by the number of processes \(3\)"):
        distributed.shard(8, "num_envs")


def test_the_harness_refuses_a_learner_that_does_not_shard(monkeypatch):
    class OneProcessOnly:
        kind, config, iterations = "reptile", maml.MAMLConfig(), 1

    monkeypatch.setattr(distributed, "world", lambda: 2)
    with pytest.raises(ValueError, match="reptile does not train data-parallel yet"):
        harness.run(OneProcessOnly(), None, progress=False)
    assert rl2.RL2Learner.data_parallel and maml.MAMLLearner.data_parallel


# ----------------------------------------------------------------------------- 2 processes = 1 process
@pytest.mark.parametrize("name", ["rl2", "maml"])
def test_two_processes_equal_one_with_the_same_batch(tmp_path, name):
    mod, cfg_cls, args = (rl2, rl2.RL2Config, RL2_ARGS) if name == "rl2" else (maml, maml.MAMLConfig, MAML_ARGS)
    _torchrun(name, args, tmp_path / "two")
    one = _one_process(mod, cfg_cls, args, tmp_path / "one")
    assert one["iterations"] == ITERATIONS
    ck1, ck2 = _ck(tmp_path / "one", name), _ck(tmp_path / "two", name)
    # rank 0 wrote one log and a checkpoint holding both ranks' states
    assert ck2["iteration"] == ITERATIONS and ck2["world_size"] == 2 and len(ck2["other_ranks"]) == 1
    assert ck1["world_size"] == 1 and "other_ranks" not in ck1
    _assert_params_close(ck2["learner"]["policy"], ck2["other_ranks"][0]["policy"], atol=0)    # ranks agree
    _assert_params_close(ck1["learner"]["policy"], ck2["learner"]["policy"], atol=ATOL[name])
    rows1, rows2 = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["iteration"] for r in rows2] == [str(i + 1) for i in range(ITERATIONS)]
    assert [r["env_steps"] for r in rows1] == [r["env_steps"] for r in rows2]
    key = "trial_return" if name == "rl2" else "pre_return"     # the same trajectories: the same returns
    for r1, r2 in zip(rows1, rows2):
        assert float(r1[key]) == pytest.approx(float(r2[key]), abs=1e-5)
    # the 2-process checkpoint refuses to resume in one process
    with pytest.raises(ValueError, match=r"written by 2 process\(es\); resume it with the same number"):
        mod.train(cfg_cls(**args), tmp_path / "two", resume=True, progress=False)


# ----------------------------------------------------------------------------- resume, stop, multi-node
def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.slow
def test_a_stopped_two_process_run_resumes_as_if_uninterrupted(tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop after the same iteration and rank 0 saves; the 2-process
    resume ends with the weights and rows of an uninterrupted 2-process run; 1 process or 4 are refused."""
    iterations = 150       # long enough that the signal lands inside the loop on a loaded host (~50 ms each)
    args = {**RL2_ARGS, "total_env_steps": 8 * 10 * iterations}
    _torchrun("rl2", args, tmp_path / "full")
    run_dir = tmp_path / "cut"
    proc = _torchrun("rl2", args, run_dir, background=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run_dir / harness.LOG_CSV).exists() and len(_rows(run_dir)) >= 3:
            break
        time.sleep(0.05)
    workers = sorted(_children(proc.pid))
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGTERM)      # one rank only
    out, _ = proc.communicate(timeout=120)
    # each rank's CLI exits 130 ("interrupted: checkpoint saved"), which torchrun reports as a failure
    # (torchrun's report names each failed rank; its own log line may repeat the first one)
    assert proc.returncode != 0 and len(re.findall(r"exitcode\s*: 130", out)) >= 2, out[-3000:]
    assert "interrupted: checkpoint saved" in out
    ck = _ck(run_dir, "rl2")
    assert 3 <= ck["iteration"] < iterations and len(_rows(run_dir)) == ck["iteration"]
    assert ck["other_ranks"][0]["iteration"] == ck["learner"]["iteration"] == ck["iteration"]
    # another world size is refused, the same one continues to the end of the uninterrupted run
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                          "-m", "metarl", "train", "rl2", "--resume", str(run_dir), "--quiet", "--num-threads", "1"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "written by 2 process(es)" in out.stdout + out.stderr
    _torchrun("rl2", args, resume=run_dir)
    full, cut = _ck(tmp_path / "full", "rl2"), _ck(run_dir, "rl2")
    assert cut["iteration"] == full["iteration"] == iterations
    _assert_params_close(full["learner"]["policy"], cut["learner"]["policy"], atol=0)
    assert _rows(run_dir) == _rows(tmp_path / "full")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_host_equal_one_process(tmp_path):
    """The multi-node launch: 2 torchrun agents (--nnodes 2 --node-rank 0/1, one process each) meeting by
    c10d rendezvous on localhost train as one 2-process run (= one process with the same batch)."""
    port = _free_port()
    procs = [_torchrun("maml", MAML_ARGS, tmp_path / "nodes", nproc=1, background=True,
                       launch=("--nnodes", "2", "--node-rank", str(i), "--rdzv-backend", "c10d",
                              "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "metarl-test"))
             for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    _one_process(maml, maml.MAMLConfig, MAML_ARGS, tmp_path / "one")
    nodes, one = _ck(tmp_path / "nodes", "maml"), _ck(tmp_path / "one", "maml")
    assert nodes["world_size"] == 2
    _assert_params_close(one["learner"]["policy"], nodes["learner"]["policy"], atol=ATOL["maml"])
