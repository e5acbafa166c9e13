"""MuJoCo benchmark: env-steps per second of metarl's MuJoCo families against gymnasium's vector
envs and envpool, and against the raw ``mj_step`` rate (the floor), side by side in one run.

What is measured
    For each robot (HalfCheetah, Ant) and each N, the rate of ``env.step(actions)`` in env-steps
    per second (N x calls / seconds) with uniform random actions (a few batches made before
    timing and cycled), every env autoresetting as in training (1000-step limit):

    * ``metarl``: ``HalfCheetahVel-v0`` / ``AntDir-v0`` (the same physics, observation and reset
      as HalfCheetah-v5 / Ant-v5; only the reward term differs) with ``num_threads=--threads``;
      ``metarl 1thr`` the same on one thread.
    * ``gym sync`` / ``gym async``: gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` of
      ``HalfCheetah-v5`` / ``Ant-v5``. Capped: sync at N <= 256 (one Python env per copy, stepped
      in a loop: its rate per env does not grow with N), async at N <= 16 (one process per env;
      256 processes do not fit this machine's memory, and more processes than cores add nothing).
    * ``envpool v4`` / ``envpool v5``: envpool's ``HalfCheetah-v4``/``Ant-v4`` and ``-v5`` (its
      threaded C++ MuJoCo, ``num_threads=--threads``, synchronous: batch size = N), N <= 4096.
    * ``metarl warp@cuda`` (with a CUDA device, or ``--device cuda``): the same family with
      ``backend="warp"`` (MuJoCo Warp, all worlds in one launch per substep), N up to 65536 (add
      sizes with ``--sizes``); ratio ``warp / metarl`` to the CPU path of the same run.
    * ``mj_step 1thr``: the floor. One ``MjData`` on one thread, stepped from Python as gymnasium
      does per env-step: set the controls, ``mj_step`` x frame_skip (+ ``mj_rnePostConstraint`` for
      the Ant, whose observation needs it), reset when the Ant is unhealthy. The Python call costs
      ~1 us of a 40-300 us step. ``floor = threads x`` that rate (perfect scaling: an upper bound).

CPU time
    On a machine other jobs share, wall-clock rates of threaded code mostly measure the
    neighbours. Each in-process column therefore also reports the process CPU time (all its
    threads) per env-step over about ``--seconds`` of further calls: ``mj_step CPU / metarl CPU`` is
    the fraction of the floor metarl reaches in work done, whatever the load (spinning threads
    count against it). gymnasium's async workers are other processes and are left out.

How
    Each column runs in its own Python process (threads pools of one tool would otherwise steal
    the cores of the next), warms up for a quarter of ``--seconds`` and reports the best of 5
    repeats (``bench/envs.py``'s ``measure``); the JSON keeps all repeats and the load average.
    Missing peers are reported as "not installed".

Usage::

    OMP_NUM_THREADS=1 python bench/mujoco.py                       # N = 16, 256, 4096, both robots
    python bench/mujoco.py --robots ant --sizes 256 --seconds 2 --threads 2

Prints a Markdown table per robot with the ratios metarl / gymnasium's best, metarl / envpool and
metarl / floor, and writes JSON to ``bench/results/mujoco-<hostname>-<timestamp>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import machine_info, warn_if_loaded
from envs import measure, random_actions

# this script is bench/mujoco.py: with bench/ on sys.path, `import mujoco` would find it, not MuJoCo
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

# robot -> (metarl family, gymnasium id, envpool v4 id, frame_skip, needs mj_rnePostConstraint)
ROBOTS = {
    "half_cheetah": ("HalfCheetahVel-v0", "HalfCheetah-v5", "HalfCheetah-v4", 5, False),
    "ant": ("AntDir-v0", "Ant-v5", "Ant-v4", 5, True),
}
SIZES = (16, 256, 4096)
MAX_N = {"gym sync": 256, "gym async": 16, "envpool v4": 4096, "envpool v5": 4096}
COLUMNS = ("metarl", "metarl 1thr", "gym sync", "gym async", "envpool v4", "envpool v5", "mj_step 1thr")
WARP = "metarl warp@cuda"
NEEDS = {"gym sync": "gymnasium", "gym async": "gymnasium", "envpool v4": "envpool", "envpool v5": "envpool"}


# ----------------------------------------------------------------------------- columns
def with_cpu_time(result: dict, step, actions, n, seconds) -> dict:
    """``result`` plus ``cpu_us_per_step``: process CPU time (every thread) per env-step of ``step``."""
    calls, t0, c0 = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        step(actions[calls % len(actions)])
        calls += 1
    return {**result, "cpu_us_per_step": 1e6 * (time.process_time() - c0) / (calls * n)}


def bench_metarl(robot, n, seconds, threads, device="cpu") -> dict:
    import torch

    import metarl
    env = metarl.make_vec(ROBOTS[robot][0], n, seed=0, num_threads=threads, device=device)
    env.reset(seed=0)
    actions = [torch.from_numpy(a).to(device) for a in random_actions(env.single_action_space, n)]
    result = measure(env.step, actions, n, seconds, torch.cuda.synchronize if device == "cuda" else None)
    if device == "cpu":
        result = with_cpu_time(result, env.step, actions, n, seconds)
    env.close()
    return result


def bench_gym(robot, n, seconds, mode) -> dict:
    import gymnasium as gym
    env = gym.make_vec(ROBOTS[robot][1], num_envs=n, vectorization_mode=mode)
    env.reset(seed=0)
    actions = random_actions(env.single_action_space, n)
    result = measure(env.step, actions, n, seconds)
    if mode == "sync":
        result = with_cpu_time(result, env.step, actions, n, seconds)
    env.close()
    return result


def bench_envpool(robot, n, seconds, version, threads) -> dict:
    import envpool
    env_id = ROBOTS[robot][2] if version == "v4" else ROBOTS[robot][1]
    env = envpool.make_gymnasium(env_id, num_envs=n, seed=0, num_threads=threads)
    env.reset()
    actions = random_actions(env.action_space, n)
    result = with_cpu_time(measure(env.step, actions, n, seconds), env.step, actions, n, seconds)
    env.close()
    return result


def bench_mj_step(robot, seconds) -> dict:
    """Env-steps/s of one ``MjData`` on one thread, stepped as gymnasium's MujocoEnv steps it."""
    import gymnasium as gym
    import mujoco
    u = gym.make(ROBOTS[robot][1]).unwrapped
    m, d = u.model, u.data
    frame_skip, rne = ROBOTS[robot][3], ROBOTS[robot][4]
    ctrl = [a[0].astype(np.float64) for a in random_actions(u.action_space, 64)]

    def step(a):
        d.ctrl[:] = a
        mujoco.mj_step(m, d, nstep=frame_skip)
        if rne:
            mujoco.mj_rnePostConstraint(m, d)
            if not 0.2 <= d.qpos[2] <= 1.0:
                u.reset()

    u.reset(seed=0)
    return with_cpu_time(measure(step, ctrl, 1, seconds), step, ctrl, 1, seconds)


def bench_column(robot, column, sizes, seconds, threads) -> list[dict]:
    """One column, every size, in this process (the worker's job)."""
    warnings.filterwarnings("ignore")
    if column == "mj_step 1thr":
        return [bench_mj_step(robot, seconds)] * len(sizes)
    out = []
    for n in sizes:
        try:
            if column == "metarl":
                out.append(bench_metarl(robot, n, seconds, threads))
            elif column == "metarl 1thr":
                out.append(bench_metarl(robot, n, seconds, 1))
            elif column == WARP:
                out.append(bench_metarl(robot, n, seconds, threads, "cuda"))
            elif column.startswith("gym"):
                out.append(bench_gym(robot, n, seconds, column.split()[1]))
            else:
                out.append(bench_envpool(robot, n, seconds, column.split()[1], threads))
        except Exception as e:
            out.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return out


def run_isolated(robot, column, sizes, seconds, threads) -> list[dict]:
    cmd = [sys.executable, __file__, "--worker", json.dumps([robot, column, sizes, seconds, threads])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"worker failed: {tail}"} for _ in sizes]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver
def run_robot(robot, sizes, seconds, threads, warp=False) -> dict:
    results = {}
    for col in COLUMNS + ((WARP,) if warp else ()):
        if col in NEEDS and importlib.util.find_spec(NEEDS[col]) is None:
            results[col] = [{"error": "not installed"} for _ in sizes]
            continue
        # N > 4096 (for the GPU) only for metarl's two backends
        cap = MAX_N.get(col, None if col in ("metarl", WARP) else 4096)
        run_sizes = [n for n in sizes if cap is None or n <= cap]
        measured = iter(run_isolated(robot, col, run_sizes, seconds, threads) if run_sizes else [])
        results[col] = [next(measured) if n in run_sizes else {"error": f"skipped (N > {cap})"} for n in sizes]
        print(f"  {robot:<13} {col:<13} " + "  ".join(
            f"{n}: {r['steps_per_s']:.3g}" if "steps_per_s" in r else f"{n}: {r['error']}"
            for n, r in zip(sizes, results[col])), flush=True)
    raw = results["mj_step 1thr"][0].get("steps_per_s")
    rows, gym_best = [], 0.0
    for i, n in enumerate(sizes):
        rate = {c: results[c][i]["steps_per_s"] for c in COLUMNS if "steps_per_s" in results[c][i]}
        # gymnasium's best vector env at this N or the largest N it was run at (its rate per env
        # does not grow past its cap: a Python loop, or one process per env on these cores)
        gym_best = max([gym_best] + [rate[c] for c in ("gym sync", "gym async") if c in rate])
        pool = max([rate[c] for c in ("envpool v4", "envpool v5") if c in rate], default=None)
        row = {"n": n, "results": {c: results[c][i] for c in COLUMNS}, "gym_best": gym_best or None,
               "envpool_best": pool, "floor": raw * threads if raw else None}
        if "metarl" in rate:
            row["metarl_over_gym_best"] = rate["metarl"] / gym_best if gym_best else None
            row["metarl_over_envpool"] = rate["metarl"] / pool if pool else None
            row["metarl_over_floor"] = rate["metarl"] / row["floor"] if raw else None
        if "metarl 1thr" in rate and raw:
            row["metarl_1thr_over_mj_step_1thr"] = rate["metarl 1thr"] / raw
        cpu = {c: results[c][i]["cpu_us_per_step"] for c in COLUMNS if "cpu_us_per_step" in results[c][i]}
        row["cpu_us_per_step"] = cpu
        if "metarl" in cpu and "mj_step 1thr" in cpu:
            row["cpu_floor_fraction"] = cpu["mj_step 1thr"] / cpu["metarl"]
        if WARP in results:
            row["results"][WARP] = results[WARP][i]
            if WARP in {c for c in results if "steps_per_s" in results[c][i]} and "metarl" in rate:
                row["warp_over_metarl"] = results[WARP][i]["steps_per_s"] / rate["metarl"]
        rows.append(row)
    return {"family": ROBOTS[robot][0], "gym_id": ROBOTS[robot][1], "rows": rows}


def markdown_table(robot, res, threads) -> str:
    def cell(r):
        if "steps_per_s" in r:
            return f"{r['steps_per_s']:.3g}"
        return "not installed" if r["error"] == "not installed" else ("skip" if r["error"].startswith("skip")
                                                                      else "error")

    def ratio(x):
        return "—" if x is None else f"{x:.2f}x"

    cols = [c for c in COLUMNS if c != "mj_step 1thr"] + ([WARP] if WARP in res["rows"][0]["results"] else [])
    head = ["N", *cols, "floor", "metarl / gym best", "metarl / envpool", "metarl / floor", "1thr / mj_step 1thr"]
    head += ["warp / metarl"] if WARP in cols else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in res["rows"]:
        cells = [str(row["n"])] + [cell(row["results"][c]) for c in cols] + [
            f"{row['floor']:.3g}" if row["floor"] else "—", ratio(row.get("metarl_over_gym_best")),
            ratio(row.get("metarl_over_envpool")), ratio(row.get("metarl_over_floor")),
            ratio(row.get("metarl_1thr_over_mj_step_1thr"))] + ([ratio(row.get("warp_over_metarl"))]
                                                                 if WARP in cols else [])
        lines.append("| " + " | ".join(cells) + " |")
    errors = sorted({f"{c}: {r['error']}" for row in res["rows"] for c, r in row["results"].items()
                     if "error" in r and not r["error"].startswith("skip")})
    note = (f"env-steps/s, best of 5; {threads} threads for metarl and envpool; floor = {threads} x the raw "
            "single-thread mj_step rate; gym best = the best gymnasium vector env at that N or at its cap.")
    if errors:
        note += " Not measured — " + "; ".join(errors) + "."
    cpu_cols = [c for c in COLUMNS if c != "gym async"]
    cpu_lines = ["| N | " + " | ".join(f"{c} CPU µs" for c in cpu_cols) + " | mj_step CPU / metarl CPU |",
                 "|" + "---:|" * (len(cpu_cols) + 2)]
    for row in res["rows"]:
        cpu = row["cpu_us_per_step"]
        cpu_lines.append(f"| {row['n']} | " + " | ".join(f"{cpu[c]:.1f}" if c in cpu else "—" for c in cpu_cols)
                         + f" | {ratio(row.get('cpu_floor_fraction'))} |")
    return (f"### {robot} ({res['family']} vs {res['gym_id']})\n\n" + "\n".join(lines) + "\n\n" + note
            + "\n\nProcess CPU time per env-step (all threads; the load-independent view):\n\n"
            + "\n".join(cpu_lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", default=",".join(ROBOTS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated N (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed budget per measurement (default: 1.0)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for metarl and envpool (default: all cores, %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="cuda adds metarl's warp backend on the GPU (default: cuda when available)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder for the JSON (default: bench/results)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(bench_column(*json.loads(args.worker))))
        return
    robots = [r.strip() for r in args.robots.split(",") if r.strip()]
    if unknown := [r for r in robots if r not in ROBOTS]:
        parser.error(f"unknown robots {unknown}; known: {list(ROBOTS)}")
    if args.threads < 1:
        parser.error("--threads must be positive")
    sizes = [int(s) for s in args.sizes.split(",")]

    start = time.perf_counter()
    info = machine_info("cpu", ("metarl", "torch", "numpy", "numba", "gymnasium", "mujoco", "envpool"))
    info["load_average_before"] = os.getloadavg()
    print(f"# MuJoCo benchmark — {info['cpu']}, {info['cores']} cores, {args.threads} threads\n", flush=True)
    warn_if_loaded(info["load_average_before"])
    import torch
    warp = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    results = {r: run_robot(r, sizes, args.seconds, args.threads, warp) for r in robots}
    info["load_average_after"] = os.getloadavg()
    elapsed = time.perf_counter() - start
    print()
    for robot, res in results.items():
        print(markdown_table(robot, res, args.threads))
    print(f"Total time {elapsed:.0f} s; 1-minute load average {info['load_average_before'][0]:.1f} before, "
          f"{info['load_average_after'][0]:.1f} after.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"mujoco-{info['hostname']}-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "mujoco", "date": stamp, "machine": info, "sizes": sizes,
                                "seconds": args.seconds, "threads": args.threads, "elapsed_s": elapsed,
                                "robots": results}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
