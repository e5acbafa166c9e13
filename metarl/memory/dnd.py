"""NEC's differentiable neural dictionary (Pritzel et al. 2017): one key-value memory per action.

Lookup: ``Q(h, a) = Σ_i w_i Q_i`` over the ``k`` nearest keys ``h_i`` of memory ``a``, with
``w_i = κ(h, h_i) / Σ_j κ(h, h_j)`` and ``κ(h, h_i) = 1 / (‖h − h_i‖² + δ)``. The neighbours are
chosen by one :func:`metarl.kernels.knn.batched_knn` call (index selection, not differentiated);
the distances of the chosen keys are then recomputed in torch, so gradients reach the
query ``h``, the chosen keys and their values.

Write: a key already stored in memory ``a`` (bitwise equal) gets the tabular update
``Q_i ← Q_i + α (v − Q_i)``; a new key is appended, evicting the memory's least recently used
entry when it is full.

Values are scalars (NEC's Q-values) or, with ``value_dim``, vectors (e.g. the LSTM cell states
that episodic meta-RL stores and reinstates): the same weights then average whole vectors.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from metarl.kernels.knn import batched_knn
from metarl.memory import _io
from metarl.memory._lru import pick_slots, stamp
from metarl.memory._validate import check_backend, check_device, check_pos_int, finite_rows, meta_int

_MATCH_CANDIDATES = 8   # nearest keys checked for a bitwise-equal one on write


def _shapes(t: dict) -> dict:
    return {name: tuple(v.shape) for name, v in t.items()}


def _route(actions: torch.Tensor, num: int) -> tuple[torch.Tensor, int]:
    """Row ``i`` -> its rank among the rows of memory ``actions[i]`` (row order), and the largest count."""
    counts = torch.bincount(actions, minlength=num)
    order = torch.argsort(actions, stable=True)
    start = counts.cumsum(0) - counts
    rank = torch.empty_like(actions)
    rank[order] = torch.arange(actions.numel(), device=actions.device) - start[actions[order]]
    return rank, int(counts.max())


class DND(nn.Module):
    """Differentiable neural dictionary: ``num_actions`` memories of ``capacity`` (key, value) pairs.

    Parameters (seen by optimizers): ``keys [A, C, key_dim]`` and ``values [A, C]`` (``[A, C, V]``
    with ``value_dim=V``; every ``[N]`` value below is then ``[N, V]``). Buffers:
    ``valid [A, C]`` bool, ``last_use [A, C]`` int64 (LRU clock ticks) and ``clock`` — all in
    ``state_dict``. Writes go to the parameters' ``.data`` under ``no_grad``.

    - :meth:`lookup` ``(h [N, key_dim], actions=None)``: ``[N, A]`` estimates for every memory,
      or ``[N]`` for ``actions [N]`` (each row searches only its own memory). A memory with no
      entries answers 0; one with fewer than ``k`` answers from those it has. Every neighbour
      used counts as a use of that entry (LRU).
    - :meth:`write` ``(h [N, key_dim], values [N], actions [N], alpha=0.1)``: NEC's rule (module
      docstring). Rows of one call are applied in order: a key written twice in one call is
      appended once and then updated tabularly, exactly as a loop of single writes would.

    Neighbour selection runs in float32 (the kernel's precision) and orders ties by slot; the
    weights and their gradients are computed in the module's dtype (``float64`` supports
    ``torch.autograd.gradcheck``). The key gradient is dense (``[A, C, key_dim]``).

    Args:
        num_actions: the number of memories ``A`` (one per action in NEC).
        key_dim: key size.
        capacity: entries per memory ``C`` (NEC: 5e5).
        k: neighbours per lookup (NEC: 50).
        delta: ``δ`` of the kernel ``1 / (d² + δ)`` (NEC: 1e-3).
        value_dim: None (scalar values, NEC) or the size ``V`` of vector values.
        device, dtype: ``torch.float32`` or ``torch.float64``.
        backend: the kNN kernel, passed to :func:`metarl.kernels.knn.batched_knn` (``None``: its default).

    Example::

        >>> import torch
        >>> from metarl.memory import DND
        >>> dnd = DND(2, key_dim=3, capacity=8, k=2)
        >>> h = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        >>> dnd.write(h, torch.tensor([1.0, 3.0]), torch.tensor([0, 0]))
        tensor([False, False])
        >>> dnd.lookup(torch.tensor([[0.5, 0.0, 0.0]])).detach()   # halfway: equal weights; memory 1 empty
        tensor([[2., 0.]])
        >>> dnd.write(h[:1], torch.tensor([2.0]), torch.tensor([0]), alpha=0.5)   # exact match: 1 + 0.5 (2 - 1)
        tensor([True])
        >>> dnd.values.data[0, :2]
        tensor([1.5000, 3.0000])
    """

    def __init__(self, num_actions: int, key_dim: int, capacity: int, *, k: int = 50, delta: float = 1e-3,
                 value_dim: int | None = None, device="cpu", dtype=torch.float32, backend: str | None = None):
        super().__init__()
        self.num_actions = check_pos_int("num_actions", num_actions)
        self.key_dim = check_pos_int("key_dim", key_dim)
        self.capacity = check_pos_int("capacity", capacity)
        self.k = check_pos_int("k", k)
        if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < math.inf:
            raise ValueError(f"delta must be a positive finite number, got {delta!r}")
        self.delta = float(delta)
        self.value_dim = None if value_dim is None else check_pos_int("value_dim", value_dim)
        self._value_shape = () if value_dim is None else (self.value_dim,)
        self.backend = check_backend(backend)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        dev = check_device(device)
        A, C = self.num_actions, self.capacity
        self.keys = nn.Parameter(torch.zeros((A, C, self.key_dim), dtype=dtype, device=dev))
        self.values = nn.Parameter(torch.zeros((A, C, *self._value_shape), dtype=dtype, device=dev))
        self.register_buffer("valid", torch.zeros((A, C), dtype=torch.bool, device=dev))
        self.register_buffer("last_use", torch.zeros((A, C), dtype=torch.int64, device=dev))
        self.register_buffer("clock", torch.zeros((), dtype=torch.int64, device=dev))
        self._norms: tuple | None = None    # (keys' identity and version, float32 ‖h_i‖² [A, C])

    # ------------------------------------------------------------------ helpers
    @property
    def ntotal(self) -> torch.Tensor:
        """Entries stored per memory, ``[A]`` int64."""
        return self.valid.sum(1)

    def extra_repr(self) -> str:
        extra = "" if self.value_dim is None else f", value_dim={self.value_dim}"
        return (f"num_actions={self.num_actions}, key_dim={self.key_dim}, capacity={self.capacity}, "
                f"k={self.k}, delta={self.delta}{extra}")

    def reset(self) -> None:
        """Forget every entry (keys and values zeroed, the LRU clock restarted)."""
        with torch.no_grad():
            self.keys.zero_()
            self.values.zero_()
            self.valid.zero_()
            self.last_use.zero_()
            self.clock.zero_()

    def _key_norms(self) -> torch.Tensor:
        """float32 ``‖h_i‖²``, recomputed when ``keys`` was replaced or changed in place (optimizer step,
        ``load_state_dict``); :meth:`write` keeps it current itself."""
        keys = self.keys
        tag = (keys.data_ptr(), keys._version, keys.dtype, keys.device)
        if self._norms is None or self._norms[0] != tag:
            k32 = keys.detach().float()
            self._norms = (tag, (k32 * k32).sum(-1))
        return self._norms[1]

    def _search(self, queries: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances and slots ``[A, Q, kk]`` (+inf / -1: none) of the nearest valid keys of
        memory ``a`` to ``queries[a]``."""
        return batched_knn(queries.detach().float().contiguous(), self.keys.detach().float(), kk,
                           valid=self.valid, key_norms=self._key_norms(),
                           backend=self.backend)

    def _search_rows(self, h: torch.Tensor, mem: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_search` of row ``i`` of ``h`` in memory ``mem[i]`` only: ``[N, kk]`` each."""
        rank, most = _route(mem, self.num_actions)
        queries = h.new_zeros((self.num_actions, most, self.key_dim)).detach()
        queries[mem, rank] = h.detach()
        dist, slots = self._search(queries, kk)
        return dist[mem, rank], slots[mem, rank]

    def _check_h(self, name: str, h) -> torch.Tensor:
        if not isinstance(h, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(h).__name__}")
        if h.dtype != self.keys.dtype:
            raise TypeError(f"{name} must be {self.keys.dtype} (the DND's dtype), got {h.dtype}")
        if h.device != self.keys.device:
            raise ValueError(f"{name} must be on {self.keys.device}, got {h.device}")
        if h.dim() != 2 or h.shape[1] != self.key_dim:
            raise ValueError(f"{name} must have shape [N, {self.key_dim}], got {tuple(h.shape)}")
        if h.numel() and not finite_rows(h):     # the search runs in float32: norms must fit there
            if not bool(torch.isfinite(h.detach()).all()):
                raise ValueError(f"{name} contains NaN or inf")
            raise ValueError(f"{name} has a row whose float32 squared norm overflows (||h||^2 >= 3.4e38)")
        return h

    def _check_actions(self, actions, n: int) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            raise TypeError(f"actions must be an integer torch.Tensor, got {type(actions).__name__}")
        if actions.dtype == torch.bool or actions.is_floating_point() or actions.is_complex():
            raise TypeError(f"actions must hold integers, got {actions.dtype}")
        if tuple(actions.shape) != (n,):
            raise ValueError(f"actions must have shape [{n}], got {tuple(actions.shape)}")
        if actions.device != self.keys.device:
            raise ValueError(f"actions must be on {self.keys.device}, got {actions.device}")
        if n and (int(actions.min()) < 0 or int(actions.max()) >= self.num_actions):
            raise ValueError(f"actions must be in [0, {self.num_actions}), got values in "
                             f"[{int(actions.min())}, {int(actions.max())}]")
        return actions.long()

    def _weighted(self, h_rows, mem, slots):
        """``Σ w_i Q_i`` over ``slots`` (-1: none) of memories ``mem`` (broadcast with slots), differentiable."""
        hit = slots >= 0
        # one flat index_select per table rather than table[mem, s]: the backward of advanced indexing
        # accumulated the key gradients in a varying order (NEC runs differed in the last bit)
        flat = (mem * self.capacity + slots.clamp_min(0)).reshape(-1)
        shape = hit.shape
        keys = self.keys.flatten(0, 1).index_select(0, flat).view(*shape, self.key_dim)        # [..., kk, d]
        values = self.values.flatten(0, 1).index_select(0, flat).view(*shape, *self._value_shape)
        diff = h_rows.unsqueeze(-2) - keys
        w = torch.where(hit, 1.0 / ((diff * diff).sum(-1) + self.delta), 0.0)
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)   # no neighbours: all w = 0
        if self.value_dim is None:
            return (w * values).sum(-1)
        return (w.unsqueeze(-1) * values).sum(-2)

    # ------------------------------------------------------------------ lookup
    def lookup(self, h, actions=None):
        """``[N, A]`` value estimates of ``h [N, key_dim]`` from every memory (``actions=None``), or ``[N]``
        from memory ``actions[i]`` for row ``i`` (``[N, A, V]`` / ``[N, V]`` with ``value_dim``).
        Differentiable in ``h``, ``keys`` and ``values``."""
        h = self._check_h("h", h)
        A, C = self.num_actions, self.capacity
        n, kk = h.shape[0], min(self.k, self.capacity)
        if actions is None:
            if n == 0:
                return h.new_zeros((0, A, *self._value_shape))
            slots = self._search(h.unsqueeze(0).expand(A, n, self.key_dim), kk)[1]        # [A, N, kk]
            mem = torch.arange(A, device=h.device).view(A, 1, 1)
            out = self._weighted(h.unsqueeze(0), mem, slots).transpose(0, 1)              # [N, A(, V)]
        else:
            actions = self._check_actions(actions, n)
            if n == 0:
                return h.new_zeros((0, *self._value_shape))
            slots = self._search_rows(h, actions, kk)[1]                                  # [N, kk]
            mem = actions.view(n, 1)
            out = self._weighted(h, mem, slots)                                           # [N]
        with torch.no_grad():
            flat = (mem * C + slots.clamp_min(0))[slots >= 0]
            self.clock.fill_(stamp(self.last_use, flat, int(self.clock)))
        return out

    forward = lookup

    @torch.no_grad()
    def search(self, h, actions, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` (default the DND's ``k``) nearest stored keys of memory ``actions[i]`` to ``h[i]``:
        ``(squared distances [N, k] float32, slots [N, k] int64)``, nearest first, padded with
        ``+inf`` / ``-1`` where the memory holds fewer entries. A read only: not differentiated and
        not counted as a use (LRU); :meth:`lookup` gives the weighted values."""
        h = self._check_h("h", h)
        n = h.shape[0]
        actions = self._check_actions(actions, n)
        kk = self.k if k is None else check_pos_int("k", k)
        kk = min(kk, self.capacity)
        if n == 0:
            return (torch.zeros((0, kk), device=h.device), torch.zeros((0, kk), dtype=torch.int64, device=h.device))
        dist, slots = self._search_rows(h, actions, kk)
        return dist.clamp_min(0.0), slots

    # ------------------------------------------------------------------ write
    @torch.no_grad()
    def write(self, h, values, actions, alpha: float = 0.1) -> torch.Tensor:
        """NEC's write of ``(h [N, key_dim], values [N] or [N, V])`` into memories ``actions [N]``.

        Returns ``[N]`` bool: True where the row was a tabular update ``Q ← Q + α (v − Q)`` of a key
        already present (stored before, or written by an earlier row of this call); False where
        it was appended. At most ``capacity`` new keys per memory per call.
        """
        h = self._check_h("h", h).detach()
        n = h.shape[0]
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if values.dtype != self.values.dtype or values.device != self.values.device:
            raise TypeError(f"values must be {self.values.dtype} on {self.values.device}, "
                            f"got {values.dtype} on {values.device}")
        if tuple(values.shape) != (n, *self._value_shape):
            want = ", ".join(str(x) for x in (n, *self._value_shape))
            raise ValueError(f"values must have shape [{want}], got {tuple(values.shape)}")
        if n and not bool(torch.isfinite(values).all()):
            raise ValueError("values contains NaN or inf")
        actions = self._check_actions(actions, n)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if n == 0:
            return torch.zeros(0, dtype=torch.bool, device=h.device)
        values = values.detach()
        A, C, dev = self.num_actions, self.capacity, h.device

        # groups of rows with the same (action, key), applied in row order
        rows = torch.cat([actions.to(h.dtype).unsqueeze(1), h], 1)
        _, group = torch.unique(rows, dim=0, return_inverse=True)
        num_groups = int(group.max()) + 1
        idx = torch.arange(n, device=dev)
        first = torch.full((num_groups,), n, device=dev).scatter_reduce_(0, group, idx, "amin")
        renumber = torch.empty_like(first)
        renumber[torch.argsort(first)] = torch.arange(num_groups, device=dev)   # groups in row order
        group = renumber[group]
        first = first.sort().values
        size = torch.bincount(group, minlength=num_groups)
        pos, _ = _route(group, num_groups)                 # position of the row within its group
        g_mem, g_key = actions[first], h[first]

        # exact match: a bitwise-equal key among the nearest candidates of the group's memory
        g_rank, most = _route(g_mem, A)
        queries = h.new_zeros((A, most, self.key_dim))
        queries[g_mem, g_rank] = g_key
        cand = self._search(queries, min(_MATCH_CANDIDATES, C))[1][g_mem, g_rank]       # [G, kk]
        same = (cand >= 0) & (self.keys.data[g_mem.unsqueeze(1), cand.clamp_min(0)] == g_key.unsqueeze(1)).all(-1)
        matched = same.any(1)
        g_slot = torch.where(matched, cand.gather(1, same.long().argmax(1, keepdim=True)).squeeze(1), -1)

        # appends: free slots first, then the least recently used (checked before anything changes)
        new = ~matched
        mask = torch.zeros((A, most), dtype=torch.bool, device=dev)
        mask[g_mem[new], g_rank[new]] = True
        per_memory = int(mask.sum(1).max())
        if per_memory > C:
            raise ValueError(f"h/actions: a memory would get {per_memory} new keys, more than its capacity {C}")
        if per_memory:
            g_slot[new] = pick_slots(self.valid, self.last_use, mask)[g_mem[new], g_rank[new]]

        # the rows of a group folded in order: Q_m = (1-α)^m Q_0 + Σ_j α (1-α)^(m-1-j) v_j, where an
        # appended key starts from its first row's value (that row's weight is (1-α)^(m-1))
        a = float(alpha)
        m = size[group]
        weight = a * (1 - a) ** (m - 1 - pos).to(h.dtype)
        appended_first = new[group] & (pos == 0)
        weight = torch.where(appended_first, (1 - a) ** (m - 1).to(h.dtype), weight)
        vshape = (-1,) + (1,) * len(self._value_shape)        # per-row factors broadcast over V
        total = torch.zeros((num_groups, *self._value_shape), dtype=h.dtype, device=dev).index_add_(
            0, group, weight.view(vshape) * values)
        old = torch.where(matched.view(vshape), self.values.data[g_mem, g_slot.clamp_min(0)], 0.0)
        total += old * ((1 - a) ** size.to(h.dtype)).view(vshape)

        self.keys.data[g_mem, g_slot] = g_key
        self.values.data[g_mem, g_slot] = total
        self.valid[g_mem, g_slot] = True
        norms = self._key_norms()
        norms[g_mem, g_slot] = (g_key.float() * g_key.float()).sum(1)
        self.clock.fill_(stamp(self.last_use, g_mem * C + g_slot, int(self.clock)))   # uses in row order
        return ~(appended_first)

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write the DND (settings, keys, values, LRU state) to ``path`` atomically."""
        meta = {"num_actions": self.num_actions, "key_dim": self.key_dim, "capacity": self.capacity, "k": self.k,
                "delta": self.delta, "value_dim": self.value_dim, "dtype": str(self.keys.dtype).removeprefix("torch.")}
        _io.save(path, "DND", meta, {k: v for k, v in self.state_dict().items()})

    def _load_new(cls, path, *, device="cpu", backend=None) -> DND:
        meta, t = _io.load(path, "DND")
        try:
            dtype = {"float32": torch.float32, "float64": torch.float64}[meta["dtype"]]
            A, key_dim, C, k = (meta_int(meta, name, lo=1) for name in ("num_actions", "key_dim", "capacity", "k"))
            # files written before vector values have no value_dim
            value_dim = meta_int(meta, "value_dim", lo=1, allow_none=True) if "value_dim" in meta else None
            vshape = () if value_dim is None else (value_dim,)
            shapes = {"keys": (A, C, key_dim), "values": (A, C, *vshape), "valid": (A, C), "last_use": (A, C),
                      "clock": ()}
            # checked before the DND of that size is allocated
            if set(t) != set(shapes) or any(tuple(t[name].shape) != shape for name, shape in shapes.items()):
                raise ValueError(f"its tensors {_shapes(t)} do not fit its settings {meta}")
            dnd = cls(A, key_dim, C, k=k, delta=meta["delta"], value_dim=value_dim, device=device, dtype=dtype,
                      backend=backend)
            dnd._check_state(t)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path!r} is not a valid metarl DND file: {e}") from None
        dnd.load_state_dict(t)
        return dnd

    def _check_state(self, t: dict) -> None:
        mine = self.state_dict()
        if set(t) != set(mine):
            raise ValueError(f"it holds {sorted(t)}, this DND has {sorted(mine)}")
        for name, v in mine.items():
            if t[name].shape != v.shape or t[name].dtype != v.dtype:
                raise ValueError(f"{name} is {t[name].dtype} {tuple(t[name].shape)}, this DND has "
                                 f"{v.dtype} {tuple(v.shape)}")
        if not (bool(torch.isfinite(t["keys"]).all()) and bool(torch.isfinite(t["values"]).all())):
            raise ValueError("stored keys or values are not finite")
        valid = t["valid"]
        if bool(valid.any()) and int(t["clock"]) <= int(t["last_use"][valid].max()):
            raise ValueError(f"clock {int(t['clock'])} is not above the latest stored use "
                             f"{int(t['last_use'][valid].max())} (the LRU order would tie)")

    def _load_into(self, path) -> None:
        meta, t = _io.load(path, "DND")
        try:
            self._check_state(t)
            if float(meta["delta"]) != self.delta or int(meta["k"]) != self.k:
                raise ValueError(f"k/delta are {meta['k']}/{meta['delta']}, this DND has {self.k}/{self.delta}")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path!r} does not fit this DND: {e}") from None
        self.load_state_dict(t)     # copies into the existing parameters: optimizers keep tracking them

    load = _io.classmethod_or_method(_load_new, _load_into)
    load.__doc__ = """``DND.load(path, device="cpu", backend=None)`` returns a new DND read from ``path``;
        ``dnd.load(path)`` copies the file's state into ``dnd``'s own parameters and buffers (same sizes, k and delta
        required), so an optimizer holding them keeps working. A truncated, corrupted or foreign
        file raises ``ValueError`` naming the file and changes nothing."""
