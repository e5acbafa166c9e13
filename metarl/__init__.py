"""metarl: meta-reinforcement learning with compiled kernels on its hot paths."""
from metarl.envs import make_vec
from metarl.envs.registry import register_gymnasium

__version__ = "0.1.0"
__all__ = ["make_vec", "__version__"]

register_gymnasium()
