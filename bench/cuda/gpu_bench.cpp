// GPU benchmark for bench/gpu_check.sh: every CUDA kernel family at Llama-3.2-3B shapes, then a KOFF
// training step on a Llama-3.2-3B-shaped model, all timed with CUDA events on the backend's stream.
//
//   koff_cuda_bench [--layers L] [--seq T] [--steps S] [--json FILE]
//
// Ceilings: copy bandwidth is MEASURED first in the same run (device-to-device copy, bytes read +
// written); the bf16 matrix ceiling is the 790 TFLOP/s measured on this workplace's H200s
// (.library/device/KINDS.md), and this run's own large cuBLASLt GEMM is printed beside it.
// Memory-bound kernels (on working sets of at least 4x the L2) report GB/s (bytes each must move at
// least once) and the fraction of the copy ceiling; compute-bound ones TFLOP/s and the fraction of 790.
//
// The step is the engine's own (OffloadTrainer::train_step on a Llama-3.2-3B-shaped Transformer with
// random bf16 weights, f32 trainables; see bench_step). MFU counts the step's useful FLOPs as the
// profiler (engine/ops/profile.h) counts them: every GEMM the ops layer issued (frozen weights get no
// weight-gradient GEMM), attention (4 hd per visible query-key pair and head, backward twice that),
// the fused lm_head; over the step time, against 990 TFLOP/s (dense bf16 datasheet), 790 (measured
// on this workplace's H200s) and this run's own 8192^3 GEMM.
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/device.h"
#include "engine/koff/trainer.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"
#include "engine/ops/profile.h"
#include "engine/tensor/random.h"

namespace koff {
namespace {

namespace ag = autograd;
using ag::Variable;

constexpr double kGemmCeiling = 790e12;     // bf16 dense, measured here (KINDS.md)
constexpr double kDatasheetBf16 = 990e12;   // H200 SXM dense bf16, datasheet
const Device kGpu = Device::cuda(0);

struct Row {
  std::string name, metric;
  double ms, value, fraction;
};
std::vector<Row> rows;
double copy_ceiling = 4.3e12;  // replaced by the measurement
double gemm_ceiling_measured = 790e12;  // replaced by measure_ceilings()

// Mean milliseconds of fn over `iters` runs after `warmup`, by CUDA events on the backend stream.
double time_ms(const std::function<void()>& fn, int warmup = 2, int iters = 10) {
  cudaStream_t s = cuda::stream(0);
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  KOFF_CUDA_CHECK(cudaEventCreate(&a));
  KOFF_CUDA_CHECK(cudaEventCreate(&b));
  KOFF_CUDA_CHECK(cudaEventRecord(a, s));
  for (int i = 0; i < iters; ++i) fn();
  KOFF_CUDA_CHECK(cudaEventRecord(b, s));
  KOFF_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  KOFF_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / iters;
}

void bandwidth(const std::string& name, double bytes, const std::function<void()>& fn) {
  const double ms = time_ms(fn), bps = bytes / (ms * 1e-3);
  rows.push_back({name, "GB/s", ms, bps / 1e9, bps / copy_ceiling});
  std::printf("  %-44s %9.3f ms %9.1f GB/s   %5.1f%% of copy\n", name.c_str(), ms, bps / 1e9, 100 * bps / copy_ceiling);
  std::fflush(stdout);
}
void compute(const std::string& name, double flops, const std::function<void()>& fn, int warmup = 2, int iters = 10) {
  const double ms = time_ms(fn, warmup, iters), fps = flops / (ms * 1e-3);
  rows.push_back({name, "TFLOP/s", ms, fps / 1e12, fps / kGemmCeiling});
  std::printf("  %-44s %9.3f ms %9.1f TFLOP/s %5.1f%% of 790\n", name.c_str(), ms, fps / 1e12, 100 * fps / kGemmCeiling);
  std::fflush(stdout);
}

Tensor rnd(const Shape& shape, uint64_t seed, double std = 1.0, DType dt = DType::bf16) {
  return randn(shape, Philox(seed, 7), DType::f32, std).to(dt).to(kGpu);
}

void measure_ceilings() {
  const size_t bytes = size_t(2) << 30;
  Tensor a = Tensor::empty({int64_t(bytes / 4)}, DType::f32, kGpu), b = Tensor::empty({int64_t(bytes / 4)}, DType::f32, kGpu);
  KOFF_CUDA_CHECK(cudaMemsetAsync(a.raw_data(), 0, bytes, cuda::stream(0)));
  const double ms = time_ms([&] {
    KOFF_CUDA_CHECK(cudaMemcpyAsync(b.raw_data(), a.raw_data(), bytes, cudaMemcpyDeviceToDevice, cuda::stream(0)));
  });
  copy_ceiling = 2.0 * double(bytes) / (ms * 1e-3);
  std::printf("copy ceiling (measured, D2D 2 GiB, read + write): %.0f GB/s\n", copy_ceiling / 1e9);
  rows.push_back({"copy D2D 2 GiB (ceiling)", "GB/s", ms, copy_ceiling / 1e9, 1.0});
  Tensor x = rnd({8192, 8192}, 1), y = rnd({8192, 8192}, 2);
  compute("cuBLASLt bf16 GEMM 8192^3", 2.0 * 8192.0 * 8192.0 * 8192.0, [&] { (void)ops::matmul(x, y); });
  gemm_ceiling_measured = rows.back().value * 1e12;
}

void bench_kernels(int64_t T) {
  const int64_t D = 3072, F = 8192, H = 24, G = 8, hd = 128, m = 16, V = 128256, N = T;
  // Memory-bound kernels run on M >= 16384 rows: every working set is then at least 4x the H200's ~60 MB
  // L2 (add: 3 x 16384 x 3072 x 2 B = 302 MB), so their GB/s are HBM figures, not cache ones.
  const int64_t M = std::max<int64_t>(N, 16384);
  std::printf("\nkernels at Llama-3.2-3B shapes (GEMMs and attention %ld tokens, memory-bound kernels %ld rows, bf16):\n",
              long(N), long(M));
  Tensor x = rnd({N, D}, 10), xm = rnd({M, D}, 10), ym = rnd({M, D}, 11), w = rnd({D}, 12);
  bandwidth("add [M, 3072]", 3.0 * M * D * 2, [&] { (void)ops::add(xm, ym); });
  ops::RmsNormOut rn = ops::rmsnorm(xm, w, 1e-5);
  bandwidth("rmsnorm [M, 3072]", 2.0 * M * D * 2, [&] { (void)ops::rmsnorm(xm, w, 1e-5); });
  bandwidth("rmsnorm_backward [M, 3072]", 3.0 * M * D * 2, [&] { (void)ops::rmsnorm_backward(ym, xm, w, rn.rstd); });
  Tensor q = rnd({1, M, H, hd}, 13);
  ops::RopeTables tab = ops::rope_tables(0, M, hd, 500000.0, {32.0, 1.0, 4.0, 8192}, DType::f32);
  tab.cos = tab.cos.to(DType::bf16).to(kGpu);
  tab.sin = tab.sin.to(DType::bf16).to(kGpu);
  bandwidth("rope q [1, M, 24, 128]", 2.0 * M * H * hd * 2, [&] { (void)ops::rope(q, tab); });
  Tensor g = rnd({M, F}, 14), u = rnd({M, F}, 15), dy = rnd({M, F}, 16);
  bandwidth("swiglu [M, 8192]", 3.0 * M * F * 2, [&] { (void)ops::swiglu(g, u); });
  bandwidth("swiglu_backward [M, 8192]", 5.0 * M * F * 2, [&] { (void)ops::swiglu_backward(dy, g, u); });
  Tensor zn = rnd({F}, 17), zh = rnd({H}, 18);
  // The fused SwiGLU + neuron gate: the same bytes as swiglu (z is 16 KB), one pass instead of swiglu then
  // mul_groups. The backward's dz column reduction rides on the elementwise pass; want_dz = false (a
  // constant gate) is the elementwise pass alone.
  bandwidth("swiglu_gated [M, 8192]", 3.0 * M * F * 2, [&] { (void)ops::swiglu_gated(g, u, zn); });
  bandwidth("swiglu_gated_backward [M, 8192]", 5.0 * M * F * 2,
            [&] { (void)ops::swiglu_gated_backward(dy, g, u, zn); });
  bandwidth("swiglu_gated_backward want_dz=false", 5.0 * M * F * 2,
            [&] { (void)ops::swiglu_gated_backward(dy, g, u, zn, false); });
  bandwidth("mul_groups neuron gate [M, 8192]", 2.0 * M * F * 2, [&] { (void)ops::mul_groups(g, zn, 1); });
  bandwidth("mul_groups head gate [1, M, 24, 128]", 2.0 * M * H * hd * 2, [&] { (void)ops::mul_groups(q, zh, hd); });
  bandwidth("sum_groups_product neuron gate grad", 2.0 * M * F * 2, [&] { (void)ops::sum_groups_product(dy, g, F, 1); });
  Tensor table = rnd({V, D}, 19, 0.02);
  std::vector<int64_t> idv(static_cast<size_t>(M));
  for (int64_t i = 0; i < M; ++i) idv[size_t(i)] = (i * 7919) % V;
  Tensor ids = Tensor::from_vector(idv, {M}).to(kGpu);
  bandwidth("embedding [M] -> [M, 3072]", 2.0 * M * D * 2, [&] { (void)ops::embedding(table, ids); });
  Tensor la = rnd({28 * (H + F)}, 20), uu = rand_uniform({28 * (H + F)}, Philox(21, 1), 0.0, 1.0).to(DType::bf16).to(kGpu);
  bandwidth("hard_concrete sample (28 layers' gates)", 3.0 * la.numel() * 2, [&] { (void)ops::hard_concrete_sample(la, uu); });

  // GEMMs of a layer's projections (the forward; the backward's input-gradient GEMMs have the same size).
  Tensor wq = rnd({D, D}, 22, 0.02), wg = rnd({F, D}, 23, 0.02), wd = rnd({D, F}, 24, 0.02);
  compute("GEMM q_proj [T,3072]x[3072,3072]^T", 2.0 * N * D * D, [&] { (void)ops::linear(x, wq); });
  Tensor bq = rnd({D}, 90, 0.02);  // a biased projection (Qwen-style q/k/v): the bias in cuBLASLt's epilogue
  compute("GEMM q_proj + bias epilogue", 2.0 * N * D * D, [&] { (void)ops::linear(x, wq, bq); });
  compute("GEMM gate_proj [T,3072]x[8192,3072]^T", 2.0 * N * D * F, [&] { (void)ops::linear(x, wg); });
  Tensor gn = rnd({N, F}, 14);
  compute("GEMM down_proj [T,8192]x[3072,8192]^T", 2.0 * N * D * F, [&] { (void)ops::linear(gn, wd); });

  Tensor qa = rnd({1, N, H, hd}, 25), ka = rnd({1, N, G, hd}, 26), va = rnd({1, N, G, hd}, 27);
  Tensor mk = rnd({1, m, G, hd}, 28), mv = rnd({1, m, G, hd}, 29), da = rnd({1, N, H, hd}, 30);
  const double teff = double(N) * (N + 1) / 2 + double(m) * N;
  const double attn_fwd = 4.0 * teff * H * hd;
  const double scale = 1.0 / std::sqrt(double(hd));
  ops::AttentionOut ao = ops::attention(qa, ka, va, mk, mv, scale, true);
  // Causal, GQA 3, m = 16; the backward counted as 2x the forward. Both kernel paths, picked by
  // KOFF_CUDA_ATTENTION (cuda/attention_mma.cu on tensor cores, cuda/attention.cu on CUDA cores).
  const char* attention_path = std::getenv("KOFF_CUDA_ATTENTION");
  const std::string saved_path = attention_path ? attention_path : "";
  for (const char* path : {"mma", "simt"}) {
    setenv("KOFF_CUDA_ATTENTION", path, 1);
    compute(std::string("attention fwd (") + path + ")", attn_fwd,
            [&] { (void)ops::attention(qa, ka, va, mk, mv, scale, true); });
    compute(std::string("attention bwd (") + path + ")", 2 * attn_fwd,
            [&] { (void)ops::attention_backward(da, qa, ka, va, mk, mv, ao.out, ao.lse, scale, true); });
  }
  if (attention_path)
    setenv("KOFF_CUDA_ATTENTION", saved_path.c_str(), 1);
  else
    unsetenv("KOFF_CUDA_ATTENTION");

  Tensor hn = rnd({N, D}, 31);
  std::vector<int64_t> tv(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) tv[size_t(i)] = (i * 104729) % V;
  Tensor tg = Tensor::from_vector(tv, {N}).to(kGpu);
  ops::CrossEntropyOut ce = ops::linear_cross_entropy(hn, table, tg, 256);
  compute("linear_cross_entropy fwd (V=128256, chunk 256)", 2.0 * N * V * D,
          [&] { (void)ops::linear_cross_entropy(hn, table, tg, 256); }, 1, 3);
  compute("linear_cross_entropy bwd (dh only)", 4.0 * N * V * D,
          [&] { (void)ops::linear_cross_entropy_backward(1.0 / N, hn, table, tg, ce.lse, false, 256); }, 1, 3);

  // Multi-tensor AdamW over the trainables of 28 layers (LoRA r 8 on 7 projections, memories, gates).
  std::vector<Tensor> ps, gs, ms, vs;
  for (int l = 0; l < 28; ++l)
    for (int64_t n : std::vector<int64_t>{8 * D, 8 * D, 8 * D, int64_t(8 * 1024), 8 * D, int64_t(8 * 1024), 8 * D, 8 * D, 8 * D, 8 * F, 8 * F, 8 * D, 8 * D,
                      8 * F, m * G * hd, m * G * hd, H, F})
      ps.push_back(rnd({n}, 40 + l, 1.0, DType::f32)), gs.push_back(rnd({n}, 41 + l, 1.0, DType::f32)),
          ms.push_back(Tensor::zeros({n}, DType::f32, kGpu)), vs.push_back(Tensor::zeros({n}, DType::f32, kGpu));
  std::vector<Tensor*> pp, mp, vp;
  double abytes = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    pp.push_back(&ps[i]), mp.push_back(&ms[i]), vp.push_back(&vs[i]);
    abytes += 7.0 * 4 * ps[i].numel();  // read p, g, m, v; write p, m, v
  }
  int64_t step = 0;
  bandwidth("adamw_multi (" + std::to_string(ps.size()) + " f32 tensors)", abytes,
            [&] { ops::adamw_multi_(pp, gs, mp, vp, ops::AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.0}, ++step); });
}

// ---- the training step ---------------------------------------------------------------------------
// The engine's own step (OffloadTrainer::train_step, what `koff offload --device cuda --dtype bf16`
// runs) on a Llama-3.2-3B-shaped Transformer with random bf16 weights on the GPU (each weight tiled
// from a random block: the time does not depend on the values), 4 domains of random tokens, LoRA r 8
// / alpha 16 on q k v o gate up down, 16 KV memory slots per KV head, hard-concrete gates; batch 1.
Tensor tiled_random(const Shape& shape, uint64_t seed, double std) {
  Tensor out = Tensor::empty(shape, DType::bf16, kGpu);
  const int64_t n = out.numel(), block = std::min<int64_t>(n, int64_t(1) << 20);
  Tensor b = rnd({block}, seed, std);
  Tensor flat = out.view({n});
  for (int64_t i = 0; i < n; i += block) {
    const int64_t c = std::min(block, n - i);
    flat.slice(0, i, i + c).copy_(b.slice(0, 0, c));
  }
  return out;
}

double bench_step(int layers, int64_t T, int steps, double& mfu_datasheet, double& tokens_per_s) {
  std::printf("\nKOFF training step (OffloadTrainer::train_step): Llama-3.2-3B shapes, %d layers, seq %ld, batch 1, "
              "bf16 frozen weights, f32 trainables\n", layers, long(T));
  nlohmann::json cj = {{"model_type", "llama"}, {"vocab_size", 128256}, {"hidden_size", 3072},
                       {"intermediate_size", 8192}, {"num_hidden_layers", layers}, {"num_attention_heads", 24},
                       {"num_key_value_heads", 8}, {"head_dim", 128}, {"rms_norm_eps", 1e-5},
                       {"rope_theta", 500000.0}, {"tie_word_embeddings", true},
                       {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}};
  const auto wall0 = std::chrono::steady_clock::now();
  nn::Transformer model(io::parse_config(cj, "Llama-3.2-3B shapes"), DType::bf16);
  uint64_t seed = 100;
  for (auto& [name, v] : model.named_parameters()) {
    Tensor& t = const_cast<Variable&>(v).mutable_data();
    t = name.find("norm") != std::string::npos ? Tensor::ones(t.shape(), DType::bf16, kGpu)
                                                : tiled_random(t.shape(), ++seed, 0.02);
  }
  const int64_t V = 128256;
  std::vector<std::vector<int32_t>> streams(4);
  for (size_t d = 0; d < streams.size(); ++d)
    for (int64_t i = 0; i < 8 * T + 2; ++i) streams[d].push_back(int32_t((i * 7919 + int64_t(d) * 104729) % V));
  offload::OffloadSettings s;
  s.steps = 1000, s.batch = 1, s.seq = T, s.seed = 1;
  s.memory.rank = 8, s.memory.alpha = 16, s.memory.slots = 16, s.memory.kv_init = "random";
  offload::OffloadTrainer trainer(model, {"a", "b", "c", "d"}, streams, s, "/tmp/koff-bench-run");
  std::printf("  model + trainer ready: %.1f s (wall)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count());
  const Backend& b = backend_for(kGpu);
  double s_hat = 0;
  auto wall = std::chrono::steady_clock::now();
  trainer.train_step(0, false, &s_hat);  // warm-up: allocator cache, cuBLASLt heuristics
  b.synchronize();
  std::printf("  warm-up step: %.2f s (wall, includes first-call costs)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count());
  // One profiled step: per-op GPU time and the step's useful FLOPs (engine/ops/profile.h).
  profile::set_enabled(true);
  uint64_t m0 = b.profile_mark();
  trainer.train_step(1, false, &s_hat);
  uint64_t m1 = b.profile_mark();
  profile::set_enabled(false);
  const double profiled_ms = b.profile_elapsed_ms(m0, m1);  // before collect(), which releases the marks
  std::vector<profile::OpTotal> ops = profile::collect();
  double flops = 0;
  for (const auto& o : ops) flops += o.flops;
  // Unprofiled steps for the figure.
  m0 = b.profile_mark();
  for (int i = 0; i < steps; ++i) trainer.train_step(2 + i, false, &s_hat);
  m1 = b.profile_mark();
  const double ms = b.profile_elapsed_ms(m0, m1) / steps;
  b.release_marks();
  tokens_per_s = double(T) / (ms * 1e-3);
  mfu_datasheet = flops / (ms * 1e-3) / kDatasheetBf16;
  std::printf("  step: %.1f ms, %.0f tokens/s, %.1f TFLOP/s useful (%.2f TFLOP per step)\n", ms, tokens_per_s,
              flops / (ms * 1e-3) / 1e12, flops / 1e12);
  std::printf("  MFU %.1f%% of 990 TFLOP/s (datasheet), %.1f%% of 790 (measured here earlier), %.1f%% of this run's "
              "8192^3 GEMM\n",
              100 * mfu_datasheet, 100 * flops / (ms * 1e-3) / kGemmCeiling,
              100 * flops / (ms * 1e-3) / gemm_ceiling_measured);
  std::printf("%s", profile::format_step_profile(ops, profiled_ms, T,
                                                 {copy_ceiling, gemm_ceiling_measured, 8192, "bf16"}, "cuda:0 bf16")
                        .c_str());
  rows.push_back({"KOFF step " + std::to_string(layers) + "L seq " + std::to_string(T), "tokens/s", ms, tokens_per_s,
                  mfu_datasheet});
  return ms;
}

}  // namespace
}  // namespace koff

int main(int argc, char** argv) {
  using namespace koff;
  int layers = 28, steps = 3;
  int64_t seq = 2048;
  std::string json;
  bool kernels = true, step = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--layers" && i + 1 < argc) layers = std::atoi(argv[++i]);
    else if (a == "--seq" && i + 1 < argc) seq = std::atoll(argv[++i]);
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--json" && i + 1 < argc) json = argv[++i];
    else if (a == "--no-kernels") kernels = false;
    else if (a == "--no-step") step = false;
    else {
      std::fprintf(stderr, "usage: %s [--layers L] [--seq T] [--steps S] [--json FILE] [--no-kernels] [--no-step]\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    if (!cuda::register_if_available()) {
      std::printf("no GPU: %s\n", cuda::describe_devices().c_str());
      return 3;
    }
    std::printf("%s\n", cuda::describe_devices().c_str());
    measure_ceilings();
    if (kernels) bench_kernels(seq);
    double mfu = 0, tps = 0, ms = 0;
    if (step) ms = bench_step(layers, seq, steps, mfu, tps);
    if (!json.empty()) {
      std::ofstream f(json);
      f << "{\n  \"copy_ceiling_gbs\": " << copy_ceiling / 1e9 << ",\n  \"layers\": " << layers << ",\n  \"seq\": " << seq
        << ",\n  \"step_ms\": " << ms << ",\n  \"tokens_per_s\": " << tps << ",\n  \"mfu_datasheet\": " << mfu
        << ",\n  \"rows\": [\n";
      for (size_t i = 0; i < rows.size(); ++i)
        f << "    {\"name\": \"" << rows[i].name << "\", \"ms\": " << rows[i].ms << ", \"metric\": \"" << rows[i].metric
          << "\", \"value\": " << rows[i].value << ", \"fraction\": " << rows[i].fraction << "}"
          << (i + 1 < rows.size() ? ",\n" : "\n");
      f << "  ]\n}\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "koff_cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
