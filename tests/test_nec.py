"""NEC: N-step targets (by hand, and the batched windows against a plain loop), the write rule, LRU,
lookup gradients into the embedding, keys and values, learning on CartPole well above random, exact
resume through the run harness, bad configs (the CLI: tests/test_cli.py; every field's range:
tests/test_config.py)."""
import pytest
import torch

from metarl import checkpoint
from metarl.algos import harness, nec
from metarl.algos.nec import NECAgent, NECConfig, NECLearner, load_model, n_step_targets, report, train
from metarl.memory import DND

TINY = dict(capacity=500, n_step=5, replay_size=1_000, learning_starts=100, eval_episodes=4, log_every=200,
            num_envs=2, hidden_size=16, key_dim=8, neighbours=10)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one intra-op thread (conftest's one_thread)."""


def test_n_step_targets_by_hand():
    g = n_step_targets(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([4.0]), 0.5)
    # position 0: 1 + .5*2 + .25*3 + .125*4; position 1: 2 + .5*3 + .25*4; position 2: 3 + .5*4
    assert g.tolist() == [[3.25, 4.5, 5.0]]
    assert n_step_targets(torch.tensor([[1.0, 1.0]]), torch.tensor([0.0]), 1.0).tolist() == [[2.0, 1.0]]


def test_batched_windows_equal_a_plain_loop(monkeypatch):
    """Three envs, N = 4, a 12-step time limit (so episodes both terminate and get truncated), Q = 2.5
    everywhere: every (s_t, a_t, Q^N) written must equal the target a per-env loop over the
    recorded trajectories computes, and every transition whose target is known must be written."""
    n, w, gamma, c = 3, 4, 0.9, 2.5
    cfg = NECConfig(num_envs=n, n_step=w, gamma=gamma, learning_starts=10**9, epsilon_decay_steps=0,
                    epsilon_end=1.0, capacity=1000, replay_size=5000)
    learner = NECLearner(cfg)
    learner.env.max_episode_steps = 12

    def constant_q(h, actions=None):
        return torch.full((h.shape[0],) if actions is not None else (h.shape[0], 2), c)

    monkeypatch.setattr(learner.agent.dnd, "lookup", constant_q)
    record, written = [], {}
    env_step, replay_add = learner.env.step, learner.replay.add

    def step(actions):
        out = env_step(actions)
        record[-1] += [out[1].clone(), out[2].clone(), out[3].clone()]
        return out

    def add(obs, actions, targets):
        for o, g in zip(obs, targets):
            written[tuple(o.tolist())] = float(g)
        replay_add(obs, actions, targets)

    learner.env.step, learner.replay.add = step, add
    steps = 80
    for _ in range(steps):
        record.append([learner.obs.clone()])
        learner.vector_step()
    expected = {}
    for i in range(n):
        done = [bool(rec[2][i] | rec[3][i]) for rec in record]
        for t in range(steps):
            end = next((e for e in range(t, steps) if done[e]), None)
            if end is not None and end < t + w:          # the episode ends inside the window
                g = sum(gamma ** (j - t) * float(record[j][1][i]) for j in range(t, end + 1))
                if bool(record[end][3][i]) and not bool(record[end][2][i]):
                    g += gamma ** (end + 1 - t) * c        # truncated: bootstrap from the final observation
            elif t + w < steps:                            # s_{t+N} was acted on: full N-step target
                g = sum(gamma ** j * float(record[t + j][1][i]) for j in range(w)) + gamma ** w * c
            else:
                continue                                   # still pending when the run stopped
            expected[tuple(record[t][0][i].tolist())] = g
    assert any(bool(rec[3].any() & ~rec[2].any()) for rec in record)      # truncations happened
    assert any(bool(rec[2].any()) for rec in record)                      # terminations too
    assert written.keys() == expected.keys()
    for k, g in expected.items():
        assert written[k] == pytest.approx(g, rel=1e-5), k


def test_write_rule_is_tabular_for_a_known_key_and_appends_new_ones():
    torch.manual_seed(0)
    agent = NECAgent(4, 2, hidden_size=8, key_dim=4, capacity=8, neighbours=2)
    obs = torch.randn(1, 4)
    h = agent.embed(obs).detach()
    a0 = torch.tensor([0])
    assert agent.dnd.write(h, torch.tensor([10.0]), a0, alpha=0.1).tolist() == [False]   # appended
    assert agent.dnd.write(h, torch.tensor([20.0]), a0, alpha=0.1).tolist() == [True]    # 10 + .1 (20 - 10)
    assert agent(obs, a0).item() == pytest.approx(11.0)
    assert agent.dnd.ntotal.tolist() == [1, 0]


def test_the_learner_writes_with_its_alpha(monkeypatch):
    learner = NECLearner(NECConfig(alpha=0.25, **TINY))
    seen = []
    real = learner.agent.dnd.write
    monkeypatch.setattr(learner.agent.dnd, "write", lambda *a, alpha: seen.append(alpha) or real(*a, alpha=alpha))
    for _ in range(20):
        learner.vector_step()
    assert seen and set(seen) == {0.25}
    assert int(learner.agent.dnd.ntotal.sum()) > 0


def test_least_recently_used_entry_is_evicted():
    dnd = DND(1, key_dim=2, capacity=2, k=1)
    a = torch.zeros(1, dtype=torch.int64)
    dnd.write(torch.tensor([[0.0, 0.0]]), torch.tensor([1.0]), a)
    dnd.write(torch.tensor([[10.0, 0.0]]), torch.tensor([2.0]), a)
    dnd.lookup(torch.tensor([[0.1, 0.0]]))                           # (0,0) used: (10,0) is the oldest now
    dnd.write(torch.tensor([[0.0, 10.0]]), torch.tensor([3.0]), a)
    keys = dnd.keys.data[0][dnd.valid[0]].tolist()
    assert sorted(keys) == [[0.0, 0.0], [0.0, 10.0]]


def test_lookup_gradients_reach_the_embedding_keys_and_values():
    """Q = sum_i w_i Q_i, w_i = k_i / sum_j k_j, k_i = 1 / (|h - h_i|^2 + delta): dQ/dQ_i = w_i and
    dQ/dh_i = Q_i dw_i/dh_i, checked by hand; the embedding gets a gradient through h."""
    delta = 1e-3
    dnd = DND(2, key_dim=2, capacity=4, k=2, delta=delta, dtype=torch.float64)
    dnd.write(torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]], dtype=torch.float64),
              torch.tensor([1.0, 3.0, 7.0], dtype=torch.float64), torch.tensor([0, 0, 1]))
    h = torch.tensor([[0.25, 0.0]], dtype=torch.float64, requires_grad=True)
    q = dnd.lookup(h, torch.tensor([0]))
    q.sum().backward()
    kappa = 1 / (torch.tensor([0.0625, 0.5625], dtype=torch.float64) + delta)
    w = kappa / kappa.sum()
    assert q.item() == pytest.approx(float(w[0] * 1 + w[1] * 3))
    assert dnd.values.grad[0, :2].tolist() == pytest.approx(w.tolist())
    assert dnd.values.grad[0, 2:].abs().sum() == 0 and dnd.values.grad[1].abs().sum() == 0   # not looked up
    # dQ/dh_i: dk_i/dh_i = 2 k_i^2 (h - h_i); dw_i/dh_i = dk_i (1 - w_i) / S; dw_j/dh_i = -w_j dk_i / S
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    vals = torch.tensor([1.0, 3.0], dtype=torch.float64)
    for i in range(2):
        dk = 2 * kappa[i] ** 2 * (h.detach()[0] - keys[i])
        grad = vals[i] * dk * (1 - w[i]) / kappa.sum() - vals[1 - i] * w[1 - i] * dk / kappa.sum()
        assert dnd.keys.grad[0, i].tolist() == pytest.approx(grad.tolist(), rel=1e-9)
    assert h.grad[0].tolist() == pytest.approx((-dnd.keys.grad[0, :2].sum(0)).tolist(), rel=1e-9)
    # through the agent: the embedding network gets gradients too
    agent = NECAgent(4, 2, hidden_size=8, key_dim=4, capacity=8, neighbours=3)
    obs = torch.randn(5, 4)
    agent.dnd.write(agent.embed(obs).detach(), torch.arange(5.0), torch.tensor([0, 1, 0, 1, 0]))
    agent(obs[:2] + 0.1, torch.tensor([0, 1])).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.embed.parameters())
    assert agent.dnd.keys.grad.abs().sum() > 0 and agent.dnd.values.grad.abs().sum() > 0


def test_a_learning_step_moves_the_network_and_the_entries_it_read():
    learner = NECLearner(NECConfig(**TINY))
    while len(learner.replay) < 64:
        learner.vector_step()
    before = {k: v.detach().clone() for k, v in learner.agent.state_dict().items()}
    learner._learn()
    after = learner.agent.state_dict()
    assert not torch.equal(before["embed.0.weight"], after["embed.0.weight"])
    assert not torch.equal(before["dnd.values"], after["dnd.values"])
    assert not torch.equal(before["dnd.keys"], after["dnd.keys"])
    unused = ~learner.agent.dnd.valid                # empty slots: no gradient, no change
    assert torch.equal(before["dnd.values"][unused], after["dnd.values"][unused])


@pytest.mark.slow
def test_a_short_run_beats_random_clearly():
    """CartPole: random play scores ~22; NEC's greedy policy after 5k env steps far more."""
    cfg = NECConfig(total_env_steps=5_000, capacity=2_000, num_envs=8, train_every=8, eval_episodes=30, seed=0)
    summary = train(cfg, progress=False)
    mean, se = summary["eval"]["nec"]
    rnd, rnd_se = summary["eval"]["random"]
    assert rnd < 35
    assert mean > 100 and mean > rnd + 5 * (se + rnd_se), summary["eval"]


def test_an_iteration_learns_every_train_every_env_steps():
    """One harness iteration = log_every // num_envs vector steps; past learning_starts, one learning
    step per train_every env steps, and the row's loss is their mean."""
    learner = NECLearner(NECConfig(**{**TINY, "train_every": 4, "learning_starts": 40}))
    assert learner.steps_per_iteration == 100
    losses = []
    real = learner._learn
    learner._learn = lambda: losses.append(real()) or losses[-1]
    row = learner.step()
    assert learner.env_steps == 200 and len(losses) == len(range(40, 201, 4))     # at 40, 44, ..., 200
    assert row["loss"] == pytest.approx(sum(losses) / len(losses))
    assert set(row) == {"episode_return", "episodes", "epsilon", "loss", "memory_size"}


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = NECConfig(total_env_steps=800, **TINY)
    whole = train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, max_iterations=2)
    assert harness.load_checkpoint(tmp_path / "split", "nec")["iteration"] == 2
    split = train(cfg, tmp_path / "split", resume=True, progress=False)
    assert whole["episode_returns"] == split["episode_returns"]
    assert whole["eval"] == split["eval"]
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt", kind="nec")["learner"]
    b = checkpoint.load(tmp_path / "split" / "checkpoint.pt", kind="nec")["learner"]
    for part in ("agent", "opt_net", "window"):
        for k, v in a[part].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b[part][k]), (part, k)
    rows_a = (tmp_path / "whole" / "progress.csv").read_text().splitlines()
    rows_b = (tmp_path / "split" / "progress.csv").read_text().splitlines()
    assert [r.split(",")[:7] for r in rows_a] == [r.split(",")[:7] for r in rows_b]
    agent, loaded = load_model(tmp_path / "split")
    assert loaded == cfg
    assert report(agent, cfg, 4)["nec"] == whole["eval"]["nec"]


def test_acrobot_runs():
    summary = train(NECConfig(env="Acrobot-v1", total_env_steps=400, **TINY), progress=False)
    assert summary["env_steps"] == 400 and set(summary["eval"]) == {"nec", "random"}


@pytest.mark.parametrize("kwargs,match", [
    (dict(env="Pendulum-v1"), "Discrete"),
    (dict(alpha=0.0), r"alpha must be a finite number in \(0, 1\]"),
    (dict(alpha=1.5), "alpha"),
    (dict(n_step=0), "n_step must be a positive int"),
    (dict(neighbours=0), "neighbours must be a positive int"),
    (dict(delta=0.0), "delta must be a positive finite number"),
    (dict(delta=float("inf")), "delta must be a positive finite number, got inf"),
    (dict(lr=0.0), "lr must be a positive finite number"),
    (dict(dnd_lr=-1.0), "dnd_lr must be a finite number >= 0"),
    (dict(batch_size=64, replay_size=32), "batch_size"),
    (dict(num_envs=8, capacity=4), "capacity"),
    (dict(learning_starts=-1), "learning_starts"),
    (dict(gamma=-0.1), "gamma"),
])
def test_bad_configs_are_refused_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NECConfig(**kwargs)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(nec, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
