"""Boundary checks shared by the memory classes: every public call validates here, before any state changes.

Inputs are torch tensors or NumPy arrays; a call answers in kind (NumPy in, NumPy out), so each
converter also reports whether the caller spoke NumPy.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

_F32_MAX = float(np.finfo(np.float32).max)


class UnknownIdError(KeyError, ValueError):
    """An id that is not stored in the index (``remove_ids``, ``reconstruct``).

    A ``KeyError`` (a lookup that failed) and a ``ValueError`` (a bad argument) at once, so
    either ``except`` clause catches it.
    """

    def __str__(self) -> str:   # KeyError's str() would quote the whole message
        return str(self.args[0]) if self.args else ""


def check_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def check_backend(backend):
    if backend not in (None, "torch", "triton", "cpp", "cpu"):
        raise ValueError(f"backend must be None, 'torch', 'triton', 'cpp' or 'cpu', got {backend!r}")
    return backend


def check_pos_int(name: str, v, *, allow_none: bool = False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {v!r}")
    return int(v)


def meta_int(meta: dict, name: str, *, lo: int = 0, allow_none: bool = False) -> int | None:
    """``meta[name]`` read from a file's header: an int >= ``lo`` (or None where allowed), else
    ``ValueError`` (a missing field: ``KeyError``; the loaders report both with the file's name)."""
    v = meta[name]
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} is {v!r}, expected an int >= {lo}{' or null' if allow_none else ''}")
    return v


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def as_vectors(name: str, x, shape: tuple, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, bool]:
    """``x`` as a tensor on ``device`` with the given shape (``None`` entries free) and dtype, all finite,
    and every row's squared norm within float32's range (``< 3.4e38``; the kNN kernels refuse larger).

    Returns ``(tensor, was_numpy)``. A NumPy array on a CPU index is used without a copy.
    """
    if isinstance(x, np.ndarray):
        is_np = True
        if x.dtype != np.dtype(str(dtype).removeprefix("torch.")):
            raise TypeError(f"{name} must be {str(dtype).removeprefix('torch.')}, got {x.dtype} "
                            f"(convert with .astype)")
        t = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x))
    elif isinstance(x, torch.Tensor):
        is_np = False
        if x.dtype != dtype:
            raise TypeError(f"{name} must be {dtype}, got {x.dtype}")
        if x.device != device:
            raise ValueError(f"{name} must be on {device} (the index's device), got {x.device}")
        t = x
    else:
        raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}")
    if t.dim() != len(shape) or any(s is not None and t.shape[i] != s for i, s in enumerate(shape)):
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape [{want}], got {tuple(t.shape)}")
    if t.requires_grad:
        t = t.detach()
    t = t.contiguous()
    if t.numel() and not finite_rows(t):
        if not (np.isfinite(t.numpy()).all() if t.device.type == "cpu" else bool(torch.isfinite(t).all())):
            raise ValueError(f"{name} contains NaN or inf")
        raise ValueError(f"{name} has a row whose squared norm overflows float32 (||x||^2 >= 3.4e38)")
    if is_np:
        t = t.to(device)
    return t, is_np


def finite_rows(t: torch.Tensor) -> bool:
    """Whether every row (last dim) of the float tensor ``t`` has a finite float32 squared norm: false
    for any NaN or inf, and for finite rows whose norm overflows. On the CPU through NumPy: one dot
    product of the whole tensor with itself bounds every row (~2 us for a small batch, against ~13 us
    for torch), the exact per-row norms only when that sum is past float32's range."""
    if t.device.type == "cpu":
        a = t.detach().numpy()
        flat = a.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):     # overflow is what is being looked for
            if float(np.dot(flat, flat)) <= _F32_MAX:   # bounds every row's norm; NaN and inf fail the compare
                return True
            a = a.astype(np.float32, copy=False)
            return bool(np.isfinite(np.einsum("...d,...d->...", a, a)).all())
    t = t.detach().float()
    return bool(torch.isfinite(torch.einsum("...d,...d->...", t, t)).all())


def as_ids(name: str, ids) -> tuple[np.ndarray, bool]:
    """1-D int64 ids on the host: a tensor or array of any integer dtype, a list, or one int.

    Returns ``(ids, was_numpy)``.
    """
    is_np = isinstance(ids, (np.ndarray, np.integer))
    if isinstance(ids, torch.Tensor):
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise TypeError(f"{name} must hold integers, got {ids.dtype}")
        a = ids.detach().cpu().numpy()
    else:
        a = np.asarray(ids)
        if a.size and (a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must hold integers, got {a.dtype}")
    if a.ndim > 1:
        raise ValueError(f"{name} must be 1-D (or one int), got shape {a.shape}")
    return a.reshape(-1).astype(np.int64, copy=False), is_np


def as_mask(name: str, mask, shape: tuple, device: torch.device) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.array(mask))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor or numpy.ndarray, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be bool, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {tuple(mask.shape)}")
    return mask.to(device)


def out_kind(t: torch.Tensor, numpy: bool):
    """Answer in kind: a NumPy array (host copy) when the caller passed NumPy."""
    return t.cpu().numpy() if numpy else t
