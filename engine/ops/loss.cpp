// Cross-entropy ops, plain and fused with the lm_head. The fused ones count their GEMMs here (one
// per chunk forward; two, or three with dw, per chunk backward) so that tests can see that a frozen
// lm_head costs no weight-gradient GEMM.
#include <algorithm>

#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

namespace {

void check_targets(const Tensor& rows_of, const Tensor& targets, const char* op) {
  check_index(targets, op, "targets");
  check_same_device(rows_of, targets, op);
  KOFF_CHECK(targets.dim() == 1 && targets.size(0) == rows_of.size(0), "{}: targets {} do not match the {} rows of {}",
             op, shape_str(targets.shape()), rows_of.size(0), shape_str(rows_of.shape()));
}

void check_lse(const Tensor& rows_of, const Tensor& lse, const char* op) {
  check_stat(rows_of, lse, op, "lse");
  KOFF_CHECK(lse.dim() == 1 && lse.size(0) == rows_of.size(0), "{}: lse {} does not match the {} rows of {}", op,
             shape_str(lse.shape()), rows_of.size(0), shape_str(rows_of.shape()));
}

void check_linear_ce(const Tensor& h, const Tensor& w, int64_t chunk, const char* op) {
  check_float(h, op, "h");
  check_compatible(h, w, op, "w");
  check_dim(h, 2, op, "h [N, d]");
  check_dim(w, 2, op, "w [V, d]");
  KOFF_CHECK(h.size(1) == w.size(1), "{}: h {} and w {} differ in the hidden dim", op, shape_str(h.shape()),
             shape_str(w.shape()));
  KOFF_CHECK(chunk >= 1, "{}: chunk must be positive, got {}", op, chunk);
}

// The backend walks rows in chunks of max(1, min(chunk, N)); one GEMM per chunk and operand.
void count_chunked_gemms(int64_t n, int64_t v, int64_t d, int64_t chunk, int64_t gemms_per_chunk) {
  const int64_t rows = std::max<int64_t>(1, std::min(chunk, n));
  op_counters().gemm += (n + rows - 1) / rows * gemms_per_chunk;
  op_counters().gemm_flops += 2 * n * v * d * gemms_per_chunk;
}

}  // namespace

CrossEntropyOut cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  check_float(logits, "cross_entropy", "logits");
  check_dim(logits, 2, "cross_entropy", "logits [N, V]");
  check_targets(logits, targets, "cross_entropy");
  CrossEntropyOut r{empty_stat(logits, {}), empty_stat(logits, {logits.size(0)}), 0, {}};
  r.count = launch(logits.device(), {"cross_entropy", bytes_of({&logits, &targets, &r.lse})}, &Backend::cross_entropy,
                   logits.contiguous(), targets.contiguous(), ignore_index, r.loss_sum, r.lse);
  return r;
}

Tensor cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index) {
  const char* op = "cross_entropy_backward";
  check_float(logits, op, "logits");
  check_dim(logits, 2, op, "logits [N, V]");
  check_targets(logits, targets, op);
  check_lse(logits, lse, op);
  Tensor dlogits = empty_like(logits);
  launch(logits.device(), {"cross_entropy_backward", bytes_of({&logits, &targets, &lse, &dlogits})},
         &Backend::cross_entropy_backward, dloss, logits.contiguous(), targets.contiguous(), lse.contiguous(),
         ignore_index, dlogits);
  return dlogits;
}

Tensor kl_div(const Tensor& logits, const Tensor& teacher_logits) {
  check_float(logits, "kl_div", "logits");
  check_dim(logits, 2, "kl_div", "logits [N, V]");
  check_same_shape(logits, teacher_logits, "kl_div (logits vs teacher logits)");
  check_same_dtype(logits, teacher_logits, "kl_div (logits vs teacher logits)");
  check_same_device(logits, teacher_logits, "kl_div (logits vs teacher logits)");
  Tensor loss = empty_stat(logits, {});
  launch(logits.device(), {"kl_div", bytes_of({&logits, &teacher_logits})}, &Backend::kl_div, logits.contiguous(),
         teacher_logits.contiguous(), loss);
  return loss;
}

Tensor kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher_logits) {
  check_float(logits, "kl_div_backward", "logits");
  check_dim(logits, 2, "kl_div_backward", "logits [N, V]");
  check_same_shape(logits, teacher_logits, "kl_div_backward (logits vs teacher logits)");
  Tensor dlogits = empty_like(logits);
  launch(logits.device(), {"kl_div_backward", bytes_of({&logits, &teacher_logits, &dlogits})},
         &Backend::kl_div_backward, dloss, logits.contiguous(), teacher_logits.contiguous(), dlogits);
  return dlogits;
}

CrossEntropyOut linear_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                                     int64_t ignore_index, bool with_dh, double dloss) {
  const char* op = "linear_cross_entropy";
  check_linear_ce(h, w, chunk, op);
  check_targets(h, targets, op);
  CrossEntropyOut r{empty_stat(h, {}), empty_stat(h, {h.size(0)}), 0, with_dh ? empty_like(h) : Tensor()};
  const double product = 2.0 * double(h.size(0)) * double(w.size(0)) * double(h.size(1));
  r.count = launch(h.device(),
                   {"linear_cross_entropy", bytes_of({&h, &w, &targets, &r.lse, &r.dh}), product * (with_dh ? 2 : 1)},
                   &Backend::linear_cross_entropy, h.contiguous(), w.contiguous(), targets.contiguous(), chunk,
                   ignore_index, r.loss_sum, r.lse, dloss, r.dh);
  count_chunked_gemms(h.size(0), w.size(0), h.size(1), chunk, with_dh ? 2 : 1);
  return r;
}

LinearCrossEntropyGrads linear_cross_entropy_backward(double dloss, const Tensor& h, const Tensor& w,
                                                      const Tensor& targets, const Tensor& lse, bool want_dw,
                                                      int64_t chunk, int64_t ignore_index) {
  const char* op = "linear_cross_entropy_backward";
  check_linear_ce(h, w, chunk, op);
  check_targets(h, targets, op);
  check_lse(h, lse, op);
  LinearCrossEntropyGrads g{empty_like(h), {}};
  if (want_dw) g.dw = Tensor::zeros(w.shape(), w.dtype(), w.device());
  const double product = 2.0 * double(h.size(0)) * double(w.size(0)) * double(h.size(1));
  launch(
      h.device(),
      {"linear_cross_entropy_backward", bytes_of({&h, &w, &targets, &lse, &g.dh, &g.dw}), product * (want_dw ? 2 : 1)},
      &Backend::linear_cross_entropy_backward, dloss, h.contiguous(), w.contiguous(), targets.contiguous(),
      lse.contiguous(), chunk, ignore_index, g.dh, g.dw);
  count_chunked_gemms(h.size(0), w.size(0), h.size(1), chunk, want_dw ? 3 : 2);
  return g;
}

}  // namespace koff::ops
