#include "engine/cpu/runtime.h"

#include <malloc.h>
#include <omp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <fmt/core.h>

// OpenBLAS's introspection, weak: a build against another BLAS links and reports "BLAS".
extern "C" {
char* openblas_get_corename(void) __attribute__((weak));
char* openblas_get_config(void) __attribute__((weak));
}

namespace koff::cpu {

namespace {

constexpr const char* kMarker = "KOFF_CPU_RUNTIME_SET";  // value: what koff set, for runtime_summary()
std::string restart_failure;

// OpenBLAS's x86-64 kernel families, weakest first; the names it accepts in OPENBLAS_CORETYPE.
int rank_of(std::string_view core) {
  static constexpr std::string_view order[] = {"prescott", "core2",   "penryn",   "dunnington", "nehalem",
                                               "sandybridge", "haswell", "zen",    "skylakex",   "cooperlake",
                                               "sapphirerapids"};
  std::string lower(core);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (size_t i = 0; i < std::size(order); ++i)
    if (lower == order[i]) return static_cast<int>(i);
  return -1;  // unknown (or not x86): leave it alone
}

// The strongest family the CPU's feature flags allow, or "" when we know of none to ask for.
std::string best_core_for_this_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd")) {
    return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

// glibc's malloc, for a training loop that frees and reallocates the same few hundred MB every step.
constexpr const char* kMallocMarker = "KOFF_MALLOC_SET";
constexpr int kMmapThreshold = 32 << 20;   // glibc's largest: blocks up to 32 MiB come from the heap
constexpr int kTrimThreshold = 0x7fffffff;  // return the heap's free top to the OS only beyond 2 GiB

void keep_freed_memory() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
      std::getenv("GLIBC_TUNABLES"))
    return;  // the user's (or a parent koff's, inherited) settings
  // This process: mallopt. Its children and a restart: glibc reads these at start-up.
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
  ::setenv("MALLOC_MMAP_THRESHOLD_", std::to_string(kMmapThreshold).c_str(), 1);
  ::setenv("MALLOC_TRIM_THRESHOLD_", std::to_string(kTrimThreshold).c_str(), 1);
  ::setenv(kMallocMarker, "1", 1);
}

}  // namespace

void settle_environment(char** argv) {
  keep_freed_memory();
  if (std::getenv(kMarker)) return;  // the restarted process, or a parent already did this
  std::string set;
  if (!std::getenv("OPENBLAS_CORETYPE") && openblas_get_corename) {
    const std::string chosen = openblas_get_corename(), best = best_core_for_this_cpu();
    const int have = rank_of(chosen), want = rank_of(best);
    if (have >= 0 && want > have) {
      ::setenv("OPENBLAS_CORETYPE", best.c_str(), 1);
      set += fmt::format("OPENBLAS_CORETYPE={} (OpenBLAS took this CPU for {});", best, chosen);
    }
  }
  if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) {
    ::setenv("OMP_WAIT_POLICY", "passive", 1);
    set += "OMP_WAIT_POLICY=passive;";
  }
  ::setenv(kMarker, set.empty() ? "-" : set.c_str(), 1);  // children (mpirun ranks, tests) inherit it
  if (set.empty()) return;
  ::execv("/proc/self/exe", argv);
  restart_failure = fmt::format("could not restart with {} ({}): running with the libraries' defaults", set,
                                std::strerror(errno));
  ::setenv(kMarker, "-", 1);
}

std::string runtime_summary() {
  std::string blas = "BLAS";
  if (openblas_get_config) {
    std::string config = openblas_get_config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64"
    const size_t sp = config.find(' ', 9);
    blas = config.substr(0, sp);
    if (openblas_get_corename) blas += fmt::format(" ({} kernels)", openblas_get_corename());
  }
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  std::string line = fmt::format("{}, {} OpenMP threads, OMP_WAIT_POLICY={}", blas, omp_get_max_threads(),
                                 wait ? wait : "(default: spin, then sleep)");
  const char* set = std::getenv(kMarker);
  if (set && std::string_view(set) != "-") {
    std::string what(set);
    if (!what.empty() && what.back() == ';') what.pop_back();
    for (size_t p; (p = what.find(';')) != std::string::npos;) what.replace(p, 1, ", ");
    line += fmt::format("; set by koff: {}", what);
  }
  const char* mmap = std::getenv("MALLOC_MMAP_THRESHOLD_");
  const char* trim = std::getenv("MALLOC_TRIM_THRESHOLD_");
  if (mmap || trim)
    line += fmt::format("; malloc keeps freed memory (MALLOC_MMAP_THRESHOLD_={}, MALLOC_TRIM_THRESHOLD_={}{})",
                        mmap ? mmap : "default", trim ? trim : "default",
                        std::getenv(kMallocMarker) ? ", set by koff" : "");
  if (!restart_failure.empty()) line += "; " + restart_failure;
  // Left to the user, but said: libgomp's dynamic mode reads /proc/loadavg at every parallel region
  // (measured: a 3-step embedded KOFF run went past 100 s, mostly system time, against ~2 s).
  if (const char* dyn = std::getenv("OMP_DYNAMIC"); dyn && (std::string_view(dyn) == "true" ||
                                                          std::string_view(dyn) == "TRUE" || std::string_view(dyn) == "1"))
    line += "; WARNING: OMP_DYNAMIC=true makes OpenMP read the load average at every parallel region, which "
            "slows koff down many times over: unset it";
  return line;
}

}  // namespace koff::cpu
