"""Task batches: a family's task parameters as a dataclass of tensors (leading dim n)."""
from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass
class Tasks:
    """Base of every family's task dataclass. Fields are tensors with leading dim n.

    Example::

        >>> import metarl
        >>> env = metarl.make_vec("CartPole-v1", 4)
        >>> tasks = env.sample_tasks(4)
        >>> len(tasks), tasks.masscart.shape
        (4, torch.Size([4]))
        >>> len(tasks[1:3])
        2
    """

    def fields(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def __len__(self) -> int:
        return int(self.fields()[0].shape[0])

    def __getitem__(self, index) -> Tasks:
        """A sub-batch: ``index`` is a slice, an int tensor of indices or a bool mask."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return type(self)(*(t[index] for t in self.fields()))

    def to(self, device) -> Tasks:
        return type(self)(*(t.to(device) for t in self.fields()))

    def clone(self) -> Tasks:
        return type(self)(*(t.clone() for t in self.fields()))

    @classmethod
    def cat(cls, batches) -> Tasks:
        batches = list(batches)
        return cls(*(torch.cat(ts) for ts in zip(*(b.fields() for b in batches))))

    def equal(self, other: Tasks) -> bool:
        return type(self) is type(other) and all(torch.equal(a, b) for a, b in zip(self.fields(), other.fields()))


def log_uniform(n: int, default: float, low: float, high: float, generator) -> torch.Tensor:
    """``default * exp(U[log low, log high])`` as float32 ``[n]`` (the spec's ``default × log-U[low, high]``)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (default * torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))).to(torch.float32)
