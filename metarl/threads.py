"""Bound every thread pool metarl uses, together: :func:`limit_threads`.

A metarl process on the CPU runs work on four pools, and on this kind of machine (few cores, shared with
other jobs, other seeds, other DDP ranks) they must be bounded together, or one of them keeps the cores
the others were limited from:

* torch's intra-op pool (OpenMP: the ``libgomp`` shipped in ``torch/lib``, also used by MKL inside
  torch), and its inter-op pool (idle in metarl: nothing calls ``torch.jit.fork``);
* Numba's threading layer: here ``omp`` (Numba takes ``tbb`` when the ``tbb`` package is installed,
  else ``omp``, else ``workqueue``), a second copy of ``libgomp`` (the system's ``libgomp.so.1.0.0``,
  loaded when the first ``parallel=True`` kernel runs);
* the OpenMP regions of the C++ extension ``metarl._C``: they use the ``libgomp`` already loaded by
  torch and size their teams with ``omp_get_max_threads()`` of the calling thread;
* BLAS: the OpenBLAS copies of NumPy and of SciPy (the latter is what Numba's ``np.dot`` calls in the
  fused rollout, whose launcher holds it to one thread inside Numba's parallel loop).

Waiting: an OpenMP worker that finds no work spins before it sleeps (libgomp: ``GOMP_SPINCOUNT``,
300,000 iterations by default; 0 with ``OMP_WAIT_POLICY=PASSIVE``). Both settings are read once, when
each ``libgomp`` copy is loaded, so they cannot be changed here after ``import torch``; metarl sets them
as environment defaults before torch loads (see ``metarl/__init__.py``). Numba's ``workqueue`` layer
waits on a condition variable and does not spin; ``tbb`` spins briefly.

The limits apply to the calling thread (OpenMP keeps the team size per thread): call it from the
thread that trains, before training.
"""
from __future__ import annotations

import numbers


def limit_threads(num_threads: int | None) -> None:
    """Run every thread pool metarl uses on ``num_threads`` threads; ``None`` leaves them as they are.

    Sets torch's intra-op threads (``torch.set_num_threads``, which also sizes MKL and the OpenMP team
    of torch's ``libgomp``), torch's inter-op threads where torch still allows it (only before its
    first inter-op work; metarl does none), Numba's threads (at most ``numba.config.NUMBA_NUM_THREADS``,
    the size its pool was started with: by default the number of CPUs), and, through ``threadpoolctl``,
    every OpenMP runtime and BLAS library loaded in the process: the ``libgomp`` shared by torch and
    ``metarl._C``, Numba's ``libgomp`` and the OpenBLAS of NumPy and SciPy. Numba's pool and SciPy's
    BLAS are loaded first, so that no pool starts later at its default size (starting Numba's pool
    would also reset torch's).

    Example: four training processes on an 8-core host, two cores each::

        >>> from metarl.threads import limit_threads
        >>> limit_threads(2)                                          # doctest: +SKIP
    """
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral):
        raise TypeError(f"num_threads must be a positive int or None, got {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads}")
    n = int(num_threads)

    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS that Numba's np.dot calls)
    import torch
    from threadpoolctl import threadpool_limits

    # Numba first: starting its OpenMP pool (on first use) sets the OpenMP thread count back to
    # NUMBA_NUM_THREADS, and that reaches torch's libgomp too (torch.get_num_threads() 1 -> 2 here).
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # torch allows it once, before any inter-op work
        pass
    threadpool_limits(limits=n)
