"""Training-loop benchmark: RL^2 (collect + PPO update) in metarl against sb3-contrib's
``RecurrentPPO``, side by side in one run, same machine, same task distribution and sizes.

What is measured
    Env-steps per second of the whole training loop (N x T env-steps per update over the
    seconds one update takes: collecting T steps from N envs, then the PPO update on them) on
    meta-RL bandits: ``Bandit-v0`` with k arms (5), trials of n pulls (10), through metarl's
    :class:`~metarl.envs.TrialWrapper`, so every column sees the same RL^2 observations
    ``[obs, one_hot(prev_action), prev_reward, prev_done]`` and the same task distribution.

    * ``metarl fused``: :func:`metarl.rollout.collect` on its fused path (env + policy for
      the whole rollout in one Numba call with BLAS GEMMs; one Triton launch per trial segment
      on ``--device cuda``) + :func:`metarl.algos.rl2.ppo_update` -- the pieces of
      :func:`metarl.algos.rl2.train`, without its logging and checkpointing;
    * ``metarl unfused``: the same with ``collect(..., fused=False)`` (the env's step and the
      policy's fused step alternate in Python) + the same ``ppo_update``;
    * ``metarl autograd``: the fused collection + ``ppo_update(..., fused=False)``: each minibatch's
      gradients by autograd through ``RecurrentActorCritic.evaluate`` (torch's fused LSTM) instead of
      the hand-written LSTM + heads backward (:mod:`metarl.kernels.lstm_ppo`);
    * ``RecurrentPPO``: sb3-contrib's ``RecurrentPPO("MlpLstmPolicy")`` on the same envs,
      ``metarl.envs.to_numpy(TrialWrapper(...))`` under a minimal SB3 ``VecEnv`` adapter
      (defined here; SB3 has none for gymnasium vector envs) whose ``done`` is the trial end,
      so RecurrentPPO resets its LSTM and cuts GAE exactly where RL^2 does. Its ``learn`` is
      timed, one update per call (``reset_num_timesteps=False``: the env is not reset).

Matched settings
    LSTM hidden 64, one layer, one LSTM shared by actor and critic (RecurrentPPO:
    ``shared_lstm=True, enable_critic_lstm=False``), linear policy and value heads on the LSTM
    output (``net_arch=[]``); N envs; rollout length T (default 10 = one trial, metarl's
    default for bandits); 4 epochs; 4 minibatches per epoch (RecurrentPPO:
    ``batch_size = N*T/4``); Adam lr 3e-3; gamma 0.99; GAE lambda 0.3; clip 0.2; entropy
    coefficient 0.003; value coefficient 0.5; grad-norm clip 1.0; per-minibatch advantage
    normalisation; float32; same device for the policy (``--device``).

Settings that differ (the APIs do not allow matching them)
    * RecurrentPPO's shared LSTM gets no gradient from the value loss (its critic reads
      ``latent_pi.detach()``); metarl backpropagates both losses into the LSTM. RecurrentPPO
      thus does slightly less backward work.
    * Minibatches: metarl splits the envs (each minibatch holds whole length-T sequences of N/4
      envs); RecurrentPPO slices N*T/4 consecutive steps from a randomly rotated flat buffer and
      pads the sequence pieces it cuts.
    * RecurrentPPO value-clips nothing (``clip_range_vf=None``, as metarl) but keeps the
      entropy coefficient fixed; metarl's anneals (irrelevant to speed).
    * RecurrentPPO's env runs on the CPU (to_numpy), its policy on ``--device``; metarl keeps
      env and policy on ``--device``.

How
    Each column runs in its own Python process, all sizes in turn. Per size: one warm-up
    update (compiles, allocates; a column whose warm-up update takes > 60 s is skipped with a
    note), then ``REPEATS`` timed repeats of ``k`` updates, ``k`` chosen so a repeat lasts
    about ``--seconds / REPEATS`` (at least one update: for slow columns such as RecurrentPPO
    at N = 1024 this is 3 single updates after one warm-up); the best repeat gives the rate.
    The JSON keeps all repeats and the load average before and after.

Physical floor
    FLOPs per env-step ``(1 + 3 * epochs) * 2*(X+H)*4H`` -- the gate GEMM once while
    collecting, then forward + backward (~3x the forward) per epoch; X = RL^2 input size --
    over the fp32 GEMM rate measured in this run (``torch.mm`` 2048 x 2048, all threads).
    Heads, pointwise work and the optimiser are not counted; at these small shapes real GEMMs
    run far below the 2048^2 rate, so this floor is not reachable -- it bounds, it does not
    predict.

Usage::

    python bench/train.py                                  # N in {8, 64, 1024}, T = 10
    python bench/train.py --envs 8,64 --steps 128 --seconds 4
    python bench/train.py --device cuda                    # metarl on the GPU (untested)

Prints a Markdown table with the ratios metarl fused / RecurrentPPO and metarl fused / metarl
unfused and writes JSON to ``bench/results/train-<hostname>-<timestamp>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import gemm_rate, machine_info, warn_if_loaded

ENVS = (8, 64, 1024)
ARMS = 5
PULLS = 10                      # episodes (pulls) per trial
HIDDEN = 64
STEPS = 10                      # rollout length: one trial
EPOCHS = 4
MINIBATCHES = 4
REPEATS = 3
MAX_UPDATE_S = 60.0             # skip a column whose warm-up update takes longer
COLUMNS = ("metarl fused", "metarl unfused", "metarl autograd", "RecurrentPPO")
TARGET_VS_SB3 = 20.0            # metarl >= 20x RecurrentPPO at the same settings (issue)
ISSUE_SB3_CARTPOLE = {8: 1.2e3, 64: 4.5e3}   # the issue's RecurrentPPO CartPole numbers, this machine


def _config(n, steps, device):
    from metarl.algos.rl2 import RL2Config
    return RL2Config(env="Bandit-v0", arms=ARMS, episodes_per_trial=PULLS, num_envs=n, rollout_steps=steps,
                     hidden_size=HIDDEN, epochs=EPOCHS, minibatches=min(MINIBATCHES, n), device=device,
                     total_env_steps=10 ** 9, seed=0)


def _sync(device):
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- timing
def measure(update, per_update_steps, seconds, device) -> dict:
    """Env-steps/s of ``update()`` (best of ``REPEATS`` repeats of ``k`` updates, after one warm-up)."""
    _sync(device)
    t0 = time.perf_counter()
    update()
    _sync(device)
    warm = time.perf_counter() - t0
    if warm > MAX_UPDATE_S:
        return {"skipped": f"one update took {warm:.0f} s (> {MAX_UPDATE_S:.0f} s)", "warmup_s": warm}
    # a second untimed update when the first was cheap (the first can include one-off compiles)
    if warm < 0.2 * seconds:
        t0 = time.perf_counter()
        update()
        _sync(device)
        warm = time.perf_counter() - t0
    k = max(1, round(seconds / REPEATS / max(warm, 1e-6)))
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(k):
            update()
        _sync(device)
        times.append((time.perf_counter() - t0) / k)
    best = min(times)
    return {"steps_per_s": per_update_steps / best, "update_s": best, "repeats_update_s": times,
            "updates_per_repeat": k, "warmup_s": warm}


# ----------------------------------------------------------------------------- columns
def metarl_column(n, steps, device, seconds, fused, fused_update=True) -> dict:
    import torch

    from metarl.algos.rl2 import make_env, make_policy, ppo_update
    from metarl.rollout import Carry, collect

    cfg = _config(n, steps, device)
    env = make_env(cfg)
    policy = make_policy(cfg, env)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
    g = torch.Generator(device=device).manual_seed(0)
    g_cpu = torch.Generator().manual_seed(1)
    obs, info = env.reset(seed=0)
    carry = [Carry(obs, info["trial_start"], policy.initial_state(n))]

    def update():
        ro = collect(env, policy, steps, carry=carry[0], generator=g, fused=fused)
        carry[0] = ro.carry
        ppo_update(policy, optimizer, ro, cfg, cfg.ent_coef, g_cpu, fused=fused_update)

    return measure(update, n * steps, seconds, device)


def _sb3_vec_env(n, seed=0):
    """metarl's RL^2 bandits as an SB3 ``VecEnv``: ``to_numpy(TrialWrapper(Bandit-v0))``, with
    ``done`` = trial end (the new trial's first observation is returned in the same step, as SB3's
    own VecEnvs autoreset)."""
    import numpy as np
    from stable_baselines3.common.vec_env import VecEnv

    import metarl
    from metarl.algos.rl2 import make_env

    inner = metarl.envs.to_numpy(make_env(_config(n, STEPS, "cpu"), n, seed=seed))

    class TrialVecEnv(VecEnv):
        def __init__(self):
            super().__init__(n, inner.single_observation_space, inner.single_action_space)
            self._actions = None

        def reset(self):
            obs, _ = inner.reset(seed=self._seeds[0] if self._seeds else None)   # set by model.set_random_seed
            self._reset_seeds()
            return obs

        def step_async(self, actions):
            self._actions = np.asarray(actions, dtype=np.int64)

        def step_wait(self):
            obs, reward, _, _, info = inner.step(self._actions)
            done = np.asarray(info["trial_start"], dtype=bool)
            return obs, reward.astype(np.float32), done, [{} for _ in range(n)]

        def close(self):
            inner.close()

        def get_attr(self, attr_name, indices=None):
            return [getattr(inner, attr_name)] * len(self._get_indices(indices))

        def set_attr(self, attr_name, value, indices=None):
            raise NotImplementedError

        def env_method(self, method_name, *args, indices=None, **kwargs):
            raise NotImplementedError

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._get_indices(indices))

    return TrialVecEnv()


def sb3_column(n, steps, device, seconds) -> dict:
    import sb3_contrib
    import torch
    from sb3_contrib import RecurrentPPO

    cfg = _config(n, steps, device)
    env = _sb3_vec_env(n)
    torch.manual_seed(0)
    model = RecurrentPPO(
        "MlpLstmPolicy", env, n_steps=steps, batch_size=n * steps // cfg.minibatches, n_epochs=cfg.epochs,
        learning_rate=cfg.lr, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_range=cfg.clip,
        ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm, normalize_advantage=True,
        policy_kwargs={"lstm_hidden_size": cfg.hidden_size, "n_lstm_layers": 1, "shared_lstm": True,
                       "enable_critic_lstm": False, "net_arch": [],
                       "optimizer_kwargs": {"eps": 1e-5}},
        seed=0, device=device, verbose=0)
    first = [True]

    def update():
        model.learn(n * steps, reset_num_timesteps=first[0], progress_bar=False)
        first[0] = False

    out = measure(update, n * steps, seconds, device)
    out["version"] = sb3_contrib.__version__
    return out


def bench_column(column, sizes, steps, device, seconds) -> list[dict]:
    """One column, every N, in this process (the worker's job)."""
    out = []
    for n in sizes:
        try:
            if column == "RecurrentPPO":
                out.append(sb3_column(n, steps, device, seconds))
            else:
                out.append(metarl_column(n, steps, device, seconds, fused=column != "metarl unfused",
                                         fused_update=column != "metarl autograd"))
        except ImportError as e:
            out.append({"error": f"not installed ({e.name or e}); pip install -e .[bench]"})
        except Exception as e:
            out.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return out


def run_isolated(column, sizes, steps, device, seconds) -> list[dict]:
    """:func:`bench_column` in a fresh Python process; its JSON comes back on stdout."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([column, sizes, steps, device, seconds])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"worker failed: {tail}"} for _ in sizes]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- floor
def flops_per_step(in_dim: int, hidden: int = HIDDEN, epochs: int = EPOCHS) -> int:
    return (1 + 3 * epochs) * 2 * (in_dim + hidden) * 4 * hidden


# ----------------------------------------------------------------------------- driver
def _fmt(r) -> str:
    return f"{r['steps_per_s']:.3g}" if "steps_per_s" in r else "n/a"


def _ratio(a, b) -> str:
    return f"{a['steps_per_s'] / b['steps_per_s']:.1f}x" if "steps_per_s" in a and "steps_per_s" in b else "—"


def markdown_table(rows, steps, device, rate, in_dim) -> str:
    head = ["N", "env-steps / update", *COLUMNS, "fused / RecurrentPPO", "unfused / RecurrentPPO",
            "fused / unfused", "fused / autograd", "floor", "fused / floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in rows:
        res = row["results"]
        fused = res["metarl fused"]
        frac = f"{fused['steps_per_s'] / row['floor']:.1%}" if "steps_per_s" in fused else "—"
        lines.append("| " + " | ".join(
            [str(row["n"]), str(row["n"] * steps), *(_fmt(res[c]) for c in COLUMNS),
             _ratio(fused, res["RecurrentPPO"]), _ratio(res["metarl unfused"], res["RecurrentPPO"]),
             _ratio(fused, res["metarl unfused"]), _ratio(fused, res["metarl autograd"]), f"{row['floor']:.3g}",
             frac]) + " |")
    note = (f"Env-steps/s of collect + PPO update (Bandit-v0, k = {ARMS}, n = {PULLS} pulls per trial, RL^2 "
            f"input {in_dim}, LSTM {HIDDEN}, T = {steps}, {EPOCHS} epochs x {MINIBATCHES} minibatches; metarl on "
            f"{device}), best of {REPEATS} repeats after a warm-up. Floor = {flops_per_step(in_dim)} FLOPs per "
            f"env-step (gate GEMM: 1 collect + {EPOCHS} x 3 train) / {rate / 1e9:.0f} GFLOP/s (fp32 torch.mm "
            f"2048^2, this run). Target: metarl >= {TARGET_VS_SB3:.0f}x RecurrentPPO.")
    verdicts = []
    for row in rows:
        fused, sb3 = row["results"]["metarl fused"], row["results"]["RecurrentPPO"]
        if "steps_per_s" in fused and "steps_per_s" in sb3:
            r = fused["steps_per_s"] / sb3["steps_per_s"]
            verdicts.append(f"N = {row['n']}: {r:.1f}x ({'met' if r >= TARGET_VS_SB3 else 'not met'})")
    if verdicts:
        note += " Target check — " + "; ".join(verdicts) + "."
    problems = sorted({f"{c} at N = {row['n']}: {r.get('error') or r.get('skipped')}"
                       for row in rows for c, r in row["results"].items() if "steps_per_s" not in r})
    if problems:
        note += " Not measured — " + "; ".join(problems) + "."
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(map(str, ENVS)), help="comma-separated N (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=STEPS, help="rollout length T (default: %(default)s, one trial)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="timed budget per measurement (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device of the policies (metarl: envs too) (default: %(default)s)")
    parser.add_argument("--columns", default=",".join(COLUMNS), help="comma-separated subset (default: all)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder for the JSON (default: bench/results)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one column in this process
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(bench_column(*json.loads(args.worker))))
        return

    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    sizes = [int(x) for x in args.envs.split(",")]
    chosen = [c.strip() for c in args.columns.split(",")]
    unknown = set(chosen) - set(COLUMNS)
    if unknown:
        parser.error(f"unknown columns {sorted(unknown)}; choose from {list(COLUMNS)}")
    from metarl.algos.rl2 import make_env
    in_dim = make_env(_config(1, args.steps, "cpu"), 1).single_observation_space.shape[0]   # RL^2 input size

    start = time.perf_counter()
    info = machine_info(args.device, ("torch", "numba", "stable_baselines3", "sb3_contrib"))
    info["load_average_before"] = os.getloadavg()
    rate = gemm_rate()
    print(f"# Training-loop benchmark (RL^2 bandits) — {info['cpu']}, {info['cores']} cores, device {args.device}\n")
    print(f"fp32 GEMM rate (torch.mm 2048^2): {rate / 1e9:.0f} GFLOP/s\n", flush=True)
    warn_if_loaded(info["load_average_before"])
    results = {}
    for col in COLUMNS:
        if col not in chosen:
            results[col] = [{"error": "not selected (--columns)"} for _ in sizes]
            continue
        results[col] = run_isolated(col, sizes, args.steps, args.device, args.seconds)
        print(f"  {col:<15} " + "  ".join(f"N={n}: {_fmt(r)}" for n, r in zip(sizes, results[col])), flush=True)
    rows = [{"n": n, "floor": rate / flops_per_step(in_dim), "results": {c: results[c][i] for c in COLUMNS}}
            for i, n in enumerate(sizes)]
    elapsed = time.perf_counter() - start
    info["load_average_after"] = os.getloadavg()
    print()
    print(markdown_table(rows, args.steps, args.device, rate, in_dim))
    ref = [f"N = {n}: {v:.2g}" for n, v in ISSUE_SB3_CARTPOLE.items()]
    print(f"For reference, the issue's RecurrentPPO on CartPole (LSTM 64) on this machine: {', '.join(ref)} "
          "env-steps/s.")
    print(f"Total time {elapsed:.0f} s; 1-minute load average {info['load_average_before'][0]:.1f} before, "
          f"{info['load_average_after'][0]:.1f} after.")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"train-{info['hostname']}-{args.device}-{stamp}.json"
    path.write_text(json.dumps({
        "benchmark": "train", "date": stamp, "machine": info, "gemm_flops_per_s": rate,
        "settings": {"env": "Bandit-v0", "arms": ARMS, "pulls_per_trial": PULLS, "hidden": HIDDEN,
                     "steps": args.steps, "epochs": EPOCHS, "minibatches": MINIBATCHES, "rl2_input": in_dim,
                     "flops_per_env_step": flops_per_step(in_dim)},
        "seconds": args.seconds, "repeats": REPEATS, "elapsed_s": elapsed, "columns": list(COLUMNS), "rows": rows},
        indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
