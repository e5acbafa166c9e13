"""metarl under other libraries' APIs (optional extras: ``pip install -e ".[interop]"``).

- :mod:`metarl.integrations.sb3`: ``VecEnv(env)``, a Stable-Baselines3 ``VecEnv`` over a metarl vector env;
- :mod:`metarl.integrations.torchrl`: ``MetaRLEnv(env)``, a batched TorchRL ``EnvBase``.

Each module imports its peer library when it is imported and raises an ``ImportError`` naming the extra
when the peer is missing; ``import metarl`` never imports them.
"""
from __future__ import annotations

import importlib

INSTALL_HINT = 'pip install -e ".[interop]"'


def require(module: str, package: str, needed_by: str):
    """Import ``module`` (from the pip package ``package``) or raise an ``ImportError`` that says which
    metarl module needs it and how to install the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{needed_by} needs {package} ({e}); install metarl's interop extra: {INSTALL_HINT}") from e


__all__ = ["INSTALL_HINT", "require"]
