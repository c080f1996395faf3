#include "engine/ops/backend.h"

#include "engine/cpu/cpu_backend.h"

namespace koff {

namespace {
// Constant-initialised (all null): safe to use from any static initialiser. A null CPU entry means
// the built-in CPU backend, so nothing has to register it.
Backend* backends[2] = {nullptr, nullptr};
}  // namespace

void register_backend(DeviceType type, Backend* backend) { backends[static_cast<int>(type)] = backend; }

bool has_backend(DeviceType type) { return type == DeviceType::CPU || backends[static_cast<int>(type)] != nullptr; }

Backend& backend_for(Device device) {
  Backend* b = backends[static_cast<int>(device.type)];
  if (b) return *b;
  if (device.is_cpu()) return cpu_backend();
  fail("no backend for device {}: this build has no CUDA backend or no GPU is present", device.str());
}

OpCounters& op_counters() {
  static OpCounters counters;
  return counters;
}

}  // namespace koff
