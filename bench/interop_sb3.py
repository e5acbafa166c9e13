"""Stable-Baselines3's PPO on metarl's CartPole against SB3 on gymnasium's CartPole, end to end (issue 21).

What is measured
    Env-steps per second of ``PPO("MlpPolicy", env).learn(...)`` (SB3's own training loop: policy forward,
    env step, rollout buffer, GAE, the PPO update) with N copies of CartPole-v1, one column per env:

    * ``metarl``: ``VecMonitor(metarl.integrations.sb3.VecEnv(metarl.make_vec("CartPole-v1", N,
      autoreset_mode="same_step")))``: all copies in one kernel call;
    * ``DummyVecEnv``: ``make_vec_env("CartPole-v1", N)``, what SB3's documentation has a user write
      (N gymnasium envs, each in a ``Monitor``, stepped in a Python loop by SB3's ``DummyVecEnv``);
    * ``gym sync``: ``VecMonitor(VecEnv(gymnasium.make_vec("CartPole-v1", N, vectorization_mode="sync",
      autoreset_mode=same_step)))``: gymnasium's own ``SyncVectorEnv`` through the same adapter;
    * ``zero env``: a ``VecEnv`` whose step returns preallocated arrays and never ends an episode: SB3's cost
      outside the env (the floor: what any env, however fast, leaves).

    Per column: ``end-to-end`` (all of ``learn``) and ``rollout`` (the collection phase only: ``learn`` minus
    the time in ``PPO.train``), steps/s; best of ``--repeats`` timed ``learn`` calls after one warm-up
    iteration, each column in its own process, everything on one thread (``metarl.threads.limit_threads(1)``;
    SB3's MLP is too small for a second thread to pay on a shared 2-core machine).

    PPO settings: SB3's defaults except ``n_steps`` (``--rollout`` env steps per iteration, split over the N
    copies), ``batch_size`` (``--minibatches`` per epoch) and ``n_epochs``; the defaults (4 minibatches, 4
    epochs) are the rl-zoo's order for CartPole. The update's cost per sample does not depend on the env, so
    the end-to-end ratio falls towards 1 as ``--epochs`` grows: the rollout columns show the env's share.

Usage::

    python bench/interop_sb3.py [--envs 64,1024] [--rollout 8192] [--iterations 3] [--epochs 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine_info, warn_if_loaded

COLUMNS = ("metarl", "DummyVecEnv", "gym sync", "zero env")


def make_env(column: str, n: int):
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecEnv as SB3VecEnv
    from stable_baselines3.common.vec_env import VecMonitor

    import metarl
    from metarl.integrations.sb3 import VecEnv

    if column == "metarl":
        return VecMonitor(VecEnv(metarl.make_vec("CartPole-v1", n, seed=0, autoreset_mode="same_step")))
    if column == "DummyVecEnv":
        return make_vec_env("CartPole-v1", n, seed=0)
    if column == "gym sync":
        return VecMonitor(VecEnv(gym.make_vec("CartPole-v1", n, vectorization_mode="sync",
                                              vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})))
    reference = gym.make("CartPole-v1")

    class ZeroEnv(SB3VecEnv):
        """Returns the same preallocated arrays every step; no episode ever ends."""

        def __init__(self):
            self.obs = np.zeros((n, 4), dtype=np.float32)
            self.rew = np.ones(n, dtype=np.float32)
            self.done = np.zeros(n, dtype=bool)
            self.infos = [{} for _ in range(n)]
            super().__init__(n, reference.observation_space, reference.action_space)

        def reset(self):
            return self.obs

        def step_async(self, actions):
            pass

        def step_wait(self):
            return self.obs, self.rew, self.done, self.infos

        def get_attr(self, attr_name, indices=None):
            return [None] * n if attr_name == "render_mode" else [getattr(reference, attr_name)] * n

        def close(self):
            pass

        def set_attr(self, attr_name, value, indices=None):
            raise NotImplementedError

        def env_method(self, method_name, *args, indices=None, **kwargs):
            raise NotImplementedError

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * n

    return ZeroEnv()


def worker(column: str, n: int, rollout: int, iterations: int, epochs: int, minibatches: int, repeats: int) -> dict:
    from stable_baselines3 import PPO

    from metarl.threads import limit_threads

    env = make_env(column, n)
    limit_threads(1)   # after the env: starting Numba's pool resets torch's thread count
    n_steps = max(1, rollout // n)
    model = PPO("MlpPolicy", env, n_steps=n_steps, batch_size=n_steps * n // minibatches, n_epochs=epochs,
                seed=0, device="cpu")
    in_train = [0.0]
    train = model.train

    def timed_train():
        t0 = time.perf_counter()
        train()
        in_train[0] += time.perf_counter() - t0

    model.train = timed_train
    model.learn(n_steps * n)   # warm-up: one iteration
    best_total, best_rollout = 0.0, 0.0
    steps = n_steps * n * iterations
    for _ in range(repeats):
        in_train[0] = 0.0
        t0 = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        total = time.perf_counter() - t0
        best_total = max(best_total, steps / total)
        best_rollout = max(best_rollout, steps / (total - in_train[0]))
    return {"end_to_end": best_total, "rollout": best_rollout, "n_steps": n_steps}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default="64,1024", help="comma-separated N")
    parser.add_argument("--rollout", type=int, default=8192, help="env steps per PPO iteration (n_steps x N)")
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations per timed learn() call")
    parser.add_argument("--epochs", type=int, default=4, help="PPO n_epochs")
    parser.add_argument("--minibatches", type=int, default=4,
                        help="minibatches per epoch (batch_size = rollout / this)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return
    warn_if_loaded(os.getloadavg())
    sizes = [int(x) for x in args.envs.split(",")]
    print(f"# SB3 PPO on CartPole-v1, end to end — {args.rollout} env steps per iteration, n_epochs {args.epochs}, "
          f"{args.minibatches} minibatches, 1 thread; env-steps/s (end-to-end / rollout phase)\n")
    print("| N | metarl | DummyVecEnv | gym sync | zero env (floor) | metarl / DummyVecEnv | metarl / gym sync | "
          "metarl / floor |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for n in sizes:
        rates = {}
        for col in COLUMNS:
            cmd = [sys.executable, __file__, "--worker",
                   json.dumps([col, n, args.rollout, args.iterations, args.epochs, args.minibatches, args.repeats])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rates[col] = json.loads(out.stdout.strip().splitlines()[-1])

        def cell(c, rates=rates):
            return f"{rates[c]['end_to_end']:.3g} / {rates[c]['rollout']:.3g}"

        def ratio(a, b, rates=rates):
            return (f"{rates[a]['end_to_end'] / rates[b]['end_to_end']:.2f}x / "
                    f"{rates[a]['rollout'] / rates[b]['rollout']:.2f}x")

        print(f"| {n} | {cell('metarl')} | {cell('DummyVecEnv')} | {cell('gym sync')} | {cell('zero env')} | "
              f"{ratio('metarl', 'DummyVecEnv')} | {ratio('metarl', 'gym sync')} | "
              f"{rates['metarl']['end_to_end'] / rates['zero env']['end_to_end']:.0%} / "
              f"{rates['metarl']['rollout'] / rates['zero env']['rollout']:.0%} |", flush=True)
        results.append({"n": n, **rates})
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "interop_sb3.json").write_text(json.dumps(
        {"args": vars(args), "machine": machine_info(modules=("torch", "numba", "stable_baselines3", "gymnasium")),
         "load_before": os.getloadavg(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
