// Backend: what a device implements so that ops run on it. A table of kernels, one entry per op,
// in the spirit of ggml's backend interface (a struct of function pointers, stated once, here).
//
//   engine/ops      validates shapes, makes inputs contiguous, allocates outputs on the inputs'
//                   device, then calls the entry of that device's Backend (engine/ops/dispatch.h);
//   engine/cpu      fills the CPU table (one file per op family: norm.cpp fills rmsnorm, ...);
//   cuda/           fills the CUDA table the same way (norm.cu fills rmsnorm, ...).
//
// Every entry receives CONTIGUOUS tensors of one floating dtype (ids/targets i32 or i64) and writes
// its preallocated outputs completely. An entry left null means "not implemented on this backend":
// calling it is an error that names the op and the backend, so a new op can land CPU-first.
//
// The CPU backend is the reference for every other backend: the op harness (tests/test_ops.cpp)
// runs each op on each registered backend against it. The recipe for adding an op is
// engine/ops/README.md.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor/tensor.h"

namespace koff {

// The three same-shape binary maps.
enum class BinaryOp { add, sub, mul };

// The functions of a hard-concrete gate (KOFF_METHOD.md section 3; the math is in engine/cpu/gates.cpp).
enum class GateFn {
  sample,         // z = clamp(sigmoid((log u - log(1-u) + log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)
  deterministic,  // z = clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)
  p_open,         // P(z > 0) = sigmoid(log_alpha - beta log(-gamma / zeta))
};

// The hard-concrete distribution's constants (Louizos et al., 2018).
struct HardConcrete {
  static constexpr double beta = 2.0 / 3.0;
  static constexpr double gamma = -0.1;
  static constexpr double zeta = 1.1;
  static constexpr double eps = 1e-6;  // u is clamped to [eps, 1 - eps]
};

// One AdamW step: decoupled weight decay, bias correction with `step` counted from 1.
struct AdamWConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// The entries are grouped by op family; each family has a file of that name in every layer
// (engine/ops/norm.cpp, engine/cpu/norm.cpp, cuda/norm.cu, autograd/functions/norm.cpp).
// One GEMM of Backend::gemm_many: c = alpha op(a) op(b) + beta c, a [m, k] (or [k, m] if trans_a),
// b [k, n] (or [n, k] if trans_b), c [m, n], all contiguous.
struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  double alpha = 1.0, beta = 0.0;
};

struct Backend {
  const char* name = "?";
  // Whether this device's memory is the host's (the CPU; the CUDA emulator of engine/ops). Sizes
  // host-scale measurements (profile ceilings).
  bool host_memory = false;
  // Set by the CUDA emulator only: run every op with these kernels on host views of the tensors
  // (engine/ops/emulated_device.h).
  const Backend* host_kernels = nullptr;

  // ---- elementwise -------------------------------------------------------------------------------
  void (*binary)(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = nullptr;
  void (*scale)(const Tensor& a, double s, Tensor& out) = nullptr;
  void (*axpy)(Tensor& y, const Tensor& x, double alpha) = nullptr;
  void (*add_bias)(const Tensor& x, const Tensor& bias, Tensor& out) = nullptr;
  void (*sum_to_last)(const Tensor& x, Tensor& out) = nullptr;
  void (*sum)(const Tensor& x, Tensor& out) = nullptr;
  void (*dot)(const Tensor& a, const Tensor& b, Tensor& out) = nullptr;
  void (*silu)(const Tensor& x, Tensor& out) = nullptr;
  void (*silu_backward)(const Tensor& dy, const Tensor& x, Tensor& dx) = nullptr;
  void (*swiglu)(const Tensor& gate, const Tensor& up, Tensor& out) = nullptr;
  void (*swiglu_backward)(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) = nullptr;
  void (*softmax)(const Tensor& x, Tensor& out) = nullptr;
  void (*softmax_backward)(const Tensor& dy, const Tensor& y, Tensor& dx) = nullptr;

  // ---- gemm --------------------------------------------------------------------------------------
  // C[b] = alpha op(A[b]) op(B[b or 0]) + beta C[b]; A stored [batch, rows_a, cols_a], B [batch_b,
  // rows_b, cols_b] (batch_b is batch, or 1 when b_shared), C [batch, M, N]. beta = 0 never reads C
  // (it may hold NaN); beta = 1 accumulates into it (ops::gemm_into: LoRA's product added in place).
  void (*gemm)(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k,
               bool trans_a, bool trans_b, bool b_shared, double alpha, double beta) = nullptr;
  // Independent 2-D GEMMs (none reads what another writes), shapes[i] for a[i], b[i], c[i]: the
  // small GEMMs of per-domain LoRA (autograd::linear_lora). The CPU runs small ones side by side, one
  // thread each (OpenBLAS spreads a K = 8 GEMM over its threads slower than one core does it); CUDA
  // queues them on the stream.
  void (*gemm_many)(const std::vector<const Tensor*>& a, const std::vector<const Tensor*>& b,
                    const std::vector<Tensor*>& c, const std::vector<GemmShape>& shapes) = nullptr;
  // out [M, N] = x2d [M, K] w [N, K]^T, plus bias [N] on every row when bias is defined (CUDA fuses
  // the bias into cuBLASLt's epilogue).
  void (*linear)(const Tensor& x2d, const Tensor& w, const Tensor& bias, Tensor& out) = nullptr;

  // ---- embedding ---------------------------------------------------------------------------------
  void (*embedding)(const Tensor& table, const Tensor& ids, Tensor& out) = nullptr;
  void (*embedding_backward)(const Tensor& dy, const Tensor& ids, Tensor& dtable) = nullptr;  // dtable zeroed

  // ---- norm --------------------------------------------------------------------------------------
  void (*rmsnorm)(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) = nullptr;
  void (*rmsnorm_backward)(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                           Tensor& dw) = nullptr;

  // ---- rope --------------------------------------------------------------------------------------
  void (*rope)(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) = nullptr;

  // ---- attention ---------------------------------------------------------------------------------
  // mem_k/mem_v may be undefined (m = 0); dmem_* then are undefined too. mem_gate [B, G] (stat dtype
  // of q) may be undefined (no gate); dmem_gate is defined exactly when mem_gate is.
  void (*attention)(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                    const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) = nullptr;
  void (*attention_backward)(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                             const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out, const Tensor& lse,
                             double scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dmem_k,
                             Tensor& dmem_v, Tensor& dmem_gate) = nullptr;

  // ---- loss --------------------------------------------------------------------------------------
  // loss_sum [] and lse [N]; return the number of counted rows.
  int64_t (*cross_entropy)(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                           Tensor& lse) = nullptr;
  void (*cross_entropy_backward)(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                 int64_t ignore_index, Tensor& dlogits) = nullptr;
  // When dh is defined, also dh = dloss (softmax - onehot) W in the same pass over each chunk (the
  // input gradient, when the caller knows dloss up front: a training loss's backward then needs no
  // second pass of logits GEMMs).
  int64_t (*linear_cross_entropy)(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                                  int64_t ignore_index, Tensor& loss_sum, Tensor& lse, double dloss,
                                  Tensor& dh) = nullptr;
  // dw, when defined, is zeroed by the caller and accumulated into.
  void (*linear_cross_entropy_backward)(double dloss, const Tensor& h, const Tensor& w, const Tensor& targets,
                                        const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh,
                                        Tensor& dw) = nullptr;
  // KL(softmax(teacher) || softmax(logits)) summed over rows -> loss_sum [], and its gradient.
  void (*kl_div)(const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) = nullptr;
  void (*kl_div_backward)(double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) = nullptr;

  // ---- gates -------------------------------------------------------------------------------------
  // x as [rows, G, K]: out = x * z[g]; dz[g] = sum over rows and k of dy * x.
  void (*mul_groups)(const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k, Tensor& out) = nullptr;
  void (*sum_groups_product)(const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k,
                             Tensor& dz) = nullptr;
  // gate/up [rows, F], z [F]; dz undefined when the gate's gradient is not wanted (no reduction then).
  void (*swiglu_gated)(const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) = nullptr;
  void (*swiglu_gated_backward)(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                                Tensor& dup, Tensor& dz) = nullptr;
  // u is undefined unless fn is sample. The backward exists for sample (needs u) and p_open.
  void (*hard_concrete)(GateFn fn, const Tensor& log_alpha, const Tensor& u, Tensor& out) = nullptr;
  void (*hard_concrete_backward)(GateFn fn, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                                 Tensor& dlog_alpha) = nullptr;

  // ---- adamw -------------------------------------------------------------------------------------
  void (*adamw)(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config,
                int64_t step) = nullptr;
  // The same step over many tensors (a KOFF step's trainables are hundreds of small tensors). Null:
  // ops calls adamw per tensor; the CUDA backend launches once per 64 f32 tensors.
  void (*adamw_multi)(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                      const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const AdamWConfig& config,
                      int64_t step) = nullptr;

  // ---- the device's queue of work (profiling, engine/ops/profile.h) --------------------------
  // A mark in the queue, and the milliseconds between two marks once both have completed (waiting
  // for them if needed). CPU work is synchronous: the defaults are host clock readings.
  // release_marks() says no mark taken so far will be asked about again.
  uint64_t (*profile_mark)() = host_clock_mark;
  double (*profile_elapsed_ms)(uint64_t start, uint64_t stop) = host_clock_elapsed_ms;
  void (*release_marks)() = nothing_to_do;
  // Waits for all work queued on this device (nothing to wait for on the CPU).
  void (*synchronize)() = nothing_to_do;

  static uint64_t host_clock_mark();
  static double host_clock_elapsed_ms(uint64_t start, uint64_t stop);
  static void nothing_to_do() {}
};

// Registers the backend of a device type (cuda/ and the emulator do; the CPU backend is built into
// engine/ops' dispatch). Not thread-safe: call at start-up. nullptr unregisters.
void register_backend(DeviceType type, const Backend* backend);
// The registered backend, or nullptr.
const Backend* registered_backend(DeviceType type);

}  // namespace koff
