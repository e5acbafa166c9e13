"""Data-parallel training on ``torch.distributed``, launched by ``torchrun`` (gloo on CPUs, NCCL on GPUs).

The run harness (:func:`metarl.algos.harness.run`) is distributed once, here, for every learner: rank 0
writes the logs and checkpoints, every rank loads the checkpoint on resume, a stop request on any rank
stops all of them at the same iteration. A learner uses a few helpers: :func:`init` (once, in its
constructor), :func:`shard` (its share of the env copies or tasks), and the collectives
(:func:`all_reduce_mean`, :func:`sum_grads`, :func:`mean_grads`, :func:`normalize`, :func:`gather`).
Launched without ``torchrun`` (no ``WORLD_SIZE`` in the environment, or 1) every helper is the identity and
nothing is initialised: a learner runs exactly as it did before.

**What equals one process.** Rank ``r`` of ``W`` owns rows ``[r·n, (r+1)·n)`` of the whole batch of
``N = W·n`` env copies (or ``B = W·b`` tasks). Its random numbers are those rows of the whole batch's:
every rank seeds the same generators and draws for the whole batch (the policy's noise ``[T, N, ...]``, the
tasks of the ``N`` copies whose trials start together, MAML's ``B`` tasks, the minibatch permutation of
``N``) and keeps its rows; an env's per-copy streams are keyed by the copy's index in the whole batch
(:func:`shard_env_keys`). Drawing ``N`` random numbers instead of ``n`` costs far less than stepping the
copies. So a ``W``-process run sees the trajectories of a one-process run with the same total batch, and
its updates (gradients summed or averaged over ranks, advantage statistics over the whole minibatch) equal
that run's to float rounding (sums taken in another order, BLAS on smaller batches). There is therefore no
per-rank seed offset: ranks differ by the rows they keep, not by their seeds. Where trials do not end in
lockstep (variable-length episodes) each rank still draws valid, distinct tasks, but not the one-process
run's.
"""
from __future__ import annotations

import datetime
import math
import os

import torch
import torch.distributed as dist

_device = torch.device("cpu")      # where the collectives' tensors live (cpu: gloo, cuda: nccl)


# ----------------------------------------------------------------------------- the process group
def init(device="cpu") -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT`` in the environment): gloo when ``device`` is the CPU, NCCL on CUDA
    (each rank on GPU ``LOCAL_RANK`` modulo the GPUs present). Without those variables, or with
    ``WORLD_SIZE`` 1, nothing happens. Idempotent. Returns ``(rank, world size)``."""
    global _device
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        device = torch.device(device)
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local % torch.cuda.device_count())
            _device = torch.device("cuda", torch.cuda.current_device())
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return rank(), world()


def active() -> bool:
    """True when this process is one of several ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if active() else 0


def world() -> int:
    """The number of ranks (1 when not distributed)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def close() -> None:
    """Leave the process group (at the end of a ``torchrun`` job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- shards
def shard(n: int, name: str = "n") -> int:
    """This rank's share of ``n`` env copies or tasks: ``n / world()``; a ValueError naming ``name``
    when the ranks cannot share them equally."""
    w = world()
    if n % w:
        raise ValueError(f"{name} ({n}) must be divisible by the number of processes ({w}): each rank owns "
                         f"an equal share")
    return n // w


def shard_index() -> tuple[int, int]:
    """``(rank, world size)``: the ``shard`` argument of the objects that draw for a whole batch
    (:func:`metarl.rollout.collect`, :class:`metarl.envs.TrialWrapper`, :func:`metarl.algos.pg.collect`)."""
    return rank(), world()


def rows(n_local: int) -> slice:
    """This rank's rows ``[r·n, (r+1)·n)`` of a whole batch whose shards hold ``n_local`` each."""
    r = rank()
    return slice(r * n_local, (r + 1) * n_local)


def local_rows(idx: torch.Tensor, n_local: int) -> tuple[torch.Tensor, float]:
    """The rows of ``idx`` (indices into the whole batch, e.g. a minibatch of a permutation of
    ``world() · n_local``) that this rank holds, as local indices in ``idx``'s order, and their share of
    ``idx`` (a float in [0, 1]: a loss averaged over the local rows, times it, summed over ranks, is the
    whole minibatch's mean). One process: ``(idx, 1.0)``."""
    if not active():
        return idx, 1.0
    lo = rank() * n_local
    mine = (idx >= lo) & (idx < lo + n_local)
    local = idx[mine] - lo
    return local, local.numel() / max(idx.numel(), 1)


def shard_env_keys(env, seed: int) -> None:
    """Give ``env`` (a metarl ``TaskVectorEnv`` holding this rank's copies) the random streams those copies
    have in the whole batch: rows :func:`rows` of ``make_keys(seed, N)``, for an env that was seeded with
    ``seed``. Nothing to do in one process or for envs without per-copy keys."""
    if not active() or not hasattr(env, "kernel_buffers"):
        return
    from metarl.kernels.rng import make_keys

    n = env.num_envs
    key = env.kernel_buffers()[-1]
    key.copy_(make_keys(seed, n * world())[rows(n)].to(key.device))


# ----------------------------------------------------------------------------- collectives
def _reduce(x: torch.Tensor, op) -> torch.Tensor:
    y = x.detach().to(_device, copy=True).reshape(-1) if x.dim() == 0 else x.detach().to(_device, copy=True)
    dist.all_reduce(y, op=op)
    return y.reshape(x.shape).to(x.device)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (a new tensor, no graph); ``x`` itself in one process."""
    if not active():
        return x
    return _reduce(x, dist.ReduceOp.SUM) / world()


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``x`` over ranks; ``x`` itself in one process."""
    if not active():
        return x
    return _reduce(x, dist.ReduceOp.MAX)


def _grads(params, op, scale: float) -> None:
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    flat = _reduce(flat, op)
    if scale != 1.0:
        flat /= scale
    i = 0
    for p in params:
        g = flat[i:i + p.numel()].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        i += p.numel()


def sum_grads(params) -> None:
    """Sum the ``.grad`` of ``params`` (a module's ``parameters()`` or a list) over ranks, in place, in one
    all-reduce; a missing gradient counts as zeros (a rank that held none of a minibatch). One process:
    nothing."""
    if active():
        _grads(params, dist.ReduceOp.SUM, 1.0)


def mean_grads(params) -> None:
    """Average the ``.grad`` of ``params`` over ranks, in place (as :func:`sum_grads`)."""
    if active():
        _grads(params, dist.ReduceOp.SUM, float(world()))


def normalize(a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(a − mean) / (std + eps)`` with the mean and the (unbiased) standard deviation of ``a`` over all
    ranks' elements together (one all-reduce of the count, sum and sum of squares, in float64); one
    process: exactly ``(a - a.mean()) / (a.std() + eps)``."""
    if not active():
        return (a - a.mean()) / (a.std() + eps)
    x = a.detach().double()
    s = _reduce(torch.stack([torch.tensor(float(a.numel()), dtype=torch.float64, device=a.device), x.sum(),
                             (x * x).sum()]), dist.ReduceOp.SUM)
    n, mean = s[0], s[1] / s[0]
    std = ((s[2] - n * mean * mean) / (n - 1)).clamp_min(0).sqrt()
    return (a - mean.to(a.dtype)) / (std.to(a.dtype) + eps)


def gather(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Every rank's ``x`` (same shape on all) concatenated along ``dim`` in rank order: the whole
    batch's tensor when ``x`` holds this rank's rows. One process: ``x``."""
    if not active():
        return x
    parts = [torch.empty_like(x, device=_device) for _ in range(world())]
    dist.all_gather(parts, x.detach().to(_device).contiguous())
    return torch.cat(parts, dim).to(x.device)


def mean_values(row: dict) -> dict:
    """A log row with its numbers (int, float, bool) averaged over ranks (NaN on any rank: NaN); other
    values as they are. One process: ``row``."""
    if not active():
        return row
    keys = [k for k, v in row.items() if isinstance(v, (int, float))]
    if not keys:
        return row
    vals = all_reduce_mean(torch.tensor([float(row[k]) for k in keys], dtype=torch.float64)).tolist()
    out = dict(row)
    for k, v in zip(keys, vals):
        whole = math.isfinite(v) and v == int(v)
        out[k] = type(row[k])(v) if isinstance(row[k], (int, bool)) and whole else v
    return out


def any_true(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over ranks (one all-reduce): for decisions every rank must take together (stop,
    save). One process: the flags."""
    if not active():
        return tuple(bool(f) for f in flags)
    out = all_reduce_max(torch.tensor([1.0 if f else 0.0 for f in flags], dtype=torch.float64))
    return tuple(bool(v > 0) for v in out.tolist())


def gather_objects(obj) -> list | None:
    """Every rank's picklable ``obj`` on rank 0 (a list in rank order), None on the others; ``[obj]`` in
    one process."""
    if not active():
        return [obj]
    out = [None] * world() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def on_main(fn):
    """Run ``fn()`` on rank 0 only and return its result on every rank; an exception there is raised on
    every rank (as a ValueError with its message, or the same type when it pickles), so no rank waits for
    a rank that failed. One process: ``fn()``."""
    if not active():
        return fn()
    box = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as e:     # noqa: BLE001 - re-raised below, on every rank
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


__all__ = ["init", "active", "rank", "world", "is_main", "barrier", "close", "shard", "shard_index", "rows",
           "local_rows", "shard_env_keys", "all_reduce_mean", "all_reduce_max", "sum_grads", "mean_grads",
           "normalize", "gather", "mean_values", "any_true", "gather_objects", "on_main"]
