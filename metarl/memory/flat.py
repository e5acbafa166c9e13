"""Exact L2 nearest-neighbour index shaped like ``faiss.IndexFlatL2``, with stable ids, O(batch) removal
and optional least-recently-used eviction.

Storage is preallocated slot arrays — keys ``[S, d]``, key norms ``[S]``, ids ``[S]`` int64,
valid ``[S]`` bool, last use ``[S]`` int64 — that grow geometrically (up to ``capacity``).
Removing an entry clears its valid bit and frees its slot for the next add; nothing is moved,
so an id never changes. A search is one call of :func:`metarl.kernels.knn.knn` over the slots
in use, with ``valid`` masking the freed ones and ``tiebreak=ids``.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from metarl.kernels.knn import knn
from metarl.memory import _io
from metarl.memory._lru import stamp
from metarl.memory._validate import (
    UnknownIdError,
    as_ids,
    as_vectors,
    check_backend,
    check_device,
    check_k,
    check_pos_int,
    meta_int,
    out_kind,
)

_INITIAL_SLOTS = 1024
_NEVER = np.iinfo(np.int64).max   # last_use of a freed slot
_ID_END = 2**63                   # ids are int64: the automatic counter stops below this


class FlatIndex:
    """Exact squared-L2 k-nearest-neighbour index over ``d``-dimensional float32 vectors.

    The API follows ``faiss.IndexFlatL2`` (``add``, ``add_with_ids``, ``search``, ``remove_ids``,
    ``reconstruct``, ``ntotal``, ``reset``, ``d``). Vectors and queries are torch tensors on the
    index's device or NumPy arrays; a call answers in kind (NumPy in: NumPy out, ``D`` float32,
    ``I`` int64; tensors in: tensors on the index's device).

    Differences from FAISS, on purpose:

    - **Ids are stable.** ``add`` numbers vectors 0, 1, 2, ... from a counter that never goes
      back (``reset`` restarts it); ``remove_ids`` does not renumber the others.
      ``add_with_ids`` takes any non-negative int64 ids; the counter then continues past the
      largest id seen, so automatic ids never collide with given ones.
    - **No duplicate ids.** Duplicate ids within one ``add_with_ids`` call, or an id already
      stored, raise ``ValueError`` (FAISS's ``IndexIDMap`` would store both).
    - **Unknown ids raise.** ``remove_ids`` of an id not stored raises :class:`UnknownIdError`
      (a ``KeyError`` and a ``ValueError``) and removes nothing; pass ``missing="ignore"`` for
      FAISS's behaviour (skip them). Both return the number removed.
    - **Capacity.** With ``capacity``, adding to a full index evicts the least recently used
      entries first (adding an entry and every search hit count as a use). ``capacity=None``
      grows without bound and never evicts.
    - **Ties.** ``search`` orders equal distances by lower id.

    Search results are squared L2 distances, ascending, ``[Q, k]``; rows with fewer than ``k``
    entries available are padded with ``inf`` / ``-1``. Distances are computed in the
    ``‖q‖² − 2 q·x + ‖x‖²`` form (as FAISS does), so they agree with a direct computation to
    float32 rounding of that form (about ``1e-6 * (‖q‖² + ‖x‖²)``), clamped at 0.

    Bad arguments (wrong shape, dtype or device; NaN or inf; ``k < 1``; unknown or duplicate
    ids) raise ``ValueError`` or ``TypeError`` naming the argument, and leave the index unchanged.

    Args:
        dim: vector dimension ``d``.
        capacity: the most entries held (LRU eviction past it), or ``None`` (unbounded).
        device: where the vectors live and the search runs (``"cpu"`` or a CUDA device).
        dtype: ``torch.float32`` (the only one supported, as in FAISS).
        backend: the kNN kernel, passed to :func:`metarl.kernels.knn.knn` (``None``: its default
            for the device; ``"torch"``, ``"triton"``, ``"cpp"``/``"cpu"`` force one).

    Example::

        >>> import numpy as np
        >>> from metarl.memory import FlatIndex
        >>> index = FlatIndex(4)
        >>> index.add(np.eye(4, dtype=np.float32))
        array([0, 1, 2, 3])
        >>> D, I = index.search(np.array([[1.0, 0.1, 0.0, 0.0]], dtype=np.float32), k=2)
        >>> I
        array([[0, 1]])
        >>> index.remove_ids(np.array([0])), index.ntotal
        (1, 3)
        >>> index.search(np.array([[1.0, 0.1, 0.0, 0.0]], dtype=np.float32), k=5)[1]
        array([[ 1,  2,  3, -1, -1]])
    """

    _numpy_views = True     # False: the device (torch) code path on the CPU too (tests run it that way)

    def __init__(self, dim: int, *, capacity: int | None = None, device="cpu", dtype=torch.float32,
                 backend: str | None = None):
        self.d = check_pos_int("dim", dim)
        self.capacity = check_pos_int("capacity", capacity, allow_none=True)
        self.device = check_device(device)
        if dtype != torch.float32:
            raise TypeError(f"dtype must be torch.float32, got {dtype}")
        self.dtype = dtype
        self.backend = check_backend(backend)
        self.is_trained = True          # FAISS attribute: a flat index needs no training
        self.reset()

    # ------------------------------------------------------------------ storage
    def reset(self) -> None:
        """Remove every entry and restart the automatic id counter at 0."""
        self._id_to_slot: dict[int, int] = {}
        self._free: list[int] = []      # freed slots below self._size, reused first (LIFO)
        self._size = 0                  # slots [0, size) have been used; the kernel scans them
        self._next_id = 0
        self._clock = 0
        self._alloc(min(_INITIAL_SLOTS, self.capacity or _INITIAL_SLOTS))

    def _alloc(self, slots: int) -> None:
        """(Re)allocate the slot arrays to ``slots`` slots, keeping the first ``self._size``."""
        dev, n = self.device, self._size
        new = (torch.zeros((slots, self.d), dtype=self.dtype, device=dev),   # keys
               torch.zeros(slots, dtype=torch.float32, device=dev),          # key norms ‖x‖²
               torch.full((slots,), -1, dtype=torch.int64, device=dev),      # ids (-1: empty)
               torch.zeros(slots, dtype=torch.bool, device=dev),             # valid
               torch.full((slots,), _NEVER, dtype=torch.int64, device=dev))  # last use (tick; never: max)
        if n and hasattr(self, "_t"):
            for dst, src in zip(new, self._t):
                dst[:n] = src[:n]
        self._t = new
        # CPU: zero-copy NumPy views (fancy indexing on a few rows costs ~1 us there, ~5 us in torch)
        self._np = tuple(t.numpy() for t in new) if dev.type == "cpu" and self._numpy_views else None

    def _slots_index(self, slots: np.ndarray):
        return slots if self._np is not None else torch.from_numpy(slots).to(self.device)

    @property
    def ntotal(self) -> int:
        """The number of entries stored."""
        return len(self._id_to_slot)

    def __len__(self) -> int:
        return len(self._id_to_slot)

    def __repr__(self) -> str:
        cap = "" if self.capacity is None else f", capacity={self.capacity}"
        return f"FlatIndex(d={self.d}, ntotal={self.ntotal}{cap}, device={self.device})"

    # ------------------------------------------------------------------ add
    def add(self, x):
        """Add ``x [n, d]``; returns their ids ``[n]`` int64 (consecutive from the id counter).

        ``ValueError`` (nothing added) if the counter would pass the largest int64 id, which only an
        ``add_with_ids`` of ids near ``2**63 - 1`` can make happen."""
        x, numpy_in = as_vectors("x", x, (None, self.d), self.dtype, self.device)
        n = x.shape[0]
        self._check_fits(n)
        if self._next_id + n > _ID_END:
            raise ValueError(f"x: {n} automatic ids from {self._next_id} would pass the largest int64 id "
                             f"{_ID_END - 1} (an id that large was given to add_with_ids); use add_with_ids")
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._insert(x, ids)
        self._next_id += n
        return ids if numpy_in else torch.from_numpy(ids).to(self.device)

    def add_with_ids(self, x, ids) -> None:
        """Add ``x [n, d]`` under the given ``ids [n]`` (non-negative integers, new and distinct)."""
        x, _ = as_vectors("x", x, (None, self.d), self.dtype, self.device)
        ids, _ = as_ids("ids", ids)
        n = x.shape[0]
        if ids.shape[0] != n:
            raise ValueError(f"ids must have one id per row of x ({n}), got {ids.shape[0]}")
        self._check_fits(n)
        if n == 0:
            return
        if ids.min() < 0:
            raise ValueError(f"ids must be >= 0 (-1 marks 'no result'), got {int(ids.min())}")
        id_list = ids.tolist()
        if len(set(id_list)) != n:
            uniq, counts = np.unique(ids, return_counts=True)
            raise ValueError(f"ids must be distinct, got {int(uniq[counts > 1][0])} more than once")
        stored = self._id_to_slot
        clash = next((i for i in id_list if i in stored), None)
        if clash is not None:
            raise ValueError(f"ids: id {clash} is already in the index (remove it first)")
        self._insert(x, ids)
        self._next_id = max(self._next_id, int(ids.max()) + 1)

    def _check_fits(self, n: int) -> None:
        if self.capacity is not None and n > self.capacity:
            raise ValueError(f"x has {n} rows, more than the index's capacity {self.capacity}")

    def _insert(self, x: torch.Tensor, ids: np.ndarray) -> None:
        """Write validated rows (all checks done: from here on nothing raises on bad input)."""
        n = ids.shape[0]
        if n == 0:
            return
        slots = self._take_slots(n)
        ticks = np.arange(self._clock, self._clock + n, dtype=np.int64)
        self._clock += n
        if self._np is not None:
            keys, norms, sid, valid, last = self._np
            xn = x.numpy()
            keys[slots] = xn
            norms[slots] = np.einsum("ij,ij->i", xn, xn)
            sid[slots], valid[slots], last[slots] = ids, True, ticks
        else:
            keys, norms, sid, valid, last = self._t
            s = self._slots_index(slots)
            keys[s] = x
            norms[s] = (x * x).sum(1)
            sid[s] = torch.from_numpy(ids).to(self.device)
            valid[s] = True
            last[s] = torch.from_numpy(ticks).to(self.device)
        self._id_to_slot.update(zip(ids.tolist(), slots.tolist()))

    def _take_slots(self, n: int) -> np.ndarray:
        """``n`` distinct empty slots: freed ones first, then fresh ones (growing the arrays), then —
        with a capacity — the least recently used entries, evicted."""
        parts = []
        reuse = min(n, len(self._free))
        if reuse:
            parts.append(np.array(self._free[len(self._free) - reuse:], dtype=np.int64))
            del self._free[len(self._free) - reuse:]
        limit = self.capacity if self.capacity is not None else np.iinfo(np.int64).max
        fresh = min(n - reuse, limit - self._size)
        if fresh:
            need = self._size + fresh
            allocated = self._t[0].shape[0]
            if need > allocated:
                self._alloc(min(max(2 * allocated, need), limit))
            parts.append(np.arange(self._size, need, dtype=np.int64))
            self._size = need
        evict = n - reuse - fresh
        if evict:
            parts.append(self._evict(evict))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _evict(self, n: int) -> np.ndarray:
        """Drop the ``n`` least recently used entries; returns their slots. Called only when no freed or
        fresh slot is left; the freed slots just handed out still carry last use ``_NEVER``, so they
        are never chosen (fewer than ``n`` entries are valid only if ``n`` exceeded the capacity)."""
        size = self._size
        if self._np is not None:
            last = self._np[4][:size]
            slots = np.argpartition(last, n - 1)[:n] if n < size else np.arange(size)
            slots = np.sort(slots).astype(np.int64)
            gone = self._np[2][slots]
            self._np[3][slots] = False
        else:
            slots_t = torch.topk(self._t[4][:size], n, largest=False).indices.sort().values
            gone = self._t[2][slots_t].cpu().numpy()
            self._t[3][slots_t] = False
            slots = slots_t.cpu().numpy()
        for i in gone.tolist():
            del self._id_to_slot[i]
        return slots

    # ------------------------------------------------------------------ remove
    def remove_ids(self, ids, *, missing: str = "raise") -> int:
        """Remove the entries with these ``ids``; returns the number removed.

        ``missing="raise"`` (default): an id that is not stored (never added, removed, or
        evicted) raises :class:`UnknownIdError` and nothing is removed; duplicate ids raise
        ``ValueError``. ``missing="ignore"``: skip unknown and repeated ids, as FAISS does.
        Cost: O(len(ids)) — the slot is freed, nothing is moved.
        """
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        ids, _ = as_ids("ids", ids)
        id_list = ids.tolist()
        get = self._id_to_slot.get
        slot_list = [get(i, -1) for i in id_list]
        if missing == "raise":
            if -1 in slot_list:
                bad = id_list[slot_list.index(-1)]
                raise UnknownIdError(f"ids: id {bad} is not in the index (nothing was removed)")
            if len(set(id_list)) != len(id_list):
                raise ValueError("ids must be distinct (nothing was removed)")
        else:
            keep = {i: s for i, s in zip(id_list, slot_list) if s >= 0}
            id_list, slot_list = list(keep), list(keep.values())
        if not slot_list:
            return 0
        pop = self._id_to_slot.pop
        for i in id_list:
            pop(i)
        slots = np.array(slot_list, dtype=np.int64)
        # a freed slot: invalid, no id, and never a LRU victim (last use = +max until it is reused)
        if self._np is not None:
            self._np[3][slots], self._np[2][slots], self._np[4][slots] = False, -1, _NEVER
        else:
            s = self._slots_index(slots)
            self._t[3][s], self._t[2][s], self._t[4][s] = False, -1, _NEVER
        self._free.extend(slot_list)
        return len(slot_list)

    # ------------------------------------------------------------------ search
    def search(self, q, k: int):
        """The ``k`` nearest entries of each query ``q [Q, d]``: ``(D [Q, k], I [Q, k])``.

        ``D`` squared L2 distances ascending (float32), ``I`` ids (int64); ties by lower id; rows
        padded with ``inf`` / ``-1`` past the entries stored. With a capacity, every hit counts
        as a use of that entry for LRU eviction.
        """
        q, numpy_in = as_vectors("q", q, (None, self.d), self.dtype, self.device)
        k = check_k(k)
        nq = q.shape[0]
        D = torch.full((nq, k), float("inf"), dtype=torch.float32, device=self.device)
        I = torch.full((nq, k), -1, dtype=torch.int64, device=self.device)
        if nq and self.ntotal:
            size = self._size
            keys, norms, sid, valid, last = self._t
            kk = min(k, size)
            d, p = knn(q, keys[:size], kk, valid=valid[:size], tiebreak=sid[:size], key_norms=norms[:size],
                       backend=self.backend)
            hit = p >= 0
            D[:, :kk] = torch.where(hit, d.clamp_min(0.0), float("inf"))
            I[:, :kk] = torch.where(hit, sid[p.clamp_min(0)], -1)
            if self.capacity is not None:
                self._clock = stamp(last, p[hit], self._clock)
        return out_kind(D, numpy_in), out_kind(I, numpy_in)

    # ------------------------------------------------------------------ read back
    def reconstruct(self, id):
        """The stored vector ``[d]`` of ``id`` (a copy). A NumPy integer id gives a NumPy array."""
        if isinstance(id, bool) or not isinstance(id, (numbers.Integral, np.integer)):
            raise TypeError(f"id must be an int, got {type(id).__name__}")
        slot = self._id_to_slot.get(int(id))
        if slot is None:
            raise UnknownIdError(f"id: {int(id)} is not in the index")
        return out_kind(self._t[0][slot].clone(), isinstance(id, np.integer))

    def reconstruct_batch(self, ids):
        """The stored vectors ``[n, d]`` of ``ids [n]`` (a copy; NumPy ids give a NumPy array)."""
        ids, numpy_in = as_ids("ids", ids)
        slot_list = [self._id_to_slot.get(i, -1) for i in ids.tolist()]
        if -1 in slot_list:
            raise UnknownIdError(f"ids: id {int(ids[slot_list.index(-1)])} is not in the index")
        rows = self._t[0][self._slots_index(np.array(slot_list, dtype=np.int64))]
        return out_kind(rows, numpy_in)

    def get_ids(self):
        """Every stored id, ascending, as an int64 tensor on the index's device."""
        return torch.tensor(sorted(self._id_to_slot), dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ files
    def _state(self) -> tuple[dict, dict]:
        n = self._size
        keys, norms, sid, valid, last = self._t
        meta = {"dim": self.d, "capacity": self.capacity, "next_id": self._next_id, "clock": self._clock}
        # norms travel too, so a loaded index answers bit for bit as the saved one did
        return meta, {"keys": keys[:n], "norms": norms[:n], "ids": sid[:n], "valid": valid[:n], "last_use": last[:n]}

    def save(self, path) -> None:
        """Write the index to ``path`` atomically (temp file, fsync, rename; see :mod:`metarl.memory._io`)."""
        meta, tensors = self._state()
        _io.save(path, "FlatIndex", meta, tensors)

    def _load_new(cls, path, *, device="cpu", backend=None) -> FlatIndex:
        meta, t = _io.load(path, "FlatIndex")
        try:
            dim, capacity = meta_int(meta, "dim", lo=1), meta_int(meta, "capacity", lo=1, allow_none=True)
            next_id, clock = meta_int(meta, "next_id"), meta_int(meta, "clock")
            dtypes = {"keys": torch.float32, "norms": torch.float32, "ids": torch.int64, "valid": torch.bool,
                      "last_use": torch.int64}
            if set(t) != set(dtypes) or any(t[name].dtype != want for name, want in dtypes.items()):
                raise ValueError("unexpected tensors or dtypes")
            n = t["keys"].shape[0]
            if (t["keys"].shape != (n, dim) or (capacity is not None and n > capacity)
                    or any(t[name].shape != (n,) for name in ("norms", "ids", "valid", "last_use"))):
                raise ValueError("inconsistent shapes")
            valid, ids, last = t["valid"], t["ids"], t["last_use"]
            live = ids[valid]
            if bool((live < 0).any()) or live.unique().numel() != live.numel():
                raise ValueError("stored ids are negative or repeated")
            if not (bool(torch.isfinite(t["keys"][valid]).all()) and bool(torch.isfinite(t["norms"][valid]).all())):
                raise ValueError("stored keys are not finite")
            # the counters continue past what is stored: else the next add() would reuse an id, or the
            # next use tie an old one in the LRU order
            if live.numel() and next_id <= int(live.max()):
                raise ValueError(f"next_id {next_id} is not above the largest stored id {int(live.max())}")
            if next_id > _ID_END:
                raise ValueError(f"next_id {next_id} is past the int64 ids")
            if live.numel() and clock <= int(last[valid].max()):
                raise ValueError(f"clock {clock} is not above the latest stored use {int(last[valid].max())}")
            index = cls(dim, capacity=capacity, device=device, backend=backend)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path!r} is not a valid metarl FlatIndex file: {e}") from None
        index._alloc(max(n, index._t[0].shape[0]))
        index._size = n
        keys, norms, sid, vmask, lu = index._t
        keys[:n] = t["keys"].to(index.device)
        norms[:n] = t["norms"].to(index.device)
        sid[:n] = torch.where(valid, ids, -1).to(index.device)
        vmask[:n] = valid.to(index.device)
        lu[:n] = torch.where(valid, last, _NEVER).to(index.device)
        slots = torch.nonzero(valid).view(-1)
        index._id_to_slot = dict(zip(ids[slots].tolist(), slots.tolist()))
        index._free = torch.nonzero(~valid).view(-1).tolist()[::-1]   # LIFO: lowest freed slot reused first
        index._next_id, index._clock = next_id, clock
        return index

    def _load_into(self, path) -> None:
        new = type(self)._load_new(type(self), path, device=self.device, backend=self.backend)
        self.__dict__.update(new.__dict__)   # all or nothing: state swapped only once the file checked out

    load = _io.classmethod_or_method(_load_new, _load_into)
    load.__doc__ = """``FlatIndex.load(path, device="cpu", backend=None)`` returns a new index read from ``path``;
        ``index.load(path)`` replaces ``index``'s contents (dim and capacity included) in place.
        A truncated, corrupted or foreign file raises ``ValueError`` naming the file and changes nothing."""
