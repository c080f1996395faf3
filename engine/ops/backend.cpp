#include "engine/ops/backend.h"

#include <chrono>

#include "engine/cpu/cpu_backend.h"
#include "engine/ops/profile.h"
#include "engine/tensor/interrupt.h"

namespace koff {

namespace {
// Constant-initialised (all null): safe to use from any static initialiser. A null CPU entry means
// the built-in CPU backend, so nothing has to register it.
Backend* backends[2] = {nullptr, nullptr};
}  // namespace

void register_backend(DeviceType type, Backend* backend) { backends[static_cast<int>(type)] = backend; }

bool has_backend(DeviceType type) { return type == DeviceType::CPU || backends[static_cast<int>(type)] != nullptr; }

Backend& raw_backend_for(Device device) {
  Backend* b = backends[static_cast<int>(device.type)];
  if (b) return *b;
  if (device.is_cpu()) return cpu_backend();
  fail("no backend for device {}: this build has no CUDA backend or no GPU is present", device.str());
}

Backend& backend_for(Device device) {
  // Every op dispatches through here: the one place that makes Ctrl-C work inside a step, an
  // evaluation or an export (engine/tensor/interrupt.h). One relaxed atomic load per op.
  check_interrupt("a computation");
  Backend& b = raw_backend_for(device);
  return profile::enabled() ? profile::timed(b, device.type) : b;
}

void Backend::adamw_multi(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                          const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const ops::AdamWConfig& config,
                          int64_t step) {
  for (size_t i = 0; i < params.size(); ++i) adamw(*params[i], *grads[i], *m[i], *v[i], config, step);
}

uint64_t Backend::profile_mark() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

double Backend::profile_elapsed_ms(uint64_t start, uint64_t stop) {
  return static_cast<double>(stop - start) * 1e-6;
}

void Backend::linear(const Tensor& x2d, const Tensor& w, const Tensor& bias, Tensor& out) {
  gemm(x2d, w, out, 1, x2d.size(0), w.size(0), x2d.size(1), false, true, true);
  if (bias.defined()) add_bias(out, bias, out);
}

OpCounters& op_counters() {
  static OpCounters counters;
  return counters;
}

}  // namespace koff
