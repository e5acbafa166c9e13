"""Episodic meta-RL vs RL^2 without memory on recurring contextual bandits
(:mod:`metarl.algos.episodic_rl2`): the first-pull reward on a task the lifetime has seen before
(the memory's effect) and on a new task (no memory can help there), per seed.

Both agents are the same network trained the same way; the baseline runs with an empty memory.
Chance for a first pull is the arms' mean reward probability (0.3 with 4 arms, 0.9 / 0.1).

    python bench/reproduce_episodic_rl2.py                 # 2 seeds, ~10 min per run on a loaded core
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from metarl.algos.episodic_rl2 import EpisodicRL2Config, train

KEYS = ("first pull, recurring task", "first pull, new task", "reward per pull")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=None, help="default: the config's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "episodic_rl2.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"episodic (memory)": [], "RL^2 (no memory)": []}
    secs = {k: [] for k in res}
    for seed in range(args.seeds):
        for name, memory in (("episodic (memory)", True), ("RL^2 (no memory)", False)):
            kw = {} if args.iterations is None else {"iterations": args.iterations}
            cfg = EpisodicRL2Config(seed=seed, memory=memory, **kw)
            s = train(cfg, progress=False)
            res[name].append({k: s["eval"][k] for k in KEYS})
            secs[name].append(s["train_seconds"])
            print(f"seed {seed} {name}: " + ", ".join(f"{k} {s['eval'][k][0]:.3f} ± {s['eval'][k][1]:.3f}"
                                                      for k in KEYS), flush=True)
    cfg = EpisodicRL2Config()
    print(f"\nRecurring contextual bandits ({cfg.arms} arms, p {cfg.p_good} / {cfg.p_bad}, {cfg.tasks_per_lifetime} "
          f"tasks per lifetime, {cfg.trials_per_lifetime} trials of {cfg.pulls_per_trial} pulls), "
          f"{cfg.eval_lifetimes} held-out lifetimes per seed; mean over {args.seeds} seeds (each seed's s.e. "
          f"in the JSON)\n")
    print("| agent | first pull, recurring task | first pull, new task | reward per pull | train s |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in res.items():
        cells = [statistics.fmean(r[k][0] for r in runs) for k in KEYS]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {statistics.fmean(secs[name]):.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": res, "seconds": secs}, indent=1))


if __name__ == "__main__":
    main()
