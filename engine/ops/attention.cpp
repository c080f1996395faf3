// Attention op: shape checks for q/k/v/memory/GQA, then the backend's fused kernel.
#include <algorithm>

#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

namespace {

void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                            const char* op) {
  check_float(q, op, "q");
  check_compatible(q, k, op, "k");
  check_compatible(q, v, op, "v");
  check_dim(q, 4, op, "q [B, Tq, H, hd]");
  check_dim(k, 4, op, "k [B, Tk, G, hd]");
  check_same_shape(k, v, op);
  const int64_t b = q.size(0), h = q.size(2), hd = q.size(3), g = k.size(2);
  KOFF_CHECK(k.size(0) == b && k.size(3) == hd, "{}: k/v {} do not match q {} in batch or head dim", op,
             shape_str(k.shape()), shape_str(q.shape()));
  KOFF_CHECK(g >= 1 && h % g == 0, "{}: {} query heads (q {}) are not a multiple of {} KV heads (k {})", op, h,
             shape_str(q.shape()), g, shape_str(k.shape()));
  KOFF_CHECK(mem_k.defined() == mem_v.defined(), "{}: mem_k and mem_v must both be given or both be undefined", op);
  if (mem_k.defined()) {
    check_compatible(q, mem_k, op, "mem_k");
    check_compatible(q, mem_v, op, "mem_v");
    check_dim(mem_k, 4, op, "mem_k [B, m, G, hd]");
    check_same_shape(mem_k, mem_v, op);
    KOFF_CHECK(mem_k.size(0) == b && mem_k.size(2) == g && mem_k.size(3) == hd,
               "{}: memory {} does not match k {} (expected [B, m, G, hd])", op, shape_str(mem_k.shape()),
               shape_str(k.shape()));
  }
}

Tensor contiguous_or_undefined(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }

void check_gate(const Tensor& q, const Tensor& k, const Tensor& mem_gate, const char* op) {
  if (!mem_gate.defined()) return;
  check_float(mem_gate, op, "mem_gate");
  check_same_device(q, mem_gate, op);
  const Shape want{q.size(0), k.size(2)};
  KOFF_CHECK(mem_gate.shape() == want, "{}: mem_gate {} does not match q {} and k {} (expected [B, G] = {})", op,
             shape_str(mem_gate.shape()), shape_str(q.shape()), shape_str(k.shape()), shape_str(want));
}

// Useful FLOPs for the profiler: the score and value products, 4 hd per (query, visible key) and
// head, with the causal rule of the kernels (query i sees the memory slots and real keys
// j <= i + Tk - Tq). Computed only while profiling.
double attention_flops(const Tensor& q, const Tensor& k, const Tensor& mem_k, bool causal) {
  if (!profile::enabled()) return 0;
  const double B = static_cast<double>(q.size(0)), H = static_cast<double>(q.size(2)),
               hd = static_cast<double>(q.size(3));
  const int64_t Tq = q.size(1), Tk = k.size(1), m = mem_k.defined() ? mem_k.size(1) : 0;
  double keys = 0;
  for (int64_t i = 0; i < Tq; ++i)
    keys += static_cast<double>(m + (causal ? std::clamp<int64_t>(i + Tk - Tq + 1, 0, Tk) : Tk));
  return 4.0 * B * H * hd * keys;
}

// The gate as the kernels take it: contiguous, in q's statistics dtype (f64 for f64, else f32).
Tensor gate_for_kernel(const Tensor& q, const Tensor& mem_gate) {
  if (!mem_gate.defined()) return {};
  const DType dt = stat_dtype(q.dtype());
  return (mem_gate.dtype() == dt ? mem_gate : mem_gate.to(dt)).contiguous();
}

}  // namespace

AttentionOut attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                       double scale, bool causal, const Tensor& mem_gate) {
  check_attention_inputs(q, k, v, mem_k, mem_v, "attention");
  check_gate(q, k, mem_gate, "attention");
  AttentionOut r{empty_like(q), empty_stat(q, {q.size(0), q.size(1), q.size(2)})};
  launch(q.device(),
         {"attention", bytes_of({&q, &k, &v, &mem_k, &mem_v, &r.out, &r.lse}), attention_flops(q, k, mem_k, causal)},
         &Backend::attention, q.contiguous(), k.contiguous(), v.contiguous(), contiguous_or_undefined(mem_k),
         contiguous_or_undefined(mem_v), gate_for_kernel(q, mem_gate), scale, causal, r.out, r.lse);
  return r;
}

AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& mem_k, const Tensor& mem_v, const Tensor& out, const Tensor& lse,
                                  double scale, bool causal, const Tensor& mem_gate) {
  const char* op = "attention_backward";
  check_attention_inputs(q, k, v, mem_k, mem_v, op);
  check_gate(q, k, mem_gate, op);
  check_like(q, dout, op, "dout");
  check_like(q, out, op, "out");
  check_stat(q, lse, op, "lse");
  const Shape lse_shape{q.size(0), q.size(1), q.size(2)};
  KOFF_CHECK(lse.shape() == lse_shape, "{}: lse {} does not match q {} (expected {})", op, shape_str(lse.shape()),
             shape_str(q.shape()), shape_str(lse_shape));
  AttentionGrads g{empty_like(q), empty_like(k), empty_like(v), {}, {}, {}};
  if (mem_k.defined()) {
    g.dmem_k = empty_like(mem_k);
    g.dmem_v = empty_like(mem_v);
  }
  const Tensor gate = gate_for_kernel(q, mem_gate);
  if (gate.defined()) g.dmem_gate = empty_like(gate);
  // Useful work of the backward: twice the forward's products (dq, dk, dv; not the recomputed scores).
  launch(q.device(),
         {"attention_backward",
          bytes_of({&dout, &q, &k, &v, &mem_k, &mem_v, &out, &lse, &g.dq, &g.dk, &g.dv, &g.dmem_k, &g.dmem_v}),
          2.0 * attention_flops(q, k, mem_k, causal)},
         &Backend::attention_backward, dout.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(),
         contiguous_or_undefined(mem_k), contiguous_or_undefined(mem_v), gate, out.contiguous(), lse.contiguous(),
         scale, causal, g.dq, g.dk, g.dv, g.dmem_k, g.dmem_v, g.dmem_gate);
  if (gate.defined() && gate.dtype() != mem_gate.dtype()) g.dmem_gate = g.dmem_gate.to(mem_gate.dtype());
  return g;
}

}  // namespace koff::ops
