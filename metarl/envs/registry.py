"""Env ids -> classes, ``make_vec``, and gymnasium registration (``metarl/<id>``)."""
from __future__ import annotations

import importlib

import gymnasium as gym

# id -> "module:Class" (imported on first use, so `import metarl` stays light)
ENV_CLASSES = {
    "Bandit-v0": "metarl.envs.bandit:BanditVecEnv",
    "TabularMDP-v0": "metarl.envs.tabular_mdp:TabularMDPVecEnv",
    "Navigation2D-v0": "metarl.envs.navigation:Navigation2DVecEnv",
    "SemicircleGoal-v0": "metarl.envs.navigation:SemicircleGoalVecEnv",
    "CartPole-v1": "metarl.envs.cartpole:CartPoleVecEnv",
    "Pendulum-v1": "metarl.envs.pendulum:PendulumVecEnv",
    "MountainCar-v0": "metarl.envs.mountain_car:MountainCarVecEnv",
    "MountainCarContinuous-v0": "metarl.envs.mountain_car_continuous:MountainCarContinuousVecEnv",
    "Acrobot-v1": "metarl.envs.acrobot:AcrobotVecEnv",
    # MuJoCo families (optional extra: pip install -e ".[mujoco]")
    "HalfCheetahVel-v0": "metarl.envs.mujoco.half_cheetah_vel:HalfCheetahVelVecEnv",
    "HalfCheetahDir-v0": "metarl.envs.mujoco.half_cheetah_dir:HalfCheetahDirVecEnv",
    "AntDir-v0": "metarl.envs.mujoco.ant_dir:AntDirVecEnv",
    "AntGoal-v0": "metarl.envs.mujoco.ant_goal:AntGoalVecEnv",
    "HopperRandParams-v0": "metarl.envs.mujoco.hopper_rand_params:HopperRandParamsVecEnv",
    "Walker2dRandParams-v0": "metarl.envs.mujoco.walker2d_rand_params:Walker2dRandParamsVecEnv",
    # Meta-World+ benchmarks (optional extra: pip install -e ".[metaworld]"); ML1 takes task_name=
    "MetaWorld-ML1-v0": "metarl.envs.metaworld:ML1VecEnv",
    "MetaWorld-ML10-v0": "metarl.envs.metaworld:ML10VecEnv",
    "MetaWorld-ML25-v0": "metarl.envs.metaworld:ML25VecEnv",
    "MetaWorld-ML45-v0": "metarl.envs.metaworld:ML45VecEnv",
}


def env_class(env_id: str):
    """The class behind ``env_id`` (ids may carry the ``metarl/`` namespace)."""
    env_id = env_id.removeprefix("metarl/")
    if env_id not in ENV_CLASSES:
        raise ValueError(f"unknown env id {env_id!r}; known: {sorted(ENV_CLASSES)}")
    module, cls = ENV_CLASSES[env_id].split(":")
    return getattr(importlib.import_module(module), cls)


def make_vec(env_id: str, num_envs: int, *, device="cpu", seed: int | None = None,
             autoreset_mode="next_step", backend: str | None = None, **family_kwargs):
    """Make ``num_envs`` copies of a task-distribution env as one ``gymnasium.vector.VectorEnv``.

    Args:
        env_id: one of :data:`ENV_CLASSES` (e.g. ``"CartPole-v1"``, ``"Bandit-v0"``).
        num_envs: N, the number of copies (each with its own task).
        device: where state and outputs live (``"cpu"`` or a CUDA device).
        seed: seeds every env's random stream (resets, stochastic rewards); ``None``
            draws one from the OS. ``reset(seed=...)`` reseeds.
        autoreset_mode: ``"next_step"`` (gymnasium's default), ``"same_step"`` or
            ``"disabled"``, or a ``gymnasium.vector.AutoresetMode``.
        backend: ``None`` (Triton on CUDA; on the CPU C++ where the family has a
            kernel in ``metarl._C`` — CartPole-v1 — else Numba), ``"torch"`` (the
            reference), ``"numba"``, ``"triton"`` or ``"cpp"``.
        family_kwargs: the family's own options (e.g. ``arms=10`` for Bandit-v0).

    Example::

        >>> import metarl
        >>> env = metarl.make_vec("Bandit-v0", 1024, arms=10, seed=0)
        >>> env.num_envs, env.single_action_space
        (1024, Discrete(10))
    """
    cls = env_class(env_id)
    return cls(num_envs, device=device, seed=seed, autoreset_mode=autoreset_mode, backend=backend, **family_kwargs)


def _vector_entry_point(env_id):
    def make(num_envs: int = 1, **kwargs):
        return make_vec(env_id, num_envs, **kwargs)
    return make


def _single_entry_point(env_id):
    def make(**kwargs):
        from metarl.envs.single import SingleEnv
        return SingleEnv(env_id, **kwargs)
    return make


def register_gymnasium() -> None:
    """Register every family as ``metarl/<id>``: ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``
    gives the batched env, ``gymnasium.make`` a single one (:class:`metarl.envs.single.SingleEnv`)."""
    for env_id in ENV_CLASSES:
        name = f"metarl/{env_id}"
        if name not in gym.registry:
            gym.register(id=name, entry_point=_single_entry_point(env_id),
                         vector_entry_point=_vector_entry_point(env_id))
