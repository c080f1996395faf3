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
    const double nll = model.loss(b.ids, b.targets, options, 1.0).data().item();
    p.nll_sum += nll;
    p.tokens += b.tokens;
    p.window_nll.push_back(nll);
    p.window_tokens.push_back(b.tokens);
  }
  return p;
}

}  // namespace koff::nn
