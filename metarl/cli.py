"""The ``metarl`` command line.

``metarl info`` — versions, devices, backends; ``metarl train rl2 [--option value ...]`` — train
RL^2 (options generated from :class:`metarl.algos.rl2.RL2Config`, one per field, its docstring as
the help); ``metarl eval RUN_DIR`` — the trained policy and the baselines on held-out tasks;
``metarl plot RUN_DIR`` — the learning curve with the baselines as lines (PNG).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.metadata
import inspect
import json
import os
import platform
import sys
import textwrap
from datetime import datetime
from pathlib import Path


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info() -> str:
    """A report of versions, devices and usable backends (as printed by ``metarl info``)."""
    import torch

    import metarl
    from metarl import backend

    avail = backend.available()
    lines = [
        f"metarl     {metarl.__version__}",
        f"python     {platform.python_version()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        f"torch      {torch.__version__}",
        f"gymnasium  {_version('gymnasium')}",
        f"numba      {_version('numba')}",
        f"triton     {_version('triton')}",
        "devices    cpu" + "".join(f", cuda:{i} {torch.cuda.get_device_name(i)}"
                                   for i in range(torch.cuda.device_count())),
        "backends",
    ]
    notes = {
        "torch": "reference kernels, any device",
        "numba": "CPU kernels",
        "cpp": "metarl._C (C++/OpenMP CPU kernels)",
        "triton": "GPU kernels" + (" (interpreter: TRITON_INTERPRET=1)"
                                   if avail["triton"] and not avail["cuda"] else ""),
        "cuda": "CUDA device",
    }
    for name, ok in avail.items():
        lines.append(f"  {name:<8} {'yes' if ok else 'no ':<4} {notes[name]}")
    if avail["cpp"]:
        from metarl import _C
        lines.append(f"  OpenMP threads in metarl._C: {_C.openmp_threads()}")
    lines.append(f"envs       {', '.join(metarl.envs.ENV_CLASSES)}")
    return "\n".join(lines)


def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` from the string literal under each field of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _parse_tuple(elem, text: str) -> tuple:
    return tuple(elem(x) for x in text.split(",") if x)


def _parse_bool(text: str) -> bool:
    if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("1", "true", "yes", "on")


def add_config_options(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` option per dataclass field, typed by its default, documented by its docstring."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        kind = type(f.default)
        if kind is tuple:      # comma-separated numbers, e.g. --hidden-sizes 100,100
            kind = functools.partial(_parse_tuple, type(f.default[0]) if f.default else int)
        elif kind is bool:
            kind = _parse_bool
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                            help=f"{docs.get(f.name, '')} (default: {f.default})")


def _config_from_args(cls, args, base: dict | None = None):
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return cls(**values)


# learner name -> (module, config class); each module has train(cfg, run_dir, progress=, resume=) and
# load_policy(run_dir); evaluation per learner in _evaluate
ALGOS = {
    "rl2": ("metarl.algos.rl2", "RL2Config"),
    "maml": ("metarl.algos.maml", "MAMLConfig"),
    "reptile": ("metarl.algos.reptile", "ReptileConfig"),
    "maesn": ("metarl.algos.maesn", "MAESNConfig"),
    "episodic-rl2": ("metarl.algos.episodic_rl2", "EpisodicRL2Config"),
    "metagrad": ("metarl.algos.metagrad", "MetaGradConfig"),
    "mfec": ("metarl.algos.mfec", "MFECConfig"),
    "nec": ("metarl.algos.nec", "NECConfig"),
}


def _algo(name: str):
    import importlib

    module, cls = ALGOS[name]
    mod = importlib.import_module(module)
    return mod, getattr(mod, cls)


def _print_eval(ev, indent: str = "  ") -> None:
    """Print an ``eval`` dict as the learners return it: ``{name: (mean, se)}`` (RL^2 and its
    baselines), ``{steps: mean}`` (MAML), ``{"returns": [...], "se": [...]}`` per adaptation step
    (Reptile, MAESN), or named groups of those (MAESN against its untrained twin)."""
    if "returns" in ev:
        for k, mean in enumerate(ev["returns"]):
            se = f" ± {ev['se'][k]:.3f}" if "se" in ev else ""
            extra = f"   (goal reached in {ev['reached'][k]:.0%} of episodes)" if "reached" in ev else ""
            print(f"{indent}after {k} adaptation steps: {mean:9.3f}{se}{extra}")
        return
    for name, val in ev.items():
        if isinstance(val, dict):
            print(f"{indent}{name}:")
            _print_eval(val, indent + "  ")
        elif isinstance(val, (tuple, list)):
            print(f"{indent}{name!s:<16} {val[0]:8.3f} ± {val[1]:.3f}")
        else:
            print(f"{indent}{'after ' + str(name) + ' adaptation steps' if isinstance(name, int) else name}: "
                  f"{float(val):.3f}")


def _print_report(summary: dict) -> None:
    ev = summary.get("eval")
    if ev:
        print("\nHeld-out tasks (mean ± standard error where given):")
        _print_eval(ev)


def _cmd_train(args) -> int:
    mod, cls = _algo(args.algo)
    if args.resume:
        run_dir = Path(args.resume)
        cfg = _config_from_args(cls, args, json.loads((run_dir / "config.json").read_text()))
    else:
        cfg = _config_from_args(cls, args)
        env = getattr(cfg, "env", "env")
        run_dir = Path(args.run_dir or Path("runs") / f"{args.algo}-{env}-{datetime.now():%Y%m%d-%H%M%S}")
    print(f"run directory: {run_dir}")
    kwargs = {}
    if args.resume:
        if "resume" not in inspect.signature(mod.train).parameters:
            raise ValueError(f"{args.algo} cannot resume a run yet (its checkpoints are for evaluation)")
        kwargs["resume"] = True
    summary = mod.train(cfg, run_dir, progress=not args.quiet, **kwargs)
    secs = summary.get("train_seconds", 0.0)
    steps = summary.get("env_steps")
    print(f"trained in {secs:.0f} s" + (f": {steps:,} env steps ({steps / max(secs, 1e-9):.3g} env-steps/s)"
                                         if steps else ""))
    if summary.get("interrupted"):
        print(f"interrupted: checkpoint saved; continue with  metarl train {args.algo} --resume {run_dir}")
        return 130
    _print_report(summary)
    return 0


def _cmd_eval(args) -> int:
    from metarl import checkpoint

    kind = checkpoint.read_kind(Path(args.run_dir) / "checkpoint.pt")
    if kind not in ALGOS:
        raise ValueError(f"{args.run_dir}: a {kind!r} checkpoint, not one of {sorted(ALGOS)}")
    mod, _ = _algo(kind)
    if kind == "rl2":
        policy, cfg = mod.load_policy(args.run_dir)
        _print_report(mod.report(policy, cfg, args.tasks))
    elif kind == "maml":
        policy, cfg, inner_lrs = mod.load_policy(args.run_dir)
        _print_report({"eval": mod.evaluate(policy.state_dict(), cfg, args.tasks, inner_lrs=inner_lrs)})
    elif kind == "reptile":
        phi, cfg = mod.load_params(args.run_dir)
        _print_report({"eval": mod.evaluate(phi, cfg, args.tasks)})
    else:
        model, cfg = mod.load_model(args.run_dir)
        _print_report({"eval": mod.report(model, cfg, args.tasks)})
    return 0


def _cmd_plot(args) -> int:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(args.run_dir)
    with open(run_dir / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{run_dir}/progress.csv has no rows yet")
    xkey = "env_steps" if "env_steps" in rows[0] else "iteration"
    x = [int(r[xkey]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # rl2: trial_return; maml: pre/post returns; episodic-rl2: first-pull and per-pull rewards
    curves = [c for c in rows[0] if any(w in c for w in ("return", "reward", "first_pull"))]
    for col in curves:
        ax.plot(x, [float(r[col]) for r in rows], label=col.replace("_", " "))
    summary = run_dir / "summary.json"
    if summary.exists():
        for name, val in json.loads(summary.read_text()).get("eval", {}).items():
            if isinstance(val, list) and name not in ALGOS:   # baselines (mean, se), not the learner itself
                mean = val[0]
                ax.axhline(mean, ls="--", lw=1, color="gray")
                ax.annotate(name, (x[-1], mean), fontsize=8, ha="right", va="bottom")
    if "gamma" in rows[0]:      # metagrad: the meta-learned gamma and lambda on a second axis
        ax2 = ax.twinx()
        for col, style in (("gamma", "-."), ("lambda", ":")):
            ax2.plot(x, [float(r[col]) for r in rows], style, color="gray", label=col)
        ax2.set_ylabel("gamma, lambda")
        ax2.legend(loc="upper left")
    ax.set_xlabel(xkey.replace("_", " "))
    ax.set_ylabel("return" if any("return" in c for c in curves) else "reward")
    ax.set_title(run_dir.name)
    ax.legend(loc="lower right")
    out = Path(args.out or run_dir / "learning_curve.png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metarl", description="meta-RL with compiled kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print versions, devices and usable backends")
    train = sub.add_parser("train", help="train a meta-learner")
    algos = train.add_subparsers(dest="algo", required=True)
    helps = {"rl2": "RL^2: a recurrent policy trained with PPO over trials",
             "maml": "MAML-RL: VPG inner steps, TRPO/PPO outer step, all tasks batched",
             "reptile": "Reptile: k inner policy-gradient steps per task, phi += eps (phi~ - phi)",
             "maesn": "MAESN: latent exploration noise adapted per task (sparse-reward goals)",
             "episodic-rl2": "episodic meta-RL: an RL^2 agent that stores and reinstates its LSTM state per task",
             "metagrad": "meta-gradient RL: A2C whose gamma and lambda are learned online (Xu et al. 2018)",
             "mfec": "model-free episodic control: per-action kNN tables of the best returns (Blundell et al. 2016)",
             "nec": "neural episodic control: embedding + per-action DND, N-step Q targets (Pritzel et al. 2017)"}
    for name in ALGOS:
        _, cls = _algo(name)
        p = algos.add_parser(name, help=helps.get(name, name))
        add_config_options(p, cls)
        p.add_argument("--run-dir", help=f"where logs and checkpoints go (default: runs/{name}-<env>-<time>)")
        p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    ev = sub.add_parser("eval", help="evaluate a trained run on held-out tasks, baselines beside")
    ev.add_argument("run_dir")
    ev.add_argument("--tasks", type=int, default=1000, help="held-out tasks (default: 1000)")
    pl = sub.add_parser("plot", help="plot a run's learning curve (PNG)")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="PNG path (default: RUN_DIR/learning_curve.png)")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
        return 0
    try:
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "eval":
            return _cmd_eval(args)
        return _cmd_plot(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"metarl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
