// Rotary position embedding, Hugging Face "rotate_half" convention (pairs (i, i + hd/2), not
// interleaved (2i, 2i+1) as in Meta's original code; HF checkpoints permute q/k weights for this).
//
//   x, out [B, T, N, hd] (N heads), cos, sin [T, hd/2]; h = hd/2, c = cos[t, i], s = sin[t, i]:
//   out[.., i]     = x[.., i] c - x[.., i + h] s
//   out[.., i + h] = x[.., i + h] c + x[.., i] s          i in [0, h)
//
// inverse = true uses -s: the rotation by -angle, which is both the inverse and the transpose of the
// forward rotation, hence also its backward. out may alias x (each pair is read before written).

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"

namespace koff::cpu {

template <typename T>
void rope(const T* x, const T* cos, const T* sin, bool inverse, T* out, int64_t batch, int64_t t, int64_t heads,
          int64_t head_dim) {
  const int64_t h = head_dim / 2;
  const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for collapse(2) schedule(static) if (batch * t * heads * head_dim >= kParallelMin)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t p = 0; p < t; ++p) {
      const T* c = cos + p * h;
      const T* s = sin + p * h;
      for (int64_t n = 0; n < heads; ++n) {
        const int64_t base = ((b * t + p) * heads + n) * head_dim;
        const T* x0 = x + base;
        const T* x1 = x0 + h;
        T* o0 = out + base;
        T* o1 = o0 + h;
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) {
          const T a = x0[i], bb = x1[i], si = sign * s[i];
          o0[i] = a * c[i] - bb * si;
          o1[i] = bb * c[i] + a * si;
        }
      }
    }
  }
}

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_rope(Backend& table) {
  table.rope = [](const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) {
    on_float(x, "rope", [&](auto tag) {
      using T = decltype(tag);
      cpu::rope<T>(ptr<T>(x), ptr<T>(cos), ptr<T>(sin), inverse, mut<T>(out), x.size(0), x.size(1), x.size(2),
                   x.size(3));
    });
  };
}

}  // namespace koff::cpu
