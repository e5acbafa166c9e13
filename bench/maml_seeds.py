"""MAML on 2D navigation over several settings x training seeds, each run in its own process, many
at once (a GPU holds a dozen): returns after 0/1/2/3 adaptation steps on the same 40 held-out
tasks as ``bench/reproduce_maml.py``, one table. For seed-robustness studies of MAMLConfig fields.

A setting is ``NAME`` or ``NAME:field=value,field=value`` (MAMLConfig fields; ints, floats,
booleans and strings are parsed from the value)::

    python bench/maml_seeds.py --seeds 0 1 2 --settings base xavier:policy_init=xavier \\
        tanh:mean_squash=tanh --device cuda --parallel 12

Writes one JSON line per run to ``--out`` (default ``bench/results/maml_seeds.jsonl``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import parse_fields

STEPS = (0, 1, 2, 3)


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    return name, parse_fields(list(filter(None, fields.split(","))), f"setting {text!r}")


def worker(spec: dict) -> dict:
    """One training run and its evaluation (runs in a child process)."""
    import torch

    from metarl.algos.maml import MAMLConfig, evaluate, train

    torch.set_num_threads(1)
    cfg = MAMLConfig(iterations=spec["iterations"], eval_tasks=0, seed=spec["seed"], device=spec["device"],
                     **spec["extra"])
    t0 = time.perf_counter()
    state = train(cfg, progress=False)
    train_s = time.perf_counter() - t0
    returns = evaluate(state["policy"], cfg, spec["eval_tasks"], STEPS)
    return {**spec, "updates": state["iterations"], "train_s": round(train_s, 1),
            "returns": [round(float(returns[s]), 2) for s in STEPS]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["base"])
    parser.add_argument("--iterations", type=int, default=100, help="TRPO meta-updates (default: %(default)s)")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "maml_seeds.jsonl"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    specs = []
    for text in args.settings:
        name, extra = parse_setting(text)
        specs += [{"setting": name, "extra": extra, "seed": s, "iterations": args.iterations,
                   "eval_tasks": args.eval_tasks, "device": args.device} for s in args.seeds]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pending, running, results = list(specs), [], []
    t0 = time.perf_counter()
    with open(args.out, "a") as out:
        while pending or running:
            while pending and len(running) < args.parallel:
                spec = pending.pop(0)
                proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                running.append((spec, proc, time.perf_counter()))
            time.sleep(0.5)
            for item in list(running):
                spec, proc, started = item
                timed_out = args.timeout is not None and time.perf_counter() - started > args.timeout
                if proc.poll() is None and not timed_out:
                    continue
                if timed_out and proc.poll() is None:
                    proc.kill()
                stdout, stderr = proc.communicate()
                running.remove(item)
                lines = stdout.strip().splitlines()
                if proc.returncode == 0 and lines:
                    res = json.loads(lines[-1])
                else:
                    res = {**spec, "error": "timed out" if timed_out else stderr.strip()[-400:]}
                results.append(res)
                out.write(json.dumps(res) + "\n")
                out.flush()
                got = res.get("returns", res.get("error"))
                print(f"[{time.perf_counter() - t0:6.0f} s] {res['setting']} seed {res['seed']}: {got}", flush=True)
    print("\n| setting | seed | 0 / 1 / 2 / 3 steps | updates | train s |\n|---|---:|---|---:|---:|")
    for r in sorted(results, key=lambda r: (r["setting"], r["seed"])):
        cells = " / ".join(f"{v:.2f}" for v in r["returns"]) if "returns" in r else f"failed: {r['error'][:80]}"
        print(f"| {r['setting']} {r['extra']} | {r['seed']} | {cells} | {r.get('updates', '—')} | "
              f"{r.get('train_s', '—')} |")


if __name__ == "__main__":
    main()
