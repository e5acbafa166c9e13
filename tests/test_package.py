"""Packaging promises: light import, the extension, the CLI."""
import subprocess
import sys

import metarl
from metarl import backend


def test_import_does_not_import_triton():
    code = "import sys, metarl; metarl.make_vec('CartPole-v1', 4).reset(seed=0); print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "TRITON_INTERPRET": "0"})
    assert out.stdout.strip() == "False"


def test_extension_builds_and_reports():
    assert backend.cpp_available()
    from metarl import _C
    assert _C.openmp_threads() >= 1


def test_kernels_installed_as_subpackage():
    import metarl.kernels.envs.cartpole as k
    assert k.__name__ == "metarl.kernels.envs.cartpole"


def test_cli_info():
    out = subprocess.run([sys.executable, "-m", "metarl.cli", "info"], capture_output=True, text=True, check=True)
    assert metarl.__version__ in out.stdout
    for name in ("numba", "cpp", "triton", "cuda"):
        assert name in out.stdout
