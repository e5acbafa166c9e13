"""metarl.integrations.sb3.VecEnv under Stable-Baselines3's own code: what its DummyVecEnv gives (same
transitions as gymnasium's CartPole from the same states, terminal_observation, TimeLimit.truncated), its
VecEnv wrappers and checks, tasks through get_attr/set_attr/env_method, seeding, bad input, and PPO /
sb3-contrib RecurrentPPO learning on it; and SB3's check_env on every family's single env.

Thresholds were measured on this 2-core machine: PPO on CartPole (64 copies) goes from a stochastic-policy
return of ~22 (untrained) to 170-330 after 24,576 steps (seeds 0-3); RecurrentPPO on 10-pull trials of the 2-armed
dependent bandit goes from 5.0 (untrained, = chance) to 6.2-6.5 per trial after 40,960 steps (seeds 0-3; an
oracle that knows the better arm gets 7.5).
"""
import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl
from metarl.envs import ENV_CLASSES, TrialWrapper
from metarl.threads import limit_threads

pytest.importorskip("stable_baselines3")
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.utils import check_for_correct_spaces  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan, VecMonitor, VecNormalize  # noqa: E402

from metarl.integrations.sb3 import VecEnv  # noqa: E402


@pytest.fixture
def one_thread():
    """Tiny MLPs on a shared 2-core machine: one thread everywhere (making an env starts Numba's pool,
    which sets torch's thread count back to the core count, so the limit is set after that)."""
    n = torch.get_num_threads()
    limit_threads(1)
    yield
    torch.set_num_threads(n)


def cartpole_pair(n, mode, max_episode_steps=500):
    """SB3's DummyVecEnv over gymnasium's CartPole and VecEnv over metarl's, put in the same states."""
    ref = DummyVecEnv([lambda: gym.make("CartPole-v1", max_episode_steps=max_episode_steps)] * n)
    ref.seed(0)
    ref.reset()
    states = torch.tensor(np.array([e.unwrapped.state for e in ref.envs]), dtype=torch.float32)
    env = metarl.make_vec("CartPole-v1", n, seed=0, autoreset_mode=mode, max_episode_steps=max_episode_steps)
    ours = VecEnv(env)
    ours.reset()
    env.set_state(states)
    return ref, ours, states.numpy()


@pytest.mark.parametrize("mode", ["same_step", "next_step"])   # next_step: the adapter resets ended copies itself
def test_transitions_match_dummy_vec_env(mode):
    """Same actions from the same states: the obs, rewards, dones and infos SB3 reads are DummyVecEnv's,
    up to each copy's first episode end (after it the two reset to different random states)."""
    n = 16
    ref, ours, obs0 = cartpole_pair(n, mode, max_episode_steps=30)
    rng = np.random.default_rng(0)
    prev = obs0
    live = np.ones(n, dtype=bool)
    truncations = terminations = 0
    for _ in range(30):
        # a balancing controller (push towards the lean) on half the copies: some reach the time limit
        lean = (prev[:, 2] + 0.5 * prev[:, 3] > 0).astype(np.int64)
        actions = np.where(np.arange(n) % 2 == 0, lean, rng.integers(0, 2, n))
        o1, r1, d1, i1 = ref.step(actions)
        o2, r2, d2, i2 = ours.step(actions)
        assert isinstance(o2, np.ndarray) and o2.dtype == np.float32 and o2.shape == (n, 4)
        assert r2.dtype == np.float32 and d2.dtype == np.bool_ and len(i2) == n
        np.testing.assert_allclose(r2[live], r1[live], rtol=0, atol=0)
        np.testing.assert_array_equal(d2[live], d1[live])
        for i in np.flatnonzero(live):
            if d1[i]:
                assert set(i2[i]) == {"terminal_observation", "TimeLimit.truncated"}
                np.testing.assert_allclose(i2[i]["terminal_observation"], i1[i]["terminal_observation"],
                                           rtol=1e-5, atol=1e-5)
                assert i2[i]["TimeLimit.truncated"] == i1[i]["TimeLimit.truncated"]
                truncations += i1[i]["TimeLimit.truncated"]
                terminations += not i1[i]["TimeLimit.truncated"]
            else:
                np.testing.assert_allclose(o2[i], o1[i], rtol=1e-5, atol=1e-5)
                assert i2[i] == {}
        not_ended = ~d2
        assert all(i2[i] == {} for i in np.flatnonzero(not_ended))   # infos of copies that did not end: empty
        live &= ~d1
        prev = o1
    assert truncations > 0 and terminations > 0   # both kinds of ending were compared


# SB3's single-env checker on every family's single env (gymnasium.make("metarl/<id>")); ML10/25/45 build
# their whole benchmark (7-24 s): ML1 stands for Meta-World here
SINGLE_IDS = [e for e in sorted(ENV_CLASSES)
              if e not in ("MetaWorld-ML10-v0", "MetaWorld-ML25-v0", "MetaWorld-ML45-v0")]


@pytest.mark.parametrize("env_id", SINGLE_IDS)
def test_sb3_check_env_on_single_envs(env_id):
    """stable_baselines3.common.env_checker.check_env raises on what SB3 cannot use (it only warns about
    advice such as normalised action ranges and degenerate Box bounds)."""
    from stable_baselines3.common.env_checker import check_env

    if ENV_CLASSES[env_id].startswith("metarl.envs.mujoco."):
        pytest.importorskip("mujoco")
    if ENV_CLASSES[env_id].startswith("metarl.envs.metaworld:"):
        pytest.importorskip("metaworld")
    check_env(gym.make(f"metarl/{env_id}").unwrapped, warn=False)


def test_sb3_checks_and_wrappers():
    """SB3's space check, VecCheckNan (raises on NaN/inf in actions or observations), VecMonitor (episode
    statistics from dones and infos) and VecNormalize run over the adapter."""
    env = metarl.make_vec("Pendulum-v1", 8, seed=0, autoreset_mode="same_step")
    venv = VecEnv(env)
    check_for_correct_spaces(venv, env.single_observation_space, env.single_action_space)
    assert venv.render_mode is None and venv.has_attr("tasks") and not venv.has_attr("no_such_attribute")
    wrapped = VecNormalize(VecMonitor(VecCheckNan(venv, raise_exception=True)))
    obs = wrapped.reset()
    episodes = []
    for _ in range(205):   # Pendulum's 200-step limit: every copy ends once
        obs, rew, done, infos = wrapped.step(np.random.uniform(-2, 2, (8, 1)).astype(np.float32))
        episodes += [i["episode"] for i in infos if "episode" in i]
        assert np.isfinite(obs).all() and obs.shape == (8, 3)
    assert len(episodes) == 8 and all(e["l"] == 200 for e in episodes)
    with pytest.raises(ValueError, match="found nan in actions"):
        wrapped.step(np.full((8, 1), np.nan, dtype=np.float32))


def test_trial_wrapper_dones_are_trial_ends():
    """Under a TrialWrapper SB3's episode is the trial: dones only at trial ends, and the terminal
    observation is the RL^2 input after the trial's last pull ([obs, one_hot(action), reward, done=1])."""
    n, arms, pulls = 6, 3, 4
    env = TrialWrapper(metarl.make_vec("Bandit-v0", n, arms=arms, seed=0, autoreset_mode="same_step"),
                       episodes_per_trial=pulls)
    venv = VecEnv(env)
    obs = venv.reset()
    assert obs.shape == (n, 1 + arms + 2) and (obs[:, 1:] == 0).all()
    for t in range(1, 2 * pulls + 1):
        actions = np.arange(n) % arms
        obs, rew, done, infos = venv.step(actions)
        assert done.all() == (t % pulls == 0) and done.any() == (t % pulls == 0)
        if t % pulls:
            assert all(i == {} for i in infos)
            continue
        for i in range(n):
            last = infos[i]["terminal_observation"]
            expected = np.zeros(1 + arms + 2, dtype=np.float32)
            expected[1 + actions[i]] = 1.0
            expected[1 + arms] = rew[i]
            expected[2 + arms] = 1.0
            np.testing.assert_array_equal(last, expected)
            assert infos[i]["TimeLimit.truncated"] is False
        assert (obs[:, 1:] == 0).all()   # the new trial's first input: no previous action, reward or done


def test_tasks_through_get_attr_set_attr_env_method():
    env = metarl.make_vec("CartPole-v1", 5, seed=0)
    venv = VecEnv(env)
    tasks = env.sample_tasks(5, generator=torch.Generator().manual_seed(0))
    venv.set_attr("tasks", tasks)
    assert env.tasks.equal(tasks)
    got = venv.get_attr("tasks", indices=[1, 3])
    assert len(got) == 2 and got[0].equal(tasks[1]) and got[1].equal(tasks[3])
    # one task for several copies (a one-row batch is broadcast), and env_method with indices -> env_ids
    one = env.sample_tasks(1, generator=torch.Generator().manual_seed(1))
    venv.set_attr("tasks", one, indices=[0, 4])
    assert env.tasks[0].equal(one) and env.tasks[4].equal(one) and env.tasks[2].equal(tasks[2])
    venv.env_method("set_tasks", tasks[1:3], indices=[1, 2])
    assert env.tasks[1:3].equal(tasks[1:3])
    sampled = venv.env_method("sample_tasks", 3, generator=torch.Generator().manual_seed(2))
    assert len(sampled) == 5 and len(sampled[0]) == 3
    assert venv.get_attr("num_envs") == [5] * 5
    # under a TrialWrapper the base env holds the tasks
    trial = VecEnv(TrialWrapper(metarl.make_vec("Bandit-v0", 3, seed=0, autoreset_mode="same_step"), 2))
    trial.reset()
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]])
    trial.set_attr("tasks", type(trial.get_attr("tasks")[0])(probs), indices=[2])
    assert torch.equal(trial.get_attr("tasks", 2)[0].probs, probs)


def test_options_and_seeding():
    env = metarl.make_vec("CartPole-v1", 8, autoreset_mode="same_step")
    venv = VecEnv(env)
    venv.seed(3)
    a = venv.reset()
    assert venv.reset().tolist() != a.tolist()   # the seed holds for one reset only, as in SB3
    venv.seed(3)
    np.testing.assert_array_equal(venv.reset(), a)
    venv.seed(4)
    assert venv.reset().tolist() != a.tolist()
    tasks = env.sample_tasks(8, generator=torch.Generator().manual_seed(0))
    venv.set_options({"tasks": tasks})
    venv.reset()
    assert env.tasks.equal(tasks)
    # the same through SB3's make_vec_env, with the registered id
    sb3 = make_vec_env(lambda: None, n_envs=1, vec_env_cls=lambda fns: VecEnv(
        gym.make_vec("metarl/CartPole-v1", 4, vectorization_mode="vector_entry_point", seed=0)))
    assert sb3.reset().shape == (4, 4)


def test_gymnasium_numpy_vector_env():
    """Any gymnasium vector env in same_step mode (NumPy arrays, object-array final_obs) works too."""
    ref = gym.make_vec("CartPole-v1", 4, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    venv = VecEnv(ref)
    venv.seed(0)
    obs = venv.reset()
    ended = 0
    for _ in range(60):
        obs, rew, done, infos = venv.step(np.ones(4, dtype=np.int64))
        for i in np.flatnonzero(done):
            assert infos[i]["terminal_observation"].shape == (4,) and abs(infos[i]["terminal_observation"][2]) > 0.2
            ended += 1
    assert ended > 0


def test_bad_input():
    with pytest.raises(ValueError, match="autoreset_mode='same_step'"):
        VecEnv(gym.make_vec("CartPole-v1", 2, vectorization_mode="sync"))   # next_step, not a metarl env
    venv = VecEnv(metarl.make_vec("CartPole-v1", 4, seed=0))
    venv.reset()
    with pytest.raises(ValueError, match="actions must have shape"):
        venv.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="outside Discrete"):
        venv.step(np.full(4, 7))
    with pytest.raises(TypeError, match="integers"):
        venv.step(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="only 'tasks' can be set per copy"):
        venv.set_attr("max_episode_steps", 10, indices=[0])
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")
    with pytest.raises(TypeError, match="options must be one dict"):
        venv.set_options([{}] * 4)
    with pytest.raises(NotImplementedError, match="do not render"):
        venv.render()
    with pytest.raises(ValueError, match="tasks"):
        venv.set_attr("tasks", metarl.make_vec("CartPole-v1", 2).sample_tasks(2))   # 2 tasks for 4 copies


def test_ppo_learns_cartpole(one_thread):
    """SB3's PPO on 64 metarl CartPoles: the stochastic policy's return rises from ~22 to well above it."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    env = VecMonitor(VecEnv(metarl.make_vec("CartPole-v1", 64, seed=0, autoreset_mode="same_step")))
    limit_threads(1)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, n_epochs=4, learning_rate=1e-3, seed=0, device="cpu")
    evaluation = VecEnv(metarl.make_vec("CartPole-v1", 64, seed=1, autoreset_mode="same_step"))
    before, _ = evaluate_policy(model, evaluation, n_eval_episodes=64, deterministic=False, warn=False)
    model.learn(64 * 32 * 12)
    after, _ = evaluate_policy(model, evaluation, n_eval_episodes=64, deterministic=False, warn=False)
    assert before < 40 and after > 100, (before, after)


def test_recurrent_ppo_learns_bandit_trials(one_thread):
    """sb3-contrib's RecurrentPPO (an LSTM policy whose memory resets at SB3's episode starts, i.e. at trial
    starts) learns RL^2 on 10-pull trials of the dependent 2-armed bandit: above chance (5.0 per trial)."""
    sb3_contrib = pytest.importorskip("sb3_contrib")

    def trials(n, seed):
        return VecEnv(TrialWrapper(metarl.make_vec("Bandit-v0", n, arms=2, dependent=True, seed=seed,
                                                   autoreset_mode="same_step"), episodes_per_trial=10))

    def mean_trial_return(model, n=512):
        env = trials(n, seed=1)
        obs, state, starts, total = env.reset(), None, np.ones(n, dtype=bool), np.zeros(n)
        for _ in range(10):
            actions, state = model.predict(obs, state=state, episode_start=starts)
            obs, rew, starts, _ = env.step(actions)
            total += rew
        assert starts.all()   # exactly one trial
        return total.mean()

    limit_threads(1)
    model = sb3_contrib.RecurrentPPO("MlpLstmPolicy", VecMonitor(trials(64, seed=0)), n_steps=20, batch_size=640,
                                     n_epochs=4, learning_rate=3e-3, ent_coef=0.01, seed=0, device="cpu",
                                     policy_kwargs={"lstm_hidden_size": 64, "net_arch": []})
    before = mean_trial_return(model)
    model.learn(64 * 20 * 32)
    after = mean_trial_return(model)
    assert abs(before - 5.0) < 0.3 and after > 5.75, (before, after)


def test_docstring_example():
    import doctest

    import metarl.integrations.sb3 as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
