// Losses over rows of logits [N, V], bf16 or f32 logits with f32 math (double for the sums across
// rows), targets i32 or i64:
//   cross_entropy   lse[r] = log sum_j exp x[r, j] (f32, kept for the backward), loss_sum = sum over
//                   counted rows of lse[r] - x[r, t_r]; rows whose target is ignore_index count 0;
//   its gradient    g[r, :] = dloss (softmax(x_r) - onehot(t_r)), 0 for ignored rows;
//   linear_cross_entropy  the same from h [N, d] and W [V, d] without materialising [N, V]: chunks
//                   of rows, logits_chunk = h_chunk W^T in f32 (cuBLASLt, cuda/gemm.h), then the row
//                   kernels; the backward recomputes each chunk's logits, turns them into G in place
//                   and takes dh_chunk = G W and dw += G^T h_chunk;
//   kl_div          sum over rows of KL(softmax(t_r) || softmax(x_r)), and its gradient
//                   dloss (softmax(x_r) - softmax(t_r)).
// Row kernels, one block per row: a thread keeps a running (max, sum) over its columns and the pairs
// merge across the block in double (block_lse). Per-row losses go to a double scratch that
// sum_doubles adds in a fixed order (deterministic). A target outside [0, V) that is not
// ignore_index is skipped and raises the device's error flag; the entries that return the counted
// rows read it back (the one synchronisation of a loss op) and throw.
#include "cuda/backend.h"
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/patterns.cuh"

namespace koff::cuda {

namespace {

// out[0] = the sum of n doubles, one block, a fixed order (the per-row losses; the partials of sum/dot).
template <typename T>
__global__ void sum_doubles_kernel(const double* a, int64_t n, T* out) {
  __shared__ double sh[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += a[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) st(out, 0, float(acc));
}

// ---- cross-entropy ---------------------------------------------------------------------------
// log sum exp of a row, every thread of the block gets it. Each thread keeps a running (max, sum)
// pair over its columns; the pairs are merged across the block in double.
template <typename T>
__device__ float block_lse(const T* x, int64_t v, float* shf, double* shd) {
  float m = -INFINITY, l = 0.0f;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float xj = ld(x, j);
    if (xj > m) {
      l = (m == -INFINITY ? 0.0f : l * expf(m - xj)) + 1.0f;
      m = xj;
    } else if (xj != -INFINITY) {
      l += expf(xj - m);
    }
  }
  const float mx = block_max(m, shf);
  if (mx == -INFINITY || isinf(mx)) return mx;  // all -inf, or +inf present: lse is that infinity
  const double part = (m == -INFINITY) ? 0.0 : double(l) * exp(double(m) - double(mx));
  const double tot = block_sum(part, shd);
  return mx + static_cast<float>(log(tot));
}

template <typename T, typename I>
__global__ void ce_rows_kernel(const T* x, const I* targets, int64_t v, int64_t ignore_index, float* lse,
                               double* row_loss, int* flag) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * v;
  const float l = block_lse(xr, v, shf, shd);
  if (threadIdx.x != 0) return;
  lse[row] = l;
  const int64_t t = ld_index(targets, row);
  double loss = 0.0;
  if (t != ignore_index) {
    if (t < 0 || t >= v)
      atomicExch(flag, 1);
    else
      loss = double(l) - double(ld(xr, t));
  }
  row_loss[row] = loss;
}

template <typename T, typename G, typename I>
__global__ void ce_grad_kernel(const T* x, const I* targets, const float* lse, int64_t v, int64_t ignore_index,
                               float dloss, G* g, bf16_t* g2) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * v;
  G* gr = g + row * v;
  bf16_t* g2r = g2 ? g2 + row * v : nullptr;
  const int64_t t = ld_index(targets, row);
  const float l = lse[row];
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    float val = 0.0f;
    if (t != ignore_index) {
      val = dloss * expf(ld(xr, j) - l);
      if (fabsf(val) < 1.17549435e-38f) val = 0.0f;  // flush subnormals, as the CPU kernel does
      if (j == t) val -= dloss;
    }
    st(gr, j, val);
    if (g2r) g2r[j] = __float2bfloat16(val);
  }
}

template <typename I>
__global__ void count_targets_kernel(const I* targets, int64_t n, int64_t ignore_index, int64_t* count) {
  __shared__ double sh[32];
  double c = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) c += ld_index(targets, i) != ignore_index ? 1.0 : 0.0;
  c = block_sum(c, sh);
  if (threadIdx.x == 0) *count = static_cast<int64_t>(c);
}

// ---- KL divergence ---------------------------------------------------------------------------
template <typename T>
__global__ void kl_rows_kernel(const T* x, const T* t, int64_t v, double* row_kl) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t row = blockIdx.x;
  const T *xr = x + row * v, *tr = t + row * v;
  const float lx = block_lse(xr, v, shf, shd), lt = block_lse(tr, v, shf, shd);
  double kl = 0.0;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const double log_pt = double(ld(tr, j) - lt);
    kl += exp(log_pt) * (log_pt - double(ld(xr, j) - lx));
  }
  kl = block_sum(kl, shd);
  if (threadIdx.x == 0) row_kl[row] = kl;
}

template <typename T>
__global__ void kl_grad_kernel(float dloss, const T* x, const T* t, int64_t v, T* g) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t row = blockIdx.x;
  const T *xr = x + row * v, *tr = t + row * v;
  const float lx = block_lse(xr, v, shf, shd), lt = block_lse(tr, v, shf, shd);
  T* gr = g + row * v;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
    st(gr, j, dloss * (expf(ld(xr, j) - lx) - expf(ld(tr, j) - lt)));
}

// ---- launchers -------------------------------------------------------------------------------
// Cross-entropy rows, one block per row. logits x: [n, v] of `xdt` (the fused path passes its f32
// logits chunk).
// Writes lse[r] (f32) and row_loss[r] (double: lse - x[target], 0 for ignored rows).
void ce_rows(Dt xdt, const void* x, const void* targets, bool idx64, int64_t n, int64_t v, int64_t ignore_index,
             float* lse, double* row_loss, int* flag, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(xdt, [&](auto tag) {
    using T = decltype(tag);
    on_index(idx64, [&](auto itag) {
      using I = decltype(itag);
      ce_rows_kernel<T, I><<<unsigned(n), 512, 0, s>>>(static_cast<const T*>(x), static_cast<const I*>(targets), v,
                                                       ignore_index, lse, row_loss, flag);
      KOFF_CUDA_CHECK(cudaGetLastError());
    });
  });
}

// g[r, :] = dloss (softmax(x_r) - onehot), 0 for ignored rows; x and g of types xdt / gdt, may alias.
// When g2 is given, also writes the same values as bf16 into g2 (for a following bf16 GEMM).
void ce_grad(Dt xdt, const void* x, const void* targets, bool idx64, const float* lse, int64_t n, int64_t v,
             int64_t ignore_index, float dloss, Dt gdt, void* g, void* g2_bf16, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(xdt, [&](auto tag) {
    using T = decltype(tag);
    on_dt(gdt, [&](auto gtag) {
      using G = decltype(gtag);
      on_index(idx64, [&](auto itag) {
        using I = decltype(itag);
        ce_grad_kernel<T, G, I><<<unsigned(n), 512, 0, s>>>(static_cast<const T*>(x), static_cast<const I*>(targets),
                                                             lse, v, ignore_index, dloss, static_cast<G*>(g),
                                                             static_cast<bf16_t*>(g2_bf16));
        KOFF_CUDA_CHECK(cudaGetLastError());
      });
    });
  });
}

// Number of targets != ignore_index -> *count (device int64).
void count_targets(const void* targets, bool idx64, int64_t n, int64_t ignore_index, int64_t* count, cudaStream_t s) {
  on_index(idx64, [&](auto itag) {
    using I = decltype(itag);
    count_targets_kernel<I><<<1, 1024, 0, s>>>(static_cast<const I*>(targets), n, ignore_index, count);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void kl_rows(Dt dt, const void* x, const void* t, int64_t n, int64_t v, double* row_kl, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    kl_rows_kernel<T><<<unsigned(n), 512, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(t), v, row_kl);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void kl_grad(Dt dt, float dloss, const void* x, const void* t, int64_t n, int64_t v, void* g, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    kl_grad_kernel<T><<<unsigned(n), 512, 0, s>>>(dloss, static_cast<const T*>(x), static_cast<const T*>(t), v,
                                                  static_cast<T*>(g));
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace

void sum_doubles(const double* a, int64_t n, Dt dt, void* out, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    sum_doubles_kernel<T><<<1, 1024, 0, s>>>(a, n, static_cast<T*>(out));
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

// ---- the Backend entries ---------------------------------------------------------------------
namespace {

// Reads the int64 at `count` (device) and the error flag; the one synchronisation of a loss op.
int64_t read_count(const Tensor& count, int device, const char* op) {
  int64_t host = 0;
  KOFF_CUDA_CHECK(cudaMemcpyAsync(&host, count.raw_data(), sizeof(int64_t), cudaMemcpyDeviceToHost, stream(device)));
  check_error_flag(device, op);  // synchronises the stream
  return host;
}

// logits [cn, V] f32 = h[r0 : r0 + cn] W^T
void logits_chunk(Dt dt, const Tensor& h, const Tensor& w, int64_t r0, int64_t cn, int64_t d, int64_t vocab,
                  Tensor& logits, const OpScope& op) {
  GemmArgs g;
  g.ab_dt = dt;
  g.c_dt = Dt::f32;
  g.trans_b = true;
  g.m = cn, g.n = vocab, g.k = d, g.lda = d, g.ldb = d, g.ldc = vocab;
  if (d == 0) {
    KOFF_CUDA_CHECK(cudaMemsetAsync(logits.raw_data(), 0, size_t(cn * vocab) * sizeof(float), op.s()));
    return;
  }
  gemm(g, static_cast<const char*>(cptr(h)) + r0 * d * dtype_size(h.dtype()), cptr(w), logits.raw_data(), op.device(),
       op.s());
}

int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                      Tensor& lse) {
  OpScope op("cross_entropy", logits);
  const int64_t n = logits.size(0), v = logits.size(1);
  const bool i64 = idx64(targets, "cross_entropy");
  Tensor row_loss = doubles(n, logits), count = Tensor::empty({1}, DType::i64, logits.device());
  ce_rows(dt_of(logits, "cross_entropy"), cptr(logits), cptr(targets), i64, n, v, ignore_index,
          stat(lse, "cross_entropy", "lse"), dptr(row_loss), error_flag(op.device()), op.s());
  sum_doubles(dptr(row_loss), n, dt_of(loss_sum, "cross_entropy"), mptr(loss_sum), op.s());
  count_targets(cptr(targets), i64, n, ignore_index, count.data<int64_t>(), op.s());
  return read_count(count, op.device(), "cross_entropy");
}
void cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            int64_t ignore_index, Tensor& dlogits) {
  OpScope op("cross_entropy_backward", logits);
  const Dt dt = dt_of(logits, "cross_entropy_backward");
  ce_grad(dt, cptr(logits), cptr(targets), idx64(targets, "cross_entropy_backward"),
          stat(lse, "cross_entropy_backward", "lse"), logits.size(0), logits.size(1), ignore_index, float(dloss), dt,
          mptr(dlogits), nullptr, op.s());
}
void kl_div(const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) {
  OpScope op("kl_div", logits);
  const int64_t n = logits.size(0);
  Tensor row_kl = doubles(n, logits);
  kl_rows(dt_of(logits, "kl_div"), cptr(logits), cptr(teacher), n, logits.size(1), dptr(row_kl), op.s());
  sum_doubles(dptr(row_kl), n, dt_of(loss_sum, "kl_div"), mptr(loss_sum), op.s());
}
void kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) {
  OpScope op("kl_div_backward", logits);
  kl_grad(dt_of(logits, "kl_div_backward"), float(dloss), cptr(logits), cptr(teacher), logits.size(0), logits.size(1),
          mptr(dlogits), op.s());
}

// One chunk's gradients from its f32 logits (overwritten): G = dloss (softmax - onehot), then
// dh_chunk = G W and, when dw is defined, dw += G^T h_chunk. g_bf16: a [rows, V] bf16 buffer for bf16.
void chunk_gradients(Dt dt, const Tensor& h, const Tensor& w, const Tensor& targets, bool i64, const float* lse_p,
                     int64_t r0, int64_t cn, int64_t d, int64_t vocab, int64_t ignore_index, double dloss,
                     Tensor& logits, Tensor& g_bf16, Tensor& dh, Tensor& dw, const OpScope& op) {
  const size_t es = dtype_size(h.dtype()), is = dtype_size(targets.dtype());
  // G = dloss (softmax - onehot), in place over the f32 logits (and a bf16 copy for bf16 GEMMs).
  ce_grad(Dt::f32, logits.raw_data(), static_cast<const char*>(cptr(targets)) + r0 * is, i64, lse_p + r0, cn, vocab,
          ignore_index, float(dloss), Dt::f32, logits.raw_data(), mptr(g_bf16), op.s());
  const void* g = dt == Dt::bf16 ? cptr(g_bf16) : logits.raw_data();
  // dh_chunk = G W:  [cn, V] x [V, d]
  GemmArgs a;
  a.ab_dt = a.c_dt = dt;
  a.m = cn, a.n = d, a.k = vocab, a.lda = vocab, a.ldb = d, a.ldc = d;
  gemm(a, g, cptr(w), static_cast<char*>(mptr(dh)) + r0 * d * es, op.device(), op.s());
  if (dw.defined()) {  // dw += G^T h_chunk:  [V, cn] x [cn, d]
    GemmArgs b;
    b.ab_dt = b.c_dt = dt;
    b.trans_a = true;
    b.m = vocab, b.n = d, b.k = cn, b.lda = vocab, b.ldb = d, b.ldc = d, b.beta = 1.0f;
    gemm(b, g, static_cast<const char*>(cptr(h)) + r0 * d * es, mptr(dw), op.device(), op.s());
  }
}

// Chunks of `rows` rows: logits_chunk = h_chunk W^T in f32 (bf16 inputs accumulate in f32 and are
// written f32), then the row kernel; [N, V] never exists. With dh defined, each chunk's input
// gradient follows at once from the same logits (chunk_gradients).
int64_t linear_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                             int64_t ignore_index, Tensor& loss_sum, Tensor& lse, double dloss, Tensor& dh) {
  OpScope op("linear_cross_entropy", h);
  const Dt dt = dt_of(h, "linear_cross_entropy");
  const bool i64 = idx64(targets, "linear_cross_entropy");
  const int64_t n = h.size(0), d = h.size(1), vocab = w.size(0), rows = std::max<int64_t>(1, std::min(chunk, n));
  const size_t is = dtype_size(targets.dtype());
  Tensor logits = Tensor::empty({rows, vocab}, DType::f32, h.device());
  Tensor row_loss = doubles(n, h), count = Tensor::empty({1}, DType::i64, h.device());
  float* lse_p = stat(lse, "linear_cross_entropy", "lse");
  Tensor g_bf16 = dh.defined() && dt == Dt::bf16 ? Tensor::empty({rows, vocab}, DType::bf16, h.device()) : Tensor();
  Tensor no_dw;
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t cn = std::min(rows, n - r0);
    logits_chunk(dt, h, w, r0, cn, d, vocab, logits, op);
    ce_rows(Dt::f32, logits.raw_data(), static_cast<const char*>(cptr(targets)) + r0 * is, i64, cn, vocab, ignore_index,
            lse_p + r0, dptr(row_loss) + r0, error_flag(op.device()), op.s());
    if (dh.defined())
      chunk_gradients(dt, h, w, targets, i64, lse_p, r0, cn, d, vocab, ignore_index, dloss, logits, g_bf16, dh, no_dw,
                      op);
  }
  sum_doubles(dptr(row_loss), n, dt_of(loss_sum, "linear_cross_entropy"), mptr(loss_sum), op.s());
  count_targets(cptr(targets), i64, n, ignore_index, count.data<int64_t>(), op.s());
  return read_count(count, op.device(), "linear_cross_entropy");
}
void linear_cross_entropy_backward(double dloss, const Tensor& h, const Tensor& w, const Tensor& targets,
                                   const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh, Tensor& dw) {
  OpScope op("linear_cross_entropy_backward", h);
  const Dt dt = dt_of(h, "linear_cross_entropy_backward");
  const bool i64 = idx64(targets, "linear_cross_entropy_backward");
  const int64_t n = h.size(0), d = h.size(1), vocab = w.size(0), rows = std::max<int64_t>(1, std::min(chunk, n));
  Tensor logits = Tensor::empty({rows, vocab}, DType::f32, h.device());
  Tensor g_bf16 = dt == Dt::bf16 ? Tensor::empty({rows, vocab}, DType::bf16, h.device()) : Tensor();
  const float* lse_p = stat(lse, "linear_cross_entropy_backward", "lse");
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t cn = std::min(rows, n - r0);
    logits_chunk(dt, h, w, r0, cn, d, vocab, logits, op);
    chunk_gradients(dt, h, w, targets, i64, lse_p, r0, cn, d, vocab, ignore_index, dloss, logits, g_bf16, dh, dw, op);
  }
}

}  // namespace

void fill_loss(Backend& b) {
  b.cross_entropy = cross_entropy;
  b.cross_entropy_backward = cross_entropy_backward;
  b.linear_cross_entropy = linear_cross_entropy;
  b.linear_cross_entropy_backward = linear_cross_entropy_backward;
  b.kl_div = kl_div;
  b.kl_div_backward = kl_div_backward;
}

}  // namespace koff::cuda
