"""Meta-batch throughput of MAML's inner loop: all tasks at once (``torch.func.vmap``) against a
per-task Python loop of the same math, side by side in one run.

What is measured
    Meta-iterations per second on the MAML paper's sine-wave regression (MLP 1-40-40-1 ReLU,
    K = 10 support and 10 query points per task, one inner SGD step with lr 0.01, second-order
    gradients, Adam outer step) for a meta-batch of B tasks. One meta-iteration = the inner step
    of every task + the query losses + the backward pass to the meta-parameters + the Adam step.

    * ``vmap``: :func:`metarl.algos.inner.inner_loop` (``vmap`` over tasks of ``grad``);
    * ``loop``: :func:`metarl.algos.inner.inner_loop_reference` (a Python loop over tasks with
      ``torch.autograd.grad``, the same math, the tests' oracle);
    * ``clone/adapt``: the learn2learn-shaped wrapper :class:`metarl.algos.inner.MAML` used as
      learn2learn's docs show (``learner = maml.clone(); learner.adapt(loss)`` per task).
      learn2learn itself (0.2.0, sdist with Cython parts) does not build on this Python 3.11 /
      torch 2.13 machine, so it is not a column.

How
    The columns alternate within each repeat (so a load change hits all of them); each value is
    the best of ``--repeats`` timed blocks of about ``--seconds``. The fresh tasks of every
    iteration are drawn before timing.

Usage::

    python bench/maml_meta_batch.py                       # B in {20, 100, 1000}
    python bench/maml_meta_batch.py --batches 100 --seconds 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from metarl.algos.inner import MAML, inner_loop, inner_loop_reference

SHOTS = 10
INNER_LR = 0.01
TARGET_SPEEDUP_B100 = 5.0


def sine_tasks(b: int, generator: torch.Generator):
    """``(x_support, y_support, x_query, y_query)``, each ``[B, SHOTS, 1]`` (amplitude U[0.1, 5],
    phase U[0, pi], x U[-5, 5], as in the MAML paper)."""
    amp = torch.rand(b, 1, 1, generator=generator) * 4.9 + 0.1
    phase = torch.rand(b, 1, 1, generator=generator) * math.pi
    xs = torch.rand(b, 2 * SHOTS, 1, generator=generator) * 10 - 5
    ys = amp * torch.sin(xs - phase)
    return xs[:, :SHOTS], ys[:, :SHOTS], xs[:, SHOTS:], ys[:, SHOTS:]


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def runner(kind: str, model: nn.Module):
    """A function ``(tasks) -> query loss`` that also takes the Adam step."""
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn(p, batch):
        x, y = batch
        return ((functional_call(model, p, (x,)) - y) ** 2).mean()

    if kind == "clone/adapt":
        maml = MAML(model, lr=INNER_LR)

        def step(tasks):
            xs, ys, xq, yq = tasks
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for i in range(xs.shape[0]):
                learner = maml.clone()
                learner.adapt(((learner(xs[i]) - ys[i]) ** 2).mean())
                loss = ((learner(xq[i]) - yq[i]) ** 2).mean() / xs.shape[0]
                loss.backward()
                total += float(loss)
            opt.step()
            return total
        return step

    inner = inner_loop if kind == "vmap" else inner_loop_reference

    def step(tasks):
        xs, ys, xq, yq = tasks
        opt.zero_grad(set_to_none=True)
        adapted = inner(loss_fn, params, [(xs, ys)], INNER_LR)
        pred = torch.func.vmap(lambda p, x: functional_call(model, p, (x,)))(adapted, xq)
        loss = ((pred - yq) ** 2).mean()
        loss.backward()
        opt.step()
        return float(loss)
    return step


def measure(b: int, seconds: float, repeats: int, kinds) -> dict:
    g = torch.Generator().manual_seed(b)
    pool = [sine_tasks(b, g) for _ in range(8)]
    steps = {k: runner(k, make_model()) for k in kinds}
    per_call = {}
    for k, step in steps.items():                      # warm-up (at least 0.5 s), then calibration
        t0, n = time.perf_counter(), 0
        while n < 2 or time.perf_counter() - t0 < 0.5:
            step(pool[n % len(pool)])
            n += 1
        t0 = time.perf_counter()
        step(pool[0])
        per_call[k] = time.perf_counter() - t0
    best = {k: 0.0 for k in kinds}
    for r in range(repeats):
        for k, step in steps.items():
            n = max(1, round(seconds / per_call[k]))
            t0 = time.perf_counter()
            for i in range(n):
                step(pool[(r + i) % len(pool)])
            best[k] = max(best[k], n / (time.perf_counter() - t0))
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="20,100,1000", help="comma-separated meta-batch sizes")
    p.add_argument("--seconds", type=float, default=1.0, help="per timed block")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "maml_meta_batch.json"))
    args = p.parse_args(argv)
    kinds = ("vmap", "loop", "clone/adapt")
    rows = []
    load0 = os.getloadavg()[0]
    measure(20, 0.5, 1, kinds)   # process warm-up: the first size measured ran 3-7x slow without it
    for b in (int(x) for x in args.batches.split(",")):
        res = measure(b, args.seconds, args.repeats, kinds)
        rows.append({"meta_batch": b, **res})
        print(f"B={b}: " + ", ".join(f"{k} {v:.2f} it/s" for k, v in res.items()), flush=True)
    print(f"\nMeta-iterations per second (sine regression, MLP 1-40-40-1, K = {SHOTS}, one second-order "
          f"inner step, Adam outer step); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, load {load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| meta-batch | vmap (it/s) | loop (it/s) | clone/adapt (it/s) | vmap / loop | vmap / clone-adapt |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['meta_batch']} | {r['vmap']:.2f} | {r['loop']:.2f} | {r['clone/adapt']:.2f} | "
              f"{r['vmap'] / r['loop']:.1f}x | {r['vmap'] / r['clone/adapt']:.1f}x |")
    hit = [r for r in rows if r["meta_batch"] == 100]
    if hit:
        ratio = hit[0]["vmap"] / hit[0]["loop"]
        print(f"\ntarget: vmap >= {TARGET_SPEEDUP_B100}x the per-task loop at 100 tasks: "
              f"{ratio:.1f}x -> {'met' if ratio >= TARGET_SPEEDUP_B100 else 'NOT met'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
