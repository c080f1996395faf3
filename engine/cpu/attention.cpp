// Causal multi-head attention with GQA and per-KV-head memory slots, FlashAttention-style on the CPU.
//
// Layouts (contiguous): q, out, dq, dout [B, Tq, H, hd]; k, v, dk, dv [B, Tk, G, hd];
// mem_k, mem_v, dmem_k, dmem_v [B, m, G, hd] (null when m = 0); lse [B, Tq, H]. Query head h reads
// KV head g = h / (H/G) (Hugging Face repeat_kv order).
//
// Query (b, i, h) attends over the key list [m memory slots of g ; real keys 0 .. n_i - 1] with
// n_i = clamp(i + Tk - Tq + 1, 0, Tk) when causal (a decode step with Tq < Tk sees the whole cache),
// n_i = Tk otherwise. With s_j = scale * q . k_j:
//
//   lse = log sum_j exp(s_j),  out = sum_j exp(s_j - lse) v_j
//
// Memory gate (optional, mem_gate [B, G], null = no gate): the m slots of (b, g) enter with their
// attention mass scaled by gate[b, g] >= 0, i.e. each memory score gets + log g:
//
//   out = (g sum_m e^{s_m} v_m + sum_t e^{s_t} v_t) / Z,  Z = g sum_m e^{s_m} + sum_t e^{s_t},  lse = log Z
//
// g = 0 hides the memory exactly (log 0 = -inf is a masked key: out and lse are those of attention
// without memory), g = 1 is the ungated op bit for bit. A negative g is outside the domain (NaN).
//
// Both kernels work on query tiles (consecutive positions of one (b, g), all H/G heads of the group
// stacked) with small OpenBLAS GEMMs against the keys the tile can see, and a vectorised softmax step
// in between; no [Tq, Tk] matrix, O(tile x (m + Tk)) scratch per thread (attention.cpp has the details).
// A row that sees no key at all gets out = 0 and lse = -inf.
//
// Backward recomputes p_j = exp(s_j - lse) from the saved lse, with D = dout . out:
//   dv_j += p_j dout,  dp_j = dout . v_j,  ds_j = p_j (dp_j - D),
//   dq += scale ds_j k_j,  dk_j += scale ds_j q
// With a gate, p_m = g e^{s_m - lse} for the slots, and (dmem_gate [B, G], written when mem_gate is given)
//   dgate[b, g] = sum over the group's query rows and slots m of e^{s_m - lse} (dp_m - D)
// which is finite at g = 0 (the ungated probabilities, not ds_m / g). Rows with lse = -inf add nothing.
// Work is split over (b, g) pairs: every query head of a group writes the same dk/dv/dmem rows, and
// owning the whole group in one task makes those sums race-free and deterministic.

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/fast_math.h"

namespace koff::cpu {

struct AttentionDims {
  int64_t batch, tq, tk, heads, groups, mem, head_dim;
};

namespace {

constexpr int64_t kTileRows = 64;
// Per-thread scratch budget for one [rows, m + Tk] score buffer; only very long key lists shrink the tile
// (down to kMinTileRows rows, so the scratch is at least kMinTileRows x (m + Tk)).
constexpr int64_t kScratchBytes = int64_t(1) << 20;
constexpr int64_t kMinTileRows = 16;


template <typename T>
int64_t tile_rows(int64_t cols) {
  const int64_t fit = kScratchBytes / (std::max<int64_t>(cols, 1) * int64_t(sizeof(T)));
  return std::clamp<int64_t>(fit, kMinTileRows, kTileRows);
}

// Row-major C [M, N] = alpha op(A) op(B) + beta C; op(A) is [M, K], op(B) is [K, N]. An empty
// product (K = 0, only when hd = 0) is handled here: BLAS rejects the leading dimensions it comes with.
inline void blas(bool ta, bool tb, int M, int N, int K, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, a, lda, b,
              ldb, beta, c, ldc);
}
inline void blas(bool ta, bool tb, int M, int N, int K, double alpha, const double* a, int lda, const double* b,
                 int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, a, lda, b,
              ldb, beta, c, ldc);
}
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
          T beta, T* c, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  blas(ta, tb, int(M), int(N), int(K), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

template <typename T>
KOFF_INLINE T row_max(const T* s, int64_t n) {
  T mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < n; ++j) mx = mx > s[j] ? mx : s[j];  // this spelling vectorises; std::max does not
  return mx;
}

// s[j] = exp(s[j] - mx) for j < n; returns the sum.
KOFF_INLINE float exp_shift_sum(float* s, int64_t n, float mx) {
  float l = 0.0f;
#pragma omp simd reduction(+ : l)
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_flush(s[j] - mx);
    s[j] = e;
    l += e;
  }
  return l;
}
inline double exp_shift_sum(double* s, int64_t n, double mx) {
  double l = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    l += s[j];
  }
  return l;
}

template <typename T>
KOFF_INLINE T dot_row(const T* a, const T* b, int64_t n) {
  T s = T(0);
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Score rows are padded to a multiple of kPad columns, and the elementwise passes run over the padded
// width with -inf in every column a row does not see: exp(-inf) = 0, and the vector loops never fall
// into their scalar remainder (rows have arbitrary lengths m + n_i, so that remainder was a third of
// the softmax time).
constexpr int64_t kPad = 16;
inline int64_t padded(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

// Forward softmax of a score tile s [rows, ld] (ld a multiple of kPad): row r keeps p = exp(s - mx) on
// its n[r] visible columns and 0 on the rest of [0, padded(ncols)); inv[r] = 1 / sum p and
// lse[r] = mx + log(sum p), or inv[r] = 0 and lse[r] = -inf (row all 0) for a row that sees no key or
// only -inf scores.
template <typename T>
KOFF_INLINE void softmax_tile_impl(T* s, int64_t ld, int64_t rows, int64_t ncols, const int64_t* n, T* inv, T* lse) {
  const int64_t w = padded(ncols);
  for (int64_t r = 0; r < rows; ++r) {
    T* sr = s + r * ld;
    std::fill(sr + n[r], sr + w, T(-INFINITY));
    const T mx = row_max(sr, w);
    if (mx == -INFINITY) {
      std::fill(sr, sr + w, T(0));
      inv[r] = T(0);
      lse[r] = -INFINITY;
      continue;
    }
    const T l = exp_shift_sum(sr, w, mx);  // >= 1: the maximum contributes exp(0)
    inv[r] = T(1) / l;
    lse[r] = mx + std::log(l);
  }
}

// Backward elementwise step of a tile: with p = exp(s - lse[r]) on each row's n[r] visible columns and
// 0 on the rest of [0, padded(ncols)) (the whole row when lse[r] = -inf: it saw no key), and
// D = dsums[r] = dout_r . out_r:  s <- p,  dp <- p (dp - D).
template <typename T>
KOFF_INLINE void grad_tile_impl(T* s, T* dp, int64_t ld, int64_t rows, int64_t ncols, const int64_t* n, const T* lse,
                                const T* dsums) {
  const int64_t w = padded(ncols);
  for (int64_t r = 0; r < rows; ++r) {
    T* sr = s + r * ld;
    T* dpr = dp + r * ld;
    const T l = lse[r], dsum = dsums[r];
    if (l == -INFINITY) {
      std::fill(sr, sr + w, T(0));
      std::fill(dpr, dpr + w, T(0));
      continue;
    }
    std::fill(sr + n[r], sr + w, T(-INFINITY));
    std::fill(dpr + n[r], dpr + w, T(0));
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      const T p = exp_flush(sr[j] - l);
      sr[j] = p;
      dpr[j] = p * (dpr[j] - dsum);
    }
  }
}

// The float tile steps are where the non-GEMM time goes: built once per ISA level (AVX-512, AVX2+FMA,
// baseline) and picked at load time, since the project compiles for baseline x86-64 (SSE2).
KOFF_SIMD_CLONES void softmax_tile(float* s, int64_t ld, int64_t rows, int64_t ncols, const int64_t* n, float* inv,
                                   float* lse) {
  softmax_tile_impl(s, ld, rows, ncols, n, inv, lse);
}
void softmax_tile(double* s, int64_t ld, int64_t rows, int64_t ncols, const int64_t* n, double* inv, double* lse) {
  softmax_tile_impl(s, ld, rows, ncols, n, inv, lse);
}
KOFF_SIMD_CLONES void grad_tile(float* s, float* dp, int64_t ld, int64_t rows, int64_t ncols, const int64_t* n,
                                const float* lse, const float* dsums) {
  grad_tile_impl(s, dp, ld, rows, ncols, n, lse, dsums);
}
void grad_tile(double* s, double* dp, int64_t ld, int64_t rows, int64_t ncols, const int64_t* n, const double* lse,
               const double* dsums) {
  grad_tile_impl(s, dp, ld, rows, ncols, n, lse, dsums);
}

inline int64_t visible_keys(const AttentionDims& d, int64_t i, bool causal) {
  return causal ? std::clamp<int64_t>(i + d.tk - d.tq + 1, 0, d.tk) : d.tk;
}

// [rows, hd] block with row stride ld set to zero.
template <typename T>
inline void zero_rows(T* p, int64_t rows, int64_t hd, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) std::fill_n(p + r * ld, hd, T(0));
}

// Scores of one query tile: s[:, :m] = scale Q Kmem^T, s[:, m:m+nk] = scale Q K^T (row stride ld).
template <typename T>
inline void tile_scores(T* s, int64_t ld, const T* qt, int64_t qs, const T* km, const T* kr, int64_t ks, int64_t rows,
                        int64_t m, int64_t nk, int64_t hd, T alpha) {
  if (m > 0) gemm(false, true, rows, m, hd, alpha, qt, qs, km, ks, T(0), s, ld);
  if (nk > 0) gemm(false, true, rows, nk, hd, alpha, qt, qs, kr, ks, T(0), s + m, ld);
}

// C [rows, hd] (row stride cs) = alpha (P[:, :m] Mem + P[:, m:m+nk] Real), P with row stride ld.
template <typename T>
inline void tile_times_kv(T* c, int64_t cs, const T* p, int64_t ld, const T* mem, const T* real, int64_t ks,
                          int64_t rows, int64_t m, int64_t nk, int64_t hd, T alpha) {
  if (m + nk == 0) {
    zero_rows(c, rows, hd, cs);
    return;
  }
  if (m > 0) gemm(false, false, rows, hd, m, alpha, p, ld, mem, ks, T(0), c, cs);
  if (nk > 0) gemm(false, false, rows, hd, nk, alpha, p + m, ld, real, ks, m > 0 ? T(1) : T(0), c, cs);
}

// Mem [m, hd] += alpha P[:, :m]^T X, Real [nk, hd] += alpha P[:, m:m+nk]^T X; X [rows, hd] with row stride xs.
template <typename T>
inline void tile_t_times(T* mem, T* real, int64_t ks, const T* p, int64_t ld, const T* x, int64_t xs, int64_t rows,
                         int64_t m, int64_t nk, int64_t hd, T alpha) {
  if (m > 0) gemm(true, false, m, hd, rows, alpha, p, ld, x, xs, T(1), mem, ks);
  if (nk > 0) gemm(true, false, nk, hd, rows, alpha, p + m, ld, x, xs, T(1), real, ks);
}

// A query tile: positions [i0, i0 + np) of batch b, every query head of KV group g, stacked into
// rows r = p * rep + hr (p = position - i0, hr = head within the group). For one position the group's
// rep heads are adjacent in q/out/dq/dout (rep * hd contiguous values), so gathering and scattering a
// tile is np contiguous copies.
struct Tile {
  int64_t b, g, i0, np, rows, nk, ncols;
};

inline Tile make_tile(const AttentionDims& d, int64_t b, int64_t g, int64_t t, int64_t tile_pos, bool causal) {
  const int64_t rep = d.heads / d.groups, i0 = t * tile_pos, np = std::min(tile_pos, d.tq - i0);
  const int64_t nk = visible_keys(d, i0 + np - 1, causal);
  return {b, g, i0, np, np * rep, nk, d.mem + nk};
}

// Row (b, i0 + p, first head of group g) of q/out/dq/dout viewed as [B * Tq * H, hd]: its index in lse,
// and its offset in elements.
inline int64_t row_index(const AttentionDims& d, const Tile& t, int64_t p) {
  return (t.b * d.tq + t.i0 + p) * d.heads + t.g * (d.heads / d.groups);
}
inline int64_t row_offset(const AttentionDims& d, const Tile& t, int64_t p) { return row_index(d, t, p) * d.head_dim; }

template <typename T>
void gather_tile(T* buf, const T* src, const AttentionDims& d, const Tile& t) {
  const int64_t w = (d.heads / d.groups) * d.head_dim;
  for (int64_t p = 0; p < t.np; ++p) std::copy_n(src + row_offset(d, t, p), w, buf + p * w);
}

// Visible key count (memory slots included) of every row of the tile.
inline void tile_visible(int64_t* n, const AttentionDims& d, const Tile& t, bool causal) {
  const int64_t rep = d.heads / d.groups;
  for (int64_t p = 0; p < t.np; ++p) std::fill_n(n + p * rep, rep, d.mem + visible_keys(d, t.i0 + p, causal));
}

// Pointers to group g's first memory / real key row (rows of stride G*hd).
template <typename T>  // T may be const
inline T* mem_row0(T* mem, const AttentionDims& d, int64_t b, int64_t g) {
  return d.mem > 0 ? mem + (b * d.mem * d.groups + g) * d.head_dim : nullptr;
}
inline int64_t real_row0(const AttentionDims& d, int64_t b, int64_t g) {
  return (b * d.tk * d.groups + g) * d.head_dim;
}

// Adds log g to the m memory columns of every row of a score tile (g = 0: -inf, the slots are masked).
template <typename T>
inline void gate_memory_columns(T* s, int64_t ld, int64_t rows, int64_t m, T gate) {
  const T lg = std::log(gate);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < m; ++j) s[r * ld + j] += lg;
}

// The gate's gradient from one backward tile, before gating: sum over rows and memory columns of
// e^{s - lse} (dp - D), the ungated probabilities; rows with lse = -inf saw nothing and add nothing.
template <typename T>
inline T gate_grad_tile(const T* s, const T* dp, int64_t ld, int64_t rows, int64_t m, const T* lse, const T* dsums) {
  T acc = T(0);
  for (int64_t r = 0; r < rows; ++r) {
    if (lse[r] == -INFINITY) continue;
    for (int64_t j = 0; j < m; ++j) acc += std::exp(s[r * ld + j] - lse[r]) * (dp[r * ld + j] - dsums[r]);
  }
  return acc;
}

// Query positions per tile: about kTileRows stacked rows (at least one position).
template <typename T>
int64_t tile_positions(const AttentionDims& d) {
  const int64_t rep = d.heads / d.groups;
  return std::max<int64_t>(1, tile_rows<T>(d.mem + d.tk) / rep);
}

}  // namespace

template <typename T>
void attention(const T* q, const T* k, const T* v, const T* mem_k, const T* mem_v, const T* mem_gate, T* out, T* lse,
               const AttentionDims& d, T scale, bool causal) {
  const int64_t hd = d.head_dim, rep = d.heads / d.groups, m = d.mem, ks = d.groups * hd;
  const int64_t ld = padded(std::max<int64_t>(m + d.tk, 1)), tile_pos = tile_positions<T>(d), max_rows = tile_pos * rep;
  const int64_t ntiles = (d.tq + tile_pos - 1) / tile_pos;
  const int64_t work = d.batch * d.tq * d.heads * (m + d.tk) * hd;
#pragma omp parallel if (work >= kParallelMin)
  {
    std::vector<T> s(static_cast<size_t>(max_rows * ld)), qb(static_cast<size_t>(max_rows * hd)),
        ob(static_cast<size_t>(max_rows * hd)), inv(static_cast<size_t>(max_rows)), lb(static_cast<size_t>(max_rows));
    std::vector<int64_t> nvis(static_cast<size_t>(max_rows));
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int64_t b = 0; b < d.batch; ++b) {
      for (int64_t g = 0; g < d.groups; ++g) {
        for (int64_t ti = 0; ti < ntiles; ++ti) {
          const Tile t = make_tile(d, b, g, ti, tile_pos, causal);
          const T *km = mem_row0(mem_k, d, b, g), *vm = mem_row0(mem_v, d, b, g);
          const T *kr = k + real_row0(d, b, g), *vr = v + real_row0(d, b, g);
          gather_tile(qb.data(), q, d, t);
          tile_scores(s.data(), ld, qb.data(), hd, km, kr, ks, t.rows, m, t.nk, hd, scale);
          if (mem_gate && m > 0) gate_memory_columns(s.data(), ld, t.rows, m, mem_gate[b * d.groups + g]);
          tile_visible(nvis.data(), d, t, causal);
          softmax_tile(s.data(), ld, t.rows, t.ncols, nvis.data(), inv.data(), lb.data());
          tile_times_kv(ob.data(), hd, s.data(), ld, vm, vr, ks, t.rows, m, t.nk, hd, T(1));
          for (int64_t p = 0; p < t.np; ++p) {
            const int64_t row = row_index(d, t, p);
            for (int64_t hr = 0; hr < rep; ++hr) {
              const int64_t r = p * rep + hr;
              const T f = inv[r];
              const T* src = ob.data() + r * hd;
              T* dst = out + (row + hr) * hd;
#pragma omp simd
              for (int64_t c = 0; c < hd; ++c) dst[c] = src[c] * f;
              lse[row + hr] = lb[r];
            }
          }
        }
      }
    }
  }
}

template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* mem_k, const T* mem_v,
                        const T* mem_gate, const T* out, const T* lse, T* dq, T* dk, T* dv, T* dmem_k, T* dmem_v,
                        T* dmem_gate, const AttentionDims& d, T scale, bool causal) {
  const int64_t hd = d.head_dim, rep = d.heads / d.groups, m = d.mem, ks = d.groups * hd;
  const int64_t ld = padded(std::max<int64_t>(m + d.tk, 1)), tile_pos = tile_positions<T>(d), max_rows = tile_pos * rep;
  const int64_t ntiles = (d.tq + tile_pos - 1) / tile_pos;
  const int64_t work = d.batch * d.tq * d.heads * (m + d.tk) * hd;
#pragma omp parallel if (work >= kParallelMin)
  {
    std::vector<T> s(static_cast<size_t>(max_rows * ld)), dp(static_cast<size_t>(max_rows * ld)),
        qb(static_cast<size_t>(max_rows * hd)), dob(static_cast<size_t>(max_rows * hd)),
        dqb(static_cast<size_t>(max_rows * hd)), lb(static_cast<size_t>(max_rows)), db(static_cast<size_t>(max_rows));
    std::vector<int64_t> nvis(static_cast<size_t>(max_rows));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < d.batch; ++b) {
      for (int64_t g = 0; g < d.groups; ++g) {
        const T *km = mem_row0(mem_k, d, b, g), *vm = mem_row0(mem_v, d, b, g);
        T *dkm = mem_row0(dmem_k, d, b, g), *dvm = mem_row0(dmem_v, d, b, g);
        const T *kr = k + real_row0(d, b, g), *vr = v + real_row0(d, b, g);
        T *dkr = dk + real_row0(d, b, g), *dvr = dv + real_row0(d, b, g);
        zero_rows(dkr, d.tk, hd, ks);
        zero_rows(dvr, d.tk, hd, ks);
        if (m > 0) {
          zero_rows(dkm, m, hd, ks);
          zero_rows(dvm, m, hd, ks);
        }
        T dgate = T(0);
        for (int64_t ti = 0; ti < ntiles; ++ti) {
          const Tile t = make_tile(d, b, g, ti, tile_pos, causal);
          gather_tile(qb.data(), q, d, t);
          gather_tile(dob.data(), dout, d, t);
          for (int64_t p = 0; p < t.np; ++p) {
            const int64_t row = row_index(d, t, p);
            for (int64_t hr = 0; hr < rep; ++hr) {
              lb[p * rep + hr] = lse[row + hr];
              db[p * rep + hr] = dot_row(dout + (row + hr) * hd, out + (row + hr) * hd, hd);
            }
          }
          tile_scores(s.data(), ld, qb.data(), hd, km, kr, ks, t.rows, m, t.nk, hd, scale);
          tile_scores(dp.data(), ld, dob.data(), hd, vm, vr, ks, t.rows, m, t.nk, hd, T(1));
          if (mem_gate && m > 0) {
            dgate += gate_grad_tile(s.data(), dp.data(), ld, t.rows, m, lb.data(), db.data());
            gate_memory_columns(s.data(), ld, t.rows, m, mem_gate[b * d.groups + g]);
          }
          tile_visible(nvis.data(), d, t, causal);
          grad_tile(s.data(), dp.data(), ld, t.rows, t.ncols, nvis.data(), lb.data(), db.data());
          tile_t_times(dvm, dvr, ks, s.data(), ld, dob.data(), hd, t.rows, m, t.nk, hd, T(1));
          tile_t_times(dkm, dkr, ks, dp.data(), ld, qb.data(), hd, t.rows, m, t.nk, hd, scale);
          tile_times_kv(dqb.data(), hd, dp.data(), ld, km, kr, ks, t.rows, m, t.nk, hd, scale);
          for (int64_t p = 0; p < t.np; ++p) std::copy_n(dqb.data() + p * rep * hd, rep * hd, dq + row_offset(d, t, p));
        }
        if (mem_gate && dmem_gate) dmem_gate[b * d.groups + g] = dgate;
      }
    }
  }
}

#undef KOFF_INLINE

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

namespace {
AttentionDims attention_dims(const Tensor& q, const Tensor& k, const Tensor& mem_k) {
  return {q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), mem_k.defined() ? mem_k.size(1) : 0, q.size(3)};
}
}  // namespace

void fill_attention(Backend& table) {
  table.attention = [](const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                       const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) {
    const cpu::AttentionDims dims = attention_dims(q, k, mem_k);
    on_float(q, "attention", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention<T>(ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(mem_k), ptr<T>(mem_v), ptr<T>(mem_gate), mut<T>(out),
                        mut<T>(lse), dims, static_cast<T>(scale), causal);
    });
  };
  table.attention_backward = [](const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& mem_k, const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out,
                                const Tensor& lse, double scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv,
                                Tensor& dmem_k, Tensor& dmem_v, Tensor& dmem_gate) {
    const cpu::AttentionDims dims = attention_dims(q, k, mem_k);
    on_float(q, "attention_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_backward<T>(ptr<T>(dout), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(mem_k), ptr<T>(mem_v),
                                 ptr<T>(mem_gate), ptr<T>(out), ptr<T>(lse), mut<T>(dq), mut<T>(dk), mut<T>(dv),
                                 mut<T>(dmem_k), mut<T>(dmem_v), mut<T>(dmem_gate), dims, static_cast<T>(scale),
                                 causal);
    });
  };
}

}  // namespace koff::cpu
