"""Which compiled backends are usable here, and the choice an op makes by default.

Backends: ``"torch"`` (the pure-PyTorch reference, any device), ``"numba"`` (CPU),
``"cpp"`` (the ``metarl._C`` extension, CPU), ``"triton"`` (CUDA GPUs, or the CPU
under ``TRITON_INTERPRET=1``). Nothing here imports Triton.

The answers come from the kernels (:mod:`metarl.kernels._checks`, :mod:`metarl.kernels._triton`),
which choose their backends themselves: this module sits above them and only reports.
"""
from __future__ import annotations

import torch

from metarl.kernels._checks import cpp_available, numba_available
from metarl.kernels._triton import triton_available, triton_interpret

__all__ = ["available", "cpp_available", "cuda_available", "numba_available", "resolve_env_backend",
           "triton_available", "triton_interpret"]


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
    """The backend an env of family ``kernels`` (its kernel module) on ``device`` steps with:
    :func:`metarl.kernels.envs._launch.resolve_backend` (imported here on first use: it loads Numba)."""
    from metarl.kernels.envs._launch import resolve_backend

    return resolve_backend(backend, device, kernels)
