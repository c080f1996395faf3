// `koff env`: the CPU runtime koff runs with (engine/cpu/runtime.h) as shell exports, so that other
// programs (the test binaries, a profiler, a PyTorch peer) can run with the same:
//   eval "$(./build/koff env)"
#include <cstdlib>

#include "engine/cpu/runtime.h"
#include "tools/cli.h"

namespace {

const bool env_registered = koff::cli::add_command(
    {"env", "print the CPU runtime settings koff uses (OpenBLAS kernels, OpenMP wait policy, malloc) as shell exports",
     [](CLI::App&) {
       return []() {
         fmt::print("# {}\n", koff::cpu::runtime_summary());
         for (const char* name : {"OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MALLOC_MMAP_THRESHOLD_",
                                  "MALLOC_TRIM_THRESHOLD_", "KOFF_CPU_RUNTIME_SET", "KOFF_MALLOC_SET"})
           if (const char* v = std::getenv(name)) fmt::print("export {}='{}'\n", name, v);
         return 0;
       };
     }});

}  // namespace
