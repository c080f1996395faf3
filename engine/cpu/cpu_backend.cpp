#include "engine/cpu/cpu_backend.h"

namespace koff {

const Backend& cpu_backend() {
  static const Backend backend = [] {
    Backend b;
    b.name = "cpu";
    b.host_memory = true;
    using namespace cpu;
    for (auto fill : {fill_elementwise, fill_gemm, fill_embedding, fill_norm, fill_rope, fill_attention, fill_loss,
                      fill_gates, fill_adamw})
      fill(b);
    return b;
  }();
  return backend;
}

}  // namespace koff
