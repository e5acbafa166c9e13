"""metarl.algos.inner.MAML in learn2learn's own MAML loop (learn2learn's examples/maml_sine.py: a 3-layer MLP,
``maml.clone()``, ``learner.adapt(support_loss)`` steps, the query losses averaged over a batch of tasks,
one Adam step on ``maml.parameters()``), with metarl's class where learn2learn's was.

Checked: the loop learns (the adapted query loss on held-out sine tasks falls well below what it was, and
adaptation helps); its losses equal, iteration by iteration, the same loop written with ``torch.func``
(``p - lr * grad`` of a functional call, second order) from the same weights and tasks; and, where
learn2learn is installed, they equal learn2learn's ``l2l.algorithms.MAML`` in that loop.

Where the two differ (API, learn2learn 0.2.0): its ``clone``/``adapt`` also take ``allow_unused`` and
``allow_nograd`` (metarl's take ``first_order`` only; ``allow_unused`` is set on the wrapper), and with
``allow_nograd=True`` it skips parameters with ``requires_grad=False``, which metarl cannot (such a
parameter is an error, as in learn2learn's default); its ``adapt`` stores each step as a ``.update``
attribute on the clone's tensors (``update_module``, which also applies one found on a buffer), metarl's
writes the new parameters only; its ``BaseLearner`` forwards unknown attributes to the module, metarl's
wrapper exposes it as ``.module`` only. The numbers are the same.

learn2learn 0.2.0 does not build on Python >= 3.11 (its sdist's Cython C includes ``longintrepr.h``), so
it is not in the interop extra; the comparison test runs where it is importable.
"""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from metarl.algos.inner import MAML


class SineModel(nn.Module):
    """learn2learn's maml_sine.py model."""

    def __init__(self, dim):
        super().__init__()
        self.hidden1 = nn.Linear(1, dim)
        self.hidden2 = nn.Linear(dim, dim)
        self.hidden3 = nn.Linear(dim, 1)

    def forward(self, x):
        x = nn.functional.relu(self.hidden1(x))
        x = nn.functional.relu(self.hidden2(x))
        return self.hidden3(x)


def sine_tasks(num_tasks, samples, generator):
    """torchmeta's Sinusoid (which maml_sine.py loads): amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5].
    Returns x, y ``[num_tasks, samples, 1]``."""
    amplitude = 0.1 + 4.9 * torch.rand(num_tasks, 1, 1, generator=generator)
    phase = math.pi * torch.rand(num_tasks, 1, 1, generator=generator)
    x = -5 + 10 * torch.rand(num_tasks, samples, 1, generator=generator)
    return x, amplitude * torch.sin(x - phase)


def maml_sine_loop(maml, opt, iterations, shots=10, tasks_per_batch=8, adapt_steps=1, seed=0):
    """learn2learn's maml_sine.py main loop with ``maml`` (any class with its clone/adapt API); returns the
    meta-train loss of every iteration."""
    lossfn = nn.MSELoss(reduction="mean")
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(iterations):
        inputs, targets = sine_tasks(tasks_per_batch, 2 * shots, generator)
        meta_train_loss = 0.0
        for i in range(tasks_per_batch):
            learner = maml.clone()
            x_support, y_support = inputs[i][::2], targets[i][::2]
            x_query, y_query = inputs[i][1::2], targets[i][1::2]
            for _ in range(adapt_steps):
                support_loss = lossfn(learner(x_support), y_support)
                learner.adapt(support_loss)
            meta_train_loss += lossfn(learner(x_query), y_query)
        meta_train_loss = meta_train_loss / tasks_per_batch
        opt.zero_grad()
        meta_train_loss.backward()
        opt.step()
        losses.append(meta_train_loss.item())
    return losses


def functional_sine_loop(model, opt, iterations, adapt_lr, shots=10, tasks_per_batch=8, adapt_steps=1, seed=0):
    """The same loop without a wrapper: ``p - lr * dL/dp`` on a dict of parameters (torch.func), second order."""
    lossfn = nn.MSELoss(reduction="mean")
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())

    def support_loss(p, x, y):
        return lossfn(functional_call(model, p, (x,)), y)

    losses = []
    for _ in range(iterations):
        inputs, targets = sine_tasks(tasks_per_batch, 2 * shots, generator)
        meta_train_loss = 0.0
        for i in range(tasks_per_batch):
            p = params
            for _ in range(adapt_steps):
                g = grad(support_loss)(p, inputs[i][::2], targets[i][::2])
                p = {k: p[k] - adapt_lr * g[k] for k in p}
            meta_train_loss += lossfn(functional_call(model, p, (inputs[i][1::2],)), targets[i][1::2])
        meta_train_loss = meta_train_loss / tasks_per_batch
        opt.zero_grad()
        meta_train_loss.backward()
        opt.step()
        losses.append(meta_train_loss.item())
    return losses


def adapted_query_loss(maml, adapt_steps, num_tasks=64, seed=123):
    """Mean query MSE on held-out tasks after ``adapt_steps`` support steps (0: no adaptation)."""
    x, y = sine_tasks(num_tasks, 20, torch.Generator().manual_seed(seed))
    total = 0.0
    for i in range(num_tasks):
        learner = maml.clone(first_order=True)
        for _ in range(adapt_steps):
            learner.adapt(nn.functional.mse_loss(learner(x[i][::2]), y[i][::2]))
        total += nn.functional.mse_loss(learner(x[i][1::2]), y[i][1::2]).item()
    return total / num_tasks


def test_learn2learn_sine_loop_learns(one_thread):
    torch.manual_seed(0)
    maml = MAML(SineModel(32), lr=0.01, first_order=False, allow_unused=True)
    opt = torch.optim.Adam(maml.parameters(), 3e-3)
    before = adapted_query_loss(maml, adapt_steps=5)
    maml_sine_loop(maml, opt, iterations=300, adapt_steps=1)
    after, unadapted = adapted_query_loss(maml, adapt_steps=5), adapted_query_loss(maml, adapt_steps=0)
    # measured (torch seeds 0-2): 3.84-3.88 before; 1.58-1.91 after 300 iterations, 2.95-3.26 without the
    # 5 adaptation steps
    assert after < 0.6 * before and after < 0.8 * unadapted, (before, after, unadapted)


@pytest.mark.parametrize("adapt_steps", [1, 3])
def test_equals_the_functional_loop(adapt_steps, one_thread):
    """metarl's MAML in the loop is MAML's update, second order: the same losses as torch.func's."""
    torch.manual_seed(0)
    model = SineModel(16)
    twin = SineModel(16)
    twin.load_state_dict(model.state_dict())
    maml = MAML(model, lr=0.01)
    ours = maml_sine_loop(maml, torch.optim.Adam(maml.parameters(), 1e-3), iterations=6, adapt_steps=adapt_steps)
    ref = functional_sine_loop(twin, torch.optim.Adam(twin.parameters(), 1e-3), iterations=6, adapt_lr=0.01,
                               adapt_steps=adapt_steps)
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(ref), rtol=1e-5, atol=1e-6)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first_order", [False, True])
def test_equals_learn2learn(first_order, one_thread):
    """With learn2learn installed: its MAML and metarl's, from the same weights on the same tasks, give the
    same meta-train losses and the same trained weights."""
    l2l = pytest.importorskip("learn2learn")
    torch.manual_seed(0)
    model = SineModel(16)
    twin = SineModel(16)
    twin.load_state_dict(model.state_dict())
    ours = MAML(model, lr=0.01, first_order=first_order)
    theirs = l2l.algorithms.MAML(twin, lr=0.01, first_order=first_order)
    a = maml_sine_loop(ours, torch.optim.Adam(ours.parameters(), 1e-3), iterations=8, adapt_steps=2)
    b = maml_sine_loop(theirs, torch.optim.Adam(theirs.parameters(), 1e-3), iterations=8, adapt_steps=2)
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
