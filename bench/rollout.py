"""Rollout benchmark: a recurrent actor-critic collecting CartPole-v1 experience, metarl
against what a user writes today, side by side in one run (issue 4).

What is measured
    Env-steps per second (N x T / seconds) of collecting T steps from N envs with an
    LSTM policy (H = 64 by default) that samples its actions:

    * ``metarl fused``: ``metarl.rollout.collect`` on its fused path — env step + policy step
      for all T steps in one kernel launch (one Numba call with BLAS GEMMs on the CPU, one
      Triton launch on a GPU);
    * ``metarl loop``: ``collect(..., fused=False)`` — metarl's CartPole kernel and the fused
      ``RecurrentActorCritic.step`` alternating in Python (the general path);
    * ``user loop``: gymnasium's native vector CartPole (NumPy) + ``torch.nn.LSTMCell`` +
      ``nn.Linear`` heads + ``torch.distributions.Categorical`` sampling, in a loop, storing
      the same tensors (on ``--device cuda`` the policy runs on the GPU, the envs on the CPU:
      what a user writes today).

    Each column runs in its own process; best of 3 timed collections after one warm-up.
    ``floor``: the env-steps/s at which the gate GEMM alone (2·N·(X+H)·4H FLOPs per step)
    runs at the GEMM rate measured in the same process (``torch.mm`` of those shapes).

Usage::

    python bench/rollout.py [--envs 64,1024] [--steps 128] [--hidden 64] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _metarl(n: int, steps: int, hidden: int, device: str, fused: bool) -> float:
    import gymnasium as gym
    import torch

    import metarl
    from metarl.nn import RecurrentActorCritic
    from metarl.rollout import collect

    env = metarl.make_vec("CartPole-v1", n, seed=0, autoreset_mode="same_step", device=device)
    policy = RecurrentActorCritic(4, gym.spaces.Discrete(2), hidden, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    ro = collect(env, policy, steps, seed=0, generator=g, fused=fused)
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        ro = collect(env, policy, steps, carry=ro.carry, generator=g, fused=fused)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return n * steps / best


def metarl_fused(n, steps, hidden, device):
    return _metarl(n, steps, hidden, device, True)


def metarl_loop(n, steps, hidden, device):
    return _metarl(n, steps, hidden, device, False)


def gemm_floor(n: int, steps: int, hidden: int, device: str) -> float:
    """Env-steps/s if each step cost only its gate GEMM at the measured rate."""
    import torch

    x = torch.randn(n, 4 + hidden, device=device)
    w = torch.randn(4 + hidden, 4 * hidden, device=device)
    for _ in range(3):
        torch.mm(x, w)
    _sync(device)
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(x, w)
    _sync(device)
    return n * reps / (time.perf_counter() - t0)


def user_loop(n: int, steps: int, hidden: int, device: str) -> float:
    import gymnasium as gym
    import torch

    env = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
    kw = {"device": device}
    cell = torch.nn.LSTMCell(4, hidden, **kw)
    pi, vf = torch.nn.Linear(hidden, 2, **kw), torch.nn.Linear(hidden, 1, **kw)
    obs_np, _ = env.reset(seed=0)
    h = c = torch.zeros(n, hidden, **kw)
    done = torch.zeros(n, dtype=torch.bool, **kw)

    @torch.no_grad()
    def run():
        nonlocal obs_np, h, c, done
        buf = {k: torch.zeros(steps, n, **kw) for k in ("logp", "value", "reward")}
        obs_buf = torch.zeros(steps, n, 4, **kw)
        act_buf = torch.zeros(steps, n, dtype=torch.int64, **kw)
        for t in range(steps):
            obs = torch.from_numpy(obs_np).to(device)
            keep = (~done).float()[:, None]
            h, c = cell(obs, (h * keep, c * keep))
            dist = torch.distributions.Categorical(logits=pi(h))
            action = dist.sample()
            obs_buf[t], act_buf[t] = obs, action
            buf["logp"][t], buf["value"][t] = dist.log_prob(action), vf(h)[:, 0]
            obs_np, reward, term, trunc, _ = env.step(action.cpu().numpy())
            buf["reward"][t] = torch.from_numpy(reward).to(device)
            done = torch.from_numpy(term | trunc).to(device)

    run()
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return n * steps / best


COLUMNS = {"metarl fused": metarl_fused, "metarl loop": metarl_loop, "user loop": user_loop, "floor": gemm_floor}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default="64,1024")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        col, n, steps, hidden, device = json.loads(args.worker)
        print(json.dumps(COLUMNS[col](n, steps, hidden, device)))
        return
    sizes = [int(x) for x in args.envs.split(",")]
    print(f"# Rollout benchmark — CartPole-v1, LSTM H = {args.hidden}, T = {args.steps}, {args.device}; "
          "env-steps/s\n")
    print("| N | metarl fused | metarl loop | user loop | fused / user | fused / loop | GEMM floor | fused / floor |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for n in sizes:
        rates = {}
        for col in COLUMNS:
            out = subprocess.run([sys.executable, __file__, "--worker",
                                  json.dumps([col, n, args.steps, args.hidden, args.device])],
                                 capture_output=True, text=True, check=True)
            rates[col] = json.loads(out.stdout.strip().splitlines()[-1])
        fused, loop, user, floor = (rates[c] for c in COLUMNS)
        print(f"| {n} | {fused:.3g} | {loop:.3g} | {user:.3g} | {fused / user:.2f}x | {fused / loop:.2f}x | "
              f"{floor:.3g} | {fused / floor:.0%} |", flush=True)
        results.append({"n": n, **rates})
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"rollout_{args.device}.json").write_text(json.dumps(
        {"steps": args.steps, "hidden": args.hidden, "device": args.device, "results": results}, indent=1))


if __name__ == "__main__":
    main()
