"""Rollout benchmark: a recurrent actor-critic collecting CartPole-v1 experience, metarl
against what a user writes today, side by side in one run (issue 4).

What is measured
    Env-steps per second (N x T / seconds) of collecting T steps from N envs with an
    LSTM policy (H = 64 by default) that samples its actions:

    * ``metarl collect``: ``metarl.rollout.collect`` — metarl's CartPole kernel
      (``same_step`` autoreset) and the fused ``RecurrentActorCritic.step`` alternating in
      Python (the general path; the one-launch fused rollout is not written yet);
    * ``user loop``: gymnasium's native vector CartPole (NumPy) + ``torch.nn.LSTMCell`` +
      ``nn.Linear`` heads + ``torch.distributions.Categorical`` sampling, in a loop, storing
      the same tensors.

    Each column runs in its own process; best of 3 timed collections after one warm-up.

Usage::

    python bench/rollout.py [--envs 64,1024] [--steps 128] [--hidden 64]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def metarl_collect(n: int, steps: int, hidden: int) -> float:
    import gymnasium as gym
    import torch

    import metarl
    from metarl.nn import RecurrentActorCritic
    from metarl.rollout import collect

    env = metarl.make_vec("CartPole-v1", n, seed=0, autoreset_mode="same_step")
    policy = RecurrentActorCritic(4, gym.spaces.Discrete(2), hidden)
    g = torch.Generator().manual_seed(0)
    ro = collect(env, policy, steps, seed=0, generator=g)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        ro = collect(env, policy, steps, carry=ro.carry, generator=g)
        best = min(best, time.perf_counter() - t0)
    return n * steps / best


def user_loop(n: int, steps: int, hidden: int) -> float:
    import gymnasium as gym
    import torch

    env = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
    cell, pi, vf = torch.nn.LSTMCell(4, hidden), torch.nn.Linear(hidden, 2), torch.nn.Linear(hidden, 1)
    obs_np, _ = env.reset(seed=0)
    h = c = torch.zeros(n, hidden)
    done = torch.zeros(n, dtype=torch.bool)

    @torch.no_grad()
    def run():
        nonlocal obs_np, h, c, done
        buf = {k: torch.zeros(steps, n) for k in ("logp", "value", "reward")}
        obs_buf = torch.zeros(steps, n, 4)
        act_buf = torch.zeros(steps, n, dtype=torch.int64)
        for t in range(steps):
            obs = torch.from_numpy(obs_np)
            keep = (~done).float()[:, None]
            h, c = cell(obs, (h * keep, c * keep))
            dist = torch.distributions.Categorical(logits=pi(h))
            action = dist.sample()
            obs_buf[t], act_buf[t] = obs, action
            buf["logp"][t], buf["value"][t] = dist.log_prob(action), vf(h)[:, 0]
            obs_np, reward, term, trunc, _ = env.step(action.numpy())
            buf["reward"][t] = torch.from_numpy(reward)
            done = torch.from_numpy(term | trunc)

    run()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return n * steps / best


COLUMNS = {"metarl collect": metarl_collect, "user loop": user_loop}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default="64,1024")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        col, n, steps, hidden = json.loads(args.worker)
        print(json.dumps(COLUMNS[col](n, steps, hidden)))
        return
    sizes = [int(x) for x in args.envs.split(",")]
    print(f"# Rollout benchmark — CartPole-v1, LSTM H = {args.hidden}, T = {args.steps}; env-steps/s\n")
    print("| N | metarl collect | user loop | ratio |\n|---:|---:|---:|---:|")
    for n in sizes:
        rates = {}
        for col in COLUMNS:
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps([col, n, args.steps, args.hidden])],
                                 capture_output=True, text=True, check=True)
            rates[col] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {n} | {rates['metarl collect']:.3g} | {rates['user loop']:.3g} | "
              f"{rates['metarl collect'] / rates['user loop']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
