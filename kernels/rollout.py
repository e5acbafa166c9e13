"""The fused rollout: env step + recurrent policy step for all T steps in one kernel launch.

For the in-kernel env families (Bandit, TabularMDP, Navigation2D, CartPole) the whole
collection loop of :func:`metarl.rollout.collect` runs inside one kernel. Per step ``t``
and env ``i`` (``same_step`` autoreset, so every step is a transition)::

    action, log_prob, value, (h, c) = actor_critic_step(inp[t], (h, c), resets[t], noise[t])
    obs', reward, terminated, truncated = env.step(action)            (the family's own kernel)
    done = terminated | truncated
    trial mode (RL^2, TrialWrapper):  episodes += done;  start = episodes >= episodes_per_trial
                                      inp[t+1]    = [obs', one_hot(action) or action, reward, done],
                                                    the part after obs' zero where start
                                      resets[t+1] = start
    episode mode (the bare env):      inp[t+1] = obs';  resets[t+1] = done

``inp [T+1, N, X]`` and ``resets [T+1, N]`` hold the policy inputs: row ``T`` is where the
next collection continues. The random numbers are the caller's: ``noise [T, N, A]``
(uniforms for Gumbel-max, or standard normals) and the env's own counter-based stream, so
the fused kernel, the reference and the general Python loop sample the same trajectories.
A trial start needs a new task: tasks are drawn on the host, so in trial mode the caller
runs the kernel in segments that end where a trial ends (:mod:`metarl.rollout` computes
where for families whose episodes have a fixed length; other families in trial mode use
the general loop).

Three implementations, side by side:

* :func:`rollout_reference` — plain PyTorch over the families' ``step_reference`` and
  :func:`~metarl.kernels.actor_critic.actor_critic_step_reference` (the oracle, any device);
* CPU (Numba): :func:`_rollout_nb`, ONE call for all T steps: per step the gate GEMM as one
  BLAS ``np.dot`` per row block on Numba's threads (OpenBLAS through SciPy, called without
  returning to Python; a hand-written Numba GEMM measured 3.6x slower than BLAS at N = 1024,
  H = 64: 0.70 vs 0.19 ms), then the fused gate/cell/heads/sampling pass, the family's own
  ``_step_nb``, and one pass that writes the next input;
* GPU (Triton): :func:`_rollout_tl`, one program per block of envs runs all T steps: it calls
  the actor-critic step kernel and the family's step kernel as device functions (same rows),
  with barriers between the stages; the recurrent state is double-buffered in global memory
  (it stays in L1/L2: a program only reads back rows it wrote).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numba
import numpy as np
import torch
from numba import njit, prange

from metarl.kernels._triton import constexpr, lazy_jit
from metarl.kernels.actor_critic import (
    PackedActorCritic,
    _discrete_row_nb,
    _gaussian_row_nb,
    _pow2,
    actor_critic_step_reference,
    triton_precision,
)
from metarl.kernels.actor_critic import _step_tl as _actor_critic_step_tl
from metarl.kernels.envs import bandit, cartpole, navigation2d, tabular_mdp
from metarl.kernels.envs._autoreset import SAME_STEP
from metarl.kernels.envs._launch import (
    episode_length,  # noqa: F401 - re-exported: metarl.algos.rl2 imports it here
    obs_dim,
    triton_launch_meta,
)
from metarl.kernels.envs.bandit import _step_tl as _bandit_step_tl
from metarl.kernels.envs.cartpole import _step_tl as _cartpole_step_tl
from metarl.kernels.envs.navigation2d import _step_tl as _navigation2d_step_tl
from metarl.kernels.envs.tabular_mdp import _step_tl as _tabular_mdp_step_tl

if TYPE_CHECKING:  # Triton is imported at the first launch (metarl.kernels._triton)
    import triton.language as tl

# the families with a fused rollout; the index is the Triton kernel's FAMILY constexpr
FAMILIES = (bandit, tabular_mdp, navigation2d, cartpole)
PARALLEL_MIN_WORK = 1 << 17
"""N x H from which the Numba rollout uses every Numba thread (one below: see :func:`_launch_numba`)"""


# ----------------------------------------------------------------------------- reference
def rollout_reference(fam, env_state, params, key, max_steps, packed: PackedActorCritic, inp, resets,
                      h, c, noise, *, episodes=None, episodes_per_trial=0):
    """The fused rollout (module docstring) in plain PyTorch; the oracle of the kernels.

    Args:
        fam: the family's kernel module (e.g. ``metarl.kernels.envs.cartpole``).
        env_state: ``(state [S, N], elapsed [N] int32, needs_reset [N] bool, counter [N] int64)``,
            updated in place; ``params``: the family's task tensors; ``key [N]`` int64.
        packed: the policy weights (:func:`~metarl.kernels.actor_critic.pack_actor_critic`).
        inp: ``[T+1, N, X]`` float32, row 0 given (the first policy input), rows 1..T written.
        resets: ``[T+1, N]`` bool, row 0 given, rows 1..T written.
        h, c: ``[N, H]`` the state before step 0, updated in place to the state after step T-1.
        noise: ``[T, N, A]`` uniforms (categorical) or standard normals (Gaussian).
        episodes: ``[N]`` int64 episodes finished in the current trial (trial mode; updated in
            place), ``None`` in episode mode; ``episodes_per_trial``: the trial length in episodes.

    Returns ``(actions, log_probs, values, rewards, terminated, truncated)``, each ``[T, N]``
    (Gaussian actions ``[T, N, d]``).
    """
    state, elapsed, needs_reset, counter = env_state
    steps = noise.shape[0]
    n = inp.shape[1]
    d = inp.shape[2] if episodes is None else inp.shape[2] - packed.num_outputs - 2
    out = {k: [] for k in ("actions", "log_probs", "values", "rewards", "terminated", "truncated")}
    for t in range(steps):
        a, lp, v, h_new, c_new = actor_critic_step_reference(inp[t], h, c, resets[t], *packed.params[:8], noise[t],
                                                             log_std=packed.params[8])
        h.copy_(h_new)
        c.copy_(c_new)
        o, r, te, tr, _ = fam.step_reference(state, elapsed, needs_reset, counter, params, a, key, max_steps,
                                             SAME_STEP)
        done = te | tr
        nxt = inp[t + 1]
        nxt[:, :d] = o.reshape(n, d)
        if episodes is None:
            resets[t + 1] = done
        else:
            episodes += done.to(episodes.dtype)
            start = episodes >= episodes_per_trial
            prev = torch.nn.functional.one_hot(a, packed.num_outputs).float() if packed.discrete else a
            tail = torch.cat([prev, r[:, None], done[:, None].float()], 1)
            nxt[:, d:] = torch.where(start[:, None], torch.zeros_like(tail), tail)
            resets[t + 1] = start
        for name, val in zip(out, (a, lp, v, r, te, tr)):
            out[name].append(val)
    return tuple(torch.stack(v) for v in out.values())


# ----------------------------------------------------------------------------- numba
@njit(parallel=True, cache=True)
def _pack_inputs_nb(xh, inp, h, reset):
    """``xh[i] = [inp[i], h[i] * (1 - reset[i]), 1]`` (the GEMM's left operand; the trailing one
    column meets the bias row of the packed weights)."""
    nx = inp.shape[1]
    hid = h.shape[1]
    for i in prange(inp.shape[0]):
        for k in range(nx):
            xh[i, k] = inp[i, k]
        if reset[i]:
            for j in range(hid):
                xh[i, nx + j] = 0.0
        else:
            for j in range(hid):
                xh[i, nx + j] = h[i, j]
        xh[i, nx + hid] = 1.0


@njit(parallel=True, cache=True)
def _gemm_rows_nb(xh, w, gates, chunks):
    """``gates = xh @ w`` as ``chunks`` row blocks, one BLAS call per block on Numba's threads (BLAS
    itself held to one thread by the launcher: two thread pools on the same cores fight)."""
    n = xh.shape[0]
    for ch in prange(chunks):
        lo = ch * n // chunks
        hi = (ch + 1) * n // chunks
        if hi > lo:
            np.dot(xh[lo:hi], w, gates[lo:hi])


@njit(parallel=True, cache=True)
def _policy_discrete_nb(gates, c, reset, w_head, b_head, noise, std, log_std, action, log_prob, value, h, head):
    """Gates -> cell, heads, Gumbel-max sampling for every row (kernels/actor_critic.py's row
    functions); ``h`` and ``c`` are updated in place (a row reads its own ``c`` before writing it).
    ``std``, ``log_std``: unused (the Gaussian twin's signature)."""
    for i in prange(gates.shape[0]):
        _discrete_row_nb(i, gates, c, reset, w_head, b_head, noise, action, log_prob, value, h, c, head)


@njit(parallel=True, cache=True)
def _policy_gaussian_nb(gates, c, reset, w_head, b_head, noise, std, log_std, action, log_prob, value, h, head):
    """:func:`_policy_discrete_nb` for a diagonal-Gaussian head (``action [N, d]``)."""
    for i in prange(gates.shape[0]):
        _gaussian_row_nb(i, gates, c, reset, w_head, b_head, noise, std, log_std, action, log_prob, value, h, c,
                         head)


@njit(inline="always", cache=True)
def _next_row_head_nb(i, obs, terminated, truncated, episodes, episodes_per_trial, nxt, reset_next):
    """Copy the obs into the next input row and set its reset flag; returns ``(done, tail)``:
    ``tail`` says the row's prev-action/reward/done part is to be written (trial mode, no start).
    The part is zeroed here."""
    d = obs.shape[1]
    for j in range(d):
        nxt[i, j] = obs[i, j]
    done = terminated[i] or truncated[i]
    if episodes_per_trial == 0:
        reset_next[i] = done
        return done, False
    ep = episodes[i] + (1 if done else 0)
    episodes[i] = ep
    start = ep >= episodes_per_trial
    reset_next[i] = start
    for j in range(d, nxt.shape[1]):
        nxt[i, j] = 0.0
    return done, not start


@njit(parallel=True, cache=True)
def _next_inputs_discrete_nb(obs, action, reward, terminated, truncated, episodes, episodes_per_trial, nxt,
                             reset_next):
    """Write the next policy input rows and reset flags (module docstring; trial mode when
    ``episodes_per_trial > 0``): ``[obs', one_hot(action), reward, done]``."""
    d = obs.shape[1]
    width = nxt.shape[1]
    for i in prange(obs.shape[0]):
        done, tail = _next_row_head_nb(i, obs, terminated, truncated, episodes, episodes_per_trial, nxt, reset_next)
        if tail:
            nxt[i, d + action[i]] = 1.0
            nxt[i, width - 2] = reward[i]
            nxt[i, width - 1] = 1.0 if done else 0.0


@njit(parallel=True, cache=True)
def _next_inputs_gaussian_nb(obs, action, reward, terminated, truncated, episodes, episodes_per_trial, nxt,
                             reset_next):
    """:func:`_next_inputs_discrete_nb` for ``action [N, d]``: ``[obs', action, reward, done]``."""
    d = obs.shape[1]
    width = nxt.shape[1]
    for i in prange(obs.shape[0]):
        done, tail = _next_row_head_nb(i, obs, terminated, truncated, episodes, episodes_per_trial, nxt, reset_next)
        if tail:
            for j in range(action.shape[1]):
                nxt[i, d + j] = action[i, j]
            nxt[i, width - 2] = reward[i]
            nxt[i, width - 1] = 1.0 if done else 0.0


# Not cached: it takes Numba functions as arguments, and loading such a signature from Numba's
# on-disk cache in a new process fails ("underlying object has vanished"); it compiles in ~5 s.
@njit(cache=False)
def _rollout_nb(
    # the family's Numba step kernel and its arguments
    step_fn, state, elapsed, needs_reset, counter, params, key, max_steps,
    # policy: the pass functions (discrete or Gaussian twins), w_aug [X + H + 1, 4H] = [W_ih, W_hh, bias]^T,
    # heads, Gaussian std / log_std ([1] dummies when discrete)
    policy_fn, next_fn, w_aug, w_head, b_head, std, log_std,
    # storage: inp [T+1, N, X], resets [T+1, N], noise [T, N, A], actions [T, N] int64 or [T, N, d] f32
    inp, resets, noise, actions, log_probs, values, rewards, terminated, truncated,
    # recurrent state [N, H] (in place); trial counters [N] (ignored when episodes_per_trial == 0)
    h, c, episodes, episodes_per_trial,
    # workspaces: xh [N, X + H + 1], gates [N, 4H], head [N, A + 1], obs and final_obs [N, D]; GEMM row blocks
    xh, gates, head, obs, final_obs, chunks,
):
    """All T steps (module docstring) in one call: per step one GEMM (BLAS, in row blocks) and four passes."""
    for t in range(noise.shape[0]):
        _pack_inputs_nb(xh, inp[t], h, resets[t])
        _gemm_rows_nb(xh, w_aug, gates, chunks)
        policy_fn(gates, c, resets[t], w_head, b_head, noise[t], std, log_std, actions[t], log_probs[t], values[t],
                  h, head)
        step_fn(state, elapsed, needs_reset, counter, *params, actions[t], key,
                obs, rewards[t], terminated[t], truncated[t], final_obs, max_steps, SAME_STEP)
        next_fn(obs, actions[t], rewards[t], terminated[t], truncated[t], episodes, episodes_per_trial, inp[t + 1],
                resets[t + 1])


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the BLAS libraries loaded (made once; inspecting them is slow)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _augmented_weights(packed: PackedActorCritic) -> torch.Tensor:
    """``[X + H + 1, 4H]``: ``[W_ih, W_hh]^T`` with the summed bias as the last row."""
    return torch.cat((packed.w.t(), packed.bias[None, :]), 0).contiguous()


def _launch_numba(fam, env_args, key, max_steps, packed, inp, resets, h, c, noise, out, episodes, episodes_per_trial):
    state, elapsed, needs_reset, counter, params = env_args
    actions, log_probs, values, rewards, terminated, truncated = out
    n, hid = h.shape
    one = np.zeros(1, dtype=np.float32)
    discrete = packed.discrete
    d = obs_dim(fam, params)
    ep = episodes.numpy() if episodes is not None else np.zeros(n, dtype=np.int64)
    # One thread pool only: Numba's, on every core (the GEMM in one row block per thread), with BLAS held
    # to one thread inside it (measured on 2 cores, CartPole, H = 64: OpenBLAS's own pool beside Numba's
    # made N = 4096 ~6x slower, the pools spinning against each other; one Numba thread left a core
    # idle: N = 64 1.2e6 vs 2.1e6 env-steps/s).
    threads = numba.get_num_threads()
    # Below PARALLEL_MIN_WORK (N x H) one thread: each of the T steps opens ~5 parallel regions, and below
    # it waking the second thread costs what it saves (bench/contention.py: 1024 x 64 collects in 13-14 ms
    # on one thread, 14-17 ms on two with sleeping workers), while beside other jobs the second thread
    # waits for a core at every region (the README job: 53% of its idle rate on one thread beside one busy
    # loop per core, 33% on two).
    chunks = threads if n * hid >= PARALLEL_MIN_WORK else 1
    args = (
        fam._step_nb, state.numpy(), elapsed.numpy(), needs_reset.numpy(), counter.numpy(),
        tuple(p.numpy() for p in params), key.numpy(), max_steps,
        _policy_discrete_nb if discrete else _policy_gaussian_nb,
        _next_inputs_discrete_nb if discrete else _next_inputs_gaussian_nb,
        _augmented_weights(packed).numpy(), packed.w_head.numpy(), packed.b_head.numpy(),
        one if discrete else packed.std.numpy(), one if discrete else packed.log_std.numpy(),
        inp.numpy(), resets.numpy(), noise.numpy(), actions.numpy(),
        log_probs.numpy(), values.numpy(), rewards.numpy(), terminated.numpy(), truncated.numpy(),
        h.numpy(), c.numpy(), ep, episodes_per_trial,
        np.empty((n, packed.w.shape[1] + 1), dtype=np.float32), np.empty((n, 4 * hid), dtype=np.float32),
        np.empty((n, packed.num_outputs + 1), dtype=np.float32), np.empty((n, d), dtype=np.float32),
        np.empty((n, d), dtype=np.float32), chunks,
    )
    numba.set_num_threads(chunks)
    try:
        with _blas_controller().limit(limits=1, user_api="blas"):
            _rollout_nb(*args)
    finally:
        numba.set_num_threads(threads)


# ----------------------------------------------------------------------------- triton
@lazy_jit
def _rollout_tl(
    # storage: inp [T+1, N, X], resets [T+1, N] bool, noise [T, N, A], actions [T, N] or [T, N, A],
    # log_probs, values, rewards [T, N] f32, terminated, truncated [T, N] bool
    inp_ptr, resets_ptr, noise_ptr, actions_ptr, log_probs_ptr, values_ptr, rewards_ptr, term_ptr, trunc_ptr,
    # recurrent state, double-buffered: h2, c2 [2, N, H] (step t reads t % 2, writes (t + 1) % 2)
    h2_ptr, c2_ptr,
    # trial counters [N] int64 (trial mode)
    episodes_ptr, episodes_per_trial,
    # env: state [S, N], elapsed, needs_reset, counter, four task-parameter tensors (unused ones: any),
    # key [N], scratch obs / final_obs [N, D]
    state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, p0_ptr, p1_ptr, p2_ptr, p3_ptr, p4_ptr, p5_ptr,
    key_ptr, obs_ptr, final_obs_ptr,
    # policy weights (kernels/actor_critic.py layout)
    w_ptr, bias_ptr, w_head_ptr, b_head_ptr, log_std_ptr,
    # sizes
    n, T, X, D, H, A, max_steps,
    # meta-parameters: FAMILY indexes FAMILIES; K, S, NA: the families' constexpr sizes
    FAMILY: constexpr, TRIAL: constexpr, DISCRETE: constexpr, BLOCK_B: constexpr, BLOCK_N: constexpr,
    BLOCK_K: constexpr, BLOCK_A: constexpr, BLOCK_X: constexpr, K: constexpr, S: constexpr, NA: constexpr,
    PRECISION: constexpr = "ieee",
):
    """All T steps of ``BLOCK_B`` envs (module docstring). Both stage kernels index rows as
    ``program_id * BLOCK_B + arange(BLOCK_B)``, so called here as device functions they work
    on this program's rows; barriers order each stage's global writes before the next reads."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = rows < n
    cx = tl.arange(0, BLOCK_X)
    nh = n * H
    for t in range(T):
        cur = (t % 2) * nh
        nxt = ((t + 1) % 2) * nh
        if DISCRETE:
            a_off = t * n
        else:
            a_off = t * n * A
        _actor_critic_step_tl(
            actions_ptr + a_off, log_probs_ptr + t * n, values_ptr + t * n, h2_ptr + nxt, c2_ptr + nxt,
            inp_ptr + t * n * X, X, h2_ptr + cur, c2_ptr + cur, resets_ptr + t * n, noise_ptr + t * n * A,
            w_ptr, bias_ptr, w_head_ptr, b_head_ptr, log_std_ptr, n, X, H, A,
            DISCRETE, BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_A, PRECISION)
        tl.debug_barrier()
        act_t = actions_ptr + a_off
        rew_t = rewards_ptr + t * n
        term_t = term_ptr + t * n
        trunc_t = trunc_ptr + t * n
        if FAMILY == 0:
            _bandit_step_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, p0_ptr, act_t, key_ptr,
                            obs_ptr, rew_t, term_t, trunc_t, final_obs_ptr, n, max_steps, 1, BLOCK_B, K)
        elif FAMILY == 1:
            _tabular_mdp_step_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, p0_ptr, p1_ptr, p2_ptr,
                                 act_t, key_ptr, obs_ptr, rew_t, term_t, trunc_t, final_obs_ptr, n, max_steps,
                                 1, BLOCK_B, S, NA)
        elif FAMILY == 2:
            _navigation2d_step_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, p0_ptr, act_t, key_ptr,
                                  obs_ptr, rew_t, term_t, trunc_t, final_obs_ptr, n, max_steps, 1, BLOCK_B)
        else:
            _cartpole_step_tl(state_ptr, elapsed_ptr, needs_reset_ptr, counter_ptr, p0_ptr, p1_ptr, p2_ptr, p3_ptr,
                              p4_ptr, p5_ptr, act_t, key_ptr, obs_ptr, rew_t, term_t, trunc_t, final_obs_ptr, n,
                              max_steps, 1, BLOCK_B)
        tl.debug_barrier()
        # the next policy input row and reset flag
        o = tl.load(obs_ptr + rows[:, None] * D + cx[None, :], mask=rm[:, None] & (cx < D)[None, :], other=0.0)
        done = (tl.load(term_t + rows, mask=rm, other=0) != 0) | (tl.load(trunc_t + rows, mask=rm, other=0) != 0)
        row_x = inp_ptr + (t + 1) * n * X + rows[:, None] * X
        if TRIAL:
            ep = tl.load(episodes_ptr + rows, mask=rm, other=0) + done.to(tl.int64)
            tl.store(episodes_ptr + rows, ep, mask=rm)
            start = ep >= episodes_per_trial
            r = tl.load(rew_t + rows, mask=rm, other=0.0)
            if DISCRETE:
                a = tl.load(act_t + rows, mask=rm, other=0)
                prev = tl.where(cx[None, :] == (D + a)[:, None], 1.0, 0.0)
            else:
                ac = tl.load(act_t + rows[:, None] * A + (cx - D)[None, :],
                             mask=rm[:, None] & ((cx >= D) & (cx < D + A))[None, :], other=0.0)
                prev = ac
            prev = tl.where(cx[None, :] == D + A, r[:, None], prev)
            prev = tl.where(cx[None, :] == D + A + 1, done.to(tl.float32)[:, None], prev)
            prev = tl.where(start[:, None] | (cx < D)[None, :], 0.0, prev)
            tl.store(row_x + cx[None, :], o + prev, mask=rm[:, None] & (cx < X)[None, :])
            tl.store(resets_ptr + (t + 1) * n + rows, start.to(tl.int8), mask=rm)
        else:
            tl.store(row_x + cx[None, :], o, mask=rm[:, None] & (cx < D)[None, :])
            tl.store(resets_ptr + (t + 1) * n + rows, done.to(tl.int8), mask=rm)
        tl.debug_barrier()


def _launch_triton(fam, env_args, key, max_steps, packed, inp, resets, h, c, noise, out, episodes,
                   episodes_per_trial):
    state, elapsed, needs_reset, counter, params = env_args
    actions, log_probs, values, rewards, terminated, truncated = out
    steps, n, x = noise.shape[0], inp.shape[1], inp.shape[2]
    hid = h.shape[1]
    d = obs_dim(fam, params)
    h2 = torch.empty((2, n, hid), dtype=torch.float32, device=h.device)
    c2 = torch.empty_like(h2)
    h2[0] = h
    c2[0] = c
    block_b = 16 if n <= 1024 or h.device.type == "cpu" else 64
    p = list(params) + [params[0]] * (6 - len(params))   # pad the parameter pointers to six
    meta = triton_launch_meta(fam, params)
    log_std = packed.log_std if packed.log_std is not None else packed.b_head   # unused when discrete
    ep = episodes if episodes is not None else torch.zeros(n, dtype=torch.int64, device=h.device)
    _rollout_tl[(-(-n // block_b),)](
        inp, resets, noise, actions, log_probs, values, rewards, terminated, truncated,
        h2, c2, ep, episodes_per_trial,
        state, elapsed, needs_reset, counter, *p, key,
        torch.empty((n, d), dtype=torch.float32, device=h.device), torch.empty((n, d), dtype=torch.float32,
                                                                                device=h.device),
        packed.w_dot, packed.bias, packed.w_head, packed.b_head, log_std,
        n, steps, x, d, hid, packed.num_outputs, max_steps,
        FAMILY=FAMILIES.index(fam), TRIAL=episodes is not None, DISCRETE=packed.discrete, BLOCK_B=block_b,
        BLOCK_N=min(32, _pow2(hid)), BLOCK_K=32, BLOCK_A=_pow2(packed.num_outputs + 1), BLOCK_X=_pow2(x),
        K=meta.get("K", 1), S=meta.get("S", 1), NA=meta.get("A", 1), PRECISION=triton_precision(packed),
        enable_fp_fusion=False,
    )
    h.copy_(h2[steps % 2])
    c.copy_(c2[steps % 2])


# ----------------------------------------------------------------------------- public op
def fused_rollout(fam, env_args, key, max_steps: int, packed: PackedActorCritic, inp, resets, h, c, noise, out,
                  *, episodes=None, episodes_per_trial: int = 0, backend: str) -> None:
    """Run the fused rollout (module docstring) with ``backend`` in ``("torch", "numba", "triton")``.

    ``env_args = (state, elapsed, needs_reset, counter, params)`` are the env's buffers (updated
    in place), ``out = (actions, log_probs, values, rewards, terminated, truncated)`` preallocated
    ``[T, N(, A)]`` storage; ``inp``, ``resets``, ``h``, ``c``, ``episodes`` as in
    :func:`rollout_reference` (updated in place). The caller (:func:`metarl.rollout.collect`)
    validates: same_step envs of a family in :data:`FAMILIES`, shapes, devices.
    """
    if fam not in FAMILIES:
        raise ValueError(f"no fused rollout for {fam.__name__}; families: {[f.__name__ for f in FAMILIES]}")
    if backend == "torch":
        state, elapsed, needs_reset, counter, params = env_args
        res = rollout_reference(fam, (state, elapsed, needs_reset, counter), params, key, max_steps, packed, inp,
                                resets, h, c, noise, episodes=episodes, episodes_per_trial=episodes_per_trial)
        for o, r in zip(out, res):
            o.copy_(r)
    elif backend == "numba":
        _launch_numba(fam, env_args, key, max_steps, packed, inp, resets, h, c, noise, out, episodes,
                      episodes_per_trial)
    elif backend == "triton":
        _launch_triton(fam, env_args, key, max_steps, packed, inp, resets, h, c, noise, out, episodes,
                       episodes_per_trial)
    else:
        raise ValueError(f"backend must be 'torch', 'numba' or 'triton', got {backend!r}")

