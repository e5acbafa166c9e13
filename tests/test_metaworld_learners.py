"""RL^2 and MAML on Meta-World (ML1 reach-v3): the training success-rate column and the benchmark's
meta-test metric (success rate on the benchmark's TEST tasks after adaptation) in their reports.

Success is made known by a stub: the package's ``evaluate_state`` of the task's Sawyer class is wrapped
so that ``info["success"]`` is 1 at one chosen step of some episodes (or always, or never); the logged
and reported rates must equal what the env's ``info["success"]`` says. Budgets are tiny (episodes of
10-30 steps, 1-2 evaluations) so the module runs in seconds after building ML1 (~2 s).
"""
from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

import metarl  # noqa: E402
from metarl import cli  # noqa: E402
from metarl.algos import maml, rl2  # noqa: E402
from metarl.envs import metaworld as mw  # noqa: E402

ENV = "MetaWorld-ML1-v0"


@pytest.fixture
def stub_success(monkeypatch):
    """``set(rule)``: the reach-v3 class's ``info["success"]`` becomes ``rule(sawyer_env, obs)`` (a bool)."""
    cls = mw.load_benchmark("ML1", "reach-v3", 0).train_classes["reach-v3"]
    original = cls.evaluate_state

    def set_rule(rule):
        def evaluate_state(self, obs, action):
            reward, info = original(self, obs, action)
            return reward, {**info, "success": float(rule(self, obs))}
        monkeypatch.setattr(cls, "evaluate_state", evaluate_state)
    return set_rule


def some_episodes(env, obs):
    """Success at step 3 of an episode when the hand is right of x = 0: some episodes succeed, some not."""
    return env.curr_path_length == 3 and obs[0] > 0


def record_steps(monkeypatch, env):
    """Wraps ``env.step`` to keep every step's ``(success, terminated | truncated)`` as [N] bool tensors."""
    seen = []
    step = env.step

    def recording_step(actions):
        out = step(actions)
        seen.append((out[4]["success"].clone(), out[2] | out[3]))
        return out
    monkeypatch.setattr(env, "step", recording_step)
    return seen


def episode_success_rate(seen) -> float:
    """Fraction of the episodes that ended in ``seen`` with ``success`` at any of their steps (NaN: none ended)."""
    running = torch.zeros_like(seen[0][0])
    finished = succeeded = 0
    for success, done in seen:
        running |= success
        finished += int(done.sum())
        succeeded += int((running & done).sum())
        running &= ~done
    return succeeded / finished if finished else math.nan


# ----------------------------------------------------------------------------- the env's episode counts
def test_env_counts_episode_successes_from_info(monkeypatch, stub_success):
    stub_success(some_episodes)
    env = metarl.make_vec(ENV, 6, seed=0, max_episode_steps=8, autoreset_mode="same_step")
    seen = record_steps(monkeypatch, env)
    env.reset(seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(8 * 3 + 5):                # 3 whole episodes per env, then 5 steps of a fourth
        env.step(torch.rand((6, 4), generator=g) * 2 - 1)
    finished, succeeded = env.pop_episode_successes()
    assert finished == 18 and 0 < succeeded < 18          # the stub makes both outcomes occur
    assert succeeded / finished == episode_success_rate(seen)
    assert env.pop_episode_successes() == (0, 0)         # the counts restart


# ----------------------------------------------------------------------------- training logs
def rl2_config(**kw):
    return rl2.RL2Config(env=ENV, num_envs=4, max_episode_steps=10, episodes_per_trial=2, rollout_steps=20,
                         total_env_steps=10_000, minibatches=2, hidden_size=16, **kw)


def test_rl2_logs_success_rate_from_info(monkeypatch, stub_success, tmp_path):
    stub_success(some_episodes)
    learner = rl2.RL2Learner(rl2_config())
    seen = record_steps(monkeypatch, learner.env.base)
    rates = []
    for _ in range(3):
        seen.clear()
        row = learner.step()
        assert list(row)[:2] == ["trial_return", "success_rate"]
        assert 0.0 <= row["success_rate"] <= 1.0
        assert row["success_rate"] == episode_success_rate(seen)
        rates.append(row["success_rate"])
    assert 0.0 < sum(rates) / 3 < 1.0


def test_rl2_run_plots_success_rate(tmp_path):
    run = tmp_path / "rl2"
    summary = rl2.train(rl2_config(), run, progress=False, max_iterations=2)
    assert "eval" not in summary                              # stopped early: no final report
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    assert "success_rate" in header
    fig = cli.plot_run(run)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["trial return"]
    rate_axis = fig.axes[1]                      # the rates on their own [0, 1] axis
    assert [line.get_label() for line in rate_axis.get_lines()] == ["success rate"]
    assert rate_axis.get_ylim() == (-0.02, 1.02) and rate_axis.get_ylabel() == "success rate"
    assert "success rate" in [t.get_text() for t in fig.legends[0].get_texts()]
    learner = cli.load_learner(run)          # the checkpoint (env state included) loads with weights_only=True
    assert learner.iteration == 2


def test_non_metaworld_rows_are_unchanged():
    row = rl2.RL2Learner(rl2.RL2Config(num_envs=8, total_env_steps=1_000, minibatches=2)).step()
    assert "success_rate" not in row
    cfg = maml.MAMLConfig(meta_batch=2, trajectories_per_task=2, horizon=5, iterations=1)
    assert not any("success" in k for k in maml.MAMLLearner(cfg).step())


def maml_config(**kw):
    return maml.MAMLConfig(env=ENV, meta_batch=3, trajectories_per_task=2, horizon=10, iterations=10,
                           hidden_sizes=(16,), **kw)


def test_maml_logs_pre_and_post_success_from_info(monkeypatch, stub_success):
    stub_success(some_episodes)
    learner = maml.MAMLLearner(maml_config())
    seen = record_steps(monkeypatch, learner.env)
    rates = []
    for _ in range(2):
        seen.clear()
        row = learner.step()
        assert len(seen) == 2 * 10                        # the pre- and the post-adaptation rollout
        assert row["pre_success"] == episode_success_rate(seen[:10])
        assert row["post_success"] == episode_success_rate(seen[10:])
        rates += [row["pre_success"], row["post_success"]]
    assert all(0.0 <= r <= 1.0 for r in rates) and 0.0 < sum(rates) / 4 < 1.0


# ----------------------------------------------------------------------------- the benchmark's metric
def spy_meta_test_env(monkeypatch):
    """Records the env ``make_meta_test_env`` makes and the tasks each ``reset`` is given."""
    made = {"tasks": []}
    make = mw.make_meta_test_env

    def spying_make(*args, **kwargs):
        env, num_evals = make(*args, **kwargs)
        made["env"] = env
        reset = env.reset

        def spying_reset(*, seed=None, options=None):
            if options and "tasks" in options:
                made["tasks"].append(options["tasks"])
            return reset(seed=seed, options=options)
        monkeypatch.setattr(env, "reset", spying_reset)
        return env, num_evals
    monkeypatch.setattr(mw, "make_meta_test_env", spying_make)
    return made


def check_report(ev, num_evals, num_envs):
    assert set(ev) == {"success_rate", "return", "success_rate_per_task", "return_per_task", "num_evals",
                       "num_envs", "adaptation_episodes", "evaluation_episodes", "episode_steps"}
    assert set(ev["success_rate_per_task"]) == set(ev["return_per_task"]) == {"reach-v3"}
    assert 0.0 <= ev["success_rate"] <= 1.0 and math.isfinite(ev["return"])
    assert ev["success_rate"] == ev["success_rate_per_task"]["reach-v3"]
    assert (ev["num_evals"], ev["num_envs"], ev["adaptation_episodes"], ev["evaluation_episodes"],
            ev["episode_steps"]) == (num_evals, num_envs, 2, 2, 30)


def check_test_split(made, train_env):
    """Every evaluation ran the benchmark's TEST tasks of the training env's benchmark (its seed)."""
    env = made["env"]
    assert env.benchmark_id == train_env.benchmark_id
    assert len(made["tasks"]) >= 1
    test_vecs = [t.data for t in env.benchmark.test_tasks]
    train_vecs = [t.data for t in env.benchmark.train_tasks]
    for tasks in made["tasks"]:
        assert bool((tasks.split == mw.TEST).all())
        for task in env.task_objects(tasks):
            assert task.data in test_vecs and task.data not in train_vecs


@pytest.mark.parametrize("learner_name", ["rl2", "maml"])
@pytest.mark.parametrize("rule, expected", [(lambda env, obs: True, 1.0), (lambda env, obs: False, 0.0)])
def test_report_is_the_benchmark_metric_on_test_tasks(monkeypatch, stub_success, learner_name, rule, expected):
    stub_success(rule)
    made = spy_meta_test_env(monkeypatch)
    protocol = dict(adaptation_episodes=2, evaluation_episodes=2, max_episode_steps=30)
    if learner_name == "rl2":
        learner = rl2.RL2Learner(rl2_config())
        ev = rl2.metaworld_report(learner.policy, learner.config, 4, **protocol)["eval"]
        train_env = learner.env.base
    else:
        learner = maml.MAMLLearner(maml_config())
        ev = maml.metaworld_report(learner.policy, learner.config, 4, **protocol)["eval"]
        train_env = learner.env
    check_report(ev, num_evals=1, num_envs=4)
    assert ev["success_rate"] == expected
    check_test_split(made, train_env)


def test_report_evaluates_the_training_envs_task_name(monkeypatch):
    made = spy_meta_test_env(monkeypatch)
    learner = rl2.RL2Learner(rl2_config(env_options='{"task_name": "push-v3"}'))
    ev = rl2.metaworld_report(learner.policy, learner.config, 1, adaptation_episodes=1, evaluation_episodes=1,
                              max_episode_steps=10)["eval"]
    assert set(ev["success_rate_per_task"]) == {"push-v3"}
    check_test_split(made, learner.env.base)


def test_meta_test_env_has_the_benchmark_layout():
    env, num_evals = mw.make_meta_test_env(ENV, 0)         # the package's defaults: 20 envs x 10 evaluations
    assert (env.num_envs, num_evals, env.max_episode_steps) == (20, 10, 500)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    env, num_evals = mw.make_meta_test_env(ENV, 3, num_tasks=25, max_episode_steps=40)
    assert (env.num_envs, num_evals, env.max_episode_steps, env.benchmark_seed) == (20, 2, 40, 3)
    env, num_evals = mw.make_meta_test_env(ENV, 0, num_tasks=3)
    assert (env.num_envs, num_evals) == (3, 1)
    with pytest.raises(ValueError, match="num_tasks"):
        mw.make_meta_test_env(ENV, 0, num_tasks=0)
    with pytest.raises(ValueError, match="env_id"):
        mw.make_meta_test_env("Bandit-v0", 0)


@pytest.mark.slow
def test_cli_eval_prints_the_benchmark_metric(tmp_path, capsys):
    run = tmp_path / "rl2"
    rl2.train(rl2_config(), run, progress=False, max_iterations=1)
    assert cli.main(["eval", str(run), "--tasks", "1"]) == 0     # 1 env: 10 + 3 episodes of 500 steps
    out = capsys.readouterr().out
    assert "success_rate: " in out and "reach-v3: " in out and "return: " in out


def test_report_without_a_count_evaluates_the_configs_eval_tasks(monkeypatch):
    """``report()`` (the end of training, ``metarl eval`` without ``--tasks``) evaluates ``eval_tasks`` test
    tasks of the benchmark, not the package's default 200; a given count wins."""
    asked = []

    def fake_report(env_id, options, make_agent, *, num_tasks=None, **kw):
        asked.append(num_tasks)
        return {"success_rate": 0.0}
    monkeypatch.setattr(mw, "meta_test_report", fake_report)
    rl2_learner = rl2.RL2Learner(rl2_config(eval_tasks=7))
    maml_learner = maml.MAMLLearner(maml_config(eval_tasks=9))
    rl2_learner.report(), maml_learner.report(), rl2_learner.report(3), maml_learner.report(5)
    assert asked == [7, 9, 3, 5]
    assert maml.MAMLLearner(maml_config(eval_tasks=0)).report() == {} and asked == [7, 9, 3, 5]


def test_counts_print_as_integers(capsys):
    cli._print_eval({"success_rate": 0.5, "num_evals": 10, "num_envs": 20, 1: 3.25})
    out = capsys.readouterr().out
    assert "num_evals: 10\n" in out and "num_envs: 20\n" in out and "success_rate: 0.500" in out
    assert "after 1 adaptation steps: 3.250" in out
