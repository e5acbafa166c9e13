"""What the kernels' public ops check at the boundary, and how they pick a backend: written once.

- :func:`check_tensor`: a tensor argument has the dtype, device and shape the op needs
  (``TypeError``/``ValueError`` naming the argument); :func:`check_device`: a device argument
  parses and exists here;
- :func:`resolve_backend`: the backend an op runs on: its default for the device, or the
  one the caller forced, checked against what this machine has;
- :func:`tracing`: whether a tracer (torch.compile, torch.export, torch.jit.trace) runs the
  caller, so that the kernels go through their custom ops;
- :func:`numba_available`, :func:`cpp_available`, :func:`triton_problem` (and
  :func:`~metarl.kernels._triton.triton_available`): what is usable here, asked without importing
  Triton or building anything.

:mod:`metarl.backend` reports the same answers to users; the kernels never import it
(it sits above them).
"""
from __future__ import annotations

import functools
import importlib.util

import torch

from metarl.kernels._triton import require_triton

CPU_BACKENDS = ("numba", "cpp")


def tracing() -> bool:
    """True while torch.compile or torch.export (``torch.compiler.is_compiling()``) or
    ``torch.jit.trace`` traces the caller: the kernels then run as their ``torch.library`` ops
    (``torch.ops.metarl.*``), which the tracers record as one node each, instead of being called
    directly (Numba's and Triton's launches are invisible to a tracer)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


@functools.cache
def numba_available() -> bool:
    """True when Numba can be imported."""
    return importlib.util.find_spec("numba") is not None


@functools.cache
def cpp_available() -> bool:
    """True when the C++ extension ``metarl._C`` is built and loads."""
    try:
        from metarl import _C  # noqa: F401
    except ImportError:
        return False
    return True


def _shape_str(shape) -> str:
    sizes = ["?" if s is None else str(s) for s in shape]
    return f"({sizes[0]},)" if len(sizes) == 1 else "(" + ", ".join(sizes) + ")"


def check_tensor(name: str, t, shape, dtype: torch.dtype | None, device: torch.device | None, *,
                 like: str | None = None) -> None:
    """Raise unless ``t`` is a ``torch.Tensor`` of ``dtype`` on ``device`` with ``shape``.

    ``shape`` entries ``None`` match any size (the number of dims must match); ``dtype`` or
    ``device`` ``None`` match any. ``like`` names what fixes the dtype and device (e.g.
    ``"rewards"``, ``"the weights"``) for the message. ``TypeError`` for a non-tensor or a
    wrong dtype, ``ValueError`` for a wrong device or shape.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    as_like = f" (as {like})" if like else ""
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}{as_like}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device}{as_like}, got {t.device}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise ValueError(f"{name} must have shape {_shape_str(shape)}, got {tuple(t.shape)}")


def check_device(device, name: str = "device") -> torch.device:
    """``torch.device(device)``, refused with a ``ValueError`` naming ``name`` when it does not parse
    or names CUDA on a machine without it (torch itself raises ``AssertionError`` there, at the
    first allocation). ``"cuda"`` gets the current device's index, so the result compares equal
    to the device of the tensors made on it."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise TypeError(f"{name} must be a str, torch.device or int (a CUDA index), got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{name}={device!r} is not a device: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r} but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_backend(backend: str | None, device: torch.device, backends: tuple, *, default: str,
                    cpu: str = "numba") -> str:
    """The backend an op runs on for tensors on ``device``.

    ``backend=None``: ``default``, the op's own choice for this device. Otherwise ``backend``,
    checked: one of ``backends``, or ``"cpu"`` for the op's compiled CPU backend ``cpu``; a CPU
    backend (``"numba"``, ``"cpp"``) refuses tensors on another device, ``"cpp"`` needs the
    built extension, ``"triton"`` needs Triton (and on the CPU its interpreter). Raises
    ``ValueError`` saying what is missing; an op adds its own checks (dtypes) after this.
    """
    if backend is None:
        return default
    if backend == "cpu":
        backend = cpu
    if backend not in backends:
        raise ValueError(f"backend must be one of {backends}, 'cpu' or None, got {backend!r}")
    if backend in CPU_BACKENDS and device.type != "cpu":
        raise ValueError(f"backend={backend!r} runs on the CPU, but the tensors are on {device}")
    if backend == "cpp" and not cpp_available():
        raise ValueError("backend='cpp' but the metarl._C extension is not built")
    if backend == "triton":
        problem = triton_problem(device.type)
        if problem:
            raise ValueError(problem)
    return backend


def triton_problem(device_type: str) -> str:
    """Why ``backend="triton"`` cannot run on a ``device_type`` device here (the message of
    :func:`~metarl.kernels._triton.require_triton`), or ``""`` when it can. A constant to
    torch.compile: Dynamo calls it while tracing instead of tracing the cached probes inside."""
    try:
        require_triton(torch.device(device_type))
    except ValueError as e:
        return str(e)
    return ""


# what torch.compiler.assume_constant_result(triton_problem) does, without its import of torch._dynamo
# (which imports Triton) when metarl is imported; a torch that renamed the flag would only trace the probes
triton_problem._dynamo_marked_constant = True
