#include "engine/nn/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/tensor/random.h"

namespace koff::nn {

int64_t sample_token(const float* logits, int64_t vocab, double temperature, double top_p, double uniform) {
  if (temperature <= 0) return std::max_element(logits, logits + vocab) - logits;
  const double mx = *std::max_element(logits, logits + vocab);
  std::vector<double> p(static_cast<size_t>(vocab));
  double z = 0;
  for (int64_t i = 0; i < vocab; ++i) z += p[i] = std::exp((logits[i] - mx) / temperature);
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  // Nucleus: the most probable tokens until their mass reaches top_p (at least one).
  double mass = 0;
  size_t keep = 0;
  while (keep < order.size() && (keep == 0 || mass < top_p * z)) mass += p[order[keep++]];
  double r = uniform * mass;
  for (size_t i = 0; i < keep; ++i) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[keep - 1];
}

std::vector<int64_t> generate(const Transformer& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                              const std::function<bool(int64_t)>& on_token) {
  KOFF_CHECK(!prompt.empty(), "generate: empty prompt");
  autograd::NoGradGuard no_grad;
  const int64_t vocab = model.config().vocab_size;
  KvCache cache = model.make_cache(1, static_cast<int64_t>(prompt.size()) + options.max_new_tokens);
  Transformer::ForwardOptions fo;
  fo.cache = &cache;
  fo.hooks = options.hooks;
  const Philox rng(options.seed, 0x5A3E);
  std::vector<int64_t> out;
  Tensor ids = Tensor::from_vector(prompt, {1, static_cast<int64_t>(prompt.size())});
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    Tensor logits = model.logits(ids, fo).data();                 // [1, T, V]
    Tensor last = logits.select(1, -1).to(Device::cpu()).to(DType::f32).contiguous();  // [1, V], on the host
    int64_t next = sample_token(last.data<float>(), vocab, options.temperature, options.top_p,
                                rng.uniform(static_cast<uint64_t>(step)));
    out.push_back(next);
    if (on_token && !on_token(next)) break;
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) != options.stop_ids.end()) break;
    ids = Tensor::from_vector(std::vector<int64_t>{next}, {1, 1});
  }
  return out;
}

}  // namespace koff::nn
