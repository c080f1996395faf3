// Held-out perplexity: every token of a stream predicted once, in windows of `seq` tokens.
#pragma once

#include <vector>

#include "engine/nn/transformer.h"

namespace koff::nn {

struct Perplexity {
  double nll_sum = 0;  // summed token negative log-likelihood
  int64_t tokens = 0;
  std::vector<double> window_nll;      // per window: its summed nll (for paired bootstrap intervals)
  std::vector<int64_t> window_tokens;  // per window: its token count
  double mean_nll() const { return tokens ? nll_sum / static_cast<double>(tokens) : 0; }
  double ppl() const;
};

// hooks_for_window (optional) gives the layer hooks for a window (memories, gates); null = base model.
Perplexity perplexity(const Transformer& model, const std::vector<int32_t>& stream, int64_t seq,
                      int64_t max_windows = 0, const std::vector<LayerHooks>* hooks = nullptr);

}  // namespace koff::nn
