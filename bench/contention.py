"""Throughput of the README's main job on a busy machine: RL^2 on bandits (``metarl train rl2``'s
defaults: :class:`~metarl.algos.rl2.RL2Config()`, 1024 envs, trials of 10 pulls) alone, beside one
busy-loop process per core, beside a second seed of itself, and beside multi-threaded matmul jobs;
with default thread pools and with :func:`metarl.threads.limit_threads`.

What is measured
    Env-steps per second of :func:`metarl.algos.rl2.train` (its summary's ``env_steps_per_s``) over
    ``--iterations`` updates of 10,240 env steps each (default 20: 204,800 steps), and the job's CPU
    time over wall time (``cpu/wall``: above 1, a second thread works or spins). One process per setting
    (two for ``seeds``) is started and warmed up once (2 updates: compiles the Numba kernels), then
    timed in every scenario; the load of a scenario starts before its settings are timed, one after the
    other, in a rotated order each repeat.

Scenarios
    * ``idle``: the job alone;
    * ``hogs``: beside ``os.cpu_count()`` pure-Python busy loops (one per core);
    * ``seeds``: two jobs at once (seeds 0 and 1, same settings; each job's rate and their sum);
    * ``mt-hogs``: beside ``--mt-hogs`` processes (default 4) multiplying 256 x 256 matrices in torch
      with torch's default threads (fewer updates: ``--mt-iterations``).

Settings (``--settings``, each ``THREADS@WAIT``)
    ``THREADS``: ``default`` (no call: the pools as metarl leaves them) or k for ``limit_threads(k)``;
    ``WAIT``: the OpenMP wait policy of the job's process: ``inherit`` (this environment and
    metarl's own defaults: ``metarl/__init__.py`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless set),
    ``spin`` (libgomp's built-in default: spin 300,000 pause instructions before sleeping,
    ``GOMP_SPINCOUNT=300000``, which overrides the policy), ``spin<N>`` (``GOMP_SPINCOUNT=N``) or
    ``passive`` (``OMP_WAIT_POLICY=PASSIVE``: sleep at once).

Other users of the machine are not controlled. While a setting is timed, a thread counts the runnable
threads of every process that is not this benchmark's (every 0.5 s; their mean is the column "others'
runnable threads": 0 on a quiet machine), and each cell shows the best of ``--repeats`` (the least
disturbed; every repeat is listed beside it and kept in the JSON). Niceness does not shield the run:
Linux's autogroup scheduling shares the cores between sessions first, whatever the processes' nice.
Fractions are of the ``idle`` rate of the first setting (the job as the README runs it) and of the
setting's own ``idle`` rate. Compare settings within one run.

Usage::

    python bench/contention.py                                    # as in bench/RESULTS.md
    python bench/contention.py --scenarios idle,hogs --settings default,1,2@passive --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import machine_info, warn_if_loaded

SCENARIOS = ("idle", "hogs", "seeds", "mt-hogs")
SETTINGS = ("default@spin", "default@passive", "1@spin", "2@passive")
WAIT_ENV = {"spin": {"GOMP_SPINCOUNT": "300000", "OMP_WAIT_POLICY": None},
            "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
            "inherit": {}}
STEPS_PER_UPDATE = 10 * 1024       # RL2Config(): one trial of 10 pulls on 1024 envs
HOG_SPIN = "while True:\n    pass\n"
HOG_MATMUL = "import torch\na = torch.randn(256, 256)\nwhile True:\n    a @ a\n"


# ----------------------------------------------------------------------------- the job (a worker process)
def _time_is_up(signum, frame):
    raise KeyboardInterrupt      # train() stops as on Ctrl-C and reports the rate of the updates done


def worker(threads: str, seed: int) -> None:
    """Warm up and print ``ready``; then for each line ``K SECONDS`` on stdin train ``K`` updates (fewer if
    ``SECONDS`` run out) and print ``{"rate", "cpu_per_wall", "iterations", "seconds", "threads"}`` as one
    JSON line (until end of input)."""
    from metarl.algos.rl2 import RL2Config, train  # metarl before torch: its environment defaults come first
    from metarl.threads import limit_threads

    limit_threads(None if threads == "default" else int(threads))
    cfg = RL2Config(seed=seed)          # the README's job; total_env_steps (3M) keeps its entropy schedule
    train(cfg, None, progress=False, max_iterations=2)
    print("ready", flush=True)
    signal.signal(signal.SIGALRM, _time_is_up)
    for line in sys.stdin:
        iterations, max_seconds = line.split()
        cpu, wall = time.process_time(), time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, float(max_seconds))
        summary = train(cfg, None, progress=False, max_iterations=int(iterations))   # stops early on the alarm
        signal.setitimer(signal.ITIMER_REAL, 0)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(json.dumps({"rate": summary["env_steps_per_s"], "cpu_per_wall": cpu / wall,
                          "iterations": summary["iterations"], "seconds": wall,
                          "threads": _pools()}), flush=True)


def _pools() -> dict:
    import numba
    import torch

    return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads(), "numba_layer": numba.threading_layer(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT")}


# ----------------------------------------------------------------------------- the parent
def _wait_env(wait: str) -> dict | None:
    """The environment changes of a WAIT setting (``spin<N>``: ``GOMP_SPINCOUNT=N``); None if unknown."""
    if wait.startswith("spin") and wait[4:].isdigit():
        return {"GOMP_SPINCOUNT": wait[4:], "OMP_WAIT_POLICY": None}
    return WAIT_ENV.get(wait)


def _env(wait: str) -> dict:
    env = dict(os.environ)
    for key, value in _wait_env(wait).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _read_line(job: subprocess.Popen) -> str:
    line = job.stdout.readline()
    if not line:
        job.wait()
        raise RuntimeError(f"a job exited with status {job.returncode} before reporting (see its stderr above)")
    return line


def _start_job(setting: str, seed: int) -> subprocess.Popen:
    """A warmed-up worker process for ``setting`` (returns once it is ready)."""
    threads, _, wait = setting.partition("@")
    cmd = [sys.executable, __file__, "--worker", threads, "--seed", str(seed)]
    job = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(wait))
    if _read_line(job).strip() != "ready":
        raise RuntimeError(f"the {setting} job did not report ready")
    return job


def _start_hogs(scenario: str, mt_hogs: int) -> list[subprocess.Popen]:
    if scenario == "hogs":
        hogs = [subprocess.Popen([sys.executable, "-c", HOG_SPIN]) for _ in range(os.cpu_count())]
    elif scenario == "mt-hogs":
        hogs = [subprocess.Popen([sys.executable, "-c", HOG_MATMUL]) for _ in range(mt_hogs)]
    else:
        return []
    time.sleep(3.0 if scenario == "mt-hogs" else 0.5)      # running (the matmul ones have imported torch)
    return hogs


class OthersSampler(threading.Thread):
    """Counts, every 0.5 s, the runnable threads of processes other than ``ours`` (other users of the
    machine); ``mean()`` is their average over the sampling."""

    def __init__(self, ours: set[int]):
        super().__init__(daemon=True)
        self.ours, self.samples, self.stop = ours, [], threading.Event()

    def run(self):
        while True:
            self.samples.append(self._count())
            if self.stop.wait(0.5):
                return

    def _count(self) -> int:
        n = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) in self.ours:
                continue
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/stat") as f:
                        state, ppid = f.read().rpartition(")")[2].split()[:2]
                    n += state == "R" and pid != "2" and ppid != "2"     # kernel threads are not users
            except OSError:
                pass
        return n

    def mean(self) -> float:
        self.stop.set()
        self.join()
        return sum(self.samples) / len(self.samples)


def measure(jobs: list[subprocess.Popen], iterations: int, max_seconds: float,
            ours: set[int]) -> tuple[list[dict], float]:
    """Time ``iterations`` updates (at most ``max_seconds``) on every job at once; returns their results
    and the other processes' mean runnable threads meanwhile."""
    sampler = OthersSampler(ours)
    sampler.start()
    for job in jobs:
        job.stdin.write(f"{iterations} {max_seconds}\n")
        job.stdin.flush()
    results = [json.loads(_read_line(job)) for job in jobs]
    return results, sampler.mean()


def fair_share(scenario: str, mt_hogs: int, idle_cpu: float) -> float | None:
    """The fraction of the idle rate an equal split of the cores among runnable threads gives a job that
    uses ``idle_cpu`` cores alone (rate assumed proportional to its CPU time)."""
    cores = os.cpu_count()
    if scenario == "hogs":
        return min(idle_cpu, cores * idle_cpu / (cores + idle_cpu)) / idle_cpu
    if scenario == "seeds":
        return min(idle_cpu, cores / 2) / idle_cpu
    if scenario == "mt-hogs":
        # each hog runs torch's default threads (one per core) at all times
        return min(idle_cpu, cores * idle_cpu / (mt_hogs * cores + idle_cpu)) / idle_cpu
    return None


def table(rows: list[dict], settings: list[str], mt_hogs: int, iterations: dict[str, int]) -> str:
    """The Markdown table: per (scenario, setting) the best repeat (the one least disturbed by other users;
    for ``seeds`` the best total of the two jobs), every repeat beside it."""
    def best(scenario, setting):
        vals = [r for r in rows if r["scenario"] == scenario and r["setting"] == setting]
        return max(vals, key=lambda r: sum(r["rates"])) if vals else None

    idle = {setting: best("idle", setting) for setting in settings}
    base = idle[settings[0]]
    out = [f"| scenario | threads@wait | env-steps/s per job | of idle {settings[0]} | of own idle "
           "| cpu/wall per job | others' runnable threads | every repeat (jobs' total) |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for scenario in SCENARIOS:
        for setting in settings:
            row = best(scenario, setting)
            if row is None:
                continue
            iters = iterations[scenario]
            rate = sum(row["rates"]) / len(row["rates"])
            own = sum(idle[setting]["rates"])
            every = ", ".join(f"{sum(r['rates']):.3g}" for r in rows
                              if r["scenario"] == scenario and r["setting"] == setting)
            cpu = sum(row["cpu_per_wall"]) / len(row["cpu_per_wall"])
            shown = f"{rate:.3g}"
            if min(row["iterations"]) == 0:        # not one update within --max-seconds
                shown = f"< {STEPS_PER_UPDATE / min(row['seconds']):.2g}"
            elif any(i < iters for i in row["iterations"]):
                shown += f" ({min(row['iterations'])} of {iters} updates)"
            out.append(f"| {scenario} | {setting} | {shown} | {rate / sum(base['rates']):.0%} | {rate / own:.0%} "
                       f"| {cpu:.2f} | {row['others']:.1f} | {every} |")
    base_cpu = base["cpu_per_wall"][0]
    shares = {s: fair_share(s, mt_hogs, base_cpu) for s in SCENARIOS[1:]}
    out.append("")
    out.append(f"Fair share (equal split of the {os.cpu_count()} cores among runnable threads) for a job that uses "
               f"{base_cpu:.2f} cores alone: " + ", ".join(f"{s} {v:.0%}" for s, v in shares.items()) + ".")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, from {SCENARIOS}")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated THREADS@WAIT (module docstring)")
    p.add_argument("--iterations", type=int, default=20, help="timed updates per job (10,240 env steps each)")
    p.add_argument("--mt-iterations", type=int, default=3, help="timed updates per job under mt-hogs")
    p.add_argument("--mt-hogs", type=int, default=4, help="multi-threaded matmul processes in mt-hogs")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="a timed run is cut at this time (its rate counts the updates finished; a run that finishes\n"
                        "none is shown as below one update over this time)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over every scenario and setting (best shown)")
    p.add_argument("--json", default="bench/results/contention.json", help="where to write every measurement")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker, args.seed)

    scenarios = [s for s in args.scenarios.split(",") if s]
    settings = [s if "@" in s else s + "@inherit" for s in args.settings.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"--scenarios: unknown {s!r}; choose from {SCENARIOS}")
    for s in settings:
        threads, _, wait = s.partition("@")
        if _wait_env(wait) is None or not (threads == "default" or threads.isdigit() and int(threads) > 0):
            raise SystemExit(f"--settings: expected THREADS@WAIT with THREADS 'default' or a positive int and "
                             f"WAIT in {tuple(WAIT_ENV)} or spin<N>, got {s!r}")
    if "idle" not in scenarios:
        scenarios.insert(0, "idle")     # the fractions need it

    warn_if_loaded(os.getloadavg())
    print(f"{os.cpu_count()} cores; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')} in this environment", flush=True)
    start = time.perf_counter()
    seeds = (0, 1) if "seeds" in scenarios else (0,)
    jobs, rows = {}, []
    try:
        for setting in settings:    # one warmed-up process per setting and seed, started one at a time
            for seed in seeds:
                jobs[setting, seed] = _start_job(setting, seed)
        print(f"jobs warmed up in {time.perf_counter() - start:.0f} s", flush=True)
        for rep in range(args.repeats):
            for scenario in scenarios:
                hogs = _start_hogs(scenario, args.mt_hogs)
                ours = {os.getpid(), *(j.pid for j in jobs.values()), *(h.pid for h in hogs)}
                try:
                    # settings in a rotated order each repeat, so none always follows the same one
                    for setting in settings[rep % len(settings):] + settings[:rep % len(settings)]:
                        running = [jobs[setting, seed] for seed in (seeds if scenario == "seeds" else (0,))]
                        iters = args.mt_iterations if scenario == "mt-hogs" else args.iterations
                        results, others = measure(running, iters, args.max_seconds, ours)
                        rows.append({"repeat": rep, "scenario": scenario, "setting": setting, "others": others,
                                     "load": os.getloadavg()[0], "rates": [r["rate"] for r in results],
                                     "cpu_per_wall": [r["cpu_per_wall"] for r in results],
                                     "iterations": [r["iterations"] for r in results],
                                     "seconds": [r["seconds"] for r in results],
                                     "threads": results[0]["threads"]})
                        print(f"  {scenario:<8} {setting:<16} others {others:4.1f}  "
                              + "  ".join(f"{r['rate']:.3g}/s cpu/wall {r['cpu_per_wall']:.2f}" for r in results),
                              flush=True)
                finally:
                    for h in hogs:
                        h.kill()
                        h.wait()
    finally:
        for job in jobs.values():
            job.kill()
            job.wait()
    print()
    iterations = {s: args.mt_iterations if s == "mt-hogs" else args.iterations for s in SCENARIOS}
    print(table(rows, settings, args.mt_hogs, iterations))
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), "args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
