// Cross-entropy losses. The forward returns sum(token losses) / normaliser, so that gradient
// accumulation over micro-batches can divide by the true token count of the whole batch.
//   d loss / d logits = (softmax(logits) - onehot(target)) / normaliser   (zero for ignored rows)
#include "autograd/functions.h"

namespace koff::autograd {

Variable cross_entropy(const Variable& logits, const Tensor& targets, double normaliser, int64_t ignore_index) {
  Tensor tl = logits.data();
  ops::CrossEntropyOut r = ops::cross_entropy(tl, targets, ignore_index);
  double norm = normaliser > 0 ? normaliser : static_cast<double>(std::max<int64_t>(r.count, 1));
  Tensor loss = ops::scale(r.loss_sum, 1.0 / norm);
  return make_result(
      loss, {logits}, "cross_entropy",
      [tl, targets, lse = r.lse, norm, ignore_index](const Tensor& dy, const std::vector<bool>&) {
        return std::vector<Tensor>{ops::cross_entropy_backward(dy.item() / norm, tl, targets, lse, ignore_index)};
      });
}

Variable kl_div(const Variable& logits, const Tensor& teacher_logits, double normaliser) {
  // d KL / d logits = (softmax(logits) - softmax(teacher)) / normaliser
  KOFF_CHECK(normaliser > 0, "kl_div: the normaliser must be positive, got {}", normaliser);
  Tensor tl = logits.data();
  Tensor loss = ops::scale(ops::kl_div(tl, teacher_logits), 1.0 / normaliser);
  return make_result(loss, {logits}, "kl_div",
                     [tl, teacher_logits, normaliser](const Tensor& dy, const std::vector<bool>&) {
                       return std::vector<Tensor>{ops::kl_div_backward(dy.item() / normaliser, tl, teacher_logits)};
                     });
}

Variable linear_cross_entropy(const Variable& h, const Variable& w, const Tensor& targets, double normaliser,
                              int64_t chunk, int64_t ignore_index) {
  Tensor th = h.data(), tw = w.data();
  // Training with a frozen lm_head (the KOFF step): the input gradient comes out of the forward's own
  // chunks, for dloss = 1 / normaliser (the loss is the graph's root: its backward seeds 1); the
  // backward then only rescales if the seed was not 1. Needs a known normaliser (with 0 the count of
  // counted targets is known only after the pass), h needing a gradient and W not.
  const bool early = normaliser > 0 && grad_enabled() && h.requires_grad() && !w.requires_grad();
  ops::CrossEntropyOut r =
      ops::linear_cross_entropy(th, tw, targets, chunk, ignore_index, early, early ? 1.0 / normaliser : 1.0);
  double norm = normaliser > 0 ? normaliser : static_cast<double>(std::max<int64_t>(r.count, 1));
  Tensor loss = ops::scale(r.loss_sum, 1.0 / norm);
  return make_result(loss, {h, w}, "linear_cross_entropy",
                     [th, tw, targets, lse = r.lse, dh = r.dh, norm, chunk, ignore_index](const Tensor& dy,
                                                                                       const std::vector<bool>& n) {
                       if (dh.defined() && !n[1]) {
                         const double seed = dy.item();
                         return std::vector<Tensor>{n[0] ? (seed == 1.0 ? dh : ops::scale(dh, seed)) : Tensor(),
                                                    Tensor()};
                       }
                       ops::LinearCrossEntropyGrads g = ops::linear_cross_entropy_backward(
                           dy.item() / norm, th, tw, targets, lse, n[1], chunk, ignore_index);
                       return std::vector<Tensor>{n[0] ? g.dh : Tensor(), g.dw};
                     });
}

}  // namespace koff::autograd
