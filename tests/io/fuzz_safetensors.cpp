// libFuzzer target over the safetensors reader: any input must either open, with every tensor then
// readable (and floating ones convertible to f32), or be refused with koff::Error. Any other
// exception, a crash or a sanitizer report is a bug. Build and run: run_fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const koff::io::SafetensorsFile f =
        koff::io::SafetensorsFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz-input");
    for (const std::string& name : f.names()) {
      const koff::io::TensorInfo& info = f.info(name);
      if (!info.dtype) continue;
      const koff::Tensor t = f.tensor(name);
      if (t.nbytes() != info.nbytes()) __builtin_trap();
      if (koff::is_floating(*info.dtype)) (void)f.load(name, koff::DType::f32);
    }
  } catch (const koff::Error&) {
    // refused with a clear error: the expected outcome for most inputs
  }
  return 0;
}
