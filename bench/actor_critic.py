"""Actor-critic step benchmark: the fused recurrent policy step of metarl against the
unfused torch sequence a user writes today, side by side in one run, same machine, same sizes.

What is measured
    Microseconds per policy step (one step for a batch of B envs: obs 16 floats, 4 discrete
    actions, LSTM hidden size H), carrying the (h, c) state from step to step as a rollout does,
    with a fixed per-row reset mask (about 1 row in 16 reset every step).

    * metarl, one column per CPU backend: ``numba`` (pack [x, h], one MKL GEMM against the
      pre-packed [W_ih, W_hh], one fused Numba pass for gates + cell + heads + Gumbel-max
      sampling) and ``torch`` (the pure-PyTorch reference), both through
      ``RecurrentActorCritic.step`` (validation and the torch draw of the uniforms included);
      with ``--device cuda`` also ``triton@cuda`` and ``torch@cuda`` (synchronised).
    * ``unfused``: what a user writes today, under ``torch.no_grad()``: zero the state of reset
      rows, ``torch.nn.LSTMCell``, ``nn.Linear`` policy and value heads,
      ``torch.distributions.Categorical(logits=...)``, ``.sample()`` and ``.log_prob``.
    * ``gemm``: the fused step's one GEMM alone (``torch.addmm`` at its exact shape), to show
      how much of the step is the GEMM.

How
    Each column runs in its own Python process, all sizes in turn (as ``bench/envs.py``: thread
    pools left spinning by one tool would otherwise steal the cores from the next). Each
    measurement warms up for a quarter of ``--seconds``, then times 5 repeats of about
    ``--seconds / 5`` and reports the best (slower repeats are other processes interfering; the
    JSON keeps all five and the load average before and after).

Physical floor
    FLOPs per step ``2·B·(16+H)·4H`` (gate GEMM) ``+ 2·B·H·5`` (heads) over the fp32 GEMM rate
    measured once here (``torch.mm`` of 2048 x 2048 matrices, best of several, all threads).
    The pointwise work (gates, cell, sampling: ~20·B·H FLOPs) is not counted. At B = 1 the step
    is per-call overhead, far above this floor.

Usage::

    python bench/actor_critic.py                        # H in {128, 256}, B in {1, 64, 1024, 4096}
    python bench/actor_critic.py --hidden 256 --batch 64,1024 --seconds 0.4

Prints a Markdown table and writes JSON to ``bench/results/actor_critic-<hostname>-<timestamp>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import gemm_rate, machine_info, warn_if_loaded

OBS_DIM = 16
NUM_ACTIONS = 4
HIDDEN = (128, 256)
BATCH = (1, 64, 1024, 4096)
REPEATS = 5
COLUMNS = ("numba", "torch", "unfused", "gemm")
CUDA_COLUMNS = ("triton@cuda", "triton-tf32@cuda", "triton-bf16@cuda", "torch@cuda", "unfused@cuda")
TARGET_SPEEDUP_B64 = 1.3      # fused >= 1.3x the unfused sequence at B = 64 (issue 4)
TARGET_FLOOR_RATIO = 1.25     # fused within 1.25x of the GEMM floor at B >= 1024


# ----------------------------------------------------------------------------- timing
def measure(step, seconds, sync=None) -> dict:
    """Best microseconds per call of ``step()`` over ``REPEATS`` timed repeats."""
    sync = sync or (lambda: None)
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < 0.25 * seconds:
        step()
        calls += 1
    sync()
    per_call = (time.perf_counter() - t0) / calls
    calls_per_rep = max(1, round(seconds / REPEATS / per_call))
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(calls_per_rep):
            step()
        sync()
        times.append((time.perf_counter() - t0) / calls_per_rep * 1e6)
    return {"us": min(times), "median_us": statistics.median(times), "repeats_us": times,
            "calls_per_repeat": calls_per_rep}


def flops(bsz: int, hidden: int) -> int:
    return 2 * bsz * (OBS_DIM + hidden) * 4 * hidden + 2 * bsz * hidden * (NUM_ACTIONS + 1)


def bytes_moved(bsz: int, hidden: int) -> int:
    """Fewest bytes a step moves (kernels/actor_critic.py reference docstring): the weights once,
    obs, (h, c) in and out, reset, uniforms, action (int64), log_prob and value."""
    weights = 4 * (4 * hidden * (OBS_DIM + hidden) + 4 * hidden + (NUM_ACTIONS + 1) * (hidden + 1))
    return weights + bsz * (4 * OBS_DIM + 16 * hidden + 1 + 4 * NUM_ACTIONS + 8 + 8)


def gpu_rates() -> tuple[float, float]:
    """(fp32 FLOP/s of torch.mm 8192^2 with TF32 off, copy bytes/s counting read + write) on the GPU."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(8192, 8192, device="cuda"), torch.randn(8192, 8192, device="cuda")
    src = torch.randn(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    best_mm = best_bw = 0.0
    for _ in range(5):
        for fn, work, kind in ((lambda: torch.mm(a, b), 2 * 8192 ** 3, "mm"),
                               (lambda: dst.copy_(src), 8 * src.numel(), "bw")):
            fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            rate = work / (time.perf_counter() - t0)
            if kind == "mm":
                best_mm = max(best_mm, rate)
            else:
                best_bw = max(best_bw, rate)
    return best_mm, best_bw


# ----------------------------------------------------------------------------- columns
def inputs(bsz, hidden, device):
    import torch
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(bsz, OBS_DIM, generator=g).to(device)
    reset = (torch.arange(bsz) % 16 == 5).to(device)
    return obs, reset


def bench_fused(bsz, hidden, seconds, backend, device, precision="fp32") -> dict:
    import gymnasium as gym
    import torch

    from metarl.nn.actor_critic import RecurrentActorCritic
    torch.manual_seed(0)
    policy = RecurrentActorCritic(OBS_DIM, gym.spaces.Discrete(NUM_ACTIONS), hidden, backend=backend, device=device,
                                  precision=precision)
    obs, reset = inputs(bsz, hidden, device)
    gen = torch.Generator(device=device).manual_seed(0)
    state = [policy.initial_state(bsz)]

    def step():
        state[0] = policy.step(obs, state[0], reset, generator=gen)[3]

    return measure(step, seconds, torch.cuda.synchronize if device == "cuda" else None)


def bench_unfused(bsz, hidden, seconds, device) -> dict:
    import torch
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(OBS_DIM, hidden, device=device)
    pi = torch.nn.Linear(hidden, NUM_ACTIONS, device=device)
    vf = torch.nn.Linear(hidden, 1, device=device)
    obs, reset = inputs(bsz, hidden, device)
    keep = (~reset).float()[:, None]
    state = [(torch.zeros(bsz, hidden, device=device), torch.zeros(bsz, hidden, device=device))]

    def step():
        with torch.no_grad():
            h, c = state[0]
            h, c = cell(obs, (h * keep, c * keep))
            logits = pi(h)
            value = vf(h)[:, 0]  # noqa: F841 - computed, as in a rollout
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            dist.log_prob(action)
            state[0] = (h, c)

    return measure(step, seconds, torch.cuda.synchronize if device == "cuda" else None)


def bench_gemm(bsz, hidden, seconds) -> dict:
    import torch
    xh = torch.randn(bsz, OBS_DIM + hidden)
    w = torch.randn(4 * hidden, OBS_DIM + hidden)
    bias = torch.randn(4 * hidden)
    return measure(lambda: torch.addmm(bias, xh, w.t()), seconds)


def bench_column(column, sizes, seconds) -> list[dict]:
    """One column, every (H, B), in this process (the worker's job)."""
    out = []
    for hidden, bsz in sizes:
        try:
            if column == "unfused":
                out.append(bench_unfused(bsz, hidden, seconds, "cpu"))
            elif column == "unfused@cuda":
                out.append(bench_unfused(bsz, hidden, seconds, "cuda"))
            elif column == "gemm":
                out.append(bench_gemm(bsz, hidden, seconds))
            else:
                backend, _, device = column.partition("@")
                backend, _, precision = backend.partition("-")
                out.append(bench_fused(bsz, hidden, seconds, backend, device or "cpu", precision or "fp32"))
        except Exception as e:
            out.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return out


def run_isolated(column, sizes, seconds) -> list[dict]:
    """:func:`bench_column` in a fresh Python process; its JSON comes back on stdout."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([column, sizes, seconds])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"worker failed: {tail}"} for _ in sizes]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver
def markdown_table(rows, columns, rate, gpu=None) -> str:
    fused = "triton@cuda" if "triton@cuda" in columns else "numba"
    unfused = "unfused@cuda" if fused == "triton@cuda" else "unfused"
    head = ["H", "B"] + [f"{c} (us)" for c in columns] + \
        [f"unfused / {fused}", "floor (us)", f"{fused} / floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in rows:
        res = row["results"]

        def cell(c, res=res):
            return f"{res[c]['us']:.1f}" if "us" in res[c] else "n/a"
        ok = all("us" in res[c] for c in (fused, unfused))
        ratio = res[unfused]["us"] / res[fused]["us"] if ok else None
        frac = res[fused]["us"] / row["floor_us"] if "us" in res[fused] else None
        lines.append("| " + " | ".join(
            [str(row["hidden"]), str(row["batch"])] + [cell(c) for c in columns]
            + [f"{ratio:.2f}x" if ratio else "—", f"{row['floor_us']:.1f}", f"{frac:.2f}" if frac else "—"]) + " |")
    note = (f"Microseconds per step (obs {OBS_DIM}, {NUM_ACTIONS} actions), best of {REPEATS}; floor = FLOPs "
            f"(gate GEMM + heads) / {rate / 1e9:.0f} GFLOP/s (fp32 torch.mm, 2048^2, measured in this run). "
            f"Targets: unfused / {fused} >= {TARGET_SPEEDUP_B64} at B = 64; {fused} / floor <= "
            f"{TARGET_FLOOR_RATIO} at B >= 1024.")
    errors = sorted({f"{c}: {r['error']}" for row in rows for c, r in row["results"].items() if "error" in r})
    if errors:
        note += " Not measured — " + "; ".join(errors) + "."
    if gpu:
        mm, bw = gpu
        note += (f"\n\nGPU floor per step = max(FLOPs / {mm / 1e12:.1f} TFLOP/s (fp32 torch.mm 8192^2, TF32 off), "
                 f"bytes / {bw / 1e12:.2f} TB/s (device copy, read + write)):\n\n| H | B | triton@cuda (us) | "
                 "tf32 (us) | bf16 (us) | GPU floor (us) | bound | triton / floor | bf16 / floor | "
                 "unfused@cuda / triton | unfused@cuda / bf16 |\n"
                 "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
        for row in rows:
            res = row["results"]
            t_us = res["triton@cuda"].get("us")
            fl, by = row["flops"] / mm * 1e6, row["bytes"] / bw * 1e6
            floor = max(fl, by)
            u_us = res["unfused@cuda"].get("us")
            tf_us = res.get("triton-tf32@cuda", {}).get("us", float("nan"))
            bf_us = res.get("triton-bf16@cuda", {}).get("us", float("nan"))
            note += (f"\n| {row['hidden']} | {row['batch']} | {t_us:.1f} | {tf_us:.1f} | {bf_us:.1f} | {floor:.2f} | "
                     f"{'memory' if by >= fl else 'FLOPs'} | {t_us / floor:.1f}x | {bf_us / floor:.1f}x | "
                     f"{u_us / t_us:.2f}x | {u_us / bf_us:.2f}x |"
                     if t_us and u_us else f"\n| {row['hidden']} | {row['batch']} | n/a | | | {floor:.2f} | | | | | |")
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default=",".join(map(str, HIDDEN)), help="comma-separated H (default: %(default)s)")
    parser.add_argument("--batch", default=",".join(map(str, BATCH)), help="comma-separated B (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="timed budget per measurement (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="cuda adds triton / torch / unfused on the GPU (default: cuda when available)")
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
    sizes = [(int(h), int(b)) for h in args.hidden.split(",") for b in args.batch.split(",")]
    columns = list(COLUMNS) + (list(CUDA_COLUMNS) if device == "cuda" else [])

    start = time.perf_counter()
    info = machine_info(device)
    info["load_average_before"] = os.getloadavg()
    rate = gemm_rate()
    gpu = gpu_rates() if device == "cuda" else None
    print(f"# Actor-critic step benchmark — {info['cpu']}, {info['cores']} cores, device {device}\n")
    print(f"fp32 GEMM rate (torch.mm 2048^2): {rate / 1e9:.0f} GFLOP/s\n", flush=True)
    warn_if_loaded(info["load_average_before"])
    results = {}
    for col in columns:
        results[col] = run_isolated(col, sizes, args.seconds)
        print(f"  {col:<14} " + "  ".join(f"H={h},B={b}: {r['us']:.1f}" if "us" in r else f"H={h},B={b}: n/a"
                                          for (h, b), r in zip(sizes, results[col])), flush=True)
    rows = []
    for i, (hidden, bsz) in enumerate(sizes):
        rows.append({"hidden": hidden, "batch": bsz, "flops": flops(bsz, hidden),
                     "floor_us": flops(bsz, hidden) / rate * 1e6, "bytes": bytes_moved(bsz, hidden),
                     "results": {c: results[c][i] for c in columns}})
    elapsed = time.perf_counter() - start
    info["load_average_after"] = os.getloadavg()
    print()
    print(markdown_table(rows, columns, rate, gpu))
    print(f"Total time {elapsed:.0f} s; 1-minute load average {info['load_average_before'][0]:.1f} before, "
          f"{info['load_average_after'][0]:.1f} after.")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"actor_critic-{info['hostname']}-{stamp}.json"
    path.write_text(json.dumps({
        "benchmark": "actor_critic", "date": stamp, "machine": info, "gemm_flops_per_s": rate, "gpu_mm_bw": gpu,
        "obs_dim": OBS_DIM, "num_actions": NUM_ACTIONS, "seconds": args.seconds, "repeats": REPEATS,
        "elapsed_s": elapsed, "columns": columns, "rows": rows}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
