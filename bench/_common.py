"""What the benchmark scripts share: the machine record written beside every result, the fp32 GEMM
rate that sets the FLOP floors, and the warning printed when other processes share the cores.

Imported as ``from _common import ...``: the scripts run as ``python bench/NAME.py``, which puts
``bench/`` first on ``sys.path``.
"""
from __future__ import annotations

import importlib
import os
import platform
import socket
import time


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where that is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def version(module: str) -> str | None:
    """``module.__version__``, or None when it does not import."""
    try:
        return importlib.import_module(module).__version__
    except Exception:
        return None


def machine_info(device: str = "cpu", modules: tuple[str, ...] = ("torch", "numba")) -> dict:
    """Host, CPU, cores, thread counts, Python, device, GPU name and the versions of ``modules``."""
    import torch

    info = {"hostname": socket.gethostname(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "device": device,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "versions": {m: version(m) for m in modules}}
    try:
        import numba
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    return info


def gemm_rate(m: int = 2048, n: int = 2048, k: int = 2048, device: str = "cpu", repeats: int = 8) -> float:
    """fp32 FLOP/s of ``torch.mm`` of ``[m, k] @ [k, n]`` on ``device`` (TF32 off), best of ``repeats``."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.mm(a, b, out=out)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * m * n * k / best


def warn_if_loaded(load: tuple[float, float, float], threshold: float = 1.0) -> None:
    """Print a warning when the 1-minute load average ``load[0]`` (``os.getloadavg()``) exceeds ``threshold``."""
    if load[0] > threshold:
        print(f"Warning: load average {load[0]:.1f} before the run; other processes share the cores.\n", flush=True)


def parse_value(text: str):
    """A command-line config value: ``True``/``False`` (or ``true``/``false``), an int, a float, else the string."""
    if text in ("True", "False", "true", "false"):
        return text in ("True", "true")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_fields(items: list[str], where: str) -> dict:
    """``["field=value", ...]`` -> ``{field: parse_value(value)}``; exits with a message naming
    ``where`` on an item without ``=``."""
    fields = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{where}: expected field=value, got {item!r}")
        fields[key] = parse_value(value)
    return fields
