// The CUDA backend: koff::Backend for f32 and bf16 tensors on a GPU (ids/targets i32 or i64). Each
// method checks dtypes, takes the device's stream, opens an NVTX range (for Nsight), and calls the
// launcher that names its kernel (cuda/kernels.h, cuda/gemm.h). The
// semantics are the CPU backend's (engine/cpu/*.h), which the op harness checks op by op.
//
// Nothing here synchronises except where the interface returns a host value: cross_entropy and
// linear_cross_entropy return the counted rows (one 8-byte copy back), which is also where an
// out-of-range id or target raised on the device becomes a koff::Error. Scratch (reduction partials,
// logits chunks) comes from the caching allocator as device tensors.
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/device.h"
#include "cuda/gemm.h"
#include "cuda/kernels.h"
#include "engine/ops/backend.h"

namespace koff::cuda {

namespace {

// ---- profiling marks (engine/ops/profile.h) ----------------------------------------------------
// A mark is a CUDA event recorded on the backend's stream; events come from a pool and go back to it
// on profile_release().
struct Marks {
  std::mutex mutex;
  std::vector<cudaEvent_t> events;  // mark i is events[i]
  size_t used = 0;
};
Marks& marks() {
  static auto* m = new Marks;  // never destroyed: the driver may be gone at exit
  return *m;
}

// NVTX range for the op's lifetime on the host (Nsight Systems shows it over the op's kernels).
class OpScope {
 public:
  OpScope(const char* name, const Tensor& t) : device_(t.device().index), guard_(device_) { nvtxRangePushA(name); }
  ~OpScope() { nvtxRangePop(); }
  cudaStream_t s() const { return stream(device_); }
  int device() const { return device_; }

 private:
  int device_;
  DeviceGuard guard_;
};

Dt dt_of(const Tensor& t, const char* op) {
  if (t.dtype() == DType::f32) return Dt::f32;
  if (t.dtype() == DType::bf16) return Dt::bf16;
  fail("{}: the CUDA backend computes in f32 or bf16 (f32 math), got {}", op, dtype_name(t.dtype()));
}
const void* cptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
void* mptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
bool idx64(const Tensor& ids, const char* op) {
  KOFF_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "{}: ids/targets must be i32 or i64, got {}", op,
             dtype_name(ids.dtype()));
  return ids.dtype() == DType::i64;
}
// Statistics tensors (lse, rstd) are f32 for f32 and bf16 inputs (ops/ allocates them so).
float* stat(const Tensor& t, const char* op, const char* what) {
  KOFF_CHECK(t.dtype() == DType::f32, "{}: {} must be f32 on the CUDA backend, got {}", op, what,
             dtype_name(t.dtype()));
  return t.data<float>();
}
int64_t rows_of(const Tensor& t) {
  const int64_t n = t.dim() ? t.size(-1) : 1;
  return n ? t.numel() / n : 0;
}
Tensor doubles(int64_t n, const Tensor& like) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::f64, like.device());
}
double* dptr(const Tensor& t) { return t.data<double>(); }

// Reads the int64 at `count` (device) and the error flag; the one synchronisation of a loss op.
int64_t read_count(const Tensor& count, int device, const char* op) {
  int64_t host = 0;
  KOFF_CUDA_CHECK(cudaMemcpyAsync(&host, count.raw_data(), sizeof(int64_t), cudaMemcpyDeviceToHost, stream(device)));
  check_error_flag(device, op);  // synchronises the stream
  return host;
}

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }

  void binary(int kind, const Tensor& a, const Tensor& b, Tensor& out) override {
    KOFF_CHECK(kind >= 0 && kind <= 2, "binary: unknown kind {} (0 add, 1 sub, 2 mul)", kind);
    OpScope op(kind == 0 ? "add" : (kind == 1 ? "sub" : "mul"), a);
    cuda::binary(dt_of(a, "binary"), kind, cptr(a), cptr(b), mptr(out), a.numel(), op.s());
  }
  void scale(const Tensor& a, double s, Tensor& out) override {
    OpScope op("scale", a);
    cuda::scale(dt_of(a, "scale"), cptr(a), float(s), mptr(out), a.numel(), op.s());
  }
  void axpy(Tensor& y, const Tensor& x, double alpha) override {
    OpScope op("axpy", y);
    cuda::axpy(dt_of(y, "axpy_"), mptr(y), cptr(x), float(alpha), y.numel(), op.s());
  }
  void add_bias(const Tensor& x, const Tensor& bias, Tensor& out) override {
    OpScope op("add_bias", x);
    cuda::add_bias(dt_of(x, "add_bias"), cptr(x), cptr(bias), mptr(out), rows_of(x), bias.numel(), op.s());
  }
  void sum_to_last(const Tensor& x, Tensor& out) override {
    OpScope op("sum_to_last", x);
    const int64_t rows = rows_of(x), cols = out.numel();
    Tensor scratch = doubles(column_chunks(rows) * cols, x);
    cuda::sum_to_last(dt_of(x, "sum_to_last"), cptr(x), mptr(out), rows, cols, dptr(scratch), op.s());
  }
  void sum(const Tensor& x, Tensor& out) override {
    OpScope op("sum", x);
    Tensor scratch = doubles(kReduceBlocks, x);
    cuda::sum(dt_of(x, "sum"), cptr(x), nullptr, mptr(out), x.numel(), dptr(scratch), op.s());
  }
  void dot(const Tensor& a, const Tensor& b, Tensor& out) override {
    OpScope op("dot", a);
    Tensor scratch = doubles(kReduceBlocks, a);
    cuda::sum(dt_of(a, "dot"), cptr(a), cptr(b), mptr(out), a.numel(), dptr(scratch), op.s());
  }
  void mul_groups(const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k, Tensor& out) override {
    OpScope op("mul_groups", x);
    cuda::mul_groups(dt_of(x, "mul_groups"), cptr(x), cptr(z), mptr(out), rows, groups, k, op.s());
  }
  void sum_groups_product(const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k,
                          Tensor& dz) override {
    OpScope op("sum_groups_product", x);
    Tensor scratch = doubles(column_chunks(rows) * groups * k, x);
    cuda::sum_groups_product(dt_of(x, "sum_groups_product"), cptr(dy), cptr(x), mptr(dz), rows, groups, k,
                             dptr(scratch), op.s());
  }

  void gemm(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a,
            bool trans_b, bool b_shared) override {
    OpScope op("gemm", a);
    const Dt dt = dt_of(a, "matmul");
    if (batch * m * n == 0) return;
    if (k == 0) {  // the product of empty sums
      KOFF_CUDA_CHECK(cudaMemsetAsync(c.raw_data(), 0, c.nbytes(), op.s()));
      return;
    }
    GemmArgs g;
    g.ab_dt = g.c_dt = dt;
    g.trans_a = trans_a;
    g.trans_b = trans_b;
    g.m = m, g.n = n, g.k = k;
    g.lda = trans_a ? m : k;
    g.ldb = trans_b ? k : n;
    g.ldc = n;
    const size_t es = dtype_size(a.dtype());
    if (b_shared && !trans_a) {  // one GEMM over the stacked rows of every batch, as on the CPU
      g.m = batch * m;
      cuda::gemm(g, cptr(a), cptr(b), mptr(c), op.device(), op.s());
    } else if (b_shared) {  // A^T per batch against one B: a loop (rare: only some gradients take it)
      for (int64_t i = 0; i < batch; ++i)
        cuda::gemm(g, static_cast<const char*>(cptr(a)) + i * m * k * es, cptr(b),
                   static_cast<char*>(mptr(c)) + i * m * n * es, op.device(), op.s());
    } else {
      g.batch = batch;
      g.stride_a = m * k;
      g.stride_b = k * n;
      g.stride_c = m * n;
      cuda::gemm(g, cptr(a), cptr(b), mptr(c), op.device(), op.s());
    }
  }

  // out [M, N] = x2d [M, K] w [N, K]^T + bias[N], the bias added by cuBLASLt's epilogue (f32, before
  // the output is rounded) instead of a second pass over out. Without a bias, the plain gemm.
  void linear(const Tensor& x2d, const Tensor& w, const Tensor& bias, Tensor& out) override {
    const int64_t m = x2d.size(0), k = x2d.size(1), n = w.size(0);
    if (!bias.defined()) {
      gemm(x2d, w, out, 1, m, n, k, false, true, true);
      return;
    }
    OpScope op("linear", x2d);
    const Dt dt = dt_of(x2d, "linear");
    if (m * n == 0) return;
    if (k == 0) {  // an empty product: every row is the bias
      KOFF_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), op.s()));
      cuda::add_bias(dt, cptr(out), cptr(bias), mptr(out), m, n, op.s());
      return;
    }
    GemmArgs g;
    g.ab_dt = g.c_dt = dt;
    g.trans_b = true;
    g.m = m, g.n = n, g.k = k;
    g.lda = k, g.ldb = k, g.ldc = n;
    cuda::gemm(g, cptr(x2d), cptr(w), mptr(out), op.device(), op.s(), cptr(bias));
  }

  void embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    OpScope op("embedding", table);
    cuda::embedding(dt_of(table, "embedding"), cptr(table), cptr(ids), idx64(ids, "embedding"), mptr(out), ids.numel(),
                    table.size(0), table.size(1), error_flag(op.device()), op.s());
  }
  void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) override {
    OpScope op("embedding_backward", dy);
    cuda::embedding_backward(dt_of(dy, "embedding_backward"), cptr(dy), cptr(ids), idx64(ids, "embedding_backward"),
                             mptr(dtable), ids.numel(), dtable.size(0), dtable.size(1), error_flag(op.device()),
                             op.s());
  }

  void rmsnorm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override {
    OpScope op("rmsnorm", x);
    cuda::rmsnorm(dt_of(x, "rmsnorm"), cptr(x), cptr(w), float(eps), mptr(y), stat(rstd, "rmsnorm", "rstd"), rows_of(x),
                  w.numel(), op.s());
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                        Tensor& dw) override {
    OpScope op("rmsnorm_backward", x);
    const int64_t rows = rows_of(x), d = w.numel();
    Tensor scratch = doubles(column_chunks(rows) * d, x);
    cuda::rmsnorm_backward(dt_of(x, "rmsnorm_backward"), cptr(dy), cptr(x), cptr(w),
                           stat(rstd, "rmsnorm_backward", "rstd"), mptr(dx), mptr(dw), rows, d, dptr(scratch), op.s());
  }

  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) override {
    OpScope op("rope", x);
    cuda::rope(dt_of(x, "rope"), cptr(x), cptr(cos), cptr(sin), inverse, mptr(out), x.size(0), x.size(1), x.size(2),
               x.size(3), op.s());
  }

  void silu(const Tensor& x, Tensor& out) override {
    OpScope op("silu", x);
    cuda::silu(dt_of(x, "silu"), cptr(x), mptr(out), x.numel(), op.s());
  }
  void silu_backward(const Tensor& dy, const Tensor& x, Tensor& dx) override {
    OpScope op("silu_backward", x);
    cuda::silu_backward(dt_of(x, "silu_backward"), cptr(dy), cptr(x), mptr(dx), x.numel(), op.s());
  }
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    OpScope op("swiglu", gate);
    cuda::swiglu(dt_of(gate, "swiglu"), cptr(gate), cptr(up), mptr(out), gate.numel(), op.s());
  }
  void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) override {
    OpScope op("swiglu_backward", gate);
    cuda::swiglu_backward(dt_of(gate, "swiglu_backward"), cptr(dy), cptr(gate), cptr(up), mptr(dgate), mptr(dup),
                          gate.numel(), op.s());
  }
  void swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) override {
    OpScope op("swiglu_gated", gate);
    cuda::swiglu_gated(dt_of(gate, "swiglu_gated"), cptr(gate), cptr(up), cptr(z), mptr(out), rows_of(gate), z.numel(),
                       op.s());
  }
  void swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                             Tensor& dup, Tensor& dz) override {
    OpScope op("swiglu_gated_backward", gate);
    const Dt dt = dt_of(gate, "swiglu_gated_backward");
    const int64_t rows = rows_of(gate), cols = z.numel();
    if (!dz.defined()) {  // z a constant: elementwise only
      cuda::swiglu_gated_backward(dt, cptr(dy), cptr(gate), cptr(up), cptr(z), mptr(dgate), mptr(dup), rows, cols,
                                  op.s());
      return;
    }
    Tensor scratch = doubles(column_chunks(rows) * cols, gate);
    cuda::swiglu_gated_backward_dz(dt, cptr(dy), cptr(gate), cptr(up), cptr(z), mptr(dgate), mptr(dup), mptr(dz), rows,
                                   cols, dptr(scratch), op.s());
  }
  void softmax(const Tensor& x, Tensor& out) override {
    OpScope op("softmax", x);
    cuda::softmax(dt_of(x, "softmax"), cptr(x), mptr(out), rows_of(x), x.dim() ? x.size(-1) : 1, op.s());
  }
  void softmax_backward(const Tensor& dy, const Tensor& y, Tensor& dx) override {
    OpScope op("softmax_backward", y);
    cuda::softmax_backward(dt_of(y, "softmax_backward"), cptr(dy), cptr(y), mptr(dx), rows_of(y),
                           y.dim() ? y.size(-1) : 1, op.s());
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                 const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) override {
    OpScope op("attention", q);
    const Dt dt = dt_of(q, "attention");
    const AttentionShape shape = shape_of(q, k, mem_k);
    float* lse_out = stat(lse, "attention", "lse");
    const float* gate = mem_gate.defined() ? stat(mem_gate, "attention", "mem_gate") : nullptr;
    // Tensor cores for bf16 at head_dim 64/128 (attention_mma.cu), the SIMT kernels otherwise and for a
    // gated memory (the tensor-core kernels have no gate).
    if (!gate && cuda::attention_use_mma(dt, shape, {cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), cptr(out)}))
      cuda::attention_forward_mma(cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), mptr(out), lse_out, shape,
                                  float(scale), causal, op.s());
    else
      cuda::attention_forward(dt, cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), gate, mptr(out), lse_out, shape,
                              float(scale), causal, op.s());
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                          const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out, const Tensor& lse,
                          double scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dmem_k, Tensor& dmem_v,
                          Tensor& dmem_gate) override {
    OpScope op("attention_backward", q);
    Tensor dsum = Tensor::empty({std::max<int64_t>(q.numel() / std::max<int64_t>(q.size(3), 1), 1)}, DType::f32,
                                q.device());
    const Dt dt = dt_of(q, "attention_backward");
    const AttentionShape shape = shape_of(q, k, mem_k);
    const float* lse_in = stat(lse, "attention_backward", "lse");
    const float* gate = mem_gate.defined() ? stat(mem_gate, "attention_backward", "mem_gate") : nullptr;
    if (!gate && cuda::attention_use_mma(dt, shape,
                                         {cptr(dout), cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), cptr(out),
                                          cptr(dq), cptr(dk), cptr(dv), cptr(dmem_k), cptr(dmem_v)})) {
      cuda::attention_backward_mma(cptr(dout), cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), cptr(out), lse_in,
                                   dsum.data<float>(), mptr(dq), mptr(dk), mptr(dv), mptr(dmem_k), mptr(dmem_v), shape,
                                   float(scale), causal, op.s());
      return;
    }
    Tensor dgate_slots;  // per-slot partial gate gradients [B, G, m]
    if (gate && shape.mem > 0)
      dgate_slots = Tensor::empty({shape.batch * shape.groups * shape.mem}, DType::f32, q.device());
    cuda::attention_backward(dt, cptr(dout), cptr(q), cptr(k), cptr(v), cptr(mem_k), cptr(mem_v), gate, cptr(out),
                             lse_in, dsum.data<float>(), mptr(dq), mptr(dk), mptr(dv), mptr(dmem_k), mptr(dmem_v),
                             gate ? stat(dmem_gate, "attention_backward", "dmem_gate") : nullptr,
                             dgate_slots.defined() ? dgate_slots.data<float>() : nullptr, shape, float(scale), causal,
                             op.s());
  }

  int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                        Tensor& lse) override {
    OpScope op("cross_entropy", logits);
    const int64_t n = logits.size(0), v = logits.size(1);
    const bool i64 = idx64(targets, "cross_entropy");
    Tensor row_loss = doubles(n, logits), count = Tensor::empty({1}, DType::i64, logits.device());
    cuda::ce_rows(dt_of(logits, "cross_entropy"), cptr(logits), cptr(targets), i64, n, v, ignore_index,
                  stat(lse, "cross_entropy", "lse"), dptr(row_loss), error_flag(op.device()), op.s());
    cuda::sum_doubles(dptr(row_loss), n, dt_of(loss_sum, "cross_entropy"), mptr(loss_sum), op.s());
    cuda::count_targets(cptr(targets), i64, n, ignore_index, count.data<int64_t>(), op.s());
    return read_count(count, op.device(), "cross_entropy");
  }
  void cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index, Tensor& dlogits) override {
    OpScope op("cross_entropy_backward", logits);
    const Dt dt = dt_of(logits, "cross_entropy_backward");
    cuda::ce_grad(dt, cptr(logits), cptr(targets), idx64(targets, "cross_entropy_backward"),
                  stat(lse, "cross_entropy_backward", "lse"), logits.size(0), logits.size(1), ignore_index,
                  float(dloss), dt, mptr(dlogits), nullptr, op.s());
  }
  void kl_div(const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) override {
    OpScope op("kl_div", logits);
    const int64_t n = logits.size(0);
    Tensor row_kl = doubles(n, logits);
    cuda::kl_rows(dt_of(logits, "kl_div"), cptr(logits), cptr(teacher), n, logits.size(1), dptr(row_kl), op.s());
    cuda::sum_doubles(dptr(row_kl), n, dt_of(loss_sum, "kl_div"), mptr(loss_sum), op.s());
  }
  void kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) override {
    OpScope op("kl_div_backward", logits);
    cuda::kl_grad(dt_of(logits, "kl_div_backward"), float(dloss), cptr(logits), cptr(teacher), logits.size(0),
                  logits.size(1), mptr(dlogits), op.s());
  }

  // Chunks of `rows` rows: logits_chunk = h_chunk W^T in f32 (bf16 inputs accumulate in f32 and are
  // written f32), then the row kernel; [N, V] never exists.
  int64_t linear_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                               int64_t ignore_index, Tensor& loss_sum, Tensor& lse) override {
    OpScope op("linear_cross_entropy", h);
    const Dt dt = dt_of(h, "linear_cross_entropy");
    const bool i64 = idx64(targets, "linear_cross_entropy");
    const int64_t n = h.size(0), d = h.size(1), vocab = w.size(0), rows = std::max<int64_t>(1, std::min(chunk, n));
    const size_t es = dtype_size(h.dtype()), is = dtype_size(targets.dtype());
    Tensor logits = Tensor::empty({rows, vocab}, DType::f32, h.device());
    Tensor row_loss = doubles(n, h), count = Tensor::empty({1}, DType::i64, h.device());
    float* lse_p = stat(lse, "linear_cross_entropy", "lse");
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
      const int64_t cn = std::min(rows, n - r0);
      logits_chunk(dt, h, w, r0, cn, d, vocab, logits, op);
      cuda::ce_rows(Dt::f32, logits.raw_data(), static_cast<const char*>(cptr(targets)) + r0 * is, i64, cn, vocab,
                    ignore_index, lse_p + r0, dptr(row_loss) + r0, error_flag(op.device()), op.s());
    }
    (void)es;
    cuda::sum_doubles(dptr(row_loss), n, dt_of(loss_sum, "linear_cross_entropy"), mptr(loss_sum), op.s());
    cuda::count_targets(cptr(targets), i64, n, ignore_index, count.data<int64_t>(), op.s());
    return read_count(count, op.device(), "linear_cross_entropy");
  }
  void linear_cross_entropy_backward(double dloss, const Tensor& h, const Tensor& w, const Tensor& targets,
                                     const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh,
                                     Tensor& dw) override {
    OpScope op("linear_cross_entropy_backward", h);
    const Dt dt = dt_of(h, "linear_cross_entropy_backward");
    const bool i64 = idx64(targets, "linear_cross_entropy_backward");
    const int64_t n = h.size(0), d = h.size(1), vocab = w.size(0), rows = std::max<int64_t>(1, std::min(chunk, n));
    const size_t es = dtype_size(h.dtype()), is = dtype_size(targets.dtype());
    Tensor logits = Tensor::empty({rows, vocab}, DType::f32, h.device());
    Tensor g_bf16 = dt == Dt::bf16 ? Tensor::empty({rows, vocab}, DType::bf16, h.device()) : Tensor();
    const float* lse_p = stat(lse, "linear_cross_entropy_backward", "lse");
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
      const int64_t cn = std::min(rows, n - r0);
      logits_chunk(dt, h, w, r0, cn, d, vocab, logits, op);
      // G = dloss (softmax - onehot), in place over the f32 logits (and a bf16 copy for bf16 GEMMs).
      cuda::ce_grad(Dt::f32, logits.raw_data(), static_cast<const char*>(cptr(targets)) + r0 * is, i64, lse_p + r0, cn,
                    vocab, ignore_index, float(dloss), Dt::f32, logits.raw_data(), mptr(g_bf16), op.s());
      const void* g = dt == Dt::bf16 ? cptr(g_bf16) : logits.raw_data();
      // dh_chunk = G W:  [cn, V] x [V, d]
      GemmArgs a;
      a.ab_dt = a.c_dt = dt;
      a.m = cn, a.n = d, a.k = vocab, a.lda = vocab, a.ldb = d, a.ldc = d;
      cuda::gemm(a, g, cptr(w), static_cast<char*>(mptr(dh)) + r0 * d * es, op.device(), op.s());
      if (dw.defined()) {  // dw += G^T h_chunk:  [V, cn] x [cn, d]
        GemmArgs b;
        b.ab_dt = b.c_dt = dt;
        b.trans_a = true;
        b.m = vocab, b.n = d, b.k = cn, b.lda = vocab, b.ldb = d, b.ldc = d, b.beta = 1.0f;
        cuda::gemm(b, g, static_cast<const char*>(cptr(h)) + r0 * d * es, mptr(dw), op.device(), op.s());
      }
    }
  }

  void hard_concrete(int mode, const Tensor& log_alpha, const Tensor& u, Tensor& out) override {
    KOFF_CHECK(mode >= 0 && mode <= 2, "hard_concrete: unknown mode {} (0 sample, 1 deterministic, 2 p_open)", mode);
    OpScope op("hard_concrete", log_alpha);
    cuda::hard_concrete(dt_of(log_alpha, "hard_concrete"), mode, hc_constants(), cptr(log_alpha), cptr(u), mptr(out),
                        log_alpha.numel(), op.s());
  }
  void hard_concrete_backward(int mode, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                              Tensor& dlog_alpha) override {
    KOFF_CHECK(mode >= 0 && mode <= 2, "hard_concrete_backward: unknown mode {} (0 sample, 1 deterministic, 2 p_open)",
               mode);
    OpScope op("hard_concrete_backward", log_alpha);
    cuda::hard_concrete_backward(dt_of(log_alpha, "hard_concrete_backward"), mode, hc_constants(), cptr(dout),
                                 cptr(log_alpha), cptr(u), mptr(dlog_alpha), log_alpha.numel(), op.s());
  }

  void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWConfig& config,
             int64_t step) override {
    OpScope op("adamw", param);
    cuda::adamw(dt_of(param, "adamw_step_"), mptr(param), cptr(grad), mptr(m), mptr(v), param.numel(),
                adamw_scalars(config, step), op.s());
  }

  void adamw_multi(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                   const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const ops::AdamWConfig& config,
                   int64_t step) override {
    bool f32 = true;
    for (const Tensor* p : params) f32 = f32 && p->dtype() == DType::f32;
    if (f32) cuda::adamw_multi(params, grads, m, v, config, step);  // one launch per 64 tensors
    else Backend::adamw_multi(params, grads, m, v, config, step);
  }

  uint64_t profile_mark() override {
    int device = 0;
    KOFF_CUDA_CHECK(cudaGetDevice(&device));
    Marks& mk = marks();
    std::lock_guard<std::mutex> lock(mk.mutex);
    if (mk.used == mk.events.size()) {
      cudaEvent_t e;
      KOFF_CUDA_CHECK(cudaEventCreate(&e));
      mk.events.push_back(e);
    }
    KOFF_CUDA_CHECK(cudaEventRecord(mk.events[mk.used], stream(device)));
    return mk.used++;
  }
  double profile_elapsed_ms(uint64_t start, uint64_t stop) override {
    Marks& mk = marks();
    std::lock_guard<std::mutex> lock(mk.mutex);
    KOFF_CHECK(start < mk.used && stop < mk.used, "profile_elapsed_ms: unknown marks {} and {}", start, stop);
    KOFF_CUDA_CHECK(cudaEventSynchronize(mk.events[stop]));
    float ms = 0;
    KOFF_CUDA_CHECK(cudaEventElapsedTime(&ms, mk.events[start], mk.events[stop]));
    return ms;
  }
  void profile_release() override {
    Marks& mk = marks();
    std::lock_guard<std::mutex> lock(mk.mutex);
    mk.used = 0;
  }
  void synchronize() override {
    int device = 0;
    KOFF_CUDA_CHECK(cudaGetDevice(&device));
    cuda::synchronize(device);
  }

  static AdamWScalars adamw_scalars(const ops::AdamWConfig& c, int64_t step) {
    const double t = static_cast<double>(step);
    return {float(1.0 - c.lr * c.weight_decay), float(c.beta2),
            float(1.0 - c.beta1),               float(1.0 - c.beta2),
            float(c.lr / (1.0 - std::pow(c.beta1, t))), float(std::sqrt(1.0 - std::pow(c.beta2, t))),
            float(c.eps)};
  }

 private:
  static AttentionShape shape_of(const Tensor& q, const Tensor& k, const Tensor& mem_k) {
    return {q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), mem_k.defined() ? mem_k.size(1) : 0, q.size(3)};
  }
  static HardConcreteConstants hc_constants() {
    using HC = ops::HardConcrete;
    return {float(HC::zeta - HC::gamma), float(HC::gamma), float(HC::beta * std::log(-HC::gamma / HC::zeta)),
            float(HC::beta), float(HC::eps), float(1 - HC::eps)};
  }
  // logits [cn, V] f32 = h[r0 : r0 + cn] W^T
  static void logits_chunk(Dt dt, const Tensor& h, const Tensor& w, int64_t r0, int64_t cn, int64_t d, int64_t vocab,
                           Tensor& logits, const OpScope& op) {
    GemmArgs g;
    g.ab_dt = dt;
    g.c_dt = Dt::f32;
    g.trans_b = true;
    g.m = cn, g.n = vocab, g.k = d, g.lda = d, g.ldb = d, g.ldc = vocab;
    if (d == 0) {
      KOFF_CUDA_CHECK(cudaMemsetAsync(logits.raw_data(), 0, size_t(cn * vocab) * sizeof(float), op.s()));
      return;
    }
    cuda::gemm(g, static_cast<const char*>(cptr(h)) + r0 * d * dtype_size(h.dtype()), cptr(w), logits.raw_data(),
               op.device(), op.s());
  }
};

}  // namespace

Backend& cuda_backend() {
  static CudaBackend backend;
  return backend;
}

void adamw_multi(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                 const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const ops::AdamWConfig& config,
                 int64_t step) {
  KOFF_CHECK(params.size() == grads.size() && params.size() == m.size() && params.size() == v.size(),
             "adamw_multi: {} params, {} grads, {} m, {} v", params.size(), grads.size(), m.size(), v.size());
  KOFF_CHECK(step >= 1, "adamw_multi: step counts from 1, got {}", step);
  if (params.empty()) return;
  std::vector<AdamWChunk> chunks;
  const Device dev = params[0]->device();
  for (size_t i = 0; i < params.size(); ++i) {
    for (const Tensor* t : {static_cast<const Tensor*>(params[i]), grads[i], static_cast<const Tensor*>(m[i]),
                            static_cast<const Tensor*>(v[i])}) {
      KOFF_CHECK(t->device() == dev && t->dtype() == DType::f32 && t->is_contiguous() &&
                     t->numel() == params[i]->numel(),
                 "adamw_multi: tensor {} must be a contiguous f32 tensor of {} elements on {}", i, params[i]->numel(),
                 dev.str());
    }
    chunks.push_back({params[i]->data<float>(), grads[i]->data<float>(), m[i]->data<float>(), v[i]->data<float>(),
                      params[i]->numel()});
  }
  OpScope op("adamw_multi", *params[0]);
  cuda::adamw_multi(chunks.data(), static_cast<int>(chunks.size()), CudaBackend::adamw_scalars(config, step), op.s());
}

}  // namespace koff::cuda
