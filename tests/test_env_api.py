"""The vector-env contract shared by every family: gymnasium autoreset semantics,
tasks, state, seeding, registration, the NumPy adapter and bad input."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import metarl
from metarl.envs import ENV_CLASSES, to_numpy

N = 6
LIMIT = 20  # a short time limit so truncations happen often


def _gym_envs(mode):
    return SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=LIMIT) for _ in range(N)],
                         autoreset_mode=mode)


def _sync(ours, theirs):
    """Put gymnasium's envs in our (float32) state, so each step compares one transition."""
    state = ours.get_state().double().numpy()
    for i, e in enumerate(theirs.envs):
        e.unwrapped.state = state[i].copy()


@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
def test_autoreset_matches_sync_vector_env(mode):
    gmode = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP,
             "disabled": AutoresetMode.DISABLED}[mode]
    ours = metarl.make_vec("CartPole-v1", N, seed=0, autoreset_mode=mode, max_episode_steps=LIMIT)
    theirs = _gym_envs(gmode)
    assert ours.metadata["autoreset_mode"] == theirs.metadata["autoreset_mode"]
    ours.reset(seed=0)
    theirs.reset(seed=0)
    _sync(ours, theirs)
    g = torch.Generator().manual_seed(0)
    ends = 0
    for _ in range(120):
        a = torch.randint(0, 2, (N,), generator=g)
        o, r, te, tr, info = ours.step(a)
        go, gr, gte, gtr, ginfo = theirs.step(a.numpy())
        np.testing.assert_array_equal(te.numpy(), gte)
        np.testing.assert_array_equal(tr.numpy(), gtr)
        np.testing.assert_array_equal(r.numpy(), gr.astype(np.float32))
        done = te | tr
        ends += int(done.sum())
        if mode == "same_step":
            # reset rows differ (independent random streams); the final obs must agree
            gmask = ginfo.get("_final_obs", np.zeros(N, bool))
            np.testing.assert_array_equal(info["_final_obs"].numpy(), gmask)
            for i in np.flatnonzero(gmask):
                np.testing.assert_allclose(info["final_obs"][i].numpy(), ginfo["final_obs"][i], atol=1e-5)
            keep = ~done.numpy()
        elif mode == "next_step":
            keep = r.numpy() != 0  # reward 0 marks the reset step
        else:
            keep = np.ones(N, bool)
        np.testing.assert_allclose(o.numpy()[keep], go[keep], atol=1e-5)
        if mode == "disabled" and done.any():
            with pytest.raises(RuntimeError, match="reset"):
                ours.step(a)
            ours.reset(options={"reset_mask": done})
            theirs.reset(options={"reset_mask": done.numpy()})
        _sync(ours, theirs)
    assert ends > 10  # the run exercised many episode ends


def test_gymnasium_make_vec_entry_point():
    env = gym.make_vec("metarl/CartPole-v1", num_envs=5, vectorization_mode="vector_entry_point", seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5, 4)
    assert isinstance(env, gym.vector.VectorEnv)


# making ML25 / ML45 builds 25 / 45 of the package's envs (12-22 s here): slow
@pytest.mark.parametrize("env_id", [pytest.param(e, marks=pytest.mark.slow) if e in ("MetaWorld-ML25-v0",
                                                                                      "MetaWorld-ML45-v0") else e
                                    for e in sorted(ENV_CLASSES)])
def test_every_family_resets_and_steps(env_id):
    env = metarl.make_vec(env_id, 9, seed=0)
    obs, info = env.reset(seed=0, options={"tasks": env.sample_tasks(9)})
    assert obs.shape == (9, *env.single_observation_space.shape) and obs.dtype == torch.float32
    actions = torch.as_tensor(env.action_space.sample())
    if actions.dtype == torch.float64:
        actions = actions.float()
    obs, reward, terminated, truncated, info = env.step(actions)
    assert reward.shape == (9,) and terminated.dtype == torch.bool and truncated.dtype == torch.bool
    if env_id.startswith("MetaWorld-"):   # state lives in the package's env objects (tests/test_env_metaworld.py)
        with pytest.raises(NotImplementedError, match="state_dict"):
            env.get_state()
    else:
        assert env.get_state().shape == (9, env.kernels.STATE_DIM)


def test_tasks_set_get_and_partial():
    env = metarl.make_vec("CartPole-v1", N, seed=0)
    tasks = env.sample_tasks(N, generator=torch.Generator().manual_seed(0))
    env.set_tasks(tasks)
    assert env.tasks.equal(tasks)
    other = env.sample_tasks(2, generator=torch.Generator().manual_seed(1))
    env.set_tasks(other, env_ids=[1, 4])
    got = env.tasks
    assert got[1].equal(other[0]) and got[4].equal(other[1]) and got[0].equal(tasks[0])


def test_task_split_is_disjoint_and_reproducible():
    env = metarl.make_vec("CartPole-v1", 2)
    train, test = env.sample_task_split(100, 50, seed=3)
    train2, test2 = env.sample_task_split(100, 50, seed=3)
    assert train.equal(train2) and test.equal(test2)
    assert len(train) == 100 and len(test) == 50
    rows_train = {tuple(r) for r in torch.stack(train.fields(), 1).tolist()}
    rows_test = {tuple(r) for r in torch.stack(test.fields(), 1).tolist()}
    assert not rows_train & rows_test


def test_state_roundtrip_and_partial_reset():
    env = metarl.make_vec("CartPole-v1", N, seed=0)
    env.reset(seed=0)
    state = torch.randn(N, 4) * 0.05
    env.set_state(state)
    assert torch.equal(env.get_state(), state)
    obs, _ = env.reset(options={"env_ids": [2]})
    after = env.get_state()
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(after[keep], state[keep]) and not torch.equal(after[2], state[2])
    assert torch.equal(obs[keep], state[keep])


def test_reset_seed_reproduces_episodes():
    env = metarl.make_vec("CartPole-v1", N)
    a, _ = env.reset(seed=42)
    env.step(torch.ones(N, dtype=torch.int64))
    b, _ = env.reset(seed=42)
    assert torch.equal(a, b)


def test_numpy_adapter():
    env = to_numpy(metarl.make_vec("CartPole-v1", N, seed=0, autoreset_mode="same_step"))
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32
    for _ in range(30):
        obs, r, te, tr, info = env.step(np.ones(N, dtype=np.int64))
    assert isinstance(r, np.ndarray) and isinstance(te, np.ndarray)
    assert isinstance(info["final_obs"], np.ndarray)


# ---------------------------------------------------------------------------- bad input
def _usable_after(env, fn, exc, match):
    state = env.get_state()
    with pytest.raises(exc, match=match):
        fn()
    assert torch.equal(env.get_state(), state)  # nothing changed
    env.step(torch.zeros(env.num_envs, dtype=torch.int64))  # and it still steps


def test_bad_actions_discrete():
    env = metarl.make_vec("CartPole-v1", N, seed=0)
    env.reset(seed=0)
    _usable_after(env, lambda: env.step(torch.zeros(N + 1, dtype=torch.int64)), ValueError, "actions must have shape")
    _usable_after(env, lambda: env.step(torch.zeros(N)), TypeError, "integers")
    _usable_after(env, lambda: env.step(torch.full((N,), 2)), ValueError, r"actions\[0\] = 2 is outside Discrete\(2\)")
    _usable_after(env, lambda: env.step(torch.tensor([0, 1, 0, -1, 0, 1])), ValueError, r"actions\[3\] = -1")
    _usable_after(env, lambda: env.step(torch.zeros(N, dtype=torch.int64, device="meta")), ValueError, "meta")
    _usable_after(env, lambda: env.step("left"), TypeError, "actions must be")


def test_bad_actions_box():
    env = metarl.make_vec("Pendulum-v1", N, seed=0)
    env.reset(seed=0)
    ok = torch.zeros(N, 1)
    nan = ok.clone()
    nan[4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"actions\[4\] contains NaN"):
        env.step(nan)
    with pytest.raises(ValueError, match="actions must have shape"):
        env.step(torch.zeros(N, 2))
    with pytest.raises(TypeError, match="floating point"):
        env.step(torch.zeros(N, 1, dtype=torch.int64))
    env.step(ok)


def test_step_before_reset():
    env = metarl.make_vec("CartPole-v1", N)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(N, dtype=torch.int64))
    env.reset(seed=0)
    env.step(torch.zeros(N, dtype=torch.int64))


def test_bad_tasks_and_state():
    env = metarl.make_vec("CartPole-v1", N, seed=0)
    env.reset(seed=0)
    tasks = env.sample_tasks(N)
    bad = tasks.clone()
    bad.masspole[2] = -0.1
    with pytest.raises(ValueError, match="masspole"):
        env.set_tasks(bad)
    with pytest.raises(ValueError, match="shape"):
        env.set_tasks(tasks[:3])
    wrong_dtype = tasks.clone()
    wrong_dtype.length = wrong_dtype.length.double()
    with pytest.raises(TypeError, match="length"):
        env.set_tasks(wrong_dtype)
    with pytest.raises(TypeError, match="CartPoleTasks"):
        env.set_tasks({"masspole": 1.0})
    with pytest.raises(ValueError, match="env_ids"):
        env.set_tasks(tasks[:1], env_ids=[N])
    with pytest.raises(ValueError, match="state must have shape"):
        env.set_state(torch.zeros(N, 3))
    with pytest.raises(ValueError, match="NaN"):
        env.set_state(torch.full((N, 4), float("nan")))
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"task": tasks})
    assert env.tasks.equal(env.default_tasks(N))  # nothing was applied
    env.step(torch.zeros(N, dtype=torch.int64))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown env id"):
        metarl.make_vec("CartPole-v9", 4)
    with pytest.raises(ValueError, match="num_envs"):
        metarl.make_vec("CartPole-v1", 0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        metarl.make_vec("CartPole-v1", 4, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="backend"):
        metarl.make_vec("CartPole-v1", 4, backend="fortran")


@pytest.mark.parametrize("env_id", sorted(ENV_CLASSES))
def test_single_env_passes_gymnasium_checker(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(f"metarl/{env_id}")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_small_batches_leave_numba_thread_count_alone():
    import numba

    before = numba.get_num_threads()
    env = metarl.make_vec("Bandit-v0", 8, seed=0, backend="numba")
    env.reset(seed=0)
    env.step(torch.zeros(8, dtype=torch.int64))
    assert numba.get_num_threads() == before


# the families stepped by metarl's own kernels (the MuJoCo and Meta-World families step through MuJoCo:
# tests/test_env_mujoco.py, tests/test_env_metaworld.py)
KERNEL_ENV_IDS = sorted(e for e, path in ENV_CLASSES.items()
                        if not path.startswith(("metarl.envs.mujoco.", "metarl.envs.metaworld:")))


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("env_id", KERNEL_ENV_IDS)
def test_public_kernel_ops_agree_across_backends(env_id, mode, backend):
    """Each family module's ``step``/``reset`` ops (allocating, dispatching) equal the reference."""
    n = 9
    env = metarl.make_vec(env_id, n, seed=0, backend="torch")
    env.reset(seed=0, options={"tasks": env.sample_tasks(n, generator=torch.Generator().manual_seed(0))})
    fam, params, key = env.kernels, env._kernel_params(), env._key
    g = torch.Generator().manual_seed(1)
    env._needs_reset[::3] = mode == 0  # next_step: some envs reset instead of stepping

    def buffers():
        return env._state.clone(), env._elapsed.clone(), env._needs_reset.clone(), env._counter.clone()

    space = env.single_action_space
    if hasattr(space, "n"):
        action = torch.randint(0, int(space.n), (n,), generator=g)
    else:
        action = torch.rand((n, *space.shape), generator=g) * 0.2 - 0.1
    ref_bufs, got_bufs = buffers(), buffers()
    ref = fam.step(*ref_bufs, params, action, key, 3, mode, backend="torch")
    got = fam.step(*got_bufs, params, action, key, 3, mode, backend=backend)
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], ref[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(got[2], ref[2]) and torch.equal(got[3], ref[3])
    assert (got[4] is None) == (ref[4] is None) == (mode != 1)
    if mode == 1:
        torch.testing.assert_close(got[4], ref[4], atol=1e-5, rtol=1e-5)
    for a, b in zip(got_bufs, ref_bufs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    mask = torch.rand(n, generator=g) < 0.5
    ref_bufs, got_bufs = buffers(), buffers()
    ref_obs = fam.reset(*ref_bufs, params, key, mask, backend="torch")
    got_obs = fam.reset(*got_bufs, params, key, mask, backend=backend)
    torch.testing.assert_close(got_obs, ref_obs, atol=1e-6, rtol=1e-6)
