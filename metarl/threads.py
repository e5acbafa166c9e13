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
300,000 pause instructions by default, 12 ms here; 0 with ``OMP_WAIT_POLICY=PASSIVE``). Both are read
once, when each ``libgomp`` copy loads, so nothing here can change them after ``import torch``: they
are environment variables, set before torch loads. Numba's ``workqueue`` layer waits on a condition
variable (no spin); ``tbb`` spins briefly. On this 2-core machine, the README's RL^2 job makes ~1,600
OpenMP regions per PPO update (torch's ops on 256-sequence minibatches) and ~57 per rollout (Numba):
with spinning workers it ran 6-13x slower beside one busy loop per core and ~9x slower per job with a
second seed beside it; with passive workers it did not collapse but ran 2x slower alone (each region
wakes a sleeping worker); on one thread it lost 13% alone and was the fastest of all under load
(``bench/contention.py``, bench/RESULTS.md).

Starting Numba's OpenMP pool (its first ``parallel=True`` call, or ``numba.get_num_threads()``) calls
``omp_set_num_threads(NUMBA_NUM_THREADS)``, which reaches torch's ``libgomp`` too: a
``torch.set_num_threads(1)`` made before it is undone (``torch.get_num_threads()`` goes back to the core
count). :func:`limit_threads` starts Numba's pool first.

The limits apply to the calling thread (OpenMP keeps the team size per thread): call it from the
thread that trains, before training.
"""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def torch_threads_for(work: int, min_work: int):
    """Run the block on ONE torch thread when ``work`` (an element count, e.g. rows x hidden size of the
    matrices the block multiplies) is below ``min_work``, else as set; restores the count afterwards.

    For blocks made of many small ops (RL^2's PPO update on 256-sequence minibatches: ~1,600 OpenMP
    regions per update), where waking torch's second thread at every region costs what it saves alone,
    and beside other jobs every region waits until both threads hold a core (bench/contention.py).
    """
    before = None
    if work < min_work:
        import torch

        before = torch.get_num_threads()
        if before > 1:
            torch.set_num_threads(1)
        else:
            before = None
    try:
        yield
    finally:
        if before is not None:
            import torch

            torch.set_num_threads(before)
