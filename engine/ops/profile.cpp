#include "engine/ops/profile.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>

namespace koff::profile {

namespace {

std::atomic<bool> on{false};

struct Pending {
  const char* name;
  Backend* backend;
  uint64_t start, stop;
  double bytes, flops;
};
std::mutex mutex;
std::vector<Pending>& pending() {
  static auto* p = new std::vector<Pending>;
  return *p;
}

double bytes_of(std::initializer_list<const Tensor*> ts) {
  double b = 0;
  for (const Tensor* t : ts)
    if (t && t->defined()) b += static_cast<double>(t->nbytes());
  return b;
}

// Score/value products of attention: 4 hd per (query, visible key) and head, the causal rule of
// ops::attention (query i sees the memory slots and real keys j <= i + Tk - Tq).
double attention_flops(const Tensor& q, const Tensor& k, const Tensor& mem_k, bool causal) {
  const double B = static_cast<double>(q.size(0)), H = static_cast<double>(q.size(2)), hd = static_cast<double>(q.size(3));
  const int64_t Tq = q.size(1), Tk = k.size(1), m = mem_k.defined() ? mem_k.size(1) : 0;
  double keys = 0;
  for (int64_t i = 0; i < Tq; ++i)
    keys += static_cast<double>(m + (causal ? std::clamp<int64_t>(i + Tk - Tq + 1, 0, Tk) : Tk));
  return 4.0 * B * H * hd * keys;
}

// Wraps every call of `inner` between two marks.
class Timed final : public Backend {
 public:
  explicit Timed(Backend& inner) : inner_(inner) {}
  const char* name() const override { return inner_.name(); }

  class Scope {
   public:
    Scope(Timed& t, const char* name, double bytes, double flops = 0)
        : t_(t), name_(name), bytes_(bytes), flops_(flops), start_(t.inner_.profile_mark()) {}
    ~Scope() {
      const uint64_t stop = t_.inner_.profile_mark();
      std::lock_guard<std::mutex> lock(mutex);
      pending().push_back({name_, &t_.inner_, start_, stop, bytes_, flops_});
    }

   private:
    Timed& t_;
    const char* name_;
    double bytes_, flops_;
    uint64_t start_;
  };

  void binary(int kind, const Tensor& a, const Tensor& b, Tensor& out) override {
    Scope s(*this, kind == 0 ? "add" : (kind == 1 ? "sub" : "mul"), bytes_of({&a, &b, &out}));
    inner_.binary(kind, a, b, out);
  }
  void scale(const Tensor& a, double x, Tensor& out) override {
    Scope s(*this, "scale", bytes_of({&a, &out}));
    inner_.scale(a, x, out);
  }
  void axpy(Tensor& y, const Tensor& x, double alpha) override {
    Scope s(*this, "axpy", bytes_of({&y, &x, &y}));
    inner_.axpy(y, x, alpha);
  }
  void add_bias(const Tensor& x, const Tensor& bias, Tensor& out) override {
    Scope s(*this, "add_bias", bytes_of({&x, &bias, &out}));
    inner_.add_bias(x, bias, out);
  }
  void sum_to_last(const Tensor& x, Tensor& out) override {
    Scope s(*this, "sum_to_last", bytes_of({&x, &out}));
    inner_.sum_to_last(x, out);
  }
  void sum(const Tensor& x, Tensor& out) override {
    Scope s(*this, "sum", bytes_of({&x, &out}));
    inner_.sum(x, out);
  }
  void dot(const Tensor& a, const Tensor& b, Tensor& out) override {
    Scope s(*this, "dot", bytes_of({&a, &b, &out}));
    inner_.dot(a, b, out);
  }
  void mul_groups(const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k, Tensor& out) override {
    Scope s(*this, "mul_groups", bytes_of({&x, &z, &out}));
    inner_.mul_groups(x, z, rows, groups, k, out);
  }
  void sum_groups_product(const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k,
                          Tensor& dz) override {
    Scope s(*this, "sum_groups_product", bytes_of({&dy, &x, &dz}));
    inner_.sum_groups_product(dy, x, rows, groups, k, dz);
  }
  void gemm(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a,
            bool trans_b, bool b_shared) override {
    Scope s(*this, "gemm", bytes_of({&a, &b, &c}), 2.0 * double(batch) * double(m) * double(n) * double(k));
    inner_.gemm(a, b, c, batch, m, n, k, trans_a, trans_b, b_shared);
  }
  void linear(const Tensor& x2d, const Tensor& w, const Tensor& bias, Tensor& out) override {
    Scope s(*this, "gemm", bytes_of({&x2d, &w, &bias, &out}),
            2.0 * double(x2d.size(0)) * double(w.size(0)) * double(x2d.size(1)));
    inner_.linear(x2d, w, bias, out);
  }
  void embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    Scope s(*this, "embedding", bytes_of({&ids, &out, &out}));  // the rows read are as many as written
    inner_.embedding(table, ids, out);
  }
  void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) override {
    Scope s(*this, "embedding_backward", bytes_of({&dy, &ids, &dy}));
    inner_.embedding_backward(dy, ids, dtable);
  }
  void rmsnorm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override {
    Scope s(*this, "rmsnorm", bytes_of({&x, &w, &y, &rstd}));
    inner_.rmsnorm(x, w, eps, y, rstd);
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                        Tensor& dw) override {
    Scope s(*this, "rmsnorm_backward", bytes_of({&dy, &x, &w, &rstd, &dx, &dw}));
    inner_.rmsnorm_backward(dy, x, w, rstd, dx, dw);
  }
  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) override {
    Scope s(*this, inverse ? "rope_backward" : "rope", bytes_of({&x, &cos, &sin, &out}));
    inner_.rope(x, cos, sin, inverse, out);
  }
  void silu(const Tensor& x, Tensor& out) override {
    Scope s(*this, "silu", bytes_of({&x, &out}));
    inner_.silu(x, out);
  }
  void silu_backward(const Tensor& dy, const Tensor& x, Tensor& dx) override {
    Scope s(*this, "silu_backward", bytes_of({&dy, &x, &dx}));
    inner_.silu_backward(dy, x, dx);
  }
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    Scope s(*this, "swiglu", bytes_of({&gate, &up, &out}));
    inner_.swiglu(gate, up, out);
  }
  void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) override {
    Scope s(*this, "swiglu_backward", bytes_of({&dy, &gate, &up, &dgate, &dup}));
    inner_.swiglu_backward(dy, gate, up, dgate, dup);
  }
  void swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) override {
    Scope s(*this, "swiglu_gated", bytes_of({&gate, &up, &z, &out}));
    inner_.swiglu_gated(gate, up, z, out);
  }
  void swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                             Tensor& dup, Tensor& dz) override {
    Scope s(*this, "swiglu_gated_backward", bytes_of({&dy, &gate, &up, &z, &dgate, &dup, &dz}));
    inner_.swiglu_gated_backward(dy, gate, up, z, dgate, dup, dz);
  }
  void softmax(const Tensor& x, Tensor& out) override {
    Scope s(*this, "softmax", bytes_of({&x, &out}));
    inner_.softmax(x, out);
  }
  void softmax_backward(const Tensor& dy, const Tensor& y, Tensor& dx) override {
    Scope s(*this, "softmax_backward", bytes_of({&dy, &y, &dx}));
    inner_.softmax_backward(dy, y, dx);
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                 const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) override {
    Scope s(*this, "attention", bytes_of({&q, &k, &v, &mem_k, &mem_v, &out, &lse}),
            attention_flops(q, k, mem_k, causal));
    inner_.attention(q, k, v, mem_k, mem_v, mem_gate, scale, causal, out, lse);
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                          const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out, const Tensor& lse,
                          double scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dmem_k, Tensor& dmem_v,
                          Tensor& dmem_gate) override {
    // Useful work of the backward: twice the forward's products (dq, dk, dv; not the recomputed scores).
    Scope s(*this, "attention_backward",
            bytes_of({&dout, &q, &k, &v, &mem_k, &mem_v, &out, &lse, &dq, &dk, &dv, &dmem_k, &dmem_v}),
            2.0 * attention_flops(q, k, mem_k, causal));
    inner_.attention_backward(dout, q, k, v, mem_k, mem_v, mem_gate, out, lse, scale, causal, dq, dk, dv, dmem_k,
                              dmem_v, dmem_gate);
  }
  int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                        Tensor& lse) override {
    Scope s(*this, "cross_entropy", bytes_of({&logits, &targets, &lse}));
    return inner_.cross_entropy(logits, targets, ignore_index, loss_sum, lse);
  }
  void cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index, Tensor& dlogits) override {
    Scope s(*this, "cross_entropy_backward", bytes_of({&logits, &targets, &lse, &dlogits}));
    inner_.cross_entropy_backward(dloss, logits, targets, lse, ignore_index, dlogits);
  }
  int64_t linear_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                               int64_t ignore_index, Tensor& loss_sum, Tensor& lse) override {
    Scope s(*this, "linear_cross_entropy", bytes_of({&h, &w, &targets, &lse}),
            2.0 * double(h.size(0)) * double(w.size(0)) * double(h.size(1)));
    return inner_.linear_cross_entropy(h, w, targets, chunk, ignore_index, loss_sum, lse);
  }
  void linear_cross_entropy_backward(double dloss, const Tensor& h, const Tensor& w, const Tensor& targets,
                                     const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh,
                                     Tensor& dw) override {
    const double product = 2.0 * double(h.size(0)) * double(w.size(0)) * double(h.size(1));
    Scope s(*this, "linear_cross_entropy_backward", bytes_of({&h, &w, &targets, &lse, &dh, &dw}),
            product * (dw.defined() ? 2 : 1));
    inner_.linear_cross_entropy_backward(dloss, h, w, targets, lse, chunk, ignore_index, dh, dw);
  }
  void kl_div(const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) override {
    Scope s(*this, "kl_div", bytes_of({&logits, &teacher}));
    inner_.kl_div(logits, teacher, loss_sum);
  }
  void kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) override {
    Scope s(*this, "kl_div_backward", bytes_of({&logits, &teacher, &dlogits}));
    inner_.kl_div_backward(dloss, logits, teacher, dlogits);
  }
  void hard_concrete(int mode, const Tensor& log_alpha, const Tensor& u, Tensor& out) override {
    Scope s(*this, "hard_concrete", bytes_of({&log_alpha, &u, &out}));
    inner_.hard_concrete(mode, log_alpha, u, out);
  }
  void hard_concrete_backward(int mode, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                              Tensor& dlog_alpha) override {
    Scope s(*this, "hard_concrete_backward", bytes_of({&dout, &log_alpha, &u, &dlog_alpha}));
    inner_.hard_concrete_backward(mode, dout, log_alpha, u, dlog_alpha);
  }
  void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWConfig& config,
             int64_t step) override {
    Scope s(*this, "adamw", bytes_of({&param, &grad, &m, &v}) + bytes_of({&param, &m, &v}));
    inner_.adamw(param, grad, m, v, config, step);
  }
  void adamw_multi(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                   const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const ops::AdamWConfig& config,
                   int64_t step) override {
    double bytes = 0;
    for (const Tensor* p : params) bytes += 7.0 * static_cast<double>(p->nbytes());  // read p g m v, write p m v
    Scope s(*this, "adamw_multi", bytes);
    inner_.adamw_multi(params, grads, m, v, config, step);
  }
  uint64_t profile_mark() override { return inner_.profile_mark(); }
  double profile_elapsed_ms(uint64_t a, uint64_t b) override { return inner_.profile_elapsed_ms(a, b); }
  void profile_release() override { inner_.profile_release(); }
  void synchronize() override { inner_.synchronize(); }

 private:
  Backend& inner_;
};

}  // namespace

void set_enabled(bool value) { on.store(value); }
bool enabled() { return on.load(); }

Backend& timed(Backend& inner, DeviceType type) {
  static std::mutex m;
  static std::map<std::pair<DeviceType, Backend*>, std::unique_ptr<Timed>>* wrappers =
      new std::map<std::pair<DeviceType, Backend*>, std::unique_ptr<Timed>>;
  std::lock_guard<std::mutex> lock(m);
  auto& w = (*wrappers)[{type, &inner}];
  if (!w) w = std::make_unique<Timed>(inner);
  return *w;
}

std::vector<OpTotal> collect() {
  std::vector<Pending> taken;
  {
    std::lock_guard<std::mutex> lock(mutex);
    taken.swap(pending());
  }
  std::map<std::string, OpTotal> totals;
  std::vector<Backend*> seen;
  for (const Pending& p : taken) {
    OpTotal& t = totals[p.name];
    t.name = p.name;
    ++t.calls;
    t.ms += p.backend->profile_elapsed_ms(p.start, p.stop);
    t.bytes += p.bytes;
    t.flops += p.flops;
    if (std::find(seen.begin(), seen.end(), p.backend) == seen.end()) seen.push_back(p.backend);
  }
  for (Backend* b : seen) b->profile_release();
  std::vector<OpTotal> out;
  for (auto& [name, t] : totals) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const OpTotal& a, const OpTotal& b) { return a.ms > b.ms; });
  return out;
}

Ceilings measure_ceilings(Device device, DType dtype, size_t copy_bytes, int64_t gemm_n) {
  Backend& b = raw_backend_for(device);
  Ceilings c;
  const int64_t n = static_cast<int64_t>(copy_bytes / 4);
  Tensor src = Tensor::zeros({n}, DType::f32, device), dst = Tensor::empty({n}, DType::f32, device);
  auto best_ms = [&](const std::function<void()>& fn, int reps) {
    fn();  // warm-up: first-call costs (allocator, GEMM heuristics)
    double best = 1e300;
    for (int r = 0; r < reps; ++r) {
      const uint64_t a = b.profile_mark();
      fn();
      const uint64_t z = b.profile_mark();
      best = std::min(best, b.profile_elapsed_ms(a, z));
    }
    b.profile_release();
    return std::max(best, 1e-6);
  };
  const double copy_ms = best_ms([&] { dst.copy_(src); }, 5);
  c.copy_bytes_per_s = 2.0 * static_cast<double>(n) * 4 / (copy_ms * 1e-3);
  Tensor x = Tensor::zeros({gemm_n, gemm_n}, dtype, device), y = Tensor::zeros({gemm_n, gemm_n}, dtype, device);
  const bool was = enabled();
  set_enabled(false);  // the GEMM below must not land in the step's profile
  const double gemm_ms = best_ms([&] { (void)ops::matmul(x, y); }, 3);
  set_enabled(was);
  c.gemm_flops_per_s = 2.0 * double(gemm_n) * double(gemm_n) * double(gemm_n) / (gemm_ms * 1e-3);
  c.gemm_n = gemm_n;
  c.gemm_dtype = dtype_name(dtype);
  return c;
}

std::string format_step_profile(const std::vector<OpTotal>& ops, double step_ms, int64_t tokens,
                                const Ceilings& ceilings, const std::string& device) {
  double op_ms = 0, flops = 0, mem_bytes = 0, mem_ms = 0;
  for (const OpTotal& o : ops) {
    op_ms += o.ms;
    flops += o.flops;
    if (o.flops == 0) mem_bytes += o.bytes, mem_ms += o.ms;
  }
  std::string s = fmt::format("profile of one training step on {}: {:.1f} ms, {:.0f} tokens/s; {:.1f} ms inside ops\n",
                              device, step_ms, static_cast<double>(tokens) / (step_ms * 1e-3), op_ms);
  s += fmt::format("  {:<32} {:>6} {:>10} {:>6} {:>9} {:>9}\n", "op", "calls", "ms", "share", "GB/s", "TFLOP/s");
  for (const OpTotal& o : ops) {
    const double sec = std::max(o.ms, 1e-9) * 1e-3;
    s += fmt::format("  {:<32} {:>6} {:>10.3f} {:>5.1f}% {:>9.1f} {:>9}\n", o.name, o.calls, o.ms,
                     op_ms > 0 ? 100 * o.ms / op_ms : 0.0, o.bytes / sec / 1e9,
                     o.flops > 0 ? fmt::format("{:.2f}", o.flops / sec / 1e12) : std::string("-"));
  }
  const double achieved = flops / (step_ms * 1e-3);
  s += fmt::format("  MFU: {:.3f} TFLOP of useful work in {:.1f} ms = {:.2f} TFLOP/s, {:.1f}% of the measured {} GEMM "
                   "ceiling ({:.2f} TFLOP/s, {}^3 in this run)\n",
                   flops / 1e12, step_ms, achieved / 1e12, 100 * achieved / ceilings.gemm_flops_per_s,
                   ceilings.gemm_dtype, ceilings.gemm_flops_per_s / 1e12, ceilings.gemm_n);
  const double bw = mem_ms > 0 ? mem_bytes / (mem_ms * 1e-3) : 0;
  s += fmt::format("  bandwidth of the memory-bound ops: {:.2f} GB in {:.1f} ms = {:.1f} GB/s, {:.1f}% of the measured "
                   "copy ceiling ({:.1f} GB/s)\n",
                   mem_bytes / 1e9, mem_ms, bw / 1e9, 100 * bw / ceilings.copy_bytes_per_s,
                   ceilings.copy_bytes_per_s / 1e9);
  return s;
}

}  // namespace koff::profile
