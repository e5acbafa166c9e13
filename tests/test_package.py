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


def test_missing_triton_leaves_cpu_backends_working():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail
        "import importlib.util as u\n"
        "u.find_spec = (lambda f: lambda n, *a: None if n == 'triton' else f(n, *a))(u.find_spec)\n"
        "import torch, metarl\n"
        "from metarl import backend\n"
        "assert not backend.available()['triton']\n"
        "for b in ('numba', 'torch', None):\n"
        "    env = metarl.make_vec('Bandit-v0', 8, backend=b); env.reset(seed=0)\n"
        "    env.step(torch.zeros(8, dtype=torch.int64))\n"
        "try:\n"
        "    metarl.make_vec('Bandit-v0', 8, backend='triton')\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "refused: backend='triton' but Triton is not installed" in out.stdout
