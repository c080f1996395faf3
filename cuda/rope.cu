// Rotary position embedding (RoPE), bf16 I/O with f32 math, rotate-half layout: x [B, T, H, hd] with
// the pair (k, k + hd/2) of every head rotated by the angle of position p,
//   out[k]        = x[k] cos[p, k] - x[k + hd/2] sin[p, k]
//   out[k + hd/2] = x[k + hd/2] cos[p, k] + x[k] sin[p, k]
// (cos/sin [T, hd/2]; `inverse` negates sin: the rotation back, which is also the backward). A
// grid-stride map over B T H hd/2 pairs (cuda/patterns.cuh), memory-bound.
#include "cuda/backend.h"
#include "cuda/common.cuh"
#include "cuda/patterns.cuh"

namespace koff::cuda {

namespace {

template <typename T>
struct RopeF {
  const T* x;
  const T* cos;
  const T* sin;
  float sign;
  T* out;
  int64_t t, heads, hd;
  __device__ void operator()(int64_t i) const {
    const int64_t h = hd / 2, k = i % h, row = i / h;  // row = (b * t + p) * heads + n
    const int64_t p = (row / heads) % t;
    const int64_t base = row * hd;
    const float a = ld(x, base + k), b = ld(x, base + h + k);
    const float c = ld(cos, p * h + k), si = sign * ld(sin, p * h + k);
    st(out, base + k, a * c - b * si);
    st(out, base + h + k, b * c + a * si);
  }
};

void rope(Dt dt, const void* x, const void* cos, const void* sin, bool inverse, void* out, int64_t batch, int64_t t,
          int64_t heads, int64_t head_dim, cudaStream_t s) {
  const int64_t n = batch * t * heads * (head_dim / 2);
  if (n == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    RopeF<T> f{static_cast<const T*>(x), static_cast<const T*>(cos), static_cast<const T*>(sin), inverse ? -1.0f : 1.0f,
               static_cast<T*>(out), t, heads, head_dim};
    map_kernel<<<grid_for(n, 256), 256, 0, s>>>(n, f);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

// ---- the Backend entry -----------------------------------------------------------------------

void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) {
  OpScope op("rope", x);
  rope(dt_of(x, "rope"), cptr(x), cptr(cos), cptr(sin), inverse, mptr(out), x.size(0), x.size(1), x.size(2),
       x.size(3), op.s());
}

}  // namespace

void fill_rope(Backend& b) { b.rope = rope; }

}  // namespace koff::cuda
