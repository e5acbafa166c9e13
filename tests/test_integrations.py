"""metarl.integrations without its peers: a missing peer library gives an ImportError that names the
metarl module that needs it, the pip package and the interop extra; ``import metarl`` imports no peer."""
import subprocess
import sys

import pytest

from metarl.integrations import INSTALL_HINT, require


def test_missing_peer_names_the_extra():
    with pytest.raises(ImportError, match=r"metarl.integrations.x needs some-package .*\[interop\]"):
        require("no_such_module_for_metarl", "some-package", "metarl.integrations.x")
    assert "[interop]" in INSTALL_HINT
    assert require("json", "json", "metarl.integrations.x").dumps(1) == "1"


def test_import_metarl_imports_no_peer():
    peers = ("stable_baselines3", "sb3_contrib", "torchrl", "tensordict")
    code = f"import sys, metarl, metarl.envs; print(sorted(m for m in {peers!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
