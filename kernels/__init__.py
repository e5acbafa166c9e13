"""Compiled kernels of metarl, installed as ``metarl.kernels``.

One module per kernel family. Inside each: the pure-PyTorch reference (the oracle),
the Numba CPU kernel, the Triton GPU kernel, and one public function per op that
dispatches on the tensors' device (``backend=`` forces one).

Nothing here imports Triton at import time: Triton kernels are wrapped by
:func:`metarl.kernels._triton.lazy_jit` and compiled on their first launch.
"""
