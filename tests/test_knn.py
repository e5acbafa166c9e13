"""Exact kNN in squared L2 (``metarl.kernels.knn``): the reference against a brute-force oracle and
FAISS, every backend against the reference, padding / masks / tie-breaking, and the checks.

Tolerances: on integer-valued data (coordinates in [-3, 3]) every distance is an exact float32
integer in both the direct and the ``||q||^2 - 2 q.x + ||x||^2`` form, so there results must be
EQUAL, ties included (many: that is the point). On Gaussian data distances agree to
``atol = rtol = 1e-4`` (the GEMM form's cancellation error is ~1e-7 · (||q||^2 + ||x||^2)), and
a position may differ from the reference's only where the two distances are that close (a
near-tie swapped by rounding).
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

import metarl.kernels.knn as knn_mod
from metarl.backend import available, cpp_available
from metarl.kernels.knn import (
    TRITON_MAX_K,
    batched_knn,
    batched_knn_reference,
    knn,
    knn_reference,
)

ATOL = RTOL = 1e-4


def _has_cpp_knn() -> bool:
    if not cpp_available():
        return False
    from metarl import _C

    return hasattr(_C, "knn_l2") and hasattr(_C, "batched_knn_l2")


HAS_CPP_KNN = _has_cpp_knn()
# every kNN backend usable on this CPU; "cpp" joins once metarl._C has knn_l2 (csrc/knn.cpp)
KNN_BACKENDS = ["torch"]
if available()["triton"]:
    KNN_BACKENDS.append("triton")
KNN_BACKENDS.append(pytest.param("cpp", marks=pytest.mark.skipif(not HAS_CPP_KNN, reason="metarl._C has no knn_l2")))

# (Q, M, d, k) — what each exercises (Triton on the CPU: 64-key tiles, 32-query blocks, 2 splits)
SHAPES = [
    (1, 1, 1, 1),        # one of everything
    (1, 37, 5, 1),       # Q = 1, k = 1 (the kernel's running-min path), odd M and d
    (3, 64, 16, 4),      # exactly one 64-key tile, d = 16 (one dot block)
    (5, 65, 7, 4),       # just past a tile: two tiles, two splits, the second with one key
    (7, 130, 70, 11),    # d = 70 not a block multiple (padded to 128), k = 11 padded to 16
    (2, 5, 4, 8),        # k > M: rows padded with inf / -1
    (33, 200, 3, 50),    # Q just past a 32-query block; k = 50 (K_PAD = 64 = the tile)
    (4, 150, 16, 100),   # k = 100: K_PAD = 128 > the CPU tile (tile widened to 128)
    (3, 90, 131, 3),     # d = 131 > 128: the kernel loops over 64-wide slices of d
]


def int_data(g, *shape):
    """Integer coordinates in [-3, 3]: exact float32 distances, and many exact ties."""
    return torch.randint(-3, 4, shape, generator=g).float()


def brute_force(queries, keys, k, valid=None, tiebreak=None):
    """The oracle's oracle: float64 NumPy, one query at a time, a Python sort by
    (distance, tiebreak, position) over the valid keys."""
    q, x = queries.double().numpy(), keys.double().numpy()
    m = x.shape[0]
    ok = np.ones(m, bool) if valid is None else valid.numpy()
    tb = np.arange(m) if tiebreak is None else tiebreak.numpy()
    dist = np.full((q.shape[0], k), np.inf)
    pos = np.full((q.shape[0], k), -1, np.int64)
    for i in range(q.shape[0]):
        d2 = ((x - q[i]) ** 2).sum(1)
        order = sorted((j for j in range(m) if ok[j]), key=lambda j: (d2[j], tb[j], j))[:k]
        dist[i, :len(order)] = d2[order]
        pos[i, :len(order)] = order
    return torch.from_numpy(dist), torch.from_numpy(pos)


def assert_knn_close(dist, pos, ref_dist, ref_pos, queries, keys, atol=ATOL, rtol=RTOL):
    """Distances within tolerance; positions equal to the reference's, or else a key whose true
    distance is within tolerance of the reference's at that rank (a near-tie); padding equal;
    no position twice in a row."""
    assert dist.shape == ref_dist.shape and pos.shape == ref_pos.shape
    assert dist.dtype == torch.float32 and pos.dtype == torch.int64
    torch.testing.assert_close(dist.cpu(), ref_dist.cpu().float(), atol=atol, rtol=rtol)
    pos, ref_pos = pos.cpu(), ref_pos.cpu()
    assert torch.equal(pos == -1, ref_pos == -1)
    diff = (pos != ref_pos).nonzero()
    if len(diff):
        rows, cols = diff[:, 0], diff[:, 1]
        true = ((queries.cpu().double()[rows] - keys.cpu().double()[pos[rows, cols]]) ** 2).sum(-1)
        torch.testing.assert_close(true, ref_dist.cpu().double()[rows, cols], atol=atol, rtol=rtol)
    for row in pos:
        row = row[row >= 0]
        assert row.unique().numel() == row.numel()


# ----------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("shape", SHAPES[:7])
@pytest.mark.parametrize("masked", [False, True])
def test_reference_matches_brute_force(shape, masked):
    nq, m, d, k = shape
    g = torch.Generator().manual_seed(nq * 1000 + m)
    queries, keys = int_data(g, nq, d), int_data(g, m, d)
    valid = torch.rand(m, generator=g) < 0.6 if masked else None
    tiebreak = torch.randint(0, 5, (m,), generator=g) if masked else None   # duplicates: then position
    dist, pos = knn_reference(queries, keys, k, valid=valid, tiebreak=tiebreak)
    want_d, want_p = brute_force(queries, keys, k, valid, tiebreak)
    assert torch.equal(dist, want_d.float())
    assert torch.equal(pos, want_p)


def test_reference_chunks_queries(monkeypatch):
    """More queries than one chunk of the reference's difference tensor: same answer."""
    g = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(23, 6, generator=g), torch.randn(40, 6, generator=g)
    whole = knn_reference(queries, keys, 5)
    monkeypatch.setattr(knn_mod, "REFERENCE_CHUNK", 40 * 6 * 3)
    chunked = knn_reference(queries, keys, 5)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


@pytest.mark.parametrize("k", [1, 10, 64])
def test_reference_matches_faiss(k):
    """Same distances as faiss.IndexFlatL2 within 1e-4 (FAISS computes the GEMM form), same
    neighbours except at near-ties."""
    faiss = pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(k)
    queries, keys = torch.randn(17, 24, generator=g), torch.randn(500, 24, generator=g)
    index = faiss.IndexFlatL2(24)
    index.add(keys.numpy())
    fd, fp = index.search(queries.numpy(), k)
    dist, pos = knn_reference(queries, keys, k)
    assert_knn_close(torch.from_numpy(fd), torch.from_numpy(fp), dist, pos, queries, keys)
    dist, pos = knn(queries, keys, k)       # and the default backend
    assert_knn_close(dist, pos, torch.from_numpy(fd), torch.from_numpy(fp).long(), queries, keys)


def test_faiss_padding_convention():
    """Fewer keys than k: FAISS pads with distance FLT_MAX-ish / inf and label -1; so do we."""
    faiss = pytest.importorskip("faiss")
    keys = torch.randn(3, 4)
    index = faiss.IndexFlatL2(4)
    index.add(keys.numpy())
    _, fp = index.search(keys[:1].numpy(), 5)
    dist, pos = knn(keys[:1], keys, 5)
    assert torch.equal(pos, torch.from_numpy(fp).long())
    assert torch.isinf(dist[0, 3:]).all()


# ----------------------------------------------------------------------------- backends vs the reference
@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_knn_matches_reference_exact(backend, shape):
    """Integer data: equal distances and positions, ties broken by position."""
    nq, m, d, k = shape
    g = torch.Generator().manual_seed(nq * 1000 + m + d)
    queries, keys = int_data(g, nq, d), int_data(g, m, d)
    dist, pos = knn(queries, keys, k, backend=backend)
    want_d, want_p = knn_reference(queries, keys, k)
    assert torch.equal(dist, want_d)
    assert torch.equal(pos, want_p)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_knn_matches_reference_gaussian(backend, shape):
    nq, m, d, k = shape
    g = torch.Generator().manual_seed(nq * 1000 + m + d)
    queries, keys = torch.randn(nq, d, generator=g), torch.randn(m, d, generator=g) + 0.5
    dist, pos = knn(queries, keys, k, backend=backend)
    assert_knn_close(dist, pos, *knn_reference(queries, keys, k), queries, keys)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("frac", [0.0, 0.1, 0.7])     # none, a few (< k: padding), most valid
def test_knn_valid_and_tiebreak(backend, frac):
    nq, m, d, k = 6, 140, 9, 12
    g = torch.Generator().manual_seed(int(frac * 10))
    queries, keys = int_data(g, nq, d), int_data(g, m, d)
    valid = torch.rand(m, generator=g) < frac
    tiebreak = torch.randint(-4, 4, (m,), generator=g)    # negative values and duplicates
    dist, pos = knn(queries, keys, k, valid=valid, tiebreak=tiebreak, backend=backend)
    want_d, want_p = knn_reference(queries, keys, k, valid=valid, tiebreak=tiebreak)
    assert torch.equal(dist, want_d)
    assert torch.equal(pos, want_p)
    assert torch.equal(pos, brute_force(queries, keys, k, valid, tiebreak)[1])
    if frac == 0.0:
        assert torch.isinf(dist).all() and (pos == -1).all()


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_lower_tiebreak_wins(backend):
    """Four copies of each key, the later copies with the LOWER tiebreak: among equal distances
    the lowest tiebreak comes first, also where k cuts through a group of ties (k = 6)."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(50, 10, generator=g)
    keys = base.repeat(4, 1)                          # position j + 50 c is copy c of key j
    tiebreak = 1000 - torch.arange(200)               # later copy -> lower tiebreak
    queries = base[[0, 7, 31]] + 0.01 * torch.randn(3, 10, generator=g)
    dist, pos = knn(queries, keys, 6, tiebreak=tiebreak, backend=backend)
    nearest = torch.tensor([0, 7, 31])
    assert torch.equal(pos[:, :4], nearest[:, None] + torch.tensor([150, 100, 50, 0]))
    assert (dist[:, :4] == dist[:, :1]).all()         # exact ties, as promised
    assert (pos[:, 4] >= 150).all()                   # the next group starts with its last copy
    dist_p, pos_p = knn(queries, keys, 6, backend=backend)   # default: the lower position wins
    assert torch.equal(pos_p[:, :4], nearest[:, None] + torch.tensor([0, 50, 100, 150]))


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_empty_keys(backend):
    queries = torch.randn(3, 5)
    dist, pos = knn(queries, torch.empty(0, 5), 4, backend=backend)
    assert dist.shape == (3, 4) and torch.isinf(dist).all() and (pos == -1).all()
    dist, pos = knn(torch.empty(0, 5), torch.randn(7, 5), 4, backend=backend)
    assert dist.shape == (0, 4) and pos.shape == (0, 4)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_key_norms_given(backend):
    g = torch.Generator().manual_seed(4)
    queries, keys = int_data(g, 4, 8), int_data(g, 70, 8)
    norms = (keys * keys).sum(1)
    got = knn(queries, keys, 5, key_norms=norms, backend=backend)
    want = knn(queries, keys, 5, backend=backend)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_strided_inputs(backend):
    """Non-contiguous queries / keys (a column slice) give the contiguous answer."""
    g = torch.Generator().manual_seed(5)
    queries, keys = int_data(g, 4, 12)[:, ::2], int_data(g, 70, 12)[:, 1::2]
    dist, pos = knn(queries, keys, 3, backend=backend)
    want_d, want_p = knn_reference(queries.contiguous(), keys.contiguous(), 3)
    assert torch.equal(dist, want_d) and torch.equal(pos, want_p)


def test_torch_backend_chunks(monkeypatch):
    """Queries in chunks of 2 (integer data: the GEMM's blocking cannot change a bit)."""
    g = torch.Generator().manual_seed(6)
    queries, keys = int_data(g, 19, 5), int_data(g, 33, 5)
    whole = knn(queries, keys, 4, backend="torch")
    monkeypatch.setattr(knn_mod, "TORCH_CHUNK", 33 * 2)        # 2 queries per chunk
    chunked = knn(queries, keys, 4, backend="torch")
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


# ----------------------------------------------------------------------------- triton launcher
@pytest.mark.skipif(not available()["triton"], reason="needs Triton (CUDA or TRITON_INTERPRET=1)")
@pytest.mark.parametrize("splits", [1, 3, 100])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_triton_splits_poisoned(splits, k):
    """Any split count (1: no host merge; 100: clamped to one split per tile) gives the
    reference's answer; candidates are poisoned with -1 (below any real key) before the launch,
    so a candidate slot the kernel forgot to write would show up."""
    g = torch.Generator().manual_seed(splits + k)
    b, nq, m, d = 2, 5, 230, 6
    queries, keys = int_data(g, b, nq, d), int_data(g, b, m, d)
    valid = torch.rand(b, m, generator=g) < 0.8
    tiebreak = torch.randint(0, 9, (b, m), generator=g)
    norms = (keys * keys).sum(-1)
    dist = torch.full((b, nq, k), float("nan"))
    pos = torch.full((b, nq, k), -7, dtype=torch.int64)
    knn_mod._knn_triton(queries, keys, k, valid, tiebreak, norms, dist, pos, splits=splits, poison=True)
    want_d, want_p = batched_knn_reference(queries, keys, k, valid=valid, tiebreak=tiebreak)
    assert torch.equal(dist, want_d) and torch.equal(pos, want_p)


# ----------------------------------------------------------------------------- batched
@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1, 40, 3, 1), (3, 4, 70, 5, 7), (4, 2, 9, 6, 12)])  # (B, Q, M, d, k); k > M
def test_batched_knn_matches_reference(backend, shape):
    """Different valid counts per memory (none, a few, most, all) and tiebreaks."""
    b, nq, m, d, k = shape
    g = torch.Generator().manual_seed(b * 100 + m)
    queries, keys = int_data(g, b, nq, d), int_data(g, b, m, d)
    fracs = torch.tensor([0.0, 0.1, 0.6, 1.0][:b] if b > 1 else [0.5])
    valid = torch.rand(b, m, generator=g) < fracs[:, None]
    tiebreak = torch.randint(0, 3, (b, m), generator=g)
    for v, t in ((None, None), (valid, None), (valid, tiebreak)):
        dist, pos = batched_knn(queries, keys, k, valid=v, tiebreak=t, backend=backend)
        want_d, want_p = batched_knn_reference(queries, keys, k, valid=v, tiebreak=t)
        assert torch.equal(dist, want_d) and torch.equal(pos, want_p)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_batched_knn_gaussian_and_norms(backend):
    g = torch.Generator().manual_seed(8)
    queries, keys = torch.randn(3, 5, 17, generator=g), torch.randn(3, 100, 17, generator=g)
    dist, pos = batched_knn(queries, keys, 9, key_norms=(keys * keys).sum(-1), backend=backend)
    want_d, want_p = batched_knn_reference(queries, keys, 9)
    for i in range(3):
        assert_knn_close(dist[i], pos[i], want_d[i], want_p[i], queries[i], keys[i])


def test_batched_reference_is_per_memory():
    g = torch.Generator().manual_seed(9)
    queries, keys = int_data(g, 2, 3, 4), int_data(g, 2, 20, 4)
    dist, pos = batched_knn_reference(queries, keys, 5)
    for i in range(2):
        want = knn_reference(queries[i], keys[i], 5)
        assert torch.equal(dist[i], want[0]) and torch.equal(pos[i], want[1])


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_batched_knn_empty(backend):
    dist, pos = batched_knn(torch.randn(2, 3, 4), torch.empty(2, 0, 4), 2, backend=backend)
    assert dist.shape == (2, 3, 2) and torch.isinf(dist).all() and (pos == -1).all()
    dist, pos = batched_knn(torch.empty(0, 3, 4), torch.empty(0, 5, 4), 2, backend=backend)
    assert dist.shape == (0, 3, 2)


# ----------------------------------------------------------------------------- checks and dispatch
Q4, K20 = torch.zeros(4, 3), torch.zeros(20, 3)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(queries=torch.zeros(3)), ValueError, "queries"),                      # 1-D queries
    (dict(keys=torch.zeros(20, 4)), ValueError, "keys"),                        # d mismatch
    (dict(keys=torch.zeros(2, 20, 3)), ValueError, "keys"),                     # 3-D keys
    (dict(k=0), ValueError, "k must be >= 1"),
    (dict(k=-2), ValueError, "k must be >= 1"),
    (dict(k=2.0), TypeError, "k must be an int"),
    (dict(k=True), TypeError, "k must be an int"),
    (dict(queries=torch.tensor([[0.0, float("nan"), 1.0]])), ValueError, "queries must be finite"),
    (dict(queries=torch.tensor([[0.0, float("inf"), 1.0]])), ValueError, "queries must be finite"),
    (dict(queries=Q4.double()), TypeError, "queries must be float32"),
    (dict(keys=K20.double()), TypeError, "keys must be float32"),
    (dict(keys=K20.long()), TypeError, "keys must be float32"),
    (dict(queries=Q4.numpy()), TypeError, "queries must be a torch.Tensor"),
    (dict(valid=torch.ones(19, dtype=torch.bool)), ValueError, "valid must have shape"),
    (dict(valid=torch.ones(20, dtype=torch.uint8)), TypeError, "valid must be torch.bool"),
    (dict(tiebreak=torch.arange(20, dtype=torch.int32)), TypeError, "tiebreak must be torch.int64"),
    (dict(tiebreak=torch.arange(21)), ValueError, "tiebreak must have shape"),
    (dict(key_norms=torch.zeros(20, 1)), ValueError, "key_norms must have shape"),
    (dict(key_norms=torch.zeros(20, dtype=torch.float64)), TypeError, "key_norms must be torch.float32"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
])
def test_knn_bad_inputs(kwargs, exc, match):
    args = dict(queries=Q4, keys=K20, k=3) | kwargs
    with pytest.raises(exc, match=match):
        knn(args.pop("queries"), args.pop("keys"), args.pop("k"), **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(keys=torch.zeros(3, 20, 3)), "as many memories"),                     # B mismatch
    (dict(queries=torch.zeros(4, 3)), "queries must be"),                       # 2-D queries
    (dict(valid=torch.ones(20, dtype=torch.bool)), "valid must have shape"),    # [M], not [B, M]
    (dict(key_norms=torch.zeros(2, 19)), "key_norms must have shape"),
])
def test_batched_knn_bad_inputs(kwargs, match):
    args = dict(queries=torch.zeros(2, 4, 3), keys=torch.zeros(2, 20, 3), k=3) | kwargs
    with pytest.raises(ValueError, match=match):
        batched_knn(args.pop("queries"), args.pop("keys"), args.pop("k"), **args)


def test_default_backend_on_cpu():
    want = "cpp" if HAS_CPP_KNN else "torch"
    assert knn_mod._resolve_backend(None, torch.device("cpu"), 5) == want
    if HAS_CPP_KNN:
        assert knn_mod._resolve_backend("cpu", torch.device("cpu"), 5) == "cpp"


@pytest.mark.skipif(HAS_CPP_KNN, reason="metarl._C has knn_l2")
def test_cpp_backend_missing_is_clear():
    with pytest.raises(ValueError, match="backend='cpp'"):
        knn(Q4, K20, 3, backend="cpp")


@pytest.mark.skipif(not available()["triton"], reason="needs Triton")
def test_triton_k_limit():
    with pytest.raises(ValueError, match="k <= "):
        knn(Q4, K20, TRITON_MAX_K + 1, backend="triton")


def test_import_does_not_import_triton():
    code = "import sys, metarl.kernels.knn; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- CUDA (realistic sizes)
@pytest.mark.cuda
class TestCuda:
    """The Triton kernels on a GPU at the sizes episodic control uses, against the reference
    (and the torch backend). Run by hand on a GPU machine: ``pytest -m cuda tests/test_knn.py``."""

    @pytest.mark.parametrize("nq, k", [(256, 50), (1, 1), (32, 11)])
    def test_flat_large(self, nq, k):
        g = torch.Generator(device="cuda").manual_seed(0)
        m, d = 100_000, 64
        queries = torch.randn(nq, d, device="cuda", generator=g)
        keys = torch.randn(m, d, device="cuda", generator=g)
        valid = torch.rand(m, device="cuda", generator=g) < 0.9
        want = knn_reference(queries, keys, k, valid=valid)
        for backend in ("triton", "torch"):
            dist, pos = knn(queries, keys, k, valid=valid, backend=backend)
            assert_knn_close(dist, pos, *want, queries, keys)

    def test_flat_exact_ties(self):
        g = torch.Generator(device="cuda").manual_seed(1)
        queries = torch.randint(-3, 4, (64, 32), device="cuda", generator=g).float()
        keys = torch.randint(-3, 4, (50_000, 32), device="cuda", generator=g).float()
        tiebreak = torch.randint(0, 100, (50_000,), device="cuda", generator=g)
        want = knn_reference(queries, keys, 50, tiebreak=tiebreak)
        got = knn(queries, keys, 50, tiebreak=tiebreak, backend="triton")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])

    @pytest.mark.parametrize("nq, k", [(1, 11), (8, 50)])
    def test_batched_512_x_1000(self, nq, k):
        g = torch.Generator(device="cuda").manual_seed(2)
        b, m, d = 512, 1000, 64
        queries = torch.randn(b, nq, d, device="cuda", generator=g)
        keys = torch.randn(b, m, d, device="cuda", generator=g)
        counts = torch.randint(0, m + 1, (b, 1), device="cuda", generator=g)
        valid = torch.arange(m, device="cuda")[None, :] < counts       # memories filled to different levels
        want_d, want_p = batched_knn_reference(queries, keys, k, valid=valid)
        dist, pos = batched_knn(queries, keys, k, valid=valid, backend="triton")
        for i in range(0, b, 37):
            assert_knn_close(dist[i], pos[i], want_d[i], want_p[i], queries[i], keys[i])
        torch.testing.assert_close(dist, want_d, atol=ATOL, rtol=RTOL)

    def test_large_k(self):
        g = torch.Generator(device="cuda").manual_seed(3)
        queries = torch.randn(5, 64, device="cuda", generator=g)
        keys = torch.randn(20_000, 64, device="cuda", generator=g)
        for k in (100, TRITON_MAX_K):
            dist, pos = knn(queries, keys, k, backend="triton")
            assert_knn_close(dist, pos, *knn_reference(queries, keys, k), queries, keys)

    def test_mismatched_devices(self):
        with pytest.raises(ValueError, match="keys must be on"):
            knn(torch.zeros(2, 3, device="cuda"), torch.zeros(5, 3), 1)
        with pytest.raises(ValueError, match="valid must be on"):
            knn(torch.zeros(2, 3, device="cuda"), torch.zeros(5, 3, device="cuda"), 1,
                valid=torch.ones(5, dtype=torch.bool))

    def test_cpp_on_cuda_rejected(self):
        with pytest.raises(ValueError, match="runs on the CPU"):
            knn(torch.zeros(2, 3, device="cuda"), torch.zeros(5, 3, device="cuda"), 1, backend="cpp")
