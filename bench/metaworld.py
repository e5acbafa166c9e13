"""Meta-World benchmark: env-steps per second of metarl's Meta-World families against the metaworld
package's own vector envs, side by side in one run, with the floor the package's per-env Python sets.

What is measured
    ML10's train tasks (10 Sawyer task names, the same number of copies of each), N env copies,
    uniform random actions in [-1, 1] (a few batches made before timing and cycled), autoreset in
    ``same_step`` mode (the package's default), rate of ``env.step(actions)`` in env-steps per second
    (N x calls / seconds):

    * ``metarl``: ``metarl.make_vec("MetaWorld-ML10-v0", N, num_threads=--threads,
      autoreset_mode="same_step")``: the package's Sawyer env objects, their per-env Python called in
      a loop, the physics of all copies in one mjBatch call (MuJoCo threads); ``metarl 1thr`` on one.
    * ``mw sync`` / ``mw async``: the package's ``gym.make_vec("Meta-World/ML10-train",
      meta_batch_size=N, vector_strategy="sync" | "async")`` (a SyncVectorEnv / an AsyncVectorEnv,
      one process per env, of its wrapped envs). Capped at N <= 50: a SyncVectorEnv's rate per env
      does not grow with N (a Python loop) and each env holds ~24 MB (500 of them: 12 GB); 500
      processes for async do not fit this machine's 24 GB.
    * ``parts``: process CPU time per env-step of the two halves of one step, on 10 envs (one per
      name) stepped in a loop on one thread: ``python`` (the package's action, observation and
      reward code) and ``physics`` (5 ``mj_step``, ``mj_rnePostConstraint``, ``mj_forward``).

Floors
    Whatever runs the package's per-env Python in one process pays ``python`` under the GIL and can
    spread only the physics over threads: ``floor 1proc = 1 / (python + physics / threads)``. On
    all cores with one process per core: ``floor cores = cores / (python + physics)``.

CPU time
    Each in-process column also reports the process CPU time (all threads) per env-step, the view
    that survives a shared machine (async workers are other processes and are left out).

How
    Each column runs in its own process (``bench/envs.py``'s ``measure``: a warm-up of a quarter of
    ``--seconds``, best of 5 repeats). Episodes last 500 steps; a window of a few hundred calls sees
    few resets (20 ms each in the package's code) in every column alike.

Usage::

    OMP_NUM_THREADS=1 python bench/metaworld.py                   # N = 10, 50, 500
    python bench/metaworld.py --sizes 10,50 --seconds 3 --threads 2

Prints a Markdown table (ratios metarl / the package's best, metarl / floor) and writes JSON to
``bench/results/metaworld-<hostname>-<timestamp>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import machine_info, warn_if_loaded
from envs import measure, random_actions

# this script is bench/metaworld.py: with bench/ on sys.path, `import metaworld` (and `import mujoco`, beside
# bench/mujoco.py) would find the scripts, not the packages
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

SIZES = (10, 50, 500)
MAX_N = {"mw sync": 50, "mw async": 50}
COLUMNS = ("metarl", "metarl 1thr", "mw sync", "mw async")


def with_cpu_time(result: dict, step, actions, n, seconds) -> dict:
    """``result`` plus ``cpu_us_per_step`` (process CPU time, all threads, per env-step) and the peak RSS."""
    calls, t0, c0 = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        step(actions[calls % len(actions)])
        calls += 1
    return {**result, "cpu_us_per_step": 1e6 * (time.process_time() - c0) / (calls * n),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def box4():
    import gymnasium as gym
    return gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


def bench_metarl(n, seconds, threads) -> dict:
    import torch

    import metarl
    env = metarl.make_vec("MetaWorld-ML10-v0", n, seed=0, num_threads=threads, autoreset_mode="same_step")
    env.reset(seed=0)
    actions = [torch.from_numpy(a) for a in random_actions(box4(), n)]
    result = with_cpu_time(measure(env.step, actions, n, seconds), env.step, actions, n, seconds)
    env.close()
    return result


def bench_package(n, seconds, strategy) -> dict:
    import gymnasium as gym

    from metarl.envs.metaworld import require_metaworld
    require_metaworld()   # registers Meta-World/*; MuJoCo 4's weld rows
    env = gym.make_vec("Meta-World/ML10-train", meta_batch_size=n, seed=0, vector_strategy=strategy)
    env.call("sample_tasks")   # the package's train envs pick their first task here
    env.reset(seed=0)
    actions = random_actions(box4(), n)
    result = measure(env.step, actions, n, seconds)
    if strategy == "sync":
        result = with_cpu_time(result, env.step, actions, n, seconds)
    env.close()
    return result


def bench_parts(seconds) -> dict:
    """CPU µs per env-step of the package's per-env Python and of the physics, 10 envs on one thread."""
    import mujoco

    import metarl
    env = metarl.make_vec("MetaWorld-ML10-v0", 10, seed=0, num_threads=1)
    env.reset(seed=0)
    envs = [env.sawyer(i) for i in range(10)]
    actions = random_actions(box4(), 10)
    python = physics = 0.0
    steps, t_end = 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or steps < 50:
        if steps % 400 == 399:   # stay inside the 500-step episodes
            env.reset()
            envs = [env.sawyer(i) for i in range(10)]
        act = actions[steps % len(actions)]
        c0 = time.process_time()
        for e, a in zip(envs, act):
            e.set_xyz_action(a[:3])
            e.data.ctrl[:] = (a[3], -a[3])
        c1 = time.process_time()
        for e in envs:
            mujoco.mj_step(e.model, e.data, nstep=e.frame_skip)
            mujoco.mj_rnePostConstraint(e.model, e.data)
            mujoco.mj_forward(e.model, e.data)
        c2 = time.process_time()
        for e, a in zip(envs, act):
            e.curr_path_length += 1
            o = np.clip(e._get_obs(), e.sawyer_observation_space.low, e.sawyer_observation_space.high)
            e.evaluate_state(o, a)
        c3 = time.process_time()
        python += (c1 - c0) + (c3 - c2)
        physics += c2 - c1
        steps += 1
    return {"python_us": 1e6 * python / (10 * steps), "physics_us": 1e6 * physics / (10 * steps), "steps": steps}


def bench_column(column, sizes, seconds, threads) -> list[dict]:
    """One column, every size, in this process (the worker's job)."""
    warnings.filterwarnings("ignore")
    if column == "parts":
        return [bench_parts(seconds)]
    out = []
    for n in sizes:
        try:
            if column == "metarl":
                out.append(bench_metarl(n, seconds, threads))
            elif column == "metarl 1thr":
                out.append(bench_metarl(n, seconds, 1))
            else:
                out.append(bench_package(n, seconds, column.split()[1]))
        except Exception as e:
            out.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return out


def run_isolated(column, sizes, seconds, threads) -> list[dict]:
    cmd = [sys.executable, __file__, "--worker", json.dumps([column, sizes, seconds, threads])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"worker failed: {tail}"} for _ in sizes]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes, seconds, threads) -> dict:
    results = {}
    for col in COLUMNS:
        cap = MAX_N.get(col)
        run_sizes = [n for n in sizes if cap is None or n <= cap]
        measured = iter(run_isolated(col, run_sizes, seconds, threads) if run_sizes else [])
        results[col] = [next(measured) if n in run_sizes else {"error": f"skipped (N > {cap})"} for n in sizes]
        print(f"  {col:<12} " + "  ".join(f"{n}: {r['steps_per_s']:.3g}" if "steps_per_s" in r else f"{n}: {r['error']}"
                                          for n, r in zip(sizes, results[col])), flush=True)
    parts = run_isolated("parts", [0], seconds, threads)[0]
    print(f"  parts        {parts}", flush=True)
    floors = {}
    if "python_us" in parts:
        py, phys = parts["python_us"], parts["physics_us"]
        floors = {"floor 1proc": 1e6 / (py + phys / threads), "floor cores": 1e6 * os.cpu_count() / (py + phys)}
    rows, best = [], 0.0
    for i, n in enumerate(sizes):
        rate = {c: results[c][i]["steps_per_s"] for c in COLUMNS if "steps_per_s" in results[c][i]}
        # the package's best at this N or any smaller one (its rate per env does not grow with N)
        best = max([best] + [rate[c] for c in ("mw sync", "mw async") if c in rate])
        row = {"n": n, "results": {c: results[c][i] for c in COLUMNS}, "package_best": best or None, **floors}
        if "metarl" in rate:
            row["metarl_over_package_best"] = rate["metarl"] / best if best else None
            row["metarl_over_floor_1proc"] = rate["metarl"] / floors["floor 1proc"] if floors else None
        cpu = {c: results[c][i]["cpu_us_per_step"] for c in COLUMNS if "cpu_us_per_step" in results[c][i]}
        row["cpu_us_per_step"] = cpu
        if "metarl" in cpu and "mw sync" in cpu:
            row["package_cpu_over_metarl_cpu"] = cpu["mw sync"] / cpu["metarl"]
        rows.append(row)
    return {"parts": parts, "rows": rows}


def markdown_table(res, threads) -> str:
    def cell(r):
        return f"{r['steps_per_s']:.3g}" if "steps_per_s" in r else ("skip" if r["error"].startswith("skip")
                                                                      else "error")

    def ratio(x):
        return "—" if x is None else f"{x:.2f}x"

    head = ["N", *COLUMNS, "floor 1proc", "floor cores", "metarl / package best", "metarl / floor 1proc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in res["rows"]:
        fl = [f"{row[k]:.3g}" if k in row else "—" for k in ("floor 1proc", "floor cores")]
        lines.append("| " + " | ".join([str(row["n"]), *(cell(row["results"][c]) for c in COLUMNS), *fl,
                                        ratio(row.get("metarl_over_package_best")),
                                        ratio(row.get("metarl_over_floor_1proc"))]) + " |")
    errors = sorted({f"{c}: {r['error']}" for row in res["rows"] for c, r in row["results"].items()
                     if "error" in r and not r["error"].startswith("skip")})
    note = (f"env-steps/s, best of 5; {threads} threads for metarl; package best = the best of mw sync and "
            "mw async at that N or any smaller N (their rate per env does not grow with N; capped at N = 50).")
    if errors:
        note += " Not measured — " + "; ".join(errors) + "."
    cols = ("metarl", "metarl 1thr", "mw sync")
    cpu_lines = ["| N | " + " | ".join(f"{c} CPU µs" for c in cols) + " | mw sync CPU / metarl CPU | RSS metarl MB |",
                 "|" + "---:|" * (len(cols) + 3)]
    for row in res["rows"]:
        cpu = row["cpu_us_per_step"]
        rss = row["results"]["metarl"].get("max_rss_mb")
        cpu_lines.append(f"| {row['n']} | " + " | ".join(f"{cpu[c]:.0f}" if c in cpu else "—" for c in cols)
                         + f" | {ratio(row.get('package_cpu_over_metarl_cpu'))} | "
                         + (f"{rss:.0f}" if rss else "—") + " |")
    parts = res["parts"]
    parts_line = (f"Per env-step CPU, one thread (10 envs, one per ML10 train name): the package's Python "
                  f"{parts['python_us']:.0f} µs, physics {parts['physics_us']:.0f} µs."
                  if "python_us" in parts else f"parts: {parts}")
    return ("\n".join(lines) + "\n\n" + note + "\n\nProcess CPU time per env-step (all threads):\n\n"
            + "\n".join(cpu_lines) + "\n\n" + parts_line + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated N (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed budget per measurement (default: 3.0)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="MuJoCo threads for metarl (default: all cores, %(default)s)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder for the JSON (default: bench/results)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(bench_column(*json.loads(args.worker))))
        return
    if args.threads < 1:
        parser.error("--threads must be positive")
    if importlib.util.find_spec("metaworld") is None:   # bench/ is off sys.path: the package
        parser.error("metaworld is not installed: pip install -e \".[metaworld]\"")
    sizes = [int(s) for s in args.sizes.split(",")]
    start = time.perf_counter()
    info = machine_info("cpu", ("metarl", "torch", "numpy", "gymnasium", "mujoco", "metaworld"))
    info["load_average_before"] = os.getloadavg()
    print(f"# Meta-World benchmark (ML10 train) — {info['cpu']}, {info['cores']} cores, {args.threads} threads\n",
          flush=True)
    warn_if_loaded(info["load_average_before"])
    res = run(sizes, args.seconds, args.threads)
    info["load_average_after"] = os.getloadavg()
    elapsed = time.perf_counter() - start
    print()
    print(markdown_table(res, args.threads))
    print(f"Total time {elapsed:.0f} s; 1-minute load average {info['load_average_before'][0]:.1f} before, "
          f"{info['load_average_after'][0]:.1f} after.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"metaworld-{info['hostname']}-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "metaworld", "date": stamp, "machine": info, "sizes": sizes,
                                "seconds": args.seconds, "threads": args.threads, "elapsed_s": elapsed,
                                **res}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
