// NumPy .npy files (format version 1.0), byte-compatible with numpy.save: magic "\x93NUMPY", version,
// little-endian u16 header length, the header dict {'descr': '<f4', 'fortran_order': False, 'shape': (..), }
// padded with spaces and a newline so that the data starts at a multiple of 64 bytes, then the
// row-major data. `koff logits --out FILE.npy` writes through this; tests read back with load_npy.
#pragma once

#include <filesystem>

#include "engine/tensor/tensor.h"

namespace koff::io {

// f32, f64, f16, i32, i64 (any device, any strides); bf16 has no NumPy dtype and is an error. Atomic.
void save_npy(const std::filesystem::path& path, const Tensor& tensor);
// Reads versions 1.0-3.0 of little-endian '<f4', '<f8', '<f2', '<i4', '<i8' in C order.
Tensor load_npy(const std::filesystem::path& path);

}  // namespace koff::io
