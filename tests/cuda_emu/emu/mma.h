// Fake WMMA: fragments hold 8 elements per lane at SCRAMBLED positions (a different random permutation
// for matrix_a, matrix_b and the accumulator), so code that assumes a layout fails.
#pragma once
#include <array>
#include <random>

#include "cuda_bf16.h"
#include "cuda_runtime.h"

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
inline std::array<int, 256> make_perm(unsigned seed) {
  std::array<int, 256> p;
  for (int i = 0; i < 256; ++i) p[size_t(i)] = i;
  std::mt19937 g(seed);
  std::shuffle(p.begin(), p.end(), g);
  return p;
}
inline const std::array<int, 256> perm_a = make_perm(101), perm_b = make_perm(202), perm_c = make_perm(303);
template <typename Use>
const std::array<int, 256>& perm() {
  if constexpr (std::is_same_v<Use, matrix_a>) return perm_a;
  else if constexpr (std::is_same_v<Use, matrix_b>) return perm_b;
  else return perm_c;
}
// (row, col) of element i of this lane.
template <typename Use>
inline void pos(int i, int& r, int& c) {
  const int e = perm<Use>()[size_t((threadIdx.x % 32) * 8 + unsigned(i))];
  r = e / 16;
  c = e % 16;
}
inline float to_f(float v) { return v; }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
T from_f(float v);
template <>
inline float from_f<float>(float v) { return v; }
template <>
inline __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

inline void check_ptr(const void* p, unsigned ldm, size_t elem) {
  if (reinterpret_cast<uintptr_t>(p) % 32) emu::die("wmma pointer not 32-byte aligned");
  if ((ldm * elem) % 16) emu::die("wmma ldm not a multiple of 16 bytes");
  // warp-uniform pointer and ldm
  const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
  emu::st.lane_ptr[w][lane] = reinterpret_cast<uintptr_t>(p) ^ (uintptr_t(ldm) << 48);
  emu::syncwarp();
  for (int l = 0; l < 32; ++l)
    if (emu::st.lane_ptr[w][size_t(l)] != emu::st.lane_ptr[w][lane]) emu::die("wmma pointer/ldm not warp-uniform");
  emu::syncwarp();
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
 public:
  enum { num_elements = 8 };
  T x[8];
};

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  // Each lane reads its own elements first (no implicit barrier before: a missing __syncwarp shows).
  for (int i = 0; i < 8; ++i) {
    int r, c;
    detail::pos<Use>(i, r, c);
    f.x[i] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
  }
  detail::check_ptr(p, ldm, sizeof(T));
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  for (int i = 0; i < 8; ++i) {
    int r, c;
    detail::pos<accumulator>(i, r, c);
    f.x[i] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
  detail::check_ptr(p, ldm, 4);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  detail::check_ptr(p, ldm, 4);  // the warp arrives; then each lane writes on its own (no barrier after)
  for (int i = 0; i < 8; ++i) {
    int r, c;
    detail::pos<accumulator>(i, r, c);
    (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[i];
  }
}
template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (int i = 0; i < 8; ++i) f.x[i] = detail::from_f<T>(v);
}
template <typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  const unsigned w = threadIdx.x / 32;
  auto& A = emu::st.xa[w];
  auto& B = emu::st.xb[w];
  auto& C = emu::st.xc[w];
  for (int i = 0; i < 8; ++i) {
    int r, cc;
    detail::pos<matrix_a>(i, r, cc);
    A[size_t(r * 16 + cc)] = __bfloat162float(a.x[i]);
    detail::pos<matrix_b>(i, r, cc);
    B[size_t(r * 16 + cc)] = __bfloat162float(b.x[i]);
    detail::pos<accumulator>(i, r, cc);
    C[size_t(r * 16 + cc)] = c.x[i];
  }
  emu::syncwarp();
  float out[8];
  for (int i = 0; i < 8; ++i) {
    int r, cc;
    detail::pos<accumulator>(i, r, cc);
    float s = C[size_t(r * 16 + cc)];
    for (int k = 0; k < 16; ++k) s += A[size_t(r * 16 + k)] * B[size_t(k * 16 + cc)];
    out[i] = s;
  }
  emu::syncwarp();
  for (int i = 0; i < 8; ++i) d.x[i] = out[i];
}
}  // namespace nvcuda::wmma
