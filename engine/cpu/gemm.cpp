#include "engine/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>

#include <climits>
#include <cstring>
#include <vector>

#include <omp.h>

#include "engine/cpu/cpu_backend.h"
#include "engine/tensor/error.h"

namespace koff::cpu {

namespace {

void blas_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

void blas_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
               const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

// The same bits on any number of threads (engine/cpu/threads.h changes the count during a run):
// OpenBLAS's threaded and single-threaded drivers cut K differently when it exceeds their block (GEMM_Q,
// 384 for the AVX-512 sgemm kernels), which changes the summation order; with K <= 256 a call is one
// block in both. So K is cut here into runs of kBlasK, each added into C (beta = 1 after the first).
// Measured (OpenBLAS 0.3.21, 1/2/3 threads, K 200-1536): Cooperlake and SkylakeX kernels then give
// identical bits; Haswell and Prescott kernels differ anyway (blas_same_bits_on_any_thread_count()
// tells at run time); 2048x576x1536 and the like take the same time within noise.
constexpr int64_t kBlasK = 256;

template <typename T>
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc) {
  for (int64_t k0 = 0; k0 < k; k0 += kBlasK) {
    const int64_t kk = std::min(kBlasK, k - k0);
    const T* ak = ta ? a + k0 * lda : a + k0;  // A is [K, M] when transposed, else [M, K]
    const T* bk = tb ? b + k0 : b + k0 * ldb;  // B is [N, K] when transposed, else [K, N]
    blas_call(ta, tb, m, n, kk, alpha, ak, lda, bk, ldb, k0 == 0 ? beta : T(1), c, ldc);
  }
}

}  // namespace

bool blas_same_bits_on_any_thread_count() {
  static const bool same = [] {
    const int threads = omp_get_max_threads();
    if (threads < 2) return true;
    // Shapes around the K block, small and tall, as the steps have them.
    const int64_t shapes[][3] = {{128, 64, 400}, {512, 96, 1000}, {256, 300, 385}, {96, 128, 64}};
    for (const auto& s : shapes) {
      const int64_t m = s[0], n = s[1], k = s[2];
      std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n)), c1(static_cast<size_t>(m * n)),
          cn(c1.size());
      uint32_t x = 12345;
      for (auto* v : {&a, &b})
        for (float& e : *v) e = static_cast<float>((x = x * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
      omp_set_num_threads(1);
      blas_gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c1.data(), n);
      omp_set_num_threads(threads);
      blas_gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, cn.data(), n);
      if (std::memcmp(c1.data(), cn.data(), c1.size() * sizeof(float)) != 0) return false;
    }
    return true;
  }();
  return same;
}

template <typename T>
void gemm(const T* a, const T* b, T* c, int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b,
          bool b_shared, T alpha, T beta) {
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {
    // BLAS rejects lda = 0; the product of empty sums is zero.
    const int64_t total = batch * m * n;
    for (int64_t i = 0; i < total; ++i) c[i] = beta == T(0) ? T(0) : beta * c[i];
    return;
  }
  // cblas takes int sizes: refuse instead of silently wrapping.
  KOFF_CHECK(batch * m <= INT_MAX && n <= INT_MAX && k <= INT_MAX,
             "gemm: sizes batch={} M={} N={} K={} exceed the "
             "32-bit BLAS interface",
             batch, m, n, k);
  const int64_t lda = trans_a ? m : k;
  const int64_t ldb = trans_b ? k : n;
  if (b_shared && !trans_a) {
    blas_gemm(false, trans_b, batch * m, n, k, alpha, a, lda, b, ldb, beta, c, n);
    return;
  }
  for (int64_t i = 0; i < batch; ++i) {
    const T* bi = b_shared ? b : b + i * k * n;
    blas_gemm(trans_a, trans_b, m, n, k, alpha, a + i * m * k, lda, bi, ldb, beta, c + i * m * n, n);
  }
}

template void gemm<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, bool, bool, bool,
                          float, float);
template void gemm<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, int64_t, bool, bool, bool,
                           double, double);

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_gemm(Backend& table) {
  table.gemm = [](const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k,
                  bool trans_a, bool trans_b, bool b_shared, double alpha, double beta) {
    on_float(a, "matmul", [&](auto tag) {
      using T = decltype(tag);
      cpu::gemm<T>(ptr<T>(a), ptr<T>(b), mut<T>(c), batch, m, n, k, trans_a, trans_b, b_shared, static_cast<T>(alpha),
                   static_cast<T>(beta));
    });
  };
  // Side by side when there are several and each is small or skinny: inside an active OpenMP region
  // OpenBLAS (the OpenMP build) runs each call on the calling thread. The LoRA GEMMs (one side 8) take
  // 13-40 us on one core and 40-100 us spread over two by OpenBLAS; one at a time on both cores
  // otherwise. The ops layer has checked the shapes (32-bit sizes included): nothing here throws.
  table.gemm_many = [](const std::vector<const Tensor*>& a, const std::vector<const Tensor*>& b,
                       const std::vector<Tensor*>& c, const std::vector<GemmShape>& shapes) {
    const int64_t count = static_cast<int64_t>(shapes.size());
    if (count == 0) return;
    bool side_by_side = count > 1;
    for (const GemmShape& s : shapes)
      side_by_side = side_by_side && (std::min({s.m, s.n, s.k}) <= 32 || s.m * s.n * s.k <= (int64_t{1} << 22));
    on_float(*a[0], "gemm_many", [&](auto tag) {
      using T = decltype(tag);
#pragma omp parallel for schedule(dynamic, 1) if (side_by_side)
      for (int64_t i = 0; i < count; ++i) {
        const GemmShape& s = shapes[static_cast<size_t>(i)];
        cpu::gemm<T>(ptr<T>(*a[static_cast<size_t>(i)]), ptr<T>(*b[static_cast<size_t>(i)]),
                     mut<T>(*c[static_cast<size_t>(i)]), 1, s.m, s.n, s.k, s.trans_a, s.trans_b, true,
                     static_cast<T>(s.alpha), static_cast<T>(s.beta));
      }
    });
  };
  // out = x2d w^T (+ bias): the GEMM, then the bias on every row (CUDA fuses the two).
  table.linear = [](const Tensor& x2d, const Tensor& w, const Tensor& bias, Tensor& out) {
    const Backend& cpu = cpu_backend();
    cpu.gemm(x2d, w, out, 1, x2d.size(0), w.size(0), x2d.size(1), false, true, true, 1.0, 0.0);
    if (bias.defined()) cpu.add_bias(out, bias, out);
  };
}

}  // namespace koff::cpu
