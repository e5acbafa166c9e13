"""The C++ exact kNN kernels ``metarl._C.knn_l2`` / ``batched_knn_l2`` (csrc/knn.cpp)
called directly, against a float64 NumPy brute-force oracle and, where importable,
``faiss.IndexFlatL2``.

Comparison: the returned distances equal the oracle's k smallest (float32 rounding of
``|q|^2 - 2 q.x + |x|^2``: atol 1e-4 + rtol 1e-4 at these norms); every returned position
is a valid key whose oracle distance equals the returned one (so neighbour sets agree
except where distances tie within rounding); positions are distinct; padding is +inf / -1.
Exact ties (duplicated keys) must come back in tiebreak order.
"""
import os

import numpy as np
import pytest

if os.environ.get("METARL_NO_CPP") == "1":   # installed without the extension on purpose (setup.py)
    pytest.skip("metarl._C not built (METARL_NO_CPP=1)", allow_module_level=True)

from metarl import _C  # noqa: E402

TOL = {"atol": 1e-4, "rtol": 1e-4}

# (Q, M, d, k) and what each row exercises
CASES = [
    (1, 100, 64, 5),       # one query: the direct (memory-bound) path
    (1, 1, 1, 1),          # the smallest problem
    (3, 37, 3, 1),         # k = 1, d < 16 (masked loads), M not a multiple of 16
    (5, 1000, 17, 7),      # d just past a 16-lane vector
    (8, 20000, 70, 50),    # largest direct-path Q; M crosses chunks; d = 4*16 + 6
    (9, 5000, 64, 11),     # smallest GEMM-path Q (one 16-lane block)
    (17, 3001, 1, 3),      # d = 1, Q just past a 16-block
    (33, 20000, 64, 50),   # two 32-query blocks, many cache tiles, key-split threads
    (256, 20000, 128, 10), # d = 128 (compile-time D), query-block threads
    (300, 777, 5, 4),      # Q not a multiple of 32, small M
    (40, 10, 5, 20),       # k > M: padding
    (7, 13, 70, 13),       # k == M exactly, direct path
]


def _oracle(q, x, valid):
    """[Q, M] float64 squared distances, +inf where the key is invalid."""
    dist = ((q[:, None, :].astype(np.float64) - x[None, :, :].astype(np.float64)) ** 2).sum(-1)
    dist[:, ~valid.astype(bool)] = np.inf
    return dist


def _norms(x):
    return (x.astype(np.float64) ** 2).sum(-1).astype(np.float32)


def _call(q, x, valid, tiebreak, k, norms=None):
    out_d = np.full((q.shape[0], k), np.nan, np.float32)   # poisoned: unwritten entries fail
    out_p = np.full((q.shape[0], k), -7, np.int64)
    _C.knn_l2(q, x, _norms(x) if norms is None else norms, valid, tiebreak, k, out_d, out_p)
    return out_d, out_p


def _check(q, x, valid, k, out_d, out_p):
    Q, M = q.shape[0], x.shape[0]
    dist = _oracle(q, x, valid) if M else np.zeros((Q, 0))
    n_valid = int(valid.astype(bool).sum())
    n = min(k, n_valid)
    ref = np.sort(dist, axis=1)[:, :n]
    assert not np.isnan(out_d).any()
    np.testing.assert_allclose(out_d[:, :n], ref, **TOL)
    assert np.all(np.diff(out_d[:, :n], axis=1) >= 0), "distances not ascending"
    assert np.all(out_d >= 0)
    assert np.all(np.isinf(out_d[:, n:])) and np.all(out_p[:, n:] == -1), "bad padding"
    pos = out_p[:, :n]
    assert np.all((pos >= 0) & (pos < M))
    assert np.all(valid[pos].astype(bool)), "an invalid key was returned"
    np.testing.assert_allclose(np.take_along_axis(dist, pos, axis=1), out_d[:, :n], **TOL)
    for row in pos:
        assert len(set(row.tolist())) == n, "a position repeats"


@pytest.mark.parametrize("Q,M,d,k", CASES)
@pytest.mark.parametrize("masked", [False, True])
def test_knn_matches_oracle(Q, M, d, k, masked):
    rng = np.random.default_rng(Q * 1000 + M + d + k)
    q = rng.standard_normal((Q, d), dtype=np.float32)
    x = rng.standard_normal((M, d), dtype=np.float32)
    valid = (rng.random(M) > 0.3).astype(np.uint8) if masked else np.ones(M, np.uint8)
    tiebreak = rng.permutation(M).astype(np.int64)
    out_d, out_p = _call(q, x, valid, tiebreak, k)
    _check(q, x, valid, k, out_d, out_p)


def test_empty_memory_and_all_invalid():
    q = np.ones((4, 6), np.float32)
    for x, valid in [(np.zeros((0, 6), np.float32), np.zeros(0, np.uint8)),
                     (np.ones((50, 6), np.float32), np.zeros(50, np.uint8))]:
        out_d, out_p = _call(q, x, valid, np.arange(len(x), dtype=np.int64), 3)
        assert np.all(np.isinf(out_d)) and np.all(out_p == -1)


def test_bool_valid_accepted():
    rng = np.random.default_rng(1)
    q, x = rng.standard_normal((2, 8), dtype=np.float32), rng.standard_normal((30, 8), dtype=np.float32)
    valid = rng.random(30) > 0.5
    out_d, out_p = _call(q, x, valid, np.arange(30, dtype=np.int64), 4)
    _check(q, x, valid.astype(np.uint8), 4, out_d, out_p)


@pytest.mark.parametrize("Q", [1, 40])   # the direct path and the GEMM path
def test_exact_ties_follow_tiebreak(Q):
    """Duplicated keys give bit-identical distances; the lower tiebreak comes first."""
    rng = np.random.default_rng(2)
    d, copies = 19, 6
    base = rng.standard_normal((50, d), dtype=np.float32)
    x = np.repeat(base, copies, axis=0)                     # each key 6 times, adjacent
    x = np.concatenate([x, rng.standard_normal((3000, d), dtype=np.float32)])   # cross tiles/chunks
    M = len(x)
    tiebreak = rng.permutation(M).astype(np.int64)
    q = base[rng.integers(0, 50, Q)] + 0.01 * rng.standard_normal((Q, d), dtype=np.float32)
    k = 2 * copies
    out_d, out_p = _call(q, x, np.ones(M, np.uint8), tiebreak, k)
    for i in range(Q):
        for j in range(1, k):
            if out_d[i, j] == out_d[i, j - 1]:
                assert tiebreak[out_p[i, j - 1]] < tiebreak[out_p[i, j]]
        # the nearest group is complete: all copies of the nearest base key, tiebreak-sorted
        group = np.flatnonzero((x == x[out_p[i, 0]]).all(1))
        assert sorted(out_p[i, :copies].tolist()) == sorted(group.tolist())


def test_all_keys_identical():
    """Every distance ties: the k lowest tiebreaks win (exact compaction path)."""
    M, k = 5000, 40
    x = np.ones((M, 4), np.float32)
    tiebreak = np.random.default_rng(3).permutation(M).astype(np.int64)
    for Q in (1, 20):
        out_d, out_p = _call(np.zeros((Q, 4), np.float32), x, np.ones(M, np.uint8), tiebreak, k)
        want = np.argsort(tiebreak)[:k]
        assert np.all(out_p == want[None, :])
        assert np.all(out_d == 4.0)


def test_thread_count_does_not_change_results():
    """Same answers from one chunk or many: every distance is computed the same way."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60000, 64), dtype=np.float32)
    valid, tb = np.ones(len(x), np.uint8), np.arange(len(x), dtype=np.int64)
    for Q in (1, 64):
        q = rng.standard_normal((Q, 64), dtype=np.float32)
        a = _call(q, x, valid, tb, 30)
        b = np.full((1, Q, 30), np.nan, np.float32), np.full((1, Q, 30), -7, np.int64)
        # the batched op with B = 1 takes the same path as knn_l2
        _C.batched_knn_l2(q[None], x[None], _norms(x)[None], valid[None], tb[None], 30, *b)
        np.testing.assert_array_equal(a[0], b[0][0])
        np.testing.assert_array_equal(a[1], b[1][0])


@pytest.mark.parametrize("B,Q,M,d,k", [
    (7, 1, 300, 64, 10),    # B > threads: one memory per thread, direct path
    (5, 20, 1000, 17, 5),   # GEMM path per memory, odd d
    (1, 3, 20000, 70, 50),  # B = 1: the memory gets all threads
    (3, 2, 0, 8, 4),        # empty memories
])
def test_batched_matches_oracle(B, Q, M, d, k):
    rng = np.random.default_rng(B + Q + M + d)
    q = rng.standard_normal((B, Q, d), dtype=np.float32)
    x = rng.standard_normal((B, M, d), dtype=np.float32)
    valid = np.zeros((B, M), np.uint8)
    for b in range(B):                       # varying valid counts, including fewer than k
        valid[b, : [M, M // 2, min(M, k - 1), M // 3][b % 4]] = 1
        rng.shuffle(valid[b])
    tiebreak = np.stack([rng.permutation(M) for _ in range(B)]).astype(np.int64).reshape(B, M)
    out_d = np.full((B, Q, k), np.nan, np.float32)
    out_p = np.full((B, Q, k), -7, np.int64)
    _C.batched_knn_l2(q, x, _norms(x), valid, tiebreak, k, out_d, out_p)
    for b in range(B):
        _check(q[b], x[b], valid[b], k, out_d[b], out_p[b])


def test_matches_faiss():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    d, k = 64, 11
    x = rng.standard_normal((20000, d), dtype=np.float32)
    index = faiss.IndexFlatL2(d)
    index.add(x)
    for Q in (1, 32, 100):
        q = rng.standard_normal((Q, d), dtype=np.float32)
        ref_d, ref_p = index.search(q, k)
        out_d, out_p = _call(q, x, np.ones(len(x), np.uint8), np.arange(len(x), dtype=np.int64), k)
        np.testing.assert_allclose(out_d, ref_d, **TOL)
        agree = np.mean([len(set(a) & set(b)) / k for a, b in zip(out_p.tolist(), ref_p.tolist())])
        assert agree > 0.99


# ----------------------------------------------------------------------------- bad inputs
def _args(Q=3, M=10, d=4, k=2):
    return [np.zeros((Q, d), np.float32), np.zeros((M, d), np.float32), np.zeros(M, np.float32),
            np.ones(M, np.uint8), np.arange(M, dtype=np.int64), k,
            np.zeros((Q, k), np.float32), np.zeros((Q, k), np.int64)]


@pytest.mark.parametrize("index,bad,match", [
    (0, np.zeros((3, 4), np.float64), "queries: expected dtype float32"),
    (0, np.zeros((3, 4, 1), np.float32), "queries: expected a 2-D"),
    (1, np.zeros((10, 5), np.float32), "keys: expected shape"),
    (1, np.zeros((10, 8), np.float32)[:, ::2], "keys: must be C-contiguous"),
    (2, np.zeros(9, np.float32), "key_norms: expected shape"),
    (3, np.ones(10, np.int32), "valid: expected dtype uint8"),
    (4, np.arange(10, dtype=np.int32), "tiebreak: expected dtype int64"),
    (5, 0, "k: expected a positive"),
    (5, -3, "k: expected a positive"),
    (6, np.zeros((3, 3), np.float32), "out_d: expected shape"),
    (7, np.zeros((3, 2), np.int32), "out_p: expected dtype int64"),
])
def test_bad_inputs_raise(index, bad, match):
    args = _args()
    args[index] = bad
    with pytest.raises(ValueError, match=match):
        _C.knn_l2(*args)


def test_batched_bad_inputs_raise():
    B, Q, M, d, k = 2, 3, 10, 4, 2
    good = [np.zeros((B, Q, d), np.float32), np.zeros((B, M, d), np.float32), np.zeros((B, M), np.float32),
            np.ones((B, M), np.uint8), np.zeros((B, M), np.int64), k,
            np.zeros((B, Q, k), np.float32), np.zeros((B, Q, k), np.int64)]
    _C.batched_knn_l2(*good)
    for index, bad, match in [(0, good[0][0], "queries: expected a 3-D"),
                              (1, np.zeros((3, M, d), np.float32), "keys: expected shape"),
                              (3, np.ones((B, M + 1), np.uint8), "valid: expected shape"),
                              (5, 0, "k: expected a positive"),
                              (7, np.zeros((B, Q, k + 1), np.int64), "out_p: expected shape")]:
        args = list(good)
        args[index] = bad
        with pytest.raises(ValueError, match=match):
            _C.batched_knn_l2(*args)
