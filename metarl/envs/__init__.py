"""Batched task-distribution environments (gymnasium 1.x vector envs on torch tensors)."""
from metarl.envs.base import TaskVectorEnv
from metarl.envs.registry import ENV_CLASSES, env_class, make_vec
from metarl.envs.tasks import Tasks

__all__ = ["TaskVectorEnv", "Tasks", "ENV_CLASSES", "env_class", "make_vec"]
from metarl.envs.numpy_adapter import to_numpy  # noqa: E402
from metarl.envs.trial import TrialWrapper  # noqa: E402

__all__ += ["TrialWrapper", "to_numpy"]
from metarl.envs.single import SingleEnv  # noqa: E402

__all__ += ["SingleEnv"]
from metarl.envs.gym_adapter import GymnasiumTaskVecEnv  # noqa: E402

__all__ += ["GymnasiumTaskVecEnv"]
