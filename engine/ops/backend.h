// Backend: the small interface a device implements (ggml-style). ops/ validates shapes, makes
// inputs contiguous and allocates outputs on the inputs' device, then calls the backend of that
// device. Every method receives CONTIGUOUS tensors of one floating dtype (ids/targets i32 or i64)
// and writes its preallocated outputs completely.
//
// The CPU backend (engine/cpu) is the reference for every other backend: the op harness
// (tests/test_ops.cpp) runs each op on each registered backend against it.
#pragma once

#include <vector>

#include "engine/ops/ops.h"

namespace koff {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // elementwise: kind 0 add, 1 sub, 2 mul
  virtual void binary(int kind, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void scale(const Tensor& a, double s, Tensor& out) = 0;
  virtual void axpy(Tensor& y, const Tensor& x, double alpha) = 0;
  virtual void add_bias(const Tensor& x, const Tensor& bias, Tensor& out) = 0;
  virtual void sum_to_last(const Tensor& x, Tensor& out) = 0;
  virtual void sum(const Tensor& x, Tensor& out) = 0;
  virtual void dot(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // x as [rows, G, K]
  virtual void mul_groups(const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k,
                          Tensor& out) = 0;
  virtual void sum_groups_product(const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k,
                                  Tensor& dz) = 0;

  // C[b] = op(A[b]) op(B[b or 0]); A stored [batch, rows_a, cols_a], B [batch_b, rows_b, cols_b]
  // (batch_b is batch or 1), C [batch, M, N].
  virtual void gemm(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k,
                    bool trans_a, bool trans_b, bool b_shared) = 0;
  // out [M, N] = x2d [M, K] w [N, K]^T, plus bias [N] on every row when bias is defined. The default
  // (backend.cpp) is gemm then add_bias; a backend may fuse the bias into the GEMM (CUDA: cuBLASLt's
  // bias epilogue).
  virtual void linear(const Tensor& x2d, const Tensor& w, const Tensor& bias, Tensor& out);

  virtual void embedding(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  virtual void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) = 0;  // dtable zeroed by caller

  virtual void rmsnorm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) = 0;
  virtual void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                                Tensor& dw) = 0;

  virtual void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) = 0;

  virtual void silu(const Tensor& x, Tensor& out) = 0;
  virtual void silu_backward(const Tensor& dy, const Tensor& x, Tensor& dx) = 0;
  virtual void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  virtual void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate,
                               Tensor& dup) = 0;
  // gate/up [rows, F], z [F]; dz undefined when the gate's gradient is not wanted (no reduction then).
  virtual void swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) = 0;
  virtual void swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z,
                                     Tensor& dgate, Tensor& dup, Tensor& dz) = 0;
  virtual void softmax(const Tensor& x, Tensor& out) = 0;
  virtual void softmax_backward(const Tensor& dy, const Tensor& y, Tensor& dx) = 0;

  // mem_k/mem_v may be undefined (m = 0); dmem_* then are undefined too. mem_gate [B, G] (stat dtype of
  // q, see ops.h) may be undefined (no gate); dmem_gate is defined exactly when mem_gate is.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                         const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) = 0;
  virtual void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& mem_k, const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out,
                                  const Tensor& lse, double scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv,
                                  Tensor& dmem_k, Tensor& dmem_v, Tensor& dmem_gate) = 0;

  // loss_sum [] and lse [N]; returns the number of counted rows.
  virtual int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                                Tensor& lse) = 0;
  virtual void cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                      int64_t ignore_index, Tensor& dlogits) = 0;
  virtual int64_t linear_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                                       int64_t ignore_index, Tensor& loss_sum, Tensor& lse) = 0;
  // dw, when defined, is zeroed by the caller and accumulated into.
  virtual void linear_cross_entropy_backward(double dloss, const Tensor& h, const Tensor& w, const Tensor& targets,
                                             const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh,
                                             Tensor& dw) = 0;

  // KL(softmax(teacher) || softmax(logits)) summed over rows -> loss_sum [], and its gradient.
  virtual void kl_div(const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) = 0;
  virtual void kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) = 0;

  // mode 0 sample(log_alpha, u), 1 deterministic, 2 p_open
  virtual void hard_concrete(int mode, const Tensor& log_alpha, const Tensor& u, Tensor& out) = 0;
  // mode 0: d sample / d log_alpha (needs u), 2: d p_open / d log_alpha
  virtual void hard_concrete_backward(int mode, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                                      Tensor& dlog_alpha) = 0;

  virtual void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWConfig& config,
                     int64_t step) = 0;
  // The same AdamW step over many tensors (a KOFF step's trainables are hundreds of small LoRA, gate
  // and memory tensors). The default calls adamw() per tensor; the CUDA backend launches once per 64
  // f32 tensors.
  virtual void adamw_multi(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                           const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const ops::AdamWConfig& config,
                           int64_t step);

  // ---- profiling and synchronisation (engine/ops/profile.h) ----
  // A mark in this device's queue of work, and the milliseconds between two marks once both have
  // completed (waiting for them if needed). CPU work is synchronous: the default marks are host clock
  // readings. profile_release() says no mark taken so far will be asked about again.
  virtual uint64_t profile_mark();
  virtual double profile_elapsed_ms(uint64_t start, uint64_t stop);
  virtual void profile_release() {}
  // Waits for all work queued on this device (nothing to wait for on the CPU).
  virtual void synchronize() {}
};

// The backend that runs tensors of this device; throws if none is registered (e.g. CUDA not built).
// While profiling is on (engine/ops/profile.h) it is a wrapper that times every call.
Backend& backend_for(Device device);
Backend& raw_backend_for(Device device);  // never the profiling wrapper
void register_backend(DeviceType type, Backend* backend);
bool has_backend(DeviceType type);

// Counts kernel launches per op name, for tests that assert work is NOT done (e.g. a frozen weight
// must cost no weight-gradient GEMM). Incremented by ops/, read and reset by tests.
struct OpCounters {
  int64_t gemm = 0;
  int64_t gemm_flops = 0;
};
OpCounters& op_counters();

}  // namespace koff
