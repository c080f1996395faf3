// Text generation with a KV cache: the prompt in one forward pass, then one token per step, each step
// attending over the cached keys/values. Greedy when temperature is 0; otherwise softmax(logits/T)
// restricted to the smallest set of tokens whose probability reaches top_p, sampled with a
// counter-based RNG (same seed, same text).
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "engine/nn/transformer.h"

namespace koff::nn {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::vector<int64_t> stop_ids;                     // generation ends after emitting one of these
  const std::vector<LayerHooks>* hooks = nullptr;    // memories (batch 1)
};

// Returns the new tokens. on_token is called as each is produced; returning false stops early.
std::vector<int64_t> generate(const Transformer& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                              const std::function<bool(int64_t)>& on_token = {});

// The choice of one next token from a logits row (exposed for tests).
int64_t sample_token(const float* logits, int64_t vocab, double temperature, double top_p, double uniform);

}  // namespace koff::nn
