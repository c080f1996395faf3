#include "engine/ops/profile.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"
#include "engine/tensor/random.h"
#include "engine/tensor/storage.h"

namespace koff::profile {

namespace {

std::atomic<bool> on{false};

struct Pending {
  const char* name;
  const Backend* backend;
  uint64_t start, stop;
  double bytes, flops;
};
std::mutex mutex;
std::vector<Pending>& pending() {
  static auto* p = new std::vector<Pending>;
  return *p;
}

}  // namespace

Scope::Scope(const Backend& backend, const char* name, double bytes, double flops)
    : backend_(enabled() ? &backend : nullptr), name_(name), bytes_(bytes), flops_(flops) {
  if (backend_) start_ = backend_->profile_mark();
}

Scope::~Scope() {
  if (!backend_) return;
  const uint64_t stop = backend_->profile_mark();
  std::lock_guard<std::mutex> lock(mutex);
  pending().push_back({name_, backend_, start_, stop, bytes_, flops_});
}

void set_enabled(bool value) { on.store(value); }
bool enabled() { return on.load(); }

std::vector<OpTotal> collect() {
  std::vector<Pending> taken;
  {
    std::lock_guard<std::mutex> lock(mutex);
    taken.swap(pending());
  }
  std::map<std::string, OpTotal> totals;
  std::vector<const Backend*> seen;
  for (const Pending& p : taken) {
    OpTotal& t = totals[p.name];
    t.name = p.name;
    ++t.calls;
    t.ms += p.backend->profile_elapsed_ms(p.start, p.stop);
    t.bytes += p.bytes;
    t.flops += p.flops;
    if (std::find(seen.begin(), seen.end(), p.backend) == seen.end()) seen.push_back(p.backend);
  }
  for (const Backend* b : seen) b->release_marks();
  std::vector<OpTotal> out;
  for (auto& [name, t] : totals) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const OpTotal& a, const OpTotal& b) { return a.ms > b.ms; });
  return out;
}

Ceilings measure_ceilings(Device device, DType dtype, size_t copy_bytes, int64_t gemm_n) {
  const Backend& b = backend_for(device);
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
    b.release_marks();
    return std::max(best, 1e-6);
  };
  // The copy ceiling is the device's own bulk copy (cudaMemcpyAsync on CUDA, memmove on the host), not
  // Tensor::copy_'s strided kernel; the GEMM ceiling runs on random data (zeros can run faster).
  Allocator& alloc = allocator_for(device);
  const size_t bytes = static_cast<size_t>(n) * 4;
  const double copy_ms = best_ms([&] { alloc.copy(dst.raw_data(), device, src.raw_data(), device, bytes); }, 5);
  c.copy_bytes_per_s = 2.0 * static_cast<double>(bytes) / (copy_ms * 1e-3);
  const Tensor x = randn({gemm_n, gemm_n}, Philox(1, 0)).to(dtype).to(device);
  const Tensor y = randn({gemm_n, gemm_n}, Philox(2, 0)).to(dtype).to(device);
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
  s += fmt::format(
      "  MFU: {:.3f} TFLOP of useful work in {:.1f} ms = {:.2f} TFLOP/s, {:.1f}% of the measured {} GEMM "
      "ceiling ({:.2f} TFLOP/s, {}^3 in this run)\n",
      flops / 1e12, step_ms, achieved / 1e12, 100 * achieved / ceilings.gemm_flops_per_s, ceilings.gemm_dtype,
      ceilings.gemm_flops_per_s / 1e12, ceilings.gemm_n);
  const double bw = mem_ms > 0 ? mem_bytes / (mem_ms * 1e-3) : 0;
  s += fmt::format(
      "  bandwidth of the memory-bound ops: {:.2f} GB in {:.1f} ms = {:.1f} GB/s, {:.1f}% of the measured "
      "copy ceiling ({:.1f} GB/s)\n",
      mem_bytes / 1e9, mem_ms, bw / 1e9, 100 * bw / ceilings.copy_bytes_per_s, ceilings.copy_bytes_per_s / 1e9);
  return s;
}

}  // namespace koff::profile
