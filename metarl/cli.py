"""The ``metarl`` command line.

``metarl info`` — versions, devices, backends; ``metarl train NAME [--option value ...]`` — train a
learner (one option per field of its config dataclass, the field's docstring as the help);
``metarl eval RUN_DIR`` — the trained learner on held-out tasks, baselines beside; ``metarl plot
RUN_DIR`` — the learning curve (PNG).

Only the chosen learner's module is imported (``metarl --help`` imports no torch), and every error a
user can cause (bad option, bad run directory, missing CUDA, a corrupt checkpoint) is one line on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import sys
import textwrap
import typing
from datetime import datetime
from pathlib import Path

from metarl import config as config_mod

# learner name -> (module, config class, learner class), and its one-line description
ALGOS = {
    "rl2": ("metarl.algos.rl2", "RL2Config", "RL2Learner"),
    "maml": ("metarl.algos.maml", "MAMLConfig", "MAMLLearner"),
    "reptile": ("metarl.algos.reptile", "ReptileConfig", "ReptileLearner"),
    "maesn": ("metarl.algos.maesn", "MAESNConfig", "MAESNLearner"),
    "episodic-rl2": ("metarl.algos.episodic_rl2", "EpisodicRL2Config", "EpisodicRL2Learner"),
    "metagrad": ("metarl.algos.metagrad", "MetaGradConfig", "MetaGradLearner"),
    "mfec": ("metarl.algos.mfec", "MFECConfig", "MFECLearner"),
    "nec": ("metarl.algos.nec", "NECConfig", "NECLearner"),
    "promp": ("metarl.algos.promp", "PROMPConfig", "PROMPLearner"),
}
HELPS = {
    "rl2": "RL^2: a recurrent policy trained with PPO over trials",
    "maml": "MAML-RL: VPG inner steps, TRPO/PPO outer step, all tasks batched",
    "reptile": "Reptile: k inner policy-gradient steps per task, phi += eps (phi~ - phi)",
    "maesn": "MAESN: latent exploration noise adapted per task (sparse-reward goals)",
    "episodic-rl2": "episodic meta-RL: an RL^2 agent that stores and reinstates its LSTM state per task",
    "metagrad": "meta-gradient RL: A2C whose gamma and lambda are learned online (Xu et al. 2018)",
    "mfec": "model-free episodic control: per-action kNN tables of the best returns (Blundell et al. 2016)",
    "nec": "neural episodic control: embedding + per-action DND, N-step Q targets (Pritzel et al. 2017)",
    "promp": "ProMP: LVC inner step, clipped outer objective with an inner KL penalty (Rothfuss et al. 2019)",
}


class UsageError(ValueError):
    """A mistake on the command line or in a run directory: printed as one line, exit status 2."""


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
        f"torch      {torch.__version__} ({torch.get_num_threads()} threads)",
        f"gymnasium  {_version('gymnasium')}",
        f"numba      {_version('numba')}",
        f"triton     {_version('triton')}",
        f"mujoco     {_version('mujoco')}",
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


# ----------------------------------------------------------------------------- options from configs
def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` from the string literal under each field of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def parse_int(text: str) -> int:
    """An integer count: ``100000``, ``1e5`` or ``1_000_000`` (scientific notation must be whole)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def parse_bool(text: str) -> bool:
    if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("1", "true", "yes", "on")


def _parse_tuple(elem, text: str) -> tuple:
    return tuple(elem(x) for x in text.split(",") if x)


_PARSERS = {int: parse_int, float: float, bool: parse_bool, str: str}


def add_config_options(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` option per dataclass field, parsed by its annotation, documented by its
    docstring, default and declared range."""
    docs = field_docs(cls)
    types = config_mod.field_types(cls)
    for f in dataclasses.fields(cls):
        elem = _PARSERS[config_mod.element_type(types[f.name])]
        kind = functools.partial(_parse_tuple, elem) if typing.get_origin(types[f.name]) is tuple else elem
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        rng = config_mod.describe_range(f)
        help_text = f"{docs.get(f.name, '')} (default: {default}{'; ' + rng if rng else ''})"
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                            help=help_text.replace("%", "%%"))


def config_from_args(cls, args, base: dict | None = None):
    """The config: ``base`` (a saved config) with every option given on the command line on top."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise UsageError(f"the saved config has fields {unknown} that {cls.__name__} does not know "
                         "(written by another metarl version?)")
    return cls(**values)


def _algo(name: str):
    """``(module, config class, learner class)`` of a learner name."""
    module, cfg_cls, learner_cls = ALGOS[name]
    mod = importlib.import_module(module)
    return mod, getattr(mod, cfg_cls), getattr(mod, learner_cls)


def train_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``metarl train NAME``: the config's fields and the run options."""
    _, cls, _ = _algo(name)
    p = argparse.ArgumentParser(prog=f"metarl train {name}", description=HELPS[name])
    add_config_options(p, cls)
    run = p.add_argument_group("run")
    run.add_argument("--run-dir", help=f"where logs and checkpoints go (default: runs/{name}-<env>-<time>); "
                                       "refused if it holds a run, unless --resume or --overwrite")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    run.add_argument("--overwrite", action="store_true", help="start over in a --run-dir that holds a run (deletes it)")
    run.add_argument("--num-threads", type=parse_int, default=None,
                     help="bound the torch, Numba, OpenMP and BLAS thread pools together (default: as the "
                          "libraries choose, usually one per core); give each of several jobs on one host its share")
    run.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    return p


# ----------------------------------------------------------------------------- printing
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
            label = f"after {name} adaptation steps" if isinstance(name, int) else name
            print(f"{indent}{label}: {val}" if isinstance(val, int) else f"{indent}{label}: {float(val):.3f}")


def _print_report(summary: dict) -> None:
    ev = summary.get("eval")
    if ev:
        print("\nHeld-out tasks (mean ± standard error where given):")
        _print_eval(ev)


# ----------------------------------------------------------------------------- commands
def _cmd_train(name: str, argv: list[str]) -> int:
    args = train_parser(name).parse_args(argv)
    from metarl.algos import harness

    mod, cls, _ = _algo(name)
    if args.resume and (args.run_dir or args.overwrite):
        raise UsageError("--resume RUN_DIR continues a run in place: give it without --run-dir and --overwrite")
    if args.num_threads is not None:
        from metarl.threads import limit_threads

        limit_threads(args.num_threads)
    from metarl import distributed

    if args.resume:
        run_dir = Path(args.resume)
        ck = harness.load_checkpoint(run_dir, kind=name)
        cfg = config_from_args(cls, args, ck["config"])
        distributed.init(getattr(cfg, "device", "cpu"))     # under torchrun: join the other ranks
    else:
        cfg = config_from_args(cls, args)
        distributed.init(getattr(cfg, "device", "cpu"))
        env = getattr(cfg, "env", "env")
        run_dir = distributed.on_main(lambda: harness.prepare_run_dir(
            Path(args.run_dir or Path("runs") / f"{name}-{env}-{datetime.now():%Y%m%d-%H%M%S}"),
            resume=False, overwrite=args.overwrite))
    if not distributed.is_main():      # rank 0 prints and writes; the others train their shards
        args.quiet = True
        sys.stdout = open(os.devnull, "w")
    print(f"run directory: {run_dir}" + (f" ({distributed.world()} processes)" if distributed.active() else ""))
    summary = mod.train(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.quiet)
    distributed.close()
    secs = summary.get("train_seconds", 0.0)
    steps = summary.get("env_steps")
    print(f"trained in {secs:.0f} s" + (f": {steps:,} env steps ({summary['env_steps_per_s']:.3g} env-steps/s)"
                                         if steps else ""))
    if summary.get("interrupted"):
        print(f"interrupted: checkpoint saved; continue with  metarl train {name} --resume {run_dir}")
        return 130
    _print_report(summary)
    return 0


def load_learner(run_dir):
    """The learner of a run directory, restored from its checkpoint (any kind)."""
    from metarl.algos import harness

    ck = harness.load_checkpoint(run_dir)
    if ck["kind"] not in ALGOS:
        raise UsageError(f"{run_dir}: a {ck['kind']!r} checkpoint, not one of {sorted(ALGOS)}")
    _, cls, learner_cls = _algo(ck["kind"])
    learner = learner_cls(cls(**ck["config"]))
    learner.load_state_dict(ck["learner"])
    return learner


def _cmd_eval(args) -> int:
    learner = load_learner(args.run_dir)
    summary = learner.report(args.tasks)
    if not summary.get("eval"):     # a config with eval_tasks=0 evaluates nothing unless told how many tasks
        raise UsageError(f"{args.run_dir}: its config evaluates no held-out tasks (eval_tasks=0); give their number "
                         f"with --tasks N")
    _print_report(summary)
    return 0


def plot_run(run_dir):
    """The learning curve of a run directory as a matplotlib Figure: the logged returns (or rewards,
    success rates) against env steps, the baselines of its final evaluation as dashed lines, and the
    legend below the axes (nothing overlaps the labels)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    log = run_dir / "progress.csv"
    if not log.is_file():
        raise UsageError(f"{run_dir}: no progress.csv (not a metarl run directory?)")
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UsageError(f"{log} has no rows yet")
    xkey = "env_steps" if "env_steps" in rows[0] else "iteration"
    x = [float(r[xkey]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    # rl2: trial_return; maml: pre/post returns; episodic-rl2: first-pull and per-pull rewards
    curves = [c for c in rows[0] if any(w in c for w in ("return", "reward", "first_pull"))]
    rates = [c for c in rows[0] if "success" in c]     # Meta-World's success rates, in [0, 1]
    if not curves:
        curves, rates = rates, []
    for col in curves:
        ax.plot(x, [float(r[col]) for r in rows], label=col.replace("_", " "))
    summary = run_dir / "summary.json"
    if summary.exists():
        for name, val in json.loads(summary.read_text()).get("eval", {}).items():
            if isinstance(val, list) and name not in ALGOS:   # baselines (mean, se), not the learner itself
                ax.axhline(val[0], ls="--", lw=1, color="gray")
                ax.annotate(name, (x[0], val[0]), fontsize=7, ha="left", va="bottom", color="dimgray")
    handles, labels = ax.get_legend_handles_labels()
    if rates:                   # on a second axis: on the return axis they are a flat line at 0
        ax2 = ax.twinx()
        for j, col in enumerate(rates):
            ax2.plot(x, [float(r[col]) for r in rows], "--", color=f"C{len(curves) + j}", label=col.replace("_", " "))
        ax2.set_ylim(-0.02, 1.02)
        ax2.set_ylabel("success rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if "gamma" in rows[0]:      # metagrad: the meta-learned gamma and lambda on a second axis
        ax2 = ax.twinx()
        for col, style in (("gamma", "-."), ("lambda", ":")):
            ax2.plot(x, [float(r[col]) for r in rows], style, color="gray", label=col)
        ax2.set_ylabel("gamma, lambda")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.set_xlabel(xkey.replace("_", " "))
    ax.set_ylabel("return" if any("return" in c for c in curves) else "reward")
    ax.set_title(run_dir.name, fontsize=10)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))), fontsize=8)
    return fig


def _cmd_plot(args) -> int:
    fig = plot_run(args.run_dir)
    out = Path(args.out or Path(args.run_dir) / "learning_curve.png")
    fig.savefig(out, dpi=120)

    import matplotlib.pyplot as plt

    plt.close(fig)
    print(out)
    return 0


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="meta-RL with compiled kernels",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"learners: {', '.join(ALGOS)}\n(metarl train NAME --help: its options)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print versions, devices and usable backends")
    train = sub.add_parser("train", help="train a meta-learner (metarl train NAME --help)",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="\n".join(f"  {n:<13} {h}" for n, h in HELPS.items()))
    train.add_argument("algo", choices=list(ALGOS), metavar="NAME", help="the learner: " + ", ".join(ALGOS))
    train.add_argument("options", nargs=argparse.REMAINDER, help="its options (metarl train NAME --help)")
    ev = sub.add_parser("eval", help="evaluate a trained run on held-out tasks, baselines beside")
    ev.add_argument("run_dir")
    ev.add_argument("--tasks", type=parse_int, default=None, help="held-out tasks (default: the run's eval setting)")
    pl = sub.add_parser("plot", help="plot a run's learning curve (PNG)")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="PNG path (default: RUN_DIR/learning_curve.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `metarl train NAME --help` goes to the learner's own parser (the top one would swallow --help)
    if len(argv) >= 2 and argv[0] == "train" and argv[1] in ALGOS:
        command, rest = "train", argv[1:]
    else:
        args = main_parser().parse_args(argv)
        command, rest = args.command, [args.algo, *args.options] if args.command == "train" else None
    try:
        if command == "info":
            print(info())
            return 0
        if command == "train":
            return _cmd_train(rest[0], rest[1:])
        if command == "eval":
            if args.tasks is not None and args.tasks < 1:
                raise UsageError(f"--tasks must be a positive integer, got {args.tasks}")
            return _cmd_eval(args)
        return _cmd_plot(args)
    except (ValueError, OSError) as e:       # ConfigError and UsageError are ValueErrors
        print(f"metarl {command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
