// RMSNorm over the last dim, bf16 I/O with f32 math, one block per row (warp-shuffle block sums):
//   forward   rstd = 1 / sqrt(mean(x^2) + eps) (f32, kept for the backward), y = x rstd w;
//   backward  dx = rstd (w dy - x c) with c = mean(dy w x) rstd^2, per row (the same kernel shape);
//             dw = sum over rows of dy x rstd, a deterministic column sum (cuda/patterns.cuh).
#include "cuda/backend.h"
#include "cuda/common.cuh"
#include "cuda/patterns.cuh"

namespace koff::cuda {

namespace {

template <typename T>
__global__ void rmsnorm_kernel(const T* x, const T* w, float eps, T* y, float* rstd, int64_t d) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * d;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = ld(xr, i);
    ss += v * v;
  }
  ss = block_sum(ss, sh);
  const float rs = static_cast<float>(1.0 / sqrt(double(ss) / double(d) + double(eps)));
  if (threadIdx.x == 0) rstd[row] = rs;
  T* yr = y + row * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) st(yr, i, ld(xr, i) * rs * ld(w, i));
}

template <typename T>
__global__ void rmsnorm_dx_kernel(const T* dy, const T* x, const T* w, const float* rstd, T* dx, int64_t d) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const T *xr = x + row * d, *dyr = dy + row * d;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += ld(dyr, i) * ld(w, i) * ld(xr, i);
  s = block_sum(s, sh);
  const float rs = rstd[row], c = (s / float(d)) * rs * rs;
  T* dxr = dx + row * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) st(dxr, i, rs * (ld(w, i) * ld(dyr, i) - ld(xr, i) * c));
}

template <typename T>
struct NormWeightGrad {
  const T* dy;
  const T* x;
  const float* rstd;
  int64_t d;
  __device__ float operator()(int64_t r, int64_t c) const { return ld(dy, r * d + c) * ld(x, r * d + c) * rstd[r]; }
};

void rmsnorm(Dt dt, const void* x, const void* w, float eps, void* y, float* rstd, int64_t rows, int64_t d,
             cudaStream_t s) {
  if (rows == 0) return;
  check_rows(rows);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    rmsnorm_kernel<T><<<unsigned(rows), kRowThreads, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(w), eps,
                                                              static_cast<T*>(y), rstd, d);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

// dw via a column reduction: scratch column_chunks(rows) * d doubles.
void rmsnorm_backward(Dt dt, const void* dy, const void* x, const void* w, const float* rstd, void* dx, void* dw,
                      int64_t rows, int64_t d, double* scratch, cudaStream_t s) {
  check_rows(rows);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    if (rows > 0) {
      rmsnorm_dx_kernel<T><<<unsigned(rows), kRowThreads, 0, s>>>(
          static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(w), rstd, static_cast<T*>(dx), d);
      KOFF_CUDA_CHECK(cudaGetLastError());
    }
    column_sum(NormWeightGrad<T>{static_cast<const T*>(dy), static_cast<const T*>(x), rstd, d}, rows, d, 1,
               static_cast<T*>(dw), scratch, s);
  });
}

// ---- the Backend entries ---------------------------------------------------------------------

void rmsnorm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  OpScope op("rmsnorm", x);
  rmsnorm(dt_of(x, "rmsnorm"), cptr(x), cptr(w), float(eps), mptr(y), stat(rstd, "rmsnorm", "rstd"), rows_of(x),
          w.numel(), op.s());
}
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx, Tensor& dw) {
  OpScope op("rmsnorm_backward", x);
  const int64_t rows = rows_of(x), d = w.numel();
  Tensor scratch = doubles(column_chunks(rows) * d, x);
  rmsnorm_backward(dt_of(x, "rmsnorm_backward"), cptr(dy), cptr(x), cptr(w), stat(rstd, "rmsnorm_backward", "rstd"),
                   mptr(dx), mptr(dw), rows, d, dptr(scratch), op.s());
}

}  // namespace

void fill_norm(Backend& b) {
  b.rmsnorm = rmsnorm;
  b.rmsnorm_backward = rmsnorm_backward;
}

}  // namespace koff::cuda
