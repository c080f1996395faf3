// CPU kernel benchmarks (Google Benchmark). Each reports its achieved rate as a counter over wall
// time (UseRealTime: the kernels run on OpenMP threads, so main-thread CPU time would overstate it):
// GFLOP/s for GEMM and attention, GB/s (bytes read + written once) for the memory-bound kernels.
//
// BM_OpenBlasSgemm calls cblas_sgemm directly on the same shapes as BM_MatmulF32, so the ratio
// between the two is the overhead of the engine's op layer over the BLAS it dispatches to.
//
//   ./build/bench/koff_bench --benchmark_filter=Gemm|Sgemm
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>

#include "engine/cpu/runtime.h"
#include "autograd/functions.h"
#include "engine/ops/ops.h"
#include "engine/tensor/random.h"

namespace koff {
namespace {

Tensor rnd(const Shape& s, uint64_t stream) { return randn(s, Philox(7, stream), DType::f32); }

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
void set_bytes(benchmark::State& state, double bytes_per_iter) {
  state.counters["GB/s"] = benchmark::Counter(bytes_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// y = x W^T as the model's projections do it: x [M, K], W [N, K].
void BM_MatmulF32(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Tensor x = rnd({M, K}, 1), w = rnd({N, K}, 2);
  for (auto _ : state) benchmark::DoNotOptimize(ops::matmul(x, w, false, true));
  set_flops(state, 2.0 * M * N * K);
}

void BM_OpenBlasSgemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Tensor x = rnd({M, K}, 1), w = rnd({N, K}, 2), y = Tensor::empty({M, N});
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, x.data<float>(), int(K),
                w.data<float>(), int(K), 0.0f, y.data<float>(), int(N));
    benchmark::DoNotOptimize(y.data<float>());
  }
  set_flops(state, 2.0 * M * N * K);
}

#define GEMM_SHAPES Args({512, 512, 512})->Args({1024, 1024, 1024})->Args({2048, 256, 1024})->Args({256, 2048, 256})
BENCHMARK(BM_MatmulF32)->GEMM_SHAPES->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OpenBlasSgemm)->GEMM_SHAPES->Unit(benchmark::kMillisecond)->UseRealTime();

// Attention forward (+ backward): B sequences of T tokens, H=8 query heads over G=2 KV heads, head dim hd,
// m=16 memory slots. Args: {T, hd, B}. {256|1024, 64, 1} are the long-standing shapes; {256, 32, 16} is the
// attention of the 6-layer d=256 training step (8 heads over 2 KV heads, batch 16).
void attention_bench(benchmark::State& state, bool backward) {
  const int64_t T = state.range(0), hd = state.range(1), B = state.range(2), H = 8, G = 2, m = 16;
  const double scale = 1.0 / std::sqrt(double(hd));
  Tensor q = rnd({B, T, H, hd}, 3), k = rnd({B, T, G, hd}, 4), v = rnd({B, T, G, hd}, 5);
  Tensor mk = rnd({B, m, G, hd}, 6), mv = rnd({B, m, G, hd}, 7), dout = rnd({B, T, H, hd}, 8);
  for (auto _ : state) {
    auto r = ops::attention(q, k, v, mk, mv, scale, true);
    if (backward) benchmark::DoNotOptimize(ops::attention_backward(dout, q, k, v, mk, mv, r.out, r.lse, scale, true));
    benchmark::DoNotOptimize(r.out.raw_data());
  }
  // Causal: each query sees about T/2 + m keys; QK^T and PV are 2*hd flops per key each.
  double fwd = 4.0 * B * H * hd * (T * (T + 1) / 2.0 + T * m);
  set_flops(state, backward ? fwd * 3.5 : fwd);  // backward: recompute QK^T plus 4 more products
}
void BM_AttentionForward(benchmark::State& state) { attention_bench(state, false); }
void BM_AttentionForwardBackward(benchmark::State& state) { attention_bench(state, true); }
// Wall-clock rates: the kernels run on an OpenMP team, whose work the main thread's CPU time misses.
#define ATTENTION_SHAPES Args({256, 64, 1})->Args({1024, 64, 1})->Args({256, 32, 16})->UseRealTime()
BENCHMARK(BM_AttentionForward)->ATTENTION_SHAPES->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AttentionForwardBackward)->ATTENTION_SHAPES->Unit(benchmark::kMillisecond);

void BM_RmsNorm(benchmark::State& state) {
  const int64_t rows = state.range(0), d = state.range(1);
  Tensor x = rnd({rows, d}, 9), w = rnd({d}, 10);
  for (auto _ : state) benchmark::DoNotOptimize(ops::rmsnorm(x, w, 1e-5).y.raw_data());
  set_bytes(state, 4.0 * (2.0 * rows * d + d + rows));
}
BENCHMARK(BM_RmsNorm)->Args({4096, 512})->Args({2048, 4096})->UseRealTime();

void BM_RmsNormBackward(benchmark::State& state) {
  const int64_t rows = state.range(0), d = state.range(1);
  Tensor x = rnd({rows, d}, 9), w = rnd({d}, 10), dy = rnd({rows, d}, 11);
  auto f = ops::rmsnorm(x, w, 1e-5);
  for (auto _ : state) benchmark::DoNotOptimize(ops::rmsnorm_backward(dy, x, w, f.rstd).dx.raw_data());
  set_bytes(state, 4.0 * (3.0 * rows * d + 2.0 * d + rows));
}
BENCHMARK(BM_RmsNormBackward)->Args({4096, 512})->UseRealTime();

// Cross-entropy over a vocabulary: reads the logits once (forward) / reads and writes (backward).
void BM_CrossEntropy(benchmark::State& state) {
  const int64_t N = state.range(0), V = state.range(1);
  Tensor logits = rnd({N, V}, 12);
  std::vector<int64_t> t(N);
  for (int64_t i = 0; i < N; ++i) t[i] = (i * 7919) % V;
  Tensor targets = Tensor::from_vector(t, {N});
  for (auto _ : state) benchmark::DoNotOptimize(ops::cross_entropy(logits, targets).loss_sum.raw_data());
  set_bytes(state, 4.0 * N * V);
}
BENCHMARK(BM_CrossEntropy)->Args({1024, 8192})->Args({256, 32768})->UseRealTime();

// Fused lm_head + cross-entropy (forward + backward without dW), GEMM-dominated.
void BM_LinearCrossEntropy(benchmark::State& state) {
  const int64_t N = state.range(0), d = 256, V = state.range(1);
  Tensor h = rnd({N, d}, 13), w = rnd({V, d}, 14);
  std::vector<int64_t> t(N);
  for (int64_t i = 0; i < N; ++i) t[i] = (i * 7919) % V;
  Tensor targets = Tensor::from_vector(t, {N});
  for (auto _ : state) {
    auto f = ops::linear_cross_entropy(h, w, targets, 256);
    benchmark::DoNotOptimize(ops::linear_cross_entropy_backward(1.0, h, w, targets, f.lse, false, 256).dh.raw_data());
  }
  set_flops(state, 3 * 2.0 * N * d * V);
}
BENCHMARK(BM_LinearCrossEntropy)->Args({1024, 8192})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace koff

// BENCHMARK_MAIN, after the runtime koff itself uses (engine/cpu/runtime.h): the OpenBLAS kernels this CPU
// allows, idle OpenMP threads that sleep.
int main(int argc, char** argv) {
  koff::cpu::settle_environment(argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("cpu runtime", koff::cpu::runtime_summary());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
