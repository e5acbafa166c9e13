"""metarl.memory.FlatIndex and BatchedIndex: against faiss.IndexFlatL2 / IndexIDMap2, against each other,
LRU eviction, bad inputs leaving the index unchanged, NumPy in / NumPy out, atomic save and load.

Tolerance: distances are float32 in the ``‖q‖² − 2 q·x + ‖x‖²`` form (as FAISS computes them), so
they are compared with ``atol = 1e-5 · (‖q‖² + ‖x‖²)`` (about 1e-3 for the unit-variance data here,
d <= 64) and ``rtol = 1e-5``. Neighbour ids must match exactly except inside a group of distances
closer than that tolerance (an exact or near tie, which FAISS orders arbitrarily).
"""
import os

import numpy as np
import pytest
import torch

from metarl.backend import available
from metarl.memory import DND, BatchedIndex, FlatIndex, UnknownIdError

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu): the reference")

ATOL_PER_NORM, RTOL = 1e-5, 1e-5


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def assert_same_search(D, I, Dref, Iref, q, scale=None):
    """Same distances within tolerance and the same ids except inside near-ties."""
    D, I, Dref, Iref = (np.asarray(a) for a in (D, I, Dref, Iref))
    Dref = np.where(Iref < 0, np.inf, Dref)            # FAISS pads with FLT_MAX, we with inf
    assert D.shape == Dref.shape and I.shape == Iref.shape
    assert D.dtype == np.float32 and I.dtype == np.int64
    atol = ATOL_PER_NORM * (2 * (q.astype(np.float64) ** 2).sum(1, keepdims=True) + (scale or 2.0 * q.shape[1]))
    finite = np.isfinite(Dref)
    assert np.array_equal(np.isfinite(D), finite)
    assert np.array_equal(I < 0, Iref < 0)
    np.testing.assert_allclose(D[finite], Dref[finite], rtol=RTOL, atol=float(atol.max()))
    for r in range(I.shape[0]):
        if np.array_equal(I[r], Iref[r]):
            continue
        # ids may differ only among near-equal distances: compare them as sets per tie group
        d = Dref[r]
        with np.errstate(invalid="ignore"):                 # inf - inf in the padding
            groups = np.cumsum(np.r_[True, np.diff(d) > 2 * atol[r, 0]])
        for g in np.unique(groups):
            sel = groups == g
            assert set(I[r][sel]) == set(Iref[r][sel]), (r, I[r], Iref[r], d)


def snapshot(index):
    """Everything observable about a FlatIndex (or BatchedIndex) without changing it."""
    if isinstance(index, FlatIndex):
        meta, t = index._state()
        return (index.ntotal, index._next_id, index._clock, index._size, sorted(index._free),
                dict(index._id_to_slot), {k: v.clone() for k, v in t.items()})
    return (index._clock, {n: getattr(index, n).clone() for n in ("_keys", "_norms", "_ids", "_valid",
                                                                   "_last_use", "_fills")})


def assert_unchanged(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        if isinstance(a, dict) and a and isinstance(next(iter(a.values())), torch.Tensor):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), k
        else:
            assert a == b


# ----------------------------------------------------------------------------- FlatIndex vs FAISS
@pytest.mark.parametrize("d", [1, 7, 16, 17, 64])        # 1; odd; a multiple of 16; just past it; NEC's size
@pytest.mark.parametrize("n,k", [
    (1, 1),       # one entry, k = 1
    (5, 3),       # k < ntotal
    (5, 9),       # k > ntotal: padding
    (300, 1),     # k = 1 over many
    (300, 50),    # NEC's k
])
def test_search_matches_faiss(d, n, k):
    x, q = rand(n, d, seed=1), rand(13, d, seed=2)         # 13 queries: odd
    ours = FlatIndex(d)
    ref = faiss.IndexFlatL2(d)
    ids = ours.add(x)
    ref.add(x)
    assert np.array_equal(ids, np.arange(n)) and ours.ntotal == ref.ntotal == n
    D, I = ours.search(q, k)
    Dref, Iref = ref.search(q, k)
    assert_same_search(D, I, Dref, Iref, q)


KNN_BACKENDS = [b for b in ("torch", "cpp", "triton") if available()[b]]   # triton: the interpreter on the CPU


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_every_kernel_backend_matches_faiss(backend):
    """FlatIndex, BatchedIndex and DND on each kNN backend (small shapes: Triton runs interpreted)."""
    d, k = 17, 5
    x, q = rand(40, d, seed=1), rand(3, d, seed=2)
    flat = FlatIndex(d, backend=backend)
    flat.add(x)
    flat.remove_ids(np.arange(0, 40, 3))
    ref = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
    ref.add_with_ids(x, np.arange(40))
    ref.remove_ids(np.arange(0, 40, 3))
    assert_same_search(*flat.search(q, k), *ref.search(q, k), q)
    batched = BatchedIndex(2, d, 40, backend=backend)
    batched.add(torch.from_numpy(np.stack([x, x[::-1].copy()])))
    D, I = batched.search(torch.from_numpy(np.stack([q, q])), k)
    Dref, Iref = faiss.IndexFlatL2(d), None
    Dref.add(x)
    Dref, Iref = Dref.search(q, k)
    assert_same_search(D[0].numpy(), I[0].numpy(), Dref, Iref, q)
    assert_same_search(D[1].numpy(), (39 - I[1]).numpy(), Dref, Iref, q)
    dnd = DND(2, d, 40, k=k, backend=backend)
    dnd.write(torch.from_numpy(x), torch.arange(40.0), torch.arange(40) % 2)
    default = DND(2, d, 40, k=k)
    default.load_state_dict(dnd.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dnd.lookup(torch.from_numpy(q)), default.lookup(torch.from_numpy(q)))


def test_empty_index_search():
    index = FlatIndex(5)
    D, I = index.search(rand(3, 5), 4)
    assert D.shape == (3, 4) and np.isinf(D).all() and (I == -1).all()
    Dref, Iref = faiss.IndexFlatL2(5).search(rand(3, 5), 4)
    assert (Iref == -1).all()
    D, I = index.search(np.zeros((0, 5), np.float32), 2)    # no queries
    assert D.shape == (0, 2) and I.shape == (0, 2)


class TorchPathFlatIndex(FlatIndex):
    """The code path a CUDA index takes (torch indexing, no NumPy views), run on the CPU."""
    _numpy_views = False


@pytest.mark.parametrize("cls", [FlatIndex, TorchPathFlatIndex], ids=["numpy-views", "torch-path"])
def test_add_remove_search_sequence_matches_faiss_idmap(cls):
    """Stable ids through removals and re-adds, as faiss.IndexIDMap2(IndexFlatL2) keeps them; past 1024
    entries (the first growth of the slot arrays)."""
    d = 17
    rng = np.random.default_rng(3)
    ours = cls(d)
    ref = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
    live = []
    for step in range(12):
        x = rng.standard_normal((int(rng.integers(1, 400)), d), dtype=np.float32)
        if step % 3 == 2:
            ids = np.arange(10_000 + 1000 * step, 10_000 + 1000 * step + len(x), dtype=np.int64)
            rng.shuffle(ids)
            ours.add_with_ids(x, ids)
        else:
            ids = ours.add(x)
        ref.add_with_ids(x, ids)
        live.extend(ids.tolist())
        gone = rng.choice(live, size=min(len(live), int(rng.integers(0, 150))), replace=False)
        assert ours.remove_ids(gone) == ref.remove_ids(gone) == len(gone)
        live = sorted(set(live) - set(gone.tolist()))
        assert ours.ntotal == ref.ntotal == len(live)
        q = rng.standard_normal((7, d), dtype=np.float32)
        for k in (1, 10, len(live) + 3):
            assert_same_search(*ours.search(q, k), *ref.search(q, k), q)
    assert np.array_equal(ours.get_ids().numpy(), np.array(live))
    some = np.array(live[::37])
    np.testing.assert_array_equal(ours.reconstruct_batch(some), np.stack([ref.reconstruct(int(i)) for i in some]))


def test_auto_ids_continue_past_given_ids_and_after_removal():
    index = FlatIndex(3)
    assert index.add(rand(2, 3)).tolist() == [0, 1]
    index.add_with_ids(rand(1, 3), np.array([10]))
    index.remove_ids(np.array([1]))
    assert index.add(rand(2, 3)).tolist() == [11, 12]    # never reuses or collides
    index.reset()
    assert index.ntotal == 0 and index.add(rand(1, 3)).tolist() == [0]


def test_ties_go_to_the_lower_id():
    index = FlatIndex(4)
    v = np.ones((1, 4), np.float32)
    index.add_with_ids(np.repeat(v, 3, 0), np.array([7, 2, 5]))
    index.add_with_ids(2 * v, np.array([1]))
    D, I = index.search(v, 4)
    assert I.tolist() == [[2, 5, 7, 1]] and D[0, :3].tolist() == [0, 0, 0]


def test_remove_ids_missing_ignore_counts_like_faiss():
    x = rand(6, 4)
    ours, ref = FlatIndex(4), faiss.IndexIDMap2(faiss.IndexFlatL2(4))
    ours.add(x)
    ref.add_with_ids(x, np.arange(6))
    ids = np.array([1, 1, 3, 99])
    assert ours.remove_ids(ids, missing="ignore") == ref.remove_ids(ids) == 2
    assert ours.remove_ids(np.array([], np.int64)) == 0


def test_numpy_in_numpy_out_torch_in_torch_out():
    index = FlatIndex(3)
    ids = index.add(rand(4, 3))
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64
    D, I = index.search(rand(2, 3), 2)
    assert isinstance(D, np.ndarray) and D.dtype == np.float32 and I.dtype == np.int64
    ids = index.add(torch.randn(2, 3))
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int64
    D, I = index.search(torch.randn(2, 3), 2)
    assert isinstance(D, torch.Tensor) and D.dtype == torch.float32 and I.dtype == torch.int64
    assert isinstance(index.reconstruct(0), torch.Tensor)
    assert isinstance(index.reconstruct(np.int64(0)), np.ndarray)
    np.testing.assert_array_equal(index.reconstruct(1).numpy(), index.reconstruct_batch(np.array([1]))[0])
    assert index.d == 3 and len(index) == index.ntotal == 6 and index.is_trained


def test_readonly_and_strided_numpy_are_accepted():
    x = rand(8, 6)[:, ::2]                     # non-contiguous
    index = FlatIndex(3)
    index.add(x)
    ro = np.ascontiguousarray(x)
    ro.setflags(write=False)
    D, I = index.search(ro, 1)
    assert I[:, 0].tolist() == list(range(8)) and np.allclose(D, 0, atol=1e-5)


# ----------------------------------------------------------------------------- LRU
@pytest.mark.parametrize("cls", [FlatIndex, TorchPathFlatIndex], ids=["numpy-views", "torch-path"])
def test_lru_evicts_the_untouched_oldest(cls):
    x = rand(6, 5)
    index = cls(5, capacity=4)
    index.add(x[:4])                           # ids 0..3, used in that order
    index.search(x[[0, 2]], 1)                 # hits 0 and 2: now the most recent
    index.add(x[4:6])                          # full: evicts the two least recently used, 1 and 3
    assert index.get_ids().tolist() == [0, 2, 4, 5]
    assert index.ntotal == 4
    with pytest.raises(UnknownIdError):
        index.reconstruct(1)


@pytest.mark.parametrize("cls", [FlatIndex, TorchPathFlatIndex], ids=["numpy-views", "torch-path"])
def test_lru_counts_every_hit_and_prefers_freed_slots(cls):
    x = rand(8, 3)
    index = cls(3, capacity=3)
    index.add(x[:3])                           # 0, 1, 2
    index.search(x[[1]], 3)                    # hits 1, then 0 and 2 by rank: all three used, 1 first
    index.add(x[3:4])                          # evicts 1 (least recent of this search's hits)
    assert index.get_ids().tolist() == [0, 2, 3]
    index.remove_ids([2])
    index.add(x[4:5])                          # a freed slot: no eviction
    assert index.get_ids().tolist() == [0, 3, 4]
    index.add(x[5:7])                          # evicts the two oldest: 0 (searched earlier), then 3
    assert index.get_ids().tolist() == [4, 5, 6]


def test_lru_add_larger_than_capacity_raises():
    index = FlatIndex(2, capacity=3)
    with pytest.raises(ValueError, match="capacity"):
        index.add(rand(4, 2))
    assert index.ntotal == 0


def test_capacity_none_grows_and_never_evicts():
    index = FlatIndex(2)
    for i in range(5):
        index.add(rand(700, 2, seed=i))
    assert index.ntotal == 3500 and index._t[0].shape[0] >= 3500


# ----------------------------------------------------------------------------- bad inputs
def _filled():
    index = FlatIndex(4, capacity=50)
    index.add(rand(20, 4))
    index.remove_ids(np.array([3, 4]))
    index.search(rand(2, 4, seed=5), 3)
    return index


BAD_FLAT_CALLS = [
    ("add dim", lambda ix: ix.add(rand(3, 5)), ValueError),
    ("add 1-D", lambda ix: ix.add(rand(4)), ValueError),
    ("add NaN", lambda ix: ix.add(np.full((2, 4), np.nan, np.float32)), ValueError),
    ("add inf", lambda ix: ix.add(torch.tensor([[0.0, 1.0, float("inf"), 0.0]])), ValueError),
    ("add float64", lambda ix: ix.add(rand(2, 4).astype(np.float64)), TypeError),
    ("add int tensor", lambda ix: ix.add(torch.ones(2, 4, dtype=torch.int64)), TypeError),
    ("add list", lambda ix: ix.add([[0.0] * 4]), TypeError),
    ("add other device", lambda ix: ix.add(torch.zeros(2, 4, device="meta")), ValueError),
    ("add over capacity", lambda ix: ix.add(rand(51, 4)), ValueError),
    ("add_with_ids duplicate", lambda ix: ix.add_with_ids(rand(2, 4), np.array([100, 100])), ValueError),
    ("add_with_ids existing", lambda ix: ix.add_with_ids(rand(2, 4), np.array([100, 5])), ValueError),
    ("add_with_ids negative", lambda ix: ix.add_with_ids(rand(1, 4), np.array([-1])), ValueError),
    ("add_with_ids count", lambda ix: ix.add_with_ids(rand(2, 4), np.array([100])), ValueError),
    ("add_with_ids float ids", lambda ix: ix.add_with_ids(rand(1, 4), np.array([1.0])), TypeError),
    ("search dim", lambda ix: ix.search(rand(2, 3), 1), ValueError),
    ("search NaN", lambda ix: ix.search(np.full((1, 4), np.nan, np.float32), 1), ValueError),
    ("search k=0", lambda ix: ix.search(rand(1, 4), 0), ValueError),
    ("search k<0", lambda ix: ix.search(rand(1, 4), -2), ValueError),
    ("search k float", lambda ix: ix.search(rand(1, 4), 1.5), TypeError),
    ("search float64", lambda ix: ix.search(torch.zeros(1, 4, dtype=torch.float64), 1), TypeError),
    ("remove unknown", lambda ix: ix.remove_ids(np.array([0, 3])), ValueError),     # 0 known, 3 removed
    ("remove unknown KeyError", lambda ix: ix.remove_ids(np.array([999])), KeyError),
    ("remove duplicate", lambda ix: ix.remove_ids(np.array([0, 0])), ValueError),
    ("remove 2-D", lambda ix: ix.remove_ids(np.zeros((2, 2), np.int64)), ValueError),
    ("remove bad missing", lambda ix: ix.remove_ids(np.array([0]), missing="skip"), ValueError),
    ("reconstruct unknown", lambda ix: ix.reconstruct(4), KeyError),
    ("reconstruct float", lambda ix: ix.reconstruct(1.0), TypeError),
    ("reconstruct_batch unknown", lambda ix: ix.reconstruct_batch([0, 99]), ValueError),
]


@pytest.mark.parametrize("what,call,exc", BAD_FLAT_CALLS, ids=[c[0] for c in BAD_FLAT_CALLS])
def test_flat_bad_input_raises_and_leaves_index_unchanged(what, call, exc):
    index = _filled()
    before = snapshot(index)
    with pytest.raises(exc):
        call(index)
    assert_unchanged(before, snapshot(index))


@pytest.mark.parametrize("kwargs,exc", [
    ({"dim": 0}, ValueError), ({"dim": 2.0}, ValueError), ({"dim": 3, "capacity": 0}, ValueError),
    ({"dim": 3, "dtype": torch.float64}, TypeError), ({"dim": 3, "device": "cuda:99"}, ValueError),
])
def test_flat_bad_constructor(kwargs, exc):
    with pytest.raises(exc):
        FlatIndex(**kwargs)


def test_error_messages_name_the_argument():
    index = _filled()
    with pytest.raises(ValueError, match=r"x must have shape \[\*, 4\]"):
        index.add(rand(1, 3))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(rand(1, 4), 0)
    with pytest.raises(ValueError, match="id 3 is not in the index"):
        index.remove_ids([3])
    with pytest.raises(ValueError, match="q contains NaN"):
        index.search(np.full((1, 4), np.nan, np.float32), 1)


# ----------------------------------------------------------------------------- BatchedIndex
def test_batched_matches_a_loop_of_flat_indexes():
    """Same ids, distances and LRU evictions as B separate FlatIndex(capacity=C), through a random
    sequence of masked adds (past capacity), searches and removals."""
    B, C, d = 3, 40, 17
    rng = np.random.default_rng(7)
    batched = BatchedIndex(B, d, C)
    flats = [FlatIndex(d, capacity=C) for _ in range(B)]
    for step in range(10):
        n = int(rng.integers(1, 30))
        x = torch.from_numpy(rng.standard_normal((B, n, d), dtype=np.float32))
        mask = torch.from_numpy(rng.random((B, n)) < 0.8)
        ids = batched.add(x, mask)
        assert ((ids >= 0) == mask).all()
        for b in range(B):
            flats[b].add_with_ids(x[b][mask[b]], ids[b][mask[b]])
        q = torch.from_numpy(rng.standard_normal((B, 5, d), dtype=np.float32))
        k = [1, 4, C + 3][step % 3]
        D, I = batched.search(q, k)
        for b in range(B):
            Df, If = flats[b].search(q[b], k)
            assert_same_search(D[b].numpy(), I[b].numpy(), Df.numpy(), If.numpy(), q[b].numpy())
        if step % 2:                       # remove a few per memory, -1 padded
            rm = torch.full((B, 3), -1, dtype=torch.int64)
            for b in range(B):
                have = flats[b].get_ids()
                pick = have[torch.randperm(len(have))[: int(rng.integers(0, 4))]]
                rm[b, : len(pick)] = pick
                flats[b].remove_ids(pick)
            assert batched.remove(rm).tolist() == (rm >= 0).sum(1).tolist()
        assert batched.ntotal.tolist() == [f.ntotal for f in flats]
    for b in range(B):
        live = flats[b].get_ids()
        got = batched._ids[b][batched._valid[b]].sort().values
        assert torch.equal(got, live)


def test_batched_first_fill_ids_and_eviction():
    index = BatchedIndex(2, 2, capacity=3)
    x = torch.arange(8.0).view(2, 2, 2)
    assert index.add(x).tolist() == [[0, 1], [0, 1]]
    assert index.add(x, mask=torch.tensor([[True, True], [False, False]])).tolist() == [[2, 3], [-1, -1]]
    # memory 0 was full: its least recently used (id 0, slot 0) was evicted, the new id is 0 + 3
    assert index.ntotal.tolist() == [3, 2]
    assert sorted(index._ids[0].tolist()) == [1, 2, 3]
    with pytest.raises(UnknownIdError):
        index.remove(torch.tensor([[0], [-1]]))
    assert index.remove(torch.tensor([[3, -1], [0, 1]])).tolist() == [1, 2]
    assert index.ntotal.tolist() == [2, 0]
    D, I = index.search(x[:, :1], 5)
    assert (I[1] == -1).all() and torch.isinf(D[1]).all()
    assert torch.equal(index.reconstruct(torch.tensor([[1, -1], [-1, -1]]))[0], torch.stack([x[0, 1], torch.zeros(2)]))


def test_batched_numpy_in_numpy_out():
    index = BatchedIndex(2, 3, capacity=5)
    ids = index.add(rand(2, 2, 3))
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64
    D, I = index.search(rand(2, 1, 3), 2)
    assert isinstance(D, np.ndarray) and D.dtype == np.float32 and I.dtype == np.int64 and I.shape == (2, 1, 2)
    assert isinstance(index.remove(ids), np.ndarray)


BAD_BATCHED_CALLS = [
    ("add B", lambda ix: ix.add(torch.zeros(3, 1, 4)), ValueError),
    ("add dim", lambda ix: ix.add(torch.zeros(2, 1, 5)), ValueError),
    ("add NaN", lambda ix: ix.add(torch.full((2, 1, 4), float("nan"))), ValueError),
    ("add float64", lambda ix: ix.add(torch.zeros(2, 1, 4, dtype=torch.float64)), TypeError),
    ("add mask shape", lambda ix: ix.add(torch.zeros(2, 2, 4), mask=torch.ones(2, 3, dtype=torch.bool)), ValueError),
    ("add mask dtype", lambda ix: ix.add(torch.zeros(2, 2, 4), mask=torch.ones(2, 2)), TypeError),
    ("add over capacity", lambda ix: ix.add(torch.zeros(2, 9, 4)), ValueError),
    ("search k=0", lambda ix: ix.search(torch.zeros(2, 1, 4), 0), ValueError),
    ("search dim", lambda ix: ix.search(torch.zeros(2, 1, 3), 1), ValueError),
    ("search NaN", lambda ix: ix.search(torch.full((2, 1, 4), float("nan")), 1), ValueError),
    ("remove unknown", lambda ix: ix.remove(torch.tensor([[0, 7], [-1, -1]])), KeyError),
    ("remove < -1", lambda ix: ix.remove(torch.tensor([[-2], [-1]])), ValueError),
    ("remove duplicate", lambda ix: ix.remove(torch.tensor([[0, 0], [-1, -1]])), ValueError),
    ("remove shape", lambda ix: ix.remove(torch.tensor([0, 1])), ValueError),
    ("remove float", lambda ix: ix.remove(torch.zeros(2, 1)), TypeError),
]


@pytest.mark.parametrize("what,call,exc", BAD_BATCHED_CALLS, ids=[c[0] for c in BAD_BATCHED_CALLS])
def test_batched_bad_input_raises_and_leaves_index_unchanged(what, call, exc):
    index = BatchedIndex(2, 4, capacity=8)
    index.add(torch.randn(2, 5, 4), mask=torch.tensor([[True] * 5, [True, False, True, False, False]]))
    index.search(torch.randn(2, 2, 4), 2)
    before = snapshot(index)
    with pytest.raises(exc):
        call(index)
    assert_unchanged(before, snapshot(index))


# ----------------------------------------------------------------------------- save / load
def _batched_filled():
    index = BatchedIndex(2, 3, capacity=4)
    index.add(torch.randn(2, 4, 3))
    index.search(torch.randn(2, 1, 3), 2)
    index.add(torch.randn(2, 1, 3), mask=torch.tensor([[True], [False]]))
    index.remove(torch.tensor([[-1], [2]]))
    return index


@pytest.mark.parametrize("kind", ["flat", "batched"])
def test_save_load_round_trip(tmp_path, kind):
    path = tmp_path / "mem.bin"
    index = _filled() if kind == "flat" else _batched_filled()
    index.save(path)
    cls = type(index)
    loaded = cls.load(path)
    assert_unchanged(snapshot(index), snapshot(loaded))
    # same future: the same ids, results and evictions
    if kind == "flat":
        x, q = rand(40, 4, seed=11), rand(3, 4, seed=12)
        assert np.array_equal(index.add(x), loaded.add(x))
        for a, b in zip(index.search(q, 7), loaded.search(q, 7)):
            np.testing.assert_array_equal(a, b)
        assert torch.equal(index.get_ids(), loaded.get_ids())
    else:
        x, q = torch.randn(2, 3, 3), torch.randn(2, 2, 3)
        assert torch.equal(index.add(x), loaded.add(x))
        for a, b in zip(index.search(q, 3), loaded.search(q, 3)):
            assert torch.equal(a, b)
    # in place
    other = cls(1) if kind == "flat" else cls(1, 1, 1)
    other.load(path)
    assert_unchanged(snapshot(cls.load(path)), snapshot(other))


def _corruptions(data: bytes):
    yield "truncated payload", data[:-100]
    yield "truncated header", data[:30]
    yield "empty", b""
    mid = bytearray(data)
    mid[len(data) - len(data) // 3] ^= 0x10                 # a byte inside the payload
    yield "payload byte", bytes(mid)
    head = bytearray(data)
    head[3] ^= 0x01                                          # the magic
    yield "magic byte", bytes(head)
    hdr = bytearray(data)
    hdr[40] = ord("}") if hdr[40] != ord("}") else ord("{")  # inside the JSON header
    yield "header byte", bytes(hdr)


@pytest.mark.parametrize("kind", ["flat", "batched"])
def test_corrupt_or_truncated_file_raises_and_nothing_is_lost(tmp_path, kind):
    good = tmp_path / "good.bin"
    index = _filled() if kind == "flat" else _batched_filled()
    index.save(good)
    data = good.read_bytes()
    cls = type(index)
    for what, bad_bytes in _corruptions(data):
        bad = tmp_path / f"{what.replace(' ', '_')}.bin"
        bad.write_bytes(bad_bytes)
        before = snapshot(index)
        with pytest.raises(ValueError, match=bad.name):
            cls.load(bad)
        with pytest.raises(ValueError, match=bad.name):
            index.load(bad)                                 # in place: the index keeps its contents
        assert_unchanged(before, snapshot(index))
    assert good.read_bytes() == data
    with pytest.raises(ValueError, match="holds a"):        # a file of another kind
        (BatchedIndex if kind == "flat" else FlatIndex).load(good)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "index.bin"
    index = _filled()
    index.save(path)
    data = path.read_bytes()
    index.add(rand(5, 4, seed=9))
    before = snapshot(index)
    import metarl.memory._io as io_mod

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == data                         # the old file, whole
    assert os.listdir(tmp_path) == ["index.bin"]             # no temp file left behind
    assert_unchanged(before, snapshot(index))
    with pytest.raises(FileNotFoundError):
        index.save(tmp_path / "missing_dir" / "x.bin")
    index.save(path)                                         # and a good save replaces it
    assert FlatIndex.load(path).ntotal == index.ntotal


# ----------------------------------------------------------------------------- exports
# (the docstring examples run in tests/test_docs.py)
def test_exports():
    import metarl.memory as mem

    assert {"FlatIndex", "BatchedIndex", "DND"} <= set(mem.__all__)
    assert mem.DND is DND
