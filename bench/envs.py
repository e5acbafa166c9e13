"""Env benchmark: env-steps per second of metarl's batched envs against the peers a
user would otherwise pick, side by side in one run, same machine, same N.

What is measured
    For each family and each N (number of envs in one batch), the rate of
    ``env.step(actions)`` in env-steps per second (N x calls / seconds), with uniform
    random actions. A few distinct action batches are generated before timing and
    cycled, so generating them is not timed. Every env autoresets as it would in
    training (metarl ``next_step``; gymnasium's default; envpool's own).

    * metarl, one column per backend available for the family: ``numba`` (the
      default on the CPU), ``cpp`` (where the family has a C++ kernel), ``torch``
      (the pure-PyTorch reference); with ``--device cuda`` also ``triton`` and
      ``torch`` on the GPU (synchronised before the clock is read).
    * gymnasium ``SyncVectorEnv`` (``vectorization_mode="sync"``; up to N=4096, it
      is slow to build and to step), gymnasium's native vector env where the id has
      one (``vectorization_mode="vector_entry_point"``), envpool
      (``envpool.make_gymnasium``, its default threads), and for Bandit-v0 a plain
      NumPy Bernoulli bandit (``rng.random(N) < probs[arange(N), a]``).

How
    Each measurement warms up (first calls compile or fill caches), calibrates the
    number of calls so one repeat lasts about ``--seconds / 5``, then times 5
    repeats and reports the median rate (the JSON keeps all five). Peers are
    optional imports: a missing one is reported as "not installed", never faked; a
    metarl family whose module does not exist yet is reported as missing.

Physical floor
    Copy bandwidth is measured once (a 256 MiB float32 copy with NumPy and with
    torch, best of several, counting bytes read + written; the larger of the two).
    For each family the floor is ``bandwidth / BYTES_PER_STEP`` env-steps/s, where
    ``BYTES_PER_STEP`` (``metarl.kernels.envs.<family>``) counts the bytes one
    env-step must read and write. Below ~4096 envs the batch sits in cache, so the
    DRAM floor is not binding there (fractions above 1 are possible).

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
import platform
import socket
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

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
ENVPOOL_IDS = {"CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Acrobot-v1"}
SIZES = (16, 256, 4096, 65536)
SYNC_MAX_N = 4096       # gymnasium SyncVectorEnv: one Python env per copy; bigger is minutes to build
NUM_ACTION_BATCHES = 4  # distinct random action batches, cycled
REPEATS = 5             # timed repeats per measurement; the median is reported
CACHE_NOTE = ("Below ~4096 envs the batch sits in cache, so the DRAM floor is not binding there "
              "(a fraction above 1 is possible).")


# ----------------------------------------------------------------------------- timing
def measure(step, actions, n, seconds, sync=None) -> dict:
    """Median env-steps/s of ``step(actions[i % len])`` over ``REPEATS`` timed repeats.

    Warm-up: 2 calls (compilation, caches), then calls until 5% of the budget has
    passed, which also calibrates how many calls make one repeat last ``seconds / REPEATS``.
    """
    sync = sync or (lambda: None)
    k = len(actions)
    for i in range(2):
        step(actions[i % k])
    sync()
    calls, t0 = 0, time.perf_counter()
    while True:
        step(actions[calls % k])
        calls += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= 0.05 * seconds or calls >= 1000:
            break
    per_call = elapsed / calls
    calls_per_rep = max(1, round(seconds / REPEATS / per_call))
    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for i in range(calls_per_rep):
            step(actions[i % k])
        sync()
        rates.append(n * calls_per_rep / (time.perf_counter() - t0))
    return {"steps_per_s": statistics.median(rates), "repeats": rates, "calls_per_repeat": calls_per_rep}


def random_actions(space, n, rng) -> list[np.ndarray]:
    """``NUM_ACTION_BATCHES`` NumPy batches ``[n, ...]`` of uniform actions from one env's space."""
    import gymnasium as gym
    out = []
    for _ in range(NUM_ACTION_BATCHES):
        if isinstance(space, gym.spaces.Discrete):
            out.append(rng.integers(space.start, space.start + space.n, size=n, dtype=np.int64))
        elif isinstance(space, gym.spaces.Box):
            low = np.broadcast_to(space.low, space.shape)
            high = np.broadcast_to(space.high, space.shape)
            out.append(rng.uniform(low, high, size=(n, *space.shape)).astype(space.dtype))
        else:
            raise TypeError(f"no random actions for {space}")
    return out


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> dict:
    """Bytes read + written per second by a ``mib`` MiB float32 copy (NumPy and torch; best of ``repeats``)."""
    n = mib * 2**20 // 4
    src = np.random.default_rng(0).random(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages
    best_np = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best_np = max(best_np, 2 * src.nbytes / (time.perf_counter() - t0))
    tsrc, tdst = torch.from_numpy(src), torch.from_numpy(dst)
    best_torch = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tdst.copy_(tsrc)
        best_torch = max(best_torch, 2 * src.nbytes / (time.perf_counter() - t0))
    return {"numpy_bytes_per_s": best_np, "torch_bytes_per_s": best_torch,
            "bytes_per_s": max(best_np, best_torch), "array_mib": mib}


# ----------------------------------------------------------------------------- metarl
def bench_metarl(env_id, n, backend, device, seconds, family_kwargs) -> dict:
    import metarl
    env = metarl.make_vec(env_id, n, device=device, seed=0, backend=backend, **family_kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    actions = [torch.from_numpy(a).to(device) for a in random_actions(env.single_action_space, n, rng)]
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    result = measure(env.step, actions, n, seconds, sync)
    env.close()
    return result


# ----------------------------------------------------------------------------- peers
def bench_gym_sync(env_id, n, seconds) -> dict:
    """gymnasium ``SyncVectorEnv``: N Python envs stepped in a loop."""
    import gymnasium as gym
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    env.reset(seed=0)
    actions = random_actions(env.single_action_space, n, np.random.default_rng(1))
    result = measure(env.step, actions, n, seconds)
    env.close()
    return result


def bench_gym_vector(env_id, n, seconds) -> dict:
    """gymnasium's native NumPy vector env (``vector_entry_point``), where the id has one."""
    import gymnasium as gym
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    actions = random_actions(env.single_action_space, n, np.random.default_rng(1))
    result = measure(env.step, actions, n, seconds)
    env.close()
    return result


def bench_envpool(env_id, n, seconds) -> dict:
    """envpool's synchronous gymnasium interface (``batch_size == num_envs``, default threads)."""
    import envpool
    env = envpool.make_gymnasium(env_id, num_envs=n, seed=0)
    env.reset()
    actions = random_actions(env.action_space, n, np.random.default_rng(1))
    result = measure(env.step, actions, n, seconds)
    env.close()
    return result


def bench_numpy_bandit(n, seconds, arms=10) -> dict:
    """A plain NumPy Bernoulli bandit: one arm probability table, one Generator, no env API."""
    rng = np.random.default_rng(0)
    probs = rng.random((n, arms))
    rows = np.arange(n)
    actions = [np.random.default_rng(1 + i).integers(0, arms, size=n) for i in range(NUM_ACTION_BATCHES)]

    def step(a):
        return rng.random(n) < probs[rows, a]

    return measure(step, actions, n, seconds)


def peers_for(env_id) -> dict:
    """``{peer name: (function(n, seconds), max N or None, import needed)}`` for one family."""
    peers = {}
    if env_id in ENVPOOL_IDS:  # the gymnasium classic-control ids
        peers["gym sync"] = (lambda n, s: bench_gym_sync(env_id, n, s), SYNC_MAX_N, "gymnasium")
        peers["gym vector"] = (lambda n, s: bench_gym_vector(env_id, n, s), None, "gymnasium")
        peers["envpool"] = (lambda n, s: bench_envpool(env_id, n, s), None, "envpool")
    if env_id == "Bandit-v0":
        peers["numpy"] = (lambda n, s: bench_numpy_bandit(n, s, FAMILIES[env_id][1]["arms"]), None, "numpy")
    return peers


# ----------------------------------------------------------------------------- driver
def installed(module) -> bool:
    return importlib.util.find_spec(module) is not None


def version(module) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:
        return None


def machine_info(device) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "cuda": torch.cuda.is_available(), "device": device,
        "versions": {m: version(m) for m in ("metarl", "torch", "numpy", "numba", "gymnasium", "envpool", "triton")},
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    if installed("numba"):
        import numba
        info["numba_threads"] = numba.get_num_threads()
    return info


def metarl_backends(device) -> list[tuple[str, str, str]]:
    """``(column name, backend, device)`` for each metarl column of this run."""
    cols = [("numba", "numba", "cpu"), ("cpp", "cpp", "cpu"), ("torch", "torch", "cpu")]
    if device == "cuda":
        cols += [("triton@cuda", "triton", "cuda"), ("torch@cuda", "torch", "cuda")]
    return cols


def run_family(env_id, sizes, seconds, device, bandwidth) -> dict:
    module, family_kwargs = FAMILIES[env_id]
    try:
        kernels = importlib.import_module(f"metarl.kernels.envs.{module}")
        import metarl.envs.registry as registry
        registry.env_class(env_id)
    except (ImportError, AttributeError) as e:
        return {"status": "missing", "error": f"{type(e).__name__}: {e}"}
    bytes_per_step = getattr(kernels, "BYTES_PER_STEP", None)
    floor = bandwidth / bytes_per_step if bytes_per_step else None
    default_col = "triton@cuda" if device == "cuda" else "numba"
    peers = peers_for(env_id)
    rows = []
    for n in sizes:
        row = {"n": n, "metarl": {}, "peers": {}}
        for col, backend, dev in metarl_backends(device):
            try:
                row["metarl"][col] = bench_metarl(env_id, n, backend, dev, seconds, family_kwargs)
            except Exception as e:  # e.g. no cpp kernel for this family
                row["metarl"][col] = {"error": f"{type(e).__name__}: {e}"}
        for name, (fn, max_n, needs) in peers.items():
            if not installed(needs):
                row["peers"][name] = {"error": "not installed"}
            elif max_n is not None and n > max_n:
                row["peers"][name] = {"error": f"skipped (N > {max_n})"}
            else:
                try:
                    row["peers"][name] = fn(n, seconds)
                except Exception as e:  # e.g. no vector entry point for this id
                    row["peers"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
        ok = {c: r["steps_per_s"] for c, r in row["metarl"].items() if "steps_per_s" in r}
        if ok:
            row["best"] = max(ok, key=ok.get)
        default = ok.get(default_col)
        row["ratio_default_to_peer"] = {
            p: default / r["steps_per_s"] for p, r in row["peers"].items() if default and "steps_per_s" in r}
        if floor:
            row["floor_steps_per_s"] = floor
            if ok:
                row["fraction_of_floor"] = ok[row["best"]] / floor
        rows.append(row)
        print(f"  {env_id} N={n}: " + ", ".join(f"{c} {v:.3g}" for c, v in ok.items()), flush=True)
    return {"status": "ok", "bytes_per_step": bytes_per_step, "default_backend": default_col,
            "rows": rows, "peer_names": list(peers)}


def fmt(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def cell(r) -> str:
    if "steps_per_s" in r:
        return fmt(r["steps_per_s"])
    err = r.get("error", "")
    return "not installed" if err == "not installed" else ("skipped" if err.startswith("skipped") else "n/a")


def markdown_table(env_id, fam, device) -> str:
    if fam["status"] != "ok":
        return f"### {env_id}\n\nmissing (metarl module not importable yet: {fam['error']})\n"
    backends = [c for c, _, _ in metarl_backends(device)
                if any("steps_per_s" in row["metarl"].get(c, {}) for row in fam["rows"])]
    peers = fam["peer_names"]
    d = fam["default_backend"]
    head = ["N"] + [f"metarl {c}" for c in backends] + peers + [f"{d} / {p}" for p in peers] + \
        ["floor", "best", "best / floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in fam["rows"]:
        ratios = row["ratio_default_to_peer"]
        cells = [str(row["n"])] + [cell(row["metarl"][c]) for c in backends] + \
            [cell(row["peers"][p]) for p in peers] + \
            [f"{ratios[p]:.2f}x" if p in ratios else "—" for p in peers] + \
            [fmt(row.get("floor_steps_per_s")), row.get("best", "—"),
             f"{row['fraction_of_floor']:.2f}" if "fraction_of_floor" in row else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"env-steps/s (median of {REPEATS}); floor = bandwidth / {fam['bytes_per_step']} B per env-step."]
    errors = {f"{c}: {r['error']}" for row in fam["rows"] for c, r in [*row["metarl"].items(), *row["peers"].items()]
              if "error" in r and not r["error"].startswith("skipped")}
    if errors:
        notes.append("Not measured: " + "; ".join(sorted(errors)) + ".")
    return f"### {env_id}\n\n" + "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(FAMILIES),
                        help="comma-separated family ids (default: all)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated N (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=0.4, help="timed budget per measurement (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda adds triton and torch on the GPU (default: cuda when available)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder for the JSON (default: bench/results)")
    args = parser.parse_args(argv)
    env_ids = [e.strip() for e in args.envs.split(",") if e.strip()]
    unknown = [e for e in env_ids if e not in FAMILIES]
    if unknown:
        parser.error(f"unknown env ids {unknown}; known: {list(FAMILIES)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    warnings.filterwarnings("ignore")  # gymnasium's float32 precision warnings, envpool's deprecations

    start = time.perf_counter()
    info = machine_info(args.device)
    bw = copy_bandwidth()
    print(f"# Env benchmark — {info['cpu']}, {info['cores']} cores, device {args.device}\n")
    print(f"Copy bandwidth (read + written): {bw['bytes_per_s'] / 1e9:.1f} GB/s "
          f"(numpy {bw['numpy_bytes_per_s'] / 1e9:.1f}, torch {bw['torch_bytes_per_s'] / 1e9:.1f}). {CACHE_NOTE}\n",
          flush=True)
    results = {}
    for env_id in env_ids:
        results[env_id] = run_family(env_id, sizes, args.seconds, args.device, bw["bytes_per_s"])
    elapsed = time.perf_counter() - start

    print()
    for env_id, fam in results.items():
        print(markdown_table(env_id, fam, args.device))
    missing = [e for e, f in results.items() if f["status"] != "ok"]
    if missing:
        print(f"Missing families (not importable yet): {', '.join(missing)}\n")
    print(f"Total time {elapsed:.0f} s.")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"envs-{info['hostname']}-{stamp}.json"
    payload = {"benchmark": "envs", "date": stamp, "machine": info, "bandwidth": bw, "sizes": sizes,
               "seconds": args.seconds, "repeats": REPEATS, "note": CACHE_NOTE, "elapsed_s": elapsed,
               "families": results}
    path.write_text(json.dumps(payload, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
