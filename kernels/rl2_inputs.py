"""RL^2 policy inputs: ``[obs, one_hot(prev_action) or prev_action, prev_reward, prev_done]``.

Built at every env step by :class:`metarl.envs.TrialWrapper`, so it is one pass, not six
torch ops. Rows where a trial starts get zeros in the ``prev_*`` part. Bytes per env:
read obs 4·D, action 8 (or 4·A), reward 4, done 1, start 1; write 4·(D + A + 2).

- :func:`rl2_inputs_reference`: plain torch (any device; used on GPUs, where this op is tiny
  next to a kernel launch);
- ``_rl2_inputs_discrete_nb`` / ``_rl2_inputs_box_nb``: Numba, one pass (CPU; parallel for large N);
- :func:`rl2_inputs`: the public op, dispatching on the device.
"""
from __future__ import annotations

import torch
from numba import njit, prange

from metarl.kernels.envs._launch import call_numba


def rl2_inputs_reference(obs, actions, reward, done, start, num_actions: int, discrete: bool) -> torch.Tensor:
    """``obs [N, D]``, ``actions [N]`` int (Discrete) or ``[N, A]`` float, ``reward [N]``, ``done [N]``
    bool, ``start [N]`` bool (zero the prev part) -> ``[N, D + A + 2]`` float32."""
    n = obs.shape[0]
    if discrete:
        prev = torch.nn.functional.one_hot(actions.long(), num_actions).to(torch.float32)
    else:
        prev = actions.reshape(n, num_actions).to(torch.float32)
    tail = torch.cat([prev, reward.reshape(n, 1).float(), done.reshape(n, 1).float()], 1)
    tail = torch.where(start.reshape(n, 1), torch.zeros_like(tail), tail)
    return torch.cat([obs.reshape(n, -1).float(), tail], 1)


@njit(parallel=True, cache=True)
def _rl2_inputs_discrete_nb(obs, actions, reward, done, start, out):
    n, d = obs.shape
    width = out.shape[1]
    for i in prange(n):
        for j in range(d):
            out[i, j] = obs[i, j]
        for j in range(d, width):
            out[i, j] = 0.0
        if not start[i]:
            out[i, d + actions[i]] = 1.0
            out[i, width - 2] = reward[i]
            out[i, width - 1] = 1.0 if done[i] else 0.0


@njit(parallel=True, cache=True)
def _rl2_inputs_box_nb(obs, actions, reward, done, start, out):
    n, d = obs.shape
    a = actions.shape[1]
    width = out.shape[1]
    for i in prange(n):
        for j in range(d):
            out[i, j] = obs[i, j]
        keep = not start[i]
        for j in range(a):
            out[i, d + j] = actions[i, j] if keep else 0.0
        out[i, width - 2] = reward[i] if keep else 0.0
        out[i, width - 1] = 1.0 if (keep and done[i]) else 0.0


def rl2_inputs(obs, actions, reward, done, start, num_actions: int, discrete: bool) -> torch.Tensor:
    """The public op (see :func:`rl2_inputs_reference`); inputs as the env returned them."""
    if obs.device.type != "cpu":
        return rl2_inputs_reference(obs, actions, reward, done, start, num_actions, discrete)
    n = obs.shape[0]
    out = torch.empty((n, obs[0].numel() + num_actions + 2), dtype=torch.float32)
    o = obs.reshape(n, -1).contiguous().numpy()
    if discrete:
        call_numba(_rl2_inputs_discrete_nb, n, o, actions.reshape(n).to(torch.int64).contiguous().numpy(),
                                reward.contiguous().numpy(), done.contiguous().numpy(),
                                start.contiguous().numpy(), out.numpy())
    else:
        call_numba(_rl2_inputs_box_nb, n, o, actions.reshape(n, num_actions).to(torch.float32).contiguous().numpy(),
                           reward.contiguous().numpy(), done.contiguous().numpy(),
                           start.contiguous().numpy(), out.numpy())
    return out
