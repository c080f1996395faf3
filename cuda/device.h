// Entry points of the CUDA backend that the host side (tools/, tests/) calls.
#pragma once

#include <string>

namespace koff::cuda {

// Number of usable GPUs; 0 when there is no driver, no device, or the driver is too old for this
// runtime (as on the CPU-only build machines). Never throws.
int device_count();

// Registers the CUDA caching allocator for DeviceType::CUDA when a GPU is present. Returns whether
// it did. Safe to call more than once.
bool register_if_available();

// One line describing the GPUs, or why there are none ("no GPU: <driver error>").
std::string describe_devices();

}  // namespace koff::cuda
