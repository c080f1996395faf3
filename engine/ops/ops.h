// Forward ops: shape/dtype/device checks, output allocation, dispatch to the device's Backend.
//
// No gradient logic lives here: autograd/ pairs each forward op with the backward ops below. Every
// op accepts f32 and f64 on CPU (f64 serves the gradient checks); the CUDA backend adds bf16.
// Inputs may be strided views: ops make them contiguous before a kernel sees them.
//
// Layouts follow the model: activations are [B, T, ...] row-major; attention takes q as
// [B, T, H, hd] and k/v as [B, T, G, hd] (G KV heads, H % G == 0) so that no transpose is needed
// between the projections and the kernel; memory slots are [B, m, G, hd].
#pragma once

#include <optional>
#include <vector>

#include "engine/tensor/backend.h"
#include "engine/tensor/tensor.h"

namespace koff::ops {

// ---- elementwise ---------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);          // same shape
Tensor sub(const Tensor& a, const Tensor& b);          // same shape
Tensor mul(const Tensor& a, const Tensor& b);          // same shape
Tensor scale(const Tensor& a, double s);               // a * s
void axpy_(Tensor& y, const Tensor& x, double alpha);  // y += alpha * x (in place)
Tensor add_bias(const Tensor& x, const Tensor& bias);  // x[..., n] + bias[n]
Tensor sum_to_last(const Tensor& x);                   // [..., n] -> [n] (bias gradient)
Tensor sum(const Tensor& x);                           // all elements -> shape [] (f64 accumulation)
Tensor dot(const Tensor& a, const Tensor& b);          // sum(a*b) -> shape []

// Group gates: x viewed as [..., G, K] (K = x.numel() / (rows*G) is taken from the trailing dims
// after the gate dim): y[..., g, k] = x[..., g, k] * z[g]. A head gate uses x = [B, T, H, hd],
// z = [H], k = hd; a neuron gate uses x = [B, T, F], z = [F], k = 1.
Tensor mul_groups(const Tensor& x, const Tensor& z, int64_t k);
// dz[g] = sum over rows and k of dy[..., g, k] * x[..., g, k]  (the gate's gradient)
Tensor sum_groups_product(const Tensor& dy, const Tensor& x, int64_t groups, int64_t k);

// ---- matmul --------------------------------------------------------------------------------
// C = op(A) op(B); A [..., M, K] (or [..., K, M] if trans_a), B [..., K, N] (or [..., N, K] if
// trans_b). Leading dims of A and B must be equal (batched GEMM), or B may be 2-D and is then
// shared by every batch of A. Output [..., M, N]. Through OpenBLAS sgemm/dgemm on CPU.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// In place: c = alpha op(a) op(b) + beta c, 2-D: a [M, K] (or [K, M] if trans_a), b [K, N] (or [N, K]
// if trans_b), c [M, N]; each contiguous (a row slice of a contiguous matrix is) or a transposed view
// of a contiguous matrix; c contiguous. beta = 1 accumulates: the LoRA product goes straight into the
// projection's output and the input gradient (autograd::linear_lora), no separate add.
void gemm_into(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b, double alpha, double beta);
// Several gemm_into at once, as one backend call (Backend::gemm_many): no call may read a `c` that
// another writes. Each as gemm_into; c is a view into the tensor written.
struct GemmInto {
  Tensor a, b, c;
  bool trans_a = false, trans_b = false;
  double alpha = 1.0, beta = 0.0;
};
void gemm_many_into(const std::vector<GemmInto>& calls);
// y = x W^T (+ bias): x [..., in], W [out, in], bias [out] or undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = {});

// ---- embedding -----------------------------------------------------------------------------
Tensor embedding(const Tensor& table, const Tensor& ids);  // table [V, d], ids i32/i64 [...] -> [..., d]
// Scatter-add of dy [..., d] into a [V, d] gradient; ids out of range are an error.
Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t vocab);

// ---- RMSNorm -------------------------------------------------------------------------------
struct RmsNormOut {
  Tensor y;     // [..., d]
  Tensor rstd;  // [...]  1 / sqrt(mean(x^2) + eps), saved for the backward; f64 for f64 x, else f32
};
RmsNormOut rmsnorm(const Tensor& x, const Tensor& w, double eps);
struct RmsNormGrads {
  Tensor dx, dw;
};
RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd);

// ---- RoPE ----------------------------------------------------------------------------------
// Llama 3 style frequency scaling ("rope_type": "llama3"); factor <= 0 means none.
struct RopeScaling {
  double factor = 0.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};
// Inverse frequencies [hd/2] as Hugging Face computes them: its float32 chain replayed step by step
// (values are exact floats, returned as double; see ops/rope.cpp). f64 rope_tables use the same
// formulas in plain double instead, for gradient checks.
std::vector<double> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling = {});
struct RopeTables {
  Tensor cos, sin;  // [T, hd/2], for positions start .. start+T-1
};
RopeTables rope_tables(int64_t start, int64_t length, int64_t head_dim, double theta, const RopeScaling& scaling = {},
                       DType dtype = DType::f32);
// x [B, T, N, hd] (N heads). Hugging Face's rotate_half convention: pairs (i, i + hd/2).
// inverse = true rotates by -angle, which is the backward of the forward rotation.
Tensor rope(const Tensor& x, const RopeTables& tables, bool inverse = false);

// ---- activations ---------------------------------------------------------------------------
Tensor silu(const Tensor& x);
Tensor silu_backward(const Tensor& dy, const Tensor& x);
Tensor swiglu(const Tensor& gate, const Tensor& up);  // silu(gate) * up
struct SwigluGrads {
  Tensor dgate, dup;
};
SwigluGrads swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up);
// SwiGLU with the MLP's per-neuron gate fused in, one pass instead of two:
//   y[..., f] = silu(gate[..., f]) * up[..., f] * z[f]  (= mul_groups(swiglu(gate, up), z, 1))
// gate/up [..., F], z [F].
Tensor swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z);
struct SwigluGatedGrads {
  Tensor dgate, dup, dz;  // dz undefined unless want_dz
};
// dgate = dy z up silu'(gate), dup = dy z silu(gate), dz[f] = sum over rows of dy silu(gate) up (the
// gate's gradient, accumulated like sum_groups_product). want_dz = false (z a constant, e.g. a fixed
// mask) skips the reduction.
SwigluGatedGrads swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z,
                                       bool want_dz = true);
Tensor softmax(const Tensor& x);                             // over the last dim
Tensor softmax_backward(const Tensor& dy, const Tensor& y);  // y = softmax output

// ---- attention -----------------------------------------------------------------------------
// out[b,t,h] = sum_j p_j v_j over the keys [memory slots of group g(h) ; real tokens], with
// p = softmax(scale * q . k). Memory slots (mem_k/mem_v [B, m, G, hd], may be undefined) are seen by
// every query; real keys are causal: with Tq queries and Tk keys, query i sees key j iff
// j <= i + (Tk - Tq) (so a KV-cache decode step sees the whole cache). Returns the log-sum-exp
// per (b, t, h) for the backward, which recomputes the probabilities (no T x T tensor is kept).
// mem_gate [B, G] (optional, any float dtype; used in the lse dtype, f32 for bf16 q) scales the memory
// slots' attention mass of (b, g) by g >= 0 (engine/cpu/attention.cpp states the math): g = 0 is attention
// without the memory, g = 1 (or no gate) plain memory attention; lse includes the gate.
struct AttentionOut {
  Tensor out;  // [B, Tq, H, hd]
  Tensor lse;  // [B, Tq, H]: f64 for f64 q, else f32 (bf16 q too)
};
AttentionOut attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                       double scale, bool causal = true, const Tensor& mem_gate = {});
struct AttentionGrads {
  Tensor dq, dk, dv, dmem_k, dmem_v;  // dmem_* undefined when there is no memory
  Tensor dmem_gate;                   // [B, G] in mem_gate's dtype; undefined without a gate
};
AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& mem_k, const Tensor& mem_v, const Tensor& out, const Tensor& lse,
                                  double scale, bool causal = true, const Tensor& mem_gate = {});

// ---- cross-entropy -------------------------------------------------------------------------
// Targets i32/i64 [N]; a target equal to ignore_index contributes nothing. loss_sum is the SUM over
// counted rows (shape []); callers divide by the true token count of the accumulated batch.
struct CrossEntropyOut {
  Tensor loss_sum;  // []   f64 for f64 logits, else f32 (bf16 logits too)
  Tensor lse;       // [N]  likewise
  int64_t count = 0;
  Tensor dh;        // linear_cross_entropy with with_dh: the input gradient [N, d] for dloss
};
constexpr int64_t kIgnoreIndex = -100;
CrossEntropyOut cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = kIgnoreIndex);
// dlogits = dloss * (softmax(logits) - onehot(target)), zero rows for ignored targets.
Tensor cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index = kIgnoreIndex);

// Knowledge distillation: sum over rows of KL(softmax(teacher) || softmax(logits)); both [N, V].
Tensor kl_div(const Tensor& logits, const Tensor& teacher_logits);  // -> []
Tensor kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher_logits);

// Fused lm_head + cross-entropy: logits = h W^T are made `chunk` rows at a time and never held whole
// (h [N, d], W [V, d]). The backward recomputes each chunk's logits; dw is only made when asked.
// with_dh: also the input gradient dh = dloss (softmax - onehot) W from the same chunks (out.dh), so
// that a training step's backward needs no second pass (autograd::linear_cross_entropy does this when
// W is frozen: one logits GEMM per chunk fewer).
CrossEntropyOut linear_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk = 256,
                                     int64_t ignore_index = kIgnoreIndex, bool with_dh = false, double dloss = 1.0);
struct LinearCrossEntropyGrads {
  Tensor dh, dw;  // dw undefined unless want_dw
};
LinearCrossEntropyGrads linear_cross_entropy_backward(double dloss, const Tensor& h, const Tensor& w,
                                                      const Tensor& targets, const Tensor& lse, bool want_dw,
                                                      int64_t chunk = 256, int64_t ignore_index = kIgnoreIndex);

// ---- hard-concrete gates (KOFF_METHOD.md section 3) ------------------------------------------
using HardConcrete = koff::HardConcrete;  // beta 2/3, gamma -0.1, zeta 1.1 (engine/tensor/backend.h)
// z = clamp(sigmoid((log u - log(1-u) + log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)
// u [n] uniform in (0,1) (clamped to [eps, 1-eps] here).
Tensor hard_concrete_sample(const Tensor& log_alpha, const Tensor& u);
// dlog_alpha = dz * dz/dlog_alpha, zero where the clamp is active.
Tensor hard_concrete_sample_backward(const Tensor& dz, const Tensor& log_alpha, const Tensor& u);
Tensor hard_concrete_deterministic(const Tensor& log_alpha);  // clamp(sigmoid(la)*(zeta-gamma)+gamma, 0, 1)
Tensor hard_concrete_p_open(const Tensor& log_alpha);         // sigmoid(la - beta*log(-gamma/zeta))
Tensor hard_concrete_p_open_backward(const Tensor& dp, const Tensor& log_alpha);

// ---- optimizer -----------------------------------------------------------------------------
using AdamWConfig = koff::AdamWConfig;  // lr, beta1, beta2, eps, weight_decay (engine/tensor/backend.h)
// One AdamW step in place (decoupled weight decay, bias correction with `step` counted from 1).
void adamw_step_(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config, int64_t step);
// The same step over lists of tensors on one device (one launch per many tensors on CUDA). Every
// tensor must be contiguous; grads[i] may be undefined (that parameter is skipped).
void adamw_multi_(const std::vector<Tensor*>& params, const std::vector<Tensor>& grads, const std::vector<Tensor*>& m,
                  const std::vector<Tensor*>& v, const AdamWConfig& config, int64_t step);

}  // namespace koff::ops
