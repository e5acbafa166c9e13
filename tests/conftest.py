"""Shared test setup: seeds, the backend matrix, and the ``--all`` / ``cuda`` switches.

Triton kernels run on the CPU under ``TRITON_INTERPRET=1`` (set here before
anything imports Triton), so CI covers them at small shapes.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# idle OpenMP workers (Numba's and torch's pools) sleep instead of spinning: two spinning pools on a
# 2-core machine slowed single tests by up to 10x (session 3)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from metarl.backend import available  # noqa: E402

CPU_BACKENDS = [b for b in ("torch", "numba", "triton") if available()[b]]


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", help="run the full (slow) matrix")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --all")
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--all"):
            item.add_marker(skip_slow)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def one_thread():
    """Tiny MLPs: one intra-op thread is several times faster than two on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    """Every env backend usable on this machine's CPU."""
    return request.param
