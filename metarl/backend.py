"""Which compiled backends are usable here, and the choice an op makes by default.

Backends: ``"torch"`` (the pure-PyTorch reference, any device), ``"numba"`` (CPU),
``"cpp"`` (the ``metarl._C`` extension, CPU), ``"triton"`` (CUDA GPUs, or the CPU
under ``TRITON_INTERPRET=1``). Nothing here imports Triton.
"""
from __future__ import annotations

import functools
import importlib.util

import torch

from metarl.kernels._triton import require_triton, triton_available, triton_interpret

ENV_BACKENDS = ("torch", "numba", "triton", "cpp")


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


def resolve_env_backend(backend: str | None, device: torch.device, kernels=None) -> str:
    """The env-kernel backend for ``device`` unless forced: Triton on CUDA; on the CPU
    the C++ kernel in ``metarl._C`` where the family has one (CartPole-v1), else Numba.
    """
    if backend is None:
        if device.type == "cuda":
            return "triton"
        # the C++ kernel where a family has one (vectorized, measured faster), else Numba
        return "cpp" if kernels is not None and hasattr(kernels, "step_cpp") and cpp_available() else "numba"
    if backend == "cpu":
        backend = "numba"
    if backend not in ENV_BACKENDS:
        raise ValueError(f"backend must be one of {ENV_BACKENDS} or 'cpu' or None, got {backend!r}")
    if backend in ("numba", "cpp") and device.type != "cpu":
        raise ValueError(f"backend={backend!r} runs on the CPU, but device is {device}")
    if backend == "cpp":
        if kernels is not None and not hasattr(kernels, "step_cpp"):
            raise ValueError(f"backend='cpp' has no kernel for {kernels.__name__.rsplit('.', 1)[-1]}; use 'numba'")
        if not cpp_available():
            raise ValueError("backend='cpp' but the metarl._C extension is not built")
    if backend == "triton":
        require_triton(device)
    return backend
