// Whole-model CPU throughput: forward (no grad) and a training step (forward + backward of every
// weight + AdamW) of a model directory, in tokens/s. bench/model/model_vs_pytorch.sh runs it beside the
// same model in PyTorch with the same thread count and prints the ratio.
//
//   bench_model MODEL_DIR [batch] [seq] [iterations]
#include <fmt/core.h>
#include <omp.h>

#include <chrono>
#include <cstdlib>

#include "engine/cpu/runtime.h"
#include "engine/nn/optim.h"
#include "engine/nn/transformer.h"

int main(int argc, char** argv) {
  koff::cpu::settle_environment(argv);  // the same BLAS kernels and wait policy as koff (engine/cpu/runtime.h)
  if (argc < 2) {
    fmt::print(stderr, "usage: bench_model MODEL_DIR [batch] [seq] [iterations]\n");
    return 2;
  }
  try {
    const int64_t B = argc > 2 ? std::atoll(argv[2]) : 8, T = argc > 3 ? std::atoll(argv[3]) : 256;
    const int iters = argc > 4 ? std::atoi(argv[4]) : 5;
    koff::nn::Transformer model = koff::nn::Transformer::load(argv[1], koff::DType::f32);
    std::vector<int64_t> v(static_cast<size_t>(B * T));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int64_t>((i * 7919) % model.config().vocab_size);
    koff::Tensor ids = koff::Tensor::from_vector(v, {B, T});
    auto time = [&](auto&& fn) {
      fn();  // warm-up
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) fn();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    };
    double fwd = time([&] {
      koff::autograd::NoGradGuard g;
      (void)model.logits(ids);
    });
    model.set_requires_grad(true);
    std::vector<koff::autograd::Variable> params;
    for (auto& [n, p] : model.named_parameters()) params.push_back(p);
    koff::nn::AdamW opt;
    opt.add_group("all", params, {1e-4, 0.9, 0.95, 1e-8, 0.0});
    double train = time([&] {
      model.loss(ids, ids).backward();
      opt.step();
      opt.zero_grad();
    });
    fmt::print("{{\"engine\": \"koff\", \"threads\": {}, \"batch\": {}, \"seq\": {}, \"forward_tokens_per_s\": {:.1f}, "
               "\"train_tokens_per_s\": {:.1f}}}\n",
               omp_get_max_threads(), B, T, B * T / fwd, B * T / train);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_model: {}\n", e.what());
    return 2;
  }
}
