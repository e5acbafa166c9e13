"""metarl.memory.DND: lookup against a hand computation, gradients (gradcheck in float64), NEC's write
rule, LRU eviction, bad inputs, save / load.

Tolerances: float64 lookups equal the hand computation to 1e-12; float32 to (1e-6, 1e-5).
"""
import pytest
import torch
from torch.func import functional_call

from metarl.memory import DND


def filled(A=3, C=10, d=5, n=7, dtype=torch.float64, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    dnd = DND(A, d, C, k=k, dtype=dtype)
    h = torch.randn(A * n, d, generator=g, dtype=dtype)
    v = torch.randn(A * n, generator=g, dtype=dtype)
    a = torch.arange(A).repeat_interleave(n)
    dnd.write(h, v, a)
    return dnd, h, v, a


def hand_lookup(keys, values, query, k, delta):
    """NEC's estimate over the k nearest keys, written out plainly (float64)."""
    d2 = ((keys.double() - query.double()) ** 2).sum(1)
    near = torch.argsort(d2)[:k]
    w = 1.0 / (d2[near] + delta)
    return float((w / w.sum() * values.double()[near]).sum())


def state(dnd):
    return {k: v.clone() for k, v in dnd.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_lookup_equals_hand_computation(dtype, tol):
    dnd, h, v, a = filled(dtype=dtype)
    q = torch.randn(6, 5, dtype=dtype)
    with torch.no_grad():
        every = dnd.lookup(q)                                      # [N, A]
        one = dnd.lookup(q, torch.tensor([0, 1, 2, 2, 1, 0]))      # [N]
    assert every.shape == (6, 3) and one.shape == (6,)
    for i in range(6):
        for m in range(3):
            rows = a == m
            want = hand_lookup(h[rows], v[rows], q[i], dnd.k, dnd.delta)
            assert abs(float(every[i, m]) - want) <= tol * (1 + abs(want))
    assert torch.allclose(one, every[torch.arange(6), torch.tensor([0, 1, 2, 2, 1, 0])], atol=tol)


def test_empty_and_partly_filled_memories():
    dnd = DND(3, 2, 8, k=5)
    assert torch.equal(dnd.lookup(torch.randn(4, 2)).detach(), torch.zeros(4, 3))      # empty: 0
    dnd.write(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([1.0, 5.0]), torch.tensor([1, 1]))
    out = dnd.lookup(torch.tensor([[0.0, 0.0]])).detach()
    w = torch.tensor([1 / 1e-3, 1 / (4 + 1e-3)])
    assert out[0, 0] == 0 and out[0, 2] == 0                                          # fewer than k: those there
    assert torch.allclose(out[0, 1], (w / w.sum() * torch.tensor([1.0, 5.0])).sum())
    assert dnd.lookup(torch.zeros(0, 2)).shape == (0, 3)
    assert dnd.lookup(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64)).shape == (0,)


def test_gradcheck_float64():
    """d lookup / d (h, keys, values), both lookup forms, through torch.autograd.gradcheck."""
    dnd, *_ = filled(A=2, C=6, d=3, n=5, k=3, seed=1)
    h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    keys = dnd.keys.detach().clone().requires_grad_()
    values = dnd.values.detach().clone().requires_grad_()
    actions = torch.tensor([1, 0, 1, 1])

    def every(h, keys, values):
        return functional_call(dnd, {"keys": keys, "values": values}, (h,))

    def chosen(h, keys, values):
        return functional_call(dnd, {"keys": keys, "values": values}, (h, actions))

    assert torch.autograd.gradcheck(every, (h, keys, values))
    assert torch.autograd.gradcheck(chosen, (h, keys, values))


def test_gradients_reach_only_the_looked_up_keys_and_values():
    dnd, *_ = filled(A=2, C=8, d=4, n=6, k=2, dtype=torch.float32)
    h = torch.randn(3, 4, requires_grad=True)
    dnd.lookup(h, torch.tensor([0, 0, 0])).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    touched = dnd.values.grad.ne(0)
    assert touched[1].sum() == 0 and 1 <= touched[0].sum() <= 6                       # memory 1 not used
    assert torch.equal(dnd.keys.grad.ne(0).any(-1), touched)
    names = {n for n, _ in dnd.named_parameters()}
    assert names == {"keys", "values"}
    before = dnd.keys.detach().clone()
    torch.optim.SGD(dnd.parameters(), lr=0.1).step()
    assert not torch.equal(before, dnd.keys.detach())
    # after the optimizer moved keys, searches use the moved keys (cached norms refreshed)
    q = dnd.keys.detach()[0, :1]
    with torch.no_grad():
        got = dnd.lookup(q, torch.tensor([0]))
    rows = dnd.valid[0]
    assert abs(float(got) - hand_lookup(dnd.keys.detach()[0][rows], dnd.values.detach()[0][rows], q[0], 2, 1e-3)) < 1e-5


def test_write_rule_exact_match_updates_else_appends():
    dnd = DND(2, 3, 4, k=1, dtype=torch.float64)
    h = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert dnd.write(h, torch.tensor([10.0, 20.0], dtype=torch.float64), torch.tensor([0, 0])).tolist() == [False] * 2
    assert dnd.ntotal.tolist() == [2, 0]
    # the same key: tabular update in memory 0; in memory 1 it is new
    matched = dnd.write(h[:1].repeat(2, 1), torch.tensor([0.0, 4.0], dtype=torch.float64), torch.tensor([0, 1]),
                        alpha=0.25)
    assert matched.tolist() == [True, False]
    assert dnd.ntotal.tolist() == [2, 1]
    vals = dnd.values.detach()
    assert vals[0, 0] == 10.0 + 0.25 * (0.0 - 10.0) and vals[1, 0] == 4.0
    # a nearby (not equal) key appends
    near = h[:1] + 1e-9
    assert dnd.write(near, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0])).tolist() == [False]
    assert dnd.ntotal.tolist() == [3, 1]


def test_write_with_repeats_equals_a_loop_of_single_writes():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(3, 4, generator=g, dtype=torch.float64)
    pick = torch.tensor([0, 1, 0, 2, 0, 1, 2, 2])
    h, actions = base[pick], torch.tensor([0, 0, 0, 1, 0, 1, 1, 1])
    v = torch.randn(8, generator=g, dtype=torch.float64)
    batch, loop = DND(2, 4, 6, dtype=torch.float64), DND(2, 4, 6, dtype=torch.float64)
    batch.write(base[:1], torch.tensor([3.0], dtype=torch.float64), torch.tensor([0]))
    loop.write(base[:1], torch.tensor([3.0], dtype=torch.float64), torch.tensor([0]))
    matched = batch.write(h, v, actions, alpha=0.3)
    expect = [bool(loop.write(h[i:i + 1], v[i:i + 1], actions[i:i + 1], alpha=0.3)) for i in range(8)]
    assert matched.tolist() == expect
    assert torch.equal(batch.valid, loop.valid)
    assert torch.allclose(batch.values.detach(), loop.values.detach(), atol=1e-12)
    assert torch.equal(batch.keys.detach(), loop.keys.detach())


def test_lru_eviction_lookups_count_as_uses():
    dnd = DND(1, 2, 3, k=1)
    keys = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    dnd.write(keys, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3, dtype=torch.int64))
    with torch.no_grad():
        dnd.lookup(torch.tensor([[0.1, 0.0]]))                  # k = 1: uses key 0 only
    dnd.write(torch.tensor([[30.0, 0.0]]), torch.tensor([4.0]), torch.zeros(1, dtype=torch.int64))
    stored = {tuple(k.tolist()) for k in dnd.keys.detach()[0][dnd.valid[0]]}
    assert stored == {(0.0, 0.0), (20.0, 0.0), (30.0, 0.0)}     # key 10 was the least recently used
    dnd.write(torch.tensor([[20.0, 0.0]]), torch.tensor([0.0]), torch.zeros(1, dtype=torch.int64))  # a use
    dnd.write(torch.tensor([[40.0, 0.0]]), torch.tensor([5.0]), torch.zeros(1, dtype=torch.int64))
    stored = {tuple(k.tolist()) for k in dnd.keys.detach()[0][dnd.valid[0]]}
    assert stored == {(20.0, 0.0), (30.0, 0.0), (40.0, 0.0)}


def test_vector_values_equal_one_scalar_dnd_per_component():
    """``value_dim = V``: lookups and writes (repeats, tabular updates, appends) equal V scalar DNDs
    fed the same keys, one component each; gradients reach the vector values."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(5, 4, generator=g, dtype=torch.float64)
    pick = torch.tensor([0, 1, 0, 2, 3, 1, 4, 0, 2])
    h, actions = base[pick], torch.tensor([0, 1, 0, 1, 0, 1, 0, 0, 1])
    V = 3
    vals = torch.randn(9, V, generator=g, dtype=torch.float64)
    vec = DND(2, 4, 6, k=3, value_dim=V, dtype=torch.float64)
    scalars = [DND(2, 4, 6, k=3, dtype=torch.float64) for _ in range(V)]
    matched = vec.write(h[:5], vals[:5], actions[:5], alpha=0.4)
    for j, s in enumerate(scalars):
        assert torch.equal(s.write(h[:5], vals[:5, j], actions[:5], alpha=0.4), matched)
    vec.write(h[5:], vals[5:], actions[5:], alpha=0.4)
    for j, s in enumerate(scalars):
        s.write(h[5:], vals[5:, j], actions[5:], alpha=0.4)
    q = torch.randn(4, 4, generator=g, dtype=torch.float64)
    which = torch.tensor([1, 0, 0, 1])
    every, one = vec.lookup(q), vec.lookup(q, which)
    assert every.shape == (4, 2, V) and one.shape == (4, V)
    for j, s in enumerate(scalars):
        assert torch.allclose(every[..., j], s.lookup(q), atol=1e-12)
        assert torch.allclose(one[:, j], s.lookup(q, which), atol=1e-12)
    one.sum().backward()
    assert vec.values.grad.shape == (2, 6, V) and vec.values.grad.abs().sum() > 0
    assert vec.lookup(q[:0]).shape == (0, 2, V) and vec.lookup(q[:0], which[:0]).shape == (0, V)
    with pytest.raises(ValueError, match=r"values must have shape \[2, 3\]"):
        vec.write(h[:2], vals[:2, 0], actions[:2])


def test_vector_dnd_save_load_round_trip(tmp_path):
    dnd = DND(2, 3, 4, k=2, value_dim=5)
    dnd.write(torch.randn(3, 3), torch.randn(3, 5), torch.tensor([0, 1, 1]))
    dnd.save(tmp_path / "v.bin")
    back = DND.load(tmp_path / "v.bin")
    assert back.value_dim == 5
    assert_same_state(state(dnd), state(back))
    with pytest.raises(ValueError, match="does not fit"):
        DND(2, 3, 4, k=2).load(tmp_path / "v.bin")      # scalar DND, vector file


def test_search_gives_the_nearest_slots_and_squared_distances():
    dnd = DND(2, 2, 4, k=2)
    keys = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    dnd.write(keys, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]))
    before = state(dnd)
    d, slots = dnd.search(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    assert d.shape == slots.shape == (2, 2)
    assert torch.allclose(d[0], torch.tensor([1.0, 4.0])) and slots[0].tolist() == [0, 1]
    assert float(d[1, 0]) == pytest.approx(1.0) and int(slots[1, 1]) == -1 and d[1, 1] == float("inf")
    assert_same_state(before, state(dnd))                # a read: the LRU clock does not move
    d1, _ = dnd.search(torch.tensor([[3.0, 0.0]]), torch.tensor([0]), k=1)
    assert d1.tolist() == [[0.0]]


BAD_DND_CALLS = [
    ("lookup dim", lambda m: m.lookup(torch.zeros(2, 4)), ValueError),
    ("lookup NaN", lambda m: m.lookup(torch.full((2, 5), float("nan"))), ValueError),
    ("lookup dtype", lambda m: m.lookup(torch.zeros(2, 5, dtype=torch.float64)), TypeError),
    ("lookup numpy", lambda m: m.lookup(torch.zeros(2, 5).numpy()), TypeError),
    ("lookup action range", lambda m: m.lookup(torch.zeros(2, 5), torch.tensor([0, 3])), ValueError),
    ("lookup action dtype", lambda m: m.lookup(torch.zeros(2, 5), torch.tensor([0.0, 1.0])), TypeError),
    ("lookup action shape", lambda m: m.lookup(torch.zeros(2, 5), torch.tensor([0])), ValueError),
    ("search action range", lambda m: m.search(torch.zeros(2, 5), torch.tensor([0, 3])), ValueError),
    ("search k", lambda m: m.search(torch.zeros(2, 5), torch.tensor([0, 1]), k=0), ValueError),
    ("write NaN key", lambda m: m.write(torch.full((1, 5), float("nan")), torch.zeros(1), torch.zeros(1).long()),
     ValueError),
    ("write NaN value", lambda m: m.write(torch.zeros(1, 5), torch.full((1,), float("nan")), torch.zeros(1).long()),
     ValueError),
    ("write values shape", lambda m: m.write(torch.zeros(2, 5), torch.zeros(3), torch.zeros(2).long()), ValueError),
    ("write action range", lambda m: m.write(torch.zeros(1, 5), torch.zeros(1), torch.tensor([-1])), ValueError),
    ("write alpha", lambda m: m.write(torch.zeros(1, 5), torch.zeros(1), torch.zeros(1).long(), alpha=0.0),
     ValueError),
    ("write over capacity", lambda m: m.write(torch.randn(11, 5) + 100, torch.zeros(11), torch.zeros(11).long()),
     ValueError),
]


@pytest.mark.parametrize("what,call,exc", BAD_DND_CALLS, ids=[c[0] for c in BAD_DND_CALLS])
def test_bad_input_raises_and_leaves_dnd_unchanged(what, call, exc):
    dnd, *_ = filled(dtype=torch.float32)
    before = state(dnd)
    with pytest.raises(exc):
        call(dnd)
    assert_same_state(before, state(dnd))


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"delta": 0.0}, {"delta": -1.0}, {"capacity": 0}, {"value_dim": 0}])
def test_bad_constructor(kwargs):
    args = {"num_actions": 2, "key_dim": 3, "capacity": 4, **kwargs}
    with pytest.raises(ValueError):
        DND(**args)
    with pytest.raises(TypeError):
        DND(2, 3, 4, dtype=torch.float16)


def test_save_load_round_trip_and_corruption(tmp_path):
    dnd, *_ = filled(dtype=torch.float32)
    path = tmp_path / "dnd.bin"
    dnd.save(path)
    loaded = DND.load(path)
    assert_same_state(state(dnd), state(loaded))
    q = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(dnd.lookup(q), loaded.lookup(q))
    # in place: the same Parameter objects (an optimizer keeps them)
    other = DND(3, 5, 10, k=4)
    params = [id(p) for p in other.parameters()]
    other.load(path)
    assert [id(p) for p in other.parameters()] == params
    assert torch.equal(other.keys.detach(), loaded.keys.detach())
    data = path.read_bytes()
    bad = tmp_path / "bad.bin"
    for broken in (data[:-7], data[: len(data) // 2], data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]):
        bad.write_bytes(broken)
        before = state(other)
        with pytest.raises(ValueError, match="bad.bin"):
            other.load(bad)
        with pytest.raises(ValueError, match="bad.bin"):
            DND.load(bad)
        assert_same_state(before, state(other))
    with pytest.raises(ValueError, match="does not fit"):
        DND(3, 5, 11, k=4).load(path)                           # another size


def test_lookup_gradients_are_bitwise_reproducible():
    """Many queries share slots, so key and value gradients sum many terms: the backward must sum
    them in a fixed order (advanced indexing's backward did not: NEC runs differed)."""
    torch.manual_seed(0)
    d = DND(3, 16, 256, k=50)
    d.write(torch.randn(600, 16), torch.randn(600), torch.randint(0, 3, (600,)))
    h = torch.randn(512, 16, requires_grad=True)
    grads = []
    for _ in range(6):
        d.zero_grad(set_to_none=True)
        h.grad = None
        d.lookup(h).sum().backward()
        grads.append((d.keys.grad.clone(), d.values.grad.clone(), h.grad.clone()))
    for g in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], g))
