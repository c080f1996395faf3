// Vectorisable float math shared by the CPU kernels.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__GNUC__)
#define KOFF_INLINE [[gnu::always_inline]] inline
#else
#define KOFF_INLINE inline
#endif

// The project compiles for baseline x86-64 (SSE2, 4 float lanes). A float kernel's inner loops marked
// with this are built three times, for AVX-512 (x86-64-v4), AVX2+FMA (v3) and the baseline, and the
// loader picks the one this CPU runs (GCC target_clones, an ifunc). Put it on a non-template function
// whose body is inlined (KOFF_INLINE) template code and call it from inside the OpenMP loop, not around
// it. The AVX2/AVX-512 versions contract a*b+c into FMAs: results differ from the baseline build in
// the last bit, as between any two machines of different ISA levels.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define KOFF_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KOFF_SIMD_CLONES
#endif

namespace koff::cpu {

// e^x for float, written so that `#pragma omp simd` loops vectorise it: straight-line arithmetic, the
// special cases applied as bit masks (a clamp or a select on x lets GCC split the loop body into
// branches, which stops the vectoriser). n = round(x log2 e) by the 1.5 * 2^23 shifter trick,
// r = x - n ln2 in two parts (Cody-Waite), Cephes' degree-6 polynomial for e^r on |r| <= ln2/2, times
// 2^n built in the exponent bits. Checked against double exp at every float in [-87, 88.3]: at most
// 1.02 ulp (0.99 without FMA contraction).
// Returns 0 for x < -87 (e^-87 = 1.6e-38: everything below FLT_MIN, subnormals included, is flushed),
// +inf above 88.3, NaN for NaN. Outside [-87, 88.3] the arithmetic is garbage but masked; the integer
// part is unsigned, so it wraps instead of overflowing.
KOFF_INLINE float exp_flush(float x) {
  constexpr float kLo = -87.0f, kHi = 88.3f, kShifter = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + kShifter;
  const float n = t - kShifter;
  const uint32_t pow2n = (std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kShifter) + 127u) << 23;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const uint32_t e = std::bit_cast<uint32_t>(y * std::bit_cast<float>(pow2n));
  const uint32_t big = 0u - uint32_t(x > kHi), keep = 0u - uint32_t(!(x < kLo));
  return std::bit_cast<float>(((e & ~big) | (0x7f800000u & big)) & keep);
}
// The f64 counterpart: exact exp, the same flush of results below the smallest normal.
inline double exp_flush(double x) {
  const double e = std::exp(x);
  return e < std::numeric_limits<double>::min() ? 0.0 : e;
}

}  // namespace koff::cpu
