"""Episodic control against DQN: MFEC and NEC (metarl) and Stable-Baselines3's DQN, same env-step budget.

For each env (CartPole-v1, Acrobot-v1) and seed, every learner trains for the same number of env
steps; the learning curve is the mean return of the last 10 finished training episodes against
env steps (SB3: its Monitor's episodes; metarl: every env copy's episodes, counted in env steps
of all copies together). Reported:

- env steps until that curve first reaches 150 (CartPole; "-" = not within the budget);
- the mean of the last 20 training episodes, and a greedy evaluation of the final policy on the
  same 100 episodes for every learner (metarl's batched env, the same dynamics as gymnasium's,
  seeded 12345; DQN acts on its Q-network's argmax there);
- wall-clock seconds (one thread each; a loaded machine stretches them — compare the env steps).

Every run is its own subprocess (one thread: ``OMP_NUM_THREADS=NUMBA_NUM_THREADS=1``, idle OpenMP workers
passive), so no learner sees another's process state and each result is what
``metarl train mfec|nec --env ... --seed ...`` gives on its own.

DQN uses rl-baselines3-zoo's tuned hyperparameters for each env (hyperparams/dqn.yml), with the
exploration schedule kept at the zoo's length in env steps (8k CartPole, 12k Acrobot) when the
budget differs from the zoo's ``n_timesteps``. A missing stable_baselines3 is reported, not faked.

    python bench/episodic.py                       # 3 seeds, CartPole 30k and Acrobot 20k env steps
    python bench/episodic.py --seeds 0 --cartpole-steps 20000 --acrobot-steps 10000   # quick look
    python bench/episodic.py --from-json bench/results/episodic-<host>-<stamp>.json    # table and plot again

Writes ``bench/results/episodic-<hostname>-<timestamp>.json`` and the plot ``bench/results/episodic.png``.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarl.algos import mfec, nec  # noqa: E402
from metarl.algos.episodic import evaluate_returns, steps_to_reach  # noqa: E402
from metarl.algos.pg import mean_se  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLD = 150.0
WINDOW = 10            # episodes in the moving average of the learning curve
EVAL_EPISODES = 100
EVAL_SEED = 12345

# rl-baselines3-zoo hyperparams/dqn.yml (tuned); "explore_steps" = exploration_fraction * n_timesteps there
DQN_ZOO = {
    "CartPole-v1": dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                        target_update_interval=10, train_freq=256, gradient_steps=128, exploration_final_eps=0.04,
                        policy_kwargs=dict(net_arch=[256, 256]), explore_steps=0.16 * 5e4),
    "Acrobot-v1": dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
                       target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_final_eps=0.1,
                       policy_kwargs=dict(net_arch=[256, 256]), explore_steps=0.12 * 1e5),
}


def run_metarl(name: str, env_id: str, steps: int, seed: int) -> dict:
    mod, cls = {"MFEC": (mfec, mfec.MFECConfig), "NEC": (nec, nec.NECConfig)}[name]
    cfg = cls(env=env_id, total_env_steps=steps, seed=seed, eval_episodes=EVAL_EPISODES)
    start = time.perf_counter()
    s = mod.train(cfg, run_dir=None, progress=False)
    return {"seconds": time.perf_counter() - start, "end_steps": s["episode_end_steps"],
            "returns": s["episode_returns"], "eval": list(s["eval"][name.lower()])}


def run_dqn(env_id: str, steps: int, seed: int) -> dict:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.monitor import Monitor

    hp = dict(DQN_ZOO[env_id])
    hp["exploration_fraction"] = min(1.0, hp.pop("explore_steps") / steps)
    env = Monitor(gym.make(env_id))
    model = DQN("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **hp)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    lengths = env.get_episode_lengths()
    end_steps = [int(x) for x in torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()] if lengths else []
    q_net = model.policy.q_net
    cfg = types.SimpleNamespace(env=env_id, device="cpu", seed=seed, num_envs=EVAL_EPISODES)
    rets = evaluate_returns(lambda obs: q_net(obs), cfg, EVAL_EPISODES, EVAL_SEED)
    return {"seconds": seconds, "end_steps": end_steps, "returns": [float(r) for r in env.get_episode_rewards()],
            "eval": list(mean_se(rets))}


def run_isolated(name: str, env_id: str, steps: int, seed: int) -> dict:
    """One run in a fresh Python process (``--worker``); its result comes back as the last stdout line."""
    cmd = [sys.executable, __file__, "--worker", name, env_id, str(steps), str(seed)]
    # one thread everywhere, and idle OpenMP workers sleep: spinning pools (Numba's, torch's) on a shared
    # 2-core machine stretched single runs by 10x and more
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {env_id} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def curve(end_steps, returns, grid):
    """Moving average (last WINDOW episodes) of the returns, read at each grid point (NaN before WINDOW episodes)."""
    out, i, acc = [], 0, []
    for x in grid:
        while i < len(end_steps) and end_steps[i] <= x:
            acc.append(returns[i])
            i += 1
        out.append(sum(acc[-WINDOW:]) / WINDOW if len(acc) >= WINDOW else math.nan)
    return out


def plot(results: dict, budgets: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    colors = {"MFEC": "tab:blue", "NEC": "tab:orange", "DQN (SB3)": "tab:gray"}
    for ax, (env_id, learners) in zip(axes[0], results.items()):
        grid = torch.linspace(0, budgets[env_id], 201).tolist()
        for name, runs in learners.items():
            curves = torch.tensor([curve(r["end_steps"], r["returns"], grid) for r in runs])
            mean = curves.mean(0)                  # NaN until every seed has finished 10 episodes
            lo, hi = curves.min(0).values, curves.max(0).values
            ax.plot(grid, mean, label=f"{name} ({len(runs)} seeds)", color=colors.get(name))
            ax.fill_between(grid, lo, hi, color=colors.get(name), alpha=0.15)
        if env_id.startswith("CartPole"):
            ax.axhline(THRESHOLD, ls="--", lw=1, color="k")
        ax.set_title(f"{env_id}: mean return of the last {WINDOW} training episodes")
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.legend(loc="lower right" if env_id.startswith("CartPole") else "upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def fmt_steps(xs) -> str:
    return ", ".join("-" if x is None else f"{x / 1000:.1f}k" for x in xs)


def print_table(results: dict, budgets: dict, num_seeds: int) -> None:
    print(f"\n### Episodic control vs DQN (same env-step budget; {num_seeds} seeds; "
          f"{platform.processor() or platform.machine()}, 1 thread)\n")
    print("| env | budget | learner | env steps to mean return 150 (per seed) | mean | "
          "last 20 training episodes | greedy eval (100 episodes) | wall s / run |")
    print("|---|---|---|---|---|---|---|---|")
    for env_id, learners in results.items():
        for label, runs in learners.items():
            reach = [r["steps_to_150"] for r in runs]
            got = [x for x in reach if x is not None]
            mean_reach = (f"{sum(got) / len(got) / 1000:.1f}k" + ("" if len(got) == len(reach) else
                          f" ({len(got)}/{len(reach)} reached)")) if got else "not reached"
            if not env_id.startswith("CartPole"):
                reach_cells = "n/a | n/a"
            else:
                reach_cells = f"{fmt_steps(reach)} | {mean_reach}"
            last = torch.tensor([r["last20"] for r in runs])
            ev = torch.tensor([r["eval"][0] for r in runs])
            secs = sum(r["seconds"] for r in runs) / len(runs)
            print(f"| {env_id} | {budgets[env_id] / 1000:g}k | {label} | {reach_cells} | "
                  f"{last.mean():.1f} (seeds {', '.join(f'{x:.0f}' for x in last)}) | "
                  f"{ev.mean():.1f} (seeds {', '.join(f'{x:.0f}' for x in ev)}) | {secs:.0f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cartpole-steps", type=int, default=30_000)
    p.add_argument("--acrobot-steps", type=int, default=20_000)
    p.add_argument("--learners", nargs="+", default=["MFEC", "NEC", "DQN"])
    p.add_argument("--plot", default=str(RESULTS / "episodic.png"), help="PNG of the learning curves")
    p.add_argument("--from-json", metavar="JSON", help="print the table and redraw the plot of a saved run")
    p.add_argument("--worker", nargs=4, metavar=("LEARNER", "ENV", "STEPS", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.worker:
        name, env_id, steps, seed = args.worker
        run = run_dqn if name == "DQN" else functools.partial(run_metarl, name)
        print(json.dumps(run(env_id, int(steps), int(seed))))
        return 0
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print_table(saved["results"], saved["budgets"], len(saved["seeds"]))
        plot(saved["results"], saved["budgets"], Path(args.plot))
        print(f"\nwrote {args.plot}")
        return 0
    try:
        import stable_baselines3
        sb3 = stable_baselines3.__version__
    except ImportError:
        sb3 = None
        print("stable_baselines3 is not installed: the DQN peer is left out (pip install -e .[bench])")
    load_before = os.getloadavg()
    start = time.perf_counter()
    budgets = {"CartPole-v1": args.cartpole_steps, "Acrobot-v1": args.acrobot_steps}
    budgets = {k: v for k, v in budgets.items() if v > 0}
    results: dict = {}
    for env_id, steps in budgets.items():
        results[env_id] = {}
        for name in args.learners:
            if name == "DQN" and sb3 is None:
                continue
            label = "DQN (SB3)" if name == "DQN" else name
            runs = []
            for seed in args.seeds:
                r = run_isolated(name, env_id, steps, seed)
                r["seed"] = seed
                r["steps_to_150"] = steps_to_reach(r["end_steps"], r["returns"], THRESHOLD, WINDOW)
                tail = r["returns"][-20:]
                r["last20"] = sum(tail) / len(tail) if tail else math.nan
                runs.append(r)
                print(f"{env_id:12s} {label:10s} seed {seed}: {r['seconds']:6.1f} s, steps to {THRESHOLD:.0f}: "
                      f"{fmt_steps([r['steps_to_150']])}, last 20 episodes {r['last20']:.1f}, "
                      f"greedy eval {r['eval'][0]:.1f} ± {r['eval'][1]:.1f}", flush=True)
            results[env_id][label] = runs

    print_table(results, budgets, len(args.seeds))
    elapsed, load_after = time.perf_counter() - start, os.getloadavg()
    print(f"\nTotal {elapsed / 60:.1f} min; 1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
          f"after ({os.cpu_count()} CPUs; wall times stretch with load, env steps do not).")
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"episodic-{platform.node()}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    out = {"budgets": budgets, "seeds": args.seeds, "threshold": THRESHOLD, "window": WINDOW,
           "stable_baselines3": sb3, "torch": torch.__version__,
           "elapsed_s": elapsed, "load_average_before": load_before, "load_average_after": load_after,
           "results": results}
    json_path.write_text(json.dumps(out))
    plot(results, budgets, Path(args.plot))
    print(f"\nwrote {json_path} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
