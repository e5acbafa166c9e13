// Exact k-nearest-neighbour search, squared L2, on the CPU (DESIGN.md, "CPU kNN").
//
//   out_d[q] = the k smallest max(0, ||q||^2 - 2 q.x + ||x||^2) over valid keys x, ascending;
//   out_p[q] = their positions; equal distances ordered by tiebreak, then position;
//   fewer than k valid keys: padded with +inf / -1.
//
// Two scan kernels, both streaming keys once and never materialising [Q, M]:
//
// * GEMM path (Q > kDirectMaxQ): queries packed transposed, 16 per AVX-512 vector; a
//   register-blocked microkernel computes a [32 queries x 12 keys] tile of dot products
//   with FMAs whose key operand is an embedded broadcast straight from the key rows (no
//   key packing). The epilogue turns the tile into distances and compares each 16-query
//   vector with the 16 queries' current k-th distances (thresholds) in one instruction;
//   only survivors (rare once the selections are warm) leave registers, one append each.
// * Direct path (Q <= kDirectMaxQ, memory-bound): for 16 keys at a time, 16-lane partial
//   dot products along d, reduced by a 4-level transpose-add tree into one vector of 16
//   distances, compared with the query's threshold; survivors are appended compressed.
//
// Invalid keys get a NaN norm, so their distances are NaN and fail every ordered compare.
// Each (query, key) distance is computed by the same instruction sequence whatever the
// thread split, so results do not depend on the thread count; duplicated keys give
// bit-identical distances and their order is decided by tiebreak.
//
// Selection: per query an unsorted candidate buffer and a threshold (struct Selection).
//
// Threads (search()): the GEMM path hands out query blocks (each against all keys) when there
// are >= 4 a thread; otherwise, and on the direct path, key chunks (a few a thread, taken
// dynamically), each thread with its own selections, merged at the end. The batched op runs
// one memory per thread (search_serial with a reused Workspace).
//
// Without AVX-512 (METARL_PORTABLE=1 builds, other CPUs) a plain-loop fallback with the same
// semantics runs instead (direct dot products for every Q; correct, not tuned).

#if defined(__x86_64__) || defined(_M_X64)
// gcc 12 warns falsely inside avx512fintrin.h (_mm512_undefined_ps as a merge source).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "buffers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace metarl {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
// Queries per call at or below which the direct path is used. Measured (d = 64, M = 1e5, k = 50,
// one thread): direct 0.90 ms at Q = 1, 1.6 ms at Q = 4, 3.4 ms at Q = 8 (~0.4 ms a query);
// the GEMM path with one 16-lane block ~6 ms for any Q <= 16 (64 FMAs a key whatever Q). The
// direct path wins up to Q ~ 12; 8 leaves margin for d = 128 and noisy timings.
constexpr int64_t kDirectMaxQ = 8;
constexpr int kNR = 12;                 // keys per GEMM microkernel call (2 x 12 accumulators)
constexpr int64_t kTileBytes = 256 << 10;  // keys per cache tile: 256 KiB of rows (L2 is 1 MiB)
constexpr double kMinParallelFlops = 2e7;    // GEMM path: 2 Q M d FLOPs worth a second thread (~0.2 ms)
constexpr double kMinParallelBytes = 4e6;    // direct path: 4 M d bytes of keys worth a second thread
constexpr int64_t kMinChunkKeys = 4096;     // keys per dynamic chunk, at least

struct Entry {
  float d;
  int64_t tb;
  int64_t pos;
};

// The output order: distance, then tiebreak, then position (a functor, so std algorithms inline it).
struct Before {
  bool operator()(const Entry& a, const Entry& b) const {
    return a.d < b.d || (a.d == b.d && (a.tb < b.tb || (a.tb == b.tb && a.pos < b.pos)));
  }
};

// The k best candidates of n queries, kept as unsorted buffers of (distance, position)
// with thr[i] = a distance no smaller than query i's current k-th best (+inf until the
// first compaction; -inf for padding lanes). Survivors of `dist <= thr` are appended;
// a full buffer is compacted to the entries <= its k-th smallest distance (ties kept),
// so an append costs a few stores instead of a heap sift. Measured (512 memories x 1,000
// keys, d = 64, one thread, noisy shared machine): with a binary heap of (d, tiebreak, pos)
// k = 50 took 11.2 ms against 5.6 ms at k = 1 (~60 ns a push: unpredictable branches); with
// these buffers compaction + the final merge are ~18% of perf samples, the scan ~36%.
// Selection is still the main cost of small memories (k / M = 5%): see bench/knn.py.
struct Selection {
  int64_t k = 0, cap = 0;
  std::vector<float> dist;
  std::vector<int64_t> pos;
  std::vector<int64_t> size;
  std::vector<float> thr;
  const int64_t* tb = nullptr;  // the memory's tiebreak, for exact compaction of ties

  void reset(int64_t n_real, int64_t n_padded, int64_t k_, const int64_t* tb_) {
    k = k_;
    cap = 2 * k + 32;  // room for k kept + 16-lane appends after any compaction
    tb = tb_;
    dist.resize(static_cast<size_t>(n_padded * cap));
    pos.resize(static_cast<size_t>(n_padded * cap));
    size.assign(static_cast<size_t>(n_padded), 0);
    thr.assign(static_cast<size_t>(n_padded), -kInf);
    std::fill(thr.begin(), thr.begin() + n_real, kInf);
  }

  // Keep the entries <= the k-th smallest distance; if ties leave no room for 16 more,
  // keep exactly the k best by (distance, tiebreak, position). Scratch is per thread:
  // the final merge compacts one Selection's queries from several threads.
  void compact(int64_t i) {
    thread_local std::vector<float> work;
    thread_local std::vector<Entry> ent;
    float* d = dist.data() + i * cap;
    int64_t* p = pos.data() + i * cap;
    const int64_t n = size[i];
    if (n <= k) return;
    work.assign(d, d + n);
    std::nth_element(work.begin(), work.begin() + (k - 1), work.begin() + n);
    const float t = work[k - 1];
    int64_t m = 0;
    for (int64_t j = 0; j < n; ++j) {  // branch-free filter, order kept
      d[m] = d[j];
      p[m] = p[j];
      m += d[j] <= t;
    }
    if (m + 16 > cap) {
      ent.resize(static_cast<size_t>(m));
      for (int64_t j = 0; j < m; ++j) ent[j] = Entry{d[j], tb[p[j]], p[j]};
      std::nth_element(ent.begin(), ent.begin() + (k - 1), ent.end(), Before());
      for (int64_t j = 0; j < k; ++j) {
        d[j] = ent[j].d;
        p[j] = ent[j].pos;
      }
      m = k;
    }
    size[i] = m;
    thr[i] = t;
  }

  void push(int64_t i, float d, int64_t p) {
    if (size[i] == cap) compact(i);
    const int64_t n = size[i]++;
    dist[i * cap + n] = d;
    pos[i * cap + n] = p;
  }

  // Append this query's entries (tiebreak looked up) to out.
  void entries(int64_t i, std::vector<Entry>& out) const {
    const float* d = dist.data() + i * cap;
    const int64_t* p = pos.data() + i * cap;
    for (int64_t j = 0; j < size[i]; ++j) out.push_back(Entry{d[j], tb[p[j]], p[j]});
  }
};

// One search problem (one memory), pointers into validated buffers.
struct Problem {
  const float* q;
  const float* x;
  const float* xn;
  const uint8_t* valid;
  const int64_t* tb;
  int64_t Q, M, d, k;
  float* out_d;
  int64_t* out_p;
};

// Squared norms of the queries, accumulated the same way for every path.
inline float sqnorm(const float* v, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(v[i]) * v[i];
  return static_cast<float>(s);
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)

// Effective key norms for keys [0, n): NaN where invalid, NaN-padded to n_pad.
inline void effective_norms(const float* xn, const uint8_t* valid, int64_t n, int64_t n_pad, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = valid[j] ? xn[j] : kNaN;
  for (int64_t j = n; j < n_pad; ++j) out[j] = kNaN;
}

// ----------------------------------------------------------------------------- GEMM path
// qt: [d][MV*16] packed queries; x: NR key rows at stride d; kn: NR effective norms.
// Lanes whose distance is <= thr go to the selection (sel index sel_base + lane).
template <int MV, int NR, int D>
inline void gemm_panel(const float* __restrict qt, const float* __restrict qn, const float* __restrict x,
                       int64_t d_rt, const float* __restrict kn, int64_t pos, Selection& sel, int64_t sel_base) {
  const int64_t d = D > 0 ? D : d_rt;
  __m512 acc[MV][NR];
#pragma GCC unroll 32
  for (int v = 0; v < MV; ++v)
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) acc[v][j] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < d; ++kk) {
    __m512 a[MV];
#pragma GCC unroll 4
    for (int v = 0; v < MV; ++v) a[v] = _mm512_load_ps(qt + kk * (16 * MV) + 16 * v);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512 b = _mm512_set1_ps(x[j * d + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < MV; ++v) acc[v][j] = _mm512_fmadd_ps(a[v], b, acc[v][j]);
    }
  }
  const __m512 zero = _mm512_setzero_ps(), two = _mm512_set1_ps(2.0f);
  __m512 qnv[MV], thr[MV];
#pragma GCC unroll 4
  for (int v = 0; v < MV; ++v) {
    qnv[v] = _mm512_load_ps(qn + 16 * v);
    thr[v] = _mm512_loadu_ps(sel.thr.data() + sel_base + 16 * v);
  }
  __mmask16 m[MV][NR];
  uint32_t any = 0;
#pragma GCC unroll 32
  for (int j = 0; j < NR; ++j) {
    const __m512 knj = _mm512_set1_ps(kn[j]);
#pragma GCC unroll 4
    for (int v = 0; v < MV; ++v) {
      // max(0, dist) keeps NaN (max_ps returns its second operand when either is NaN).
      acc[v][j] = _mm512_max_ps(zero, _mm512_fnmadd_ps(acc[v][j], two, _mm512_add_ps(qnv[v], knj)));
      m[v][j] = _mm512_cmp_ps_mask(acc[v][j], thr[v], _CMP_LE_OQ);
      any |= m[v][j];
    }
  }
  if (__builtin_expect(any != 0, 0)) {
    alignas(64) float dist[16];
    for (int j = 0; j < NR; ++j)
      for (int v = 0; v < MV; ++v)
        if (m[v][j]) {
          _mm512_store_ps(dist, acc[v][j]);
          for (uint32_t bits = m[v][j]; bits; bits &= bits - 1) {
            const int lane = __builtin_ctz(bits);
            sel.push(sel_base + 16 * v + lane, dist[lane], pos + j);
          }
        }
  }
}

// Queries packed for the GEMM path: block b holds queries [16 MV b, 16 MV (b+1)) as
// qt[b][kk][16 MV] (zero padding) and their norms qn[b][16 MV].
struct PackedQueries {
  int64_t mr = 0, nqb = 0;
  std::vector<float, std::allocator<float>> buf;  // qt then qn, 64-byte aligned via offset
  float* qt = nullptr;
  float* qn = nullptr;

  void pack(const float* q, int64_t Q, int64_t d, int mv) {
    mr = 16 * mv;
    nqb = (Q + mr - 1) / mr;
    const int64_t n_qt = nqb * d * mr, n_qn = nqb * mr;
    buf.assign(static_cast<size_t>(n_qt + n_qn + 16), 0.0f);
    float* base = buf.data();
    base += (16 - (reinterpret_cast<uintptr_t>(base) / 4) % 16) % 16;
    qt = base;
    qn = base + n_qt;
    for (int64_t i = 0; i < Q; ++i) {
      const int64_t b = i / mr, lane = i % mr;
      for (int64_t kk = 0; kk < d; ++kk) qt[(b * d + kk) * mr + lane] = q[i * d + kk];
      qn[i] = sqnorm(q + i * d, d);
    }
  }
};

// Scratch one thread reuses across tiles (and memories, in the batched op).
struct Scratch {
  std::vector<float> kn;       // effective norms of a tile
  std::vector<float> tail;     // a zero-padded partial panel of key rows
};

// Scan keys [m0, m1) for query blocks [b0, b1) on the GEMM path. Selection index of
// query i is i - 16 MV b0 (sel covers blocks b0..b1 only).
template <int MV, int D>
void scan_gemm(const Problem& p, const PackedQueries& pq, int64_t b0, int64_t b1, int64_t m0, int64_t m1,
               Selection& sel, Scratch& s) {
  constexpr int NR = MV == 2 ? kNR : 24;
  const int64_t d = p.d, mr = 16 * MV;
  const int64_t tile = std::max<int64_t>(NR, (kTileBytes / (4 * std::max<int64_t>(d, 1))) / NR * NR);
  s.kn.resize(static_cast<size_t>(tile + NR));
  s.tail.assign(static_cast<size_t>(NR * std::max<int64_t>(d, 1)), 0.0f);
  for (int64_t t0 = m0; t0 < m1; t0 += tile) {
    const int64_t n = std::min(tile, m1 - t0), n_full = n / NR * NR;
    effective_norms(p.xn + t0, p.valid + t0, n, n_full + (n > n_full ? NR : 0), s.kn.data());
    if (n > n_full) {  // the partial last panel, copied into zero-padded rows
      std::fill(s.tail.begin(), s.tail.end(), 0.0f);
      std::memcpy(s.tail.data(), p.x + (t0 + n_full) * d, sizeof(float) * (n - n_full) * d);
    }
    for (int64_t b = b0; b < b1; ++b) {
      const float* qt = pq.qt + b * d * mr;
      const float* qn = pq.qn + b * mr;
      const int64_t sb = (b - b0) * mr;
      for (int64_t j = 0; j < n_full; j += NR)
        gemm_panel<MV, NR, D>(qt, qn, p.x + (t0 + j) * d, d, s.kn.data() + j, t0 + j, sel, sb);
      if (n > n_full) gemm_panel<MV, NR, D>(qt, qn, s.tail.data(), d, s.kn.data() + n_full, t0 + n_full, sel, sb);
    }
  }
}

// ----------------------------------------------------------------------------- direct path
// Sum each of v[0..15] across its lanes: out[j] = sum(v[j]). A transpose-add tree
// (4 levels, 45 shuffles/adds) then one permute back to key order.
inline __m512 reduce16(__m512 v[16]) {
  __m512 r[8], s[4], u[2];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = v[2 * i], b = v[2 * i + 1];
    r[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 4; ++i) {
    const __m512 a = r[2 * i], b = r[2 * i + 1];
    s[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  for (int i = 0; i < 2; ++i) {
    const __m512 a = s[2 * i], b = s[2 * i + 1];
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  const __m512 w = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // w[4m + r] holds key m + 4r.
  const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(idx, w);
}

// Queries zero-padded to a multiple of 16 floats, with their norms.
struct PaddedQueries {
  int64_t dp = 0;
  std::vector<float> q, qn;
  void pack(const float* src, int64_t Q, int64_t d) {
    dp = (d + 15) / 16 * 16;
    q.assign(static_cast<size_t>(Q * dp), 0.0f);
    qn.resize(static_cast<size_t>(Q));
    for (int64_t i = 0; i < Q; ++i) {
      std::memcpy(q.data() + i * dp, src + i * d, sizeof(float) * d);
      qn[i] = sqnorm(src + i * d, d);
    }
  }
};

// Scan keys [m0, m1) for queries [q0, q1) on the direct path; sel index i - q0.
template <int D>
void scan_direct(const Problem& p, const PaddedQueries& pq, int64_t q0, int64_t q1, int64_t m0, int64_t m1,
                 Selection& sel) {
  const int64_t d = D > 0 ? D : p.d, dp = pq.dp;
  const int64_t full = d / 16;
  const __mmask16 tail_mask = static_cast<__mmask16>((1u << (d % 16)) - 1);
  const __m512 zero = _mm512_setzero_ps(), two = _mm512_set1_ps(2.0f), nan = _mm512_set1_ps(kNaN);
  const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t j0 = m0; j0 < m1; j0 += 16) {
    const int64_t nk = std::min<int64_t>(16, m1 - j0);
    const __mmask16 kmask = static_cast<__mmask16>((1u << nk) - 1);
    const __m128i vb = _mm_maskz_loadu_epi8(kmask, p.valid + j0);
    const __mmask16 vmask = _mm_test_epi8_mask(vb, vb);
    const __m512 kn = _mm512_mask_loadu_ps(nan, vmask, p.xn + j0);  // NaN where invalid or past the end
    const float* xb = p.x + j0 * d;
    for (int64_t qi = q0; qi < q1; ++qi) {
      const float* qv = pq.q.data() + qi * dp;
      __m512 v[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        __m512 acc = _mm512_setzero_ps();
        if (j < nk) {
          const float* xr = xb + j * d;
          for (int64_t c = 0; c < full; ++c)
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(xr + 16 * c), _mm512_loadu_ps(qv + 16 * c), acc);
          if (tail_mask)
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail_mask, xr + 16 * full), _mm512_loadu_ps(qv + 16 * full),
                                  acc);
        }
        v[j] = acc;
      }
      const __m512 w = reduce16(v);
      const __m512 dv =
          _mm512_max_ps(zero, _mm512_fnmadd_ps(w, two, _mm512_add_ps(_mm512_set1_ps(pq.qn[qi]), kn)));
      const __mmask16 m = _mm512_cmp_ps_mask(dv, _mm512_set1_ps(sel.thr[qi - q0]), _CMP_LE_OQ);
      if (__builtin_expect(m != 0, 0)) {  // append the survivors, compressed (no per-lane loop)
        const int64_t i = qi - q0;
        if (sel.size[i] + 16 > sel.cap) sel.compact(i);
        const int64_t n = sel.size[i];
        float* od = sel.dist.data() + i * sel.cap + n;
        int64_t* op = sel.pos.data() + i * sel.cap + n;
        // compress in registers, then a plain store (Zen 4's compress-to-memory is microcoded)
        _mm512_storeu_ps(od, _mm512_maskz_compress_ps(m, dv));
        const __m512i p_lo = _mm512_add_epi64(_mm512_set1_epi64(j0), iota);
        const __m512i p_hi = _mm512_add_epi64(p_lo, _mm512_set1_epi64(8));
        const __mmask8 m_lo = static_cast<__mmask8>(m), m_hi = static_cast<__mmask8>(m >> 8);
        _mm512_storeu_si512(op, _mm512_maskz_compress_epi64(m_lo, p_lo));
        _mm512_storeu_si512(op + __builtin_popcount(m_lo), _mm512_maskz_compress_epi64(m_hi, p_hi));
        sel.size[i] = n + __builtin_popcount(m);
      }
    }
  }
}

constexpr bool kAvx512 = true;

#else  // portable fallback: same semantics, plain loops (METARL_PORTABLE builds)

struct PackedQueries {};
struct Scratch {};
struct PaddedQueries {
  int64_t dp = 0;
  std::vector<float> q, qn;
  void pack(const float* src, int64_t Q, int64_t d) {
    dp = d;
    q.assign(src, src + Q * d);
    qn.resize(static_cast<size_t>(Q));
    for (int64_t i = 0; i < Q; ++i) qn[i] = sqnorm(src + i * d, d);
  }
};

template <int D>
void scan_direct(const Problem& p, const PaddedQueries& pq, int64_t q0, int64_t q1, int64_t m0, int64_t m1,
                 Selection& sel) {
  const int64_t d = p.d;
  for (int64_t j = m0; j < m1; ++j) {
    if (!p.valid[j]) continue;
    const float* xr = p.x + j * d;
    for (int64_t qi = q0; qi < q1; ++qi) {
      const float* qv = pq.q.data() + qi * d;
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < d; ++c) dot += xr[c] * qv[c];
      const float dist = std::max(0.0f, pq.qn[qi] + p.xn[j] - 2.0f * dot);
      if (dist <= sel.thr[qi - q0]) sel.push(qi - q0, dist, j);
    }
  }
}

constexpr bool kAvx512 = false;

#endif

// Sorted output for query i from the entries of n_parts selections (index i - off in each).
void finish_query(const Problem& p, int64_t i, Selection* parts, int n_parts, int64_t off,
                  std::vector<Entry>& tmp) {
  tmp.clear();
  for (int c = 0; c < n_parts; ++c) {
    parts[c].compact(i - off);  // down to the k best distances (+ ties) before the tiebreak lookups
    parts[c].entries(i - off, tmp);
  }
  const int64_t n = std::min<int64_t>(p.k, static_cast<int64_t>(tmp.size()));
  if (n < static_cast<int64_t>(tmp.size())) std::nth_element(tmp.begin(), tmp.begin() + (n - 1), tmp.end(), Before());
  std::sort(tmp.begin(), tmp.begin() + n, Before());
  float* od = p.out_d + i * p.k;
  int64_t* op = p.out_p + i * p.k;
  for (int64_t r = 0; r < n; ++r) {
    od[r] = tmp[r].d;
    op[r] = tmp[r].pos;
  }
  for (int64_t r = n; r < p.k; ++r) {
    od[r] = kInf;
    op[r] = -1;
  }
}

template <typename F>
void dispatch_d(int64_t d, F&& f) {
  if (d == 64) {
    f(std::integral_constant<int, 64>());
  } else if (d == 128) {
    f(std::integral_constant<int, 128>());
  } else {
    f(std::integral_constant<int, 0>());
  }
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// The threads of the current team: inside a parallel region, the number OpenMP actually granted,
// which may be fewer than num_threads() asked for (OMP_THREAD_LIMIT, OMP_DYNAMIC, nesting).
int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// One memory on up to `threads` threads (1: no parallel region; the batched op's case).
//
// Work is split into chunks taken dynamically (schedule(dynamic, 1)): on this shared
// 2-core machine a thread is often descheduled for a time slice (~4 ms) and a static
// split then waits for it; with ~4 chunks a thread the other picks up the slack.
// Below kMinParallelFlops / kMinParallelBytes one thread does it all: a fork/join costs
// ~10 us, and a descheduled second thread a time slice.
// Per-thread buffers, reused across the memories of a batched call.
struct Workspace {
  Selection sel;
  Scratch scratch;
  PaddedQueries padded;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  PackedQueries packed;
#endif
  std::vector<Entry> tmp;
};

// One memory on one thread (no parallel region): the batched op's case and small problems.
void search_serial(const Problem& p, Workspace& ws) {
  if (!kAvx512 || p.Q <= kDirectMaxQ) {
    ws.padded.pack(p.q, p.Q, p.d);
    ws.sel.reset(p.Q, p.Q, p.k, p.tb);
    dispatch_d(p.d, [&](auto D) { scan_direct<decltype(D)::value>(p, ws.padded, 0, p.Q, 0, p.M, ws.sel); });
    for (int64_t i = 0; i < p.Q; ++i) finish_query(p, i, &ws.sel, 1, 0, ws.tmp);
    return;
  }
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  const int mv = p.Q <= 16 ? 1 : 2;
  ws.packed.pack(p.q, p.Q, p.d, mv);
  ws.sel.reset(p.Q, ws.packed.nqb * ws.packed.mr, p.k, p.tb);
  dispatch_d(p.d, [&](auto D) {
    if (mv == 1) {
      scan_gemm<1, decltype(D)::value>(p, ws.packed, 0, ws.packed.nqb, 0, p.M, ws.sel, ws.scratch);
    } else {
      scan_gemm<2, decltype(D)::value>(p, ws.packed, 0, ws.packed.nqb, 0, p.M, ws.sel, ws.scratch);
    }
  });
  for (int64_t i = 0; i < p.Q; ++i) finish_query(p, i, &ws.sel, 1, 0, ws.tmp);
#endif
}

void search(const Problem& p, int threads) {
  if (p.Q == 0) return;
  const bool direct = !kAvx512 || p.Q <= kDirectMaxQ;
  const double md = static_cast<double>(p.M) * std::max<int64_t>(p.d, 1);
  if (direct ? 4 * md < kMinParallelBytes : 2 * p.Q * md < kMinParallelFlops) threads = 1;
  if (threads == 1) {
    Workspace ws;
    search_serial(p, ws);
    return;
  }
  auto by_keys = [&](auto&& scan_range, int64_t n_sel, int64_t align) {
    // Key chunks: a few per thread, at least kMinChunkKeys keys, aligned to the panel width.
    int64_t n_chunks = threads == 1 ? 1 : std::min<int64_t>(4 * threads, std::max<int64_t>(1, p.M / kMinChunkKeys));
    const int64_t per = ((p.M + n_chunks - 1) / n_chunks + align - 1) / align * align;
    n_chunks = per > 0 ? (p.M + per - 1) / per : 1;
    const int nt = static_cast<int>(std::min<int64_t>(threads, n_chunks));
    // One selection per thread of the team, sized once the team exists: OpenMP may grant fewer
    // threads than nt, and every part merged below must have been reset by a running thread.
    std::vector<Selection> parts;
    int n_parts = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#pragma omp single
      {
        n_parts = team_size();
        parts.resize(static_cast<size_t>(n_parts));
      }  // implicit barrier: parts exists before any thread takes its own
      Selection& sel = parts[thread_id()];
      sel.reset(p.Q, n_sel, p.k, p.tb);
      Scratch s;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < std::max<int64_t>(n_chunks, 1); ++c)
        scan_range(std::min(p.M, c * per), std::min(p.M, (c + 1) * per), sel, s);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < p.Q; ++i) {
        thread_local std::vector<Entry> tmp_t;
        finish_query(p, i, parts.data(), n_parts, 0, tmp_t);
      }
    }
  };
  if (direct) {
    PaddedQueries pq;
    pq.pack(p.q, p.Q, p.d);
    by_keys(
        [&](int64_t m0, int64_t m1, Selection& sel, Scratch&) {
          dispatch_d(p.d, [&](auto D) { scan_direct<decltype(D)::value>(p, pq, 0, p.Q, m0, m1, sel); });
        },
        p.Q, 16);
    return;
  }
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  const int mv = p.Q <= 16 ? 1 : 2;
  PackedQueries pq;
  pq.pack(p.q, p.Q, p.d, mv);
  const int64_t mr = 16 * mv, nqb = pq.nqb;
  auto scan = [&](int64_t b0, int64_t b1, int64_t m0, int64_t m1, Selection& sel, Scratch& s) {
    dispatch_d(p.d, [&](auto D) {
      if (mv == 1) {
        scan_gemm<1, decltype(D)::value>(p, pq, b0, b1, m0, m1, sel, s);
      } else {
        scan_gemm<2, decltype(D)::value>(p, pq, b0, b1, m0, m1, sel, s);
      }
    });
  };
  if (threads > 1 && nqb >= 4 * threads) {
    // Plenty of query blocks: each chunk is one block against all keys (no merge).
#pragma omp parallel num_threads(threads)
    {
      Selection sel;
      Scratch s;
      std::vector<Entry> tmp_t;
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < nqb; ++b) {
        const int64_t i0 = b * mr, i1 = std::min(p.Q, i0 + mr);
        sel.reset(i1 - i0, mr, p.k, p.tb);
        scan(b, b + 1, 0, p.M, sel, s);
        for (int64_t i = i0; i < i1; ++i) finish_query(p, i, &sel, 1, i0, tmp_t);
      }
    }
    return;
  }
  by_keys([&](int64_t m0, int64_t m1, Selection& sel, Scratch& s) { scan(0, nqb, m0, m1, sel, s); }, nqb * mr,
          kNR);
#endif
}

int64_t check_k(int64_t k) {
  if (k <= 0) throw py::value_error("k: expected a positive integer, got " + std::to_string(k));
  return k;
}

const uint8_t* valid_buffer(py::array& a, py::ssize_t n0, py::ssize_t n1 = -1) {
  if (a.dtype().is(py::dtype::of<bool>()))
    return reinterpret_cast<const uint8_t*>(buffer<bool>(a, "valid", n0, n1, -1, false));
  return buffer<uint8_t>(a, "valid", n0, n1, -1, false);
}

}  // namespace

// knn_l2(queries f32[Q,d], keys f32[M,d], key_norms f32[M], valid u8[M], tiebreak i64[M], k,
//        out_d f32[Q,k], out_p i64[Q,k])
void knn_l2(py::array queries, py::array keys, py::array key_norms, py::array valid, py::array tiebreak, int64_t k,
            py::array out_d, py::array out_p) {
  if (queries.ndim() != 2) throw py::value_error("queries: expected a 2-D array [Q, d]");
  if (keys.ndim() != 2) throw py::value_error("keys: expected a 2-D array [M, d]");
  const py::ssize_t Q = queries.shape(0), d = queries.shape(1), M = keys.shape(0);
  check_k(k);
  Problem p;
  p.q = buffer<float>(queries, "queries", Q, d, -1, false);
  p.x = buffer<float>(keys, "keys", M, d, -1, false);
  p.xn = buffer<float>(key_norms, "key_norms", M, -1, -1, false);
  p.valid = valid_buffer(valid, M);
  p.tb = buffer<int64_t>(tiebreak, "tiebreak", M, -1, -1, false);
  p.out_d = buffer<float>(out_d, "out_d", Q, k);
  p.out_p = buffer<int64_t>(out_p, "out_p", Q, k);
  p.Q = Q;
  p.M = M;
  p.d = d;
  p.k = k;
  py::gil_scoped_release release;
  search(p, max_threads());
}

// batched_knn_l2: the same over B independent memories, [B, ...] in front of every array.
void batched_knn_l2(py::array queries, py::array keys, py::array key_norms, py::array valid, py::array tiebreak,
                    int64_t k, py::array out_d, py::array out_p) {
  if (queries.ndim() != 3) throw py::value_error("queries: expected a 3-D array [B, Q, d]");
  if (keys.ndim() != 3) throw py::value_error("keys: expected a 3-D array [B, M, d]");
  const py::ssize_t B = queries.shape(0), Q = queries.shape(1), d = queries.shape(2), M = keys.shape(1);
  check_k(k);
  const float* q = buffer<float>(queries, "queries", B, Q, d, false);
  const float* x = buffer<float>(keys, "keys", B, M, d, false);
  const float* xn = buffer<float>(key_norms, "key_norms", B, M, -1, false);
  const uint8_t* vd = valid_buffer(valid, B, M);
  const int64_t* tb = buffer<int64_t>(tiebreak, "tiebreak", B, M, -1, false);
  float* od = buffer<float>(out_d, "out_d", B, Q, k);
  int64_t* op = buffer<int64_t>(out_p, "out_p", B, Q, k);
  py::gil_scoped_release release;
  auto problem = [&](int64_t b) {
    return Problem{q + b * Q * d, x + b * M * d, xn + b * M, vd + b * M, tb + b * M, Q, M, d, k,
                   od + b * Q * k, op + b * Q * k};
  };
  const int threads = max_threads();
  if (B >= threads) {  // one memory per thread
#pragma omp parallel num_threads(threads)
    {
      Workspace ws;
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < B; ++b) search_serial(problem(b), ws);
    }
  } else {  // few memories: each one on all threads
    for (int64_t b = 0; b < B; ++b) search(problem(b), threads);
  }
}

}  // namespace metarl
