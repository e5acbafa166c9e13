"""Episodic memory: exact k-nearest-neighbour indexes (FAISS-like) and NEC's differentiable DND.

- :class:`FlatIndex` — one exact L2 index shaped like ``faiss.IndexFlatL2`` (stable ids, O(batch)
  removal, optional LRU capacity).
- :class:`BatchedIndex` — B independent fixed-capacity memories, searched by one kernel call.
- :class:`DND` — NEC's differentiable neural dictionary (an ``nn.Module``, one memory per action).

All three save and load atomically (``save(path)``, ``Cls.load(path)`` / ``obj.load(path)``).
The searches run on :mod:`metarl.kernels.knn`.
"""
from metarl.memory._validate import UnknownIdError
from metarl.memory.batched import BatchedIndex
from metarl.memory.dnd import DND
from metarl.memory.flat import FlatIndex

__all__ = ["FlatIndex", "BatchedIndex", "DND", "UnknownIdError"]
