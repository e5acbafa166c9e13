"""kNN benchmark: exact k-nearest-neighbour search (squared L2) of metarl against the tools
a user would otherwise pick, side by side in one run, same machine, same sizes.

What is measured
    Queries per second of one search call (``Q`` queries against ``M`` keys of dimension
    ``d``, the ``k`` nearest each), float32, keys and queries standard normal:

    * ``metarl``: the public op ``metarl.kernels.knn.knn`` (on the CPU the C++ kernel
      ``metarl._C.knn_l2``; on CUDA the Triton kernel), given ``key_norms``, ``valid`` and
      ``tiebreak`` as a memory keeps them. If that op is missing, ``metarl._C.knn_l2`` is
      called directly and the column says so.
    * ``faiss``: ``faiss.IndexFlatL2`` (keys added before timing; its own OpenMP threads);
      on CUDA ``faiss.GpuIndexFlatL2`` where faiss-gpu is installed.
    * ``cdist+topk``: ``torch.topk(torch.cdist(q, x), k, largest=False)``.
    * ``mm+topk``: ``torch.topk(torch.addmm(|x|^2, q, x^T, alpha=-2), k, largest=False)``
      (the matmul form a user writes by hand; ``|q|^2`` added to the k results).
    * ``sklearn``: ``NearestNeighbors(algorithm="brute", metric="sqeuclidean", n_jobs=-1)``,
      ``kneighbors`` (CPU only).

    Many small memories (one query each, d = 64): ``metarl`` runs ``batched_knn`` (one call
    over B memories), ``faiss loop`` a Python loop of B ``IndexFlatL2.search`` calls (indexes
    built before timing), ``cdist+topk`` one batched ``torch.cdist`` ``[B, 1, M]`` + ``topk``.

How
    Each column runs in its own Python process over every size (thread pools left spinning by
    one tool would otherwise slow the next); data come from the same seeded generator in each.
    A measurement warms up with one call, then times calls until ``--seconds`` have passed
    (at least 3, at most 50) and reports the best, as ``timeit`` does; slower repeats are other
    processes on this shared machine (the JSON keeps the median too). On CUDA every call is
    timed between ``torch.cuda.synchronize()`` calls.

Floor
    ``max(2 Q M d / GEMM rate, 4 M d / bandwidth)``: the distance FLOPs at the fp32 GEMM rate
    (``torch.mm`` 2048 x 1024 x 1024, measured in the run) and one read of the keys at the copy
    bandwidth (a 256 MiB float32 copy, bytes read + written; on CUDA 1 GiB). "% floor" is the
    floor time over the measured time. While the keys fit in the last-level cache (here 32 MiB:
    M d <= 8e6) the bandwidth floor is not binding and can be beaten.

Usage::

    python bench/knn.py                 # M in 1e4,1e5,1e6; d = 64; Q in 1,32,256; k = 50; small memories
    python bench/knn.py --quick         # a small subset (about a minute)
    python bench/knn.py --all           # d in 64,128 and k in 1,11,50 as well
    python bench/knn.py --device cuda   # the GPU: metarl (Triton), torch peers, faiss-gpu if present
    python bench/knn.py --M 100000 --Q 256 --d 64 --k 50 --seconds 2

Prints Markdown tables and writes JSON to ``bench/results/knn-<hostname>-<timestamp>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import gemm_rate, machine_info, warn_if_loaded

# torch, metarl and the peers are imported where they are used, so that a peer's worker process
# does not pay for (or start the thread pools of) the others.

COLUMNS_CPU = ("metarl", "faiss", "cdist+topk", "mm+topk", "sklearn")
COLUMNS_CUDA = ("metarl", "faiss", "cdist+topk", "mm+topk")
SMALL_COLUMNS = ("metarl", "faiss loop", "cdist+topk")
SMALL_MEMORIES = ((512, 1000), (1024, 10000))   # (B memories, M keys each), one query each, d = 64
SMALL_D = 64
MAX_REPEATS = 50


# ----------------------------------------------------------------------------- timing and floors
def measure(call, seconds, sync=None) -> dict:
    """Best and median seconds per ``call()``: one warm-up call, then repeats until ``seconds``."""
    def once():
        if sync:
            sync()
        t0 = time.perf_counter()
        call()
        if sync:
            sync()
        return time.perf_counter() - t0

    once()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < MAX_REPEATS):
        times.append(once())
    return {"s": min(times), "median_s": statistics.median(times), "repeats": len(times)}


def copy_bandwidth(device: str) -> float:
    """Bytes read + written per second by a float32 copy (256 MiB on the CPU, 1 GiB on CUDA)."""
    import torch
    n = (256 if device == "cpu" else 1024) * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == "cuda" else None
    best = min(measure(lambda: dst.copy_(src), 0.0, sync)["s"] for _ in range(4))
    return 2 * src.numel() * 4 / best


# ----------------------------------------------------------------------------- columns
def make_data(m, d, nq, device, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed + m + 7 * d)
    keys = torch.randn(m, d, generator=g).to(device)
    queries = torch.randn(nq, d, generator=g).to(device)
    return queries, keys


def _knn_op():
    """The public metarl op, or a direct ``_C.knn_l2`` call (with a note) if it is missing."""
    import torch
    try:
        from metarl.kernels.knn import knn
        return knn, None
    except ImportError as e:
        from metarl import _C

        def knn(q, x, k, *, valid, tiebreak, key_norms):
            out_d, out_p = torch.empty(q.shape[0], k), torch.empty(q.shape[0], k, dtype=torch.int64)
            _C.knn_l2(q.numpy(), x.numpy(), key_norms.numpy(), valid.view(torch.uint8).numpy(), tiebreak.numpy(),
                      k, out_d.numpy(), out_p.numpy())
            return out_d, out_p
        return knn, f"metarl.kernels.knn.knn missing ({e}); metarl._C.knn_l2 called directly"


def column_call(column, queries, keys, k, device):
    """A zero-argument callable running one search for ``column`` (setup done here, untimed)."""
    import torch
    m, d = keys.shape
    if column == "metarl":
        knn, note = _knn_op()
        norms = (keys * keys).sum(1)
        valid = torch.ones(m, dtype=torch.bool, device=device)
        tb = torch.arange(m, device=device)
        return (lambda: knn(queries, keys, k, valid=valid, tiebreak=tb, key_norms=norms)), note
    if column == "faiss":
        import faiss
        if device == "cuda":
            if not hasattr(faiss, "StandardGpuResources"):
                raise ImportError("faiss has no GPU support (faiss-gpu not installed)")
            res = faiss.StandardGpuResources()
            index = faiss.GpuIndexFlatL2(res, d)
            index.add(keys.cpu().numpy())
            try:  # faiss >= 1.7.4 searches torch CUDA tensors in place
                import faiss.contrib.torch_utils  # noqa: F401
                return (lambda: index.search(queries, k)), None
            except ImportError:
                q = queries.cpu().numpy()
                return (lambda: index.search(q, k)), "queries copied from the host each call"
        index = faiss.IndexFlatL2(d)
        index.add(keys.numpy())
        q = queries.numpy()
        return (lambda: index.search(q, k)), None
    if column == "cdist+topk":
        return (lambda: torch.topk(torch.cdist(queries, keys), k, dim=1, largest=False)), None
    if column == "mm+topk":
        norms = (keys * keys).sum(1)
        qn = (queries * queries).sum(1, keepdim=True)

        def call():
            dist = torch.addmm(norms, queries, keys.t(), alpha=-2)
            vals, idx = torch.topk(dist, k, dim=1, largest=False)
            return vals + qn, idx
        return call, None
    if column == "sklearn":
        from sklearn.neighbors import NearestNeighbors
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="sqeuclidean", n_jobs=-1).fit(keys.numpy())
        q = queries.numpy()
        return (lambda: nn.kneighbors(q, k)), None
    raise ValueError(column)


def small_call(column, b, m, k, device):
    """One lookup in each of ``b`` memories of ``m`` keys (d = 64, one query each)."""
    import torch
    g = torch.Generator().manual_seed(b + m)
    keys = torch.randn(b, m, SMALL_D, generator=g).to(device)
    queries = torch.randn(b, 1, SMALL_D, generator=g).to(device)
    if column == "metarl":
        try:
            from metarl.kernels.knn import batched_knn
            note = None
        except ImportError as e:
            batched_knn, note = None, f"metarl.kernels.knn.batched_knn missing ({e}); _C called directly"
        norms = (keys * keys).sum(-1)
        valid = torch.ones(b, m, dtype=torch.bool, device=device)
        tb = torch.arange(m, device=device).expand(b, m).contiguous()
        if batched_knn is not None:
            return (lambda: batched_knn(queries, keys, k, valid=valid, tiebreak=tb, key_norms=norms)), note
        from metarl import _C
        out_d, out_p = torch.empty(b, 1, k), torch.empty(b, 1, k, dtype=torch.int64)
        return (lambda: _C.batched_knn_l2(queries.numpy(), keys.numpy(), norms.numpy(), valid.view(torch.uint8).numpy(),
                                          tb.numpy(), k, out_d.numpy(), out_p.numpy())), note
    if column == "faiss loop":
        import faiss
        if device == "cuda":
            raise ImportError("not measured on CUDA (one GPU index per memory)")
        indexes = []
        for i in range(b):
            index = faiss.IndexFlatL2(SMALL_D)
            index.add(keys[i].numpy())
            indexes.append(index)
        qs = [queries[i].numpy() for i in range(b)]
        return (lambda: [index.search(q, k) for index, q in zip(indexes, qs)]), None
    if column == "cdist+topk":
        return (lambda: torch.topk(torch.cdist(queries, keys), k, dim=2, largest=False)), None
    raise ValueError(column)


def run_worker(job) -> list[dict]:
    """One column over every size, in this process (the worker's job)."""
    import torch
    torch.manual_seed(0)
    device, seconds = job["device"], job["seconds"]
    sync = torch.cuda.synchronize if device == "cuda" else None
    out, cache = [], {}
    for size in job["sizes"]:
        try:
            with torch.inference_mode():
                if job["small"]:
                    call, note = small_call(job["column"], size["B"], size["M"], size["k"], device)
                else:
                    key = (size["M"], size["d"])
                    if key not in cache:
                        cache.clear()
                        cache[key] = make_data(size["M"], size["d"], max(job["all_q"]), device)
                    queries, keys = cache[key]
                    call, note = column_call(job["column"], queries[: size["Q"]].contiguous(), keys, size["k"],
                                             device)
                r = measure(call, seconds, sync)
                del call
            if note:
                r["note"] = note
            out.append(r)
        except Exception as e:  # noqa: BLE001 - reported in the table, not raised
            msg = str(e).splitlines()[0] if str(e) else ""
            out.append({"error": f"{type(e).__name__}: {msg}"[:160]})
    return out


def run_isolated(job) -> list[dict]:
    """:func:`run_worker` in a fresh Python process; its JSON comes back on stdout."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"worker failed: {tail}"[:160]} for _ in job["sizes"]]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
def _fmt_rate(r):
    return f"{r:.3g}" if r is not None else "n/a"


def table(rows, columns, small=False) -> str:
    """Markdown: queries/s per column, ratio metarl / peer (> 1: metarl faster), floor."""
    peers = [c for c in columns if c != "metarl"]
    head = (["B", "M"] if small else ["M", "d", "Q", "k"]) + [f"{c} q/s" for c in columns] \
        + [f"vs {p}" for p in peers] + ["floor q/s", "metarl % floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in rows:
        qps = {c: row["qps"].get(c) for c in columns}
        cells = [str(row["B"]), str(row["M"])] if small else [str(row[x]) for x in ("M", "d", "Q", "k")]
        cells += [_fmt_rate(qps[c]) for c in columns]
        cells += [f"{qps['metarl'] / qps[p]:.2f}x" if qps["metarl"] and qps[p] else "—" for p in peers]
        cells += [f"{row['floor_qps']:.3g}",
                  f"{100 * qps['metarl'] / row['floor_qps']:.0f}%" if qps["metarl"] else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="a small subset: M in 1e4,1e5; Q in 1,256; no 1024x1e4")
    parser.add_argument("--all", action="store_true", help="the full matrix: d in 64,128; k in 1,11,50")
    parser.add_argument("--M", help="comma-separated M (overrides)")
    parser.add_argument("--d", help="comma-separated d (overrides)")
    parser.add_argument("--Q", help="comma-separated Q (overrides)")
    parser.add_argument("--k", help="comma-separated k (overrides)")
    parser.add_argument("--columns", help="comma-separated subset of the columns")
    parser.add_argument("--no-small", action="store_true", help="skip the many-small-memories table")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed budget per measurement")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return

    def ints(text, default):
        return [int(float(v)) for v in text.split(",")] if text else list(default)

    ms = ints(args.M, (10**4, 10**5) if args.quick else (10**4, 10**5, 10**6))
    ds = ints(args.d, (64, 128) if args.all else (64,))
    qs = ints(args.Q, (1, 256) if args.quick else (1, 32, 256))
    ks = ints(args.k, (1, 11, 50) if args.all else (50,))
    small = [] if args.no_small else [s for s in SMALL_MEMORIES if not (args.quick and s[1] > 1000)]
    columns = COLUMNS_CUDA if args.device == "cuda" else COLUMNS_CPU
    if args.columns:
        columns = tuple(c for c in columns if c in args.columns.split(",")) or columns
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device")

    start = time.perf_counter()
    info = machine_info(args.device, ("torch", "faiss", "sklearn"))
    info["load_average_before"] = os.getloadavg()
    rate = gemm_rate(2048, 1024, 1024) if args.device == "cpu" else gemm_rate(8192, 8192, 8192, "cuda")
    bw = copy_bandwidth(args.device)
    where = info.get("gpu", f"{info['cpu']}, {info['cores']} cores")
    print(f"# kNN benchmark — {where} ({args.device})\n")
    print(f"fp32 GEMM rate: {rate / 1e9:.0f} GFLOP/s; copy bandwidth (read + write): {bw / 1e9:.1f} GB/s\n",
          flush=True)
    warn_if_loaded(info["load_average_before"])

    sizes = [{"M": m, "d": d, "Q": q, "k": k} for m in ms for d in ds for q in qs for k in ks]
    results = {}
    for col in columns:
        job = {"column": col, "sizes": sizes, "device": args.device, "seconds": args.seconds, "small": False,
               "all_q": qs}
        results[col] = run_isolated(job)
        print(f"  {col:<11} " + "  ".join(f"{s['Q'] / r['s']:.3g}" if "s" in r else "err"
                                          for s, r in zip(sizes, results[col])), flush=True)
    rows = []
    for i, s in enumerate(sizes):
        floor_s = max(2 * s["Q"] * s["M"] * s["d"] / rate, 4 * s["M"] * s["d"] / bw)
        rows.append({**s, "floor_s": floor_s, "floor_qps": s["Q"] / floor_s,
                     "results": {c: results[c][i] for c in columns},
                     "qps": {c: s["Q"] / results[c][i]["s"] if "s" in results[c][i] else None for c in columns}})

    small_rows = []
    if small:
        small_sizes = [{"B": b, "M": m, "k": ks[-1]} for b, m in small]
        small_results = {}
        for col in SMALL_COLUMNS:
            job = {"column": col, "sizes": small_sizes, "device": args.device, "seconds": args.seconds,
                   "small": True, "all_q": [1]}
            small_results[col] = run_isolated(job)
        for i, s in enumerate(small_sizes):
            floor_s = max(2 * s["B"] * s["M"] * SMALL_D / rate, 4 * s["B"] * s["M"] * SMALL_D / bw)
            small_rows.append({**s, "floor_s": floor_s, "floor_qps": s["B"] / floor_s,
                               "results": {c: small_results[c][i] for c in SMALL_COLUMNS},
                               "qps": {c: s["B"] / small_results[c][i]["s"] if "s" in small_results[c][i] else None
                                       for c in SMALL_COLUMNS}})
    elapsed = time.perf_counter() - start
    info["load_average_after"] = os.getloadavg()

    print("\n### One memory: queries per second (higher is better; vs peer = metarl / peer, > 1: metarl faster)\n")
    print(table(rows, columns))
    if small_rows:
        print(f"\n### Many small memories, one query each (d = {SMALL_D}, k = {ks[-1]}): lookups per second\n")
        print(table(small_rows, SMALL_COLUMNS, small=True))
    notes = sorted({f"{c}: {r['error']}" for row in rows + small_rows for c, r in row["results"].items()
                    if "error" in r})
    notes += sorted({f"{c}: {r['note']}" for row in rows + small_rows for c, r in row["results"].items()
                     if "note" in r})
    if notes:
        print("\nNotes / not measured — " + "; ".join(notes))
    print(f"\nfloor = max(2 Q M d / {rate / 1e9:.0f} GFLOP/s, 4 M d bytes / {bw / 1e9:.1f} GB/s) per call. "
          f"Best of repeats over ~{args.seconds} s each. Total time {elapsed:.0f} s; 1-minute load average "
          f"{info['load_average_before'][0]:.1f} before, {info['load_average_after'][0]:.1f} after.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"knn-{info['hostname']}-{args.device}-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "knn", "date": stamp, "device": args.device, "machine": info,
                                "gemm_flops": rate, "copy_bytes_per_s": bw, "seconds": args.seconds,
                                "elapsed_s": elapsed, "rows": rows, "small_rows": small_rows}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
