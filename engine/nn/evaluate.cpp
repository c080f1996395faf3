#include "engine/nn/evaluate.h"

#include <cmath>

#include "engine/data/corpus.h"

namespace koff::nn {

double Perplexity::ppl() const { return std::exp(mean_nll()); }

Perplexity perplexity(const Transformer& model, const std::vector<int32_t>& stream, int64_t seq, int64_t max_windows,
                      const std::vector<LayerHooks>* hooks) {
  autograd::NoGradGuard no_grad;
  Perplexity p;
  Transformer::ForwardOptions options;
  options.hooks = hooks;
  for (const data::Batch& b : data::eval_windows(stream, seq, max_windows)) {
    // normaliser 1: the loss is the plain sum over the window's tokens
    p.nll_sum += model.loss(b.ids, b.targets, options, 1.0).data().item();
    p.tokens += b.tokens;
  }
  return p;
}

}  // namespace koff::nn
