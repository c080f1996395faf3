#include "engine/ops/dispatch.h"

#include "engine/cpu/cpu_backend.h"

namespace koff {

const Backend& backend_for(Device device) {
  if (const Backend* b = registered_backend(device.type)) return *b;
  if (device.is_cpu()) return cpu_backend();
  fail("no backend for device {}: this build has no CUDA backend or no GPU is present", device.str());
}

bool has_backend(DeviceType type) { return type == DeviceType::CPU || registered_backend(type) != nullptr; }

OpCounters& op_counters() {
  static OpCounters counters;
  return counters;
}

}  // namespace koff
