"""MAML Table 4 (2D navigation): average return after 0/1/2/3 adaptation steps, the paper's rows
beside the ones measured here, on held-out tasks.

Rows measured:

- ``MAML``: :func:`metarl.algos.maml.train` with the given sizes, then
  :func:`metarl.algos.maml.evaluate` (each step on fresh trajectories of the adapted policy);
- ``pretrained``: the same training with ``inner_steps=0`` (one policy trained jointly on all
  tasks, then fine-tuned with the inner rule at test time), as the paper's baseline;
- ``random init``: the untrained policy adapted with the inner rule;
- with ``--extra-rows``: ``first-order MAML`` (the same config with ``first_order=True``) and
  ``Reptile`` (:mod:`metarl.algos.reptile`'s defaults, adapted by its own rule: 3 Adam steps on 10
  trajectories per task, so its row's protocol differs from the others');
- ``oracle``: NOT the paper's trained goal-conditioned policy but a goal-aware controller
  (``a = clip(goal − pos, ±0.1)`` per axis), an upper reference for the same horizon.

Defaults follow the authors' code (``maml_examples/maml_trpo_point.py`` and
``test_maml_point.py`` of cbfinn/maml_rl) where it differs from the paper's text: the policy acts
in ``[-1, 1]`` mapped onto the ±0.1 action box (rllab's ``normalize``), rllab's policy init
(Glorot-uniform weights, zero biases; ``--policy-init torch`` for ``nn.Linear``'s), inner lr
0.5, 100 TRPO meta-updates of 20 tasks × 20 trajectories at H = 100, MLP 2×100; the test adapts on 40
trajectories per step (a 4,000-step batch), step 1 at lr 0.5 and later steps at 0.25. Numbers are
comparable to the paper only with ``--horizon 100`` (returns are sums of −distance over the
episode). Writes ``bench/results/maml.json``.

    python bench/reproduce_maml.py                      # ~10-20 min per trained row on this 2-core CPU
    python bench/reproduce_maml.py --iterations 10      # a quick look
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metarl.algos import reptile
from metarl.algos.maml import MAMLConfig, evaluate, make_env, make_policy, train

PAPER = {
    "MAML": (-40.41, -11.68, -3.33, -3.23),
    "pretrained": (-39.49, -38.41, -38.87, -39.38),
    "random init": (-42.50, -46.88, -47.28, -47.44),
    "oracle": (-4.76,),
}
STEPS = (0, 1, 2, 3)


@torch.no_grad()
def oracle_return(cfg: MAMLConfig, num_tasks: int, seed: int = 12345) -> float:
    """Mean return of the goal-aware controller on the held-out tasks of :func:`evaluate`."""
    env = make_env(cfg, num_tasks, seed=seed)
    _, test = env.sample_task_split(1, num_tasks, seed=seed)
    obs, _ = env.reset(options={"tasks": test})
    goal = test.goal.to(obs.device)
    alive = torch.ones(num_tasks, dtype=torch.bool, device=obs.device)
    total = torch.zeros(num_tasks, device=obs.device)
    for _ in range(cfg.horizon):
        obs, rew, term, trunc, _ = env.step((goal - obs).clamp(-0.1, 0.1))
        total += torch.where(alive, rew, 0.0)
        alive &= ~(term | trunc)
    return float(total.mean())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100, help="meta-updates (the authors' code: 100)")
    p.add_argument("--meta-batch", type=int, default=20)
    p.add_argument("--trajectories", type=int, default=20, help="trajectories per task")
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    p.add_argument("--inner-lr", type=float, default=0.5, help="the authors' code 0.5; the paper text 0.1")
    p.add_argument("--raw-actions", action="store_true",
                   help="the policy acts in the env's units (no [-1, 1] normalisation)")
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--policy-init", choices=("torch", "xavier"), default=MAMLConfig.policy_init,
                   help="policy MLP init: nn.Linear's default, or rllab's Glorot-uniform weights and zero biases")
    p.add_argument("--mean-squash", choices=("none", "tanh"), default=MAMLConfig.mean_squash,
                   help="'tanh' bounds the policy's mean to the normalised action box [-1, 1]")
    p.add_argument("--eval-tasks", type=int, default=40)
    p.add_argument("--eval-trajectories", type=int, default=40, help="trajectories per task and evaluation step")
    p.add_argument("--eval-lr-scales", type=float, nargs="+", default=[1.0, 0.5],
                   help="step size of evaluation steps 1, 2, ... as multiples of the inner lr (last repeats)")
    p.add_argument("--skip-pretrained", action="store_true", help="skip the pretrained baseline's training")
    p.add_argument("--extra-rows", nargs="*", choices=("first-order", "reptile"), default=[],
                   help="also train and evaluate first-order MAML (this config, first_order=True) and/or "
                        "Reptile (ReptileConfig's defaults on Navigation2D-v0, evaluated with its own "
                        "adaptation rule: 3 Adam steps on 10 trajectories per task)")
    p.add_argument("--reptile-iterations", type=int, default=reptile.ReptileConfig.iterations,
                   help="Reptile's outer updates (default: %(default)s)")
    p.add_argument("--pretrained-test-lrs", type=float, nargs="*", default=[0.1, 0.02],
                   help="also adapt the pretrained policy with these step sizes (extra rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-minutes", type=float, default=None, help="stop MAML's training after this long")
    p.add_argument("--pretrained-minutes", type=float, default=None, help="the same for the pretrained baseline")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "maml.json"))
    args = p.parse_args(argv)
    cfg = MAMLConfig(meta_batch=args.meta_batch, trajectories_per_task=args.trajectories, horizon=args.horizon,
                     hidden_sizes=tuple(args.hidden), inner_lr=args.inner_lr, first_order=args.first_order,
                     normalize_actions=not args.raw_actions, policy_init=args.policy_init,
                     mean_squash=args.mean_squash, iterations=args.iterations, eval_tasks=0,
                     eval_trajectories=args.eval_trajectories, eval_lr_scales=tuple(args.eval_lr_scales),
                     seed=args.seed, device=args.device)
    measured, seconds = {}, {}
    t = time.perf_counter()
    minutes = {"MAML": args.max_minutes, "pretrained": args.pretrained_minutes}
    budget = {k: None if v is None else 60 * v for k, v in minutes.items()}
    iters = {}
    summary = train(cfg, max_seconds=budget["MAML"])
    seconds["MAML"], iters["MAML"] = time.perf_counter() - t, summary["iterations"]
    print(f"MAML: {summary['iterations']} meta-updates in {seconds['MAML']:.0f} s", flush=True)
    measured["MAML"] = evaluate(summary["policy"], cfg, args.eval_tasks, STEPS)
    if not args.skip_pretrained:
        pre_cfg = MAMLConfig(**{**cfg.__dict__, "inner_steps": 0})
        t = time.perf_counter()
        pre = train(pre_cfg, max_seconds=budget["pretrained"])
        seconds["pretrained"], iters["pretrained"] = time.perf_counter() - t, pre["iterations"]
        measured["pretrained"] = evaluate(pre["policy"], cfg, args.eval_tasks, STEPS)
        for lr in args.pretrained_test_lrs:
            lr_cfg = MAMLConfig(**{**cfg.__dict__, "inner_lr": lr})
            measured[f"pretrained, test lr {lr}"] = evaluate(pre["policy"], lr_cfg, args.eval_tasks, STEPS)
    if "first-order" in args.extra_rows:
        fo_cfg = MAMLConfig(**{**cfg.__dict__, "first_order": True})
        t = time.perf_counter()
        fo = train(fo_cfg, max_seconds=budget["MAML"])
        seconds["first-order MAML"], iters["first-order MAML"] = time.perf_counter() - t, fo["iterations"]
        measured["first-order MAML"] = evaluate(fo["policy"], fo_cfg, args.eval_tasks, STEPS)
    if "reptile" in args.extra_rows:
        r_cfg = reptile.ReptileConfig(env="Navigation2D-v0", seed=args.seed, iterations=args.reptile_iterations,
                                      eval_tasks=0)   # evaluated below, on as many tasks as the other rows
        t = time.perf_counter()
        rs = reptile.train(r_cfg)
        seconds["Reptile"], iters["Reptile"] = time.perf_counter() - t, rs["iterations"]
        ev = reptile.evaluate(rs["params"], r_cfg, args.eval_tasks, max(STEPS))
        measured["Reptile"] = dict(enumerate(ev["returns"]))
    measured["random init"] = evaluate(make_policy(cfg), cfg, args.eval_tasks, STEPS)
    measured["oracle"] = {0: oracle_return(cfg, args.eval_tasks)}

    print(f"MAML Table 4, 2D navigation (paper: H=100, MLP 2x100, 20 tasks x 20 trajectories, TRPO). Here: "
          f"{args.iterations} meta-updates, H={args.horizon}, MLP {args.hidden}, {args.meta_batch} tasks x "
          f"{args.trajectories} trajectories, inner lr {args.inner_lr}, "
          f"{'raw' if args.raw_actions else 'normalised'} actions, policy init {args.policy_init}, "
          f"mean squash {args.mean_squash}; {args.eval_tasks} held-out tasks, "
          f"{args.eval_trajectories} trajectories per step, step lr scales {args.eval_lr_scales}.")
    if args.horizon != 100:
        print("NOTE: horizon != 100, so returns are not on the paper's scale.")
    print()
    print("| method | paper 0 / 1 / 2 / 3 steps | measured 0 / 1 / 2 / 3 steps | meta-updates | train s |")
    print("|---|---|---|---|---|")
    for name in measured:
        paper = " / ".join(f"{v:.2f}" for v in PAPER[name]) if name in PAPER else "—"
        got = " / ".join(f"{measured[name][s]:.2f}" for s in sorted(measured[name]))
        label = name if name != "oracle" else "oracle (here: goal-aware controller)"
        trained = name.split(",")[0]
        print(f"| {label} | {paper} | {got} | {iters.get(trained, '—')} | {seconds.get(trained, 0.0):.0f} |")
    out = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
           "paper": PAPER, "measured": {k: {str(s): v for s, v in d.items()} for k, d in measured.items()},
           "train_seconds": seconds, "meta_updates": iters}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
