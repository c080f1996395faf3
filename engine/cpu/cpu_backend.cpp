#include "engine/cpu/cpu_backend.h"

#include "engine/cpu/activations.h"
#include "engine/cpu/adamw.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/cross_entropy.h"
#include "engine/cpu/elementwise.h"
#include "engine/cpu/embedding.h"
#include "engine/cpu/gemm.h"
#include "engine/cpu/hard_concrete.h"
#include "engine/cpu/rmsnorm.h"
#include "engine/cpu/rope.h"

namespace koff {

namespace {

// Calls fn(T{}) with T = float or double for the tensor's dtype.
template <typename Fn>
void on_float(const Tensor& t, const char* op, Fn&& fn) {
  switch (t.dtype()) {
    case DType::f32:
      fn(float{});
      return;
    case DType::f64:
      fn(double{});
      return;
    default:
      fail("{}: the CPU backend computes in f32 or f64, got {}", op, dtype_name(t.dtype()));
  }
}

// Calls fn(I{}) with I = int32_t or int64_t for an id/target tensor.
template <typename Fn>
void on_index(const Tensor& t, const char* op, Fn&& fn) {
  switch (t.dtype()) {
    case DType::i32:
      fn(int32_t{});
      return;
    case DType::i64:
      fn(int64_t{});
      return;
    default:
      fail("{}: ids/targets must be i32 or i64, got {}", op, dtype_name(t.dtype()));
  }
}

template <typename T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <typename T>
T* mut(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Rows of a [..., n] tensor.
int64_t rows_of(const Tensor& t) {
  const int64_t n = t.dim() ? t.size(-1) : 1;
  return n ? t.numel() / n : 0;
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  void binary(int kind, const Tensor& a, const Tensor& b, Tensor& out) override {
    on_float(a, "binary", [&](auto tag) {
      using T = decltype(tag);
      cpu::binary<T>(kind, ptr<T>(a), ptr<T>(b), mut<T>(out), a.numel());
    });
  }
  void scale(const Tensor& a, double s, Tensor& out) override {
    on_float(a, "scale", [&](auto tag) {
      using T = decltype(tag);
      cpu::scale<T>(ptr<T>(a), static_cast<T>(s), mut<T>(out), a.numel());
    });
  }
  void axpy(Tensor& y, const Tensor& x, double alpha) override {
    on_float(y, "axpy_", [&](auto tag) {
      using T = decltype(tag);
      cpu::axpy<T>(mut<T>(y), ptr<T>(x), static_cast<T>(alpha), y.numel());
    });
  }
  void add_bias(const Tensor& x, const Tensor& bias, Tensor& out) override {
    on_float(x, "add_bias", [&](auto tag) {
      using T = decltype(tag);
      cpu::add_bias<T>(ptr<T>(x), ptr<T>(bias), mut<T>(out), rows_of(x), bias.numel());
    });
  }
  void sum_to_last(const Tensor& x, Tensor& out) override {
    on_float(x, "sum_to_last", [&](auto tag) {
      using T = decltype(tag);
      cpu::sum_to_last<T>(ptr<T>(x), mut<T>(out), rows_of(x), out.numel());
    });
  }
  void sum(const Tensor& x, Tensor& out) override {
    on_float(x, "sum", [&](auto tag) {
      using T = decltype(tag);
      *mut<T>(out) = cpu::sum<T>(ptr<T>(x), x.numel());
    });
  }
  void dot(const Tensor& a, const Tensor& b, Tensor& out) override {
    on_float(a, "dot", [&](auto tag) {
      using T = decltype(tag);
      *mut<T>(out) = cpu::dot<T>(ptr<T>(a), ptr<T>(b), a.numel());
    });
  }
  void mul_groups(const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k, Tensor& out) override {
    on_float(x, "mul_groups", [&](auto tag) {
      using T = decltype(tag);
      cpu::mul_groups<T>(ptr<T>(x), ptr<T>(z), mut<T>(out), rows, groups, k);
    });
  }
  void sum_groups_product(const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k,
                          Tensor& dz) override {
    on_float(x, "sum_groups_product", [&](auto tag) {
      using T = decltype(tag);
      cpu::sum_groups_product<T>(ptr<T>(dy), ptr<T>(x), mut<T>(dz), rows, groups, k);
    });
  }

  void gemm(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a,
            bool trans_b, bool b_shared) override {
    on_float(a, "matmul", [&](auto tag) {
      using T = decltype(tag);
      cpu::gemm<T>(ptr<T>(a), ptr<T>(b), mut<T>(c), batch, m, n, k, trans_a, trans_b, b_shared);
    });
  }

  void embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    on_float(table, "embedding", [&](auto tag) {
      using T = decltype(tag);
      on_index(ids, "embedding", [&](auto itag) {
        using I = decltype(itag);
        cpu::embedding<T, I>(ptr<T>(table), ptr<I>(ids), mut<T>(out), ids.numel(), table.size(0), table.size(1));
      });
    });
  }
  void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) override {
    on_float(dy, "embedding_backward", [&](auto tag) {
      using T = decltype(tag);
      on_index(ids, "embedding_backward", [&](auto itag) {
        using I = decltype(itag);
        cpu::embedding_backward<T, I>(ptr<T>(dy), ptr<I>(ids), mut<T>(dtable), ids.numel(), dtable.size(0),
                                      dtable.size(1));
      });
    });
  }

  void rmsnorm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override {
    on_float(x, "rmsnorm", [&](auto tag) {
      using T = decltype(tag);
      cpu::rmsnorm<T>(ptr<T>(x), ptr<T>(w), static_cast<T>(eps), mut<T>(y), mut<T>(rstd), rows_of(x), w.numel());
    });
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                        Tensor& dw) override {
    on_float(x, "rmsnorm_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::rmsnorm_backward<T>(ptr<T>(dy), ptr<T>(x), ptr<T>(w), ptr<T>(rstd), mut<T>(dx), mut<T>(dw), rows_of(x),
                               w.numel());
    });
  }

  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) override {
    on_float(x, "rope", [&](auto tag) {
      using T = decltype(tag);
      cpu::rope<T>(ptr<T>(x), ptr<T>(cos), ptr<T>(sin), inverse, mut<T>(out), x.size(0), x.size(1), x.size(2),
                   x.size(3));
    });
  }

  void silu(const Tensor& x, Tensor& out) override {
    on_float(x, "silu", [&](auto tag) {
      using T = decltype(tag);
      cpu::silu<T>(ptr<T>(x), mut<T>(out), x.numel());
    });
  }
  void silu_backward(const Tensor& dy, const Tensor& x, Tensor& dx) override {
    on_float(x, "silu_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::silu_backward<T>(ptr<T>(dy), ptr<T>(x), mut<T>(dx), x.numel());
    });
  }
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    on_float(gate, "swiglu", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu<T>(ptr<T>(gate), ptr<T>(up), mut<T>(out), gate.numel());
    });
  }
  void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) override {
    on_float(gate, "swiglu_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_backward<T>(ptr<T>(dy), ptr<T>(gate), ptr<T>(up), mut<T>(dgate), mut<T>(dup), gate.numel());
    });
  }
  void swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) override {
    on_float(gate, "swiglu_gated", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_gated<T>(ptr<T>(gate), ptr<T>(up), ptr<T>(z), mut<T>(out), rows_of(gate), z.numel());
    });
  }
  void swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                             Tensor& dup, Tensor& dz) override {
    on_float(gate, "swiglu_gated_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_gated_backward<T>(ptr<T>(dy), ptr<T>(gate), ptr<T>(up), ptr<T>(z), mut<T>(dgate), mut<T>(dup),
                                    mut<T>(dz), rows_of(gate), z.numel());
    });
  }
  void softmax(const Tensor& x, Tensor& out) override {
    on_float(x, "softmax", [&](auto tag) {
      using T = decltype(tag);
      cpu::softmax<T>(ptr<T>(x), mut<T>(out), rows_of(x), x.dim() ? x.size(-1) : 1);
    });
  }
  void softmax_backward(const Tensor& dy, const Tensor& y, Tensor& dx) override {
    on_float(y, "softmax_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::softmax_backward<T>(ptr<T>(dy), ptr<T>(y), mut<T>(dx), rows_of(y), y.dim() ? y.size(-1) : 1);
    });
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                 const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) override {
    const cpu::AttentionDims dims = attention_dims(q, k, mem_k);
    on_float(q, "attention", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention<T>(ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(mem_k), ptr<T>(mem_v), ptr<T>(mem_gate), mut<T>(out),
                        mut<T>(lse), dims, static_cast<T>(scale), causal);
    });
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                          const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out, const Tensor& lse,
                          double scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dmem_k, Tensor& dmem_v,
                          Tensor& dmem_gate) override {
    const cpu::AttentionDims dims = attention_dims(q, k, mem_k);
    on_float(q, "attention_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_backward<T>(ptr<T>(dout), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(mem_k), ptr<T>(mem_v),
                                 ptr<T>(mem_gate), ptr<T>(out), ptr<T>(lse), mut<T>(dq), mut<T>(dk), mut<T>(dv),
                                 mut<T>(dmem_k), mut<T>(dmem_v), mut<T>(dmem_gate), dims, static_cast<T>(scale),
                                 causal);
    });
  }

  int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                        Tensor& lse) override {
    int64_t count = 0;
    on_float(logits, "cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "cross_entropy", [&](auto itag) {
        using I = decltype(itag);
        count = cpu::cross_entropy<T, I>(ptr<T>(logits), ptr<I>(targets), logits.size(0), logits.size(1), ignore_index,
                                         mut<T>(loss_sum), mut<T>(lse));
      });
    });
    return count;
  }
  void cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index, Tensor& dlogits) override {
    on_float(logits, "cross_entropy_backward", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "cross_entropy_backward", [&](auto itag) {
        using I = decltype(itag);
        cpu::cross_entropy_backward<T, I>(static_cast<T>(dloss), ptr<T>(logits), ptr<I>(targets), ptr<T>(lse),
                                          logits.size(0), logits.size(1), ignore_index, mut<T>(dlogits));
      });
    });
  }
  void kl_div(const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) override {
    on_float(logits, "kl_div", [&](auto tag) {
      using T = decltype(tag);
      cpu::kl_div<T>(ptr<T>(logits), ptr<T>(teacher), logits.size(0), logits.size(1), mut<T>(loss_sum));
    });
  }
  void kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) override {
    on_float(logits, "kl_div_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::kl_div_backward<T>(static_cast<T>(dloss), ptr<T>(logits), ptr<T>(teacher), logits.size(0), logits.size(1),
                              mut<T>(dlogits));
    });
  }
  int64_t linear_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                               int64_t ignore_index, Tensor& loss_sum, Tensor& lse) override {
    int64_t count = 0;
    on_float(h, "linear_cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "linear_cross_entropy", [&](auto itag) {
        using I = decltype(itag);
        count = cpu::linear_cross_entropy<T, I>(ptr<T>(h), ptr<T>(w), ptr<I>(targets), h.size(0), w.size(0), h.size(1),
                                                chunk, ignore_index, mut<T>(loss_sum), mut<T>(lse));
      });
    });
    return count;
  }
  void linear_cross_entropy_backward(double dloss, const Tensor& h, const Tensor& w, const Tensor& targets,
                                     const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh,
                                     Tensor& dw) override {
    on_float(h, "linear_cross_entropy_backward", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "linear_cross_entropy_backward", [&](auto itag) {
        using I = decltype(itag);
        cpu::linear_cross_entropy_backward<T, I>(static_cast<T>(dloss), ptr<T>(h), ptr<T>(w), ptr<I>(targets),
                                                 ptr<T>(lse), h.size(0), w.size(0), h.size(1), chunk, ignore_index,
                                                 mut<T>(dh), mut<T>(dw));
      });
    });
  }

  void hard_concrete(int mode, const Tensor& log_alpha, const Tensor& u, Tensor& out) override {
    on_float(log_alpha, "hard_concrete", [&](auto tag) {
      using T = decltype(tag);
      cpu::hard_concrete<T>(mode, ptr<T>(log_alpha), ptr<T>(u), mut<T>(out), log_alpha.numel());
    });
  }
  void hard_concrete_backward(int mode, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                              Tensor& dlog_alpha) override {
    on_float(log_alpha, "hard_concrete_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::hard_concrete_backward<T>(mode, ptr<T>(dout), ptr<T>(log_alpha), ptr<T>(u), mut<T>(dlog_alpha),
                                     log_alpha.numel());
    });
  }

  void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWConfig& config,
             int64_t step) override {
    on_float(param, "adamw_step_", [&](auto tag) {
      using T = decltype(tag);
      cpu::adamw<T>(mut<T>(param), ptr<T>(grad), mut<T>(m), mut<T>(v), param.numel(), config.lr, config.beta1,
                    config.beta2, config.eps, config.weight_decay, step);
    });
  }

 private:
  static cpu::AttentionDims attention_dims(const Tensor& q, const Tensor& k, const Tensor& mem_k) {
    return {q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), mem_k.defined() ? mem_k.size(1) : 0, q.size(3)};
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace koff
