#include "engine/cpu/rope.h"

#include "engine/cpu/common.h"

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

template void rope<float>(const float*, const float*, const float*, bool, float*, int64_t, int64_t, int64_t, int64_t);
template void rope<double>(const double*, const double*, const double*, bool, double*, int64_t, int64_t, int64_t,
                           int64_t);

}  // namespace koff::cpu
