"""Exact k-nearest-neighbour search in squared L2: the lookup of episodic memories (MFEC, NEC).

For each query ``q`` the ``k`` keys ``x_m`` (``valid[m]`` true) with the smallest

    D(q, x_m) = ||q - x_m||^2 = ||q||^2 - 2 q.x_m + ||x_m||^2        (float32, clamped at >= 0)

in ascending order, equal distances broken by the lower ``tiebreak[m]`` (default: the position
``m``), then by the lower position. Rows with fewer than ``k`` valid keys are padded with
``D = +inf, P = -1``. The answers are what ``faiss.IndexFlatL2.search`` returns (FAISS leaves
the order of exact ties unspecified; here it is fixed).

Implementations, side by side:

* :func:`knn_reference` / :func:`batched_knn_reference` — the oracle: plain PyTorch, the direct
  ``sum((q - x)^2)`` and a stable sort by (distance, tiebreak); any device, memory ``O(Q M d)``
  per chunk of queries. Their comments count the floor.
* ``"torch"`` (:func:`_knn_torch`) — pure PyTorch, fast enough to be a CPU fallback and the GPU
  path when Triton is missing: GEMM-form distances (``baddbmm``) over chunks of queries, then
  ``torch.topk`` over packed ``(distance, rank)`` int64 keys (below), so ties are exact.
* ``"triton"`` (:func:`_knn_tl`, launcher :func:`_knn_triton`) — fused distance + top-k, the
  ``[Q, M]`` distance matrix never exists (algorithm in the kernel's docstring), then one
  ``torch.topk`` over the ``[Q, splits * K_PAD]`` candidates. CUDA, or the CPU under
  ``TRITON_INTERPRET=1`` (tests).
* ``"cpp"`` (``"cpu"``) — ``metarl._C.knn_l2`` / ``metarl._C.batched_knn_l2`` (``csrc/knn.cpp``),
  over zero-copy NumPy views; the CPU default once the extension has them, else ``"torch"``.

**Packed keys.** The torch and Triton paths rank candidates by one int64 per (query, key):
``(float32 bits of D) << 32 | rank``. Non-negative float32 values order like their bit patterns
(as integers), so comparing the int64 compares (D, rank) lexicographically; ``rank`` is the
key's place in the stable order of ``tiebreak`` (the position itself when ``tiebreak`` is None;
otherwise one stable ``argsort`` of ``tiebreak`` per call, ``O(M log M)``, and positions are
recovered as ``perm[rank]``). Every packed key is unique, so any top-k over them is exact and
deterministic. Invalid keys get ``SENTINEL = 2^63 - 1``, above every real key (a NaN
distance, from NaN keys, sorts after +inf but before it). Needs ``M < 2^31``.

:func:`knn` and :func:`batched_knn` are the public ops: they validate and dispatch.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from metarl.kernels import _checks
from metarl.kernels._checks import cpp_available
from metarl.kernels._triton import constexpr, lazy_jit, triton_available

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

BACKENDS = ("torch", "triton", "cpp")
SENTINEL = torch.iinfo(torch.int64).max     # the packed key of an invalid / absent neighbour
MAX_KEYS = 2**31 - 1                        # ranks travel in the low 32 bits of a packed key
TRITON_MAX_K = 256                          # largest k the Triton kernel keeps in registers
REFERENCE_CHUNK = 1 << 24                   # elements of the [Qc, M, d] difference tensor per chunk
TORCH_CHUNK = 1 << 22                       # elements of the [B, Qc, M] distance tile per chunk


# ----------------------------------------------------------------------------- reference
def knn_reference(queries, keys, k, *, valid=None, tiebreak=None):
    """Exact kNN (module docstring) in plain PyTorch, the oracle.

    ``queries [Q, d]`` float32, ``keys [M, d]`` float32, ``k >= 1``, ``valid [M]`` bool or None
    (all valid), ``tiebreak [M]`` int64 or None (the position). Returns ``D [Q, k]`` float32
    squared L2 distances, ascending, and ``P [Q, k]`` int64 positions into ``keys``; rows are
    padded with ``D = +inf, P = -1`` past the valid keys. No input checks (see :func:`knn`).

    Floor (float32; what the kernels are measured against): read keys ``4·M·d`` bytes once
    (plus queries ``4·Q·d``, valid ``M``, tiebreak ``8·M``), write ``12·Q·k`` bytes;
    ``2·Q·M·d`` FLOPs in the GEMM form (``3·Q·M·d`` as written here). The keys dominate for
    small Q (bandwidth-bound), the FLOPs for large Q (over the fp32 FMA rate).
    """
    nq, m = queries.shape[0], keys.shape[0]
    dev = queries.device
    dist_out = torch.full((nq, k), math.inf, dtype=torch.float32, device=dev)     # write 4·Q·k
    pos_out = torch.full((nq, k), -1, dtype=torch.int64, device=dev)             # write 8·Q·k
    if m == 0 or nq == 0:
        return dist_out, pos_out
    pos = torch.arange(m, device=dev)
    if valid is not None:
        pos = pos[valid]                                                         # read M
    if tiebreak is not None:
        pos = pos[torch.argsort(tiebreak[pos], stable=True)]                    # read 8·M
    kk = min(k, pos.numel())
    if kk == 0:
        return dist_out, pos_out
    cand = keys[pos]                                     # [n, d] valid keys in tiebreak order
    chunk = max(1, REFERENCE_CHUNK // max(1, cand.numel()))
    for q0 in range(0, nq, chunk):
        q = queries[q0:q0 + chunk]                                               # read 4·Q·d
        dist = ((q[:, None, :] - cand[None, :, :]) ** 2).sum(-1)                 # read 4·M·d; 3·Q·M·d FLOPs
        order = torch.argsort(dist, dim=1, stable=True)[:, :kk]   # stable: equal D keep tiebreak order
        dist_out[q0:q0 + chunk, :kk] = dist.gather(1, order)
        pos_out[q0:q0 + chunk, :kk] = pos[order]
    return dist_out, pos_out


def batched_knn_reference(queries, keys, k, *, valid=None, tiebreak=None):
    """:func:`knn_reference` for ``B`` memories at once: ``queries [B, Q, d]``, ``keys [B, M, d]``,
    ``valid [B, M]``, ``tiebreak [B, M]``; returns ``D, P [B, Q, k]`` (positions into each
    memory's M slots). Floor: ``B`` times the single-memory one."""
    b, nq = queries.shape[:2]
    dist = torch.empty((b, nq, k), dtype=torch.float32, device=queries.device)
    pos = torch.empty((b, nq, k), dtype=torch.int64, device=queries.device)
    for i in range(b):      # the oracle: one memory at a time
        dist[i], pos[i] = knn_reference(queries[i], keys[i], k, valid=None if valid is None else valid[i],
                                        tiebreak=None if tiebreak is None else tiebreak[i])
    return dist, pos


# ----------------------------------------------------------------------------- packed keys (torch, triton)
def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _ranks(tiebreak):
    """``(rank [B, M] int32, perm [B, M] int64)``: ``perm`` lists each memory's positions in
    stable ``tiebreak`` order and ``rank[perm] = 0..M-1``; ``(None, None)`` when ``tiebreak`` is
    None (the rank is then the position)."""
    if tiebreak is None:
        return None, None
    b, m = tiebreak.shape
    perm = torch.argsort(tiebreak, dim=1, stable=True)
    rank = torch.empty((b, m), dtype=torch.int32, device=tiebreak.device)
    rank.scatter_(1, perm, torch.arange(m, dtype=torch.int32, device=tiebreak.device).expand(b, m))
    return rank, perm


def _unpack(sel, perm, out_d, out_p):
    """Write the packed keys ``sel [B, Q, kk]`` (ascending) as distances and positions into
    ``out_d, out_p [B, Q, k]`` (``k >= kk``; the tail is padding)."""
    kk = sel.shape[2]
    pad = sel == SENTINEL
    dist = (sel >> 32).to(torch.int32).view(torch.float32)
    pos = sel & 0xFFFFFFFF
    if perm is not None:
        b, nq = sel.shape[:2]
        pos = perm.gather(1, torch.where(pad, 0, pos).view(b, nq * kk)).view(b, nq, kk)
    out_d[..., :kk] = torch.where(pad, math.inf, dist)
    out_p[..., :kk] = torch.where(pad, -1, pos)
    out_d[..., kk:] = math.inf
    out_p[..., kk:] = -1


def _knn_torch(queries, keys, k, valid, tiebreak, key_norms, out_d, out_p):
    """Pure-PyTorch kNN for ``B`` memories (shapes as :func:`batched_knn`, validated,
    ``M >= 1``): per chunk of queries, ``D = ||q||^2 - 2 q.x + ||x||^2`` by one ``baddbmm``,
    packed keys, ``torch.topk``. Memory ``O(B · Qc · M)`` with ``B · Qc · M <= TORCH_CHUNK``
    (at least one query per chunk)."""
    b, nq, _ = queries.shape
    m = keys.shape[1]
    kk = min(k, m)
    rank, perm = _ranks(tiebreak)
    low = (rank if rank is not None else torch.arange(m, device=keys.device).expand(b, m)).to(torch.int64)
    keys_t = keys.transpose(1, 2)
    chunk = max(1, TORCH_CHUNK // (b * m))
    for q0 in range(0, nq, chunk):
        q = queries[:, q0:q0 + chunk]
        qn = (q * q).sum(-1, keepdim=True)
        dist = torch.baddbmm(key_norms[:, None, :], q, keys_t, alpha=-2.0).add_(qn).clamp_min_(0.0)
        packed = ((dist.view(torch.int32) & 0x7FFFFFFF).to(torch.int64) << 32) | low[:, None, :]
        if valid is not None:
            packed.masked_fill_(~valid[:, None, :], SENTINEL)
        sel = torch.topk(packed, kk, dim=2, largest=False, sorted=True).values
        _unpack(sel, perm, out_d[:, q0:q0 + chunk], out_p[:, q0:q0 + chunk])


# ----------------------------------------------------------------------------- triton
# Bitonic networks (Batcher 1968) over the last dim of a [R, N] tile, N a power of two. Written
# with reshape + sums over a size-2 axis (the scheme of Triton's own tl.sort before 3.2) rather
# than tl.topk / tl.sort, whose xor_sum shuffles the CPU interpreter runs ~50x slower.
@lazy_jit
def _cas_tl(x, flip, R: constexpr, N: constexpr, J: constexpr):
    """Compare-and-swap the elements ``2^J`` apart along the last dim of ``x [R, N]``: each pair
    ends ascending where ``flip`` (broadcast to ``[R, N]``) is 0, descending where it is 1."""
    y = tl.reshape(x, [R * N // (2 << J), 2, 1 << J])
    side = tl.arange(0, 2)[None, :, None]
    left = tl.reshape(tl.broadcast_to(tl.sum(y * (1 - side), 1)[:, None, :], [R * N // (2 << J), 2, 1 << J]),
                      [R, N])
    right = tl.reshape(tl.broadcast_to(tl.sum(y * side, 1)[:, None, :], [R * N // (2 << J), 2, 1 << J]), [R, N])
    return tl.where((left > right) != (flip != 0), left ^ right ^ x, x)


@lazy_jit
def _topk_tl(x, R: constexpr, N: constexpr, LOG_N: constexpr, LOG_K: constexpr, DESC: constexpr):
    """The ``K = 2^LOG_K`` smallest of each row of ``x [R, N]`` (``N = 2^LOG_N >= K``), sorted
    (descending if ``DESC``): ``[R, K]``. Sort runs of K with alternating directions; then, per
    halving round, the elementwise min of an ascending and the next (descending) run holds the K
    smallest of both as a bitonic sequence, which a half-cleaner cascade sorts (Batcher 1968)."""
    for s in tl.static_range(1, LOG_K + 1):          # runs of 2^s: direction = bit s of the index
        flip = ((tl.arange(0, N) >> s) & 1)[None, :]
        if s == LOG_N:
            flip = flip ^ DESC
        for t in tl.static_range(s):
            x = _cas_tl(x, flip, R, N, s - 1 - t)
    for r in tl.static_range(1, LOG_N - LOG_K + 1):  # N >> r elements left after round r
        x = tl.reshape(tl.min(tl.reshape(x, [R, N >> (r + LOG_K), 2, 1 << LOG_K]), axis=2), [R, N >> r])
        flip = ((tl.arange(0, N >> r) >> LOG_K) & 1)[None, :]
        if r == LOG_N - LOG_K:
            flip = flip ^ DESC
        for t in tl.static_range(LOG_K):
            x = _cas_tl(x, flip, R, N >> r, LOG_K - 1 - t)
    return x


@lazy_jit
def _merge_tl(best, t, R: constexpr, LOG_K: constexpr):
    """The ``K = 2^LOG_K`` smallest of ``best`` (ascending) and ``t`` (descending), ascending,
    each ``[R, K]``: their elementwise min is bitonic and holds them; a half-cleaner cascade sorts it."""
    x = tl.minimum(best, t)
    ascending = tl.zeros((1, 1 << LOG_K), dtype=tl.int32)
    for i in tl.static_range(LOG_K):
        x = _cas_tl(x, ascending, R, 1 << LOG_K, LOG_K - 1 - i)
    return x


@lazy_jit
def _knn_tl(
    # output: packed candidates [B, Q, S, K_PAD] int64, contiguous (S = programs along axis 1)
    cand_ptr,
    # inputs (last dims contiguous): queries [B, Q, d], keys [B, M, d], key norms [B, M],
    # valid [B, M] uint8 (read iff HAS_VALID), rank [B, M] int32 (read iff HAS_RANK)
    q_ptr, stride_qb, stride_qq,
    x_ptr, stride_xb, stride_xm,
    xn_ptr, stride_nb,
    valid_ptr, stride_vb,
    rank_ptr, stride_rb,
    # sizes: queries per memory, keys per memory, dimension, query blocks per memory, keys per split
    Q, M, D, n_qblocks, chunk,
    # meta-parameters
    K_PAD: constexpr, LOG_K: constexpr, BLOCK_Q: constexpr, BLOCK_M: constexpr, LOG_M: constexpr,
    BLOCK_D: constexpr, SINGLE_D: constexpr,
    HAS_VALID: constexpr, HAS_RANK: constexpr,
):
    """Fused squared-L2 distance + running top-k for ``BLOCK_Q`` queries of one memory over one
    split (``chunk`` keys) of its keys. Grid ``(B · n_qblocks, S)``.

    Per tile of ``BLOCK_M`` keys: ``D = ||q||^2 - 2 q.x + ||x||^2`` with ``tl.dot`` (IEEE fp32,
    over ``BLOCK_D`` slices of d unless ``SINGLE_D``; ``||x||^2`` read from the key norms),
    clamped at 0; packed int64 keys ``(bits(D) << 32) | rank`` (module docstring), SENTINEL for
    keys that are invalid or past the split. The running top-``K_PAD`` ``best`` (ascending,
    ``[BLOCK_Q, K_PAD]``) is merged with the tile only if some key beats some row's current
    ``K_PAD``-th best (after the first tiles most tiles are skipped): ``t = tl.topk`` (bitonic,
    the ``K_PAD`` smallest, ascending); ``min(best, flip(t))`` holds the ``K_PAD`` smallest of
    both as a bitonic sequence (Batcher 1968), which ``tl.bitonic_merge`` sorts. ``K_PAD = 1``
    is a plain running min. The ``S`` splits' candidates are merged on the host by one
    ``torch.topk`` (exact: packed keys are unique).

    Floor: the keys are read once per query block (``4·M·d`` bytes per memory from DRAM once,
    the other query blocks mostly from L2); ``2·Q·M·d`` FLOPs; the candidates ``8·B·Q·S·K_PAD``
    bytes are written once and read once.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n_split = tl.num_programs(1)
    b = (pid // n_qblocks).to(tl.int64)
    rows = (pid % n_qblocks) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    rm = rows < Q
    offs_d = tl.arange(0, BLOCK_D)
    q_rows = q_ptr + b * stride_qb + rows.to(tl.int64)[:, None] * stride_qq
    # ||q||^2 (and the query tile itself when d fits in one slice)
    if SINGLE_D:
        dm = offs_d < D
        qt = tl.load(q_rows + offs_d[None, :], mask=rm[:, None] & dm[None, :], other=0.0)
        qn = tl.sum(qt * qt, axis=1)
    else:
        qn = tl.zeros((BLOCK_Q,), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            qs = tl.load(q_rows + (d0 + offs_d)[None, :], mask=rm[:, None] & (d0 + offs_d < D)[None, :], other=0.0)
            qn += tl.sum(qs * qs, axis=1)

    best = tl.full((BLOCK_Q, K_PAD), 0x7FFFFFFFFFFFFFFF, dtype=tl.int64)
    worst = tl.full((BLOCK_Q,), 0x7FFFFFFFFFFFFFFF, dtype=tl.int64)     # best's last (largest) entry
    sentinel = tl.full((BLOCK_Q, BLOCK_M), 0x7FFFFFFFFFFFFFFF, dtype=tl.int64)
    lo = split * chunk
    hi = tl.minimum(lo + chunk, M)
    x_mem = x_ptr + b * stride_xb
    for start in range(lo, hi, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        mm = offs_m < hi
        x_rows = x_mem + offs_m.to(tl.int64)[:, None] * stride_xm
        if SINGLE_D:
            xt = tl.load(x_rows + offs_d[None, :], mask=mm[:, None] & dm[None, :], other=0.0)
            dots = tl.dot(qt, tl.trans(xt), input_precision="ieee")
        else:
            dots = tl.zeros((BLOCK_Q, BLOCK_M), dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                od = d0 + offs_d
                qs = tl.load(q_rows + od[None, :], mask=rm[:, None] & (od < D)[None, :], other=0.0)
                xs = tl.load(x_rows + od[None, :], mask=mm[:, None] & (od < D)[None, :], other=0.0)
                dots += tl.dot(qs, tl.trans(xs), input_precision="ieee")
        xn = tl.load(xn_ptr + b * stride_nb + offs_m, mask=mm, other=0.0)
        dist = (qn[:, None] - 2.0 * dots) + xn[None, :]
        dist = tl.where(dist < 0.0, 0.0, dist)
        bits = (dist.to(tl.int32, bitcast=True) & 0x7FFFFFFF).to(tl.int64)     # & clears -0.0's sign
        if HAS_RANK:
            low = tl.load(rank_ptr + b * stride_rb + offs_m, mask=mm, other=0).to(tl.int64)
        else:
            low = offs_m.to(tl.int64)
        ok = mm
        if HAS_VALID:
            ok = ok & (tl.load(valid_ptr + b * stride_vb + offs_m, mask=mm, other=0) != 0)
        key = tl.where(ok[None, :], (bits << 32) | low[None, :], sentinel)
        if K_PAD == 1:
            best = tl.minimum(best, tl.min(key, axis=1, keep_dims=True))
        else:
            n_better = tl.sum((key < worst[:, None]).to(tl.int32))
            if n_better > 0:
                t = _topk_tl(key, BLOCK_Q, BLOCK_M, LOG_M, LOG_K, 1)
                best = _merge_tl(best, t, BLOCK_Q, LOG_K)
                worst = tl.max(best, axis=1)

    offs_k = tl.arange(0, K_PAD)
    out = cand_ptr + ((b * Q + rows.to(tl.int64)[:, None]) * n_split + split) * K_PAD + offs_k[None, :]
    tl.store(out, best, mask=rm[:, None])


def _triton_config(b: int, nq: int, m: int, d: int, k_pad: int, device) -> dict:
    """Block sizes and the split count. On CUDA: ``BLOCK_Q x BLOCK_M <= 4096`` (the fp32
    distance tile and its int64 keys stay in registers), about ``4 x SMs`` programs, the split
    over M providing the parallelism when ``B · Q`` is small (Q = 1: ~500 programs of ~15 tiles
    at M = 1e6), at least 4 tiles per split. In the interpreter: few, large programs, but two
    splits when there are two tiles, so the cross-split merge is exercised."""
    cuda = device.type == "cuda"
    block_d = max(16, _next_pow2(d)) if d <= 128 else 64
    if nq <= 16 or k_pad >= 256:
        block_q = 16
    elif nq <= 32 or k_pad >= 128 or not cuda:
        block_q = 32
    else:
        block_q = 64
    block_m = max(4096 // block_q if cuda else 64, k_pad)
    if cuda and block_q == 16:
        block_m = max(128, k_pad)
    n_qblocks = _cdiv(nq, block_q)
    n_tiles = _cdiv(m, block_m)
    if cuda:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        splits = min(_cdiv(4 * sms, b * n_qblocks), _cdiv(n_tiles, 4), 65535)
    else:
        splits = min(2, n_tiles)
    return dict(BLOCK_Q=block_q, BLOCK_M=block_m, BLOCK_D=block_d, n_qblocks=n_qblocks, n_tiles=n_tiles,
                splits=max(1, splits), num_warps=8 if block_q * block_m >= 4096 else 4)


def _knn_triton(queries, keys, k, valid, tiebreak, key_norms, out_d, out_p, *, splits=None, poison=False):
    """Host launcher for :func:`_knn_tl` over ``B`` memories (shapes as :func:`batched_knn`,
    validated, ``M >= 1``, ``k <= TRITON_MAX_K``): allocate the candidates, launch once, merge
    the splits with ``torch.topk``, unpack into ``out_d, out_p``. ``splits`` overrides the split
    count (tests); ``poison`` fills the candidates with -1 (below every real key) first, so a
    candidate the kernel forgot to write shows up in the answer."""
    b, nq, d = queries.shape
    m = keys.shape[1]
    kk = min(k, m)
    k_pad = _next_pow2(kk)
    cfg = _triton_config(b, nq, m, d, k_pad, queries.device)
    n_tiles = cfg["n_tiles"]
    n_split = max(1, min(splits or cfg["splits"], n_tiles))
    chunk = _cdiv(n_tiles, n_split) * cfg["BLOCK_M"]
    n_split = _cdiv(m, chunk)                      # every split non-empty
    queries, keys, key_norms = queries.contiguous(), keys.contiguous(), key_norms.contiguous()
    rank, perm = _ranks(tiebreak)
    valid_u8 = valid.contiguous().view(torch.uint8) if valid is not None else key_norms   # unused if None
    rank_arg = rank if rank is not None else key_norms                                    # unused if None
    shape = (b, nq, n_split, k_pad)
    cand = torch.full(shape, -1, dtype=torch.int64, device=queries.device) if poison else \
        torch.empty(shape, dtype=torch.int64, device=queries.device)
    grid = (b * cfg["n_qblocks"], n_split)
    _knn_tl[grid](
        cand,
        queries, queries.stride(0), queries.stride(1),
        keys, keys.stride(0), keys.stride(1),
        key_norms, key_norms.stride(0),
        valid_u8, valid_u8.stride(0),
        rank_arg, rank_arg.stride(0),
        nq, m, d, cfg["n_qblocks"], chunk,
        K_PAD=k_pad, LOG_K=k_pad.bit_length() - 1, BLOCK_Q=cfg["BLOCK_Q"], BLOCK_M=cfg["BLOCK_M"],
        LOG_M=cfg["BLOCK_M"].bit_length() - 1, BLOCK_D=cfg["BLOCK_D"], SINGLE_D=d <= 128,
        HAS_VALID=valid is not None, HAS_RANK=rank is not None, num_warps=cfg["num_warps"],
    )
    cand = cand.view(b, nq, n_split * k_pad)
    if n_split == 1:       # one split's list is already sorted
        sel = cand[..., :kk]
    else:
        sel = torch.topk(cand, kk, dim=2, largest=False, sorted=True).values
    _unpack(sel, perm, out_d, out_p)


# ----------------------------------------------------------------------------- public ops
def _resolve_backend(backend, device, k) -> str:
    def cpp_has_knn():
        from metarl import _C

        return hasattr(_C, "knn_l2")

    if device.type == "cuda":
        default = "triton" if triton_available() and k <= TRITON_MAX_K else "torch"
    else:
        default = "cpp" if device.type == "cpu" and cpp_available() and cpp_has_knn() else "torch"
    backend = _checks.resolve_backend(backend, device, BACKENDS, default=default, cpu="cpp")
    if backend == "cpp" and not cpp_has_knn():
        raise ValueError("backend='cpp' but metarl._C has no knn_l2 (rebuild the extension)")
    if backend == "triton" and k > TRITON_MAX_K:
        raise ValueError(f"backend='triton' supports k <= {TRITON_MAX_K}, got k={k} (use backend='torch')")
    return backend


def _check(name, t, shape, dtype, device, what):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device} (the queries' device), got {t.device}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {what} = {tuple(shape)}, got {tuple(t.shape)}")


def _validate(queries, keys, k, valid, tiebreak, key_norms, batched):
    """Check the public ops' arguments (module docstring); raise naming the argument."""
    nd = 3 if batched else 2
    lead = "B, " if batched else ""
    for name, t in (("queries", queries), ("keys", keys)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {t.dtype}")
        if t.dim() != nd:
            rows = "Q" if name == "queries" else "M"
            raise ValueError(f"{name} must be [{lead}{rows}, d], got shape {tuple(t.shape)}")
    if keys.device != queries.device:
        raise ValueError(f"keys must be on {queries.device} (the queries' device), got {keys.device}")
    if batched and keys.shape[0] != queries.shape[0]:
        raise ValueError(f"keys must hold as many memories as queries (B = {queries.shape[0]}), got {keys.shape[0]}")
    if keys.shape[-1] != queries.shape[-1]:
        raise ValueError(f"keys must have the queries' dimension d = {queries.shape[-1]}, got {keys.shape[-1]}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if keys.shape[-2] > MAX_KEYS:
        raise ValueError(f"keys may hold at most {MAX_KEYS} rows per memory, got {keys.shape[-2]}")
    mshape = tuple(keys.shape[:-1])
    what = "[B, M]" if batched else "[M]"
    dev = queries.device
    if valid is not None:
        _check("valid", valid, mshape, torch.bool, dev, what)
    if tiebreak is not None:
        _check("tiebreak", tiebreak, mshape, torch.int64, dev, what)
    if key_norms is not None:
        _check("key_norms", key_norms, mshape, torch.float32, dev, what)


def _finite_norms(name, x, valid=None, norms=None, *, given=False):
    """``norms`` (``||x||^2`` over the last dim of ``x``, computed in float32 when None), checked
    finite where ``valid``: a NaN or inf coordinate, or a squared norm past float32's range, would
    make the distances NaN or inf, which the backends order differently (the C++ one drops NaN).
    ``given``: the caller passed ``norms`` (the error then names them). Returns the norms, detached."""
    x = x.detach()
    if norms is None:
        norms = torch.einsum("...d,...d->...", x, x)
    else:
        norms = norms.detach()
    if norms.device.type == "cpu":     # through NumPy: ~2 us at M = 1e3, ~20 us at 1e5 (torch: ~10 and ~300)
        ok = np.isfinite(norms.numpy())
        if valid is not None:
            ok |= ~valid.numpy()
        finite = bool(ok.all())
    else:
        ok = torch.isfinite(norms)
        finite = bool((ok if valid is None else ok | ~valid).all())
    if not finite:
        if given:
            raise ValueError("key_norms must be finite where the keys are valid (found NaN or inf); "
                             "non-finite norms come from non-finite keys or keys with ||x||^2 >= 3.4e38")
        raise ValueError(f"{name} must be finite, with squared norms within float32's range "
                         "(found NaN or inf, or ||x||^2 >= 3.4e38)")
    return norms


def _check_values(queries, keys, valid, key_norms):
    """The data checks of the public ops (after :func:`_validate`): finite queries, and finite valid
    keys (through their norms, so one pass over ``[M]`` when the caller keeps ``key_norms``).
    Returns ``key_norms``, computed when None."""
    if queries.device.type == "cpu":    # the queries' norms are not kept: NumPy's einsum, ~2 us against ~10
        q = queries.detach().numpy()
        _finite_norms("queries", queries, norms=torch.from_numpy(np.einsum("...d,...d->...", q, q)))
    else:
        _finite_norms("queries", queries)
    return _finite_norms("keys", keys, valid, key_norms, given=key_norms is not None)


def _batched_knn(queries, keys, k, valid, tiebreak, key_norms, backend):
    """:func:`batched_knn` without the checks (``backend`` resolved, ``key_norms`` given)."""
    b, nq, _ = queries.shape
    m = keys.shape[1]
    dev = queries.device
    out_d = torch.empty((b, nq, k), dtype=torch.float32, device=dev)
    out_p = torch.empty((b, nq, k), dtype=torch.int64, device=dev)
    if m == 0 or nq == 0 or b == 0:
        out_d.fill_(math.inf)
        out_p.fill_(-1)
        return out_d, out_p
    with torch.no_grad():
        queries, keys, key_norms = queries.detach(), keys.detach(), key_norms.detach()
        if backend == "cpp":
            from metarl import _C

            valid_u8 = valid.contiguous().view(torch.uint8) if valid is not None else \
                torch.ones((b, m), dtype=torch.uint8)
            tb = tiebreak.contiguous() if tiebreak is not None else torch.arange(m).expand(b, m).contiguous()
            _C.batched_knn_l2(queries.contiguous().numpy(), keys.contiguous().numpy(), key_norms.contiguous().numpy(),
                              valid_u8.numpy(), tb.numpy(), int(k), out_d.numpy(), out_p.numpy())
        elif backend == "triton":
            _knn_triton(queries, keys, int(k), valid, tiebreak, key_norms, out_d, out_p)
        else:
            _knn_torch(queries, keys, int(k), valid, tiebreak, key_norms, out_d, out_p)
    return out_d, out_p


def knn(queries, keys, k, *, valid=None, tiebreak=None, key_norms=None, backend=None):
    """Exact k nearest neighbours in squared L2 (module docstring): the op FlatIndex and DND call.

    ``queries [Q, d]`` float32, ``keys [M, d]`` float32 on the same device, ``k >= 1`` (int; may
    exceed M), ``valid [M]`` bool or None (all valid), ``tiebreak [M]`` int64 or None (the
    position; equal distances go to the lower value), ``key_norms [M]`` float32 ``||x||^2`` if
    the caller keeps them (computed when None). ``backend``: None (``"triton"`` on CUDA; on the
    CPU ``"cpp"`` when ``metarl._C`` has ``knn_l2``, else ``"torch"``), ``"torch"``,
    ``"triton"``, ``"cpp"`` or ``"cpu"`` (= ``"cpp"``).

    Returns ``(D [Q, k] float32, P [Q, k] int64)``: distances ascending and positions into
    ``keys``; ``D = +inf, P = -1`` past the valid keys (all of a row when M = 0 or nothing is
    valid). Distances come from ``||q||^2 - 2 q.x + ||x||^2`` (not the reference's direct sum),
    so they carry the usual cancellation error ``~1e-7 · (||q||^2 + ||x||^2)``. No autograd
    (inputs that require grad are read as data).

    Queries and valid keys must be finite with squared norms within float32's range
    (``||x||^2 < 3.4e38``), else ``ValueError``; keys masked out by ``valid`` may hold anything.
    Given ``key_norms`` are trusted to be the keys' norms: they are checked instead of the keys.
    """
    _validate(queries, keys, k, valid, tiebreak, key_norms, batched=False)
    be = _resolve_backend(backend, queries.device, k)
    key_norms = _check_values(queries, keys, valid, key_norms)
    queries, keys = queries.detach(), keys.detach()     # no autograd: tensors that require grad are read as data
    if be == "cpp":
        nq, m = queries.shape[0], keys.shape[0]
        out_d = torch.empty((nq, k), dtype=torch.float32)
        out_p = torch.empty((nq, k), dtype=torch.int64)
        if m == 0 or nq == 0:
            return out_d.fill_(math.inf), out_p.fill_(-1)
        from metarl import _C

        valid_u8 = valid.contiguous().view(torch.uint8) if valid is not None else torch.ones(m, dtype=torch.uint8)
        tb = tiebreak.contiguous() if tiebreak is not None else torch.arange(m)
        _C.knn_l2(queries.contiguous().numpy(), keys.contiguous().numpy(), key_norms.contiguous().numpy(),
                  valid_u8.numpy(), tb.numpy(), int(k), out_d.numpy(), out_p.numpy())
        return out_d, out_p
    one = (lambda t: None if t is None else t.unsqueeze(0))   # noqa: E731 - a view, B = 1
    dist, pos = _batched_knn(queries.unsqueeze(0), keys.unsqueeze(0), k, one(valid), one(tiebreak), one(key_norms), be)
    return dist[0], pos[0]


def batched_knn(queries, keys, k, *, valid=None, tiebreak=None, key_norms=None, backend=None):
    """:func:`knn` for ``B`` memories in one launch (no Python loop over B): ``queries [B, Q, d]``,
    ``keys [B, M, d]``, ``valid [B, M]`` bool, ``tiebreak [B, M]`` int64, ``key_norms [B, M]``
    float32. Returns ``(D [B, Q, k], P [B, Q, k])``, positions into each memory's M slots."""
    _validate(queries, keys, k, valid, tiebreak, key_norms, batched=True)
    be = _resolve_backend(backend, queries.device, k)
    key_norms = _check_values(queries, keys, valid, key_norms)
    return _batched_knn(queries, keys, k, valid, tiebreak, key_norms, be)
