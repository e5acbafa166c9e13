"""MAESN's claim on sparse-reward goals (SemicircleGoal-v0): after meta-training, adapting to a new
goal with structured (latent, per-episode) exploration reaches the goal region more often than
MAML or a pretrained policy exploring with Gaussian action noise. Three seeds per method.

Methods (all meta-trained on the shaped reward ``-‖pos - goal‖``, adapted and evaluated on the
env's sparse reward, as in Gupta et al. 2018, §6):

- ``MAESN``: :func:`metarl.algos.maesn.train` (defaults), adapted at test time from N(0, I) by
  latent policy-gradient steps (:func:`metarl.algos.maesn.report`);
- ``MAML``: :func:`metarl.algos.maml.train` with ``train_reward="dense"``, first-order (the
  second-order TRPO step costs ~4× per update on this CPU), same MLP width, adapted with the
  VPG inner rule on the sparse reward;
- ``pretrained``: the same with ``inner_steps=0`` (one policy trained jointly on all goals),
  fine-tuned by the same inner rule: exploration is its Gaussian action noise;
- ``untrained MAESN``: MAESN's initial model adapted by the same latent rule (random exploration).

Reported: the fraction of test episodes that reach the goal region (reward > 0 at some step)
after 0..3 adaptation steps, on 40 held-out goals per seed, mean ± standard error over seeds.

    python bench/reproduce_maesn.py                    # 3 seeds (~4 min on one core)
    python bench/reproduce_maesn.py --methods maesn --maesn latent_gradient=score latent_init=normal \
        latent_init_log_sigma=0 inner_lr=1 kl_coef=0.5  # MAESN rows only, the authors' latent rule and init
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import parse_fields

from metarl.algos import maesn, maml

STEPS = (0, 1, 2, 3)


def run_maesn(seed: int, tasks: int, overrides: dict) -> tuple[dict, float]:
    cfg = maesn.MAESNConfig(**{**overrides, "seed": seed, "eval_tasks": 0})   # evaluated below, with the baselines
    t = time.perf_counter()
    s = maesn.train(cfg, progress=False)
    secs = time.perf_counter() - t
    rep = maesn.report(s["model"], cfg, tasks)
    return {"MAESN": rep["maesn"]["reached"], "untrained MAESN": rep["untrained"]["reached"]}, secs


def run_maml(seed: int, tasks: int, iterations: int, pretrained: bool) -> tuple[list, float]:
    cfg = maml.MAMLConfig(env="SemicircleGoal-v0", train_reward="dense", horizon=200, meta_batch=10,
                          trajectories_per_task=5, hidden_sizes=(64, 64), first_order=True, iterations=iterations,
                          inner_steps=0 if pretrained else 1, eval_tasks=0, seed=seed,
                          # as MAESN's evaluation: actions in the env's units, 5 episodes per step,
                          # the same step size at every step, nn.Linear's init (the table of session 3)
                          normalize_actions=False, eval_trajectories=0, eval_lr_scales=(1.0,),
                          policy_init="torch")
    t = time.perf_counter()
    s = maml.train(cfg, progress=False)
    secs = time.perf_counter() - t
    ev = maml.evaluate(s["policy"], cfg, tasks, STEPS, metric="reached")
    return [ev[k] for k in STEPS], secs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tasks", type=int, default=40, help="held-out goals per seed")
    p.add_argument("--maml-iterations", type=int, default=60, help="meta-updates (MAESN's default is 60)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", choices=("all", "maesn"), default="all",
                   help="'maesn': the MAESN rows only (no MAML / pretrained training)")
    p.add_argument("--maesn", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="MAESNConfig fields for the MAESN rows (default: the config's defaults)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "maesn.json"))
    args = p.parse_args(argv)
    overrides = parse_fields(args.maesn, "--maesn")
    try:   # a bad field or value fails here, before any training
        maesn.MAESNConfig(**overrides)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"--maesn: {e}") from None
    torch.set_num_threads(args.threads)
    methods = ("MAESN", "MAML", "pretrained", "untrained MAESN") if args.methods == "all" else (
        "MAESN", "untrained MAESN")
    results = {m: [] for m in methods}
    seconds = {m: [] for m in results}
    for seed in range(args.seeds):
        got, secs = run_maesn(seed, args.tasks, overrides)
        for m in ("MAESN", "untrained MAESN"):
            results[m].append(got[m])
        seconds["MAESN"].append(secs)
        for m, pre in (("MAML", False), ("pretrained", True)) if "MAML" in results else ():
            r, secs = run_maml(seed, args.tasks, args.maml_iterations, pre)
            results[m].append(r)
            seconds[m].append(secs)
        print(f"seed {seed}: " + "; ".join(f"{m} " + "/".join(f"{v:.2f}" for v in results[m][-1])
                                           for m in results), flush=True)

    def mean_se(vals):
        m = statistics.fmean(vals)
        se = statistics.stdev(vals) / len(vals) ** 0.5 if len(vals) > 1 else float("nan")
        return m, se

    print(f"\nSemicircleGoal-v0: fraction of episodes reaching the goal region after 0 / 1 / 2 / 3 adaptation "
          f"steps ({args.tasks} held-out goals per seed, mean ± s.e. over {args.seeds} seeds)\n")
    print("| method | 0 steps | 1 step | 2 steps | 3 steps | train s (per seed) |")
    print("|---|---:|---:|---:|---:|---:|")
    table = {}
    for m, runs in results.items():
        cells = [mean_se([r[k] for r in runs]) for k in range(len(STEPS))]
        table[m] = cells
        secs = statistics.fmean(seconds[m]) if seconds[m] else 0.0
        print(f"| {m} | " + " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in cells) + f" | {secs:.0f} |")
    final = {m: table[m][-1][0] for m in table}
    if "MAML" in final:
        best_other = max(final["MAML"], final["pretrained"])
        print(f"\nafter 3 steps: MAESN {final['MAESN']:.3f} vs best of MAML / pretrained {best_other:.3f} "
              f"({final['MAESN'] - best_other:+.3f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": results, "seconds": seconds, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
