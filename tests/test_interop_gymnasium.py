"""Every id metarl registers with gymnasium, through gymnasium's own entry points and checks.

Single envs: ``gymnasium.utils.env_checker.check_env`` on ``gymnasium.make("metarl/<id>")`` for every id is
``tests/test_env_api.py::test_single_env_passes_gymnasium_checker``; here the registry itself (every family
registered, both entry points) and the vector side, for which gymnasium ships no checker: the contract of
``gymnasium.vector.VectorEnv`` checked with gymnasium's own pieces on every id made by
``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")`` — batched spaces equal to
``batch_space`` of the single spaces, observations passing gymnasium's passive checker (its warnings made
errors) for reset, step and same-step final observations, seed determinism of reset and step, results not
reused between steps, autoreset modes in ``metadata``; and gymnasium's own ``SyncVectorEnv`` over the single
env (``vectorization_mode="sync"``) and its vector wrappers over the NumPy view.

Ids whose extra is missing are skipped for that extra only (MuJoCo families: ``mujoco``; Meta-World:
``metaworld``); making ML10 / ML25 / ML45 builds 10 / 25 / 45 of the package's envs (7-22 s here): slow.
"""
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.utils.passive_env_checker import check_obs
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

import metarl  # noqa: F401  (registers the ids)
from metarl.envs import ENV_CLASSES, to_numpy

# families whose episodes start in a state fixed by the task (the seed changes what follows, not the start):
# a bandit's constant observation, TabularMDP's start state, the navigation tasks' origin, Meta-World's
# task-set object and goal positions
FIXED_START = {"Bandit-v0", "TabularMDP-v0", "Navigation2D-v0", "SemicircleGoal-v0", "MetaWorld-ML1-v0",
               "MetaWorld-ML10-v0", "MetaWorld-ML25-v0", "MetaWorld-ML45-v0"}
REGISTERED = sorted(name.removeprefix("metarl/") for name in gym.registry if name.startswith("metarl/"))
N = 3


def needs_extra(env_id):
    if ENV_CLASSES[env_id].startswith("metarl.envs.mujoco."):
        pytest.importorskip("mujoco")
    if ENV_CLASSES[env_id].startswith("metarl.envs.metaworld:"):
        pytest.importorskip("metaworld")


def ids(slow=("MetaWorld-ML10-v0", "MetaWorld-ML25-v0", "MetaWorld-ML45-v0")):
    return [pytest.param(e, marks=pytest.mark.slow) if e in slow else e for e in REGISTERED]


def test_every_family_is_registered_with_both_entry_points():
    assert REGISTERED == sorted(ENV_CLASSES)
    for env_id in REGISTERED:
        spec = gym.spec(f"metarl/{env_id}")
        assert spec.entry_point is not None and spec.vector_entry_point is not None


def numpy_actions(env, generator):
    """A batch of actions sampled from the single action space with ``generator`` (reproducible)."""
    space = env.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        return generator.integers(0, space.n, env.num_envs)
    return generator.uniform(space.low, space.high, (env.num_envs, *space.shape)).astype(np.float32)


def checked_obs(obs, space, method):
    """gymnasium's passive observation check (dtype, shape, bounds) with its warnings as errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_obs(obs, space, method)


@pytest.mark.parametrize("env_id", ids())
def test_vector_env_contract(env_id):
    needs_extra(env_id)
    env = gym.make_vec(f"metarl/{env_id}", N, vectorization_mode="vector_entry_point", seed=0,
                       autoreset_mode="same_step")
    assert isinstance(env, gym.vector.VectorEnv) and env.num_envs == N
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.observation_space == batch_space(env.single_observation_space, N)
    assert env.action_space == batch_space(env.single_action_space, N)
    view = to_numpy(env)

    def run(seed, steps=6):
        obs, info = view.reset(seed=seed)
        assert isinstance(info, dict)
        checked_obs(obs, view.observation_space, "reset")
        out, generator = [obs.copy()], np.random.default_rng(seed)
        previous = obs
        for _ in range(steps):
            obs, reward, terminated, truncated, info = view.step(numpy_actions(view, generator))
            checked_obs(obs, view.observation_space, "step")
            assert reward.shape == (N,) and np.issubdtype(reward.dtype, np.floating)
            assert terminated.shape == truncated.shape == (N,) and terminated.dtype == truncated.dtype == np.bool_
            assert not np.shares_memory(obs, previous)   # gymnasium's check_returned_data_not_reused, batched
            done = terminated | truncated
            if done.any():
                assert np.array_equal(info["_final_obs"], done)
                for i in np.flatnonzero(done):
                    checked_obs(info["final_obs"][i], view.single_observation_space, "step (final_obs)")
            previous = obs
            out += [obs.copy(), reward.copy(), terminated.copy(), truncated.copy()]
        return out

    first, again = run(seed=1), run(seed=1)
    assert data_equivalence(first, again)   # gymnasium's check_reset_seed / check_step_determinism, batched
    if env_id not in FIXED_START:
        assert not data_equivalence(first[0], run(seed=2, steps=0)[0])
    view.close()


@pytest.mark.parametrize("env_id", ids())
def test_gymnasium_sync_vector_env_over_the_single_env(env_id):
    """gymnasium's own vectorisation of the single env: SyncVectorEnv, its autoreset, its spaces."""
    needs_extra(env_id)
    env = gym.make_vec(f"metarl/{env_id}", 2, vectorization_mode="sync")
    assert isinstance(env, gym.vector.SyncVectorEnv)
    obs, _ = env.reset(seed=0)
    checked_obs(obs, env.observation_space, "reset")
    for _ in range(4):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        checked_obs(obs, env.observation_space, "step")
    env.close()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_gymnasium_vector_wrappers(mode):
    """gymnasium's vector wrappers over the NumPy view (CleanRL's stack): the episode statistics equal the
    returns summed from the rewards, in both autoreset modes (next_step's reset step counts for no episode)."""
    env = metarl.make_vec("Pendulum-v1", N, seed=0, autoreset_mode=mode, max_episode_steps=10)
    wrapped = gym.wrappers.vector.RecordEpisodeStatistics(gym.wrappers.vector.ClipAction(to_numpy(env)))
    wrapped = gym.wrappers.vector.NormalizeObservation(wrapped) if mode == AutoresetMode.NEXT_STEP else wrapped
    wrapped.reset(seed=0)
    returns, episodes = np.zeros(N), 0
    for _ in range(25):
        _, reward, terminated, truncated, info = wrapped.step(np.full((N, 1), 3.0, dtype=np.float32))
        returns += reward
        if "episode" in info:
            ended = info["_episode"]
            np.testing.assert_allclose(info["episode"]["r"][ended], returns[ended], rtol=1e-5)
            assert (info["episode"]["l"][ended] == 10).all()
            returns[ended] = 0
            episodes += int(ended.sum())
    assert episodes == 2 * N
