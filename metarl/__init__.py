"""metarl: meta-reinforcement learning with compiled kernels on its hot paths.

``import metarl`` is light (no torch until an env, kernel or learner is used) and registers every
env family with gymnasium as ``metarl/<id>``.
"""
from metarl.envs.registry import make_vec, register_gymnasium

__version__ = "0.1.0"
__all__ = ["make_vec", "__version__"]

register_gymnasium()
