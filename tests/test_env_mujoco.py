"""MuJoCo families: step-for-step parity with gymnasium's v5 envs (task applied), the batch kernel
against its plain-loop reference, the task API, autoreset, trials, determinism and bad input.

Physics is the same MuJoCo calls on the same state (warm start included), so states agree
exactly; observations and rewards are float32 of float64 values, compared to ``ATOL``.
"""
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

mujoco = pytest.importorskip("mujoco")  # the mujoco extra (.ci/run installs it)

import metarl  # noqa: E402
from metarl.envs import TrialWrapper  # noqa: E402
from metarl.kernels.envs import mujoco_batch as mb  # noqa: E402

FAMILIES = ["HalfCheetahVel-v0", "HalfCheetahDir-v0", "AntDir-v0", "AntGoal-v0", "HopperRandParams-v0",
            "Walker2dRandParams-v0"]
N = 3          # env copies per parity run
LIMIT = 7      # a short time limit: several truncations per run
ATOL = 2e-5    # float32 observations / rewards against gymnasium's float64 (the physics is bit-exact)


# ----------------------------------------------------------------------------- the oracle
def _oracle(env_id: str, tasks, i: int):
    """gymnasium's v5 env with task ``i`` applied, and the reward the family pays from its
    ``(reward, info, env)``: the v5 reward with the family's term recomputed."""
    if env_id == "HalfCheetahVel-v0":
        v = float(tasks.goal_velocity[i])
        e = gym.make("HalfCheetah-v5", forward_reward_weight=0.0, ctrl_cost_weight=0.05, max_episode_steps=LIMIT)
        return e, lambda r, info, u: r - abs(info["x_velocity"] - v)
    if env_id == "HalfCheetahDir-v0":
        d = float(tasks.direction[i])
        e = gym.make("HalfCheetah-v5", forward_reward_weight=d, ctrl_cost_weight=0.05, max_episode_steps=LIMIT)
        return e, lambda r, info, u: r
    if env_id == "AntDir-v0":
        dx, dy = (float(x) for x in tasks.direction[i])
        e = gym.make("Ant-v5", forward_reward_weight=0.0, max_episode_steps=LIMIT)
        return e, lambda r, info, u: r + dx * info["x_velocity"] + dy * info["y_velocity"]
    if env_id == "AntGoal-v0":
        g = tasks.goal[i].double().numpy()
        e = gym.make("Ant-v5", forward_reward_weight=0.0, ctrl_cost_weight=0.1, healthy_reward=0.0,
                     terminate_when_unhealthy=False, exclude_current_positions_from_observation=False,
                     max_episode_steps=LIMIT)
        return e, lambda r, info, u: r - np.abs(u.data.body("torso").xpos[:2] - g).sum()
    gym_id = {"HopperRandParams-v0": "Hopper-v5", "Walker2dRandParams-v0": "Walker2d-v5"}[env_id]
    e = gym.make(gym_id, max_episode_steps=LIMIT)
    for name in ("body_mass", "body_inertia", "dof_damping", "geom_friction"):
        getattr(e.unwrapped.model, name)[:] = getattr(tasks, name)[i].numpy()
    return e, lambda r, info, u: r


def _sync(gym_env, ours, i):
    """Put gymnasium's env in env ``i``'s state (as its reset_model would with our noise)."""
    u, lay = gym_env.unwrapped, ours.layout
    mujoco.mj_setState(u.model, u.data, ours._rows[i, :lay.nstate].numpy(), mb.STATE_SPEC)
    mujoco.mj_forward(u.model, u.data)
    return u._get_obs()


@pytest.mark.parametrize("env_id", FAMILIES)
def test_steps_match_gymnasium(env_id):
    """Resets, random tasks, random states (set_state), random actions, terminations and
    time-limit truncations against gymnasium's env, step for step (same_step autoreset)."""
    g = torch.Generator().manual_seed(0)
    ours = metarl.make_vec(env_id, N, seed=0, autoreset_mode="same_step", max_episode_steps=LIMIT)
    tasks = ours.sample_tasks(N, generator=g)
    obs, _ = ours.reset(seed=0, options={"tasks": tasks})
    oracles = [_oracle(env_id, tasks, i) for i in range(N)]
    for i, (e, _) in enumerate(oracles):
        e.reset(seed=i)
        np.testing.assert_allclose(obs[i].numpy(), _sync(e, ours, i), atol=ATOL)
    ends = terminations = 0
    for t in range(30):
        if t % 9 == 4:  # a random state in every env, set the same way on both sides
            scale = torch.tensor([[0.5], [0.05], [0.05]], dtype=torch.float64)  # env 0: often unhealthy
            state = ours.get_state() + scale * torch.randn(N, ours.layout.STATE_DIM, generator=g, dtype=torch.float64)
            ours.set_state(state)
            for (e, _), s in zip(oracles, state.numpy()):
                e.unwrapped.set_state(s[:ours.layout.nq], s[ours.layout.nq:])
                e._elapsed_steps = 0  # set_state restarts the episode clock, as ours does
        low, high = (torch.as_tensor(b) for b in (ours.single_action_space.low, ours.single_action_space.high))
        a = low + (high - low) * torch.rand(N, len(low), generator=g) * 1.2 - 0.1 * (high - low)  # some out of range
        obs, reward, terminated, truncated, info = ours.step(a)
        for i, (e, pay) in enumerate(oracles):
            o, r, te, tr, inf = e.step(a[i].numpy())
            assert bool(terminated[i]) == te and bool(truncated[i]) == tr, (t, i)
            np.testing.assert_allclose(reward[i].item(), pay(r, inf, e.unwrapped), atol=ATOL, rtol=1e-6)
            if te or tr:
                ends += 1
                terminations += te
                assert info["_final_obs"][i]
                np.testing.assert_allclose(info["final_obs"][i].numpy(), o, atol=ATOL)
                e.reset()
                o = _sync(e, ours, i)  # our reset state, as gymnasium's reset would have made it
            else:
                assert not info["_final_obs"][i]
            np.testing.assert_allclose(obs[i].numpy(), o, atol=ATOL)
    assert ends >= N * 3  # truncations were exercised
    assert terminations >= 1 or env_id in ("HalfCheetahVel-v0", "HalfCheetahDir-v0", "AntGoal-v0")


@pytest.mark.parametrize("env_id, gym_id, z, angle", [("AntDir-v0", "Ant-v5", 2, None),
                                                       ("HopperRandParams-v0", "Hopper-v5", 1, 2),
                                                       ("Walker2dRandParams-v0", "Walker2d-v5", 1, 2)])
def test_health_matches_gymnasium_at_the_boundaries(env_id, gym_id, z, angle):
    """The termination test on states at, just inside and just outside every threshold."""
    ours = metarl.make_vec(env_id, 1, seed=0)
    u = gym.make(gym_id).unwrapped
    u.reset(seed=0)
    base = np.concatenate((u.init_qpos, u.init_qvel))
    cases = []
    for value in (0.2, 0.7, 0.8, 1.0, 2.0, np.inf, np.nan):
        for eps in (-1e-9, 0.0, 1e-9):
            cases.append({z: value + eps})
            if angle is not None:
                cases += [{angle: value + eps}, {angle: -value + eps}]
    nq = ours.layout.nq
    cases += [{nq + 1: 100.0}, {nq + 1: 99.999}, {nq + 2: -100.0}, {nq: np.nan}, {3: 100.0}]
    for case in cases:
        s = base.copy()
        for k, v in case.items():
            s[k] = v
        u.set_state(s[:nq], s[nq:])
        rows = ours._rows.clone()
        rows[0, ours.layout.qpos:ours.layout.qpos + nq] = torch.from_numpy(s[:nq])
        rows[0, ours.layout.qvel:ours.layout.qvel + ours.layout.nv] = torch.from_numpy(s[nq:])
        assert bool(ours._healthy(rows)[0]) == bool(u.is_healthy), case


@pytest.mark.parametrize("env_id", ["AntDir-v0", "HopperRandParams-v0"])
def test_batch_matches_its_reference_exactly(env_id):
    """The mjBatch step (threads, ids subsets, per-env models) equals the plain Python loop bit for bit."""
    env = metarl.make_vec(env_id, 5, seed=1, num_threads=2)
    env.reset(seed=1, options={"tasks": env.sample_tasks(5, generator=torch.Generator().manual_seed(1))})
    if env_id == "HopperRandParams-v0":
        models = []
        for i in range(5):
            m = mujoco.MjModel.from_xml_path(env.model_path)
            for name, t in zip(env.task_type.field_names(), env.tasks.fields()):
                getattr(m, name)[:] = t[i].numpy()
            models.append(m)
    else:
        models = env.model
    rows = env._rows.numpy()
    rng = np.random.default_rng(0)
    for k in range(8):
        rows[:, env.layout.ctrl:env.layout.ctrl + env.layout.nu] = rng.uniform(-1, 1, (5, env.layout.nu))
        ids = None if k % 2 else np.array([0, 3, 4], dtype=np.int32)
        ref = rows.copy()
        mb.step_reference(models, ref, env.layout, env.frame_skip, ids)
        env._batch.step(ids)
        assert np.array_equal(rows, ref)
    assert np.abs(rows[:, env.layout.extras:]).max() > 0 if env_id == "AntDir-v0" else True


def test_thread_count_does_not_change_results():
    def run(threads):
        env = metarl.make_vec("AntDir-v0", 6, seed=3, num_threads=threads, autoreset_mode="same_step",
                              max_episode_steps=5)
        out = [env.reset(seed=3)[0]]
        g = torch.Generator().manual_seed(0)
        for _ in range(12):
            out.append(env.step(torch.rand(6, 8, generator=g) * 2 - 1)[0])
        return torch.stack(out)

    assert torch.equal(run(1), run(2))


# ----------------------------------------------------------------------------- task API
def test_tasks_sampled_from_the_stated_distributions():
    g = torch.Generator().manual_seed(0)
    n = 20_000
    vel = metarl.make_vec("HalfCheetahVel-v0", 1).sample_tasks(n, generator=g).goal_velocity
    assert 0 <= vel.min() < 0.01 and 2.99 < vel.max() <= 3 and abs(vel.mean().item() - 1.5) < 0.03
    d = metarl.make_vec("HalfCheetahDir-v0", 1).sample_tasks(n, generator=g).direction
    assert set(d.unique().tolist()) == {-1.0, 1.0} and abs(d.mean().item()) < 0.03
    u = metarl.make_vec("AntDir-v0", 1).sample_tasks(n, generator=g).direction
    assert set(u[:, 0].unique().tolist()) == {-1.0, 1.0} and torch.all(u[:, 1] == 0)
    c = metarl.make_vec("AntDir-v0", 1, directions="circle").sample_tasks(n, generator=g).direction
    torch.testing.assert_close(c.norm(dim=1), torch.ones(n))
    assert abs(c.mean(0)).max() < 0.02  # uniform angle
    goal = metarl.make_vec("AntGoal-v0", 1).sample_tasks(n, generator=g).goal
    r = goal.norm(dim=1)
    assert r.max() <= 3.0 and abs((r < 1.5).float().mean().item() - 0.25) < 0.02  # uniform in area
    env = metarl.make_vec("Walker2dRandParams-v0", 1)
    t, default = env.sample_tasks(n, generator=g), env.default_tasks(1)
    for name, base in (("body_mass", 1.5), ("body_inertia", 1.5), ("dof_damping", 1.3), ("geom_friction", 1.5)):
        value, ref = getattr(t, name), getattr(default, name)
        nz = ref.expand_as(value) > 0
        exponent = torch.log(value[nz] / ref.expand_as(value)[nz]) / np.log(base)
        assert exponent.min() >= -3 - 1e-9 and exponent.max() <= 3 + 1e-9
        assert abs(exponent.mean().item()) < 0.05 and abs(exponent.std().item() - 6 / 12 ** 0.5) < 0.05
        assert torch.all(value[~nz] == 0)  # zero entries (world body, root dofs) stay zero


@pytest.mark.parametrize("env_id", FAMILIES)
def test_task_set_get_split_and_partial(env_id):
    env = metarl.make_vec(env_id, 4, seed=0)
    tasks = env.sample_tasks(4, generator=torch.Generator().manual_seed(0))
    env.set_tasks(tasks)
    assert env.tasks.equal(tasks)
    other = env.sample_tasks(2, generator=torch.Generator().manual_seed(1))
    env.set_tasks(other, env_ids=[1, 3])
    got = env.tasks
    assert got[1].equal(other[0]) and got[3].equal(other[1]) and got[0].equal(tasks[0])
    train, test = env.sample_task_split(6, 3, seed=2)
    train2, test2 = env.sample_task_split(6, 3, seed=2)
    assert train.equal(train2) and test.equal(test2) and len(train) == 6 and len(test) == 3
    if env_id.endswith("RandParams-v0"):  # the batch's per-env model fields follow the tasks
        for name, t in zip(env.task_type.field_names(), env.tasks.fields()):
            assert np.array_equal(env._batch.expand(name, tuple(t.shape[1:])), t.numpy())


def test_bad_tasks_raise_and_change_nothing():
    cases = [("HalfCheetahVel-v0", "goal_velocity", lambda t: t.goal_velocity.__setitem__(0, float("nan"))),
             ("HalfCheetahDir-v0", "direction", lambda t: t.direction.__setitem__(1, 0.5)),
             ("AntDir-v0", "direction", lambda t: t.direction.__setitem__(0, torch.tensor([1.0, 1.0]))),
             ("AntGoal-v0", "goal", lambda t: t.goal.__setitem__(2, float("inf"))),
             ("HopperRandParams-v0", "body_mass", lambda t: t.body_mass.__setitem__((0, 1), -1.0)),
             ("Walker2dRandParams-v0", "geom_friction", lambda t: t.geom_friction.__setitem__((0, 1, 0), float("nan")))]
    for env_id, field, spoil in cases:
        env = metarl.make_vec(env_id, 3, seed=0)
        before = env.tasks
        bad = env.sample_tasks(3)
        spoil(bad)
        with pytest.raises(ValueError, match=f"tasks.{field}"):
            env.set_tasks(bad)
        with pytest.raises(ValueError, match=f"tasks.{field}"):
            env.reset(options={"tasks": bad})
        assert env.tasks.equal(before)
    env = metarl.make_vec("HopperRandParams-v0", 3)
    tasks = env.sample_tasks(3)
    with pytest.raises(ValueError, match="shape"):
        env.set_tasks(tasks[:2])
    wrong = env.sample_tasks(3)
    wrong.body_mass = wrong.body_mass.float()
    with pytest.raises(TypeError, match="body_mass"):
        env.set_tasks(wrong)
    with pytest.raises(TypeError, match="HopperRandParamsTasks"):
        env.set_tasks(metarl.make_vec("Walker2dRandParams-v0", 3).sample_tasks(3))
    with pytest.raises(ValueError, match="directions"):
        metarl.make_vec("AntDir-v0", 2, directions="diagonal")


def test_bad_actions_and_options():
    env = metarl.make_vec("HalfCheetahDir-v0", 4, seed=0)
    env.reset(seed=0)
    state = env.get_state()
    nan = torch.zeros(4, 6)
    nan[2, 3] = float("nan")
    for actions, exc, match in [(nan, ValueError, r"actions\[2\] contains NaN"),
                                (torch.zeros(4, 5), ValueError, "actions must have shape"),
                                (torch.zeros(5, 6), ValueError, "actions must have shape"),
                                (torch.zeros(4, 6, dtype=torch.int64), TypeError, "floating point"),
                                (torch.zeros(4, 6, device="meta"), ValueError, "meta"),
                                ("fast", TypeError, "actions must be")]:
        with pytest.raises(exc, match=match):
            env.step(actions)
        assert torch.equal(env.get_state(), state)
    env.step(np.zeros((4, 6), dtype=np.float64))  # NumPy accepted
    with pytest.raises(ValueError, match="backend"):
        metarl.make_vec("AntGoal-v0", 2, backend="numba")
    with pytest.raises(ValueError, match="CPU"):
        metarl.make_vec("AntGoal-v0", 2, device="meta")
    with pytest.raises(ValueError, match="num_threads"):
        metarl.make_vec("AntGoal-v0", 2, num_threads=0)
    with pytest.raises(ValueError, match="state must have shape"):
        env.set_state(torch.zeros(4, 17, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        env.set_state(torch.full((4, 18), float("nan"), dtype=torch.float64))


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)  # `import mujoco` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[mujoco\]"'):
        metarl.make_vec("HalfCheetahVel-v0", 2)
    env = metarl.make_vec("CartPole-v1", 2, seed=0)  # the kernel families do not need it
    env.reset(seed=0)
    env.step(torch.zeros(2, dtype=torch.int64))


# ----------------------------------------------------------------------------- state, seeds, autoreset
def test_state_roundtrip_and_exact_resume():
    env = metarl.make_vec("AntGoal-v0", 4, seed=5, autoreset_mode="same_step", max_episode_steps=6)
    env.reset(seed=5, options={"tasks": env.sample_tasks(4, generator=torch.Generator().manual_seed(0))})
    g = torch.Generator().manual_seed(1)
    actions = [torch.rand(4, 8, generator=g) * 2 - 1 for _ in range(20)]
    for a in actions[:7]:
        env.step(a)
    sd = env.state_dict()
    rest = [env.step(a) for a in actions[7:]]
    other = metarl.make_vec("AntGoal-v0", 4, seed=99, autoreset_mode="same_step", max_episode_steps=6)
    other.load_state_dict(sd)
    for a, want in zip(actions[7:], rest):
        got = other.step(a)
        for x, y in zip(got[:4], want[:4]):
            assert torch.equal(x, y)
        assert torch.equal(got[4]["final_obs"], want[4]["final_obs"])
    state = env.get_state()
    env.set_state(state)
    assert torch.equal(env.get_state(), state) and state.dtype == torch.float64
    part = state[:2] + 0.01
    env.set_state(part, env_ids=[1, 3])
    got = env.get_state()
    assert torch.equal(got[[1, 3]], part) and torch.equal(got[[0, 2]], state[[0, 2]])


def test_rand_params_resume_restores_the_model():
    env = metarl.make_vec("HopperRandParams-v0", 3, seed=0)
    env.reset(seed=0, options={"tasks": env.sample_tasks(3)})
    sd = env.state_dict()
    other = metarl.make_vec("HopperRandParams-v0", 3, seed=1)
    other.load_state_dict(sd)
    a = torch.full((3, 3), 0.3)
    assert torch.equal(env.step(a)[0], other.step(a)[0])
    assert np.array_equal(other._batch.expand("body_mass", (5,)), env.tasks.body_mass.numpy())


def test_reset_noise_and_seeds():
    def trajectory(seed):
        env = metarl.make_vec("HopperRandParams-v0", 5, seed=seed, max_episode_steps=4)
        out = [env.reset(seed=seed)[0]]
        for _ in range(10):
            out.append(env.step(torch.full((5, 3), 0.2))[0])
        return torch.stack(out)

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))
    env = metarl.make_vec("HalfCheetahVel-v0", 2000, seed=0)
    env.reset(seed=0)
    lay, rows = env.layout, env._rows
    dq = rows[:, lay.qpos:lay.qpos + lay.nq] - torch.from_numpy(env.model.qpos0)
    assert dq.abs().max() <= 0.1 and abs(dq.std().item() - 0.1 / 3 ** 0.5) < 0.003  # U(±0.1)
    dv = rows[:, lay.qvel:lay.qvel + lay.nv]
    assert abs(dv.std().item() - 0.1) < 0.003 and abs(dv.mean().item()) < 0.003  # 0.1·N(0, 1)
    assert torch.all(rows[:, lay.time] == 0) and torch.all(rows[:, lay.warmstart:lay.warmstart + lay.nv] == 0)


@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
def test_autoreset_modes(mode):
    env = metarl.make_vec("Walker2dRandParams-v0", 4, seed=0, autoreset_mode=mode, max_episode_steps=3)
    env.reset(seed=0)
    a = torch.zeros(4, 6)
    for t in range(1, 5):
        obs, reward, terminated, truncated, info = env.step(a)
        if t == 3:
            assert truncated.all()
            if mode == "same_step":
                assert info["_final_obs"].all() and info["final_obs"].shape == (4, 17)
                assert not torch.equal(info["final_obs"], obs)  # obs is the reset one
            else:
                assert info == {}
        if t == 4:
            if mode == "next_step":  # the reset step: reward 0, not done, elapsed restarts
                assert torch.all(reward == 0) and not (terminated | truncated).any()
                assert torch.all(env._elapsed == 0)
            elif mode == "same_step":
                assert not truncated.any() and torch.all(env._elapsed == 1)
        if mode == "disabled" and t == 3:
            with pytest.raises(RuntimeError, match="reset"):
                env.step(a)
            env.reset(options={"reset_mask": truncated})
    space = env.single_observation_space
    assert all(space.contains(o) for o in obs.numpy())


def test_trial_wrapper_and_gymnasium_make_vec():
    env = TrialWrapper(metarl.make_vec("HalfCheetahVel-v0", 3, seed=0, autoreset_mode="same_step",
                                       max_episode_steps=4), episodes_per_trial=2)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 17 + 6 + 2) and info["trial_start"].all()
    first = env.base.tasks
    starts = []
    for _ in range(8):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(3, 6))
        starts.append(info["trial_start"])
    assert torch.stack(starts).sum(0).tolist() == [1, 1, 1]  # one new trial after 2 episodes of 4 steps
    assert not env.base.tasks.equal(first)
    vec = gym.make_vec("metarl/AntDir-v0", num_envs=2, vectorization_mode="vector_entry_point", seed=0,
                       max_episode_steps=200, directions="circle")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, 105) and vec.max_episode_steps == 200 and isinstance(vec, gym.vector.VectorEnv)


def test_observation_options_threads_and_close():
    env = metarl.make_vec("HalfCheetahDir-v0", 2, seed=0, exclude_current_positions_from_observation=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 18) and torch.equal(obs[:, 0], env.get_state()[:, 0].float())
    assert metarl.make_vec("AntDir-v0", 2, exclude_current_positions_from_observation=False).obs_dim == 107
    assert metarl.make_vec("AntGoal-v0", 2, exclude_current_positions_from_observation=True).obs_dim == 105
    assert env.num_threads == torch.get_num_threads() and env._batch.nthread == env.num_threads
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(torch.zeros(2, 6))


def test_observations_in_space_over_long_random_runs():
    for env_id in ("AntDir-v0", "HopperRandParams-v0"):
        env = metarl.make_vec(env_id, 8, seed=0, max_episode_steps=50)
        obs, _ = env.reset(seed=0, options={"tasks": env.sample_tasks(8)})
        space = env.single_observation_space
        g = torch.Generator().manual_seed(0)
        for _ in range(60):
            assert obs.dtype == torch.float32 and all(space.contains(o) for o in obs.numpy())
            obs, reward, *_ = env.step(torch.rand(8, env.single_action_space.shape[0], generator=g) * 2 - 1)
            assert reward.dtype == torch.float32 and torch.isfinite(reward).all()


@pytest.mark.parametrize("module", ["half_cheetah_vel", "half_cheetah_dir", "ant_dir", "ant_goal",
                                    "hopper_rand_params", "walker2d_rand_params"])
def test_docstring_examples(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"metarl.envs.mujoco.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- MuJoCo Warp
def _warp_matches_cpu(env_id, device):
    """One step at a time from shared states: the warp backend against the CPU path. MuJoCo Warp is
    float32 with its own collision and constraint code: steps without contact agree to ~1e-4, the
    Ant's steps through a contact do not (up to ~1 m/s in a joint velocity, measured on Warp's CPU
    device), so for the Ant only its first two steps after the reset, in the air, are compared, and
    not its reward: MuJoCo Warp's ``xpos`` after an RK4 step is not taken at the same RK stage as
    MuJoCo's, which moves the torso velocity by up to ~0.3 m/s."""
    pytest.importorskip("mujoco_warp")
    n = 4
    cpu = metarl.make_vec(env_id, n, seed=0, autoreset_mode="same_step", max_episode_steps=5)
    gpu = metarl.make_vec(env_id, n, seed=0, autoreset_mode="same_step", max_episode_steps=5, device=device,
                          backend="warp")
    assert gpu.backend == "warp"
    tasks = cpu.sample_tasks(n, generator=torch.Generator().manual_seed(0))
    o_cpu, _ = cpu.reset(seed=0, options={"tasks": tasks})
    o_gpu, _ = gpu.reset(seed=0, options={"tasks": tasks})
    torch.testing.assert_close(o_gpu.cpu(), o_cpu, atol=1e-6, rtol=0)  # the reset is the same torch code
    lay = cpu.layout
    g = torch.Generator().manual_seed(1)
    for _ in range(2 if lay.ncfrc else 12):
        gpu._rows.copy_(cpu._rows)
        gpu._elapsed.copy_(cpu._elapsed)
        a = torch.rand(n, cpu.single_action_space.shape[0], generator=g) * 2 - 1
        (o1, r1, te1, tr1, _), (o2, r2, te2, tr2, _) = cpu.step(a), gpu.step(a.to(device))
        torch.testing.assert_close(o2.cpu(), o1, atol=1e-3, rtol=0)
        if not lay.ncfrc:
            torch.testing.assert_close(r2.cpu(), r1, atol=1e-3, rtol=0)
        assert torch.equal(te2.cpu(), te1) and torch.equal(tr2.cpu(), tr1)


@pytest.mark.slow  # Warp compiles MuJoCo Warp's kernels on first use: about a minute per model on the CPU
@pytest.mark.parametrize("env_id", FAMILIES)
def test_warp_backend_on_the_cpu_matches_the_cpu_path(env_id):
    _warp_matches_cpu(env_id, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("env_id", FAMILIES)
def test_warp_backend_on_the_gpu_matches_the_cpu_path(env_id):
    _warp_matches_cpu(env_id, "cuda")


def test_warp_backend_choice_and_missing_extra(monkeypatch):
    with pytest.raises(ValueError, match="'mujoco', 'warp'"):
        metarl.make_vec("HalfCheetahVel-v0", 2, backend="triton")
    from metarl.kernels.envs import mujoco_gpu

    mujoco_gpu.require_mujoco_warp.cache_clear()
    monkeypatch.setitem(sys.modules, "mujoco_warp", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[mujoco-warp\]"'):
        metarl.make_vec("HalfCheetahVel-v0", 2, backend="warp")
    mujoco_gpu.require_mujoco_warp.cache_clear()
