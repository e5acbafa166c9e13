"""Lazy Triton support: kernels are written here as plain functions and compiled
by Triton on their first launch, so ``import metarl`` never imports Triton and a
machine without Triton keeps every other backend.

Write a kernel as usual, but annotate compile-time parameters with the stand-in
:class:`constexpr` from this module, and decorate it with :func:`lazy_jit`::

    @lazy_jit
    def _add_kernel(out_ptr, x_ptr, n, BLOCK: constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ...

``tl`` (``triton.language``) is injected into the kernel module's globals at the
first launch. A device function called by a kernel is decorated the same way;
the caller swaps it for its compiled form when the caller compiles. Under
``TRITON_INTERPRET=1`` the kernels run on the CPU (tests).
"""
from __future__ import annotations

import functools
import importlib.util
import os


class constexpr:  # noqa: N801 - mirrors triton.language.constexpr
    """Stand-in for ``tl.constexpr`` in kernel signatures (swapped at compile time)."""


@functools.cache
def triton_available() -> bool:
    """True when Triton can be imported (it is never imported just to ask)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpret() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def require_triton(device) -> None:
    """Raise ``ValueError`` unless ``backend="triton"`` can run on ``device``: Triton installed,
    and on the CPU only under the interpreter (tests). Every op's backend choice calls this."""
    if not triton_available():
        raise ValueError("backend='triton' but Triton is not installed (pip install triton)")
    if device.type == "cpu" and not triton_interpret():
        raise ValueError("backend='triton' on the CPU needs TRITON_INTERPRET=1 (the interpreter; for tests)")


class LazyKernel:
    """A Triton kernel compiled on first use: ``kernel[grid](*args, **meta)``."""

    def __init__(self, fn):
        self.fn = fn
        self._jitted = None
        functools.update_wrapper(self, fn)

    def _compile(self):
        if not triton_available():
            raise RuntimeError("Triton is not installed: pip install triton (or use backend='numba'/'torch')")
        import triton
        import triton.language as tl

        fn = self.fn
        fn.__globals__.setdefault("tl", tl)
        # Device functions this kernel calls must be compiled JIT functions too.
        for name in fn.__code__.co_names:
            helper = fn.__globals__.get(name)
            if isinstance(helper, LazyKernel):
                fn.__globals__[name] = helper.jitted
        fn.__globals__.setdefault("triton", triton)
        # The compiler resolves the annotation by name in the kernel module's globals (annotations are
        # strings under `from __future__ import annotations`): the stand-in becomes tl.constexpr there.
        if fn.__globals__.get("constexpr") is constexpr:
            fn.__globals__["constexpr"] = tl.constexpr
        fn.__annotations__ = {k: (tl.constexpr if v is constexpr or v == "constexpr" else v)
                              for k, v in fn.__annotations__.items()}
        return triton.jit(fn)

    @property
    def jitted(self):
        if self._jitted is None:
            self._jitted = self._compile()
        return self._jitted

    def __getitem__(self, grid):
        return self.jitted[grid]


def lazy_jit(fn) -> LazyKernel:
    """Decorator: a Triton ``@jit`` kernel compiled at its first launch."""
    return LazyKernel(fn)
