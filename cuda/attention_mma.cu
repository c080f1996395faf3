// Fused attention on tensor cores (WMMA, bf16 16x16x16 fragments, f32 accumulators): the bf16 path of
// attention_forward / attention_backward for head_dim 64 and 128. Same math, layouts, GQA, causal
// rule, memory slots and lse as the SIMT kernels (cuda/attention.cu's header, engine/cpu/attention.h):
//   q/out/dq/dout [B, Tq, H, hd], k/v/dk/dv [B, Tk, G, hd], mem_*/dmem_* [B, m, G, hd], lse [B, Tq, H] f32;
//   query (b, i, h) of KV head g = h / (H/G) sees keys kk in [0, m + n_i), kk < m being memory slot kk and
//   kk >= m real key kk - m, with n_i = clamp(i + Tk - Tq + 1, 0, Tk) when causal, Tk otherwise.
//   A row that sees no key gets out = 0, lse = -inf and no gradient.
// Which path a call takes: cuda/attention.cu's entries ask attention_use_mma() (cuda/attention.h). The
// environment variable KOFF_CUDA_ATTENTION=simt forces the SIMT kernels, =mma (or auto, or unset) takes
// these where they apply: bf16, head_dim 64 or 128, at most 64 query heads per KV head, 16-byte aligned
// tensors.
//
// Tiles: a block is 4 warps. Its 64 "rows" are consecutive (position, head-of-group) pairs of one
// (b, g) -- so a K/V tile in shared memory serves every query head of the group -- 16 rows per warp;
// keys come in tiles of 64. A warp's score tile is 16 x 64. Everything in shared memory is row-major
// with padded strides (bf16 tiles HD + 8, scores 64 + 8) against bank conflicts; WMMA wants ldm a
// multiple of 8 (bf16) / 4 (f32) elements and 32-byte aligned pointers, which every fragment
// pointer here is (16-row and 16-column offsets of 128-byte aligned regions). Global loads are 16-byte
// cp.async (__pipeline_memcpy_async) with zero fill past the tensors, so padded rows/keys are zeros.
//
// The WMMA fragment layouts are opaque. Where an accumulator needs per-row or per-column data, the
// element coordinates are read back once (accumulator_coords: load a 16x16 tile holding 16 r + c, and
// x[i] names the element (r, c) that lane's x[i] holds -- the same mapping every accumulator uses).
//
// Forward (attention_mma_fwd_kernel), per 64-key tile (double-buffered, the next tile's cp.async in
// flight while this one is computed), FlashAttention-2 order:
//   S = Q K^T (Q fragments kept in registers)      -> f32 to the warp's shared score tile
//   lanes 2r, 2r+1 own row r: mask (kk < m + n_i), running max m_r (log2 domain), corr = 2^(m_old - m_new),
//   p = 2^(s - m_new) written as bf16 P, l_r = corr l_r + sum p
//   O = corr O (per row, via the coordinates), O += P V     (O accumulators stay in fragments)
// then out = O / l (0 for a row with l = 0) and lse = ln 2 (m + log2 l). Causal blocks stop at the last
// key their last row sees; the grid runs the heaviest (latest) query tiles first.
//
// Backward recomputes p = 2^(s scale log2 e - lse log2 e) and uses D = dout . out (attention_mma_dsum_kernel):
//   dq kernel (query tiles, like the forward): S = Q K^T and dP = dO V^T in fragments, elementwise in
//     registers via the coordinates dS = P (dP - D) -> bf16 tile, dQ += dS K; dq = scale dQ.
//   dkv kernel (a block owns 64 keys, 16 per warp, and walks the query rows that can see them, 64 at a
//     time): S^T = K Q^T -> P^T as a bf16 tile, then dP^T = V dO^T -> dS^T = P^T (dP^T - D) as a bf16 tile
//     (P^T read back, so one set of score fragments is live), dV += P^T dO, dK += dS^T Q; dk = scale dK.
// Each output element has exactly one writer: no atomics, deterministic.
//
// Shared memory per block (bytes; T = one 64-row bf16 tile, 64 (HD + 8) 2 = 17408 at HD 128, 9216 at 64):
//   forward  5 T (Q, K and V double-buffered) + 4 x 7040 (score tile, P tile, row factors) = 115200 / 74240
//   dq       6 T (Q, dO, K and V double-buffered) + 768 (row lse, D, visible) + 4 x 2304 (dS) = 114432 / 65280
//   dkv      4 T (K, V, Q tile, dO tile) + 768 (per query: lse, D, visible) + 4 x 4608 (P^T, dS^T) = 88832 / 56064
// above 48 KiB, hence cudaFuncSetAttribute; two blocks fit on an SM (228 KiB, 1 KiB reserved per block) in
// every kernel. Registers (ptxas, sm_90a, HD 128 / 64), no spills: fwd 192 / 147, dq 225 / 213, dkv 241 / 178.
#include <cuda_pipeline.h>
#include <mma.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda/attention.h"
#include "cuda/common.cuh"

namespace koff::cuda {

namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kTile = 64;       // rows (queries) per block in fwd/dq, keys per block in dkv, keys/queries per step
constexpr int kLS = kTile + 8;  // f32 score tile stride (floats)
constexpr int kLP = kTile + 8;  // bf16 P / dS tile stride (elements)
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16_t, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16_t, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16_t, wmma::col_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
constexpr int kAccElems = FragAcc::num_elements;

struct MmaArgs {
  const bf16_t *q, *k, *v, *mk, *mv, *dout;
  bf16_t *o, *dq, *dk, *dv, *dmk, *dmv;
  const float* lse;
  float* lse_out;
  const float* dsum;
  int64_t Tq, Tk, H, G;
  int M, rep, ppb;  // memory slots, query heads per KV head, query positions per block (fwd/dq)
  float scale, scale_log2;
  bool causal;
};

// Row (bf16 elements) stride of a Q/K/V/dO tile in shared memory, and the bytes of one 64-row tile.
template <int HD>
constexpr int tile_ld() {
  return HD + 8;
}
template <int HD>
constexpr int tile_bytes() {
  return kTile * tile_ld<HD>() * 2;
}
constexpr int kScoreBytes = 16 * kLS * 4, kPBytes = 16 * kLP * 2, kRowBytes = 3 * kTile * 4;
constexpr int kFwdWarpBytes = kScoreBytes + kPBytes + 128;  // + 16 row factors, padded to 128 bytes
static_assert(kScoreBytes % 128 == 0 && kPBytes % 128 == 0 && kRowBytes % 128 == 0, "regions stay 128-aligned");
static_assert(tile_bytes<64>() % 128 == 0 && tile_bytes<128>() % 128 == 0, "regions stay 128-aligned");

template <int HD>
constexpr size_t fwd_smem() {
  return size_t(5 * tile_bytes<HD>() + kWarps * kFwdWarpBytes);
}
template <int HD>
constexpr size_t dq_smem() {
  return size_t(6 * tile_bytes<HD>() + kRowBytes + kWarps * kPBytes);
}
template <int HD>
constexpr size_t dkv_smem() {
  return size_t(4 * tile_bytes<HD>() + kRowBytes + kWarps * 2 * kPBytes);
}
// The output staging (a warp's 16 x HD f32 accumulators, stride HD + 4) reuses two tiles' worth of memory.
static_assert(kWarps * 16 * (128 + 4) * 4 <= 2 * tile_bytes<128>(), "staging fits in two tiles");
static_assert(kWarps * 16 * (64 + 4) * 4 <= 2 * tile_bytes<64>(), "staging fits in two tiles");
// Two blocks per SM on sm_90: 228 KiB of shared memory, 1 KiB of it reserved per block.
static_assert(2 * (fwd_smem<128>() + 1024) <= 233472 && 2 * (dq_smem<128>() + 1024) <= 233472 &&
                  2 * (dkv_smem<128>() + 1024) <= 233472,
              "two blocks per SM");

// wmma::load_matrix_sync on bf16 compiles to generic loads (CUDA 13: four LD.E per fragment, the shared
// state space is not inferred); the same wmma.load PTX with .shared becomes one LDSM. The fragment
// layout stays WMMA's own. Operands are in shared memory, 32-byte aligned, ldm a multiple of 8.
static_assert(sizeof(FragA) == 16 && sizeof(FragBRow) == 16 && sizeof(FragBCol) == 16, "4 registers a fragment");
__device__ __forceinline__ void load_shared(FragA& f, const bf16_t* p, unsigned ldm) {
#ifdef __CUDA_ARCH__
  uint32_t* r = reinterpret_cast<uint32_t*>(&f);
  asm volatile("wmma.load.a.sync.aligned.row.m16n16k16.shared.bf16 {%0, %1, %2, %3}, [%4], %5;"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<unsigned>(__cvta_generic_to_shared(p))), "r"(ldm));
#else
  wmma::load_matrix_sync(f, p, ldm);
#endif
}
__device__ __forceinline__ void load_shared(FragBRow& f, const bf16_t* p, unsigned ldm) {
#ifdef __CUDA_ARCH__
  uint32_t* r = reinterpret_cast<uint32_t*>(&f);
  asm volatile("wmma.load.b.sync.aligned.row.m16n16k16.shared.bf16 {%0, %1, %2, %3}, [%4], %5;"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<unsigned>(__cvta_generic_to_shared(p))), "r"(ldm));
#else
  wmma::load_matrix_sync(f, p, ldm);
#endif
}
__device__ __forceinline__ void load_shared(FragBCol& f, const bf16_t* p, unsigned ldm) {
#ifdef __CUDA_ARCH__
  uint32_t* r = reinterpret_cast<uint32_t*>(&f);
  asm volatile("wmma.load.b.sync.aligned.col.m16n16k16.shared.bf16 {%0, %1, %2, %3}, [%4], %5;"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<unsigned>(__cvta_generic_to_shared(p))), "r"(ldm));
#else
  wmma::load_matrix_sync(f, p, ldm);
#endif
}

__device__ __forceinline__ unsigned char* shared_bytes() {
  extern __shared__ __align__(128) unsigned char smem[];
  return smem;
}

__device__ __forceinline__ int64_t visible(const MmaArgs& a, int64_t i) {
  if (!a.causal) return a.Tk;
  const int64_t n = i + a.Tk - a.Tq + 1;
  return n < 0 ? 0 : (n > a.Tk ? a.Tk : n);
}

// Offset (elements) of query-side row rr (= position * rep + head-in-group) of (b, g) in q/out/dout/dq.
__device__ __forceinline__ int64_t query_row(const MmaArgs& a, int64_t b, int64_t g, int rr) {
  return (b * a.Tq + rr / a.rep) * a.H + g * a.rep + rr % a.rep;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}

// Element coordinates of this lane's accumulator fragment: coord[i] = 16 r + c for element x[i].
// `scratch`: 256 floats, warp-private, 32-byte aligned.
__device__ __forceinline__ void accumulator_coords(float* scratch, int (&coord)[kAccElems]) {
  const int lane = threadIdx.x & 31;
  for (int e = lane; e < 256; e += 32) scratch[e] = float(e);
  __syncwarp();
  FragAcc f;
  wmma::load_matrix_sync(f, scratch, 16, wmma::mem_row_major);
#pragma unroll
  for (int i = 0; i < kAccElems; ++i) coord[i] = int(f.x[i]);
  __syncwarp();  // the scratch is reused
}

// Rows [rr0, rr0 + 64) of a query-side tensor x of (b, g) into dst (stride tile_ld), zeros from row rr_end on.
template <int HD>
__device__ __forceinline__ void load_query_tile(const MmaArgs& a, const bf16_t* x, int64_t b, int64_t g, int rr0,
                                                int rr_end, bf16_t* dst) {
  constexpr int LD = tile_ld<HD>(), CH = HD / 8;
  const bf16_t* first = x + query_row(a, b, g, rr0) * HD;  // rr0 < rr_end: a valid address for the zero fill
  for (int idx = threadIdx.x; idx < kTile * CH; idx += kThreads) {
    const int r = idx / CH, c = (idx % CH) * 8, rr = rr0 + r;
    const bool ok = rr < rr_end;
    const bf16_t* src = ok ? x + query_row(a, b, g, rr) * HD + c : first;
    __pipeline_memcpy_async(dst + r * LD + c, src, 16, ok ? 0 : 16);
  }
}

// Keys [kk0, kk0 + 64) of (b, g) from real/mem into dst (stride tile_ld), zeros from key kk_end on.
template <int HD>
__device__ __forceinline__ void load_key_tile(const MmaArgs& a, const bf16_t* real, const bf16_t* mem, int64_t b,
                                              int64_t g, int kk0, int kk_end, bf16_t* dst) {
  constexpr int LD = tile_ld<HD>(), CH = HD / 8;
  auto row = [&](int kk) {
    return kk < a.M ? mem + ((b * a.M + kk) * a.G + g) * HD : real + ((b * a.Tk + (kk - a.M)) * a.G + g) * HD;
  };
  const bf16_t* first = row(kk0);  // kk0 < kk_end
  for (int idx = threadIdx.x; idx < kTile * CH; idx += kThreads) {
    const int j = idx / CH, c = (idx % CH) * 8, kk = kk0 + j;
    const bool ok = kk < kk_end;
    __pipeline_memcpy_async(dst + j * LD + c, ok ? row(kk) + c : first, 16, ok ? 0 : 16);
  }
}

// Writes a warp's 16 x HD f32 tile (staged in shared memory, stride HD + 4) times `mul` as bf16 rows of
// `dst`: row r goes to dst + row_offset(r) * HD, rows with row_offset(r) < 0 are skipped.
template <int HD, typename RowOffset>
__device__ __forceinline__ void write_rows(const float* stage, float mul, const float* row_mul, RowOffset row_offset,
                                           bf16_t* dst) {
  constexpr int CH = HD / 8;
  const int lane = threadIdx.x & 31;
  for (int idx = lane; idx < 16 * CH; idx += 32) {
    const int r = idx / CH, c = (idx % CH) * 8;
    const int64_t off = row_offset(r);
    if (off < 0) continue;
    const float f = row_mul ? mul * row_mul[r] : mul;
    const float4 x0 = *reinterpret_cast<const float4*>(stage + r * (HD + 4) + c);
    const float4 x1 = *reinterpret_cast<const float4*>(stage + r * (HD + 4) + c + 4);
    uint4 u;
    u.x = pack_bf16x2(x0.x * f, x0.y * f);
    u.y = pack_bf16x2(x0.z * f, x0.w * f);
    u.z = pack_bf16x2(x1.x * f, x1.y * f);
    u.w = pack_bf16x2(x1.z * f, x1.w * f);
    *reinterpret_cast<uint4*>(dst + off * HD + c) = u;
  }
}

template <int HD>
__global__ void __launch_bounds__(kThreads, 2) attention_mma_fwd_kernel(MmaArgs a) {
  constexpr int LD = tile_ld<HD>(), NF = HD / 16;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  unsigned char* smem = shared_bytes();
  bf16_t* sQ = reinterpret_cast<bf16_t*>(smem);  // [64][LD]
  bf16_t* sK = sQ + kTile * LD;                  // [2][64][LD]
  bf16_t* sV = sK + 2 * kTile * LD;              // [2][64][LD]
  unsigned char* mine = smem + 5 * tile_bytes<HD>() + warp * kFwdWarpBytes;
  float* sS = reinterpret_cast<float*>(mine);                            // [16][kLS] scores
  bf16_t* sP = reinterpret_cast<bf16_t*>(mine + kScoreBytes);            // [16][kLP] probabilities
  float* sRow = reinterpret_cast<float*>(mine + kScoreBytes + kPBytes);  // [16] per-row factor

  const int64_t b = blockIdx.z, g = blockIdx.y;
  const int64_t i0 = int64_t(gridDim.x - 1 - blockIdx.x) * a.ppb;  // heaviest (latest) tiles first
  const int npos = int(a.Tq - i0 < a.ppb ? a.Tq - i0 : a.ppb);
  const int rr0 = int(i0) * a.rep, rows_used = npos * a.rep;
  const int nkeys = a.M + int(visible(a, i0 + npos - 1));
  const int ntiles = (nkeys + kTile - 1) / kTile;

  load_query_tile<HD>(a, a.q, b, g, rr0, rr0 + rows_used, sQ);
  __pipeline_commit();
  if (ntiles > 0) {
    load_key_tile<HD>(a, a.k, a.mk, b, g, 0, nkeys, sK);
    load_key_tile<HD>(a, a.v, a.mv, b, g, 0, nkeys, sV);
  }
  __pipeline_commit();

  int coord[kAccElems];
  accumulator_coords(sS, coord);
  // Softmax ownership: lanes 2r and 2r+1 hold row r of the warp (columns 8j + 4h .. + 3, h = lane & 1).
  const int my_r = lane >> 1, my_h = lane & 1, my_row = warp * 16 + my_r;
  const int my_nvis = my_row < rows_used ? a.M + int(visible(a, i0 + my_row / a.rep)) : 0;
  float m_run = -INFINITY, l_run = 0.0f;

  __pipeline_wait_prior(1);  // Q (the key tile may still be in flight)
  __syncthreads();
  FragA qf[NF];
#pragma unroll
  for (int kd = 0; kd < NF; ++kd) load_shared(qf[kd], sQ + warp * 16 * LD + kd * 16, LD);
  FragAcc o[NF];
#pragma unroll
  for (int n = 0; n < NF; ++n) wmma::fill_fragment(o[n], 0.0f);

  for (int t = 0; t < ntiles; ++t) {
    __pipeline_wait_prior(0);  // tile t landed (this thread's copies) ...
    __syncthreads();           // ... everyone's; and everyone is done with tile t - 1, whose buffer we refill
    if (t + 1 < ntiles) {
      const int nb = (t + 1) & 1;
      load_key_tile<HD>(a, a.k, a.mk, b, g, (t + 1) * kTile, nkeys, sK + nb * kTile * LD);
      load_key_tile<HD>(a, a.v, a.mv, b, g, (t + 1) * kTile, nkeys, sV + nb * kTile * LD);
    }
    __pipeline_commit();
    const bf16_t* cK = sK + (t & 1) * kTile * LD;
    const bf16_t* cV = sV + (t & 1) * kTile * LD;
    const int kk0 = t * kTile;

    FragAcc s[4];
#pragma unroll
    for (int n = 0; n < 4; ++n) wmma::fill_fragment(s[n], 0.0f);
#pragma unroll
    for (int kd = 0; kd < NF; ++kd) {
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        FragBCol kb;  // K^T: element (d, key) at cK[key * LD + d]
        load_shared(kb, cK + n * 16 * LD + kd * 16, LD);
        wmma::mma_sync(s[n], qf[kd], kb, s[n]);
      }
    }
#pragma unroll
    for (int n = 0; n < 4; ++n) wmma::store_matrix_sync(sS + n * 16, s[n], kLS, wmma::mem_row_major);
    __syncwarp();

    // Online softmax of row my_r over the tile's 64 keys (32 per lane), scores in the log2 domain.
    const float* srow = sS + my_r * kLS + 4 * my_h;
    float x[32];
    float tmax = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float4 f = *reinterpret_cast<const float4*>(srow + 8 * j);
      const int kk = kk0 + 8 * j + 4 * my_h;
      x[4 * j + 0] = kk + 0 < my_nvis ? f.x * a.scale_log2 : -INFINITY;
      x[4 * j + 1] = kk + 1 < my_nvis ? f.y * a.scale_log2 : -INFINITY;
      x[4 * j + 2] = kk + 2 < my_nvis ? f.z * a.scale_log2 : -INFINITY;
      x[4 * j + 3] = kk + 3 < my_nvis ? f.w * a.scale_log2 : -INFINITY;
      tmax = fmaxf(tmax, fmaxf(fmaxf(x[4 * j], x[4 * j + 1]), fmaxf(x[4 * j + 2], x[4 * j + 3])));
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float m_new = fmaxf(m_run, tmax);
    const float corr = m_run == -INFINITY ? 0.0f : exp2f(m_run - m_new);  // m_run finite => m_new finite
    float psum = 0.0f;
    bf16_t* prow = sP + my_r * kLP + 4 * my_h;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        p[e] = m_new == -INFINITY ? 0.0f : exp2f(x[4 * j + e] - m_new);  // masked: exp2(-inf) = 0
        psum += p[e];
      }
      *reinterpret_cast<uint2*>(prow + 8 * j) = make_uint2(pack_bf16x2(p[0], p[1]), pack_bf16x2(p[2], p[3]));
    }
    l_run = l_run * corr + psum;  // this lane's half of the row; the halves are added at the end
    m_run = m_new;
    if (my_h == 0) sRow[my_r] = corr;
    __syncwarp();

    float c[kAccElems];
#pragma unroll
    for (int i = 0; i < kAccElems; ++i) c[i] = sRow[coord[i] >> 4];
#pragma unroll
    for (int n = 0; n < NF; ++n)
#pragma unroll
      for (int i = 0; i < kAccElems; ++i) o[n].x[i] *= c[i];
#pragma unroll 1  // fully unrolled, ptxas hoists V fragments and spills at HD 128
    for (int kk = 0; kk < 4; ++kk) {
      FragA pa;
      load_shared(pa, sP + kk * 16, kLP);
#pragma unroll
      for (int n = 0; n < NF; ++n) {
        FragBRow vb;
        load_shared(vb, cV + kk * 16 * LD + n * 16, LD);
        wmma::mma_sync(o[n], pa, vb, o[n]);
      }
    }
  }
  __pipeline_wait_prior(0);
  __syncthreads();  // every warp is done with sK/sV: they become the output staging

  const float l = l_run + __shfl_xor_sync(0xffffffffu, l_run, 1);
  const bool empty = m_run == -INFINITY || !(l > 0.0f);
  if (my_h == 0) {
    sRow[my_r] = empty ? 0.0f : 1.0f / l;
    if (my_row < rows_used) a.lse_out[query_row(a, b, g, rr0 + my_row)] = empty ? -INFINITY : (m_run + log2f(l)) * kLn2;
  }
  float* stage = reinterpret_cast<float*>(sK) + warp * 16 * (HD + 4);
#pragma unroll
  for (int n = 0; n < NF; ++n) wmma::store_matrix_sync(stage + n * 16, o[n], HD + 4, wmma::mem_row_major);
  __syncwarp();
  write_rows<HD>(
      stage, 1.0f, sRow,
      [&](int r) {
        const int row = warp * 16 + r;
        return row < rows_used ? query_row(a, b, g, rr0 + row) : int64_t(-1);
      },
      a.o);
}

// D = dout . out per (b, i, h) row, one warp per row.
__global__ void __launch_bounds__(256)
    attention_mma_dsum_kernel(const bf16_t* dout, const bf16_t* out, float* dsum, int64_t rows, int hd) {
  const int64_t row = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  float s = 0.0f;
  for (int c = lane * 8; c < hd; c += 256) {
    const uint4 x = *reinterpret_cast<const uint4*>(dout + row * hd + c);
    const uint4 y = *reinterpret_cast<const uint4*>(out + row * hd + c);
    const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      __nv_bfloat162 xh, yh;
      memcpy(&xh, &xs[e], 4);
      memcpy(&yh, &ys[e], 4);
      const float2 xf = __bfloat1622float2(xh), yf = __bfloat1622float2(yh);
      s += xf.x * yf.x + xf.y * yf.y;
    }
  }
  s = warp_sum(s);
  if (lane == 0) dsum[row] = s;
}

template <int HD>
__global__ void __launch_bounds__(kThreads, 2) attention_mma_dq_kernel(MmaArgs a) {
  constexpr int LD = tile_ld<HD>(), NF = HD / 16;
  const int warp = threadIdx.x >> 5;
  unsigned char* smem = shared_bytes();
  bf16_t* sQ = reinterpret_cast<bf16_t*>(smem);                         // [64][LD]
  bf16_t* sO = sQ + kTile * LD;                                         // [64][LD] dout
  bf16_t* sK = sO + kTile * LD;                                         // [2][64][LD]
  bf16_t* sV = sK + 2 * kTile * LD;                                     // [2][64][LD]
  float* sLse = reinterpret_cast<float*>(smem + 6 * tile_bytes<HD>());  // [64] lse log2 e
  float* sD = sLse + kTile;                                             // [64] D
  int* sN = reinterpret_cast<int*>(sD + kTile);                         // [64] visible keys (0: none)
  bf16_t* sDS = reinterpret_cast<bf16_t*>(smem + 6 * tile_bytes<HD>() + kRowBytes + warp * kPBytes);  // [16][kLP]

  const int64_t b = blockIdx.z, g = blockIdx.y;
  const int64_t i0 = int64_t(gridDim.x - 1 - blockIdx.x) * a.ppb;
  const int npos = int(a.Tq - i0 < a.ppb ? a.Tq - i0 : a.ppb);
  const int rr0 = int(i0) * a.rep, rows_used = npos * a.rep;
  const int nkeys = a.M + int(visible(a, i0 + npos - 1));
  const int ntiles = (nkeys + kTile - 1) / kTile;

  load_query_tile<HD>(a, a.q, b, g, rr0, rr0 + rows_used, sQ);
  load_query_tile<HD>(a, a.dout, b, g, rr0, rr0 + rows_used, sO);
  if (threadIdx.x < kTile) {
    const int r = threadIdx.x;
    float lse = -INFINITY, d = 0.0f;
    int n = 0;
    if (r < rows_used) {
      const int64_t row = query_row(a, b, g, rr0 + r);
      lse = a.lse[row];
      d = a.dsum[row];
      n = lse == -INFINITY ? 0 : a.M + int(visible(a, i0 + r / a.rep));
    }
    sLse[r] = n > 0 ? lse * kLog2e : 0.0f;
    sD[r] = d;
    sN[r] = n;
  }
  __pipeline_commit();
  if (ntiles > 0) {
    load_key_tile<HD>(a, a.k, a.mk, b, g, 0, nkeys, sK);
    load_key_tile<HD>(a, a.v, a.mv, b, g, 0, nkeys, sV);
  }
  __pipeline_commit();

  int coord[kAccElems];
  accumulator_coords(reinterpret_cast<float*>(sDS), coord);  // 1 KiB of the warp's 2.25 KiB dS tile
  __pipeline_wait_prior(1);
  __syncthreads();  // Q, dO and the row arrays
  float lse_i[kAccElems], d_i[kAccElems];
  int n_i[kAccElems];
#pragma unroll
  for (int i = 0; i < kAccElems; ++i) {
    const int r = warp * 16 + (coord[i] >> 4);
    lse_i[i] = sLse[r];
    d_i[i] = sD[r];
    n_i[i] = sN[r];
  }
  FragAcc dq[NF];
#pragma unroll
  for (int n = 0; n < NF; ++n) wmma::fill_fragment(dq[n], 0.0f);

  for (int t = 0; t < ntiles; ++t) {
    __pipeline_wait_prior(0);
    __syncthreads();  // tile t visible; tile t - 1 (its buffer and every warp's dS) consumed
    if (t + 1 < ntiles) {
      const int nb = (t + 1) & 1;
      load_key_tile<HD>(a, a.k, a.mk, b, g, (t + 1) * kTile, nkeys, sK + nb * kTile * LD);
      load_key_tile<HD>(a, a.v, a.mv, b, g, (t + 1) * kTile, nkeys, sV + nb * kTile * LD);
    }
    __pipeline_commit();
    const bf16_t* cK = sK + (t & 1) * kTile * LD;
    const bf16_t* cV = sV + (t & 1) * kTile * LD;
    const int kk0 = t * kTile;

    FragAcc s[4], dp[4];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      wmma::fill_fragment(s[n], 0.0f);
      wmma::fill_fragment(dp[n], 0.0f);
    }
#pragma unroll
    for (int kd = 0; kd < NF; ++kd) {
      FragA qa, oa;
      load_shared(qa, sQ + warp * 16 * LD + kd * 16, LD);
      load_shared(oa, sO + warp * 16 * LD + kd * 16, LD);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        FragBCol kb, vb;  // K^T and V^T
        load_shared(kb, cK + n * 16 * LD + kd * 16, LD);
        wmma::mma_sync(s[n], qa, kb, s[n]);
        load_shared(vb, cV + n * 16 * LD + kd * 16, LD);
        wmma::mma_sync(dp[n], oa, vb, dp[n]);
      }
    }
    // dS = P (dP - D), P = 2^(s scale log2 e - lse log2 e) on visible keys: elementwise via the coordinates.
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int i = 0; i < kAccElems; ++i) {
        const int col = n * 16 + (coord[i] & 15);
        const float p = kk0 + col < n_i[i] ? exp2f(s[n].x[i] * a.scale_log2 - lse_i[i]) : 0.0f;
        sDS[(coord[i] >> 4) * kLP + col] = __float2bfloat16(p * (dp[n].x[i] - d_i[i]));
      }
    __syncwarp();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      FragA da;
      load_shared(da, sDS + kk * 16, kLP);
#pragma unroll
      for (int n = 0; n < NF; ++n) {
        FragBRow kb;  // K: element (key, d) at cK[key * LD + d]
        load_shared(kb, cK + kk * 16 * LD + n * 16, LD);
        wmma::mma_sync(dq[n], da, kb, dq[n]);
      }
    }
  }
  __pipeline_wait_prior(0);
  __syncthreads();  // sK/sV become the staging

  float* stage = reinterpret_cast<float*>(sK) + warp * 16 * (HD + 4);
#pragma unroll
  for (int n = 0; n < NF; ++n) wmma::store_matrix_sync(stage + n * 16, dq[n], HD + 4, wmma::mem_row_major);
  __syncwarp();
  write_rows<HD>(
      stage, a.scale, nullptr,
      [&](int r) {
        const int row = warp * 16 + r;
        return row < rows_used ? query_row(a, b, g, rr0 + row) : int64_t(-1);
      },
      a.dq);
}

template <int HD>
__global__ void __launch_bounds__(kThreads, 2) attention_mma_dkv_kernel(MmaArgs a) {
  constexpr int LD = tile_ld<HD>(), NF = HD / 16;
  const int warp = threadIdx.x >> 5;
  unsigned char* smem = shared_bytes();
  bf16_t* sK = reinterpret_cast<bf16_t*>(smem);                         // [64][LD] this block's keys
  bf16_t* sV = sK + kTile * LD;                                         // [64][LD]
  bf16_t* sQ = sV + kTile * LD;                                         // [64][LD] query tile
  bf16_t* sO = sQ + kTile * LD;                                         // [64][LD] dout tile
  float* sLse = reinterpret_cast<float*>(smem + 4 * tile_bytes<HD>());  // [64] per query row of the tile
  float* sD = sLse + kTile;
  int* sN = reinterpret_cast<int*>(sD + kTile);
  unsigned char* mine = smem + 4 * tile_bytes<HD>() + kRowBytes + warp * 2 * kPBytes;
  bf16_t* sPt = reinterpret_cast<bf16_t*>(mine);             // [16 keys][kLP queries]
  bf16_t* sDSt = reinterpret_cast<bf16_t*>(mine + kPBytes);  // [16 keys][kLP queries]

  const int64_t b = blockIdx.z, g = blockIdx.y;
  const int nkeys = a.M + int(a.Tk);
  const int kk_first = int(blockIdx.x) * kTile;
  load_key_tile<HD>(a, a.k, a.mk, b, g, kk_first, nkeys, sK);
  load_key_tile<HD>(a, a.v, a.mv, b, g, kk_first, nkeys, sV);
  __pipeline_commit();

  // The first query position that sees any key of this block: 0 when it holds memory slots (or the
  // mask is off), else the first position whose causal window reaches real key kk_first - m.
  int64_t pos_begin = 0;
  if (a.causal && kk_first >= a.M) {
    const int64_t p = int64_t(kk_first - a.M) - (a.Tk - a.Tq);
    pos_begin = p > 0 ? p : 0;
  }
  const int total_rows = int(a.Tq) * a.rep;
  int coord[kAccElems];
  accumulator_coords(reinterpret_cast<float*>(sPt), coord);
  FragAcc dk[NF], dv[NF];
#pragma unroll
  for (int n = 0; n < NF; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }

  for (int rr0 = int(pos_begin) * a.rep; rr0 < total_rows; rr0 += kTile) {
    __syncthreads();  // the previous query tile is consumed
    load_query_tile<HD>(a, a.q, b, g, rr0, total_rows, sQ);
    load_query_tile<HD>(a, a.dout, b, g, rr0, total_rows, sO);
    __pipeline_commit();
    if (threadIdx.x < kTile) {
      const int j = threadIdx.x, rr = rr0 + j;
      float lse = -INFINITY, d = 0.0f;
      int n = 0;
      if (rr < total_rows) {
        const int64_t row = query_row(a, b, g, rr);
        lse = a.lse[row];
        d = a.dsum[row];
        n = lse == -INFINITY ? 0 : a.M + int(visible(a, rr / a.rep));
      }
      sLse[j] = n > 0 ? lse * kLog2e : 0.0f;
      sD[j] = d;
      sN[j] = n;
    }
    __pipeline_wait_prior(0);
    __syncthreads();

    // S^T = K Q^T (16 keys x 64 queries) -> P^T; then dP^T = V dO^T -> dS^T = P^T (dP^T - D), with P^T read
    // back from the bf16 tile (each lane its own elements: no exchange), so one set of score fragments is live.
    FragAcc st[4];
#pragma unroll
    for (int n = 0; n < 4; ++n) wmma::fill_fragment(st[n], 0.0f);
#pragma unroll 2  // fully unrolled, ptxas spills around the 128 dK/dV registers at HD 128
    for (int kd = 0; kd < NF; ++kd) {
      FragA ka;
      load_shared(ka, sK + warp * 16 * LD + kd * 16, LD);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        FragBCol qb;  // Q^T: element (d, query) at sQ[query * LD + d]
        load_shared(qb, sQ + n * 16 * LD + kd * 16, LD);
        wmma::mma_sync(st[n], ka, qb, st[n]);
      }
    }
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int i = 0; i < kAccElems; ++i) {
        const int r = coord[i] >> 4, j = n * 16 + (coord[i] & 15);
        const int kk = kk_first + warp * 16 + r;
        const float p = kk < sN[j] ? exp2f(st[n].x[i] * a.scale_log2 - sLse[j]) : 0.0f;
        sPt[r * kLP + j] = __float2bfloat16(p);
      }
#pragma unroll
    for (int n = 0; n < 4; ++n) wmma::fill_fragment(st[n], 0.0f);
#pragma unroll 2  // fully unrolled, ptxas spills around the 128 dK/dV registers at HD 128
    for (int kd = 0; kd < NF; ++kd) {
      FragA va;
      load_shared(va, sV + warp * 16 * LD + kd * 16, LD);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        FragBCol ob;  // dO^T
        load_shared(ob, sO + n * 16 * LD + kd * 16, LD);
        wmma::mma_sync(st[n], va, ob, st[n]);
      }
    }
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int i = 0; i < kAccElems; ++i) {
        const int r = coord[i] >> 4, j = n * 16 + (coord[i] & 15);
        const float p = __bfloat162float(sPt[r * kLP + j]);
        sDSt[r * kLP + j] = __float2bfloat16(p * (st[n].x[i] - sD[j]));
      }
    __syncwarp();
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
      FragA pa, da;
      load_shared(pa, sPt + kq * 16, kLP);
      load_shared(da, sDSt + kq * 16, kLP);
#pragma unroll
      for (int n = 0; n < NF; ++n) {
        FragBRow ob, qb;  // dO and Q rows
        load_shared(ob, sO + kq * 16 * LD + n * 16, LD);
        wmma::mma_sync(dv[n], pa, ob, dv[n]);
        load_shared(qb, sQ + kq * 16 * LD + n * 16, LD);
        wmma::mma_sync(dk[n], da, qb, dk[n]);
      }
    }
  }
  __pipeline_wait_prior(0);
  __syncthreads();  // sQ/sO become the staging

  float* stage = reinterpret_cast<float*>(sQ) + warp * 16 * (HD + 4);
  // Output rows of the warp's 16 keys: real keys in dk/dv, memory slots in dmem_k/dmem_v (-1: not that side).
  auto real_row = [&](int r) -> int64_t {
    const int kk = kk_first + warp * 16 + r;
    return kk >= a.M && kk < nkeys ? (b * a.Tk + (kk - a.M)) * a.G + g : -1;
  };
  auto mem_row = [&](int r) -> int64_t {
    const int kk = kk_first + warp * 16 + r;
    return kk < a.M ? (b * a.M + kk) * a.G + g : -1;
  };
#pragma unroll
  for (int n = 0; n < NF; ++n) wmma::store_matrix_sync(stage + n * 16, dk[n], HD + 4, wmma::mem_row_major);
  __syncwarp();
  write_rows<HD>(stage, a.scale, nullptr, real_row, a.dk);
  if (a.M > 0) write_rows<HD>(stage, a.scale, nullptr, mem_row, a.dmk);
  __syncwarp();
#pragma unroll
  for (int n = 0; n < NF; ++n) wmma::store_matrix_sync(stage + n * 16, dv[n], HD + 4, wmma::mem_row_major);
  __syncwarp();
  write_rows<HD>(stage, 1.0f, nullptr, real_row, a.dv);
  if (a.M > 0) write_rows<HD>(stage, 1.0f, nullptr, mem_row, a.dmv);
}

// Calls fn.template operator()<HD>() for head_dim 64 or 128 (attention_use_mma admits no other).
template <typename Fn>
void on_mma_head_dim(int64_t hd, Fn&& fn) {
  if (hd == 64)
    fn.template operator()<64>();
  else if (hd == 128)
    fn.template operator()<128>();
  else
    throw Error("attention (tensor cores): head_dim " + std::to_string(hd) + " is neither 64 nor 128");
}

MmaArgs make_args(const AttentionShape& d, float scale, bool causal) {
  MmaArgs a{};
  a.Tq = d.tq;
  a.Tk = d.tk;
  a.H = d.heads;
  a.G = d.groups;
  a.M = int(d.mem);
  a.rep = int(d.heads / d.groups);
  a.ppb = kTile / a.rep;
  a.scale = scale;
  a.scale_log2 = scale * kLog2e;
  a.causal = causal;
  return a;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool attention_use_mma(Dt dt, const AttentionShape& d, std::initializer_list<const void*> tensors) {
  const char* env = std::getenv("KOFF_CUDA_ATTENTION");
  const std::string mode = env ? env : "";
  if (mode == "simt") return false;
  if (!mode.empty() && mode != "mma" && mode != "auto")
    throw Error("KOFF_CUDA_ATTENTION=" + mode + ": expected simt, mma or auto");
  if (dt != Dt::bf16 || (d.head_dim != 64 && d.head_dim != 128)) return false;
  if (d.groups < 1 || d.heads % d.groups != 0 || d.heads / d.groups > kTile) return false;
  if (d.batch > 65535 || d.groups > 65535) return false;
  // Per-(b, g) row and key indices are int in the kernels.
  if (d.tq * d.heads >= (int64_t(1) << 30) || d.mem + d.tk >= (int64_t(1) << 30)) return false;
  for (const void* p : tensors)
    if (!aligned16(p)) return false;  // 16-byte cp.async and vector stores
  return true;
}

void attention_forward_mma(const void* q, const void* k, const void* v, const void* mem_k, const void* mem_v, void* out,
                           float* lse, const AttentionShape& d, float scale, bool causal, cudaStream_t s) {
  if (d.batch * d.tq * d.heads == 0) return;
  MmaArgs a = make_args(d, scale, causal);
  a.q = static_cast<const bf16_t*>(q), a.k = static_cast<const bf16_t*>(k), a.v = static_cast<const bf16_t*>(v);
  a.mk = static_cast<const bf16_t*>(mem_k), a.mv = static_cast<const bf16_t*>(mem_v);
  a.o = static_cast<bf16_t*>(out), a.lse_out = lse;
  const dim3 grid(unsigned((d.tq + a.ppb - 1) / a.ppb), unsigned(d.groups), unsigned(d.batch));
  on_mma_head_dim(d.head_dim,
                  [&]<int HD>() { launch(attention_mma_fwd_kernel<HD>, grid, kThreads, fwd_smem<HD>(), s, a); });
}

void attention_backward_mma(const void* dout, const void* q, const void* k, const void* v, const void* mem_k,
                            const void* mem_v, const void* out, const float* lse, float* dsum, void* dq, void* dk,
                            void* dv, void* dmem_k, void* dmem_v, const AttentionShape& d, float scale, bool causal,
                            cudaStream_t s) {
  MmaArgs a = make_args(d, scale, causal);
  a.q = static_cast<const bf16_t*>(q), a.k = static_cast<const bf16_t*>(k), a.v = static_cast<const bf16_t*>(v);
  a.mk = static_cast<const bf16_t*>(mem_k), a.mv = static_cast<const bf16_t*>(mem_v);
  a.dout = static_cast<const bf16_t*>(dout), a.lse = lse, a.dsum = dsum;
  a.dq = static_cast<bf16_t*>(dq), a.dk = static_cast<bf16_t*>(dk), a.dv = static_cast<bf16_t*>(dv);
  a.dmk = static_cast<bf16_t*>(dmem_k), a.dmv = static_cast<bf16_t*>(dmem_v);
  const int64_t rows = d.batch * d.tq * d.heads, nkeys = d.mem + d.tk;
  if (rows > 0) {
    const auto* o = static_cast<const bf16_t*>(out);
    const int hd = int(d.head_dim);
    launch(attention_mma_dsum_kernel, dim3(unsigned((rows + 7) / 8)), 256, 0, s, a.dout, o, dsum, rows, hd);
  }
  on_mma_head_dim(d.head_dim, [&]<int HD>() {
    if (rows > 0) {
      const dim3 grid(unsigned((d.tq + a.ppb - 1) / a.ppb), unsigned(d.groups), unsigned(d.batch));
      launch(attention_mma_dq_kernel<HD>, grid, kThreads, dq_smem<HD>(), s, a);
    }
    if (d.batch * nkeys > 0) {
      const dim3 grid(unsigned((nkeys + kTile - 1) / kTile), unsigned(d.groups), unsigned(d.batch));
      launch(attention_mma_dkv_kernel<HD>, grid, kThreads, dkv_smem<HD>(), s, a);
    }
  });
}

}  // namespace koff::cuda
