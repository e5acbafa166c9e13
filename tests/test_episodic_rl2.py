"""Episodic meta-RL (``metarl.algos.episodic_rl2``): the memory's lookup by hand, the cell against
torch's LSTM, the lifetime sampler, exact resume through the run harness, bad configs (every field's
range: tests/test_config.py), and a short run that learns."""
import math

import pytest
import torch

from metarl import checkpoint
from metarl.algos import episodic_rl2 as E
from metarl.algos import harness
from metarl.algos.episodic_rl2 import EpisodicAgent, EpisodicLSTMCell, EpisodicMemory, EpisodicRL2Config


def test_memory_returns_the_nearest_entry_and_keeps_the_latest_state_of_a_context():
    mem = EpisodicMemory(2, capacity=2, key_dim=2, value_dim=3)
    v, d = mem.lookup(torch.zeros(2, 2))
    assert torch.equal(v, torch.zeros(2, 3)) and torch.isinf(d).all()
    mem.write(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 1, 1], [2.0, 2, 2]]))
    mem.write(torch.tensor([[3.0, 0.0], [1.0, 0.0]]), torch.tensor([[5.0, 5, 5], [7.0, 7, 7]]))
    v, d = mem.lookup(torch.tensor([[2.0, 0.0], [1.0, 0.5]]))
    # lifetime 0: 2 is 2 from the first key (d² 4), 1 from the second (d² 1); lifetime 1: the same
    # context written twice holds the later state (0.5 away)
    assert torch.equal(v, torch.tensor([[5.0, 5, 5], [7.0, 7, 7]]))
    torch.testing.assert_close(d, torch.tensor([1.0, 0.25]))
    assert mem.dnd.ntotal.tolist() == [2, 1]
    mem.write(torch.tensor([[9.0, 0.0], [9.0, 0.0]]), torch.full((2, 3), 9.0))   # full: LRU entry evicted
    assert mem.dnd.ntotal.tolist() == [2, 2]
    v, _ = mem.lookup(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(v, torch.tensor([[5.0, 5, 5], [7.0, 7, 7]]))   # lifetime 0's unused key 0 went


def test_cell_without_memory_is_torch_lstm_cell():
    """With c_ep = 0 the reinstatement term vanishes: the cell is torch's LSTMCell (gates i, f, g, o)."""
    torch.manual_seed(0)
    cell = EpisodicLSTMCell(5, 7)
    ref = torch.nn.LSTMCell(5, 7)
    w, b = cell.linear.weight.detach(), cell.linear.bias.detach()
    with torch.no_grad():
        ref.weight_ih.copy_(w[:28, :5])
        ref.weight_hh.copy_(w[:28, 5:])
        ref.bias_ih.copy_(b[:28])
        ref.bias_hh.zero_()
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    h1, c1 = cell(x, (h, c), torch.zeros(3, 7))
    h2, c2 = ref(x, (h, c))
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(c1, c2)
    # with a memory the cell state gains sigmoid(r) * tanh(c_ep)
    c_ep = torch.randn(3, 7)
    r = torch.sigmoid(cell.linear(torch.cat([x, h], -1))[:, 28:])
    torch.testing.assert_close(cell(x, (h, c), c_ep)[1], c2 + r * torch.tanh(c_ep))


def test_lifetimes_mark_recurring_tasks():
    cfg = EpisodicRL2Config(tasks_per_lifetime=3, trials_per_lifetime=9, arms=5)
    life = E.sample_lifetimes(cfg, 50, torch.Generator().manual_seed(0))
    assert life["probs"].shape == (50, 3, 5) and life["contexts"].shape == (50, 3, cfg.context_dim)
    assert torch.allclose((life["probs"] == cfg.p_good).sum(-1).float(), torch.ones(50, 3))
    for n in range(50):
        seen = set()
        for t in range(9):
            task = int(life["schedule"][n, t])
            assert bool(life["recurring"][n, t]) == (task in seen)
            seen.add(task)


def test_agent_with_memory_uses_the_stored_state():
    """A memory agent's first pull on a recurring task depends on what the memory returned."""
    torch.manual_seed(0)
    cfg = EpisodicRL2Config(lifetimes=4, trials_per_lifetime=4, tasks_per_lifetime=1)
    agent = EpisodicAgent(cfg)
    life = E.sample_lifetimes(cfg, 4, torch.Generator().manual_seed(1))
    out = E.run_lifetimes(agent, cfg, life, torch.Generator().manual_seed(2))
    assert out["rewards"].shape == (4, 4, cfg.pulls_per_trial)
    assert life["recurring"][:, 1:].all() and not life["recurring"][:, 0].any()
    out["pg_loss"].backward()
    assert agent.cell.linear.weight.grad is not None


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = EpisodicRL2Config(lifetimes=4, trials_per_lifetime=3, pulls_per_trial=3, hidden=8, iterations=4,
                            eval_lifetimes=5)
    full = E.train(cfg, tmp_path / "full", progress=False)
    E.train(cfg, tmp_path / "part", progress=False, max_iterations=2)
    ck = harness.load_checkpoint(tmp_path / "part", "episodic-rl2")
    assert ck["iteration"] == ck["learner"]["iteration"] == 2
    resumed = E.train(cfg, tmp_path / "part", progress=False, resume=True)
    assert resumed["iterations"] == 4 and [r["iteration"] for r in resumed["history"]] == [3, 4]
    for (n, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), n
    assert resumed["eval"] == full["eval"]
    rows = [(tmp_path / name / "progress.csv").read_text().splitlines() for name in ("full", "part")]
    assert [r.split(",")[:6] for r in rows[0]] == [r.split(",")[:6] for r in rows[1]]
    agent, cfg2 = E.load_model(tmp_path / "part")
    assert cfg2 == cfg and checkpoint.read_kind(tmp_path / "part" / "checkpoint.pt") == "episodic-rl2"
    with pytest.raises(ValueError, match="config differs"):
        E.train(EpisodicRL2Config(**{**cfg.__dict__, "hidden": 9}), tmp_path / "part", progress=False, resume=True)


@pytest.mark.parametrize("field,value", [("arms", 1), ("hidden", 0), ("p_good", 1.5), ("gamma", -0.1),
                                         ("lr", 0.0), ("entropy_coef", -1.0), ("lifetimes", 2.5),
                                         ("match_scale", float("inf")), ("memory", "yes")])
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        EpisodicRL2Config(**{field: value})


@pytest.mark.slow
def test_short_run_learns_within_trials(one_thread):
    """Within-trial adaptation (the RL^2 part) is learned quickly: after 200 updates the reward per
    pull is clearly above the first pull's chance level (0.3 with 4 arms, p 0.9 / 0.1). (The
    memory's effect on recurring tasks needs ~500 updates: bench/reproduce_episodic_rl2.py.)"""
    cfg = EpisodicRL2Config(iterations=200, lr=1e-2, eval_lifetimes=200, trials_per_lifetime=4)
    ev = E.train(cfg, progress=False)["eval"]
    chance = ev["first pull by chance"][0]
    assert math.isclose(chance, 0.3)
    assert ev["reward per pull"][0] > chance + 0.15, ev
