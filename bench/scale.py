"""Data-parallel scaling: RL^2 and MAML training throughput at 1 and several processes (torchrun, gloo).

Each run is what a user launches::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node P -m metarl train NAME ... --num-threads 1

with the learner's defaults (RL^2: the README's run, bandits k = 5, n = 10, 1,024 env copies; MAML: 2D
navigation, meta-batch 20 x 20 trajectories x H = 100) and a short budget. Every process is held to one
thread (the setting that does not oversubscribe a host: P processes x 1 thread on P cores), and the
1-process run goes through the same launcher. Throughput is the env steps per second of the training
loop (collect + update), from the run's own ``progress.csv``, after ``--warmup`` iterations; runs of 1
and P processes alternate ``--repeats`` times and the best of each is kept. The floor (the best a
data-parallel run can do) is P times the 1-process rate while P <= the cores; the table prints the
fraction of it reached. Results go to ``bench/results/scale.json``.

    python bench/scale.py                       # 1 and 2 processes, both learners
    python bench/scale.py --nprocs 1,2,4 --learners rl2
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_info, warn_if_loaded

RUNS = {
    # the README's RL^2 run (the config's defaults): one trial of 10 pulls per rollout, 10,240 steps/iteration
    "rl2": lambda iters: ["--total-env-steps", str(10 * 1024 * iters), "--eval-tasks", "1"],
    # MAML's defaults: 2 x 20 x 20 x 100 = 80,000 env steps per meta-update; no evaluation
    "maml": lambda iters: ["--iterations", str(iters), "--eval-tasks", "0"],
}


def run_once(name: str, nproc: int, iterations: int, warmup: int, launch: list[str]) -> dict:
    """One ``torchrun ... -m metarl train NAME`` run; its training throughput after ``warmup`` iterations."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *launch,
               "-m", "metarl", "train", name, *RUNS[name](iterations), "--run-dir", str(run_dir), "--quiet",
               "--num-threads", "1"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "METARL_PROGRESS": "off"}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        with open(run_dir / "progress.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    first, last = rows[warmup - 1], rows[-1]
    steps = int(last["env_steps"]) - int(first["env_steps"])
    seconds = float(last["seconds"]) - float(first["seconds"])
    return {"learner": name, "processes": nproc, "iterations": len(rows) - warmup, "env_steps": steps,
            "seconds": seconds, "env_steps_per_s": steps / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--learners", default="rl2,maml", help="comma-separated: rl2, maml")
    p.add_argument("--nprocs", default="1,2", help="process counts, comma-separated (the first is the baseline)")
    p.add_argument("--rl2-iterations", type=int, default=14, help="RL^2 iterations per run (10,240 steps each)")
    p.add_argument("--maml-iterations", type=int, default=4, help="MAML meta-updates per run (80,000 steps each)")
    p.add_argument("--warmup", type=int, default=2, help="iterations left out of the rate (>= 1)")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per process count (best kept)")
    p.add_argument("--launch", default="--standalone", help="torchrun's rendezvous flags")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale.json"))
    args = p.parse_args()
    if args.warmup < 1:
        raise SystemExit("--warmup must be >= 1")
    learners = args.learners.split(",")
    nprocs = [int(x) for x in args.nprocs.split(",")]
    load = os.getloadavg()
    warn_if_loaded(load)
    best: dict[tuple[str, int], dict] = {}
    for name in learners:
        iters = args.rl2_iterations if name == "rl2" else args.maml_iterations
        for _ in range(args.repeats):
            for n in nprocs:
                r = run_once(name, n, iters, args.warmup, args.launch.split())
                print(f"{name} x{n}: {r['env_steps_per_s']:.4g} env-steps/s", file=sys.stderr, flush=True)
                if (name, n) not in best or r["env_steps_per_s"] > best[name, n]["env_steps_per_s"]:
                    best[name, n] = r
    cores = os.cpu_count()
    print(f"\n{cores} cores, 1 thread per process, load average before the run {load[0]:.1f}\n")
    print("| learner | processes | env-steps/s | vs 1 process | floor (P x 1 process) | of floor |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for name in learners:
        base = best[name, nprocs[0]]["env_steps_per_s"] / nprocs[0]
        for n in nprocs:
            r = dict(best[name, n])
            floor = base * min(n, cores)
            r.update(speedup=r["env_steps_per_s"] / (base * nprocs[0]), of_floor=r["env_steps_per_s"] / floor)
            rows.append(r)
            print(f"| {name} | {n} | {r['env_steps_per_s']:.4g} | {r['speedup']:.2f}x | {floor:.4g} | "
                  f"{r['of_floor']:.0%} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "machine": machine_info(), "load_before": load,
                                          "launch": args.launch, "threads_per_process": 1}, indent=1))


if __name__ == "__main__":
    main()
