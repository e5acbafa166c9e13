"""LSTM benchmark: metarl.nn.LSTMCell / LSTM against torch.nn.LSTMCell / LSTM, side by
side in one run, same machine, same sizes (inference).

What is measured
    Microseconds per step (per time step of the whole batch), float32, input size 16:

    * ``LSTMCell``: one ``h, c = cell(x, (h, c))`` call is one step (the state is fed back).
    * ``LSTM``: one ``lstm(x)`` call over a ``[T, B, 16]`` sequence (T = 32 by default,
      zero initial state), divided by T.

    metarl runs its default CPU path (torch's own fused LSTM per reset-free segment,
    "aten") and, in the ``numba`` columns, its kernel (one GEMM on ``[x, h] [W_ih | W_hh]^T``
    with packed weights + one fused Numba pointwise pass per step; ``metarl.kernels.lstm``);
    torch runs its own CPU kernels (oneDNN/MKL). Both load the same weights. With ``--train`` a second
    table times forward + backward of the sequence (metarl's backward recomputes through the
    reference) against torch.nn.LSTM's.

How
    Each column runs in its own Python process (thread pools left spinning by one tool
    would otherwise slow the next). Each measurement warms up for a quarter of
    ``--seconds`` (at least 2 calls), then times 5 repeats of about ``--seconds / 5`` (at
    least one call each) and reports the best, as ``timeit`` does; the JSON keeps all five
    and the load average before and after the run.

Floor
    FLOPs per step ``2 B 4H (I + H)`` (the gate GEMMs; the pointwise work is not counted)
    over the fp32 GEMM rate measured in the run (torch.mm, 2048 x 1024 x 1024, best of
    several). A fraction of the floor above 1 is impossible; small B is overhead-bound.

Usage::

    python bench/lstm.py                          # B in 1,64,1024,4096; H in 128,256
    python bench/lstm.py --batches 64,1024 --hidden 256 --seconds 0.5 --train

Prints a Markdown table and writes JSON to ``bench/results/lstm-<hostname>-<timestamp>.json``.
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

BATCHES = (1, 64, 1024, 4096)
HIDDEN = (128, 256)
INPUT_SIZE = 16
STEPS = 32
REPEATS = 5
COLUMNS = ("metarl LSTMCell", "metarl LSTMCell numba", "torch LSTMCell",
           "metarl LSTM", "metarl LSTM numba", "torch LSTM")
TRAIN_COLUMNS = ("metarl LSTM train", "torch LSTM train")


# ----------------------------------------------------------------------------- timing
def measure(call, steps_per_call, seconds) -> dict:
    """Best microseconds per step of ``call()`` over ``REPEATS`` timed repeats."""
    calls, t0 = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - t0 < 0.25 * seconds:
        call()
        calls += 1
    per_call = (time.perf_counter() - t0) / calls
    calls_per_rep = max(1, round(seconds / REPEATS / per_call))
    us = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(calls_per_rep):
            call()
        us.append((time.perf_counter() - t0) / calls_per_rep / steps_per_call * 1e6)
    return {"us_per_step": min(us), "median_us_per_step": statistics.median(us), "repeats": us,
            "calls_per_repeat": calls_per_rep}


def bench_column(column, batches, hidden, steps, seconds) -> list[dict]:
    """One column, every (H, B), in this process (the worker's job)."""
    import torch

    import metarl.nn
    torch.manual_seed(0)
    out = []
    for h_size in hidden:
        for batch in batches:
            try:
                is_cell = "Cell" in column
                ref = (torch.nn.LSTMCell if is_cell else torch.nn.LSTM)(INPUT_SIZE, h_size)
                if column.startswith("metarl"):
                    backend = "numba" if column.endswith("numba") else None
                    mod = (metarl.nn.LSTMCell if is_cell else metarl.nn.LSTM)(INPUT_SIZE, h_size, backend=backend)
                    mod.load_state_dict(ref.state_dict())
                else:
                    mod = ref
                if is_cell:
                    x = torch.randn(batch, INPUT_SIZE)
                    state = [(torch.zeros(batch, h_size), torch.zeros(batch, h_size))]

                    def call(mod=mod, x=x, state=state):
                        state[0] = mod(x, state[0])

                    with torch.inference_mode():
                        out.append(measure(call, 1, seconds))
                elif column.endswith("train"):
                    x = torch.randn(steps, batch, INPUT_SIZE, requires_grad=True)

                    def call(mod=mod, x=x):
                        o, (h, c) = mod(x)
                        (o.sum() + h.sum() + c.sum()).backward()

                    out.append(measure(call, steps, seconds))
                else:
                    x = torch.randn(steps, batch, INPUT_SIZE)
                    with torch.inference_mode():
                        out.append(measure(lambda mod=mod, x=x: mod(x), steps, seconds))
            except Exception as e:  # noqa: BLE001 - reported in the table, not raised
                out.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return out


def run_isolated(column, batches, hidden, steps, seconds) -> list[dict]:
    """:func:`bench_column` in a fresh Python process; its JSON comes back on stdout."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([column, batches, hidden, steps, seconds])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"worker failed: {tail}"} for _ in range(len(batches) * len(hidden))]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
def markdown_table(columns, rows, pairs) -> str:
    head = ["H", "B"] + list(columns) + [f"{a} / {b}" for a, b in pairs] + ["floor", "best metarl / floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in rows:
        r = row["results"]

        def us(c, r=r):
            return r[c]["us_per_step"] if "us_per_step" in r.get(c, {}) else None

        cells = [str(row["hidden"]), str(row["batch"])]
        cells += [f"{us(c):.1f}" if us(c) is not None else "n/a" for c in columns]
        # speed ratio: peer time / metarl time (> 1: metarl faster)
        cells += [f"{us(b) / us(a):.2f}x" if us(a) and us(b) else "—" for a, b in pairs]
        mine = [us(c) for c in columns if c.startswith("metarl") and us(c)]
        cells += [f"{row['floor_us']:.3g}", f"{row['floor_us'] / min(mine):.2f}" if mine else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated B")
    parser.add_argument("--hidden", default=",".join(map(str, HIDDEN)), help="comma-separated H")
    parser.add_argument("--steps", type=int, default=STEPS, help="sequence length T (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=0.5, help="timed budget per measurement")
    parser.add_argument("--train", action="store_true", help="also time forward + backward of the sequence")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(bench_column(*json.loads(args.worker))))
        return

    batches = [int(b) for b in args.batches.split(",")]
    hidden = [int(h) for h in args.hidden.split(",")]
    start = time.perf_counter()
    info = machine_info()
    info["load_average_before"] = os.getloadavg()
    rate = gemm_rate(2048, 1024, 1024)
    print(f"# LSTM benchmark — {info['cpu']}, {info['cores']} cores; I = {INPUT_SIZE}, T = {args.steps}\n")
    print(f"fp32 GEMM rate (torch.mm 2048x1024x1024): {rate / 1e9:.0f} GFLOP/s\n", flush=True)
    warn_if_loaded(info["load_average_before"])
    columns = list(COLUMNS) + (list(TRAIN_COLUMNS) if args.train else [])
    results = {}
    for col in columns:
        results[col] = run_isolated(col, batches, hidden, args.steps, args.seconds)
        print(f"  {col:<20} " + "  ".join(f"{r['us_per_step']:.1f}" if "us_per_step" in r else "err"
                                          for r in results[col]), flush=True)
    rows = []
    for i, (h_size, batch) in enumerate((h, b) for h in hidden for b in batches):
        flops = 2 * batch * 4 * h_size * (INPUT_SIZE + h_size)
        rows.append({"hidden": h_size, "batch": batch, "flops_per_step": flops, "floor_us": flops / rate * 1e6,
                     "results": {c: results[c][i] for c in columns}})
    elapsed = time.perf_counter() - start
    info["load_average_after"] = os.getloadavg()

    print("\n### Inference, microseconds per step (lower is better; ratio = torch / metarl, > 1: metarl faster)\n")
    pairs = [("metarl LSTMCell", "torch LSTMCell"), ("metarl LSTMCell numba", "torch LSTMCell"),
             ("metarl LSTM", "torch LSTM"), ("metarl LSTM numba", "torch LSTM")]
    print(markdown_table(COLUMNS, rows, pairs))
    if args.train:
        print("\n### Sequence forward + backward, microseconds per step\n")
        print(markdown_table(TRAIN_COLUMNS, rows, [TRAIN_COLUMNS]))
    errors = sorted({f"{c}: {r['error']}" for row in rows for c, r in row["results"].items() if "error" in r})
    if errors:
        print("\nNot measured — " + "; ".join(errors))
    print(f"\nfloor = 2 B 4H (I + H) FLOPs per step / {rate / 1e9:.0f} GFLOP/s. Total time {elapsed:.0f} s; "
          f"1-minute load average {info['load_average_before'][0]:.1f} before, "
          f"{info['load_average_after'][0]:.1f} after.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"lstm-{info['hostname']}-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "lstm", "date": stamp, "machine": info, "gemm_flops": rate,
                                "input_size": INPUT_SIZE, "steps": args.steps, "seconds": args.seconds,
                                "repeats": REPEATS, "elapsed_s": elapsed, "rows": rows}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
