"""Env benchmark: env-steps per second of metarl's batched envs against the peers a
user would otherwise pick, side by side in one run, same machine, same N.

What is measured
    For each family and each N (number of envs in one batch), the rate of
    ``env.step(actions)`` in env-steps per second (N x calls / seconds), with uniform
    random actions. A few distinct action batches are generated before timing and
    cycled, so generating them is not timed. Every env autoresets as in training
    (metarl ``next_step``, gymnasium's default, envpool's own).

    * metarl, one column per backend available for the family: ``numba``, ``cpp``
      (where the family has a C++ kernel; then it is the CPU default), ``torch``
      (the pure-PyTorch reference); with ``--device cuda`` also ``triton`` and
      ``torch`` on the GPU (synchronised before the clock is read).
    * gymnasium ``SyncVectorEnv`` (``vectorization_mode="sync"``; up to N=4096, it
      is slow to build and to step), gymnasium's native vector env where the id has
      one (``vectorization_mode="vector_entry_point"``), envpool
      (``envpool.make_gymnasium``, its default threads), and for Bandit-v0 a plain
      NumPy Bernoulli bandit (``rng.random(N) < probs[arange(N), a]``).

How
    Each column (one metarl backend or one peer) runs in its own Python process,
    all sizes in turn: thread pools left spinning by another tool (torch's OpenMP,
    Numba's and the C++ extension's, envpool's workers) would otherwise steal the
    cores and make the numbers depend on the order of the run. Each measurement
    warms up (compilation, caches) for a quarter of ``--seconds``, sizes its
    repeats from that, then times 5 repeats of about ``--seconds / 5`` and reports
    the best rate, as ``timeit`` does: slower repeats are other processes
    interfering, which on a small shared machine is most of the noise (the JSON
    keeps all five and the load average before and after the run). Peers are
    optional imports: a missing one is reported as "not installed", never faked;
    a metarl family whose module does not exist yet is reported as missing.

Physical floor
    Copy bandwidth is measured once (a 256 MiB float32 copy with NumPy and with
    torch, best of several, counting bytes read + written; the larger of the two).
    For each family the floor is ``bandwidth / BYTES_PER_STEP`` env-steps/s, where
    ``BYTES_PER_STEP`` (``metarl.kernels.envs.<family>``) counts the bytes one
    env-step must read and write. While N x BYTES_PER_STEP fits in the last-level
    cache the DRAM floor is not binding (fractions above 1 happen); N = 2^20 shows
    the DRAM-bound regime.

Usage::

    python bench/envs.py                                # every family, N in 16..65536
    python bench/envs.py --envs CartPole-v1,Bandit-v0 --sizes 256,4096 --seconds 0.4
    python bench/envs.py --device cuda                  # adds triton / torch on the GPU

Prints a Markdown table per family and writes JSON to
``bench/results/envs-<hostname>-<timestamp>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import machine_info

# torch, metarl and the peers are imported where they are used, so that a peer's
# worker process does not pay for (or start the thread pools of) the others.

# family id -> (kernel module under metarl.kernels.envs, family kwargs)
FAMILIES = {
    "CartPole-v1": ("cartpole", {}),
    "Pendulum-v1": ("pendulum", {}),
    "MountainCar-v0": ("mountain_car", {}),
    "MountainCarContinuous-v0": ("mountain_car_continuous", {}),
    "Acrobot-v1": ("acrobot", {}),
    "Bandit-v0": ("bandit", {"arms": 10}),
    "TabularMDP-v0": ("tabular_mdp", {}),
    "Navigation2D-v0": ("navigation2d", {}),
    "SemicircleGoal-v0": ("semicircle_goal", {}),
}
GYMNASIUM_IDS = {"CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Acrobot-v1"}
SIZES = (16, 256, 4096, 65536)
SYNC_MAX_N = 4096       # gymnasium SyncVectorEnv: one Python env per copy; bigger takes minutes
ENVPOOL_MAX_N = 65536   # envpool builds one C++ env object per copy; bigger takes minutes
NUM_ACTION_BATCHES = 4  # distinct random action batches, cycled
REPEATS = 5             # timed repeats per measurement; the best is reported
CACHE_NOTE = ("While the working set (N x bytes per env-step) fits in the CPU's last-level cache, the "
              "DRAM floor is not binding and a fraction above 1 is possible; --sizes 1048576 shows the "
              "DRAM-bound regime.")


# ----------------------------------------------------------------------------- timing
def measure(step, actions, n, seconds, sync=None) -> dict:
    """Best env-steps/s of ``step(actions[i % len(actions)])`` over ``REPEATS`` timed repeats."""
    sync = sync or (lambda: None)
    k = len(actions)
    # warm-up: at least 3 calls and a quarter of the budget; it also sizes the repeats
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < 0.25 * seconds:
        step(actions[calls % k])
        calls += 1
        sync()
    per_call = (time.perf_counter() - t0) / calls
    calls_per_rep = max(1, round(seconds / REPEATS / per_call))
    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for i in range(calls_per_rep):
            step(actions[i % k])
        sync()
        rates.append(n * calls_per_rep / (time.perf_counter() - t0))
    return {"steps_per_s": max(rates), "median_steps_per_s": statistics.median(rates), "repeats": rates,
            "calls_per_repeat": calls_per_rep}


def random_actions(space, n, seed=1) -> list[np.ndarray]:
    """``NUM_ACTION_BATCHES`` NumPy batches ``[n, ...]`` of uniform actions from one env's space."""
    import gymnasium as gym
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(NUM_ACTION_BATCHES):
        if isinstance(space, gym.spaces.Discrete):
            out.append(rng.integers(space.start, space.start + space.n, size=n, dtype=np.int64))
        elif isinstance(space, gym.spaces.Box):
            low, high = np.broadcast_to(space.low, space.shape), np.broadcast_to(space.high, space.shape)
            out.append(rng.uniform(low, high, size=(n, *space.shape)).astype(space.dtype))
        else:
            raise TypeError(f"no random actions for {space}")
    return out


def copy_bandwidth(mib: int = 256, repeats: int = 10) -> dict:
    """Bytes read + written per second by a ``mib`` MiB float32 copy (NumPy and torch; best of ``repeats``)."""
    import torch
    src = np.random.default_rng(0).random(mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    tsrc, tdst = torch.from_numpy(src), torch.from_numpy(dst)
    best = {"numpy": 0.0, "torch": 0.0}
    for _ in range(repeats):
        for name, copy in (("numpy", lambda: np.copyto(dst, src)), ("torch", lambda: tdst.copy_(tsrc))):
            t0 = time.perf_counter()
            copy()
            best[name] = max(best[name], 2 * src.nbytes / (time.perf_counter() - t0))
    return {"bytes_per_s": max(best.values()), "numpy_bytes_per_s": best["numpy"],
            "torch_bytes_per_s": best["torch"], "array_mib": mib}


def gpu_copy_bandwidth(mib: int = 1024, repeats: int = 10) -> float:
    """Bytes read + written per second by a ``mib`` MiB float32 device-to-device copy on the current
    CUDA device (CUDA events around each copy; best of ``repeats``)."""
    import torch
    src = torch.rand(mib * 2**20 // 4, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = 0.0
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = max(best, 2 * src.numel() * 4 / (start.elapsed_time(end) * 1e-3))
    del src, dst
    torch.cuda.empty_cache()
    return best


# ----------------------------------------------------------------------------- metarl
def metarl_threads(env_id, n, backend, device) -> int | str | None:
    """CPU threads one metarl step of N envs runs on: the Numba pool from ``NUMBA_PARALLEL_MIN_ENVS`` on
    (else the calling thread), the C++ kernel's own team size for N, torch's intra-op threads; "gpu" on a GPU."""
    import torch

    from metarl.kernels.envs import _launch
    if device == "cuda":
        return "gpu"
    if backend == "numba":
        import numba
        return numba.get_num_threads() if n >= _launch.NUMBA_PARALLEL_MIN_ENVS else 1
    if backend == "cpp":
        kernels = importlib.import_module(f"metarl.kernels.envs.{FAMILIES[env_id][0]}")
        return kernels.cpp_threads(n) if hasattr(kernels, "cpp_threads") else None
    return torch.get_num_threads()


def bench_metarl(env_id, n, seconds, backend, device) -> dict:
    import torch

    import metarl
    env = metarl.make_vec(env_id, n, device=device, seed=0, backend=backend, **FAMILIES[env_id][1])
    env.reset(seed=0)
    actions = [torch.from_numpy(a).to(device) for a in random_actions(env.single_action_space, n)]
    sync = torch.cuda.synchronize if device == "cuda" else None
    result = measure(env.step, actions, n, seconds, sync)
    env.close()
    return {**result, "threads": metarl_threads(env_id, n, backend, device)}


# ----------------------------------------------------------------------------- peers
def bench_gym_sync(env_id, n, seconds) -> dict:
    """gymnasium ``SyncVectorEnv``: N Python envs stepped in a loop."""
    import gymnasium as gym
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    env.reset(seed=0)
    result = measure(env.step, random_actions(env.single_action_space, n), n, seconds)
    env.close()
    return {**result, "threads": 1}


def bench_gym_vector(env_id, n, seconds) -> dict:
    """gymnasium's native NumPy vector env (``vector_entry_point``), where the id has one."""
    import gymnasium as gym
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    result = measure(env.step, random_actions(env.single_action_space, n), n, seconds)
    env.close()
    return {**result, "threads": 1}  # NumPy's elementwise ops run on the calling thread


def bench_envpool(env_id, n, seconds) -> dict:
    """envpool's synchronous gymnasium interface (``batch_size == num_envs``, default threads)."""
    import envpool
    env = envpool.make_gymnasium(env_id, num_envs=n, seed=0)
    env.reset()
    result = measure(env.step, random_actions(env.action_space, n), n, seconds)
    env.close()
    threads = env.config.get("num_threads", 0)  # 0: envpool's default, min(N, hardware threads)
    return {**result, "threads": threads or min(n, os.cpu_count() or 1)}


def bench_numpy_bandit(env_id, n, seconds) -> dict:
    """A plain NumPy Bernoulli bandit: one arm-probability table, one Generator, no env API."""
    arms = FAMILIES[env_id][1]["arms"]
    rng = np.random.default_rng(0)
    probs = rng.random((n, arms))
    rows = np.arange(n)
    actions = [np.random.default_rng(1 + i).integers(0, arms, size=n) for i in range(NUM_ACTION_BATCHES)]

    def step(a):
        return rng.random(n) < probs[rows, a]

    return {**measure(step, actions, n, seconds), "threads": 1}


# ----------------------------------------------------------------------------- columns
# column -> (function(env_id, n, seconds), module it needs, largest N or None)
PEERS = {
    "gym sync": (bench_gym_sync, "gymnasium", SYNC_MAX_N),
    "gym vector": (bench_gym_vector, "gymnasium", None),
    "envpool": (bench_envpool, "envpool", ENVPOOL_MAX_N),
    "numpy": (bench_numpy_bandit, "numpy", None),
}
# metarl column -> (backend, device)
METARL = {"numba": ("numba", "cpu"), "cpp": ("cpp", "cpu"), "torch": ("torch", "cpu"),
          "triton@cuda": ("triton", "cuda"), "torch@cuda": ("torch", "cuda")}


def metarl_columns(kernels, device) -> list[str]:
    cols = ["numba"] + (["cpp"] if hasattr(kernels, "step_cpp") else []) + ["torch"]
    return cols + (["triton@cuda", "torch@cuda"] if device == "cuda" else [])


def peer_columns(env_id) -> list[str]:
    if env_id in GYMNASIUM_IDS:
        return ["gym sync", "gym vector", "envpool"]
    return ["numpy"] if env_id == "Bandit-v0" else []


def bench_column(env_id, column, sizes, seconds) -> list[dict]:
    """One column, every size, in this process (the worker's job)."""
    warnings.filterwarnings("ignore")  # gymnasium's float32-precision warnings
    out = []
    for n in sizes:
        try:
            if column in METARL:
                out.append(bench_metarl(env_id, n, seconds, *METARL[column]))
            else:
                out.append(PEERS[column][0](env_id, n, seconds))
        except Exception as e:  # e.g. no vector entry point for this id
            out.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return out


def run_isolated(env_id, column, sizes, seconds) -> list[dict]:
    """:func:`bench_column` in a fresh Python process; its JSON comes back on stdout."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([env_id, column, sizes, seconds])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"worker failed: {tail}"} for _ in sizes]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver
def installed(module) -> bool:
    return importlib.util.find_spec(module) is not None


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_family(env_id, sizes, seconds, device, bandwidth, gpu_bandwidth=None, only=None) -> dict:
    module, _ = FAMILIES[env_id]
    try:
        kernels = importlib.import_module(f"metarl.kernels.envs.{module}")
        from metarl.envs.registry import env_class
        env_class(env_id)
    except (ImportError, AttributeError) as e:
        return {"status": "missing", "error": f"{type(e).__name__}: {e}"}
    # the backend make_vec picks when the user names none
    import torch

    from metarl.backend import resolve_env_backend
    default = "triton@cuda" if device == "cuda" else resolve_env_backend(None, torch.device("cpu"), kernels)
    metarl_cols, peer_cols = metarl_columns(kernels, device), peer_columns(env_id)
    if only:  # --columns: a subset (the default backend's column is kept for the ratios)
        metarl_cols = [c for c in metarl_cols if c in only or c == default]
        peer_cols = [c for c in peer_cols if c in only]
    results = {}  # column -> one result per size
    for col in metarl_cols + peer_cols:
        max_n = PEERS[col][2] if col in PEERS else None
        if col in PEERS and not installed(PEERS[col][1]):
            results[col] = [{"error": "not installed"} for _ in sizes]
            continue
        run_sizes = [n for n in sizes if max_n is None or n <= max_n]
        measured = iter(run_isolated(env_id, col, run_sizes, seconds) if run_sizes else [])
        results[col] = [next(measured) if n in run_sizes else {"error": f"skipped (N > {max_n})"} for n in sizes]
        errors = {r["error"] for r in results[col] if "error" in r and not r["error"].startswith("skip")}
        print(f"  {env_id:<24} {col:<12} " + "  ".join(
            f"{n}: {r['steps_per_s']:.3g}" for n, r in zip(sizes, results[col]) if "steps_per_s" in r)
            + "".join(f"  [{e}]" for e in errors), flush=True)

    bytes_per_step = getattr(kernels, "BYTES_PER_STEP", None)
    floor = bandwidth / bytes_per_step if bytes_per_step else None
    gpu_floor = gpu_bandwidth / bytes_per_step if bytes_per_step and gpu_bandwidth else None
    rows = []
    for i, n in enumerate(sizes):
        rate = {c: results[c][i]["steps_per_s"] for c in results if "steps_per_s" in results[c][i]}
        mine = {c: rate[c] for c in metarl_cols if c in rate and not c.endswith("@cuda")}
        mine_gpu = {c: rate[c] for c in metarl_cols if c in rate and c.endswith("@cuda")}
        row = {"n": n, "cores": usable_cores(), "results": {c: results[c][i] for c in results},
               "threads": {c: results[c][i].get("threads") for c in results if "steps_per_s" in results[c][i]}}
        if mine:
            row["best"] = max(mine, key=mine.get)
        if default in rate:
            row["ratio_default_to_peer"] = {p: rate[default] / rate[p] for p in peer_cols if p in rate}
        if floor:
            row["floor_steps_per_s"] = floor
            if mine:
                row["fraction_of_floor"] = mine[row["best"]] / floor
        if mine_gpu:
            row["best_gpu"] = max(mine_gpu, key=mine_gpu.get)
            if gpu_floor:
                row["gpu_floor_steps_per_s"] = gpu_floor
                row["gpu_fraction_of_floor"] = mine_gpu[row["best_gpu"]] / gpu_floor
        rows.append(row)
    return {"status": "ok", "bytes_per_step": bytes_per_step, "default_backend": default,
            "metarl_columns": metarl_cols, "peer_columns": peer_cols, "rows": rows}


def markdown_table(env_id, fam) -> str:
    if fam["status"] != "ok":
        return f"### {env_id}\n\nmissing: the metarl family is not importable yet ({fam['error']}).\n"

    def cell(r):
        if "steps_per_s" in r:
            return f"{r['steps_per_s']:.3g}"
        return {"not installed": "not installed"}.get(r["error"], "skip" if r["error"].startswith("skip") else "n/a")

    mine, peers, d = fam["metarl_columns"], fam["peer_columns"], fam["default_backend"]
    gpu = any("gpu_floor_steps_per_s" in row for row in fam["rows"])
    head = ["N"] + [f"metarl {c}" for c in mine] + peers + [f"{d} / {p}" for p in peers] + \
        ["floor", "best", "best / floor"] + (["GPU floor", "best GPU", "best GPU / floor"] if gpu else []) + \
        ["cores", "threads"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in fam["rows"]:
        ratios = row.get("ratio_default_to_peer", {})
        cells = [str(row["n"])] + [cell(row["results"][c]) for c in mine + peers] + \
            [f"{ratios[p]:.2f}x" if p in ratios else "—" for p in peers] + \
            [f"{row['floor_steps_per_s']:.3g}" if "floor_steps_per_s" in row else "—", row.get("best", "—"),
             f"{row['fraction_of_floor']:.2f}" if "fraction_of_floor" in row else "—"] + \
            ([f"{row['gpu_floor_steps_per_s']:.3g}" if "gpu_floor_steps_per_s" in row else "—",
              row.get("best_gpu", "—"),
              f"{row['gpu_fraction_of_floor']:.2f}" if "gpu_fraction_of_floor" in row else "—"] if gpu else []) + \
            [str(row["cores"]),
             ", ".join(f"{c} {t if t is not None else '?'}" for c, t in row["threads"].items()) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"env-steps/s, best of {REPEATS}; floor = copy bandwidth / {fam['bytes_per_step']} B per env-step "
             "(GPU floor: the GPU's device-to-device copy bandwidth); best: the fastest CPU column; "
             "cores: the CPUs this run may use; threads: the CPU threads each column's step ran on at that N."]
    errors = sorted({f"{c}: {r['error']}" for row in fam["rows"] for c, r in row["results"].items()
                     if "error" in r and not r["error"].startswith("skip")})
    if errors:
        notes.append("Not measured — " + "; ".join(e.rstrip(".") for e in errors) + ".")
    return f"### {env_id}\n\n" + "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(FAMILIES), help="comma-separated family ids (default: all)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated N (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=0.4,
                        help="timed budget per measurement (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="cuda adds metarl triton and torch on the GPU (default: cuda when available)")
    parser.add_argument("--columns", default=None,
                        help="comma-separated subset of the columns, e.g. triton@cuda,gym vector (default: all; the "
                             "default backend's column is always run, for the ratios)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder for the JSON (default: bench/results)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one column in this process
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(bench_column(*json.loads(args.worker))))
        return

    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    env_ids = [e.strip() for e in args.envs.split(",") if e.strip()]
    if unknown := [e for e in env_ids if e not in FAMILIES]:
        parser.error(f"unknown env ids {unknown}; known: {list(FAMILIES)}")
    sizes = [int(s) for s in args.sizes.split(",")]

    start = time.perf_counter()
    info = machine_info(device, ("metarl", "torch", "numpy", "numba", "gymnasium", "envpool", "triton"))
    info["cuda"] = info["gpu"] is not None
    info["load_average_before"] = os.getloadavg()
    bw = copy_bandwidth()
    if device == "cuda":
        bw["gpu_bytes_per_s"] = gpu_copy_bandwidth()
    info["usable_cores"] = usable_cores()
    print(f"# Env benchmark — {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), device {device}\n")
    print(f"Copy bandwidth (bytes read + written): {bw['bytes_per_s'] / 1e9:.1f} GB/s "
          f"(NumPy {bw['numpy_bytes_per_s'] / 1e9:.1f}, torch {bw['torch_bytes_per_s'] / 1e9:.1f}). "
          f"{CACHE_NOTE}\n", flush=True)
    if "gpu_bytes_per_s" in bw:
        print(f"GPU copy bandwidth (bytes read + written, device to device): {bw['gpu_bytes_per_s'] / 1e9:.0f} GB/s; "
              "the GPU floor of each family is that over its bytes per env-step.\n", flush=True)
    if info["load_average_before"][0] > 1.0:
        print(f"Warning: load average {info['load_average_before'][0]:.1f} before the run; other processes "
              "share the cores, and threaded tools (Numba, C++/OpenMP, envpool) suffer most.\n", flush=True)
    only = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    known = set(METARL) | set(PEERS)
    if only and (unknown := [c for c in only if c not in known]):
        parser.error(f"unknown columns {unknown}; known: {sorted(known)}")
    results = {env_id: run_family(env_id, sizes, args.seconds, device, bw["bytes_per_s"], bw.get("gpu_bytes_per_s"),
                                  only) for env_id in env_ids}
    elapsed = time.perf_counter() - start
    info["load_average_after"] = os.getloadavg()

    print()
    for env_id, fam in results.items():
        print(markdown_table(env_id, fam))
    if missing := [e for e, f in results.items() if f["status"] != "ok"]:
        print(f"Missing families (metarl module not importable yet): {', '.join(missing)}\n")
    print(f"Total time {elapsed:.0f} s; 1-minute load average {info['load_average_before'][0]:.1f} before, "
          f"{info['load_average_after'][0]:.1f} after.")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"envs-{info['hostname']}-{stamp}.json"
    path.write_text(json.dumps({
        "benchmark": "envs", "date": stamp, "machine": info, "bandwidth": bw, "sizes": sizes,
        "seconds": args.seconds, "repeats": REPEATS, "note": CACHE_NOTE, "elapsed_s": elapsed,
        "families": results}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
