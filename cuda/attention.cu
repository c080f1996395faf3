// Fused attention, FlashAttention style, on CUDA cores: GQA, the causal mask and per-KV-head memory
// slots, bf16 or f32 I/O with f32 math. The math and layouts are those of engine/cpu/attention.h:
//   q/out/dq/dout [B, Tq, H, hd], k/v/dk/dv [B, Tk, G, hd], mem_*/dmem_* [B, m, G, hd], lse [B, Tq, H] f32.
//   Query (b, i, h) of KV group g = h / (H/G) sees [m memory slots ; real keys 0 .. n_i - 1] with
//   n_i = clamp(i + Tk - Tq + 1, 0, Tk) when causal, Tk otherwise; s = scale q.k, lse = log sum exp s,
//   out = sum exp(s - lse) v. A row that sees no key gets out = 0, lse = -inf.
// Memory gate (optional): mem_gate [B, G] f32, g = mem_gate[b, g] >= 0 scales the m slots' attention mass,
//   out = (g sum_m e^{s_m} v_m + sum_t e^{s_t} v_t) / Z,  lse = log Z,  Z = g sum_m e^{s_m} + sum_t e^{s_t},
// computed as the slot scores + log g (g = 0: -inf, a masked key, so the memory is invisible). Its gradient
//   dgate[b, g] = sum over the group's query rows and slots m of e^{s_m - lse} (dout . v_m - D)
// (finite at g = 0) is taken per slot in the dkv kernel, one warp per slot summing over its query rows,
// into the scratch dgate_slots [B, G, m] f32, then summed over m by attention_gate_sum_kernel: still one
// writer per element, deterministic. No gate: MG = 0 and every gated branch is skipped (today's results).
//
// Keys are addressed by a virtual index kk in [0, m + Tk): kk < m is memory slot kk, else real key
// kk - m. No [Tq, Tk] matrix exists anywhere: scores live in registers, one key per lane.
//
// Forward (attention_fwd_kernel): a block is 8 warps x R query rows (64 rows), rows being consecutive
// (position, head-of-group) pairs of one (b, g), so the K/V tile in shared memory serves every query
// head of the group. Per 32-key tile: lane j computes the score of key j for the warp's R rows, the
// warp updates each row's running max (shuffles), and lane t accumulates output dims t, t+32, ...
// with p_j broadcast by shuffle (online softmax, FlashAttention-2 order). Causal blocks stop at the
// last key their last row sees.
//
// Backward recomputes p = exp(s - lse) and uses D = dout . out (attention_dsum_kernel):
//   ds = p (dout . v - D);  dq = scale sum ds k  (attention_dq_kernel: same tiling as the forward)
//   dv = sum p dout, dk = scale sum ds q        (attention_dkv_kernel: a block owns 8R keys and walks
//                                                the query rows that can see them, 32 at a time)
// Each output element has exactly one writer: no atomics, deterministic.
//
// Shared memory (f32 tiles, rows of K/Q read lane-per-row padded to HD+1 against bank conflicts):
//   forward  (64 + 32) x HD + 32 x (HD+1) floats (64.1 KiB at HD=128)
//   dq       128 x HD + 64 x (HD+1) floats (96.3 KiB at HD=128); dkv 2 x 8R x HD + 64 x (HD+1) + 96
// above 48 KiB, which launch() (cuda/common.cuh) then allows with cudaFuncSetAttribute. HD is the
// head-dim bound (64/128/256) a kernel is built for; the runtime head_dim may be smaller (zero-padded tiles).
//
// The entries (last in this file) take the tensor-core kernels of attention_mma.cu for bf16 at head_dim
// 64/128 without a memory gate (attention_use_mma), these SIMT kernels otherwise.
#include "cuda/attention.h"
#include "cuda/common.cuh"

// The entries are host code over Tensors, built by nvcc only: the CPU emulator of tests/cuda_emu
// compiles this file as plain C++ for its kernels and launchers alone.
#ifdef __CUDACC__
#include "cuda/backend.h"
#endif

namespace koff::cuda {

namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32, kKeyTile = 32, kQueryTile = 32;

struct Args {
  const void *q, *k, *v, *mk, *mv, *dout, *out;
  void *o, *dq, *dk, *dv, *dmk, *dmv;
  const float* lse;
  float* lse_out;
  float* dsum;
  const float* gate;   // [B, G] or null
  float* dgate_slots;  // [B, G, M] backward scratch when gated
  int64_t B, Tq, Tk, H, G, M, hd;
  int64_t MG;  // memory slots whose scores get + log gate: M with a gate, else 0
  float scale;
  bool causal;
  int64_t ppb;  // query positions per block (forward and dq)
};

// log of (b, g)'s memory gate: -inf for a closed gate; 0 (unused) without one.
__device__ __forceinline__ float log_gate(const Args& a, int64_t b, int64_t g) {
  return a.MG > 0 ? logf(a.gate[b * a.G + g]) : 0.0f;
}

__device__ __forceinline__ int64_t visible(const Args& a, int64_t i) {
  if (!a.causal) return a.Tk;
  const int64_t n = i + a.Tk - a.Tq + 1;
  return n < 0 ? 0 : (n > a.Tk ? a.Tk : n);
}

// Element offset of key kk's row (memory or real) for (b, g); `mem` selects which array it lives in.
__device__ __forceinline__ int64_t key_offset(const Args& a, int64_t b, int64_t g, int64_t kk, bool& mem) {
  mem = kk < a.M;
  return mem ? ((b * a.M + kk) * a.G + g) * a.hd : ((b * a.Tk + (kk - a.M)) * a.G + g) * a.hd;
}

// Loads rows [r0, r0 + nrows) of the query-side tensor x (q, dout or out) for block (b, g) into
// dst[r * stride + c], rows r = position * rep + head-in-group, zeros outside the tensor or c >= hd.
template <typename T, int HD>
__device__ __forceinline__ void load_query_rows(const Args& a, const T* x, int64_t b, int64_t g, int64_t rr0,
                                                int nrows, float* dst, int stride) {
  const int64_t rep = a.H / a.G, total = a.Tq * rep;
  for (int idx = threadIdx.x; idx < nrows * HD; idx += kThreads) {
    const int r = idx / HD, c = idx % HD;
    const int64_t rr = rr0 + r;
    float val = 0.0f;
    if (rr < total && c < a.hd) {
      const int64_t pos = rr / rep, h = g * rep + rr % rep;
      val = ld(x, ((b * a.Tq + pos) * a.H + h) * a.hd + c);
    }
    dst[r * stride + c] = val;
  }
}

// Loads keys [kk0, kk0 + nkeys) of K (and V) for (b, g): zeros past `limit` or c >= hd.
template <typename T, int HD>
__device__ __forceinline__ void load_keys(const Args& a, const T* real, const T* mem, int64_t b, int64_t g,
                                          int64_t kk0, int nkeys, int64_t limit, float* dst, int stride) {
  for (int idx = threadIdx.x; idx < nkeys * HD; idx += kThreads) {
    const int j = idx / HD, c = idx % HD;
    const int64_t kk = kk0 + j;
    float val = 0.0f;
    if (kk < limit && c < a.hd) {
      bool in_mem;
      const int64_t off = key_offset(a, b, g, kk, in_mem);
      val = in_mem ? ld(mem, off + c) : ld(real, off + c);
    }
    dst[j * stride + c] = val;
  }
}

template <typename T, int HD, int R>
__global__ void __launch_bounds__(kThreads) attention_fwd_kernel(Args a) {
  constexpr int ROWS = kWarps * R, DPL = HD / 32, KS = HD + 1;
  extern __shared__ float smem[];
  float* sQ = smem;               // [ROWS][HD]
  float* sK = sQ + ROWS * HD;     // [kKeyTile][KS]
  float* sV = sK + kKeyTile * KS;  // [kKeyTile][HD]
  const int64_t b = blockIdx.z, g = blockIdx.y, rep = a.H / a.G;
  const int64_t i0 = int64_t(blockIdx.x) * a.ppb;
  const int64_t npos = a.Tq - i0 < a.ppb ? a.Tq - i0 : a.ppb;
  const int rows_used = int(npos * rep);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* q = static_cast<const T*>(a.q);
  load_query_rows<T, HD>(a, q, b, g, i0 * rep, ROWS, sQ, HD);
  const float lg = log_gate(a, b, g);

  const int64_t total = a.M + visible(a, i0 + npos - 1);
  int64_t nvis[R];
  float m_run[R], l_run[R], o[R][DPL];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int r = warp * R + i;
    nvis[i] = r < rows_used ? a.M + visible(a, i0 + r / rep) : 0;
    m_run[i] = -INFINITY;
    l_run[i] = 0.0f;
#pragma unroll
    for (int t = 0; t < DPL; ++t) o[i][t] = 0.0f;
  }
  const T* kr = static_cast<const T*>(a.k);
  const T* vr = static_cast<const T*>(a.v);
  const T* km = static_cast<const T*>(a.mk);
  const T* vm = static_cast<const T*>(a.mv);
  for (int64_t kk0 = 0; kk0 < total; kk0 += kKeyTile) {
    __syncthreads();  // the previous tile is consumed (and sQ is loaded, the first time)
    load_keys<T, HD>(a, kr, km, b, g, kk0, kKeyTile, total, sK, KS);
    load_keys<T, HD>(a, vr, vm, b, g, kk0, kKeyTile, total, sV, HD);
    __syncthreads();
    float s[R];
#pragma unroll
    for (int i = 0; i < R; ++i) s[i] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < a.hd; ++c) {
      const float kc = sK[lane * KS + c];
#pragma unroll
      for (int i = 0; i < R; ++i) s[i] += sQ[(warp * R + i) * HD + c] * kc;
    }
    const int64_t kk = kk0 + lane;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      float si = kk < nvis[i] ? s[i] * a.scale : -INFINITY;
      if (kk < a.MG) si += lg;  // a gated memory slot (nvis >= M: always visible)
      const float mnew = fmaxf(m_run[i], warp_max(si));
      const float p = mnew == -INFINITY ? 0.0f : expf(si - mnew);
      const float corr = m_run[i] == -INFINITY ? 0.0f : expf(m_run[i] - mnew);
      l_run[i] = l_run[i] * corr + p;
#pragma unroll
      for (int t = 0; t < DPL; ++t) o[i][t] *= corr;
      m_run[i] = mnew;
      s[i] = p;
    }
    const int jmax = total - kk0 < kKeyTile ? int(total - kk0) : kKeyTile;
    for (int j = 0; j < jmax; ++j) {
      float vv[DPL];
#pragma unroll
      for (int t = 0; t < DPL; ++t) vv[t] = sV[j * HD + lane + 32 * t];
#pragma unroll
      for (int i = 0; i < R; ++i) {
        const float pj = __shfl_sync(0xffffffffu, s[i], j);
#pragma unroll
        for (int t = 0; t < DPL; ++t) o[i][t] += pj * vv[t];
      }
    }
  }
  T* out = static_cast<T*>(a.o);
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int r = warp * R + i;
    if (r >= rows_used) continue;  // uniform over the warp
    const float l = warp_sum(l_run[i]);
    const int64_t row = (b * a.Tq + i0 + r / rep) * a.H + g * rep + r % rep;
    const bool empty = m_run[i] == -INFINITY || !(l > 0.0f);
    const float inv = empty ? 0.0f : 1.0f / l;
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int c = lane + 32 * t;
      if (c < a.hd) st(out, row * a.hd + c, o[i][t] * inv);
    }
    if (lane == 0) a.lse_out[row] = empty ? -INFINITY : m_run[i] + logf(l);
  }
}

// D = dout . out per (b, i, h) row: one warp per row.
template <typename T>
__global__ void attention_dsum_kernel(const T* dout, const T* out, float* dsum, int64_t rows, int64_t hd) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  float s = 0.0f;
  for (int64_t c = lane; c < hd; c += 32) s += ld(dout, row * hd + c) * ld(out, row * hd + c);
  s = warp_sum(s);
  if (lane == 0) dsum[row] = s;
}

template <typename T, int HD, int R>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(Args a) {
  constexpr int ROWS = kWarps * R, DPL = HD / 32, KS = HD + 1;
  extern __shared__ float smem[];
  float* sQ = smem;                 // [ROWS][HD]
  float* sO = sQ + ROWS * HD;       // [ROWS][HD]  dout
  float* sK = sO + ROWS * HD;       // [kKeyTile][KS]
  float* sV = sK + kKeyTile * KS;   // [kKeyTile][KS]
  const int64_t b = blockIdx.z, g = blockIdx.y, rep = a.H / a.G;
  const int64_t i0 = int64_t(blockIdx.x) * a.ppb;
  const int64_t npos = a.Tq - i0 < a.ppb ? a.Tq - i0 : a.ppb;
  const int rows_used = int(npos * rep);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  load_query_rows<T, HD>(a, static_cast<const T*>(a.q), b, g, i0 * rep, ROWS, sQ, HD);
  load_query_rows<T, HD>(a, static_cast<const T*>(a.dout), b, g, i0 * rep, ROWS, sO, HD);
  const float lg = log_gate(a, b, g);

  const int64_t total = a.M + visible(a, i0 + npos - 1);
  int64_t nvis[R];
  float lse[R], dsum[R], dq[R][DPL];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int r = warp * R + i;
    const int64_t row = (b * a.Tq + i0 + r / rep) * a.H + g * rep + r % rep;
    nvis[i] = r < rows_used ? a.M + visible(a, i0 + r / rep) : 0;
    lse[i] = r < rows_used ? a.lse[row] : -INFINITY;
    dsum[i] = r < rows_used ? a.dsum[row] : 0.0f;
#pragma unroll
    for (int t = 0; t < DPL; ++t) dq[i][t] = 0.0f;
  }
  const T* kr = static_cast<const T*>(a.k);
  const T* vr = static_cast<const T*>(a.v);
  const T* km = static_cast<const T*>(a.mk);
  const T* vm = static_cast<const T*>(a.mv);
  for (int64_t kk0 = 0; kk0 < total; kk0 += kKeyTile) {
    __syncthreads();
    load_keys<T, HD>(a, kr, km, b, g, kk0, kKeyTile, total, sK, KS);
    load_keys<T, HD>(a, vr, vm, b, g, kk0, kKeyTile, total, sV, KS);
    __syncthreads();
    float s[R], dp[R];
#pragma unroll
    for (int i = 0; i < R; ++i) s[i] = dp[i] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < a.hd; ++c) {
      const float kc = sK[lane * KS + c], vc = sV[lane * KS + c];
#pragma unroll
      for (int i = 0; i < R; ++i) {
        s[i] += sQ[(warp * R + i) * HD + c] * kc;
        dp[i] += sO[(warp * R + i) * HD + c] * vc;
      }
    }
    const int64_t kk = kk0 + lane;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const bool vis = kk < nvis[i] && lse[i] != -INFINITY;
      const float p = !vis ? 0.0f : kk < a.MG ? expf((s[i] * a.scale + lg) - lse[i]) : expf(s[i] * a.scale - lse[i]);
      s[i] = p * (dp[i] - dsum[i]);  // ds
    }
    const int jmax = total - kk0 < kKeyTile ? int(total - kk0) : kKeyTile;
    for (int j = 0; j < jmax; ++j) {
      float kv[DPL];
#pragma unroll
      for (int t = 0; t < DPL; ++t) kv[t] = sK[j * KS + lane + 32 * t];
#pragma unroll
      for (int i = 0; i < R; ++i) {
        const float dsj = __shfl_sync(0xffffffffu, s[i], j);
#pragma unroll
        for (int t = 0; t < DPL; ++t) dq[i][t] += dsj * kv[t];
      }
    }
  }
  T* dqo = static_cast<T*>(a.dq);
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int r = warp * R + i;
    if (r >= rows_used) continue;
    const int64_t row = (b * a.Tq + i0 + r / rep) * a.H + g * rep + r % rep;
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int c = lane + 32 * t;
      if (c < a.hd) st(dqo, row * a.hd + c, dq[i][t] * a.scale);
    }
  }
}

template <typename T, int HD, int R>
__global__ void __launch_bounds__(kThreads) attention_dkv_kernel(Args a) {
  constexpr int KEYS = kWarps * R, DPL = HD / 32, KS = HD + 1;
  extern __shared__ float smem[];
  float* sK = smem;                     // [KEYS][HD]
  float* sV = sK + KEYS * HD;           // [KEYS][HD]
  float* sQ = sV + KEYS * HD;           // [kQueryTile][KS]
  float* sO = sQ + kQueryTile * KS;     // [kQueryTile][KS]  dout
  float* sL = sO + kQueryTile * KS;     // [kQueryTile] lse
  float* sD = sL + kQueryTile;          // [kQueryTile] D
  int64_t* sN = reinterpret_cast<int64_t*>(sD + kQueryTile);  // [kQueryTile] visible keys (8-aligned: see size)
  const int64_t b = blockIdx.z, g = blockIdx.y, rep = a.H / a.G, nkeys = a.M + a.Tk;
  const int64_t kk_first = int64_t(blockIdx.x) * KEYS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  load_keys<T, HD>(a, static_cast<const T*>(a.k), static_cast<const T*>(a.mk), b, g, kk_first, KEYS, nkeys, sK, HD);
  load_keys<T, HD>(a, static_cast<const T*>(a.v), static_cast<const T*>(a.mv), b, g, kk_first, KEYS, nkeys, sV, HD);

  // The first query position that sees any key of this block: 0 when the block holds memory slots
  // (or the mask is off), else the first position whose causal window reaches real key kk_first - m.
  int64_t pos_begin = 0;
  if (a.causal && kk_first >= a.M) {
    const int64_t j0 = kk_first - a.M, p = j0 - (a.Tk - a.Tq);
    pos_begin = p > 0 ? p : 0;
  }
  const float lg = log_gate(a, b, g);
  float dk[R][DPL], dv[R][DPL], dgate[R];  // dgate: this lane's rows' share of slot kk's gate gradient
#pragma unroll
  for (int i = 0; i < R; ++i) {
    dgate[i] = 0.0f;
#pragma unroll
    for (int t = 0; t < DPL; ++t) dk[i][t] = dv[i][t] = 0.0f;
  }

  const int64_t total_rows = a.Tq * rep;
  for (int64_t rr0 = pos_begin * rep; rr0 < total_rows; rr0 += kQueryTile) {
    __syncthreads();  // previous query tile consumed (and sK/sV loaded, the first time)
    load_query_rows<T, HD>(a, static_cast<const T*>(a.q), b, g, rr0, kQueryTile, sQ, KS);
    load_query_rows<T, HD>(a, static_cast<const T*>(a.dout), b, g, rr0, kQueryTile, sO, KS);
    if (threadIdx.x < kQueryTile) {
      const int64_t rr = rr0 + threadIdx.x;
      if (rr < total_rows) {
        const int64_t pos = rr / rep, row = (b * a.Tq + pos) * a.H + g * rep + rr % rep;
        sL[threadIdx.x] = a.lse[row];
        sD[threadIdx.x] = a.dsum[row];
        sN[threadIdx.x] = a.M + visible(a, pos);
      } else {
        sL[threadIdx.x] = -INFINITY;
        sD[threadIdx.x] = 0.0f;
        sN[threadIdx.x] = 0;
      }
    }
    __syncthreads();
    // lane = query row of the tile; the warp's R keys are broadcast reads.
    float p[R], ds[R];
#pragma unroll
    for (int i = 0; i < R; ++i) p[i] = ds[i] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < a.hd; ++c) {
      const float qc = sQ[lane * KS + c], oc = sO[lane * KS + c];
#pragma unroll
      for (int i = 0; i < R; ++i) {
        p[i] += qc * sK[(warp * R + i) * HD + c];
        ds[i] += oc * sV[(warp * R + i) * HD + c];
      }
    }
    const float l = sL[lane], dsum = sD[lane];
    const int64_t n = sN[lane];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t kk = kk_first + warp * R + i;
      const bool vis = kk < n && l != -INFINITY;
      float pi = 0.0f;
      if (kk < a.MG) {                                          // warp-uniform: gated memory slot
        const float u = vis ? expf(p[i] * a.scale - l) : 0.0f;  // ungated e^{s - lse}
        dgate[i] += u * (ds[i] - dsum);
        pi = vis ? expf((p[i] * a.scale + lg) - l) : 0.0f;
      } else {
        pi = vis ? expf(p[i] * a.scale - l) : 0.0f;
      }
      ds[i] = pi * (ds[i] - dsum);
      p[i] = pi;
    }
    const int jmax = total_rows - rr0 < kQueryTile ? int(total_rows - rr0) : kQueryTile;
    for (int j = 0; j < jmax; ++j) {
      float qv[DPL], ov[DPL];
#pragma unroll
      for (int t = 0; t < DPL; ++t) {
        qv[t] = sQ[j * KS + lane + 32 * t];
        ov[t] = sO[j * KS + lane + 32 * t];
      }
#pragma unroll
      for (int i = 0; i < R; ++i) {
        const float pj = __shfl_sync(0xffffffffu, p[i], j), dsj = __shfl_sync(0xffffffffu, ds[i], j);
#pragma unroll
        for (int t = 0; t < DPL; ++t) {
          dv[i][t] += pj * ov[t];
          dk[i][t] += dsj * qv[t];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int64_t kk = kk_first + warp * R + i;
    if (kk >= nkeys) continue;
    if (kk < a.MG) {  // warp-uniform
      const float gsum = warp_sum(dgate[i]);
      if (lane == 0) a.dgate_slots[(b * a.G + g) * a.M + kk] = gsum;
    }
    bool in_mem;
    const int64_t off = key_offset(a, b, g, kk, in_mem);
    T* dko = static_cast<T*>(in_mem ? a.dmk : a.dk);
    T* dvo = static_cast<T*>(in_mem ? a.dmv : a.dv);
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int c = lane + 32 * t;
      if (c < a.hd) {
        st(dko, off + c, dk[i][t] * a.scale);
        st(dvo, off + c, dv[i][t]);
      }
    }
  }
}

// dgate[bg] = sum over m of slots[bg, m], in slot order: one thread per (b, g).
__global__ void attention_gate_sum_kernel(const float* slots, float* dgate, int64_t bg, int64_t m) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= bg) return;
  float s = 0.0f;
  for (int64_t j = 0; j < m; ++j) s += slots[i * m + j];
  dgate[i] = s;
}

template <int HD>
constexpr int rows_per_warp() {
  return HD >= 256 ? 4 : 8;
}
template <int HD>
size_t fwd_smem() {
  return sizeof(float) * size_t((kWarps * 8 + kKeyTile) * HD + kKeyTile * (HD + 1));
}
template <int HD>
size_t dq_smem() {
  return sizeof(float) * size_t(2 * kWarps * 8 * HD + 2 * kKeyTile * (HD + 1));
}
template <int HD>
size_t dkv_smem() {
  constexpr int keys = kWarps * rows_per_warp<HD>();
  // + lse, D (floats) and visible counts (int64) of the query tile; 2*32 floats keep sN 8-aligned.
  return sizeof(float) * size_t(2 * keys * HD + 2 * kQueryTile * (HD + 1) + 2 * kQueryTile) +
         sizeof(int64_t) * kQueryTile + 8;
}

// Calls fn.template operator()<HD>() with the smallest head-dim bound that holds hd.
template <typename Fn>
void on_head_dim(int64_t hd, Fn&& fn) {
  if (hd <= 64)
    fn.template operator()<64>();
  else if (hd <= 128)
    fn.template operator()<128>();
  else if (hd <= 256)
    fn.template operator()<256>();
  else
    throw Error("attention: head_dim " + std::to_string(hd) + " exceeds the CUDA kernels' bound of 256");
}

Args make_args(const AttentionShape& d, float scale, bool causal, const float* mem_gate) {
  Args a{};
  a.gate = mem_gate;
  a.MG = mem_gate ? d.mem : 0;
  a.B = d.batch;
  a.Tq = d.tq;
  a.Tk = d.tk;
  a.H = d.heads;
  a.G = d.groups;
  a.M = d.mem;
  a.hd = d.head_dim;
  a.scale = scale;
  a.causal = causal;
  const int64_t rep = d.heads / d.groups;
  if (rep > kWarps * 4)
    throw Error("attention: " + std::to_string(rep) + " query heads per KV head exceed the CUDA kernels' bound of " +
                std::to_string(kWarps * 4));
  return a;
}

dim3 grid_of(int64_t tiles, const AttentionShape& d) {
  if (d.groups > 65535 || d.batch > 65535)
    throw Error("attention: batch " + std::to_string(d.batch) + " or KV heads " + std::to_string(d.groups) +
                " exceed the CUDA grid limit of 65535");
  return dim3(unsigned(tiles), unsigned(d.groups), unsigned(d.batch));
}

// ---- launchers -------------------------------------------------------------------------------
// mem_gate: [B, G] f32 or null (no gate; the header states the gated math).
void attention_forward(Dt dt, const void* q, const void* k, const void* v, const void* mem_k, const void* mem_v,
                       const float* mem_gate, void* out, float* lse, const AttentionShape& d, float scale, bool causal,
                       cudaStream_t s) {
  if (d.batch * d.tq * d.heads == 0) return;
  Args a = make_args(d, scale, causal, mem_gate);
  a.q = q, a.k = k, a.v = v, a.mk = mem_k, a.mv = mem_v, a.o = out, a.lse_out = lse;
  const int64_t rep = d.heads / d.groups;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    on_head_dim(d.head_dim, [&]<int HD>() {
      a.ppb = (kWarps * 8) / rep;
      launch(attention_fwd_kernel<T, HD, 8>, grid_of((d.tq + a.ppb - 1) / a.ppb, d), kThreads, fwd_smem<HD>(), s,
             a);
    });
  });
}

// dsum: scratch [B, Tq, H] f32. With a gate: dmem_gate [B, G] f32 and the scratch dgate_slots [B, G, m] f32
// (null without one).
void attention_backward(Dt dt, const void* dout, const void* q, const void* k, const void* v, const void* mem_k,
                        const void* mem_v, const float* mem_gate, const void* out, const float* lse, float* dsum,
                        void* dq, void* dk, void* dv, void* dmem_k, void* dmem_v, float* dmem_gate, float* dgate_slots,
                        const AttentionShape& d, float scale, bool causal, cudaStream_t s) {
  Args a = make_args(d, scale, causal, mem_gate);
  a.q = q, a.k = k, a.v = v, a.mk = mem_k, a.mv = mem_v, a.dout = dout, a.out = out, a.lse = lse, a.dsum = dsum;
  a.dq = dq, a.dk = dk, a.dv = dv, a.dmk = dmem_k, a.dmv = dmem_v, a.dgate_slots = dgate_slots;
  const int64_t rep = d.heads / d.groups, rows = d.batch * d.tq * d.heads, nkeys = d.mem + d.tk;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    if (rows > 0) {
      launch(attention_dsum_kernel<T>, dim3(unsigned((rows + kWarps - 1) / kWarps)), kThreads, 0, s,
             static_cast<const T*>(dout), static_cast<const T*>(out), dsum, rows, d.head_dim);
    }
    on_head_dim(d.head_dim, [&]<int HD>() {
      if (rows > 0) {
        a.ppb = (kWarps * 8) / rep;
        launch(attention_dq_kernel<T, HD, 8>, grid_of((d.tq + a.ppb - 1) / a.ppb, d), kThreads, dq_smem<HD>(), s,
               a);
      }
      if (d.batch * nkeys > 0) {
        constexpr int R = rows_per_warp<HD>();
        launch(attention_dkv_kernel<T, HD, R>, grid_of((nkeys + kWarps * R - 1) / (kWarps * R), d), kThreads,
               dkv_smem<HD>(), s, a);
      }
    });
  });
  const int64_t bg = d.batch * d.groups;
  if (mem_gate && bg > 0) {
    launch(attention_gate_sum_kernel, dim3(unsigned((bg + kThreads - 1) / kThreads)), kThreads, 0, s,
           static_cast<const float*>(dgate_slots), dmem_gate, bg, d.mem);
  }
}

}  // namespace

#ifdef __CUDACC__
// ---- the Backend entries ---------------------------------------------------------------------
namespace {

AttentionShape shape_of(const Tensor& q, const Tensor& k, const Tensor& mem_k) {
  return {q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), mem_k.defined() ? mem_k.size(1) : 0, q.size(3)};
}

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
               const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) {
  OpScope op("attention", q);
  const Dt dt = dt_of(q, "attention");
  const AttentionShape shape = shape_of(q, k, mem_k);
  float* lse_out = stat(lse, "attention", "lse");
  const float* gate = mem_gate.defined() ? stat(mem_gate, "attention", "mem_gate") : nullptr;
  // Tensor cores for bf16 at head_dim 64/128 (attention_mma.cu), the SIMT kernels otherwise and for a
  // gated memory (the tensor-core kernels have no gate).
  if (!gate && attention_use_mma(dt, shape, {cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), cptr(out)}))
    attention_forward_mma(cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), mptr(out), lse_out, shape, float(scale),
                          causal, op.s());
  else
    attention_forward(dt, cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), gate, mptr(out), lse_out, shape,
                      float(scale), causal, op.s());
}
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                        const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out, const Tensor& lse, double scale,
                        bool causal, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dmem_k, Tensor& dmem_v,
                        Tensor& dmem_gate) {
  OpScope op("attention_backward", q);
  Tensor dsum =
      Tensor::empty({std::max<int64_t>(q.numel() / std::max<int64_t>(q.size(3), 1), 1)}, DType::f32, q.device());
  const Dt dt = dt_of(q, "attention_backward");
  const AttentionShape shape = shape_of(q, k, mem_k);
  const float* lse_in = stat(lse, "attention_backward", "lse");
  const float* gate = mem_gate.defined() ? stat(mem_gate, "attention_backward", "mem_gate") : nullptr;
  if (!gate && attention_use_mma(dt, shape,
                                 {cptr(dout), cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), cptr(out), cptr(dq),
                                  cptr(dk), cptr(dv), cptr(dmem_k), cptr(dmem_v)})) {
    attention_backward_mma(cptr(dout), cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), cptr(out), lse_in,
                           dsum.data<float>(), mptr(dq), mptr(dk), mptr(dv), mptr(dmem_k), mptr(dmem_v), shape,
                           float(scale), causal, op.s());
    return;
  }
  Tensor dgate_slots;  // per-slot partial gate gradients [B, G, m]
  if (gate && shape.mem > 0)
    dgate_slots = Tensor::empty({shape.batch * shape.groups * shape.mem}, DType::f32, q.device());
  attention_backward(dt, cptr(dout), cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), gate, cptr(out), lse_in,
                     dsum.data<float>(), mptr(dq), mptr(dk), mptr(dv), mptr(dmem_k), mptr(dmem_v),
                     gate ? stat(dmem_gate, "attention_backward", "dmem_gate") : nullptr,
                     dgate_slots.defined() ? dgate_slots.data<float>() : nullptr, shape, float(scale), causal, op.s());
}

}  // namespace

void fill_attention(Backend& b) {
  b.attention = attention;
  b.attention_backward = attention_backward;
}
#endif  // __CUDACC__

}  // namespace koff::cuda
