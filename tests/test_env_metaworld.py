"""Meta-World families (metarl.envs.metaworld) against the metaworld package itself.

Parity is exact: each copy runs the package's own Sawyer env object and the batched physics is
bit-identical to its MuJoCo calls, so observations (the package's float64 cast to float32),
rewards and success flags are compared with ``torch.equal``. Building a benchmark runs 50 env
resets per task name (ML1 ~2 s, ML10 ~13 s on the 2-core CI machine); each is built once per module.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

import metarl  # noqa: E402
from metarl.envs import TrialWrapper  # noqa: E402
from metarl.envs import metaworld as mw  # noqa: E402
from metarl.kernels.envs.metaworld_batch import MetaWorldBatch, step_reference  # noqa: E402


def package_env(env, task):
    """The package's env for ``task`` (a metaworld.Task), made as the package's vector envs make theirs."""
    cls = env._classes[task.env_name]
    e = cls(reward_function_version=env.reward_function_version)
    e.set_task(task)
    return e


def random_actions(steps, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((steps, n, 4), generator=g) * 2.4 - 1.2   # past [-1, 1]: the package's clipping


def reach_policy(env, obs):
    """Moves the hand to each copy's goal (read from the package's env: the observation hides it)."""
    goal = torch.tensor(np.stack([env.sawyer(i)._target_pos for i in range(env.num_envs)]), dtype=torch.float32)
    a = torch.zeros(env.num_envs, 4)
    a[:, :3] = ((goal - obs[:, :3]) * 25).clamp(-1, 1)
    return a


@pytest.fixture(scope="module")
def ml10():
    return metarl.make_vec("MetaWorld-ML10-v0", 4, seed=0, max_episode_steps=30)


# ----------------------------------------------------------------------------- the extra
def test_missing_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "metaworld", None)
    monkeypatch.setitem(sys.modules, "metaworld.sawyer_xyz_env", None)
    with pytest.raises(ImportError, match=r"optional extra 'metaworld'.*\.\[metaworld\]"):
        mw.require_metaworld()
    with pytest.raises(ImportError, match="metaworld"):
        metarl.make_vec("MetaWorld-ML1-v0", 1)


def test_gymnasium_registration():
    import gymnasium as gym
    metarl.envs.registry.register_gymnasium()
    env = gym.make_vec("metarl/MetaWorld-ML1-v0", num_envs=2, vectorization_mode="vector_entry_point",
                       task_name="reach-v3", seed=0)
    assert isinstance(env, mw.ML1VecEnv) and env.num_envs == 2 and env.task_name == "reach-v3"


# ----------------------------------------------------------------------------- the benchmark's tasks
def test_ml1_split_is_the_packages():
    import metaworld
    env = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", benchmark_seed=3)
    oracle = metaworld.ML1("reach-v3", seed=3)   # built independently of the env's (cached) benchmark
    train, test = env.sample_task_split(50, 50)
    for ours, theirs in ((train, oracle.train_tasks), (test, oracle.test_tasks)):
        objs = env.task_objects(ours)
        assert [o.env_name for o in objs] == [t.env_name for t in theirs]
        for o, t in zip(objs, theirs):
            np.testing.assert_array_equal(mw_rand_vec(o), mw_rand_vec(t))
    assert not np.allclose(mw_rand_vec(env.task_objects(train)[0]), mw_rand_vec(env.task_objects(test)[0]))
    # past the split's 50 goals the split repeats; sample_tasks draws train tasks only
    more, _ = env.sample_task_split(60, 0)
    assert torch.equal(more.index[50:], more.index[:10])
    drawn = env.sample_tasks(200, generator=torch.Generator().manual_seed(0))
    assert bool((drawn.split == mw.TRAIN).all()) and drawn.index.unique().numel() > 40
    # the benchmark seed defaults to the env's seed, as the package's gym.make_vec
    assert metarl.make_vec("MetaWorld-ML1-v0", 1, task_name="reach-v3", seed=3).benchmark is env.benchmark


def mw_rand_vec(task):
    import pickle
    return pickle.loads(task.data)["rand_vec"]


def test_ml10_split_names_are_the_packages(ml10):
    from metaworld.env_dict import ML10_V3
    assert ml10.train_names == tuple(ML10_V3["train"]) and ml10.test_names == tuple(ML10_V3["test"])
    train, test = ml10.sample_task_split(20, 10)
    assert ml10.task_name_of(train) == list(ML10_V3["train"]) * 2
    assert ml10.task_name_of(test) == list(ML10_V3["test"]) * 2
    assert [t.env_name for t in ml10.task_objects(test)] == ml10.task_name_of(test)
    assert ml10.task_objects(test) == [ml10.benchmark.test_tasks[i] for i in test.index.tolist()]
    # the package's meta-test layout: 5 test names x 2 envs each, every 2nd task of the name
    per_env = metarl.make_vec("MetaWorld-ML10-v0", 10, seed=0).test_tasks_per_env()
    tests = ml10.benchmark.test_tasks
    assert [tests[e[0]].env_name for e in per_env] == [n for n in ML10_V3["test"] for _ in range(2)]
    drawer = [j for j, t in enumerate(tests) if t.env_name == "drawer-open-v3"]
    assert per_env[0] == drawer[0::2] and per_env[1] == drawer[1::2]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ML10", "ML45"])
def test_split_is_the_packages_slow(name):
    import metaworld
    env = metarl.make_vec(f"MetaWorld-{name}-v0", 5, benchmark_seed=1)
    oracle = getattr(metaworld, name)(seed=1)
    for split, theirs in ((mw.TRAIN, oracle.train_tasks), (mw.TEST, oracle.test_tasks)):
        ours = env.task_objects(env._tasks(split, torch.arange(len(theirs))))
        assert [o.env_name for o in ours] == [t.env_name for t in theirs]
        for o, t in zip(ours, theirs):
            np.testing.assert_array_equal(mw_rand_vec(o), mw_rand_vec(t))


def test_bad_names_and_mismatched_benchmarks():
    with pytest.raises(ValueError, match="task_name must be one of Meta-World's 50 tasks.*'reach-v2'"):
        metarl.make_vec("MetaWorld-ML1-v0", 1, task_name="reach-v2")
    with pytest.raises(ValueError, match="task_name is an option of ML1 only"):
        metarl.make_vec("MetaWorld-ML10-v0", 1, task_name="reach-v3")
    with pytest.raises(ValueError, match=r"max_episode_steps must be an int in \[1, 500\]"):
        metarl.make_vec("MetaWorld-ML1-v0", 1, max_episode_steps=501)
    with pytest.raises(ValueError, match="reward_function_version"):
        metarl.make_vec("MetaWorld-ML1-v0", 1, reward_function_version="v3")
    with pytest.raises(ValueError, match="run on the CPU|CPU or a CUDA"):
        metarl.make_vec("MetaWorld-ML1-v0", 1, device="meta")
    reach = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", seed=0)
    push = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="push-v3", seed=0)
    other_seed = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", seed=1)
    with pytest.raises(ValueError, match=r"tasks come from ML1\('push-v3', seed=0\) but this env runs "
                                         r"ML1\('reach-v3', seed=0\)"):
        reach.set_tasks(push.sample_tasks(2))
    with pytest.raises(ValueError, match="seed=1"):
        reach.reset(options={"tasks": other_seed.sample_tasks(2)})
    good = reach.sample_tasks(2)
    bad = good.clone()
    bad.index[0] = 50
    with pytest.raises(ValueError, match=r"tasks.index must lie in \[0, 50\)"):
        reach.set_tasks(bad)
    bad = good.clone()
    bad.name[1] = 0
    with pytest.raises(ValueError, match="tasks.name does not match"):
        reach.set_tasks(bad)
    bad = good.clone()
    bad.split[0] = 2
    with pytest.raises(ValueError, match="tasks.split"):
        reach.set_tasks(bad)
    with pytest.raises(TypeError, match="MetaWorldTasks"):
        reach.set_tasks(metarl.make_vec("Bandit-v0", 2).sample_tasks(2))
    assert reach.tasks.equal(reach.default_tasks(2))   # nothing changed


# ----------------------------------------------------------------------------- parity with the package
def test_batch_kernel_equals_reference():
    env = metarl.make_vec("MetaWorld-ML1-v0", 1, task_name="pick-place-v3", seed=0)
    tasks = env.benchmark.train_tasks[:3]
    ours, ref = [package_env(env, t) for t in tasks], [package_env(env, t) for t in tasks]
    for e in ours + ref:
        e.reset()
    batch = MetaWorldBatch(3, 5, 2)
    for i, e in enumerate(ours):
        batch.bind(i, e.model, e.data)
    for k in range(15):
        ids = None if k % 3 else np.array([0, 2], dtype=np.int32)   # odd subsets too
        for e in ours + ref:
            e.data.ctrl[:] = (0.5, -0.5)
            e.data.mocap_pos[0] += (0.003, -0.002, -0.004)
        batch.step(ids)
        step_reference([e.model for e in ref], [e.data for e in ref], 5, ids)
        for a, b in zip(ours, ref):
            for f in ("qpos", "qvel", "qacc_warmstart", "xpos", "site_xpos", "cacc"):
                np.testing.assert_array_equal(getattr(a.data, f), getattr(b.data, f))
    batch.close()
    with pytest.raises(RuntimeError, match="closed"):
        batch.step()


@pytest.mark.parametrize("task_name", ["pick-place-v3", "door-open-v3"])
def test_steps_equal_the_packages_env_through_truncation(task_name):
    """Three copies on three tasks against the package's envs, for the full 500 steps, the truncation and
    the next_step autoreset after it (every observation, reward and success flag identical)."""
    n = 3
    env = metarl.make_vec("MetaWorld-ML1-v0", n, task_name=task_name, seed=0, num_threads=2)
    train, test = env.sample_task_split(2, 1)
    tasks = mw.MetaWorldTasks.cat([train, test])
    refs = [package_env(env, t) for t in env.task_objects(tasks)]
    obs, _ = env.reset(options={"tasks": tasks})
    ref_obs = np.stack([r.reset()[0] for r in refs])
    assert torch.equal(obs, torch.from_numpy(ref_obs.astype(np.float32)))
    actions = random_actions(501, n, seed=1)
    successes = 0
    for t in range(500):
        obs, reward, terminated, truncated, info = env.step(actions[t])
        out = [r.step(actions[t, i].numpy()) for i, r in enumerate(refs)]
        assert torch.equal(obs, torch.tensor(np.stack([o[0] for o in out]), dtype=torch.float32)), t
        assert torch.equal(reward, torch.tensor([float(o[1]) for o in out], dtype=torch.float32)), t
        assert torch.equal(info["success"], torch.tensor([o[4]["success"] == 1.0 for o in out])), t
        assert torch.equal(truncated, torch.tensor([o[3] for o in out])), t
        assert not terminated.any()
        successes += int(info["success"].sum())
    assert bool(truncated.all())
    with pytest.raises(ValueError, match="reset the env manually"):   # the package refuses step 501
        refs[0].step(actions[500, 0].numpy())
    obs, reward, terminated, truncated, info = env.step(actions[500])   # next_step: the reset
    ref_obs = np.stack([r.reset()[0] for r in refs])
    assert torch.equal(obs, torch.from_numpy(ref_obs.astype(np.float32)))
    assert not reward.any() and not (terminated | truncated).any() and not info["success"].any()


def test_copies_switch_task_names_and_match_the_package(ml10):
    """ML10 copies given tasks of other names (a new Sawyer env, or one from the pool) step as the package's."""
    env = ml10
    first = env.default_tasks(4)                                  # reach, push, pick-place, door-open
    second = env._round_robin(mw.TRAIN, 8)[4:]                    # drawer-close, button-press-topdown, ...
    for tasks in (first, second, first):
        obs, _ = env.reset(options={"tasks": tasks})
        refs = [package_env(env, t) for t in env.task_objects(tasks)]
        assert [type(env.sawyer(i)) for i in range(4)] == [type(r) for r in refs]
        assert torch.equal(obs, torch.tensor(np.stack([r.reset()[0] for r in refs]), dtype=torch.float32))
        actions = random_actions(12, 4, seed=2)
        for t in range(12):
            obs, reward, _, _, info = env.step(actions[t])
            out = [r.step(actions[t, i].numpy()) for i, r in enumerate(refs)]
            assert torch.equal(obs, torch.tensor(np.stack([o[0] for o in out]), dtype=torch.float32))
            assert torch.equal(reward, torch.tensor([float(o[1]) for o in out], dtype=torch.float32))
    assert sum(len(p) for p in env._pool.values()) == 4   # the second set's envs wait in the pool


# ----------------------------------------------------------------------------- task API and autoreset
def test_set_tasks_per_copy_takes_effect_at_reset():
    env = metarl.make_vec("MetaWorld-ML1-v0", 3, task_name="reach-v3", seed=0)
    obs0, _ = env.reset()
    goal0 = [env.sawyer(i)._target_pos.copy() for i in range(3)]
    new = env.sample_task_split(0, 2)[1]
    env.set_tasks(new, env_ids=[0, 2])
    assert torch.equal(env.tasks.index, torch.tensor([new.index[0], 1, new.index[1]]))
    np.testing.assert_array_equal(env.sawyer(0)._target_pos, goal0[0])   # not before the reset
    env.reset(options={"env_ids": [2]})
    assert not np.array_equal(env.sawyer(2)._target_pos, goal0[2])
    np.testing.assert_array_equal(env.sawyer(0)._target_pos, goal0[0])
    np.testing.assert_array_equal(env.sawyer(2)._target_pos, mw_rand_vec(env.task_objects(new)[1])[3:])


def test_autoreset_modes_agree():
    """same_step's final observation and reset observation equal next_step's last and next ones; disabled
    refuses to step an ended env until it is reset."""
    runs = {}
    for mode in ("next_step", "same_step", "disabled"):
        env = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="push-v3", seed=0, autoreset_mode=mode,
                              max_episode_steps=5)
        obs, _ = env.reset()
        out = [obs]
        actions = random_actions(10, 2, seed=3)
        for t in range(10):
            if mode == "disabled" and t == 5:
                with pytest.raises(RuntimeError, match="disabled"):
                    env.step(actions[t])
                obs, _ = env.reset(options={"reset_mask": torch.tensor([True, True])})
                out.append(obs)
                continue
            if mode == "next_step" and t == 5:
                obs, reward, terminated, truncated, info = env.step(actions[t])
                assert not reward.any() and not truncated.any()
                out.append(obs)
                continue
            obs, reward, terminated, truncated, info = env.step(actions[t])
            if mode == "same_step" and t == 4:
                assert bool(truncated.all()) and bool(info["_final_obs"].all())
                out.append(info["final_obs"])
            out.append(obs)
        runs[mode] = torch.stack(out[:10])
    assert torch.equal(runs["next_step"][:7], runs["same_step"][:7])   # same_step steps on with the next action
    assert torch.equal(runs["next_step"], runs["disabled"])


def test_terminate_on_success_and_success_info():
    env = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", seed=0, autoreset_mode="same_step",
                          terminate_on_success=True, max_episode_steps=200)
    obs, _ = env.reset()
    assert env.episode_lengths() is None
    steps, terminated = 0, torch.zeros(2, dtype=torch.bool)
    while not terminated.any():
        obs, reward, terminated, truncated, info = env.step(reach_policy(env, obs))
        assert torch.equal(terminated, info["success"]) and not truncated.any()
        steps += 1
    assert steps < 150
    env.set_terminate_on_success(False)
    assert torch.equal(env.episode_lengths(), torch.tensor([200, 200]))


def test_trial_wrapper_runs_trials():
    env = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", seed=0, autoreset_mode="same_step",
                          max_episode_steps=4)
    trials = TrialWrapper(env, episodes_per_trial=2)
    obs, info = trials.reset(seed=0)
    assert obs.shape == (2, 39 + 4 + 2) and bool(info["trial_start"].all())
    first = env.tasks
    starts = []
    for _ in range(16):
        obs, reward, terminated, truncated, info = trials.step(torch.zeros(2, 4))
        starts.append(bool(info["trial_start"].all()))
    assert starts == [False] * 7 + [True] + [False] * 7 + [True]
    assert not env.tasks.equal(first) and bool((env.tasks.split == mw.TRAIN).all())


def test_state_dict_resumes_exactly():
    a = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="pick-place-v3", seed=0, max_episode_steps=10)
    a.reset(options={"tasks": a.sample_tasks(2, generator=torch.Generator().manual_seed(1))})
    actions = random_actions(25, 2, seed=4)
    for t in range(13):
        a.step(actions[t])
    sd = a.state_dict()
    b = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="pick-place-v3", seed=0, max_episode_steps=10)
    b.load_state_dict(sd)
    for t in range(13, 25):
        oa, ra, _, ta, ia = a.step(actions[t])
        ob, rb, _, tb, ib = b.step(actions[t])
        assert torch.equal(oa, ob) and torch.equal(ra, rb) and torch.equal(ta, tb)
    c = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", seed=0)
    with pytest.raises(ValueError, match=r"state dict is for ML1\('pick-place-v3'"):
        c.load_state_dict(sd)


# ----------------------------------------------------------------------------- the benchmark's metric
class ScriptedAgent:
    """Reaches for the goal in evaluation (or does nothing); counts the protocol's calls."""

    def __init__(self, env, reach: bool):
        self.env, self.reach, self.calls = env, reach, {"init": 0, "adapt": 0, "step": 0, "eval_step": 0}
        self.phase = None

    def init(self):
        self.calls["init"] += 1
        self.phase = "step"

    def adapt_action(self, obs):
        return torch.zeros(obs.shape[0], 4)

    def step(self, obs, actions, reward, terminated, truncated):
        self.calls[self.phase] += 1

    def adapt(self):
        self.calls["adapt"] += 1
        self.phase = "eval_step"

    def eval_action(self, obs):
        return reach_policy(self.env, obs) if self.reach else torch.zeros(obs.shape[0], 4)

    def reset(self, mask):
        pass


@pytest.mark.parametrize("reach", [True, False])
def test_metalearning_evaluation(reach):
    env = metarl.make_vec("MetaWorld-ML1-v0", 2, task_name="reach-v3", seed=0, autoreset_mode="same_step",
                          max_episode_steps=100)
    agent = ScriptedAgent(env, reach)
    out = mw.metalearning_evaluation(env, agent, num_evals=2, adaptation_episodes=2, evaluation_episodes=3)
    eval_steps = agent.calls.pop("eval_step")
    assert agent.calls == {"init": 2, "adapt": 2, "step": 2 * 2 * 100}
    # per evaluation, 3 episodes of the one task name on 2 envs: 2 calls of 100 steps (fewer when reaching)
    assert (0 < eval_steps < 2 * 200) if reach else eval_steps == 2 * 200
    assert set(out["success_rate_per_task"]) == {"reach-v3"}
    if reach:
        assert out["success_rate"] == 1.0 and out["return"] > 0
    else:
        assert out["success_rate"] == 0.0
    assert env.terminate_on_success is False   # restored
    used = env.tasks
    assert bool((used.split == mw.TEST).all())
    with pytest.raises(ValueError, match="same_step"):
        mw.metalearning_evaluation(metarl.make_vec("MetaWorld-ML1-v0", 1, task_name="reach-v3", seed=0), agent)
