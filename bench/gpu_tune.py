"""One-shot GPU measurements behind bench/RESULTS.md's tuning notes (run on a lent GPU by
bench/gpu_session.sh): (1) both fused actor-critic Triton step kernels (rows, split) over block
sizes, warps and tl.dot precision at B = 4096, H = 256; (2) exact kNN on the GPU — metarl's Triton kernel
against ``torch.cdist`` + ``topk`` and the matmul form + ``topk`` — with the floors.

Kernel times are ``triton.testing.do_bench`` medians (ms -> us), inputs resident on the GPU.
"""
# ruff: noqa: B023  (each closure is timed before its loop variables change)
from __future__ import annotations

import itertools
import json
import os
import sys

import torch
from triton.testing import do_bench

from metarl.kernels import actor_critic as ac
from metarl.kernels.knn import batched_knn, knn


def rates():
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(8192, 8192, device="cuda")
    mm = 2 * 8192 ** 3 / (do_bench(lambda: torch.mm(a, a), return_mode="median") * 1e-3)
    src = torch.randn(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    bw = 8 * src.numel() / (do_bench(lambda: dst.copy_(src), return_mode="median") * 1e-3)
    a16 = a.bfloat16()
    mm16 = 2 * 8192 ** 3 / (do_bench(lambda: torch.mm(a16, a16), return_mode="median") * 1e-3)
    print(f"bf16 mm {mm16 / 1e12:.0f} TFLOP/s", flush=True)
    return mm, bw, mm16


def step_bytes(bsz, hid, obs_dim, acts, w_bytes):
    """Bytes one step must move at least: obs, h, c, reset and noise in; h', c', action,
    log_prob and value out; the weights once (gate weights at ``w_bytes`` per element)."""
    state = 4 * bsz * (obs_dim + 4 * hid + acts + 2) + 8 * bsz + bsz
    weights = w_bytes * 4 * hid * (obs_dim + hid) + 4 * (4 * hid + (acts + 1) * (hid + 1))
    return state + weights


def step_inputs(bsz, hid, obs_dim, acts):
    """Seeded weights (``pack_actor_critic``'s argument order), inputs and output buffers of one
    step on the GPU: ``(weights, obs, h, c, reset, noise, out)``; reset on one row in 16."""
    g = torch.Generator(device="cuda").manual_seed(0)
    b = torch.zeros(4 * hid, device="cuda")
    weights = (torch.randn(4 * hid, obs_dim, device="cuda", generator=g) * 0.1,
               torch.randn(4 * hid, hid, device="cuda", generator=g) * 0.1, b, b,
               torch.randn(acts, hid, device="cuda", generator=g), torch.zeros(acts, device="cuda"),
               torch.randn(1, hid, device="cuda", generator=g), torch.zeros(1, device="cuda"))
    obs = torch.randn(bsz, obs_dim, device="cuda", generator=g)
    h, c = torch.randn(bsz, hid, device="cuda"), torch.randn(bsz, hid, device="cuda")
    reset = (torch.arange(bsz, device="cuda") % 16) == 5
    noise = torch.rand(bsz, acts, device="cuda", generator=g)
    out = (torch.empty(bsz, dtype=torch.int64, device="cuda"), torch.empty(bsz, device="cuda"),
           torch.empty(bsz, device="cuda"), torch.empty(bsz, hid, device="cuda"), torch.empty(bsz, hid, device="cuda"))
    return weights, obs, h, c, reset, noise, out


SPLIT_GRID = {   # (BLOCK_B, BLOCK_N, BLOCK_K, warps, stages) for the split kernel
    "fp32": list(itertools.product((64, 128), (32, 64), (32,), (8,), (2,))),
    "tf32": list(itertools.product((64, 128), (32, 64), (32,), (4, 8), (2, 3))),
    "bf16": list(itertools.product((64, 128), (32, 64, 128), (32, 64), (4, 8), (2, 3))),
}


CAT_GRID = {   # the one-dot-per-chunk variant (split_cat)
    "bf16": list(itertools.product((64, 128), (32, 64), (32, 128), (4, 8), (3,))),
    "tf32": list(itertools.product((128,), (32, 64), (32,), (8,), (3,))),
}


def tune_actor_critic(bw, mm, mm16, bsz=4096, hid=256, obs_dim=16, acts=4, grids=None):
    """Both Triton step kernels (rows: all hidden units per program; split: hidden units across
    programs) over tiles x warps x stages for each gate-GEMM precision, the kernel alone, through
    the launcher ``_launch_triton(tiles=)``; error against the fp32 reference on the same rounded
    weights; floors from the measured copy bandwidth and GEMM rates."""
    weights, obs, h, c, reset, noise, out = step_inputs(bsz, hid, obs_dim, acts)
    flops = 2 * bsz * (obs_dim + hid) * 4 * hid
    rows = []
    for precision in ("bf16", "tf32", "fp32"):   # the one the GPU target is about first
        packed = ac.pack_actor_critic(*weights, precision=precision)
        ref = ac.actor_critic_step_reference(obs, h, c, reset, *packed.params[:8], noise)
        nbytes = step_bytes(bsz, hid, obs_dim, acts, packed.w_dot.element_size())
        mem_floor = nbytes / bw * 1e6
        flop_floor = flops / (mm16 if precision == "bf16" else mm) * 1e6
        if grids is None:
            configs = [ac.CUDA_TILES[precision]] + [ac.Tiles("split", *t) for t in SPLIT_GRID[precision]]
        elif precision in grids:
            configs = [ac.CUDA_TILES[precision]] + [ac.Tiles(kernel, *t) for kernel, t in grids[precision]]
        else:
            continue
        best = {}
        for tiles in configs:
            def launch():
                ac._launch_triton(obs, h, c, reset, packed, noise, out, tiles=tiles)
            cfg = {"precision": precision, **tiles._asdict()}
            try:
                launch()
                torch.cuda.synchronize()
                err = (out[3] - ref[3]).abs().max().item()
                same = (out[0] == ref[0]).float().mean().item()
                us = do_bench(launch, return_mode="median") * 1e3
            except Exception as e:  # noqa: BLE001 - a config that does not compile is reported, not fatal
                rows.append({**cfg, "error": repr(e)[:200]})
                print(f"  {precision} {tiles}: error {repr(e)[:200]}", flush=True)
                continue
            rows.append({**cfg, "us": us, "max_abs_err_h": err, "same_actions": same, "mem_floor_us": mem_floor,
                         "flop_floor_us": flop_floor, "bytes": nbytes})
            k = tiles.kernel
            if k not in best or us < best[k]["us"]:
                best[k] = rows[-1]
        for k, r in best.items():
            print(f"  ac B={bsz} H={hid} {precision} {k}: {r['us']:.1f} us, |dh| {r['max_abs_err_h']:.1e}, "
                  f"actions same {r['same_actions']:.4f}; mem floor {mem_floor:.1f} us ({nbytes / 1e6:.1f} MB) -> "
                  f"{r['us'] / mem_floor:.2f}x; flop floor {flop_floor:.1f} us; tiles "
                  f"{tuple(r[f] for f in ac.Tiles._fields)}", flush=True)
        if best:   # the step comparison below runs with the tuned tiles
            top = min(best.values(), key=lambda r: r["us"])
            ac.CUDA_TILES[precision] = ac.Tiles(*(top[f] for f in ac.Tiles._fields))
    return rows


def kernel_time_profiled(bsz=4096, hid=256, obs_dim=16, acts=4, precision="bf16", reps=30):
    """The tuned kernel's device time alone (torch.profiler's CUDA kernel durations, L2 flushed
    before each launch), beside do_bench's event-timed median and a plain copy of the same state
    bytes (h, c in -> h', c' out: two torch copies), microseconds."""
    from torch.profiler import ProfilerActivity, profile

    weights, obs, h, c, reset, noise, out = step_inputs(bsz, hid, obs_dim, acts)
    packed = ac.pack_actor_critic(*weights, precision=precision)
    flush = torch.empty(64 << 20, dtype=torch.int32, device="cuda")
    tiles = ac.CUDA_TILES[precision]

    def launch():
        ac._launch_triton(obs, h, c, reset, packed, noise, out, tiles=tiles)

    def copies():
        out[3].copy_(h)
        out[4].copy_(c)
    launch()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            flush.zero_()
            launch()
        for _ in range(reps):
            flush.zero_()
            copies()
        torch.cuda.synchronize()
    dur = {}
    for e in prof.events():
        t = getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0)
        name = "step" if "_step_" in e.name else "copy" if "copy" in e.name.lower() else None
        if name and t > 0:
            dur.setdefault(name, []).append(t)
    res = {"tiles": list(tiles), "do_bench_us": do_bench(launch, return_mode="median") * 1e3,
           "copies_do_bench_us": do_bench(copies, return_mode="median") * 1e3}
    for name, ts in dur.items():
        ts = sorted(ts)
        res[f"{name}_profiled_us"] = ts[len(ts) // 2]
    res["copy_pair_profiled_us"] = 2 * res.get("copy_profiled_us", float("nan"))
    print(f"  profiled {precision} {tiles}: {res}", flush=True)
    return res


def step_vs_unfused(bsz=4096, hid=256, obs_dim=16, acts=4, calls=300):
    """Whole steps as a rollout calls them (RecurrentActorCritic.step, host work included)
    against the unfused torch sequence, microseconds per step (median of 5 timed blocks)."""
    import time

    import gymnasium as gym

    from metarl.nn import RecurrentActorCritic

    obs = torch.randn(bsz, obs_dim, device="cuda")
    reset = (torch.arange(bsz, device="cuda") % 16) == 5

    def timed(step):
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        blocks = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls // 5):
                step()
            torch.cuda.synchronize()
            blocks.append((time.perf_counter() - t0) / (calls // 5) * 1e6)
        return sorted(blocks)[2]

    res = {}
    for precision in ("fp32", "tf32", "bf16"):
        torch.manual_seed(0)
        policy = RecurrentActorCritic(obs_dim, gym.spaces.Discrete(acts), hid, device="cuda", precision=precision)
        gen = torch.Generator(device="cuda").manual_seed(0)
        state = [policy.initial_state(bsz)]

        def fused():
            state[0] = policy.step(obs, state[0], reset, generator=gen)[3]
        res[f"fused-{precision}"] = timed(fused)
    cell = torch.nn.LSTMCell(obs_dim, hid, device="cuda")
    pi, vf = torch.nn.Linear(hid, acts, device="cuda"), torch.nn.Linear(hid, 1, device="cuda")
    keep = (~reset).float()[:, None]
    st = [(torch.zeros(bsz, hid, device="cuda"), torch.zeros(bsz, hid, device="cuda"))]

    def unfused():
        with torch.no_grad():
            h, c = st[0]
            h, c = cell(obs, (h * keep, c * keep))
            vf(h)
            dist = torch.distributions.Categorical(logits=pi(h))
            dist.log_prob(dist.sample())
            st[0] = (h, c)
    res["unfused"] = timed(unfused)
    for k, v in res.items():
        print(f"  step B={bsz} H={hid} {k}: {v:.1f} us/step; unfused / this = {res['unfused'] / v:.2f}x", flush=True)
    return res


def bench_knn(mm, bw):
    rows = []
    m, d = 1_000_000, 64
    keys = torch.randn(m, d, device="cuda")
    norms = (keys * keys).sum(1)
    for q, k in ((1, 1), (1, 50), (32, 11), (256, 50), (256, 1)):
        qs = torch.randn(q, d, device="cuda")
        t_triton = do_bench(lambda: knn(qs, keys, k, key_norms=norms, backend="triton"), return_mode="median")
        t_cdist = do_bench(lambda: torch.cdist(qs, keys).topk(k, largest=False), return_mode="median")
        t_mm = do_bench(lambda: (norms[None, :] - 2 * qs @ keys.t()).topk(k, largest=False), return_mode="median")
        floor = max(4 * m * d / bw, 2 * q * m * d / mm) * 1e3
        rows.append({"M": m, "d": d, "Q": q, "k": k, "triton_ms": t_triton, "cdist_topk_ms": t_cdist,
                     "matmul_topk_ms": t_mm, "floor_ms": floor})
        print(f"  knn M=1e6 d=64 Q={q} k={k}: triton {t_triton:.3f} ms, cdist+topk {t_cdist:.3f}, matmul+topk "
              f"{t_mm:.3f}, floor {floor:.3f} ms", flush=True)
    for b, m_small in ((512, 1000), (1024, 10000)):
        keys = torch.randn(b, m_small, 64, device="cuda")
        qs = torch.randn(b, 1, 64, device="cuda")
        t_triton = do_bench(lambda: batched_knn(qs, keys, 11, backend="triton"), return_mode="median")
        t_cdist = do_bench(lambda: torch.cdist(qs, keys).topk(11, largest=False), return_mode="median")
        floor = 4 * b * m_small * 64 / bw * 1e3
        rows.append({"B": b, "M": m_small, "d": 64, "Q": 1, "k": 11, "triton_ms": t_triton, "cdist_topk_ms": t_cdist,
                     "floor_ms": floor})
        print(f"  batched knn {b} x {m_small} d=64 Q=1 k=11: triton {t_triton:.3f} ms, batched cdist+topk "
              f"{t_cdist:.3f} ms, floor {floor:.3f} ms", flush=True)
    return rows


def main():
    out = os.environ.get("OUT", "/tmp")
    mm, bw, mm16 = rates()
    print(f"fp32 mm {mm / 1e12:.1f} TFLOP/s (TF32 off), copy {bw / 1e12:.2f} TB/s; {torch.cuda.get_device_name()}")
    res = {"device": torch.cuda.get_device_name(), "mm_flops": mm, "copy_bw": bw, "mm_bf16_flops": mm16}
    if "knn" in sys.argv[1:]:
        res["knn"] = bench_knn(mm, bw)
    if "ac2" in sys.argv[1:]:   # session 6's second sweep: split_cat, more split tiles, kernel-only time
        grids = {p: [("split_cat", t) for t in CAT_GRID[p]] for p in CAT_GRID}
        res["actor_critic"] = tune_actor_critic(bw, mm, mm16, grids=grids)
        res["profiled"] = []
        for p in ("bf16",):
            try:
                res["profiled"].append(kernel_time_profiled(precision=p))
            except Exception as e:  # noqa: BLE001 - a measurement aid; the sweep's numbers stand without it
                print(f"  profiled {p}: failed {e!r}", flush=True)
    if "ac" in sys.argv[1:] or len(sys.argv) == 1:
        res["actor_critic"] = tune_actor_critic(bw, mm, mm16)
        res["step_vs_unfused"] = step_vs_unfused()
    with open(os.path.join(out, "gpu_tune.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
