// GPU benchmark for bench/gpu_check.sh: every CUDA kernel family at Llama-3.2-3B shapes, then a KOFF
// training step on a Llama-3.2-3B-shaped model, all timed with CUDA events on the backend's stream.
//
//   koff_cuda_bench [--layers L] [--seq T] [--steps S] [--json FILE]
//
// Ceilings: copy bandwidth is MEASURED first in the same run (device-to-device copy, bytes read +
// written); the bf16 matrix ceiling is the 790 TFLOP/s measured on this workplace's H200s
// (.library/device/KINDS.md), and this run's own large cuBLASLt GEMM is printed beside it.
// Memory-bound kernels report GB/s (bytes each must move at least once) and the fraction of the
// copy ceiling; compute-bound ones TFLOP/s and the fraction of 790.
//
// The step: random bf16 weights (one layer's weights shared by all layers: same shapes, same time),
// frozen; per layer LoRA (r 8, alpha 16) on q, k, v, o, gate, up, down, hard-concrete gates on the
// 24 heads and 8192 neurons, 16 learned KV memory slots per KV head; tied lm_head with the fused
// chunked cross-entropy over 128256 tokens; AdamW on f32 master copies of the trainables
// (multi-tensor). Trainables run the step in bf16 (cast from the f32 masters each step, gradients
// cast back): the autograd has no mixed-dtype cast yet. MFU counts the step's useful FLOPs: every
// GEMM the ops layer issued (op_counters: frozen weights get no weight-gradient GEMM) plus attention
// (forward 4 T_eff H hd, backward twice that, causal T_eff = T(T+1)/2 + m T per layer), over the
// step time, against 990 TFLOP/s (dense bf16 datasheet) and against 790 (measured).
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/device.h"
#include "cuda/gemm.h"
#include "engine/ops/backend.h"
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
}

void bench_kernels(int64_t T) {
  const int64_t D = 3072, F = 8192, H = 24, G = 8, hd = 128, m = 16, V = 128256, N = T;
  std::printf("\nkernels at Llama-3.2-3B shapes (%ld tokens, bf16):\n", long(N));
  Tensor x = rnd({N, D}, 10), y = rnd({N, D}, 11), w = rnd({D}, 12);
  bandwidth("add [T, 3072]", 3.0 * N * D * 2, [&] { (void)ops::add(x, y); });
  ops::RmsNormOut rn = ops::rmsnorm(x, w, 1e-5);
  bandwidth("rmsnorm [T, 3072]", 2.0 * N * D * 2, [&] { (void)ops::rmsnorm(x, w, 1e-5); });
  bandwidth("rmsnorm_backward [T, 3072]", 3.0 * N * D * 2, [&] { (void)ops::rmsnorm_backward(y, x, w, rn.rstd); });
  Tensor q = rnd({1, N, H, hd}, 13);
  ops::RopeTables tab = ops::rope_tables(0, N, hd, 500000.0, {32.0, 1.0, 4.0, 8192}, DType::f32);
  tab.cos = tab.cos.to(DType::bf16).to(kGpu);
  tab.sin = tab.sin.to(DType::bf16).to(kGpu);
  bandwidth("rope q [1, T, 24, 128]", 2.0 * N * H * hd * 2, [&] { (void)ops::rope(q, tab); });
  Tensor g = rnd({N, F}, 14), u = rnd({N, F}, 15), dy = rnd({N, F}, 16);
  bandwidth("swiglu [T, 8192]", 3.0 * N * F * 2, [&] { (void)ops::swiglu(g, u); });
  bandwidth("swiglu_backward [T, 8192]", 5.0 * N * F * 2, [&] { (void)ops::swiglu_backward(dy, g, u); });
  Tensor zn = rnd({F}, 17), zh = rnd({H}, 18);
  bandwidth("mul_groups neuron gate [T, 8192]", 2.0 * N * F * 2, [&] { (void)ops::mul_groups(g, zn, 1); });
  bandwidth("mul_groups head gate [1, T, 24, 128]", 2.0 * N * H * hd * 2, [&] { (void)ops::mul_groups(q, zh, hd); });
  bandwidth("sum_groups_product neuron gate grad", 2.0 * N * F * 2, [&] { (void)ops::sum_groups_product(dy, g, F, 1); });
  Tensor table = rnd({V, D}, 19, 0.02);
  std::vector<int64_t> idv(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) idv[size_t(i)] = (i * 7919) % V;
  Tensor ids = Tensor::from_vector(idv, {N}).to(kGpu);
  bandwidth("embedding [T] -> [T, 3072]", 2.0 * N * D * 2, [&] { (void)ops::embedding(table, ids); });
  Tensor la = rnd({28 * (H + F)}, 20), uu = rand_uniform({28 * (H + F)}, Philox(21, 1), 0.0, 1.0).to(DType::bf16).to(kGpu);
  bandwidth("hard_concrete sample (28 layers' gates)", 3.0 * la.numel() * 2, [&] { (void)ops::hard_concrete_sample(la, uu); });

  // GEMMs of a layer's projections (the forward; the backward's input-gradient GEMMs have the same size).
  Tensor wq = rnd({D, D}, 22, 0.02), wg = rnd({F, D}, 23, 0.02), wd = rnd({D, F}, 24, 0.02);
  compute("GEMM q_proj [T,3072]x[3072,3072]^T", 2.0 * N * D * D, [&] { (void)ops::linear(x, wq); });
  compute("GEMM gate_proj [T,3072]x[8192,3072]^T", 2.0 * N * D * F, [&] { (void)ops::linear(x, wg); });
  compute("GEMM down_proj [T,8192]x[3072,8192]^T", 2.0 * N * D * F, [&] { (void)ops::linear(g, wd); });

  Tensor qa = rnd({1, N, H, hd}, 25), ka = rnd({1, N, G, hd}, 26), va = rnd({1, N, G, hd}, 27);
  Tensor mk = rnd({1, m, G, hd}, 28), mv = rnd({1, m, G, hd}, 29), da = rnd({1, N, H, hd}, 30);
  const double teff = double(N) * (N + 1) / 2 + double(m) * N;
  const double attn_fwd = 4.0 * teff * H * hd;
  const double scale = 1.0 / std::sqrt(double(hd));
  ops::AttentionOut ao = ops::attention(qa, ka, va, mk, mv, scale, true);
  compute("attention fwd (causal, GQA 3, m=16)", attn_fwd, [&] { (void)ops::attention(qa, ka, va, mk, mv, scale, true); });
  compute("attention bwd (counted as 2x fwd)", 2 * attn_fwd,
          [&] { (void)ops::attention_backward(da, qa, ka, va, mk, mv, ao.out, ao.lse, scale, true); });

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
  std::vector<const Tensor*> gp;
  double abytes = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    pp.push_back(&ps[i]), gp.push_back(&gs[i]), mp.push_back(&ms[i]), vp.push_back(&vs[i]);
    abytes += 7.0 * 4 * ps[i].numel();  // read p, g, m, v; write p, m, v
  }
  int64_t step = 0;
  bandwidth("adamw_multi (" + std::to_string(ps.size()) + " f32 tensors)", abytes,
            [&] { cuda::adamw_multi(pp, gp, mp, vp, ops::AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.0}, ++step); });
}

// ---- the training step ---------------------------------------------------------------------------
struct Lora {
  Variable a, b;  // [r, in], [out, r]
};
struct LayerTrainables {
  std::vector<Lora> lora;  // q k v o gate up down
  Variable mem_k, mem_v, heads, neurons;
};

double bench_step(int layers, int64_t T, int steps, double& mfu_datasheet, double& tokens_per_s) {
  const int64_t D = 3072, F = 8192, H = 24, G = 8, hd = 128, m = 16, V = 128256, r = 8;
  const double lora_scale = 16.0 / r, scale = 1.0 / std::sqrt(double(hd));
  std::printf("\nKOFF training step: Llama-3.2-3B shapes, %d layers, seq %ld, batch 1, bf16 frozen weights\n", layers,
              long(T));
  // Frozen weights: one random layer shared by all (the time does not depend on the values).
  auto frozen = [&](const Shape& s, uint64_t seed, double std) { return Variable(rnd(s, seed, std), false); };
  Variable wq = frozen({D, D}, 100, 0.02), wk = frozen({G * hd, D}, 101, 0.02), wv = frozen({G * hd, D}, 102, 0.02);
  Variable wo = frozen({D, D}, 103, 0.02), wg = frozen({F, D}, 104, 0.02), wu = frozen({F, D}, 105, 0.02);
  Variable wd = frozen({D, F}, 106, 0.02);
  Variable ln1(Tensor::ones({D}, DType::bf16, kGpu)), ln2(Tensor::ones({D}, DType::bf16, kGpu)),
      lnf(Tensor::ones({D}, DType::bf16, kGpu));
  // Tied embedding / lm_head [V, D]: 4096 random rows tiled (device copies), 0.8 GB.
  Tensor block = rnd({4096, D}, 107, 0.02);
  Tensor embed_t = Tensor::empty({V, D}, DType::bf16, kGpu);
  for (int64_t r0 = 0; r0 < V; r0 += 4096) {
    const int64_t n = std::min<int64_t>(4096, V - r0);
    KOFF_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(embed_t.raw_data()) + r0 * D * 2, block.raw_data(),
                                    size_t(n * D * 2), cudaMemcpyDeviceToDevice, cuda::stream(0)));
  }
  Variable embed(embed_t, false);
  ops::RopeTables tab = ops::rope_tables(0, T, hd, 500000.0, {32.0, 1.0, 4.0, 8192}, DType::f32);
  tab.cos = tab.cos.to(DType::bf16).to(kGpu);
  tab.sin = tab.sin.to(DType::bf16).to(kGpu);

  // f32 master trainables + AdamW state.
  const int64_t outs[7] = {D, G * hd, G * hd, D, F, F, D}, ins[7] = {D, D, D, D, D, D, F};
  std::vector<Tensor> master, mstate, vstate;
  auto add_master = [&](const Shape& s, double std, uint64_t seed, bool zero) {
    master.push_back(zero ? Tensor::zeros(s, DType::f32, kGpu) : rnd(s, seed, std, DType::f32));
    mstate.push_back(Tensor::zeros(s, DType::f32, kGpu));
    vstate.push_back(Tensor::zeros(s, DType::f32, kGpu));
  };
  for (int l = 0; l < layers; ++l) {
    for (int p = 0; p < 7; ++p) {
      add_master({r, ins[p]}, 0.01, 200 + l * 16 + p, false);  // A
      add_master({outs[p], r}, 0.0, 0, true);                  // B = 0 (PEFT init)
    }
    add_master({1, m, G, hd}, 1.0, 300 + l, false);
    add_master({1, m, G, hd}, 1.0, 400 + l, false);
    add_master({H}, 0, 0, true);
    add_master({F}, 0, 0, true);
  }
  for (auto& t : master)
    if (t.numel() == H || t.numel() == F) t.fill_(3.0);  // log_alpha init 3 (open gates)
  std::vector<int64_t> idv(static_cast<size_t>(T)), tv(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) idv[size_t(i)] = (i * 7919) % V, tv[size_t(i)] = ((i + 1) * 7919) % V;
  Tensor ids = Tensor::from_vector(idv, {1, T}).to(kGpu), targets = Tensor::from_vector(tv, {T}).to(kGpu);

  auto proj = [&](const Variable& x, const Variable& w, const Lora& lo) {
    Variable y = ag::linear(x, w);
    return ag::add(y, ag::scale(ag::linear(ag::linear(x, lo.a), lo.b), lora_scale));
  };
  int64_t gemm_flops = 0;
  auto one_step = [&](int64_t step) {
    // bf16 working copies of the trainables (leaves of this step's graph).
    std::vector<Variable> w16;
    for (auto& t : master) w16.emplace_back(t.to(DType::bf16), true);
    const int64_t before = op_counters().gemm_flops;
    Variable x = ag::embedding(embed, ids);
    size_t k = 0;
    for (int l = 0; l < layers; ++l) {
      LayerTrainables tr;
      for (int p = 0; p < 7; ++p) tr.lora.push_back({w16[k], w16[k + 1]}), k += 2;
      tr.mem_k = w16[k++], tr.mem_v = w16[k++], tr.heads = w16[k++], tr.neurons = w16[k++];
      Tensor uh = rand_uniform({H}, Philox(step, uint64_t(l)), 0.0, 1.0).to(DType::bf16).to(kGpu);
      Tensor un = rand_uniform({F}, Philox(step, uint64_t(1000 + l)), 0.0, 1.0).to(DType::bf16).to(kGpu);
      Variable zh = ag::hard_concrete_sample(tr.heads, uh), zn = ag::hard_concrete_sample(tr.neurons, un);
      Variable n1 = ag::rmsnorm(x, ln1, 1e-5);
      Variable q = ag::rope(ag::reshape(proj(n1, wq, tr.lora[0]), {1, T, H, hd}), tab);
      Variable kk = ag::rope(ag::reshape(proj(n1, wk, tr.lora[1]), {1, T, G, hd}), tab);
      Variable vv = ag::reshape(proj(n1, wv, tr.lora[2]), {1, T, G, hd});
      Variable a = ag::mul_groups(ag::attention(q, kk, vv, tr.mem_k, tr.mem_v, scale, true), zh, hd);
      x = ag::add(x, proj(ag::reshape(a, {1, T, D}), wo, tr.lora[3]));
      Variable n2 = ag::rmsnorm(x, ln2, 1e-5);
      Variable s = ag::mul_groups(ag::swiglu(proj(n2, wg, tr.lora[4]), proj(n2, wu, tr.lora[5])), zn, 1);
      x = ag::add(x, proj(s, wd, tr.lora[6]));
    }
    Variable h = ag::reshape(ag::rmsnorm(x, lnf, 1e-5), {T, D});
    Variable loss = ag::linear_cross_entropy(h, embed, targets, 0, 256);
    loss.backward();
    gemm_flops = op_counters().gemm_flops - before;
    std::vector<Tensor> g32;
    std::vector<Tensor*> pp, mp, vp;
    std::vector<const Tensor*> gp;
    for (size_t i = 0; i < master.size(); ++i) {
      g32.push_back(w16[i].grad().defined() ? w16[i].grad().to(DType::f32) : Tensor::zeros(master[i].shape(), DType::f32, kGpu));
    }
    for (size_t i = 0; i < master.size(); ++i)
      pp.push_back(&master[i]), gp.push_back(&g32[i]), mp.push_back(&mstate[i]), vp.push_back(&vstate[i]);
    cuda::adamw_multi(pp, gp, mp, vp, ops::AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.0}, step);
  };

  auto wall = std::chrono::steady_clock::now();
  one_step(1);  // warm-up: allocator cache, cuBLASLt heuristics
  cuda::synchronize(0);
  std::printf("  warm-up step: %.2f s (wall, includes first-call costs)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count());
  cuda::set_profiling(true);
  one_step(2);
  std::vector<cuda::OpTime> prof = cuda::profile_collect();
  cuda::set_profiling(false);
  const double ms = time_ms([&, s = int64_t(3)]() mutable { one_step(s++); }, 0, steps);
  const double teff = double(T) * (T + 1) / 2 + double(m) * T;
  const double attn = 3.0 * 4.0 * teff * H * hd * layers;  // forward + backward (2x)
  const double flops = double(gemm_flops) + attn;
  tokens_per_s = double(T) / (ms * 1e-3);
  mfu_datasheet = flops / (ms * 1e-3) / kDatasheetBf16;
  std::printf("  step: %.1f ms, %.0f tokens/s, %.1f TFLOP/s useful (GEMM %.2f + attention %.2f TFLOP per step)\n", ms,
              tokens_per_s, flops / (ms * 1e-3) / 1e12, gemm_flops / 1e12, attn / 1e12);
  std::printf("  MFU %.1f%% of 990 TFLOP/s (datasheet), %.1f%% of 790 (measured bf16 GEMM ceiling)\n",
              100 * mfu_datasheet, 100 * flops / (ms * 1e-3) / kGemmCeiling);
  double total = 0;
  for (auto& p : prof) total += p.ms;
  std::printf("  per-op GPU time of one step (CUDA events; %.1f ms in ops):\n", total);
  for (size_t i = 0; i < prof.size() && i < 14; ++i)
    std::printf("    %-32s %8.2f ms %5.1f%%  (%ld calls)\n", prof[i].name.c_str(), prof[i].ms, 100 * prof[i].ms / total,
                long(prof[i].calls));
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
