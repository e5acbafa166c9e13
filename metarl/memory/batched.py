"""B independent fixed-capacity memories in one structure, searched by one batched kernel call.

Storage ``[B, C]`` slot arrays (keys ``[B, C, d]``, key norms, ids, valid, last use, and a
per-slot fill count). An entry's id encodes its slot: ``id = slot + C * (times the slot was
filled before)``, so ``remove`` finds slots by arithmetic, with no per-memory map and no loop
over memories; ids stay unique for the life of the index (until ``reset``).
"""
from __future__ import annotations

import numpy as np
import torch

from metarl.kernels.knn import batched_knn
from metarl.memory import _io
from metarl.memory._lru import pick_slots, stamp
from metarl.memory._validate import (
    UnknownIdError,
    as_mask,
    as_vectors,
    check_backend,
    check_device,
    check_k,
    check_pos_int,
    meta_int,
    out_kind,
)


class BatchedIndex:
    """``num_memories`` independent exact-L2 memories of ``capacity`` entries each (e.g. one per task or
    per action), with least-recently-used eviction per memory.

    Every call is batched over memories: ``add(x [B, n, d], mask [B, n])`` appends row ``j`` of
    memory ``b`` where ``mask[b, j]``; ``search(q [B, Q, d], k)`` answers memory ``b``'s queries
    from memory ``b`` only, in one :func:`metarl.kernels.knn.batched_knn` call. Ids are per
    memory: the first ``capacity`` entries of a memory get ids ``0 .. capacity-1`` in the order
    added; later ones ``slot + capacity * generation`` (unique, never reused until ``reset``).

    When a memory is full, an add evicts its least recently used entries (an add and every
    search hit count as a use, stamped in row-major order), exactly as a
    :class:`~metarl.memory.FlatIndex` with the same capacity would. Ties in distance go to the
    lower id. Tensors in, tensors out (on the index's device); NumPy in, NumPy out.

    Args:
        num_memories: the number of memories ``B``.
        dim: vector dimension ``d``.
        capacity: entries per memory ``C`` (preallocated: ``B * C * d`` floats).
        device: ``"cpu"`` or a CUDA device.
        dtype: ``torch.float32`` only.
        backend: the kNN kernel, passed to :func:`metarl.kernels.knn.batched_knn` (``None``: its default).

    Example::

        >>> import torch
        >>> from metarl.memory import BatchedIndex
        >>> index = BatchedIndex(2, 3, capacity=4)
        >>> x = torch.arange(12.0).view(2, 2, 3)
        >>> index.add(x, mask=torch.tensor([[True, True], [True, False]]))
        tensor([[ 0,  1],
                [ 0, -1]])
        >>> index.ntotal
        tensor([2, 1])
        >>> D, I = index.search(x[:, :1], k=2)
        >>> I
        tensor([[[ 0,  1]],
        <BLANKLINE>
                [[ 0, -1]]])
    """

    def __init__(self, num_memories: int, dim: int, capacity: int, *, device="cpu", dtype=torch.float32,
                 backend: str | None = None):
        self.num_memories = check_pos_int("num_memories", num_memories)
        self.d = check_pos_int("dim", dim)
        self.capacity = check_pos_int("capacity", capacity)
        self.device = check_device(device)
        if dtype != torch.float32:
            raise TypeError(f"dtype must be torch.float32, got {dtype}")
        self.dtype = dtype
        self.backend = check_backend(backend)
        self.reset()

    def reset(self) -> None:
        """Empty every memory and restart the id numbering."""
        B, C, dev = self.num_memories, self.capacity, self.device
        self._keys = torch.zeros((B, C, self.d), dtype=self.dtype, device=dev)
        self._norms = torch.zeros((B, C), dtype=torch.float32, device=dev)
        self._ids = torch.full((B, C), -1, dtype=torch.int64, device=dev)
        self._valid = torch.zeros((B, C), dtype=torch.bool, device=dev)
        self._last_use = torch.zeros((B, C), dtype=torch.int64, device=dev)
        self._fills = torch.zeros((B, C), dtype=torch.int64, device=dev)
        self._clock = 0

    @property
    def ntotal(self) -> torch.Tensor:
        """Entries stored per memory, ``[B]`` int64."""
        return self._valid.sum(1)

    def __repr__(self) -> str:
        return (f"BatchedIndex(num_memories={self.num_memories}, d={self.d}, capacity={self.capacity}, "
                f"device={self.device})")

    # ------------------------------------------------------------------ add
    def add(self, x, mask=None):
        """Append ``x [B, n, d]`` (row ``j`` to memory ``b`` where ``mask[b, j]``; all rows when ``mask``
        is None). Returns ids ``[B, n]`` int64, ``-1`` where masked. A memory that is full evicts
        its least recently used entries; at most ``capacity`` rows per memory per call."""
        B, C = self.num_memories, self.capacity
        x, numpy_in = as_vectors("x", x, (B, None, self.d), self.dtype, self.device)
        n = x.shape[1]
        if mask is None:
            mask = torch.ones((B, n), dtype=torch.bool, device=self.device)
        else:
            mask = as_mask("mask", mask, (B, n), self.device)
        most = int(mask.sum(1).max()) if n else 0
        if most > C:
            raise ValueError(f"x/mask: a memory would get {most} rows, more than its capacity {C}")
        out = torch.full((B, n), -1, dtype=torch.int64, device=self.device)
        if most:
            slots = pick_slots(self._valid, self._last_use, mask)
            b, j = mask.nonzero(as_tuple=True)       # row-major: memory, then row
            s = slots[b, j]
            new_ids = self._fills[b, s] * C + s
            rows = x[b, j]
            self._keys[b, s] = rows
            self._norms[b, s] = (rows * rows).sum(1)
            self._ids[b, s] = new_ids
            self._fills[b, s] += 1
            self._valid[b, s] = True
            self._clock = stamp(self._last_use, b * C + s, self._clock)
            out[b, j] = new_ids
        return out_kind(out, numpy_in)

    # ------------------------------------------------------------------ search
    def search(self, q, k: int):
        """The ``k`` nearest entries of memory ``b`` to each query ``q[b]``: ``(D, I)`` each ``[B, Q, k]``.

        ``D`` squared L2 ascending (float32), ``I`` per-memory ids (int64), padded ``inf`` / ``-1``
        past a memory's entries; ties to the lower id. Every hit counts as a use (LRU)."""
        B, C = self.num_memories, self.capacity
        q, numpy_in = as_vectors("q", q, (B, None, self.d), self.dtype, self.device)
        k = check_k(k)
        nq = q.shape[1]
        D = torch.full((B, nq, k), float("inf"), dtype=torch.float32, device=self.device)
        I = torch.full((B, nq, k), -1, dtype=torch.int64, device=self.device)
        if nq and bool(self._valid.any()):
            kk = min(k, C)
            d, p = batched_knn(q, self._keys, kk, valid=self._valid, tiebreak=self._ids, key_norms=self._norms,
                                backend=self.backend)
            hit = p >= 0
            pc = p.clamp_min(0)
            D[..., :kk] = torch.where(hit, d.clamp_min(0.0), float("inf"))
            I[..., :kk] = torch.where(hit, self._ids.gather(1, pc.view(B, -1)).view(B, nq, kk), -1)
            flat = (torch.arange(B, device=self.device).view(B, 1, 1) * C + pc)[hit]
            self._clock = stamp(self._last_use, flat, self._clock)
        return out_kind(D, numpy_in), out_kind(I, numpy_in)

    # ------------------------------------------------------------------ remove / read back
    def _id_slots(self, name: str, ids):
        """Validated ``ids [B, n]`` -> ``(ids, slots, live, was_numpy)``; unknown ids raise."""
        B, C = self.num_memories, self.capacity
        numpy_in = isinstance(ids, np.ndarray)
        if numpy_in:
            ids = torch.from_numpy(np.array(ids))
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"{name} must be an integer torch.Tensor or numpy.ndarray, got {type(ids).__name__}")
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise TypeError(f"{name} must hold integers, got {ids.dtype}")
        if ids.dim() != 2 or ids.shape[0] != B:
            raise ValueError(f"{name} must have shape [{B}, n] (-1: no id), got {tuple(ids.shape)}")
        ids = ids.to(device=self.device, dtype=torch.int64)
        if bool((ids < -1).any()):
            raise ValueError(f"{name} must be >= -1 (-1: no id), got {int(ids.min())}")
        live = ids >= 0
        slots = ids.clamp_min(0) % C
        known = self._valid.gather(1, slots) & (self._ids.gather(1, slots) == ids)
        unknown = live & ~known
        if bool(unknown.any()):
            b, j = (int(v) for v in unknown.nonzero()[0])
            raise UnknownIdError(f"{name}: id {int(ids[b, j])} is not in memory {b} (nothing was changed)")
        return ids, slots, live, numpy_in

    def remove(self, ids):
        """Remove the entries ``ids [B, n]`` (per-memory ids, ``-1``: none) -> number removed per memory ``[B]``.

        An unknown id raises :class:`UnknownIdError`, a repeated one ``ValueError``; then nothing
        is removed."""
        ids, slots, live, numpy_in = self._id_slots("ids", ids)
        srt = ids.sort(1).values
        if bool(((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any()):
            raise ValueError("ids must be distinct within a memory (nothing was removed)")
        b, j = live.nonzero(as_tuple=True)
        s = slots[b, j]
        self._valid[b, s] = False
        self._ids[b, s] = -1
        return out_kind(live.sum(1), numpy_in)

    remove_ids = remove

    def reconstruct(self, ids):
        """The stored vectors of ``ids [B, n]`` -> ``[B, n, d]`` (zeros where ``ids`` is -1)."""
        ids, slots, live, numpy_in = self._id_slots("ids", ids)
        rows = self._keys.gather(1, slots.unsqueeze(-1).expand(-1, -1, self.d))
        return out_kind(rows * live.unsqueeze(-1), numpy_in)

    # ------------------------------------------------------------------ files
    _TENSORS = ("_keys", "_norms", "_ids", "_valid", "_last_use", "_fills")   # norms too: bit-for-bit answers

    def save(self, path) -> None:
        """Write the index to ``path`` atomically (see :mod:`metarl.memory._io`)."""
        meta = {"num_memories": self.num_memories, "dim": self.d, "capacity": self.capacity, "clock": self._clock}
        _io.save(path, "BatchedIndex", meta, {name[1:]: getattr(self, name) for name in self._TENSORS})

    def _load_new(cls, path, *, device="cpu", backend=None) -> BatchedIndex:
        meta, t = _io.load(path, "BatchedIndex")
        try:
            B, d, C = (meta_int(meta, name, lo=1) for name in ("num_memories", "dim", "capacity"))
            clock = meta_int(meta, "clock")
            shapes = {"keys": (B, C, d), "norms": (B, C), "ids": (B, C), "valid": (B, C), "last_use": (B, C),
                      "fills": (B, C)}
            if set(t) != set(shapes):
                raise ValueError(f"it holds tensors {sorted(t)}, expected {sorted(shapes)}")
            for name, shape in shapes.items():       # checked before anything of that size is allocated
                want = torch.float32 if name in ("keys", "norms") else torch.bool if name == "valid" else torch.int64
                if tuple(t[name].shape) != shape or t[name].dtype != want:
                    raise ValueError(f"{name} is {t[name].dtype} {tuple(t[name].shape)}, expected {want} {shape}")
            valid, ids = t["valid"], t["ids"]
            slot = torch.arange(C).expand(B, C)
            if bool((valid & ((ids < 0) | (ids % C != slot))).any()):
                raise ValueError("stored ids do not match their slots")
            # a slot's next id is fills * C + slot: a fill count not above a stored id's generation
            # would make the next add reuse that id
            if bool((t["fills"] < 0).any()) or bool((valid & (ids // C >= t["fills"])).any()):
                raise ValueError("fill counts do not exceed the stored ids' generations")
            if not (bool(torch.isfinite(t["keys"][valid]).all()) and bool(torch.isfinite(t["norms"][valid]).all())):
                raise ValueError("stored keys are not finite")
            if bool(valid.any()) and clock <= int(t["last_use"][valid].max()):
                raise ValueError(f"clock {clock} is not above the latest stored use {int(t['last_use'][valid].max())}")
            index = cls(B, d, C, device=device, backend=backend)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path!r} is not a valid metarl BatchedIndex file: {e}") from None
        for name in cls._TENSORS:
            getattr(index, name).copy_(t[name[1:]])
        index._ids.masked_fill_(~index._valid, -1)
        index._clock = clock
        return index

    def _load_into(self, path) -> None:
        new = type(self)._load_new(type(self), path, device=self.device, backend=self.backend)
        self.__dict__.update(new.__dict__)

    load = _io.classmethod_or_method(_load_new, _load_into)
    load.__doc__ = """``BatchedIndex.load(path, device="cpu", backend=None)`` returns a new index read from
        ``path``; ``index.load(path)`` replaces ``index``'s contents in place. A truncated, corrupted or
        foreign file raises ``ValueError`` naming the file and changes nothing."""
