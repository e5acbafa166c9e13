"""Meta-World control: a trained RL^2 or MAML run evaluated by the benchmark's protocol WITHOUT adaptation, beside
the same evaluation with it, so a success rate can be told apart from a zero-shot one (bench/RESULTS.md, issue 20).

Without adaptation: MAML skips its adaptation step (the meta-trained parameters act as they are); RL^2 starts a
fresh trial after the adaptation episodes (its state is reset, so the evaluation episodes are zero-shot). Same
protocol, seed and test tasks as ``metarl eval RUN_DIR --tasks N``::

    python bench/metaworld_noadapt.py runs/maml-ml10 --tasks 20

Prints one JSON line per evaluation (``adapted`` and ``not adapted``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# bench/ holds mujoco.py and metaworld.py (benchmarks): off sys.path, so `import mujoco` finds MuJoCo
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory of `metarl train rl2|maml --env MetaWorld-...`")
    parser.add_argument("--tasks", type=int, default=20, help="test tasks (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    args = parser.parse_args()
    from metarl.threads import limit_threads

    limit_threads(args.threads)
    from metarl.algos import maml, rl2
    from metarl.cli import load_learner

    learner = load_learner(args.run_dir)
    if not learner.config.env.startswith("MetaWorld-") or learner.kind not in ("rl2", "maml"):
        raise SystemExit(f"{args.run_dir}: needs an rl2 or maml run on a MetaWorld-* env")
    mod = {"rl2": rl2, "maml": maml}[learner.kind]
    kwargs = {"inner_lrs": learner.lrs} if learner.kind == "maml" else {}
    for label in ("adapted", "not adapted"):
        if label == "not adapted":
            if learner.kind == "maml":
                def skip_step(agent):
                    agent.adapting = False
                    agent.buf = {k: [] for k in agent.buf}
                maml.MetaWorldAgent.adapt = skip_step
            else:
                rl2.MetaWorldAgent.adapt = rl2.MetaWorldAgent.init
        t0 = time.perf_counter()
        ev = mod.metaworld_report(learner.policy, learner.config, args.tasks, **kwargs)["eval"]
        print(json.dumps({"run": args.run_dir, "kind": learner.kind, "iteration": learner.iteration,
                          "evaluation": label, "seconds": round(time.perf_counter() - t0, 1), **ev}), flush=True)


if __name__ == "__main__":
    main()
