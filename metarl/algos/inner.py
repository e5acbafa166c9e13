"""Gradient-based adaptation for any model and loss, batched over tasks (the inner loop of MAML and
Meta-SGD), and a learn2learn-shaped wrapper.

- :func:`inner_loop`: every task's SGD steps at once, ``vmap`` over tasks of ``torch.func.grad`` of a
  one-task loss, second order unless ``first_order``, a float or per-parameter (Meta-SGD) step size;
  :func:`inner_loop_reference` is the plain Python loop over tasks it must equal (the oracle).
- :class:`MAML`: ``clone()`` / ``adapt(loss)`` around any ``nn.Module`` (learn2learn's API), one task
  at a time, for supervised or custom uses.

:mod:`metarl.algos.maml` (MAML for RL) adapts its policies with :func:`inner_loop`;
``bench/maml_meta_batch.py`` measures the three side by side.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import grad, vmap


# ----------------------------------------------------------------------------- the learn2learn-shaped wrapper
def _clone_module(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` whose parameters are ``p.clone()`` (differentiable functions of
    the originals, not leaves); buffers are shared. Works on clones of clones (no deepcopy)."""
    clone = copy.copy(module)
    clone.__dict__ = module.__dict__.copy()
    clone.__dict__["_parameters"] = {k: (None if p is None else p.clone()) for k, p in module._parameters.items()}
    clone.__dict__["_buffers"] = dict(module._buffers)
    clone.__dict__["_modules"] = {k: (None if m is None else _clone_module(m)) for k, m in module._modules.items()}
    return clone


class MAML(nn.Module):
    """learn2learn-style MAML wrapper around any ``nn.Module``.

    ``clone()`` returns a wrapper around a copy of the module whose parameters are
    differentiable functions of the originals; ``adapt(loss)`` takes one SGD step
    ``p ← p − lr · ∂loss/∂p`` in place on that clone, keeping the graph (second order) unless
    ``first_order``. A loss computed with the adapted clone backpropagates to the original
    parameters.

    Example::

        >>> import torch
        >>> from metarl.algos.maml import MAML
        >>> maml = MAML(torch.nn.Linear(1, 1), lr=0.1)
        >>> x, y = torch.randn(8, 1), torch.randn(8, 1)
        >>> learner = maml.clone()
        >>> learner.adapt(((learner(x) - y) ** 2).mean())
        >>> ((learner(x) - y) ** 2).mean().backward()     # reaches maml.module's parameters
        >>> maml.module.weight.grad is not None
        True
    """

    def __init__(self, module: nn.Module, lr: float, first_order: bool = False, allow_unused: bool = False):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.module = module
        self.lr = float(lr)
        self.first_order = bool(first_order)
        self.allow_unused = bool(allow_unused)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def clone(self, first_order: bool | None = None) -> MAML:
        """A wrapper around a differentiable copy of the module (same lr; ``first_order`` overrides)."""
        new = copy.copy(self)
        new.__dict__ = self.__dict__.copy()
        new.__dict__["_modules"] = {"module": _clone_module(self.module)}
        if first_order is not None:
            new.__dict__["first_order"] = bool(first_order)
        return new

    def adapt(self, loss: torch.Tensor, first_order: bool | None = None) -> None:
        """One inner SGD step on this (cloned) module's parameters, in place."""
        first_order = self.first_order if first_order is None else bool(first_order)
        slots, seen = [], set()        # (owner, name) of every parameter, shared ones once
        for m in self.module.modules():
            for k, p in m._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    slots.append((m, k))
        params = [m._parameters[k] for m, k in slots]
        grads = torch.autograd.grad(loss, params, create_graph=not first_order, retain_graph=not first_order,
                                    allow_unused=self.allow_unused)
        for (m, k), p, g in zip(slots, params, grads):
            if g is not None:
                m._parameters[k] = p - self.lr * g


# ----------------------------------------------------------------------------- the functional inner loop
def _lr_of(lr, name: str):
    return lr[name] if isinstance(lr, dict) else lr


def inner_loop(loss_fn: Callable, params: dict, batches: Sequence, lr, first_order: bool = False) -> dict:
    """Adapt ``params`` to every task at once: ``vmap`` over tasks of ``len(batches)`` SGD steps.

    ``loss_fn(params, task_batch) -> scalar`` is the loss of ONE task; ``params`` a dict of
    tensors shared by all tasks (the meta-parameters, possibly requiring grad); ``batches`` a
    sequence with one entry per inner step, each a pytree of tensors with a leading task dim
    ``[B, ...]`` (step ``k`` uses ``batches[k]``; repeat an entry to take several steps on the
    same data); ``lr`` a float or a dict of tensors shaped like ``params`` (Meta-SGD).
    ``first_order`` drops the second derivatives (the gradients are treated as constants).
    Returns the adapted parameters, each ``[B, *shape]``; they are differentiable functions of
    ``params`` (and of ``lr`` when it is a dict of tensors).
    """
    if len(batches) == 0:
        raise ValueError("batches must hold at least one inner step")
    task_grad = grad(loss_fn)

    def one_task(*task_batches):
        p = params
        for b in task_batches:
            g = task_grad(p, b)
            p = {k: p[k] - _lr_of(lr, k) * (g[k].detach() if first_order else g[k]) for k in p}
        return p

    return vmap(one_task)(*batches)


def inner_loop_reference(loss_fn: Callable, params: dict, batches: Sequence, lr, first_order: bool = False) -> dict:
    """:func:`inner_loop` as a plain Python loop over tasks with ``torch.autograd.grad`` (the oracle)."""
    num_tasks = _leading_dim(batches[0])
    out = []
    for i in range(num_tasks):
        p = dict(params)
        for b in batches:
            names = list(p)
            loss = loss_fn(p, _index_tree(b, i))
            gs = torch.autograd.grad(loss, [p[k] for k in names], create_graph=not first_order)
            p = {k: p[k] - _lr_of(lr, k) * (g.detach() if first_order else g) for k, g in zip(names, gs)}
        out.append(p)
    return {k: torch.stack([o[k] for o in out]) for k in params}


def _leading_dim(tree) -> int:
    if isinstance(tree, torch.Tensor):
        return tree.shape[0]
    return _leading_dim(next(iter(tree.values())) if isinstance(tree, dict) else tree[0])


def _index_tree(tree, i: int):
    if isinstance(tree, torch.Tensor):
        return tree[i]
    if isinstance(tree, dict):
        return {k: _index_tree(v, i) for k, v in tree.items()}
    return type(tree)(_index_tree(v, i) for v in tree)


__all__ = ["MAML", "inner_loop", "inner_loop_reference"]
