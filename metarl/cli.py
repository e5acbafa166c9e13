"""The ``metarl`` command line: ``metarl info`` (more subcommands arrive with the learners)."""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metarl", description="meta-RL with compiled kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print versions, devices and usable backends")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
