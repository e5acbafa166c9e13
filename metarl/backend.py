"""Which compiled backends are usable here, and the choice an op makes by default.

Backends: ``"torch"`` (the pure-PyTorch reference, any device), ``"numba"`` (CPU),
``"cpp"`` (the ``metarl._C`` extension, CPU), ``"triton"`` (CUDA GPUs, or the CPU
under ``TRITON_INTERPRET=1``). Nothing here imports Triton.
"""
from __future__ import annotations

import functools
import importlib.util

import torch

from metarl.kernels._triton import triton_available, triton_interpret

ENV_BACKENDS = ("torch", "numba", "triton")


@functools.cache
def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def cpp_available() -> bool:
    try:
        from metarl import _C  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    return torch.cuda.is_available()


def available() -> dict[str, bool]:
    """``{backend: usable here}`` for every backend name."""
    return {
        "torch": True,
        "numba": numba_available(),
        "cpp": cpp_available(),
        "triton": triton_available() and (cuda_available() or triton_interpret()),
        "cuda": cuda_available(),
    }


def resolve_env_backend(backend: str | None, device: torch.device) -> str:
    """The env-kernel backend for ``device``: Numba on the CPU, Triton on CUDA, unless forced."""
    if backend is None:
        return "triton" if device.type == "cuda" else "numba"
    if backend == "cpu":
        backend = "numba"
    if backend not in ENV_BACKENDS:
        raise ValueError(f"backend must be one of {ENV_BACKENDS} or 'cpu' or None, got {backend!r}")
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend='numba' runs on the CPU, but device is {device}")
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' but Triton is not installed (pip install triton)")
        if device.type == "cpu" and not triton_interpret():
            raise ValueError("backend='triton' on the CPU needs TRITON_INTERPRET=1 (the interpreter; for tests)")
    return backend
