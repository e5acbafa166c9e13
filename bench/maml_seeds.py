"""MAML (or ProMP) on 2D navigation over several settings x training seeds, each run in its own process,
many at once (a GPU holds a dozen): returns after 0/1/2/3 adaptation steps on the same 40 held-out
tasks as ``bench/reproduce_maml.py``, one table, with each run's lowest pre-update (0-step) training
return: a run "collapsed" when it fell below -100 at any meta-update. For seed-robustness studies.

A setting is ``NAME`` or ``NAME:field=value,field=value`` (MAMLConfig fields, or PROMPConfig fields with
``learner=promp``; ints, floats, booleans and strings are parsed from the value)::

    python bench/maml_seeds.py --seeds 0 1 2 --settings base xavier:policy_init=xavier \\
        tanh:mean_squash=tanh --device cuda --parallel 12
    python bench/maml_seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 --settings maml lvc:estimator=lvc \\
        dice:estimator=dice promp:learner=promp --parallel 2

Writes one JSON line per run to ``--out`` (default ``bench/results/maml_seeds.jsonl``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import parse_fields

STEPS = (0, 1, 2, 3)
COLLAPSE = -100.0      # a pre-update training return below this: the run collapsed (issue 24)


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    return name, parse_fields(list(filter(None, fields.split(","))), f"setting {text!r}")


def worker(spec: dict) -> dict:
    """One training run and its evaluation (runs in a child process)."""
    import importlib

    import torch

    extra = dict(spec["extra"])
    learner = extra.pop("learner", "maml")
    mod = importlib.import_module(f"metarl.algos.{learner}")
    config_cls = {"maml": "MAMLConfig", "promp": "PROMPConfig"}[learner]
    torch.set_num_threads(1)
    cfg = getattr(mod, config_cls)(iterations=spec["iterations"], eval_tasks=0, seed=spec["seed"],
                                   device=spec["device"], **extra)
    t0 = time.perf_counter()
    state = mod.train(cfg, progress=False)
    train_s = time.perf_counter() - t0
    returns = mod.evaluate(state["policy"], cfg, spec["eval_tasks"], STEPS)
    pre = [round(float(r["pre_return"]), 2) for r in state["history"]]
    return {**spec, "updates": state["iterations"], "train_s": round(train_s, 1),
            "returns": [round(float(returns[s]), 2) for s in STEPS], "pre_returns": pre,
            "post_returns": [round(float(r["post_return"]), 2) for r in state["history"]],
            "min_pre_return": min(pre), "collapsed": min(pre) < COLLAPSE}


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
    parser.add_argument("--table", help="print the tables of an --out file's runs and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.table:
        print_table([json.loads(line) for line in open(args.table) if line.strip()])
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
    print_table(results)


def print_table(results: list[dict]) -> None:
    """One row per run, then per setting the mean ± s.e. over its finished seeds and the collapses."""
    print("\n| setting | seed | 0 / 1 / 2 / 3 steps | lowest 0-step return in training | updates | train s |\n"
          "|---|---:|---|---:|---:|---:|")
    for r in sorted(results, key=lambda r: (r["setting"], r["seed"])):
        cells = " / ".join(f"{v:.2f}" for v in r["returns"]) if "returns" in r else f"failed: {r['error'][:80]}"
        low = f"{r['min_pre_return']:.1f}" + (" (collapsed)" if r["collapsed"] else "") if "collapsed" in r else "—"
        print(f"| {r['setting']} {r['extra']} | {r['seed']} | {cells} | {low} | {r.get('updates', '—')} | "
              f"{r.get('train_s', '—')} |")
    print("\n| setting | seeds | mean ± s.e. after 0 / 1 / 2 / 3 steps | collapsed |\n|---|---:|---|---:|")
    for name in sorted({r["setting"] for r in results}):
        done = [r for r in results if r["setting"] == name and "returns" in r]
        if not done:
            continue
        cols = list(zip(*(r["returns"] for r in done)))
        cells = " / ".join(f"{statistics.fmean(c):.2f} ± {se(c):.2f}" for c in cols)
        collapsed = [r["collapsed"] for r in done if "collapsed" in r]
        print(f"| {name} | {len(done)} | {cells} | {sum(collapsed)} of {len(collapsed)} |")


def se(values) -> float:
    """Standard error of the mean (0 for one value)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
