"""metarl: meta-reinforcement learning with compiled kernels on its hot paths.

``import metarl`` is light (no torch until an env, kernel or learner is used) and registers every
env family with gymnasium as ``metarl/<id>``.
"""
import os

# Idle OpenMP workers (Numba's pool, torch's, metarl._C's) sleep instead of spinning. Set before the
# runtimes load (Numba's loads at its first parallel call, so this holds even when torch came first):
# spinning workers took the cores from the thread that had work, e.g. RL^2's PPO update on a MuJoCo
# family ran 50x slower (9.6 s instead of 0.18 s per iteration). OMP_WAIT_POLICY=ACTIVE overrides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from metarl.envs.registry import make_vec, register_gymnasium  # noqa: E402

__version__ = "0.1.0"
__all__ = ["make_vec", "__version__"]

register_gymnasium()
