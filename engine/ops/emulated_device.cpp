#include "engine/ops/emulated_device.h"

#include <cstdlib>
#include <cstring>
#include <deque>

#include "engine/cpu/cpu_backend.h"
#include "engine/ops/backend.h"

namespace koff {

namespace {

constexpr uintptr_t kTag = (uintptr_t{1} << 62) | (uintptr_t{1} << 55);
void* tag(void* p) { return p ? reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) | kTag) : nullptr; }
void* untag(const void* p) {
  return p ? reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) & ~kTag) : nullptr;
}
void* host_ptr(const void* p, Device d) { return d.is_cuda() ? untag(p) : const_cast<void*>(p); }

class EmulatedAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, int) override {
    if (nbytes == 0) return nullptr;
    void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (!p) fail("emulated cuda: out of host memory allocating {} bytes", nbytes);
    return tag(p);
  }
  void deallocate(void* ptr, size_t, int) override { std::free(untag(ptr)); }
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override {
    if (nbytes) std::memmove(host_ptr(dst, dst_device), host_ptr(src, src_device), nbytes);
  }
  void memset_zero(void* ptr, size_t nbytes, int) override {
    if (nbytes) std::memset(untag(ptr), 0, nbytes);
  }
  bool copy_strided(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                    const int64_t* src_strides, const int64_t* shape, int ndim, int) override {
    copy_strided_host(untag(dst), dst_dtype, dst_strides, untag(src), src_dtype, src_strides, shape, ndim);
    return true;
  }
};

// The host tensors of one backend call: inputs are views of the untagged memory (bf16 widened to an
// f32 copy); outputs likewise, bf16 ones written back (rounded) when the call ends.
class Host {
 public:
  Host() = default;
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;
  ~Host() {
    for (auto& [host, device] : writeback_) {
      Tensor rounded = host.to(DType::bf16);
      std::memcpy(untag(device.raw_data()), rounded.raw_data(), rounded.nbytes());
    }
  }
  const Tensor& in(const Tensor& t) { return keep(view(t, false)); }
  Tensor& out(const Tensor& t) { return keep(view(t, true)); }

 private:
  Tensor view(const Tensor& t, bool written) {
    if (!t.defined()) return Tensor();
    KOFF_CHECK(t.device().is_cuda(), "emulated cuda: a {} tensor reached the cuda backend", t.device().str());
    KOFF_CHECK(t.is_contiguous(), "emulated cuda: a backend received a non-contiguous tensor");
    KOFF_CHECK(t.dtype() != DType::f64 && t.dtype() != DType::f16,
               "the CUDA backend computes in f32 or bf16 (f32 math), got {}", dtype_name(t.dtype()));
    const size_t bytes = t.nbytes();
    auto storage = std::make_shared<Storage>(untag(t.raw_data()), bytes, Device::cpu(), [] {});
    Tensor raw = Tensor::from_storage(storage, t.shape(), t.dtype());
    if (t.dtype() != DType::bf16) return raw;
    Tensor wide = raw.to(DType::f32);
    if (written) writeback_.emplace_back(wide, t);
    return wide;
  }
  Tensor& keep(Tensor t) {
    kept_.push_back(std::move(t));
    return kept_.back();
  }
  std::deque<Tensor> kept_;
  std::vector<std::pair<Tensor, Tensor>> writeback_;
};

class EmulatedBackend final : public Backend {
 public:
  const char* name() const override { return "cuda (emulated on the host)"; }
  static Backend& cpu() { return cpu_backend(); }

  void binary(int kind, const Tensor& a, const Tensor& b, Tensor& out) override {
    Host h;
    cpu().binary(kind, h.in(a), h.in(b), h.out(out));
  }
  void scale(const Tensor& a, double s, Tensor& out) override {
    Host h;
    cpu().scale(h.in(a), s, h.out(out));
  }
  void axpy(Tensor& y, const Tensor& x, double alpha) override {
    Host h;
    cpu().axpy(h.out(y), h.in(x), alpha);
  }
  void add_bias(const Tensor& x, const Tensor& bias, Tensor& out) override {
    Host h;
    cpu().add_bias(h.in(x), h.in(bias), h.out(out));
  }
  void sum_to_last(const Tensor& x, Tensor& out) override {
    Host h;
    cpu().sum_to_last(h.in(x), h.out(out));
  }
  void sum(const Tensor& x, Tensor& out) override {
    Host h;
    cpu().sum(h.in(x), h.out(out));
  }
  void dot(const Tensor& a, const Tensor& b, Tensor& out) override {
    Host h;
    cpu().dot(h.in(a), h.in(b), h.out(out));
  }
  void mul_groups(const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k, Tensor& out) override {
    Host h;
    cpu().mul_groups(h.in(x), h.in(z), rows, groups, k, h.out(out));
  }
  void sum_groups_product(const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k,
                          Tensor& dz) override {
    Host h;
    cpu().sum_groups_product(h.in(dy), h.in(x), rows, groups, k, h.out(dz));
  }
  void gemm(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a,
            bool trans_b, bool b_shared) override {
    Host h;
    cpu().gemm(h.in(a), h.in(b), h.out(c), batch, m, n, k, trans_a, trans_b, b_shared);
  }
  void embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    Host h;
    cpu().embedding(h.in(table), h.in(ids), h.out(out));
  }
  void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) override {
    Host h;
    cpu().embedding_backward(h.in(dy), h.in(ids), h.out(dtable));
  }
  void rmsnorm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override {
    Host h;
    cpu().rmsnorm(h.in(x), h.in(w), eps, h.out(y), h.out(rstd));
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                        Tensor& dw) override {
    Host h;
    cpu().rmsnorm_backward(h.in(dy), h.in(x), h.in(w), h.in(rstd), h.out(dx), h.out(dw));
  }
  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) override {
    Host h;
    cpu().rope(h.in(x), h.in(cos), h.in(sin), inverse, h.out(out));
  }
  void silu(const Tensor& x, Tensor& out) override {
    Host h;
    cpu().silu(h.in(x), h.out(out));
  }
  void silu_backward(const Tensor& dy, const Tensor& x, Tensor& dx) override {
    Host h;
    cpu().silu_backward(h.in(dy), h.in(x), h.out(dx));
  }
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    Host h;
    cpu().swiglu(h.in(gate), h.in(up), h.out(out));
  }
  void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) override {
    Host h;
    cpu().swiglu_backward(h.in(dy), h.in(gate), h.in(up), h.out(dgate), h.out(dup));
  }
  void swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) override {
    Host h;
    cpu().swiglu_gated(h.in(gate), h.in(up), h.in(z), h.out(out));
  }
  void swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                             Tensor& dup, Tensor& dz) override {
    Host h;
    cpu().swiglu_gated_backward(h.in(dy), h.in(gate), h.in(up), h.in(z), h.out(dgate), h.out(dup), h.out(dz));
  }
  void softmax(const Tensor& x, Tensor& out) override {
    Host h;
    cpu().softmax(h.in(x), h.out(out));
  }
  void softmax_backward(const Tensor& dy, const Tensor& y, Tensor& dx) override {
    Host h;
    cpu().softmax_backward(h.in(dy), h.in(y), h.out(dx));
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k, const Tensor& mem_v,
                 const Tensor& mem_gate, double scale, bool causal, Tensor& out, Tensor& lse) override {
    Host h;
    cpu().attention(h.in(q), h.in(k), h.in(v), h.in(mem_k), h.in(mem_v), h.in(mem_gate), scale, causal, h.out(out),
                    h.out(lse));
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                          const Tensor& mem_v, const Tensor& mem_gate, const Tensor& out, const Tensor& lse,
                          double scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dmem_k, Tensor& dmem_v,
                          Tensor& dmem_gate) override {
    Host h;
    cpu().attention_backward(h.in(dout), h.in(q), h.in(k), h.in(v), h.in(mem_k), h.in(mem_v), h.in(mem_gate), h.in(out),
                             h.in(lse), scale, causal, h.out(dq), h.out(dk), h.out(dv), h.out(dmem_k), h.out(dmem_v),
                             h.out(dmem_gate));
  }
  int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                        Tensor& lse) override {
    Host h;
    return cpu().cross_entropy(h.in(logits), h.in(targets), ignore_index, h.out(loss_sum), h.out(lse));
  }
  void cross_entropy_backward(double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index, Tensor& dlogits) override {
    Host h;
    cpu().cross_entropy_backward(dloss, h.in(logits), h.in(targets), h.in(lse), ignore_index, h.out(dlogits));
  }
  int64_t linear_cross_entropy(const Tensor& hs, const Tensor& w, const Tensor& targets, int64_t chunk,
                               int64_t ignore_index, Tensor& loss_sum, Tensor& lse) override {
    Host h;
    return cpu().linear_cross_entropy(h.in(hs), h.in(w), h.in(targets), chunk, ignore_index, h.out(loss_sum),
                                      h.out(lse));
  }
  void linear_cross_entropy_backward(double dloss, const Tensor& hs, const Tensor& w, const Tensor& targets,
                                     const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh,
                                     Tensor& dw) override {
    Host h;
    cpu().linear_cross_entropy_backward(dloss, h.in(hs), h.in(w), h.in(targets), h.in(lse), chunk, ignore_index,
                                        h.out(dh), h.out(dw));
  }
  void kl_div(const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) override {
    Host h;
    cpu().kl_div(h.in(logits), h.in(teacher), h.out(loss_sum));
  }
  void kl_div_backward(double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) override {
    Host h;
    cpu().kl_div_backward(dloss, h.in(logits), h.in(teacher), h.out(dlogits));
  }
  void hard_concrete(int mode, const Tensor& log_alpha, const Tensor& u, Tensor& out) override {
    Host h;
    cpu().hard_concrete(mode, h.in(log_alpha), h.in(u), h.out(out));
  }
  void hard_concrete_backward(int mode, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                              Tensor& dlog_alpha) override {
    Host h;
    cpu().hard_concrete_backward(mode, h.in(dout), h.in(log_alpha), h.in(u), h.out(dlog_alpha));
  }
  void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWConfig& config,
             int64_t step) override {
    Host h;
    cpu().adamw(h.out(param), h.in(grad), h.out(m), h.out(v), config, step);
  }
};

bool emulated = false;

}  // namespace

bool register_emulated_cuda() {
  if (emulated) return true;
  if (has_backend(DeviceType::CUDA)) return false;  // a real GPU: never emulate over it
  static EmulatedAllocator allocator;
  static EmulatedBackend backend;
  register_allocator(DeviceType::CUDA, &allocator);
  register_backend(DeviceType::CUDA, &backend);
  emulated = true;
  return true;
}

bool cuda_is_emulated() { return emulated; }

}  // namespace koff
